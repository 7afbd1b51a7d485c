//! Account identity for Tether (R2, R3): device keys, the account authority,
//! compact signed device certificates and the account *group key*.
//!
//! This crate performs no I/O and reads no clock: every check that depends on
//! time takes `now` (seconds since the Unix epoch) from the caller.
//!
//! # Usage
//! ```
//! use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
//!
//! let now = 1_800_000_000;
//! let mut authority = LocalAuthority::generate().unwrap();
//! let car_key = DeviceKey::generate().unwrap();
//! let request = car_key.enrollment_request(Role::Vehicle, [7; 16]);
//! let grant = authority.enroll(&request, now).unwrap();
//! let car = Credentials::from_grant(car_key, &grant, now).unwrap();
//! assert_eq!(car.certificate().role, Role::Vehicle);
//! ```

mod authority;
mod certificate;
mod credentials;
mod error;
mod keys;
mod letter;
mod revocation;
mod share;

pub use authority::{AccountAuthority, AuthorityState, CERTIFICATE_VALIDITY_S, LocalAuthority};
pub use certificate::{
    AccountKeyId, CERTIFICATE_CACHE_ENTRIES, CERTIFICATE_VERSION, CertificateCache,
    MAX_CERTIFICATE_BYTES, VerifiedCertificate, decode_certificate, verify_certificate,
    verify_certificate_signature,
};
pub use credentials::{Adopted, Credentials};
pub use error::{CertificateError, EnrollmentError, KeyError};
pub use keys::{
    DeviceKey, DeviceSecret, GroupKey, PUBLIC_KEY_LEN, SIGNATURE_LEN, verify_signature,
};
pub use letter::{
    LETTER_VERSION, LetterContents, LetterError, MAILBOX_ID_LEN, MAX_SEALED_LETTER, MailboxKey,
    OpenedLetter, letter_plaintext_for_fuzzing, may_post_commands,
};
pub use revocation::{
    GROUP_KEY_GRACE_S, MAX_REVOCATION_LIST_BYTES, MAX_REVOKED_KEYS, REVOCATION_LIST_CONTEXT,
    REVOCATION_LIST_VERSION, RevocationError, VerifiedRevocationList, decode_revocation_list,
    fuzz_revocation_list, group_key_check, revocation_list_digest, verify_revocation_list,
};
pub use share::{
    AcceptedInvite, GRANT_ID_LEN, GrantKey, GrantRequest, MAX_SHARE_GRANT_BYTES,
    MAX_SHARED_DEVICES, Permissions, SHARE_GRANT_CONTEXT, SHARE_GRANT_VERSION, ShareError,
    VerifiedGrant, accept_invite, fuzz_invite, sign_grant, verify_grant, verify_grant_signature,
};
pub use tether_proto::v1::{DeviceCertificate, EnrollmentGrant, EnrollmentRequest};
pub use tether_proto::v1::{RevocationList, ShareGrant, ShareInvite, SharePermission};

/// What a device is in the account. Carried in its certificate; the session
/// layer enforces it (R23: devices never command the car).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A car's head unit.
    Vehicle,
    /// The owner's (or a co-user's) phone; hosts the local authority.
    Phone,
    /// A watch paired with a phone (R24).
    Watch,
    /// A smart-home hub.
    Hub,
    /// A smart device (lamp, camera). Never receives the group key.
    Device,
}

impl Role {
    /// The wire value.
    pub fn to_proto(self) -> tether_proto::v1::Role {
        use tether_proto::v1::Role as P;
        match self {
            Role::Vehicle => P::Vehicle,
            Role::Phone => P::Phone,
            Role::Watch => P::Watch,
            Role::Hub => P::Hub,
            Role::Device => P::Device,
        }
    }

    /// Parses a wire value; `None` for unspecified or unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        use tether_proto::v1::Role as P;
        match P::try_from(value).ok()? {
            P::Vehicle => Some(Role::Vehicle),
            P::Phone => Some(Role::Phone),
            P::Watch => Some(Role::Watch),
            P::Hub => Some(Role::Hub),
            P::Device => Some(Role::Device),
            P::Unspecified => None,
        }
    }

    /// Whether devices of this role hold the account group key. Smart devices
    /// do not: a compromised lamp must not expose the account.
    pub fn holds_group_key(self) -> bool {
        !matches!(self, Role::Device)
    }

    /// Lower-case name used in logs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Vehicle => "vehicle",
            Role::Phone => "phone",
            Role::Watch => "watch",
            Role::Hub => "hub",
            Role::Device => "device",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
