//! Binding a paired device to the account (R8, R13; SPEC §12.5).
//!
//! Over the paired link, the commissioner offers a fresh nonce and the
//! account authority's public key. The device generates its own key (it
//! never leaves the device) and answers with an enrollment request for the
//! `device` role carrying that nonce. The commissioner has the authority
//! issue a certificate and returns the grant; the device checks that the
//! certificate names its key, comes from the offered authority and carries
//! **no group key**, then reports.
//!
//! A device never holds the account group key: a compromised lamp cannot
//! resolve tokens or prove membership (§3.3). The commissioner refuses any
//! request for another role, so a device cannot bind itself as a phone.
//!
//! Messages are sealed like provisioning (§12.4) under their own
//! per-direction keys derived from the pairing key.

use prost::Message;
use tether_identity::{
    AccountAuthority, Credentials, DeviceKey, EnrollmentError, EnrollmentGrant, EnrollmentRequest,
    Role, VerifiedCertificate,
};
use tether_proto::v1::{
    BindOfferBody, BindReport, CommissioningMessage, Sealed, commissioning_message::Kind,
};
use thiserror::Error;

use crate::pake::{PairingKey, decode_message};
use crate::provision::{Direction, ProvisionError};

const INFO_TO_DEVICE: &[u8] = b"tether/1 bind to device";
const INFO_TO_COMMISSIONER: &[u8] = b"tether/1 bind to commissioner";
const AAD_TO_DEVICE: &[u8] = b"tether/1 bind offer";
const AAD_TO_COMMISSIONER: &[u8] = b"tether/1 bind answer";

/// Length of the binding nonce.
pub const BIND_NONCE_BYTES: usize = 16;

