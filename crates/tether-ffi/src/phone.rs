//! The phone role: hosts the local account authority, discovers the car and
//! opens account-bound sessions.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use crate::key_store::{PlatformKeyStore, bridge};
use crate::records::{
    AccountDevice, DiscoveredVehicle, DiscoveryReport, LocalIdentifiers, NodeSettings, Removal,
};
use crate::runtime::{guard, run};
use crate::{TetherError, VehicleLink};

/// The owner's phone (`tether_node::Phone`).
#[derive(Debug, uniffi::Object)]
pub struct Phone {
    inner: Arc<tether_node::Phone>,
}

impl Phone {
    pub(crate) fn node(&self) -> Arc<tether_node::Phone> {
        self.inner.clone()
    }
}

#[uniffi::export]
impl Phone {
    /// Opens (or creates) the phone's state. With `key_store`, the device
    /// key, group key and authority keys live there instead of in SQLite.
    #[uniffi::constructor]
    pub fn open(
        settings: NodeSettings,
        key_store: Option<Box<dyn PlatformKeyStore>>,
    ) -> Result<Arc<Self>, TetherError> {
        guard(|| {
            let inner = tether_node::Phone::open(settings.into_config(bridge(key_store))?)?;
            Ok(Arc::new(Self {
                inner: Arc::new(inner),
            }))
        })
    }

    /// Whether the phone holds a certificate.
    pub fn is_enrolled(&self) -> bool {
        guard(|| Ok(self.inner.is_enrolled())).unwrap_or(false)
    }

    /// Creates a new account hosted on this phone and enrolls the phone.
    pub fn create_account(&self) -> Result<(), TetherError> {
        guard(|| Ok(self.inner.create_account()?))
    }

    /// Acts as the account authority for a device that reached the phone
    /// over a trusted channel: takes an `EnrollmentRequest` (protobuf
    /// bytes) and returns the `EnrollmentGrant` (SPEC §3.4).
    pub fn enroll_device(&self, request: Vec<u8>) -> Result<Vec<u8>, TetherError> {
        guard(|| {
            let request = tether_node::EnrollmentRequest::decode(request.as_slice())?;
            Ok(self.inner.enroll_device(&request)?.encode_to_vec())
        })
    }

    /// For a second phone of the owner's (one without an account of its
    /// own): the `EnrollmentRequest` (protobuf bytes, `ROLE_PHONE`) to hand
    /// to the owner's phone over a trusted channel (SPEC §3.4).
    pub fn enrollment_request(&self) -> Result<Vec<u8>, TetherError> {
        guard(|| {
            Ok(self
                .inner
                .enrollment_request(tether_node::Role::Phone)?
                .encode_to_vec())
        })
    }

    /// Accepts the owner's phone's `EnrollmentGrant` (protobuf bytes) for
    /// the request [`Phone::enrollment_request`] made.
    pub fn complete_enrollment(&self, grant: Vec<u8>) -> Result<(), TetherError> {
        guard(|| {
            let grant = tether_node::EnrollmentGrant::decode(grant.as_slice())?;
            Ok(self.inner.complete_enrollment(&grant)?)
        })
    }

    /// The public key (32 bytes) of the account authority this phone hosts;
    /// `TetherError.NoAuthority` if it hosts none.
    pub fn authority_public_key(&self) -> Result<Vec<u8>, TetherError> {
        guard(|| Ok(self.inner.authority_public_key()?.to_vec()))
    }

