use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use tether_discovery::Interfaces;
use tether_session::quic::SessionConfig;
use tether_store::KeyStore;

/// Settings shared by every role.
#[derive(Clone)]
pub struct NodeConfig {
    /// Where the node keeps its SQLite state (mode 0600). `None` keeps state
    /// in memory only, as the demo does.
    pub data_dir: Option<PathBuf>,
    /// Which interfaces mDNS uses. Loopback only by default (tests, demo).
    pub interfaces: Interfaces,
    /// Address the session endpoint binds to and advertises.
    pub bind_ip: IpAddr,
    /// UDP port for the session endpoint; 0 picks a free one.
    pub port: u16,
    /// Session limits and timeouts.
    pub session: SessionConfig,
    /// Identifiers this device knows about itself and its owner. They are
    /// kept in the local store only and never sent (R2, R3, R4).
    pub identifiers: LocalIdentifiers,
    /// A platform key store (Android Keystore, iOS Keychain) for the device
    /// key, the group key and the authority's keys. `None` keeps them in the
    /// SQLite store (mode 0600, R31).
    pub key_store: Option<Arc<dyn KeyStore>>,
    /// The MQTT broker of the remote path (SPEC §19). `None`: LAN only. A
    /// head unit with a broker also answers at its rendezvous topics; a
    /// phone with one can reach the car from anywhere.
    pub relay: Option<tether_relay::RelayConfig>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("data_dir", &self.data_dir)
            .field("interfaces", &self.interfaces)
            .field("bind_ip", &self.bind_ip)
            .field("port", &self.port)
            .field("session", &self.session)
            .field("key_store", &self.key_store.is_some())
            .field("relay", &self.relay.as_ref().map(|r| (&r.host, r.port)))
            .finish_non_exhaustive()
    }
}

/// Personal and device identifiers. Stored locally only (R2): no field
/// appears in any mDNS packet or handshake message; nothing but the local
/// store and the local user interface ever reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalIdentifiers {
    /// The name the user gave the device ("Anna's car").
    pub device_name: Option<String>,
    /// A vendor device id (DID).
    pub device_id: Option<String>,
    /// The vehicle identification number (R4: for the cloud path only).
    pub vin: Option<String>,
    /// The account's user id at the vendor's cloud.
    pub account_uid: Option<String>,
    /// A Bluetooth or Wi-Fi MAC address.
    pub mac: Option<String>,
}

impl LocalIdentifiers {
    fn fields(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("identifier.device_name", &self.device_name),
            ("identifier.device_id", &self.device_id),
            ("identifier.vin", &self.vin),
            ("identifier.account_uid", &self.account_uid),
            ("identifier.mac", &self.mac),
        ]
    }

    /// Writes the identifiers that are set into the local store.
    pub(crate) fn save(&self, store: &mut tether_store::Store) -> Result<(), crate::NodeError> {
        for (name, value) in self.fields() {
            if let Some(value) = value {
                store.set_setting(name, value)?;
            }
        }
        Ok(())
    }

    /// Reads the identifiers from the local store.
    pub(crate) fn load(store: &tether_store::Store) -> Result<Self, crate::NodeError> {
        let get = |name: &str| store.get_setting(name);
        Ok(Self {
            device_name: get("identifier.device_name")?,
            device_id: get("identifier.device_id")?,
            vin: get("identifier.vin")?,
            account_uid: get("identifier.account_uid")?,
            mac: get("identifier.mac")?,
        })
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            interfaces: Interfaces::LoopbackOnly,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            session: SessionConfig::default(),
            identifiers: LocalIdentifiers::default(),
            key_store: None,
            relay: None,
        }
    }
}

impl NodeConfig {
    /// How a node listening at `address` advertises tokens under
    /// `discovery_key`: an unspecified bind address (all interfaces) lets
    /// mdns-sd advertise each interface's own address.
    pub(crate) fn advertiser(
        &self,
        discovery_key: [u8; 32],
        address: std::net::SocketAddr,
    ) -> tether_discovery::AdvertiserConfig {
        tether_discovery::AdvertiserConfig {
            discovery_key,
            port: address.port(),
            addresses: if address.ip().is_unspecified() {
                Vec::new()
            } else {
                vec![address.ip()]
            },
            interfaces: self.interfaces,
            rotation: tether_discovery::TOKEN_ROTATION,
            protocol_version: tether_session::PROTOCOL_VERSION,
        }
    }

    pub(crate) fn open_store(&self) -> Result<tether_store::Store, crate::NodeError> {
        let mut store = match &self.data_dir {
            Some(dir) => tether_store::Store::open(dir)?,
            None => tether_store::Store::open_in_memory()?,
        };
        if let Some(key_store) = &self.key_store {
            store.set_key_store(key_store.clone());
        }
        self.identifiers.save(&mut store)?;
        Ok(store)
    }

    /// Opens the store and this node's device key, made and stored on first
    /// use (it never leaves the node).
    pub(crate) fn open_store_and_key(
        &self,
    ) -> Result<(tether_store::Store, tether_identity::DeviceKey), crate::NodeError> {
        let mut store = self.open_store()?;
        let key = match store.load_device_key()? {
            Some(key) => key,
            None => {
                let key = tether_identity::DeviceKey::generate()?;
                store.save_device_key(&key)?;
                key
            }
        };
        Ok((store, key))
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The wall clock in Unix milliseconds (0 before 1970).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], crate::NodeError> {
    use ring::rand::SecureRandom;
    let mut out = [0; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| crate::NodeError::Random)?;
    Ok(out)
}

/// The enrollment request of a node whose device key is `key_pkcs8`, for
/// `role` (handed to the account authority over a trusted channel).
pub(crate) fn enrollment_request(
    key_pkcs8: &[u8],
    role: tether_identity::Role,
) -> Result<tether_identity::EnrollmentRequest, crate::NodeError> {
    let key = tether_identity::DeviceKey::from_pkcs8(key_pkcs8)?;
    Ok(key.enrollment_request(role, random_bytes()?))
}

/// Checks the authority's `grant` for this node's key and `role`, stores
/// the credentials and puts them in `slot`. `wrong_role` says what the
/// grant should have been for.
pub(crate) fn accept_grant(
    key_pkcs8: &[u8],
    grant: &tether_identity::EnrollmentGrant,
    role: tether_identity::Role,
    store: &std::sync::Mutex<tether_store::Store>,
    slot: &std::sync::Mutex<Option<Arc<tether_identity::Credentials>>>,
    wrong_role: &'static str,
) -> Result<(), crate::NodeError> {
    let key = tether_identity::DeviceKey::from_pkcs8(key_pkcs8)?;
    let credentials = tether_identity::Credentials::from_grant(key, grant, unix_now())?;
    if credentials.role() != role {
        return Err(crate::NodeError::UnexpectedPeer(wrong_role));
    }
    crate::wire::lock(store).save_identity(&credentials)?;
    *crate::wire::lock(slot) = Some(Arc::new(credentials));
    Ok(())
}
