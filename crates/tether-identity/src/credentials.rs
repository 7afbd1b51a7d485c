use tether_proto::v1::{DeviceCertificate, EnrollmentGrant};

use crate::certificate::{
    AccountKeyId, CertificateCache, VerifiedCertificate, verify_certificate,
    verify_certificate_signature,
};
use crate::keys::{DeviceKey, GroupKey, PUBLIC_KEY_LEN};
use crate::revocation::{RevocationError, VerifiedRevocationList, verify_revocation_list};
use crate::{EnrollmentError, KeyError, Role};
use tether_proto::v1::RevocationList;

/// The part of a member's credentials that changes when the authority
/// removes a device (SPEC §3.6): the group key of the current epoch, the
/// previous epoch's key during its grace period, and the revocation list.
#[derive(Debug, Default)]
struct Membership {
    group_key: Option<GroupKey>,
    previous: Option<(GroupKey, u64)>,
    list: Option<VerifiedRevocationList>,
}

/// What [`Credentials::adopt`] did with a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Its serial is not above the one held: ignored.
    Ignored,
    /// The list replaced the one held; `new_epoch` when the group key
    /// changed with it.
    Updated {
        /// The group key moved to a new epoch.
        new_epoch: bool,
    },
}

/// Everything a member needs to authenticate: its device key, its
/// certificate, the authority's public key and (for members) the group key.
#[derive(Debug)]
pub struct Credentials {
    key: DeviceKey,
    certificate: DeviceCertificate,
    verified: VerifiedCertificate,
    authority_public_key: [u8; PUBLIC_KEY_LEN],
    /// Group key epochs and the revocation list; shared by every connection
    /// made with these credentials, and replaced when a newer list arrives.
    membership: std::sync::RwLock<Membership>,
    /// Peers' certificates verified before, shared by every connection
    /// made with these credentials.
    peer_certificates: CertificateCache,
}

impl Credentials {
    /// Accepts a grant from the authority for `key`, checking that the
    /// certificate is valid at `now` and names this key.
    pub fn from_grant(
        key: DeviceKey,
        grant: &EnrollmentGrant,
        now: u64,
    ) -> Result<Self, EnrollmentError> {
        let certificate = grant
            .certificate
            .clone()
            .ok_or(EnrollmentError::Malformed("grant without certificate"))?;
        let authority_public_key: [u8; PUBLIC_KEY_LEN] = grant
            .authority_public_key
            .as_slice()
            .try_into()
            .map_err(|_| EnrollmentError::Malformed("authority key length"))?;
        let verified = verify_certificate(&certificate, &authority_public_key, now)?;
        if verified.public_key != key.public_key() {
            return Err(EnrollmentError::WrongKey);
        }
        let group_key = match (verified.role.holds_group_key(), grant.group_key.is_empty()) {
            (true, false) => Some(GroupKey::from_bytes(&grant.group_key)?),
            (false, true) => None,
            (true, true) => {
                return Err(EnrollmentError::Malformed("member grant without group key"));
            }
            (false, false) => {
                return Err(EnrollmentError::Malformed("device grant with group key"));
            }
        };
        Ok(Self {
            key,
            certificate,
            verified,
            authority_public_key,
            membership: std::sync::RwLock::new(Membership {
                group_key,
                ..Membership::default()
            }),
            peer_certificates: CertificateCache::default(),
        })
    }

    /// Rebuilds credentials from stored parts without a validity check on
    /// time (a stored certificate may be checked against the clock later).
    pub fn restore(
        key: DeviceKey,
        certificate: DeviceCertificate,
        authority_public_key: &[u8],
        group_key: Option<&[u8]>,
    ) -> Result<Self, EnrollmentError> {
        let authority_public_key: [u8; PUBLIC_KEY_LEN] = authority_public_key
            .try_into()
            .map_err(|_| EnrollmentError::Malformed("authority key length"))?;
        // Stored certificates are checked against the clock at use.
        let verified = verify_certificate_signature(&certificate, &authority_public_key)?;
        if verified.public_key != key.public_key() {
            return Err(EnrollmentError::WrongKey);
        }
        let group_key = group_key
            .map(GroupKey::from_bytes)
            .transpose()
            .map_err(|_: KeyError| EnrollmentError::Malformed("group key length"))?;
        Ok(Self {
            key,
            certificate,
            verified,
            authority_public_key,
            membership: std::sync::RwLock::new(Membership {
                group_key,
                ..Membership::default()
            }),
            peer_certificates: CertificateCache::default(),
        })
    }

