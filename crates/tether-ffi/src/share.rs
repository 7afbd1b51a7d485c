//! Share grants through the bindings (R16, R19; SPEC §17): records, and the
//! methods on `Phone` (owner and co-user) and `HeadUnit`.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "head-unit")]
use crate::HeadUnit;
use crate::runtime::{guard, run};
use crate::{Phone, TetherError, VehicleLink};

/// What a co-user may do under a grant; anything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SharePermission {
    /// Read and subscribe to vehicle signals.
    VehicleStatus,
    /// Send vehicle commands.
    VehicleControl,
    /// List and control the shared devices.
    DeviceControl,
    /// Bind new devices to the owner's account.
    DeviceBindNew,
    /// Unbind a shared device.
    DeviceDelete,
    /// Rename a shared device.
    DeviceRename,
    /// Reorder the device list.
    DeviceSort,
    /// Upgrade a shared device's firmware.
    DeviceUpgrade,
    /// Ask for the in-car camera's live view (consent rules still apply).
    CameraView,
    /// Read the car's position at the moment (needs vehicle status too;
    /// never by subscription, R32).
    VehicleLocation,
}

impl From<SharePermission> for tether_node::SharePermission {
    fn from(p: SharePermission) -> Self {
        use tether_node::SharePermission as P;
        match p {
            SharePermission::VehicleStatus => P::VehicleStatus,
            SharePermission::VehicleControl => P::VehicleControl,
            SharePermission::DeviceControl => P::DeviceControl,
            SharePermission::DeviceBindNew => P::DeviceBindNew,
            SharePermission::DeviceDelete => P::DeviceDelete,
            SharePermission::DeviceRename => P::DeviceRename,
            SharePermission::DeviceSort => P::DeviceSort,
            SharePermission::DeviceUpgrade => P::DeviceUpgrade,
            SharePermission::CameraView => P::CameraView,
            SharePermission::VehicleLocation => P::VehicleLocation,
        }
    }
}

fn from_node(p: tether_node::SharePermission) -> Option<SharePermission> {
    use tether_node::SharePermission as P;
    Some(match p {
        P::Unspecified => return None,
        P::VehicleStatus => SharePermission::VehicleStatus,
        P::VehicleControl => SharePermission::VehicleControl,
        P::DeviceControl => SharePermission::DeviceControl,
        P::DeviceBindNew => SharePermission::DeviceBindNew,
        P::DeviceDelete => SharePermission::DeviceDelete,
        P::DeviceRename => SharePermission::DeviceRename,
        P::DeviceSort => SharePermission::DeviceSort,
        P::DeviceUpgrade => SharePermission::DeviceUpgrade,
        P::CameraView => SharePermission::CameraView,
        P::VehicleLocation => SharePermission::VehicleLocation,
    })
}

/// What the owner shares.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ShareOptions {
    /// What the co-user may do.
    pub permissions: Vec<SharePermission>,
    /// Public keys (32 bytes each) of the devices covered.
    pub devices: Vec<Vec<u8>>,
    /// How long the grant lasts, seconds from now.
    pub valid_for_s: u64,
    /// The sharer's nickname shown to the co-user (at most 64 bytes).
    pub nickname: String,
}

/// A grant the owner issued.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct IssuedShare {
    /// Names the grant (16 bytes); pass it to `revoke_share`.
    pub grant_id: Vec<u8>,
    /// The invite to hand to the co-user (a secret: share it only over a
    /// channel both users trust).
    pub invite: Vec<u8>,
}

/// A grant as its holder (or the car) sees it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HeldShare {
    /// Names the grant (16 bytes).
    pub grant_id: Vec<u8>,
    /// Who shared it (empty on the car's side).
    pub sharer_nickname: String,
    /// What it allows.
    pub permissions: Vec<SharePermission>,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

