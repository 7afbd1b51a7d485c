//! Advert formats, sans-IO (R1, R2, R13; SPEC §13.1).
//!
//! Tether adverts carry service data under [`TETHER_SERVICE_UUID16`]. The
//! first byte says what follows:
//!
//! ```text
//! byte 0: version (bits 7-5, 0) | kind (bits 4-3) | reserved (bits 2-0, 0)
//! member         kind 0: token (16 bytes: 8-byte nonce, 8-byte HMAC tag)   17 bytes
//! unprovisioned  kind 1: product model u16 BE | discriminator (12 bits) << 4
//!                        | advert flags (4 bits)                           5 bytes
//! ```
//!
//! A member's token is the discovery token of SPEC §4.2 (a fresh nonce and a
//! tag under the account's discovery key), so only members of the account can
//! tell two adverts of one device apart from two devices. An unprovisioned
//! device shows its product model and the discriminator from its setup
//! payload, which is random per factory reset.
//!
//! What is deliberately absent, after the published attacks on Apple
//! Continuity: no counter, sequence number or IV in clear; no byte derived
//! from a MAC, serial, device id, VIN or phone number, hashed or not. The
//! host must change the BLE random address whenever the token rotates
//! (the simulated radio enforces it), and adverts triggered by user actions
//! go through [`BurstLimiter`].
//!
//! [`TETHER_SERVICE_UUID16`]: crate::radio::TETHER_SERVICE_UUID16

use thiserror::Error;

/// The advert format version this build writes and reads.
pub const ADVERT_VERSION: u8 = 0;
/// Length of a member token: 8-byte nonce and 8-byte tag (SPEC §4.2).
pub const TOKEN_BYTES: usize = 16;
/// Service data length of a member advert.
pub const MEMBER_ADVERT_BYTES: usize = 1 + TOKEN_BYTES;
/// Service data length of an unprovisioned advert.
pub const UNPROVISIONED_ADVERT_BYTES: usize = 5;
/// Largest discriminator (12 bits).
pub const MAX_DISCRIMINATOR: u16 = 0x0fff;
/// Advert flag: the device's pairing window is open.
pub const FLAG_PAIRING_OPEN: u8 = 0b0001;
/// Advert flags this version defines; the others must be 0.
pub const KNOWN_FLAGS: u8 = FLAG_PAIRING_OPEN;

const KIND_MEMBER: u8 = 0;
const KIND_UNPROVISIONED: u8 = 1;

/// What a Tether advert announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advert {
    /// A member of some account (car, phone, hub): only its token.
    Member {
        /// The current discovery token (nonce and tag).
        token: [u8; TOKEN_BYTES],
    },
    /// A device waiting to be commissioned.
    Unprovisioned {
        /// The vendor's product model.
        product_model: u16,
        /// The random discriminator from the setup payload (12 bits).
        discriminator: u16,
        /// Advert flags ([`FLAG_PAIRING_OPEN`]).
        flags: u8,
    },
}

/// Why service data is not a Tether advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AdvertError {
    /// No bytes.
    #[error("empty advert")]
    Empty,
    /// A version this build does not read.
    #[error("advert version {0} is not supported")]
    Version(u8),
    /// A kind this build does not know.
    #[error("unknown advert kind {0}")]
    Kind(u8),
    /// Reserved bits or unknown flags are set.
    #[error("reserved bits set")]
    Reserved,
    /// The length does not match the kind.
    #[error("advert of kind {kind} must be {expected} bytes, got {found}")]
    Length {
        /// The kind.
        kind: u8,
        /// Its length.
        expected: usize,
        /// What arrived.
        found: usize,
    },
    /// A field is out of range (discriminator above 12 bits).
    #[error("field out of range: {0}")]
    Range(&'static str),
}

fn header(kind: u8) -> u8 {
    (ADVERT_VERSION << 5) | (kind << 3)
}

impl Advert {
    /// The service data bytes. Fails only for an out-of-range field.
    pub fn encode(&self) -> Result<Vec<u8>, AdvertError> {
        match *self {
            Advert::Member { token } => {
                let mut out = Vec::with_capacity(MEMBER_ADVERT_BYTES);
                out.push(header(KIND_MEMBER));
                out.extend_from_slice(&token);
                Ok(out)
            }
            Advert::Unprovisioned {
                product_model,
                discriminator,
                flags,
            } => {
                if discriminator > MAX_DISCRIMINATOR {
                    return Err(AdvertError::Range("discriminator above 12 bits"));
                }
                if flags & !KNOWN_FLAGS != 0 {
                    return Err(AdvertError::Reserved);
                }
                let packed = (discriminator << 4) | u16::from(flags);
                let mut out = Vec::with_capacity(UNPROVISIONED_ADVERT_BYTES);
                out.push(header(KIND_UNPROVISIONED));
                out.extend_from_slice(&product_model.to_be_bytes());
                out.extend_from_slice(&packed.to_be_bytes());
                Ok(out)
            }
        }
    }

