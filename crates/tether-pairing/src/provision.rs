//! Provisioning after pairing: network credentials sealed under the pairing
//! key, and the device's sealed report (R13; SPEC §12.4).
//!
//! Each direction has its own ChaCha20-Poly1305 key derived from the
//! [`PairingKey`]. The nonce is the message's sequence number, which must
//! strictly increase, so a recorded message cannot be replayed and the two
//! directions never share a key and nonce. Nothing about the network (SSID,
//! passphrase) or the outcome is visible over the air, and a tampered or
//! forged message fails to open.

use prost::Message;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use tether_proto::v1::{
    CommissioningMessage, NetworkKind, ProvisionNetwork, ProvisionOutcome as WireOutcome,
    ProvisionReport, ProvisionStatus, WifiCredentials as WireCredentials, WifiSecurity,
    commissioning_message::Kind,
};
use thiserror::Error;

use crate::pake::{PairingKey, decode_message};

/// Longest SSID (IEEE 802.11).
pub const MAX_SSID_BYTES: usize = 32;
/// WPA passphrase length bounds (8–63 characters, or 64 hex digits).
pub const WPA_PASSPHRASE_BYTES: std::ops::RangeInclusive<usize> = 8..=64;

const KEY_SALT: &[u8] = b"tether/1 provision";
const INFO_TO_DEVICE: &[u8] = b"tether/1 provision to device";
const INFO_TO_COMMISSIONER: &[u8] = b"tether/1 provision to commissioner";
const AAD_NETWORK: &[u8] = b"tether/1 provision network";
const AAD_STATUS: &[u8] = b"tether/1 provision status";

/// Why a provisioning message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// Not a commissioning message of the expected kind.
    #[error("malformed provisioning message: {0}")]
    Malformed(&'static str),
    /// The sealed part did not open: wrong key, tampered or forged.
    #[error("the sealed message did not open (tampered or not from the paired peer)")]
    Unsealed,
    /// The sequence number did not increase (a replay).
    #[error("sequence {found} is not above {last} (replay)")]
    Replay {
        /// The last sequence accepted.
        last: u32,
        /// The one received.
        found: u32,
    },
    /// The credentials are not usable (SSID or passphrase length, security).
    #[error("invalid credentials: {0}")]
    InvalidCredentials(&'static str),
    /// The report answers another request.
    #[error("the report answers sequence {answers}, not {expected}")]
    WrongAnswer {
        /// The request it answers.
        answers: u32,
        /// The request sent.
        expected: u32,
    },
    /// 2^32 messages were sent under one pairing key.
    #[error("sequence space exhausted: pair again")]
    Exhausted,
}

/// Wi-Fi security of the network to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No passphrase.
    Open,
    /// WPA2-Personal.
    Wpa2Personal,
    /// WPA3-Personal (SAE).
    Wpa3Personal,
}

/// Which network the device joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The owner's home Wi-Fi.
    Home,
    /// The car's hotspot (in-car devices).
    CarHotspot,
}

/// Network credentials. `Debug` hides the SSID and the passphrase: both
/// identify the owner's home (R13).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The SSID, 1–32 bytes.
    pub ssid: Vec<u8>,
    /// The passphrase (empty for an open network).
    pub passphrase: Vec<u8>,
    /// The security mode.
    pub security: Security,
    /// Home Wi-Fi or the car's hotspot.
    pub network: Network,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ssid", &"<hidden>")
            .field("passphrase", &"<hidden>")
            .field("security", &self.security)
            .field("network", &self.network)
            .finish()
    }
}

impl Credentials {
    /// Checks lengths and security: an SSID of 1–32 bytes, a WPA passphrase
    /// of 8–64 bytes, none for an open network.
    pub fn validate(&self) -> Result<(), ProvisionError> {
        if self.ssid.is_empty() || self.ssid.len() > MAX_SSID_BYTES {
            return Err(ProvisionError::InvalidCredentials(
                "SSID must be 1 to 32 bytes",
            ));
        }
        match self.security {
            Security::Open if !self.passphrase.is_empty() => Err(
                ProvisionError::InvalidCredentials("an open network takes no passphrase"),
            ),
            Security::Wpa2Personal | Security::Wpa3Personal
                if !WPA_PASSPHRASE_BYTES.contains(&self.passphrase.len()) =>
            {
                Err(ProvisionError::InvalidCredentials(
                    "a WPA passphrase is 8 to 64 bytes",
                ))
            }
            _ => Ok(()),
        }
    }

