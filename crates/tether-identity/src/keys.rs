use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::KeyError;
use crate::Role;

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A device's Ed25519 signing key. Generated on the device; its private half
/// never leaves the device (it is stored only in the device's own store).
pub struct DeviceKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// Generates a new key from the system random source.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Loads a key saved with [`DeviceKey::pkcs8`].
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::Malformed)?;
        Ok(Self {
            pkcs8: pkcs8.to_vec(),
            pair,
        })
    }

    /// The PKCS#8 document, for the device's own store only.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The raw public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// Signs `message` (Ed25519 is deterministic: the same message gives the
    /// same signature).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// Builds an enrollment request for `role` with the caller's random `nonce`.
    pub fn enrollment_request(
        &self,
        role: Role,
        nonce: [u8; 16],
    ) -> tether_proto::v1::EnrollmentRequest {
        let public_key = self.public_key();
        let proof = self.sign(&enrollment_message(
            &public_key,
            role.to_proto() as i32,
            &nonce,
        ));
        tether_proto::v1::EnrollmentRequest {
            device_public_key: public_key.to_vec(),
            role: role.to_proto() as i32,
            nonce: nonce.to_vec(),
            proof_of_possession: proof.to_vec(),
        }
    }
}

pub(crate) fn enrollment_message(public_key: &[u8], role: i32, nonce: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(80);
    m.extend_from_slice(b"tether/1 enroll\0");
    m.extend_from_slice(public_key);
    m.extend_from_slice(&(role as u32).to_be_bytes());
    m.extend_from_slice(nonce);
    m
}

/// Verifies an Ed25519 signature. A malformed key or signature is simply a
/// failed verification, never a panic.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    public_key.len() == PUBLIC_KEY_LEN
        && signature.len() == SIGNATURE_LEN
        && UnparsedPublicKey::new(&ED25519, public_key)
            .verify(message, signature)
            .is_ok()
}

/// The account's identity-protection key (SPEC §3.3). Shared by the
/// account's members (vehicle, phone, watch, hub), never by smart devices.
/// Discovery and membership keys are derived from it with HKDF-SHA256.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKey([u8; 32]);

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupKey(..)")
    }
}

impl GroupKey {
    /// Generates a fresh group key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = [0; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| KeyError::Random)?;
        Ok(Self(key))
    }

    /// Wraps stored key bytes; they must be exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        Ok(Self(bytes.try_into().map_err(|_| KeyError::Malformed)?))
    }

    /// The raw key, for the member's own store and the enrollment grant.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Key for discovery tokens (mDNS, BLE adverts): HKDF info `tether/1 discovery`.
    pub fn discovery_key(&self) -> [u8; 32] {
        self.derive(b"tether/1 discovery")
    }

    /// Key for the discovery tokens of the account's home hub, which serves
    /// the owner's task management (SPEC §18.8): HKDF info
    /// `tether/1 hub discovery`. Apart from [`GroupKey::discovery_key`], so
    /// that a member looking for the car never resolves the hub, while a
    /// non-member sees two tokens alike.
    pub fn hub_discovery_key(&self) -> [u8; 32] {
        self.derive(b"tether/1 hub discovery")
    }

    /// Key of the head unit's rendezvous topics on an MQTT relay (SPEC
    /// §19.2): HKDF info `tether/1 relay`. Apart from the discovery key, so
    /// a LAN token and a relay topic share nothing.
    pub fn relay_key(&self) -> [u8; 32] {
        self.derive(b"tether/1 relay")
    }

    /// Key of the home hub's rendezvous topics on an MQTT relay (SPEC
    /// §19.2): HKDF info `tether/1 hub relay`, so that a phone looking for
    /// the car never reaches the hub.
    pub fn hub_relay_key(&self) -> [u8; 32] {
        self.derive(b"tether/1 hub relay")
    }

    /// Key of the account's mailboxes on the relay (SPEC §19.12): names
    /// them and seals the letters left there. HKDF info `tether/1 mailbox`.
    pub fn mailbox_key(&self) -> crate::MailboxKey {
        crate::MailboxKey::new(self.derive(b"tether/1 mailbox"))
    }

    /// Key the handshake's admission hints and sealed `ServerAuth` derive from
    /// (SPEC §5.2): HKDF info `tether/1 membership`.
    pub fn membership_key(&self) -> [u8; 32] {
        self.derive(b"tether/1 membership")
    }

    fn derive(&self, info: &[u8]) -> [u8; 32] {
        hkdf_sha256(b"tether/1 group key", &self.0, info)
    }
}