    /// Parses service data from the air, strictly: version, kind, exact
    /// length, reserved bits and flags are all checked.
    pub fn decode(data: &[u8]) -> Result<Self, AdvertError> {
        let (&first, rest) = data.split_first().ok_or(AdvertError::Empty)?;
        let version = first >> 5;
        if version != ADVERT_VERSION {
            return Err(AdvertError::Version(version));
        }
        if first & 0b111 != 0 {
            return Err(AdvertError::Reserved);
        }
        let kind = (first >> 3) & 0b11;
        let length = |expected: usize| AdvertError::Length {
            kind,
            expected,
            found: data.len(),
        };
        match kind {
            KIND_MEMBER => {
                let token: [u8; TOKEN_BYTES] =
                    rest.try_into().map_err(|_| length(MEMBER_ADVERT_BYTES))?;
                Ok(Advert::Member { token })
            }
            KIND_UNPROVISIONED => {
                let [m0, m1, p0, p1] = rest else {
                    return Err(length(UNPROVISIONED_ADVERT_BYTES));
                };
                let packed = u16::from_be_bytes([*p0, *p1]);
                let flags = u8::try_from(packed & 0x0f).unwrap_or(0);
                if flags & !KNOWN_FLAGS != 0 {
                    return Err(AdvertError::Reserved);
                }
                Ok(Advert::Unprovisioned {
                    product_model: u16::from_be_bytes([*m0, *m1]),
                    discriminator: packed >> 4,
                    flags,
                })
            }
            other => Err(AdvertError::Kind(other)),
        }
    }
}

/// Limits advert bursts triggered by user actions (opening the app,
/// pressing a button), so that an observer cannot read a person's activity
/// off the advert rate, and a stuck button cannot flood the air.
///
/// Sans-IO: the host passes its monotonic clock in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstLimiter {
    min_interval_ms: u64,
    last_ms: Option<u64>,
}

/// The default spacing of user-triggered bursts.
pub const DEFAULT_BURST_INTERVAL_MS: u64 = 30_000;

impl Default for BurstLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_BURST_INTERVAL_MS)
    }
}

impl BurstLimiter {
    /// At most one burst per `min_interval_ms`.
    pub fn new(min_interval_ms: u64) -> Self {
        Self {
            min_interval_ms,
            last_ms: None,
        }
    }

    /// A user action at `now_ms` asks for a burst. Returns `Ok(())` if it
    /// may start now (and records it), or `Err(wait_ms)` until the next
    /// allowed burst; the host then simply keeps its normal advert rate.
    pub fn request(&mut self, now_ms: u64) -> Result<(), u64> {
        if let Some(last) = self.last_ms {
            let next = last.saturating_add(self.min_interval_ms);
            if now_ms < next {
                return Err(next - now_ms);
            }
        }
        self.last_ms = Some(now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn adverts_round_trip_at_their_exact_lengths_r13() {
        let member = Advert::Member { token: [0xa5; 16] };
        let bytes = member.encode().unwrap();
        assert_eq!(bytes.len(), MEMBER_ADVERT_BYTES);
        assert_eq!(Advert::decode(&bytes), Ok(member));
        for (model, disc, flags) in [
            (0, 0, 0),
            (0xffff, 0x0fff, FLAG_PAIRING_OPEN),
            (0x1234, 3840, 1),
        ] {
            let advert = Advert::Unprovisioned {
                product_model: model,
                discriminator: disc,
                flags,
            };
            let bytes = advert.encode().unwrap();
            assert_eq!(bytes.len(), UNPROVISIONED_ADVERT_BYTES);
            assert_eq!(Advert::decode(&bytes), Ok(advert));
        }
    }

    #[test]
    fn decoding_is_strict() {
        let good = Advert::Unprovisioned {
            product_model: 7,
            discriminator: 99,
            flags: 1,
        }
        .encode()
        .unwrap();
        assert_eq!(Advert::decode(&[]), Err(AdvertError::Empty));
        let mut v1 = good.clone();
        v1[0] |= 1 << 5;
        assert_eq!(Advert::decode(&v1), Err(AdvertError::Version(1)));
        let mut reserved = good.clone();
        reserved[0] |= 1;
        assert_eq!(Advert::decode(&reserved), Err(AdvertError::Reserved));
        let mut flags = good.clone();
        flags[4] |= 0b0100;
        assert_eq!(Advert::decode(&flags), Err(AdvertError::Reserved));
        let mut kind = good.clone();
        kind[0] = 2 << 3;
        assert_eq!(Advert::decode(&kind), Err(AdvertError::Kind(2)));
        assert!(matches!(
            Advert::decode(&good[..4]),
            Err(AdvertError::Length {
                kind: 1,
                expected: 5,
                found: 4
            })
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            Advert::decode(&long),
            Err(AdvertError::Length { .. })
        ));
        assert!(matches!(
            Advert::decode(&[0; 16]),
            Err(AdvertError::Length {
                kind: 0,
                expected: 17,
                found: 16
            })
        ));
    }

    #[test]
    fn out_of_range_fields_are_refused_when_encoding() {
        let wide = Advert::Unprovisioned {
            product_model: 1,
            discriminator: 0x1000,
            flags: 0,
        };
        assert!(matches!(wide.encode(), Err(AdvertError::Range(_))));
        let flags = Advert::Unprovisioned {
            product_model: 1,
            discriminator: 1,
            flags: 0b10,
        };
        assert_eq!(flags.encode(), Err(AdvertError::Reserved));
    }

    #[test]
    fn a_member_advert_is_the_token_and_nothing_else_r2() {
        let token = [0x3c; 16];
        let bytes = Advert::Member { token }.encode().unwrap();
        assert_eq!(&bytes[1..], &token);
        assert_eq!(bytes[0], 0, "version 0, kind member, no flags, no counter");
    }

    #[test]
    fn user_triggered_bursts_are_spaced_r1() {
        let mut limiter = BurstLimiter::new(30_000);
        assert_eq!(limiter.request(1_000), Ok(()));
        assert_eq!(limiter.request(1_001), Err(29_999));
        assert_eq!(limiter.request(30_999), Err(1));
        assert_eq!(limiter.request(31_000), Ok(()));
    }

    #[test]
    fn decode_never_panics_on_short_or_odd_input() {
        for len in 0..40usize {
            for fill in [0u8, 0x08, 0xff, 0x10] {
                let _ = Advert::decode(&vec![fill; len]);
            }
        }
    }
}