impl From<tether_node::HeldShare> for HeldShare {
    fn from(h: tether_node::HeldShare) -> Self {
        Self {
            grant_id: h.grant_id.to_vec(),
            sharer_nickname: h.sharer_nickname,
            permissions: h.permissions.into_iter().filter_map(from_node).collect(),
            not_after: h.not_after,
        }
    }
}

fn key32(bytes: &[u8], what: &str) -> Result<[u8; 32], TetherError> {
    bytes.try_into().map_err(|_| TetherError::InvalidArgument {
        detail: format!("{what} must be 32 bytes, got {}", bytes.len()),
    })
}

fn grant_id(bytes: &[u8]) -> Result<[u8; 16], TetherError> {
    bytes.try_into().map_err(|_| TetherError::InvalidArgument {
        detail: format!("a grant id is 16 bytes, got {}", bytes.len()),
    })
}

#[uniffi::export]
impl Phone {
    /// (Owner) shares the car with a co-user's account: signs a grant,
    /// installs it on the car over `link`, returns the invite for the
    /// co-user. `grantee_authority_public_key` is the co-user phone's
    /// `authority_public_key()`.
    pub async fn share(
        &self,
        link: Arc<VehicleLink>,
        grantee_authority_public_key: Vec<u8>,
        options: ShareOptions,
    ) -> Result<IssuedShare, TetherError> {
        let grantee = key32(&grantee_authority_public_key, "the grantee's authority key")?;
        let devices = options
            .devices
            .iter()
            .map(|d| key32(d, "a device key"))
            .collect::<Result<Vec<_>, _>>()?;
        let options = tether_node::ShareOptions {
            permissions: options.permissions.into_iter().map(Into::into).collect(),
            devices,
            valid_for_s: options.valid_for_s,
            nickname: options.nickname,
        };
        let inner = self.node();
        let link = link.node().clone();
        run(async move {
            let issued = inner.share(&link, grantee, &options).await?;
            Ok::<_, tether_node::NodeError>(IssuedShare {
                grant_id: issued.grant_id.to_vec(),
                invite: issued.invite,
            })
        })
        .await
    }

    /// (Owner) revokes a grant; the car closes the co-user's live sessions
    /// at once. Returns how many it closed.
    pub async fn revoke_share(
        &self,
        link: Arc<VehicleLink>,
        grant_id: Vec<u8>,
    ) -> Result<u32, TetherError> {
        let id = self::grant_id(&grant_id)?;
        let inner = self.node();
        let link = link.node().clone();
        run(async move { inner.revoke_share(&link, id).await }).await
    }

    /// (Co-user) checks and keeps an invite for this phone's account.
    pub fn accept_invite(&self, invite: Vec<u8>) -> Result<HeldShare, TetherError> {
        guard(|| Ok(self.node().accept_invite(&invite)?.into()))
    }