    /// The device key.
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// The certificate as issued (for sending to a peer).
    pub fn certificate_message(&self) -> &DeviceCertificate {
        &self.certificate
    }

    /// The checked certificate contents.
    pub fn certificate(&self) -> &VerifiedCertificate {
        &self.verified
    }

    /// The account authority's public key.
    pub fn authority_public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.authority_public_key
    }

    /// The account this device belongs to.
    pub fn account_key_id(&self) -> AccountKeyId {
        self.verified.account_key_id
    }

    /// The role in the certificate.
    pub fn role(&self) -> Role {
        self.verified.role
    }

    /// Checks a peer's certificate against `authority_public_key` at `now`
    /// (Unix seconds), as [`verify_certificate`] does, skipping the
    /// signature check for a certificate verified before (see
    /// [`CertificateCache`]).
    pub fn verify_peer_certificate(
        &self,
        cert: &DeviceCertificate,
        authority_public_key: &[u8],
        now: u64,
    ) -> Result<VerifiedCertificate, crate::CertificateError> {
        self.peer_certificates
            .verify(cert, authority_public_key, now)
    }

    /// The peers' certificates verified so far.
    pub fn peer_certificates(&self) -> &CertificateCache {
        &self.peer_certificates
    }

    fn membership(&self) -> std::sync::RwLockReadGuard<'_, Membership> {
        self.membership.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The group key of the current epoch; `None` for smart devices.
    pub fn group_key(&self) -> Option<GroupKey> {
        self.membership().group_key.clone()
    }

    /// The current group key epoch: the revocation list's, 0 without one
    /// (SPEC §3.6).
    pub fn group_key_epoch(&self) -> u32 {
        self.membership()
            .list
            .as_ref()
            .map_or(0, |l| l.group_key_epoch)
    }

    /// The previous epoch's group key while its grace period lasts at `now`
    /// (Unix seconds, inclusive bound).
    pub fn previous_group_key(&self, now: u64) -> Option<GroupKey> {
        self.membership()
            .previous
            .as_ref()
            .filter(|(_, until)| now <= *until)
            .map(|(k, _)| k.clone())
    }

    /// The previous epoch's key and the last second of its grace period,
    /// whether or not it has passed (for the store).
    pub fn previous_group_key_until(&self) -> Option<(GroupKey, u64)> {
        self.membership().previous.clone()
    }

    /// The revocation list held, if any.
    pub fn revocation_list(&self) -> Option<VerifiedRevocationList> {
        self.membership().list.clone()
    }

    /// The serial of the list held (0: none).
    pub fn revocation_serial(&self) -> u64 {
        self.membership().list.as_ref().map_or(0, |l| l.serial)
    }

    /// Whether the list held removes the device with this public key.
    pub fn is_revoked(&self, public_key: &[u8; PUBLIC_KEY_LEN]) -> bool {
        self.membership()
            .list
            .as_ref()
            .is_some_and(|l| l.is_revoked(public_key))
    }

    /// Takes a revocation list from a peer or the authority (SPEC §3.6): it
    /// must verify under this account's authority; a serial not above the
    /// one held is [`Adopted::Ignored`]. A list of a newer epoch needs that
    /// epoch's group key (`group_key`, or the one held if it already is that
    /// key), checked against the list; the key it replaces stays accepted
    /// until the list's `previous_epoch_until`. A smart device keeps the
    /// list without any key.
    pub fn adopt(
        &self,
        list: &RevocationList,
        group_key: Option<&[u8]>,
    ) -> Result<Adopted, RevocationError> {
        let verified = verify_revocation_list(list, &self.authority_public_key)?;
        let offered = group_key
            .map(GroupKey::from_bytes)
            .transpose()
            .map_err(|_| RevocationError::KeyMismatch)?;
        let mut m = self.membership.write().unwrap_or_else(|p| p.into_inner());
        let held_serial = m.list.as_ref().map_or(0, |l| l.serial);
        if verified.serial <= held_serial {
            return Ok(Adopted::Ignored);
        }
        if !self.verified.role.holds_group_key() {
            m.list = Some(verified);
            return Ok(Adopted::Updated { new_epoch: false });
        }
        let held_epoch = m.list.as_ref().map_or(0, |l| l.group_key_epoch);
        if verified.group_key_epoch < held_epoch {
            return Err(RevocationError::OlderEpoch);
        }
        let current = m.group_key.clone();
        let key = match (offered, &current) {
            (Some(k), _) if verified.names_key(&k) => k,
            (_, Some(k)) if verified.names_key(k) => k.clone(),
            _ => return Err(RevocationError::KeyMismatch),
        };
        let new_epoch = current.as_ref() != Some(&key);
        if new_epoch {
            m.previous = current.map(|k| (k, verified.previous_epoch_until));
            m.group_key = Some(key);
        }
        m.list = Some(verified);
        Ok(Adopted::Updated { new_epoch })
    }

    /// Restores the stored list and previous epoch key (after
    /// [`Credentials::restore`]). The list must verify under this account's
    /// authority.
    pub fn restore_membership(
        &self,
        list: Option<&RevocationList>,
        previous: Option<(&[u8], u64)>,
    ) -> Result<(), RevocationError> {
        let list = list
            .map(|l| verify_revocation_list(l, &self.authority_public_key))
            .transpose()?;
        let previous = previous
            .map(|(k, until)| GroupKey::from_bytes(k).map(|k| (k, until)))
            .transpose()
            .map_err(|_| RevocationError::KeyMismatch)?;
        let mut m = self.membership.write().unwrap_or_else(|p| p.into_inner());
        m.list = list;
        m.previous = previous;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountAuthority, CertificateError, LocalAuthority};

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn member_enrollment_carries_group_key_and_device_enrollment_does_not() {
        let mut auth = LocalAuthority::generate().unwrap();
        let phone_key = DeviceKey::generate().unwrap();
        let grant = auth
            .enroll(&phone_key.enrollment_request(Role::Phone, [1; 16]), NOW)
            .unwrap();
        let phone = Credentials::from_grant(phone_key, &grant, NOW).unwrap();
        assert!(phone.group_key().is_some());

        let lamp_key = DeviceKey::generate().unwrap();
        let grant = auth
            .enroll(&lamp_key.enrollment_request(Role::Device, [2; 16]), NOW)
            .unwrap();
        assert!(grant.group_key.is_empty());
        let lamp = Credentials::from_grant(lamp_key, &grant, NOW).unwrap();
        assert!(lamp.group_key().is_none());
        assert_ne!(phone.certificate().serial, lamp.certificate().serial);
    }

    #[test]
    fn forged_proof_of_possession_is_refused() {
        let mut auth = LocalAuthority::generate().unwrap();
        let key = DeviceKey::generate().unwrap();
        let mut req = key.enrollment_request(Role::Phone, [1; 16]);
        req.role = Role::Vehicle.to_proto() as i32;
        assert_eq!(
            auth.enroll(&req, NOW).unwrap_err(),
            EnrollmentError::BadProof
        );
    }

    #[test]
    fn certificate_checks_account_signature_and_time() {
        let mut auth = LocalAuthority::generate().unwrap();
        let other = LocalAuthority::generate().unwrap();
        let key = DeviceKey::generate().unwrap();
        let grant = auth
            .issue(&key.enrollment_request(Role::Phone, [1; 16]), 100, 200)
            .unwrap();
        let cert = grant.certificate.clone().unwrap();
        let pk = auth.public_key();
        assert!(crate::verify_certificate(&cert, &pk, 150).is_ok());
        assert_eq!(
            crate::verify_certificate(&cert, &pk, 201),
            Err(CertificateError::Expired)
        );
        assert_eq!(
            crate::verify_certificate(&cert, &pk, 99),
            Err(CertificateError::NotYetValid)
        );
        assert_eq!(
            crate::verify_certificate(&cert, &other.public_key(), 150),
            Err(CertificateError::OtherAccount)
        );
        let mut tampered = cert.clone();
        let last = tampered.body.len() - 1;
        tampered.body[last] ^= 1;
        assert!(crate::verify_certificate(&tampered, &pk, 150).is_err());
        let mut bad_sig = cert;
        bad_sig.signature[0] ^= 1;
        assert_eq!(
            crate::verify_certificate(&bad_sig, &pk, 150),
            Err(CertificateError::BadSignature)
        );
        assert!(crate::decode_certificate(&[0xff; 600]).is_err());
        assert!(crate::decode_certificate(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn authority_state_round_trips() {
        let mut auth = LocalAuthority::generate().unwrap();
        let key = DeviceKey::generate().unwrap();
        auth.enroll(&key.enrollment_request(Role::Phone, [1; 16]), NOW)
            .unwrap();
        let restored = LocalAuthority::restore(&auth.state()).unwrap();
        assert_eq!(restored.public_key(), auth.public_key());
        assert_eq!(restored.state().next_serial, 2);
    }
}