/// The secret a bound smart device shares with its commissioner (from the
/// pairing key: SPEC §12.6). Members that hold it reach the device on the
/// LAN; the device holds no group key, and each device has its own secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceSecret([u8; 32]);

impl std::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}

impl DeviceSecret {
    /// Wraps the 32 secret bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw secret, for the store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Key of the handshake proof the device checks instead of the
    /// membership key: HKDF info `tether/1 device admission`.
    pub fn admission_key(&self) -> [u8; 32] {
        hkdf_sha256(b"tether/1 device", &self.0, b"tether/1 device admission")
    }

    /// Key of the device's discovery tokens on the LAN: HKDF info
    /// `tether/1 device discovery`.
    pub fn discovery_key(&self) -> [u8; 32] {
        hkdf_sha256(b"tether/1 device", &self.0, b"tether/1 device discovery")
    }
}

/// HKDF-SHA256 extract-and-expand to 32 bytes.
pub(crate) fn hkdf_sha256(salt: &[u8], secret: &[u8], info: &[u8]) -> [u8; 32] {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(secret);
    let infos = [info];
    let okm = prk
        .expand(&infos, Len32)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    let mut out = [0; 32];
    okm.fill(&mut out)
        .expect("buffer length equals the requested length");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_account() {
        let a = GroupKey::generate().unwrap();
        let b = GroupKey::generate().unwrap();
        assert_ne!(a.discovery_key(), a.membership_key());
        assert_ne!(a.discovery_key(), b.discovery_key());
        // The hub's tokens are under a key of their own (SPEC §18.8).
        assert_ne!(a.hub_discovery_key(), a.discovery_key());
        assert_ne!(a.hub_discovery_key(), a.membership_key());
        assert_eq!(
            a.hub_discovery_key(),
            hkdf_sha256(
                b"tether/1 group key",
                a.as_bytes(),
                b"tether/1 hub discovery"
            )
        );
        assert_eq!(
            a.discovery_key(),
            GroupKey::from_bytes(a.as_bytes()).unwrap().discovery_key()
        );
        // The relay's rendezvous keys (SPEC §19.2).
        assert_eq!(
            a.relay_key(),
            hkdf_sha256(b"tether/1 group key", a.as_bytes(), b"tether/1 relay")
        );
        assert_eq!(
            a.hub_relay_key(),
            hkdf_sha256(b"tether/1 group key", a.as_bytes(), b"tether/1 hub relay")
        );
        let all = [
            a.discovery_key(),
            a.hub_discovery_key(),
            a.membership_key(),
            a.relay_key(),
            a.hub_relay_key(),
        ];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_ne!(a.relay_key(), b.relay_key());
    }

    #[test]
    fn malformed_public_key_is_a_failed_verification_not_a_panic() {
        assert!(!verify_signature(&[0; 31], b"m", &[0; 64]));
        assert!(!verify_signature(&[0xff; 32], b"m", &[0; 64]));
        assert!(!verify_signature(&[0; 32], b"m", &[0; 10]));
    }

    #[test]
    fn device_key_round_trips_through_pkcs8() {
        let k = DeviceKey::generate().unwrap();
        let k2 = DeviceKey::from_pkcs8(k.pkcs8()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        assert!(verify_signature(&k.public_key(), b"x", &k2.sign(b"x")));
        assert_eq!(
            DeviceKey::from_pkcs8(b"junk").unwrap_err(),
            KeyError::Malformed
        );
    }
}