    /// (Co-user) the invites held and still in force.
    pub fn held_shares(&self) -> Result<Vec<HeldShare>, TetherError> {
        guard(|| {
            Ok(self
                .node()
                .held_shares()?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// (Co-user) finds the shared car by the grant's own rotating token.
    pub async fn discover_shared_vehicle(
        &self,
        grant_id: Vec<u8>,
        timeout_ms: u64,
    ) -> Result<crate::records::DiscoveredVehicle, TetherError> {
        let id = self::grant_id(&grant_id)?;
        let inner = self.node();
        run(async move {
            inner
                .discover_shared_vehicle(id, Duration::from_millis(timeout_ms))
                .await
                .map(Into::into)
        })
        .await
    }

    /// (Co-user) leaves a command for the shared car in the grant's own
    /// mailbox on the broker (SPEC §17.1, §19.12), whether the car is awake
    /// or not: sealed for the car, signed by this phone, run at most once
    /// within `valid_for_ms` and only within the grant's scope (outside it
    /// the answer is `PERMISSION_DENIED`). The answer:
    /// `nextSharedMailboxReply`.
    pub async fn post_shared_command(
        &self,
        grant_id: Vec<u8>,
        action: crate::records::VehicleAction,
        idempotency_key: Vec<u8>,
        valid_for_ms: u64,
    ) -> Result<crate::records::PostedCommand, TetherError> {
        let id = self::grant_id(&grant_id)?;
        let command = action.to_command()?;
        let key = crate::records::mailbox_key(&idempotency_key)?;
        let inner = self.node();
        run(async move {
            inner
                .post_shared_command(id, command, key, Duration::from_millis(valid_for_ms))
                .await
                .map(Into::into)
        })
        .await
    }

    /// (Co-user) leaves a subscription to `paths` in the grant's mailbox
    /// for `valid_for_ms`: the car pushes their values (those the grant
    /// lets this account read) to this phone's mailbox under the grant.
    pub async fn push_subscribe_shared(
        &self,
        grant_id: Vec<u8>,
        paths: Vec<String>,
        valid_for_ms: u64,
    ) -> Result<crate::records::PostedCommand, TetherError> {
        let id = self::grant_id(&grant_id)?;
        let inner = self.node();
        run(async move {
            inner
                .push_subscribe_shared(id, paths, Duration::from_millis(valid_for_ms))
                .await
                .map(Into::into)
        })
        .await
    }

    /// (Co-user) the next answer the car left under the grant, waiting at
    /// most `timeout_ms`; `None` when none came.
    pub async fn next_shared_mailbox_reply(
        &self,
        grant_id: Vec<u8>,
        timeout_ms: u64,
    ) -> Result<Option<crate::records::MailboxReply>, TetherError> {
        let id = self::grant_id(&grant_id)?;
        let inner = self.node();
        run(async move {
            inner
                .next_shared_mailbox_reply(id, Duration::from_millis(timeout_ms))
                .await
                .map(|r| r.map(Into::into))
        })
        .await
    }

    /// (Co-user) opens a session to the shared car under the grant.
    pub async fn connect_shared(
        &self,
        grant_id: Vec<u8>,
        address: String,
    ) -> Result<Arc<VehicleLink>, TetherError> {
        let id = self::grant_id(&grant_id)?;
        let address = crate::records::parse_address(&address)?;
        let inner = self.node();
        run(async move { inner.connect_shared(id, address).await })
            .await
            .map(|link| Arc::new(VehicleLink::new(link)))
    }
}

#[cfg(feature = "head-unit")]
#[uniffi::export]
impl HeadUnit {
    /// The owner logged out of the car: the owner's sessions close and the
    /// owner's devices are refused, across restarts, until
    /// `owner_logged_in`; co-users keep working under their grants. Returns
    /// how many closed.
    pub async fn owner_logged_out(&self) -> Result<u32, TetherError> {
        let inner = self.node();
        run(async move { inner.owner_logged_out().await }).await
    }

    /// The owner logged in again on the car's screen (call only once the
    /// app has checked it is the owner): the owner's devices are served
    /// again (SPEC 17.5).
    pub fn owner_logged_in(&self) -> Result<(), TetherError> {
        Ok(self.node().owner_logged_in()?)
    }

    /// Whether the owner is logged out.
    pub fn is_owner_logged_out(&self) -> bool {
        self.node().is_owner_logged_out()
    }

    /// Revokes a grant from the car's own screen. Returns how many live
    /// co-user sessions closed.
    pub async fn revoke_share(&self, grant_id: Vec<u8>) -> Result<u32, TetherError> {
        let id = self::grant_id(&grant_id)?;
        let inner = self.node();
        run(async move { inner.revoke_share(id).await }).await
    }

    /// Co-user sessions live now.
    pub async fn co_user_sessions(&self) -> Result<u32, TetherError> {
        let inner = self.node();
        run(async move { Ok::<_, TetherError>(inner.co_user_sessions().await) }).await
    }

    /// Grants in force.
    pub async fn active_shares(&self) -> Result<Vec<HeldShare>, TetherError> {
        let inner = self.node();
        run(async move {
            Ok::<_, TetherError>(
                inner
                    .active_shares()
                    .await
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            )
        })
        .await
    }
}