    fn to_wire(&self) -> WireCredentials {
        WireCredentials {
            ssid: self.ssid.clone(),
            passphrase: self.passphrase.clone(),
            security: match self.security {
                Security::Open => WifiSecurity::Open,
                Security::Wpa2Personal => WifiSecurity::Wpa2Personal,
                Security::Wpa3Personal => WifiSecurity::Wpa3Personal,
            } as i32,
            kind: match self.network {
                Network::Home => NetworkKind::Home,
                Network::CarHotspot => NetworkKind::CarHotspot,
            } as i32,
        }
    }

    fn from_wire(wire: WireCredentials) -> Result<Self, ProvisionError> {
        let security = match WifiSecurity::try_from(wire.security) {
            Ok(WifiSecurity::Open) => Security::Open,
            Ok(WifiSecurity::Wpa2Personal) => Security::Wpa2Personal,
            Ok(WifiSecurity::Wpa3Personal) => Security::Wpa3Personal,
            _ => return Err(ProvisionError::InvalidCredentials("unknown security")),
        };
        let network = match NetworkKind::try_from(wire.kind) {
            Ok(NetworkKind::Home) => Network::Home,
            Ok(NetworkKind::CarHotspot) => Network::CarHotspot,
            _ => return Err(ProvisionError::InvalidCredentials("unknown network kind")),
        };
        let credentials = Self {
            ssid: wire.ssid,
            passphrase: wire.passphrase,
            security,
            network,
        };
        credentials.validate()?;
        Ok(credentials)
    }
}

/// What the device reports after trying the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Joined: the device is on the LAN and will be found over mDNS.
    Joined,
    /// The access point refused the passphrase.
    WrongPassphrase,
    /// No access point with that SSID was found.
    NetworkNotFound,
    /// Joining did not finish in time.
    Timeout,
    /// The credentials could not be used.
    Invalid,
}

impl Outcome {
    fn to_wire(self) -> WireOutcome {
        match self {
            Outcome::Joined => WireOutcome::Joined,
            Outcome::WrongPassphrase => WireOutcome::WrongPassphrase,
            Outcome::NetworkNotFound => WireOutcome::NetworkNotFound,
            Outcome::Timeout => WireOutcome::Timeout,
            Outcome::Invalid => WireOutcome::Invalid,
        }
    }

    fn from_wire(value: i32) -> Result<Self, ProvisionError> {
        Ok(match WireOutcome::try_from(value) {
            Ok(WireOutcome::Joined) => Outcome::Joined,
            Ok(WireOutcome::WrongPassphrase) => Outcome::WrongPassphrase,
            Ok(WireOutcome::NetworkNotFound) => Outcome::NetworkNotFound,
            Ok(WireOutcome::Timeout) => Outcome::Timeout,
            Ok(WireOutcome::Invalid) => Outcome::Invalid,
            _ => return Err(ProvisionError::Malformed("unknown outcome")),
        })
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// One direction's AEAD key and its last sequence number. Each use (the
/// provisioning and the binding of one pairing) derives its own keys, so
/// two sequence counters never share a key.
pub(crate) struct Direction {
    key: LessSafeKey,
    aad: &'static [u8],
    last: u32,
}

impl Direction {
    pub(crate) fn new(pairing: &PairingKey, info: &'static [u8], aad: &'static [u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KEY_SALT).extract(pairing.as_bytes());
        let mut key = [0; 32];
        let info = [info];
        prk.expand(&info, Len32)
            .and_then(|okm| okm.fill(&mut key))
            .expect("32 bytes is within HKDF-SHA256's output limit");
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key)
            .expect("a 32-byte key is valid for ChaCha20-Poly1305");
        Self {
            key: LessSafeKey::new(key),
            aad,
            last: 0,
        }
    }

    fn nonce(sequence: u32) -> Nonce {
        let mut nonce = [0; 12];
        nonce[8..].copy_from_slice(&sequence.to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    }

    fn aad(&self, sequence: u32) -> Vec<u8> {
        let mut aad = self.aad.to_vec();
        aad.extend_from_slice(&sequence.to_be_bytes());
        aad
    }

    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> Result<(u32, Vec<u8>), ProvisionError> {
        let sequence = self.last.checked_add(1).ok_or(ProvisionError::Exhausted)?;
        let mut buffer = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Self::nonce(sequence),
                Aad::from(self.aad(sequence)),
                &mut buffer,
            )
            .map_err(|_| ProvisionError::Exhausted)?;
        self.last = sequence;
        Ok((sequence, buffer))
    }

    pub(crate) fn open(&mut self, sequence: u32, sealed: &[u8]) -> Result<Vec<u8>, ProvisionError> {
        if sequence <= self.last {
            return Err(ProvisionError::Replay {
                last: self.last,
                found: sequence,
            });
        }
        let mut buffer = sealed.to_vec();
        let plaintext = self
            .key
            .open_in_place(
                Self::nonce(sequence),
                Aad::from(self.aad(sequence)),
                &mut buffer,
            )
            .map_err(|_| ProvisionError::Unsealed)?;
        let plaintext = plaintext.to_vec();
        // Only an authentic message advances the window.
        self.last = sequence;
        Ok(plaintext)
    }
}

fn encode(kind: Kind) -> Vec<u8> {
    CommissioningMessage { kind: Some(kind) }.encode_to_vec()
}

/// The commissioner's side: seals credentials, opens reports.
pub struct ProvisioningCommissioner {
    to_device: Direction,
    from_device: Direction,
    awaiting: Option<u32>,
}

impl std::fmt::Debug for ProvisioningCommissioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningCommissioner")
            .field("awaiting", &self.awaiting)
            .finish_non_exhaustive()
    }
}

