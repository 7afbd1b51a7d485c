use prost::Message;
use tether_proto::v1::{CertificateBody, DeviceCertificate, EnrollmentGrant, EnrollmentRequest};

use crate::certificate::{AccountKeyId, CERTIFICATE_CONTEXT, CERTIFICATE_VERSION};
use crate::keys::{DeviceKey, GroupKey, PUBLIC_KEY_LEN, enrollment_message, verify_signature};
use crate::{EnrollmentError, KeyError, Role};

/// How long a certificate issued by [`LocalAuthority`] is valid: 365 days.
pub const CERTIFICATE_VALIDITY_S: u64 = 365 * 24 * 3600;

/// Issues device certificates for one account. In local mode the phone hosts
/// a [`LocalAuthority`]; a cloud authority implements the same trait.
pub trait AccountAuthority {
    /// The authority's raw Ed25519 public key.
    fn public_key(&self) -> [u8; PUBLIC_KEY_LEN];

    /// Checks the request's proof of possession and issues a certificate
    /// (with the group key unless the role is [`Role::Device`]). `now` is
    /// Unix seconds.
    fn enroll(
        &mut self,
        request: &EnrollmentRequest,
        now: u64,
    ) -> Result<EnrollmentGrant, EnrollmentError>;
}

/// What a [`LocalAuthority`] persists (in the host's store, mode 0600).
#[derive(Clone)]
pub struct AuthorityState {
    /// The authority's signing key, PKCS#8.
    pub signing_key_pkcs8: Vec<u8>,
    /// The account group key.
    pub group_key: [u8; 32],
    /// The next serial to issue.
    pub next_serial: u64,
}

impl std::fmt::Debug for AuthorityState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityState")
            .field("next_serial", &self.next_serial)
            .finish_non_exhaustive()
    }
}

/// An account authority kept on a member device (the phone, in local mode).
#[derive(Debug)]
pub struct LocalAuthority {
    key: DeviceKey,
    group_key: GroupKey,
    next_serial: u64,
}

impl LocalAuthority {
    /// Creates a new account: a fresh signing key and group key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self {
            key: DeviceKey::generate()?,
            group_key: GroupKey::generate()?,
            next_serial: 1,
        })
    }

    /// Restores an authority from its saved state.
    pub fn restore(state: &AuthorityState) -> Result<Self, KeyError> {
        Ok(Self {
            key: DeviceKey::from_pkcs8(&state.signing_key_pkcs8)?,
            group_key: GroupKey::from_bytes(&state.group_key)?,
            next_serial: state.next_serial,
        })
    }

    /// The state to persist after every enrollment.
    pub fn state(&self) -> AuthorityState {
        AuthorityState {
            signing_key_pkcs8: self.key.pkcs8().to_vec(),
            group_key: *self.group_key.as_bytes(),
            next_serial: self.next_serial,
        }
    }

    /// The account's id.
    pub fn account_key_id(&self) -> AccountKeyId {
        AccountKeyId::of(&self.key.public_key())
    }

    /// Issues a certificate with an explicit validity window. Used by
    /// [`AccountAuthority::enroll`] and by tests that need expired certificates.
    pub fn issue(
        &mut self,
        request: &EnrollmentRequest,
        not_before: u64,
        not_after: u64,
    ) -> Result<EnrollmentGrant, EnrollmentError> {
        let public_key: [u8; PUBLIC_KEY_LEN] = request
            .device_public_key
            .as_slice()
            .try_into()
            .map_err(|_| EnrollmentError::Malformed("device public key length"))?;
        let role = Role::from_proto(request.role).ok_or(EnrollmentError::Malformed("role"))?;
        if request.nonce.len() != 16 {
            return Err(EnrollmentError::Malformed("nonce length"));
        }
        let message = enrollment_message(&public_key, request.role, &request.nonce);
        if !verify_signature(&public_key, &message, &request.proof_of_possession) {
            return Err(EnrollmentError::BadProof);
        }
        let body = CertificateBody {
            version: CERTIFICATE_VERSION,
            device_public_key: public_key.to_vec(),
            role: request.role,
            account_key_id: self.account_key_id().0.to_vec(),
            serial: self.next_serial,
            not_before,
            not_after,
        }
        .encode_to_vec();
        self.next_serial += 1;
        let mut signed = Vec::with_capacity(CERTIFICATE_CONTEXT.len() + body.len());
        signed.extend_from_slice(CERTIFICATE_CONTEXT);
        signed.extend_from_slice(&body);
        let signature = self.key.sign(&signed).to_vec();
        Ok(EnrollmentGrant {
            certificate: Some(DeviceCertificate { body, signature }),
            authority_public_key: self.key.public_key().to_vec(),
            // R2/R3 and issue 4 §5: smart devices never hold the group key.
            group_key: if role.holds_group_key() {
                self.group_key.as_bytes().to_vec()
            } else {
                Vec::new()
            },
        })
    }
}

impl LocalAuthority {
    /// Removes devices from the account (SPEC §3.6): makes a new group key
    /// (this authority's from now on, so later enrollments carry it) and
    /// signs the list that follows `previous` with `remove` added and the
    /// new key's epoch. Returns the list and the new key, to adopt on this
    /// phone and hand to the remaining members. Persist [`Self::state`]
    /// afterwards. The signing key does not change, so certificates and
    /// share grants it signed keep verifying (SPEC §17.1).
    pub fn remove_devices(
        &mut self,
        previous: Option<&crate::VerifiedRevocationList>,
        remove: &[[u8; PUBLIC_KEY_LEN]],
        now: u64,
    ) -> Result<(tether_proto::v1::RevocationList, GroupKey), crate::RevocationError> {
        let new_key = GroupKey::generate().map_err(|_| crate::RevocationError::Random)?;
        let list = self.rotate_to(previous, remove, &new_key, now)?;
        Ok((list, new_key))
    }

    /// [`Self::remove_devices`] with a chosen new key (fixed seeds in the
    /// fuzz harness; everyone else wants a random one).
    #[doc(hidden)]
    pub fn rotate_to(
        &mut self,
        previous: Option<&crate::VerifiedRevocationList>,
        remove: &[[u8; PUBLIC_KEY_LEN]],
        new_key: &GroupKey,
        now: u64,
    ) -> Result<tether_proto::v1::RevocationList, crate::RevocationError> {
        if remove.contains(&self.key.public_key()) {
            return Err(crate::RevocationError::Malformed(
                "the authority cannot revoke its own key",
            ));
        }
        let list = crate::revocation::sign_next(&self.key, previous, remove, new_key, now)?;
        self.group_key = new_key.clone();
        Ok(list)
    }

    /// Signs a share grant for a co-user's account (R16; SPEC §17.1).
    pub fn sign_share_grant(
        &self,
        grant_id: [u8; crate::GRANT_ID_LEN],
        request: &crate::GrantRequest,
    ) -> Result<tether_proto::v1::ShareGrant, crate::ShareError> {
        crate::sign_grant(&self.key, grant_id, request)
    }
}

impl AccountAuthority for LocalAuthority {
    fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.public_key()
    }

    fn enroll(
        &mut self,
        request: &EnrollmentRequest,
        now: u64,
    ) -> Result<EnrollmentGrant, EnrollmentError> {
        self.issue(
            request,
            now.saturating_sub(60),
            now.saturating_add(CERTIFICATE_VALIDITY_S),
        )
    }
}