/// Why binding failed.
#[derive(Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BindError {
    /// Sealing or opening failed (tampered, replayed, not from the peer).
    #[error(transparent)]
    Sealed(#[from] ProvisionError),
    /// Not the expected message, or its plaintext does not parse.
    #[error("malformed binding message: {0}")]
    Malformed(&'static str),
    /// The device asked for a role other than `device`.
    #[error("a device may only enroll as a device, not as {0}")]
    NotADevice(Role),
    /// The request does not carry the offered nonce (a replayed request).
    #[error("the enrollment request does not answer this offer")]
    WrongNonce,
    /// The authority refused, or the grant does not verify on the device.
    #[error(transparent)]
    Enrollment(#[from] EnrollmentError),
    /// The grant comes from another authority than the one offered.
    #[error("the certificate is not from the offered authority")]
    WrongAuthority,
    /// A grant carried an account group key: never for a device.
    #[error("a device grant must not carry the account group key")]
    GroupKeyOffered,
    /// The device rejected the grant.
    #[error("the device rejected the binding: {0}")]
    Rejected(String),
    /// A step out of order.
    #[error("binding step out of order: {0}")]
    OutOfOrder(&'static str),
}

fn sealed(kind: fn(Sealed) -> Kind, sequence: u32, sealed: Vec<u8>) -> Vec<u8> {
    CommissioningMessage {
        kind: Some(kind(Sealed { sequence, sealed })),
    }
    .encode_to_vec()
}

/// The commissioner's side of binding.
pub struct BindingCommissioner {
    to_device: Direction,
    from_device: Direction,
    offered: Option<[u8; BIND_NONCE_BYTES]>,
    granted: Option<VerifiedCertificate>,
    /// The encoded certificate of the last grant sent.
    granted_message: Vec<u8>,
}

impl std::fmt::Debug for BindingCommissioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingCommissioner")
            .field("granted", &self.granted.as_ref().map(|c| c.serial))
            .finish_non_exhaustive()
    }
}

impl BindingCommissioner {
    /// Binding over the link paired with `key`.
    pub fn new(key: &PairingKey) -> Self {
        Self {
            to_device: Direction::new(key, INFO_TO_DEVICE, AAD_TO_DEVICE),
            from_device: Direction::new(key, INFO_TO_COMMISSIONER, AAD_TO_COMMISSIONER),
            offered: None,
            granted: None,
            granted_message: Vec::new(),
        }
    }

    /// The offer to send: a fresh `nonce` (16 random bytes) and the
    /// authority's public key.
    pub fn offer(
        &mut self,
        nonce: [u8; BIND_NONCE_BYTES],
        authority_public_key: [u8; 32],
    ) -> Result<Vec<u8>, BindError> {
        let body = BindOfferBody {
            nonce: nonce.to_vec(),
            authority_public_key: authority_public_key.to_vec(),
        };
        let (sequence, bytes) = self.to_device.seal(&body.encode_to_vec())?;
        self.offered = Some(nonce);
        Ok(sealed(Kind::BindOffer, sequence, bytes))
    }

    /// Handles the device's enrollment request: checks the role and nonce,
    /// has `authority` issue the certificate at `now` (Unix seconds), and
    /// returns the grant to send with the certificate it carries.
    pub fn handle_request(
        &mut self,
        bytes: &[u8],
        authority: &mut dyn AccountAuthority,
        now: u64,
    ) -> Result<(Vec<u8>, VerifiedCertificate), BindError> {
        let nonce = self
            .offered
            .take()
            .ok_or(BindError::OutOfOrder("no offer was made"))?;
        let Ok(Kind::BindRequest(message)) = decode_message(bytes) else {
            return Err(BindError::Malformed("expected a bind_request"));
        };
        let plaintext = self.from_device.open(message.sequence, &message.sealed)?;
        let request = EnrollmentRequest::decode(plaintext.as_slice())
            .map_err(|_| BindError::Malformed("sealed enrollment request"))?;
        match Role::from_proto(request.role) {
            Some(Role::Device) => {}
            Some(other) => return Err(BindError::NotADevice(other)),
            None => return Err(BindError::Malformed("unknown role")),
        }
        if request.nonce != nonce {
            return Err(BindError::WrongNonce);
        }
        let grant = authority.enroll(&request, now)?;
        if !grant.group_key.is_empty() {
            return Err(BindError::GroupKeyOffered);
        }
        let certificate = grant
            .certificate
            .as_ref()
            .ok_or(BindError::Malformed("grant without a certificate"))?;
        let verified =
            tether_identity::verify_certificate(certificate, &authority.public_key(), now)
                .map_err(EnrollmentError::from)?;
        let (sequence, bytes) = self.to_device.seal(&grant.encode_to_vec())?;
        self.granted = Some(verified.clone());
        self.granted_message = certificate.encode_to_vec();
        Ok((sealed(Kind::BindGrant, sequence, bytes), verified))
    }

    /// The encoded `DeviceCertificate` of the grant sent (empty before
    /// one), for the commissioner's binding record.
    pub fn granted_certificate(&self) -> &[u8] {
        &self.granted_message
    }

    /// Handles the device's report; `Ok` once the device accepted.
    pub fn handle_result(&mut self, bytes: &[u8]) -> Result<VerifiedCertificate, BindError> {
        let Ok(Kind::BindResult(message)) = decode_message(bytes) else {
            return Err(BindError::Malformed("expected a bind_result"));
        };
        let plaintext = self.from_device.open(message.sequence, &message.sealed)?;
        let report = BindReport::decode(plaintext.as_slice())
            .map_err(|_| BindError::Malformed("sealed bind report"))?;
        let granted = self
            .granted
            .take()
            .ok_or(BindError::OutOfOrder("no grant was sent"))?;
        if report.accepted {
            Ok(granted)
        } else {
            Err(BindError::Rejected(report.reason))
        }
    }
}

/// The device's side of binding.
pub struct BindingDevice {
    from_commissioner: Direction,
    to_commissioner: Direction,
    pending: Option<(DeviceKey, [u8; 32])>,
}

impl std::fmt::Debug for BindingDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingDevice")
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl BindingDevice {
    /// Binding over the link paired with `key`.
    pub fn new(key: &PairingKey) -> Self {
        Self {
            from_commissioner: Direction::new(key, INFO_TO_DEVICE, AAD_TO_DEVICE),
            to_commissioner: Direction::new(key, INFO_TO_COMMISSIONER, AAD_TO_COMMISSIONER),
            pending: None,
        }
    }

    /// Handles the offer with `key`, a key the device just generated for
    /// this binding; returns the sealed enrollment request.
    pub fn handle_offer(&mut self, bytes: &[u8], key: DeviceKey) -> Result<Vec<u8>, BindError> {
        let Ok(Kind::BindOffer(message)) = decode_message(bytes) else {
            return Err(BindError::Malformed("expected a bind_offer"));
        };
        let plaintext = self
            .from_commissioner
            .open(message.sequence, &message.sealed)?;
        let offer = BindOfferBody::decode(plaintext.as_slice())
            .map_err(|_| BindError::Malformed("sealed bind offer"))?;
        let nonce: [u8; BIND_NONCE_BYTES] = offer
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| BindError::Malformed("nonce length"))?;
        let authority: [u8; 32] = offer
            .authority_public_key
            .as_slice()
            .try_into()
            .map_err(|_| BindError::Malformed("authority key length"))?;
        let request = key.enrollment_request(Role::Device, nonce);
        let (sequence, bytes) = self.to_commissioner.seal(&request.encode_to_vec())?;
        self.pending = Some((key, authority));
        Ok(sealed(Kind::BindRequest, sequence, bytes))
    }

    /// Handles the grant at `now` (Unix seconds): on success the device's
    /// credentials (no group key) and the report to send; on a bad grant
    /// the error and a report saying so.
    pub fn handle_grant(
        &mut self,
        bytes: &[u8],
        now: u64,
    ) -> (Result<Credentials, BindError>, Option<Vec<u8>>) {
        let result = self.check_grant(bytes, now);
        let report = BindReport {
            accepted: result.is_ok(),
            reason: result
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default(),
        };
        let reply = self
            .to_commissioner
            .seal(&report.encode_to_vec())
            .ok()
            .map(|(sequence, bytes)| sealed(Kind::BindResult, sequence, bytes));
        (result, reply)
    }

    fn check_grant(&mut self, bytes: &[u8], now: u64) -> Result<Credentials, BindError> {
        let Ok(Kind::BindGrant(message)) = decode_message(bytes) else {
            return Err(BindError::Malformed("expected a bind_grant"));
        };
        let plaintext = self
            .from_commissioner
            .open(message.sequence, &message.sealed)?;
        let grant = EnrollmentGrant::decode(plaintext.as_slice())
            .map_err(|_| BindError::Malformed("sealed grant"))?;
        let (key, authority) = self
            .pending
            .take()
            .ok_or(BindError::OutOfOrder("no offer was answered"))?;
        if grant.authority_public_key != authority {
            return Err(BindError::WrongAuthority);
        }
        if !grant.group_key.is_empty() {
            return Err(BindError::GroupKeyOffered);
        }
        let credentials = Credentials::from_grant(key, &grant, now)?;
        if credentials.role() != Role::Device || credentials.group_key().is_some() {
            return Err(BindError::GroupKeyOffered);
        }
        Ok(credentials)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tether_identity::LocalAuthority;

    use super::*;
    use crate::pake::{AttemptLimiter, Commissioner, CommissionerStep, DeviceEvent, PairingDevice};

    const NOW: u64 = 1_800_000_000;

    fn pair() -> (PairingKey, PairingKey) {
        let mut device = PairingDevice::new(12_345_670, AttemptLimiter::default());
        let (mut commissioner, request) = Commissioner::start(12_345_670, [1; 32]);
        let challenge = device.handle(&request, 0, [2; 32]).unwrap().reply.unwrap();
        let CommissionerStep::Send(confirm) = commissioner.handle(&challenge).unwrap() else {
            panic!("confirm")
        };
        let done = device.handle(&confirm, 1, [3; 32]).unwrap();
        let Some(DeviceEvent::Paired(device_key)) = done.event else {
            panic!("device paired")
        };
        let CommissionerStep::Paired(key) = commissioner.handle(&done.reply.unwrap()).unwrap()
        else {
            panic!("commissioner paired")
        };
        (key, device_key)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_bound_device_gets_its_own_certificate_and_never_the_group_key_r8_r13() {
        let (key, device_key) = pair();
        let mut authority = LocalAuthority::generate().unwrap();
        let mut c = BindingCommissioner::new(&key);
        let mut d = BindingDevice::new(&device_key);
        let lamp_key = DeviceKey::generate().unwrap();
        let lamp_public = lamp_key.public_key();
        let offer = c.offer([9; 16], authority.public_key()).unwrap();
        let request = d.handle_offer(&offer, lamp_key).unwrap();
        let (grant, issued) = c.handle_request(&request, &mut authority, NOW).unwrap();
        assert_eq!(issued.role, Role::Device);
        assert_eq!(issued.public_key, lamp_public);
        let (credentials, report) = d.handle_grant(&grant, NOW);
        let credentials = credentials.unwrap();
        assert!(
            credentials.group_key().is_none(),
            "a device holds no group key"
        );
        assert_eq!(credentials.role(), Role::Device);
        assert_eq!(c.handle_result(&report.unwrap()).unwrap(), issued);
        // Nothing of the exchange is readable on the air: not even the
        // device's public key or the authority's.
        for message in [&offer, &request, &grant] {
            assert!(!contains(message, &lamp_public));
            assert!(!contains(message, &authority.public_key()));
        }
    }

    #[test]
    fn a_device_asking_for_a_member_role_is_refused_r8() {
        let (key, device_key) = pair();
        let mut authority = LocalAuthority::generate().unwrap();
        let mut c = BindingCommissioner::new(&key);
        let mut rogue = BindingDevice::new(&device_key);
        let offer = c.offer([4; 16], authority.public_key()).unwrap();
        // A compromised device opens the offer, then asks to be a phone.
        let Ok(Kind::BindOffer(m)) = decode_message(&offer) else {
            panic!("offer")
        };
        rogue.from_commissioner.open(m.sequence, &m.sealed).unwrap();
        let request = DeviceKey::generate()
            .unwrap()
            .enrollment_request(Role::Phone, [4; 16]);
        let (sequence, bytes) = rogue
            .to_commissioner
            .seal(&request.encode_to_vec())
            .unwrap();
        let forged = sealed(Kind::BindRequest, sequence, bytes);
        assert_eq!(
            c.handle_request(&forged, &mut authority, NOW).unwrap_err(),
            BindError::NotADevice(Role::Phone)
        );
    }

    #[test]
    fn a_request_for_an_older_offer_is_refused() {
        let (key, device_key) = pair();
        let mut authority = LocalAuthority::generate().unwrap();
        let mut c = BindingCommissioner::new(&key);
        let mut d = BindingDevice::new(&device_key);
        let offer = c.offer([5; 16], authority.public_key()).unwrap();
        d.handle_offer(&offer, DeviceKey::generate().unwrap())
            .unwrap();
        // The commissioner restarts with a new nonce; the device answers
        // with a request carrying the old one.
        let _ = c.offer([6; 16], authority.public_key()).unwrap();
        let stale = DeviceKey::generate()
            .unwrap()
            .enrollment_request(Role::Device, [5; 16]);
        let (sequence, bytes) = d.to_commissioner.seal(&stale.encode_to_vec()).unwrap();
        assert_eq!(
            c.handle_request(
                &sealed(Kind::BindRequest, sequence, bytes),
                &mut authority,
                NOW
            )
            .unwrap_err(),
            BindError::WrongNonce
        );
    }

    #[test]
    fn a_grant_from_another_authority_is_rejected_and_reported() {
        let (key, device_key) = pair();
        let offered = LocalAuthority::generate().unwrap();
        let mut other = LocalAuthority::generate().unwrap();
        let mut c = BindingCommissioner::new(&key);
        let mut d = BindingDevice::new(&device_key);
        let offer = c.offer([7; 16], offered.public_key()).unwrap();
        let request = d
            .handle_offer(&offer, DeviceKey::generate().unwrap())
            .unwrap();
        let (grant, _) = c.handle_request(&request, &mut other, NOW).unwrap();
        let (result, report) = d.handle_grant(&grant, NOW);
        assert_eq!(result.unwrap_err(), BindError::WrongAuthority);
        assert!(matches!(
            c.handle_result(&report.unwrap()),
            Err(BindError::Rejected(reason)) if reason.contains("authority")
        ));
    }

    #[test]
    fn tampered_or_replayed_binding_messages_are_refused() {
        let (key, device_key) = pair();
        let mut authority = LocalAuthority::generate().unwrap();
        let mut c = BindingCommissioner::new(&key);
        let mut d = BindingDevice::new(&device_key);
        let offer = c.offer([8; 16], authority.public_key()).unwrap();
        let mut tampered = CommissioningMessage::decode(offer.as_slice()).unwrap();
        if let Some(Kind::BindOffer(m)) = &mut tampered.kind {
            m.sealed[0] ^= 1;
        }
        assert!(matches!(
            d.handle_offer(&tampered.encode_to_vec(), DeviceKey::generate().unwrap()),
            Err(BindError::Sealed(ProvisionError::Unsealed))
        ));
        let request = d
            .handle_offer(&offer, DeviceKey::generate().unwrap())
            .unwrap();
        assert!(matches!(
            d.handle_offer(&offer, DeviceKey::generate().unwrap()),
            Err(BindError::Sealed(ProvisionError::Replay { .. }))
        ));
        c.handle_request(&request, &mut authority, NOW).unwrap();
        assert!(matches!(
            c.handle_request(&request, &mut authority, NOW),
            Err(BindError::OutOfOrder(_))
        ));
    }
}