    /// The account's devices this phone's authority enrolled, to pick one to
    /// remove (SPEC §3.6).
    pub fn account_devices(&self) -> Result<Vec<AccountDevice>, TetherError> {
        guard(|| {
            Ok(self
                .inner
                .account_devices()?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// Removes a device (its 32-byte public key) from the account: a new
    /// signed revocation list and group key epoch, handed to the car at the
    /// next `connect` (SPEC §3.6).
    pub fn remove_device(&self, public_key: Vec<u8>) -> Result<Removal, TetherError> {
        guard(|| {
            let key: [u8; 32] =
                public_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| TetherError::InvalidArgument {
                        detail: "a public key is 32 bytes".into(),
                    })?;
            Ok(self.inner.remove_device(key)?.into())
        })
    }

    /// The serial of the revocation list this phone holds (0: none).
    pub fn revocation_serial(&self) -> Result<u64, TetherError> {
        guard(|| Ok(self.inner.revocation_serial()?))
    }

    /// The identifiers kept in this phone's local store (R2).
    pub fn local_identifiers(&self) -> Result<LocalIdentifiers, TetherError> {
        guard(|| Ok(self.inner.local_identifiers()?.into()))
    }

    /// Browses mDNS for `window_ms` and reports what this phone resolves.
    pub async fn discover(&self, window_ms: u64) -> Result<DiscoveryReport, TetherError> {
        let inner = self.inner.clone();
        run(async move {
            inner
                .discover(Duration::from_millis(window_ms))
                .await
                .map(Into::into)
        })
        .await
    }

    /// Waits until a vehicle of this account is found (at most `timeout_ms`).
    pub async fn discover_vehicle(
        &self,
        timeout_ms: u64,
    ) -> Result<DiscoveredVehicle, TetherError> {
        let inner = self.inner.clone();
        run(async move {
            inner
                .discover_vehicle(Duration::from_millis(timeout_ms))
                .await
                .map(Into::into)
        })
        .await
    }

    /// Opens an account-bound session to the vehicle at `address`
    /// (`ip:port`), resuming when a ticket is held. Another account's car
    /// refuses: `TetherError.Session` with `refused = true`.
    pub async fn connect(&self, address: String) -> Result<Arc<VehicleLink>, TetherError> {
        let address = crate::records::parse_address(&address)?;
        let inner = self.inner.clone();
        run(async move { inner.connect(address).await })
            .await
            .map(|link| Arc::new(VehicleLink::new(link)))
    }

    /// Opens a session to the car where it answered last, or else finds it
    /// on the LAN first (at most `timeout_ms`) and remembers where it
    /// answered (locally only): an app that reconnects often skips the
    /// mDNS wait.
    pub async fn reach_vehicle(&self, timeout_ms: u64) -> Result<Arc<VehicleLink>, TetherError> {
        let inner = self.inner.clone();
        run(async move {
            inner
                .reach_vehicle(Duration::from_millis(timeout_ms))
                .await
                .map(|(link, _)| link)
        })
        .await
        .map(|link| Arc::new(VehicleLink::new(link)))
    }

    /// Opens an account-bound session to the car through the MQTT broker
    /// (`NodeSettings.broker`), from anywhere (SPEC §19.11): the same
    /// handshake, requests and receipts as on the LAN, end to end
    /// encrypted. No broker set: `TetherError.Relay`.
    pub async fn connect_via_relay(&self) -> Result<Arc<VehicleLink>, TetherError> {
        let inner = self.inner.clone();
        run(async move { inner.connect_via_relay().await })
            .await
            .map(|link| Arc::new(VehicleLink::new(link)))
    }

    /// Leaves a command for the car in its mailbox on the broker, whether
    /// the car is awake or not (SPEC §19.12): sealed and signed end to end,
    /// run at most once when the car reads it within `valid_for_ms` (1 ms to
    /// 7 days), never after. `idempotency_key`: 16 bytes (posting again
    /// with it runs nothing twice). The answer: `nextMailboxReply`.
    pub async fn post_command(
        &self,
        action: crate::records::VehicleAction,
        idempotency_key: Vec<u8>,
        valid_for_ms: u64,
    ) -> Result<crate::records::PostedCommand, TetherError> {
        let command = action.to_command()?;
        let key = crate::records::mailbox_key(&idempotency_key)?;
        let inner = self.inner.clone();
        run(async move {
            inner
                .post_command(command, key, Duration::from_millis(valid_for_ms))
                .await
                .map(Into::into)
        })
        .await
    }

    /// Leaves a subscription to `paths` in the car's mailbox for
    /// `valid_for_ms` (at most 7 days): the car pushes their values to this
    /// phone's mailbox, first values then each change, connected or not
    /// (SPEC §19.12). They come as `MailboxReply.signals`.
    pub async fn push_subscribe(
        &self,
        paths: Vec<String>,
        valid_for_ms: u64,
    ) -> Result<crate::records::PostedCommand, TetherError> {
        let inner = self.inner.clone();
        run(async move {
            inner
                .push_subscribe(paths, Duration::from_millis(valid_for_ms))
                .await
                .map(Into::into)
        })
        .await
    }

    /// The next answer the car left in this phone's mailbox, waiting at
    /// most `timeout_ms`; `None` when none came.
    pub async fn next_mailbox_reply(
        &self,
        timeout_ms: u64,
    ) -> Result<Option<crate::records::MailboxReply>, TetherError> {
        let inner = self.inner.clone();
        run(async move {
            inner
                .next_mailbox_reply(Duration::from_millis(timeout_ms))
                .await
                .map(|r| r.map(Into::into))
        })
        .await
    }

    /// Waits until the account's home hub is found on the LAN (at most
    /// `timeout_ms`) and returns its `ip:port`. The hub advertises under
    /// its own key (SPEC §18.8): looking for the car never finds it.
    pub async fn discover_hub(&self, timeout_ms: u64) -> Result<String, TetherError> {
        let inner = self.inner.clone();
        run(async move {
            inner
                .discover_hub(Duration::from_millis(timeout_ms))
                .await
                .map(|a| a.to_string())
        })
        .await
    }

    /// Opens an account-bound session to the home hub at `address`
    /// (`ip:port`), to manage its super tasks (SPEC §18.8). A peer that is
    /// not a hub is `TetherError.UnexpectedPeer`; another account's hub
    /// refuses (`TetherError.Session` with `refused = true`).
    pub async fn connect_hub(
        &self,
        address: String,
    ) -> Result<Arc<crate::tasks::HubLink>, TetherError> {
        let address = crate::records::parse_address(&address)?;
        let inner = self.inner.clone();
        run(async move { inner.connect_hub(address).await })
            .await
            .map(|link| Arc::new(crate::tasks::HubLink::new(link)))
    }

    /// Drops every resumption ticket (the next connection is cold).
    pub async fn forget_tickets(&self) -> Result<(), TetherError> {
        let inner = self.inner.clone();
        run(async move { inner.forget_tickets().await }).await
    }

    /// Whether a resumption ticket is held for `address`.
    pub async fn has_ticket(&self, address: String) -> Result<bool, TetherError> {
        let address = crate::records::parse_address(&address)?;
        let inner = self.inner.clone();
        run(async move { Ok::<_, TetherError>(inner.has_ticket(address).await) }).await
    }
}