impl ProvisioningCommissioner {
    /// Provisioning under the key both sides got from pairing.
    pub fn new(key: &PairingKey) -> Self {
        Self {
            to_device: Direction::new(key, INFO_TO_DEVICE, AAD_NETWORK),
            from_device: Direction::new(key, INFO_TO_COMMISSIONER, AAD_STATUS),
            awaiting: None,
        }
    }

    /// The message that hands `credentials` to the device. Invalid
    /// credentials are refused here, before anything is sent.
    pub fn send_credentials(
        &mut self,
        credentials: &Credentials,
    ) -> Result<Vec<u8>, ProvisionError> {
        credentials.validate()?;
        let (sequence, sealed) = self
            .to_device
            .seal(&credentials.to_wire().encode_to_vec())?;
        self.awaiting = Some(sequence);
        Ok(encode(Kind::ProvisionNetwork(ProvisionNetwork {
            sequence,
            sealed,
        })))
    }

    /// Opens the device's report on the last credentials sent.
    pub fn handle_status(&mut self, bytes: &[u8]) -> Result<Outcome, ProvisionError> {
        let Ok(Kind::ProvisionStatus(status)) = decode_message(bytes) else {
            return Err(ProvisionError::Malformed("expected a ProvisionStatus"));
        };
        let plaintext = self.from_device.open(status.sequence, &status.sealed)?;
        let report = ProvisionReport::decode(plaintext.as_slice())
            .map_err(|_| ProvisionError::Malformed("sealed report"))?;
        let expected = self
            .awaiting
            .ok_or(ProvisionError::Malformed("no credentials were sent"))?;
        if report.answers != expected {
            return Err(ProvisionError::WrongAnswer {
                answers: report.answers,
                expected,
            });
        }
        self.awaiting = None;
        Outcome::from_wire(report.outcome)
    }
}

/// The device's side: opens credentials, seals reports.
pub struct ProvisioningDevice {
    from_commissioner: Direction,
    to_commissioner: Direction,
    last_request: Option<u32>,
}

impl std::fmt::Debug for ProvisioningDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningDevice")
            .field("last_request", &self.last_request)
            .finish_non_exhaustive()
    }
}

impl ProvisioningDevice {
    /// Provisioning under the key both sides got from pairing.
    pub fn new(key: &PairingKey) -> Self {
        Self {
            from_commissioner: Direction::new(key, INFO_TO_DEVICE, AAD_NETWORK),
            to_commissioner: Direction::new(key, INFO_TO_COMMISSIONER, AAD_STATUS),
            last_request: None,
        }
    }

    /// Opens credentials from the commissioner. A message that opens but
    /// carries unusable credentials is an error; answer it with
    /// [`Outcome::Invalid`].
    pub fn handle_credentials(&mut self, bytes: &[u8]) -> Result<Credentials, ProvisionError> {
        let Ok(Kind::ProvisionNetwork(network)) = decode_message(bytes) else {
            return Err(ProvisionError::Malformed("expected a ProvisionNetwork"));
        };
        let plaintext = self
            .from_commissioner
            .open(network.sequence, &network.sealed)?;
        self.last_request = Some(network.sequence);
        let wire = WireCredentials::decode(plaintext.as_slice())
            .map_err(|_| ProvisionError::Malformed("sealed credentials"))?;
        Credentials::from_wire(wire)
    }

    /// The sealed report of `outcome` for the last credentials opened.
    pub fn report(&mut self, outcome: Outcome) -> Result<Vec<u8>, ProvisionError> {
        let answers = self
            .last_request
            .ok_or(ProvisionError::Malformed("no credentials were received"))?;
        let report = ProvisionReport {
            answers,
            outcome: outcome.to_wire() as i32,
        };
        let (sequence, sealed) = self.to_commissioner.seal(&report.encode_to_vec())?;
        Ok(encode(Kind::ProvisionStatus(ProvisionStatus {
            sequence,
            sealed,
        })))
    }
}
