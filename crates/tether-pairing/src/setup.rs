//! Setup payload of a device that is not yet commissioned (a lamp, a camera):
//! what its label or screen shows so that the head unit can find it and pair
//! with it. Modelled on Matter's onboarding payload (Matter Core
//! Specification §5.1), with Tether's own field layout and `TT:` prefix.
//!
//! This module is sans-IO and deterministic: it reads no clock, no socket and
//! no random source. [`random_passcode`] takes its random bytes from the
//! caller.
//!
//! # Fields
//!
//! | field | bits | meaning |
//! |---|---|---|
//! | `version` | 3 | format version, [`CURRENT_VERSION`] (0) is the only one encoded |
//! | `product_model` | 16 | model number, the same for every unit of a model |
//! | `flags` | 8 | capabilities: [`FLAG_BLE`], [`FLAG_SOFT_AP`], [`FLAG_ON_NETWORK`] |
//! | `discriminator` | 12 | random, tells apart several devices in setup mode |
//! | `passcode` | 27 | the pairing secret, `1..=99_999_998`, not a trivial one |
//!
//! # QR string
//!
//! `TT:` followed by the base-38 text (Matter's alphabet
//! `0-9A-Z-.`, uppercase only so a QR code stays in alphanumeric mode) of a
//! 72-bit little-endian bit field, least significant bit first: version,
//! product model, flags, discriminator, passcode, then 6 zero bits of padding.
//! The 9 bytes are cut into chunks of 3 bytes, each written as 5 characters,
//! least significant character first (Matter also writes 2 bytes as 4
//! characters and 1 byte as 2; a 9-byte payload never needs them). A QR string
//! is always [`QR_LENGTH`] (18) characters. [`SetupPayload::from_qr_string`] is
//! strict: prefix, alphabet, exact length, chunk values below 2^24, zero
//! padding and field ranges are all checked, so a string that parses encodes
//! back to itself.
//!
//! # Manual code
//!
//! 11 decimal digits for typing, Matter's short layout. With the *short
//! discriminator* `s` (the top 4 bits of the discriminator) and passcode `p`:
//!
//! | digits | value |
//! |---|---|
//! | 1 | `s >> 2` (0–3; Matter's vendor/product-id flag, 4, is never set) |
//! | 2–6 | `((s & 0b11) << 14) \| (p & 0x3FFF)`, 5 digits zero-padded |
//! | 7–10 | `p >> 14`, 4 digits zero-padded |
//! | 11 | Verhoeff check digit over digits 1–10 |
//!
//! A screen may group it as `XXXX-XXX-XXXX`; [`parse_manual_code`] accepts
//! single `-` or space separators between digits. The Verhoeff digit catches
//! every single-digit typo and every swap of two adjacent digits.
//!
//! # Privacy (R6, R13)
//!
//! - **R6** (import a home device from the head unit by scanning a QR code):
//!   the passcode is the pairing secret. It is printed on the device or shown
//!   on a screen, read by a camera or typed by a person, and never sent in
//!   clear: only the pairing exchange derived from it crosses the air. The
//!   `Debug` output of [`SetupPayload`] and [`ManualCode`] prints
//!   `passcode: "<hidden>"`, and no [`SetupError`] carries a passcode.
//! - **R13** (provisioning over Bluetooth): nothing in the payload derives
//!   from a MAC address, a serial number or a device ID. The discriminator is
//!   random, drawn anew at each boot or factory reset (a device whose payload
//!   is printed on a label draws it once, at manufacture); the product model
//!   is shared by every unit of the model and the flags only state
//!   capabilities. The discriminator's only job is to let the head unit pick
//!   the right advertiser when several devices are in setup mode.

use std::fmt;

/// The only payload version this code encodes and accepts when decoding.
pub const CURRENT_VERSION: u8 = 0;
/// Largest version the 3-bit field can hold.
pub const MAX_VERSION: u8 = 7;
/// Largest discriminator (12 bits).
pub const MAX_DISCRIMINATOR: u16 = 4095;
/// Smallest valid passcode.
pub const MIN_PASSCODE: u32 = 1;
/// Largest valid passcode.
pub const MAX_PASSCODE: u32 = 99_999_998;
/// Passcodes Matter forbids because they are trivial to guess, in ascending
/// order. `0` and `99_999_999` are outside the valid range anyway.
pub const FORBIDDEN_PASSCODES: [u32; 12] = [
    0, 11_111_111, 12_345_678, 22_222_222, 33_333_333, 44_444_444, 55_555_555, 66_666_666,
    77_777_777, 87_654_321, 88_888_888, 99_999_999,
];
/// Capability flag: the device can be provisioned over Bluetooth LE.
pub const FLAG_BLE: u8 = 1 << 0;
/// Capability flag: the device opens its own Wi-Fi access point for setup.
pub const FLAG_SOFT_AP: u8 = 1 << 1;
/// Capability flag: the device is already on the network.
pub const FLAG_ON_NETWORK: u8 = 1 << 2;
/// Prefix of every QR string.
pub const QR_PREFIX: &str = "TT:";
/// Length in characters (and bytes) of every QR string, prefix included.
pub const QR_LENGTH: usize = QR_PREFIX.len() + 15;
/// Number of digits in a manual code, check digit included.
pub const MANUAL_CODE_DIGITS: usize = 11;

/// Matter's base-38 alphabet: digits, uppercase letters, `-` and `.`.
const BASE38_ALPHABET: &[u8; 38] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-.";

/// Bit layout of the packed payload, least significant bit first.
const VERSION_BITS: u32 = 3;
const PRODUCT_MODEL_SHIFT: u32 = VERSION_BITS;
const FLAGS_SHIFT: u32 = PRODUCT_MODEL_SHIFT + 16;
const DISCRIMINATOR_SHIFT: u32 = FLAGS_SHIFT + 8;
const PASSCODE_SHIFT: u32 = DISCRIMINATOR_SHIFT + 12;
const PADDING_SHIFT: u32 = PASSCODE_SHIFT + 27;
/// Bytes of the packed payload: 66 bits of fields and 6 of padding.
const PAYLOAD_BYTES: usize = 9;

/// Low 14 bits of the passcode, carried in digits 2–6 of the manual code.
const MANUAL_PASSCODE_LOW_MASK: u32 = 0x3FFF;
const MANUAL_PASSCODE_LOW_BITS: u32 = 14;

/// How many passcodes are valid: the range minus the forbidden ones in it.
const VALID_PASSCODE_COUNT: u32 = {
    let mut count = MAX_PASSCODE - MIN_PASSCODE + 1;
    let mut i = 0;
    while i < FORBIDDEN_PASSCODES.len() {
        let forbidden = FORBIDDEN_PASSCODES[i];
        if forbidden >= MIN_PASSCODE && forbidden <= MAX_PASSCODE {
            count -= 1;
        }
        i += 1;
    }
    count
};

/// Why a setup payload, QR string or manual code was refused.
///
/// No variant carries a passcode (R6): errors may be logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The QR string does not start with `TT:` (case-sensitive).
    #[error("QR string does not start with \"TT:\"")]
    Prefix,
    /// A character outside the accepted alphabet (base-38 for a QR string;
    /// digits, `-` and space for a manual code).
    #[error("invalid character at byte {position}")]
    InvalidCharacter {
        /// Byte offset of the character in the input string.
        position: usize,
    },
    /// Wrong length: characters of a QR string (prefix included) or digits of
    /// a manual code (separators not counted).
    #[error("wrong length: expected {expected}, found {found}")]
    Length {
        /// Length required.
        expected: usize,
        /// Length of the input.
        found: usize,
    },
    /// A base-38 chunk encodes a value too large for its bytes (a 5-character
    /// chunk must be below 2^24).
    #[error("base-38 chunk {chunk} is out of range")]
    ChunkOutOfRange {
        /// Index of the chunk, from 0.
        chunk: usize,
    },
    /// The padding bits after the passcode are not zero.
    #[error("padding bits of the QR payload are not zero")]
    NonZeroPadding,
    /// The version is above 7, or not the current version where one is
    /// encoded or decoded.
    #[error("unsupported setup payload version {0}")]
    UnsupportedVersion(u8),
    /// The discriminator does not fit in 12 bits.
    #[error("discriminator {0} is above 4095")]
    DiscriminatorRange(u16),
    /// The passcode is outside `1..=99_999_998` or is a forbidden trivial one.
    #[error("invalid passcode")]
    InvalidPasscode,
    /// The manual code's Verhoeff check digit does not match: a typo.
    #[error("manual code check digit does not match")]
    CheckDigit,
    /// The manual code's first digit is above 3: the vendor/product-id flag
    /// (21-digit codes) is not supported, and 8 and 9 are never valid.
    #[error("manual code starts with {0}, only 0-3 are supported")]
    ManualLeadingDigit(u8),
    /// The manual code is malformed in another way (the text says how).
    #[error("malformed manual code: {0}")]
    ManualFormat(&'static str),
}

/// The setup payload of an unprovisioned device (R6, R13).
///
/// Its `Debug` output hides the passcode.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SetupPayload {
    /// Format version, 3 bits; [`CURRENT_VERSION`] is the only one encoded.
    pub version: u8,
    /// Model number, shared by every unit of the model.
    pub product_model: u16,
    /// Random discriminator, 12 bits (`0..=4095`), drawn at boot or reset.
    pub discriminator: u16,
    /// Capability bits: [`FLAG_BLE`], [`FLAG_SOFT_AP`], [`FLAG_ON_NETWORK`];
    /// the other bits are carried as they are.
    pub flags: u8,
    /// The pairing secret, 27 bits, `1..=99_999_998` and not in
    /// [`FORBIDDEN_PASSCODES`]. Never sent in clear (R6).
    pub passcode: u32,
}

impl fmt::Debug for SetupPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetupPayload")
            .field("version", &self.version)
            .field("product_model", &self.product_model)
            .field("discriminator", &self.discriminator)
            .field("flags", &self.flags)
            .field("passcode", &"<hidden>")
            .finish()
    }
}

impl SetupPayload {
    /// Checks every field's range: version at most 7, discriminator at most
    /// 4095, passcode valid (see [`passcode_is_valid`]).
    pub fn validate(&self) -> Result<(), SetupError> {
        if self.version > MAX_VERSION {
            return Err(SetupError::UnsupportedVersion(self.version));
        }
        if self.discriminator > MAX_DISCRIMINATOR {
            return Err(SetupError::DiscriminatorRange(self.discriminator));
        }
        if !passcode_is_valid(self.passcode) {
            return Err(SetupError::InvalidPasscode);
        }
        Ok(())
    }

    /// The short discriminator carried by the manual code: the top 4 bits of
    /// the 12-bit discriminator (bits above 12 are ignored).
    pub fn short_discriminator(&self) -> u8 {
        ((self.discriminator >> 8) & 0x0F) as u8
    }

    /// Encodes the payload as a QR string: `TT:` and 15 base-38 characters.
    ///
    /// Refuses a payload that does not [`validate`](Self::validate) or whose
    /// version is not [`CURRENT_VERSION`].
    pub fn to_qr_string(&self) -> Result<String, SetupError> {
        self.validate()?;
        if self.version != CURRENT_VERSION {
            return Err(SetupError::UnsupportedVersion(self.version));
        }
        let mut out = String::with_capacity(QR_LENGTH);
        out.push_str(QR_PREFIX);
        base38_encode(&self.pack(), &mut out);
        Ok(out)
    }

    /// Decodes a QR string, strictly: the `TT:` prefix, the base-38 alphabet
    /// (uppercase only), the exact length, each chunk's range, zero padding,
    /// the current version and then [`validate`](Self::validate). A string
    /// that decodes encodes back to itself. Never panics.
    pub fn from_qr_string(s: &str) -> Result<SetupPayload, SetupError> {
        let body = s.strip_prefix(QR_PREFIX).ok_or(SetupError::Prefix)?;
        if let Some(index) = body.bytes().position(|c| base38_digit(c).is_none()) {
            return Err(SetupError::InvalidCharacter {
                position: QR_PREFIX.len() + index,
            });
        }
        if s.len() != QR_LENGTH {
            return Err(SetupError::Length {
                expected: QR_LENGTH,
                found: s.len(),
            });
        }
        let bytes = base38_decode(body.as_bytes(), QR_PREFIX.len())?;
        if bytes.len() != PAYLOAD_BYTES {
            // Unreachable after the length check; kept so no input can panic.
            return Err(SetupError::Length {
                expected: QR_LENGTH,
                found: s.len(),
            });
        }
        let payload = Self::unpack(&bytes)?;
        if payload.version != CURRENT_VERSION {
            return Err(SetupError::UnsupportedVersion(payload.version));
        }
        payload.validate()?;
        Ok(payload)
    }

    /// The 11-digit manual code, without separators (a screen may group it
    /// as `XXXX-XXX-XXXX`). Refuses a payload that does not
    /// [`validate`](Self::validate); the version is not carried.
    pub fn manual_code(&self) -> Result<String, SetupError> {
        self.validate()?;
        let short = self.short_discriminator();
        let leading = short >> 2;
        let middle = (u32::from(short & 0b11) << MANUAL_PASSCODE_LOW_BITS)
            | (self.passcode & MANUAL_PASSCODE_LOW_MASK);
        let high = self.passcode >> MANUAL_PASSCODE_LOW_BITS;
        let mut code = format!("{leading}{middle:05}{high:04}");
        let digits: Vec<u8> = code.bytes().map(|b| b.wrapping_sub(b'0')).collect();
        code.push(char::from(b'0' + verhoeff_check_digit(&digits)));
        Ok(code)
    }

    /// Packs the fields into the 72-bit little-endian bit field. Fields must
    /// be in range (callers validate first): wider values would overlap.
    fn pack(&self) -> [u8; PAYLOAD_BYTES] {
        let bits = u128::from(self.version)
            | (u128::from(self.product_model) << PRODUCT_MODEL_SHIFT)
            | (u128::from(self.flags) << FLAGS_SHIFT)
            | (u128::from(self.discriminator) << DISCRIMINATOR_SHIFT)
            | (u128::from(self.passcode) << PASSCODE_SHIFT);
        let [b0, b1, b2, b3, b4, b5, b6, b7, b8, ..] = bits.to_le_bytes();
        [b0, b1, b2, b3, b4, b5, b6, b7, b8]
    }

    /// Unpacks the bit field; checks only the padding.
    fn unpack(bytes: &[u8]) -> Result<SetupPayload, SetupError> {
        let mut le = [0u8; 16];
        for (dst, src) in le.iter_mut().zip(bytes) {
            *dst = *src;
        }
        let bits = u128::from_le_bytes(le);
        if bits >> PADDING_SHIFT != 0 {
            return Err(SetupError::NonZeroPadding);
        }
        let field = |shift: u32, width: u32| (bits >> shift) & ((1u128 << width) - 1);
        Ok(SetupPayload {
            version: field(0, VERSION_BITS) as u8,
            product_model: field(PRODUCT_MODEL_SHIFT, 16) as u16,
            flags: field(FLAGS_SHIFT, 8) as u8,
            discriminator: field(DISCRIMINATOR_SHIFT, 12) as u16,
            passcode: field(PASSCODE_SHIFT, 27) as u32,
        })
    }
}

/// A parsed manual code: what the 11 digits carry (R6).
///
/// Its `Debug` output hides the passcode.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ManualCode {
    /// The top 4 bits of the device's discriminator (`0..=15`).
    pub short_discriminator: u8,
    /// The pairing secret (valid, see [`passcode_is_valid`]).
    pub passcode: u32,
}

impl fmt::Debug for ManualCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualCode")
            .field("short_discriminator", &self.short_discriminator)
            .field("passcode", &"<hidden>")
            .finish()
    }
}

impl ManualCode {
    /// Whether this code designates `payload`: same short discriminator and
    /// same passcode.
    pub fn matches(&self, payload: &SetupPayload) -> bool {
        self.short_discriminator == payload.short_discriminator()
            && self.passcode == payload.passcode
    }
}

/// Parses an 11-digit manual code. Single `-` or space separators are
/// accepted between digits (`3497-011-2332`, `3497 011 2332`); a separator at
/// either end, two in a row, or any other character is refused. Checks, in
/// order: characters, separators, the number of digits, the Verhoeff check
/// digit ([`SetupError::CheckDigit`]), the leading digit (0–3), the range of
/// digits 2–6 and the passcode. Never panics.
pub fn parse_manual_code(s: &str) -> Result<ManualCode, SetupError> {
    let mut digits = [0u8; MANUAL_CODE_DIGITS];
    let mut found = 0usize;
    // True at the start so that a leading separator is refused.
    let mut after_separator = true;
    for (position, c) in s.bytes().enumerate() {
        match c {
            b'0'..=b'9' => {
                if let Some(slot) = digits.get_mut(found) {
                    *slot = c - b'0';
                }
                found = found.saturating_add(1);
                after_separator = false;
            }
            b'-' | b' ' => {
                if after_separator {
                    return Err(SetupError::ManualFormat(
                        "separator at the start or after another separator",
                    ));
                }
                after_separator = true;
            }
            _ => return Err(SetupError::InvalidCharacter { position }),
        }
    }
    if after_separator && !s.is_empty() {
        return Err(SetupError::ManualFormat("separator at the end"));
    }
    if found != MANUAL_CODE_DIGITS {
        return Err(SetupError::Length {
            expected: MANUAL_CODE_DIGITS,
            found,
        });
    }
    if !verhoeff_is_valid(&digits) {
        return Err(SetupError::CheckDigit);
    }
    let [leading, m0, m1, m2, m3, m4, h0, h1, h2, h3, _check] = digits;
    if leading > 3 {
        return Err(SetupError::ManualLeadingDigit(leading));
    }
    let middle = decimal(&[m0, m1, m2, m3, m4]);
    if middle > 0xFFFF {
        return Err(SetupError::ManualFormat("digits 2-6 exceed 65535"));
    }
    let high = decimal(&[h0, h1, h2, h3]);
    let short_discriminator = (leading << 2) | (middle >> MANUAL_PASSCODE_LOW_BITS) as u8;
    let passcode = (high << MANUAL_PASSCODE_LOW_BITS) | (middle & MANUAL_PASSCODE_LOW_MASK);
    if !passcode_is_valid(passcode) {
        return Err(SetupError::InvalidPasscode);
    }
    Ok(ManualCode {
        short_discriminator,
        passcode,
    })
}

/// Whether `passcode` may be used: in `1..=99_999_998` and not one of
/// [`FORBIDDEN_PASSCODES`].
pub fn passcode_is_valid(passcode: u32) -> bool {
    (MIN_PASSCODE..=MAX_PASSCODE).contains(&passcode) && !FORBIDDEN_PASSCODES.contains(&passcode)
}

/// Maps 8 random bytes from the caller to a valid passcode, skipping the
/// forbidden ones.
///
/// The bytes are read as a little-endian `u64` and reduced modulo the number
/// of valid passcodes (`N` = 99 999 988), and the result is the index of the
/// passcode among the valid ones in ascending order. Modulo bias: each
/// passcode has probability `floor(2^64 / N) / 2^64` or `ceil(2^64 / N) / 2^64`,
/// so the distance from uniform is below `N / 2^64` ≈ 5.5 × 10⁻¹² — negligible.
/// The caller must supply uniformly random bytes (from its system RNG);
/// nothing here draws any.
pub fn random_passcode(seed: [u8; 8]) -> u32 {
    let index = u64::from_le_bytes(seed) % u64::from(VALID_PASSCODE_COUNT);
    // `index < VALID_PASSCODE_COUNT`, a u32: the conversion is lossless.
    let mut passcode = MIN_PASSCODE + index as u32;
    // Ascending order: stepping over one forbidden value may reach the next.
    for forbidden in FORBIDDEN_PASSCODES {
        if (MIN_PASSCODE..=MAX_PASSCODE).contains(&forbidden) && passcode >= forbidden {
            passcode += 1;
        }
    }
    passcode
}

/// Verhoeff multiplication table: the dihedral group D5.
const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// Verhoeff permutation table: row `i` applies to the digit `i` places from
/// the right (mod 8).
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Verhoeff inverse table.
const VERHOEFF_INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// Runs the Verhoeff checksum over `digits`, the rightmost digit at place
/// `first_place`. Digits above 9 are reduced modulo 10 (callers check).
fn verhoeff_fold(digits: &[u8], first_place: usize) -> u8 {
    digits
        .iter()
        .rev()
        .enumerate()
        .fold(0u8, |check, (place, &digit)| {
            let permuted = VERHOEFF_P[(place + first_place) % 8][usize::from(digit % 10)];
            VERHOEFF_D[usize::from(check)][usize::from(permuted)]
        })
}

/// The Verhoeff check digit (`0..=9`) to append to `digits`, each a value
/// `0..=9` (not an ASCII character), most significant first.
///
/// Values above 9 are not digits; they are reduced modulo 10 so that the
/// function never panics. Pass only `0..=9`.
pub fn verhoeff_check_digit(digits: &[u8]) -> u8 {
    VERHOEFF_INV[usize::from(verhoeff_fold(digits, 1))]
}

/// Whether `digits` (values `0..=9`, the check digit last) carry a correct
/// Verhoeff check digit. False for an empty slice or any value above 9.
pub fn verhoeff_is_valid(digits: &[u8]) -> bool {
    !digits.is_empty() && digits.iter().all(|&d| d <= 9) && verhoeff_fold(digits, 0) == 0
}

/// Fuzz oracle, not an API: parses `data` (if UTF-8) as a QR string and as a
/// manual code, and panics if a successful parse does not round-trip — a QR
/// string must re-encode to itself, and a manual code must match a payload
/// rebuilt from its short discriminator (discriminator = short << 8) and
/// passcode, and re-encode to its digits.
#[doc(hidden)]
pub fn parse_any(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(payload) = SetupPayload::from_qr_string(s) {
        assert_eq!(
            payload.to_qr_string().as_deref(),
            Ok(s),
            "QR string does not round-trip"
        );
    }
    if let Ok(code) = parse_manual_code(s) {
        let payload = SetupPayload {
            version: CURRENT_VERSION,
            product_model: 0,
            discriminator: u16::from(code.short_discriminator) << 8,
            flags: 0,
            passcode: code.passcode,
        };
        assert!(code.matches(&payload), "manual code does not match");
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        assert_eq!(
            payload.manual_code(),
            Ok(digits),
            "manual code does not round-trip"
        );
    }
}

/// The value of a base-38 character, or `None` outside the alphabet.
fn base38_digit(c: u8) -> Option<u32> {
    BASE38_ALPHABET
        .iter()
        .position(|&a| a == c)
        .map(|i| i as u32)
}

/// Appends Matter's base-38 text of `bytes`: 3 bytes → 5 characters,
/// 2 → 4, 1 → 2, least significant character first.
fn base38_encode(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let mut value = chunk
            .iter()
            .rev()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let chars = match chunk.len() {
            1 => 2,
            2 => 4,
            _ => 5,
        };
        for _ in 0..chars {
            out.push(char::from(BASE38_ALPHABET[(value % 38) as usize]));
            value /= 38;
        }
    }
}

/// Decodes Matter's base-38 text: 5 characters → 3 bytes, 4 → 2, 2 → 1;
/// each chunk's value must fit its bytes. `offset` is the position of `text`
/// in the input, for error positions and lengths.
fn base38_decode(text: &[u8], offset: usize) -> Result<Vec<u8>, SetupError> {
    let mut out = Vec::with_capacity(text.len() / 5 * 3 + 2);
    for (chunk_index, chunk) in text.chunks(5).enumerate() {
        let bytes = match chunk.len() {
            5 => 3,
            4 => 2,
            2 => 1,
            _ => {
                // A final chunk of 1 or 3 characters: one is missing.
                return Err(SetupError::Length {
                    expected: offset + text.len() + 1,
                    found: offset + text.len(),
                });
            }
        };
        let mut value = 0u32;
        for (i, &c) in chunk.iter().enumerate().rev() {
            let digit = base38_digit(c).ok_or(SetupError::InvalidCharacter {
                position: offset + chunk_index * 5 + i,
            })?;
            // At most 38^5 - 1 < 2^27: no overflow.
            value = value * 38 + digit;
        }
        if value >> (8 * bytes) != 0 {
            return Err(SetupError::ChunkOutOfRange { chunk: chunk_index });
        }
        out.extend(value.to_le_bytes().iter().take(bytes));
    }
    Ok(out)
}

/// The value of decimal digits, most significant first.
fn decimal(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Matter's test device: discriminator 3840, passcode 20202021.
    fn matter_example() -> SetupPayload {
        SetupPayload {
            version: 0,
            product_model: 0x8001,
            discriminator: 3840,
            flags: FLAG_BLE,
            passcode: 20_202_021,
        }
    }

    fn payload(product_model: u16, discriminator: u16, flags: u8, passcode: u32) -> SetupPayload {
        SetupPayload {
            version: CURRENT_VERSION,
            product_model,
            discriminator,
            flags,
            passcode,
        }
    }

    /// Small deterministic generator for test inputs.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn qr_of_bytes(bytes: &[u8]) -> String {
        let mut s = String::from(QR_PREFIX);
        base38_encode(bytes, &mut s);
        s
    }

    /// Digits of a string, as values.
    fn digit_values(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    /// A manual code from its first 10 digits, with a correct check digit.
    fn with_check_digit(first_ten: &str) -> String {
        let check = verhoeff_check_digit(&digit_values(first_ten));
        format!("{first_ten}{check}")
    }

    #[test]
    fn verhoeff_matches_known_vectors() {
        assert_eq!(verhoeff_check_digit(&[2, 3, 6]), 3);
        assert_eq!(verhoeff_check_digit(&[1, 2, 3, 4, 5]), 1);
        assert_eq!(verhoeff_check_digit(&[1, 4, 2, 8, 5, 7]), 0);
        assert!(verhoeff_is_valid(&[2, 3, 6, 3]));
        assert!(verhoeff_is_valid(&[1, 2, 3, 4, 5, 1]));
        assert!(verhoeff_is_valid(&[1, 4, 2, 8, 5, 7, 0]));
        assert!(!verhoeff_is_valid(&[2, 3, 6, 4]));
        assert!(!verhoeff_is_valid(&[]));
        assert!(!verhoeff_is_valid(&[2, 3, 6, 13]));
        // Total on non-digits rather than panicking.
        assert!(verhoeff_check_digit(&[200, 255]) <= 9);
    }

    #[test]
    fn base38_encodes_partial_chunks_like_matter() {
        let mut s = String::new();
        base38_encode(&[0xFF], &mut s);
        assert_eq!(s, "R6");
        s.clear();
        base38_encode(&[0xFF, 0xFF], &mut s);
        assert_eq!(s, "NE71");
        s.clear();
        base38_encode(&[0xFF, 0xFF, 0xFF], &mut s);
        assert_eq!(s, "PLS18");
        assert_eq!(base38_decode(b"R6", 0).unwrap(), [0xFF]);
        assert_eq!(base38_decode(b"NE71", 0).unwrap(), [0xFF, 0xFF]);
        assert_eq!(base38_decode(b"PLS18", 0).unwrap(), [0xFF, 0xFF, 0xFF]);
        assert_eq!(
            base38_decode(b"..", 0),
            Err(SetupError::ChunkOutOfRange { chunk: 0 })
        );
        assert_eq!(
            base38_decode(b"00000....", 0),
            Err(SetupError::ChunkOutOfRange { chunk: 1 })
        );
        assert_eq!(
            base38_decode(b"000", 3),
            Err(SetupError::Length {
                expected: 7,
                found: 6
            })
        );
    }

    #[test]
    fn base38_decodes_matters_published_example_qr_code() {
        // "MT:-24J0AFN00KA0648G00": Matter's example device (vendor 0xFFF1,
        // product 0x8001, discriminator 3840, passcode 20202021), 11 bytes
        // including a final 4-character chunk.
        let bytes = base38_decode(b"-24J0AFN00KA0648G00", 3).unwrap();
        assert_eq!(bytes.len(), 11);
        let mut le = [0u8; 16];
        le[..11].copy_from_slice(&bytes);
        let bits = u128::from_le_bytes(le);
        let field = |shift: u32, width: u32| (bits >> shift) & ((1u128 << width) - 1);
        assert_eq!(field(0, 3), 0);
        assert_eq!(field(3, 16), 0xFFF1);
        assert_eq!(field(19, 16), 0x8001);
        assert_eq!(field(45, 12), 3840);
        assert_eq!(field(57, 27), 20_202_021);
    }

    #[test]
    fn qr_string_has_prefix_fixed_length_and_expected_layout() {
        let p = payload(0x1234, 0xABC, 0x05, 20_202_021);
        // Reference value computed by an independent implementation.
        assert_eq!(p.to_qr_string().unwrap(), "TT:C8HA18WIM0DCR00");
        let max = payload(65535, 4095, 255, 99_999_998);
        assert_eq!(max.to_qr_string().unwrap(), "TT:ILS18JMA04U9L30");
        let s = matter_example().to_qr_string().unwrap();
        assert_eq!(s.len(), QR_LENGTH);
        assert!(s.starts_with("TT:"));
        assert!(
            s.bytes()
                .skip(3)
                .all(|c| BASE38_ALPHABET.contains(&c) && !c.is_ascii_lowercase())
        );
    }

    #[test]
    fn qr_round_trips_boundaries_and_every_flag_value() {
        let mut count = 0;
        for product_model in [0, 1, 0x8001, 65534, 65535] {
            for discriminator in [0, 1, 255, 256, 2048, 4094, 4095] {
                for passcode in [1, 2, 20_202_021, 99_999_997, 99_999_998] {
                    for flags in 0..=u8::MAX {
                        let p = payload(product_model, discriminator, flags, passcode);
                        let s = p.to_qr_string().unwrap();
                        assert_eq!(s.len(), QR_LENGTH);
                        assert_eq!(SetupPayload::from_qr_string(&s), Ok(p));
                        count += 1;
                    }
                }
            }
        }
        assert_eq!(count, 5 * 7 * 5 * 256);
    }

    #[test]
    fn qr_round_trips_random_payloads() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5_000 {
            let r = rng.next();
            let p = payload(
                r as u16,
                ((r >> 16) & 0xFFF) as u16,
                (r >> 28) as u8,
                random_passcode(rng.next().to_le_bytes()),
            );
            let s = p.to_qr_string().unwrap();
            assert_eq!(SetupPayload::from_qr_string(&s), Ok(p));
        }
    }

    #[test]
    fn qr_rejects_a_wrong_or_lowercase_prefix() {
        let s = matter_example().to_qr_string().unwrap();
        let body = &s[3..];
        for prefix in ["", "tt:", "MT:", "TT", "TT-", " TT:", "TTT:"] {
            assert_eq!(
                SetupPayload::from_qr_string(&format!("{prefix}{body}")),
                Err(SetupError::Prefix),
                "{prefix:?}"
            );
        }
        assert_eq!(
            SetupPayload::from_qr_string(&s.to_lowercase()),
            Err(SetupError::Prefix)
        );
    }

    #[test]
    fn qr_rejects_lowercase_body_at_the_first_lowercase_letter() {
        let s = matter_example().to_qr_string().unwrap();
        let first_letter = s
            .bytes()
            .skip(3)
            .position(|c| c.is_ascii_uppercase())
            .unwrap()
            + 3;
        let lowered = format!("TT:{}", s[3..].to_lowercase());
        assert_eq!(
            SetupPayload::from_qr_string(&lowered),
            Err(SetupError::InvalidCharacter {
                position: first_letter
            })
        );
    }

    #[test]
    fn qr_rejects_characters_outside_the_alphabet_with_their_position() {
        let s = matter_example().to_qr_string().unwrap();
        for position in 3..QR_LENGTH {
            for bad in ["a", "z", " ", "+", "/", "$", "%", "*", ":", "é", "\0"] {
                let mut t = String::from(&s[..position]);
                t.push_str(bad);
                t.push_str(&s[position + 1..]);
                assert_eq!(
                    SetupPayload::from_qr_string(&t),
                    Err(SetupError::InvalidCharacter { position }),
                    "{t:?}"
                );
            }
        }
    }

    #[test]
    fn qr_rejects_wrong_lengths() {
        let s = matter_example().to_qr_string().unwrap();
        for len in 3..QR_LENGTH {
            assert_eq!(
                SetupPayload::from_qr_string(&s[..len]),
                Err(SetupError::Length {
                    expected: QR_LENGTH,
                    found: len
                })
            );
        }
        for extra in ["0", "00", "00000", "R6"] {
            let t = format!("{s}{extra}");
            assert_eq!(
                SetupPayload::from_qr_string(&t),
                Err(SetupError::Length {
                    expected: QR_LENGTH,
                    found: t.len()
                })
            );
        }
    }

    #[test]
    fn qr_rejects_non_zero_padding() {
        let mut bytes = matter_example().pack();
        for bit in 2..8 {
            let mut padded = bytes;
            padded[8] |= 1 << bit;
            assert_eq!(
                SetupPayload::from_qr_string(&qr_of_bytes(&padded)),
                Err(SetupError::NonZeroPadding)
            );
        }
        bytes[8] |= 0b11 << 2;
        assert_eq!(
            SetupPayload::from_qr_string(&qr_of_bytes(&bytes)),
            Err(SetupError::NonZeroPadding)
        );
    }

    #[test]
    fn qr_rejects_a_chunk_at_or_above_two_to_the_24() {
        let s = matter_example().to_qr_string().unwrap();
        // 2^24 = 16_777_216 is "PLS18" + 1, i.e. "QLS18".
        for (chunk, range) in [(0, 3..8), (1, 8..13), (2, 13..18)] {
            for text in ["QLS18", ".....", "0000."] {
                let mut t = s.clone();
                t.replace_range(range.clone(), text);
                assert_eq!(
                    SetupPayload::from_qr_string(&t),
                    Err(SetupError::ChunkOutOfRange { chunk }),
                    "{t}"
                );
            }
        }
    }

    #[test]
    fn qr_rejects_versions_other_than_the_current_one() {
        for version in 1..=7u8 {
            let mut bytes = matter_example().pack();
            bytes[0] |= version;
            assert_eq!(
                SetupPayload::from_qr_string(&qr_of_bytes(&bytes)),
                Err(SetupError::UnsupportedVersion(version))
            );
            let p = SetupPayload {
                version,
                ..matter_example()
            };
            assert_eq!(p.validate(), Ok(()));
            assert_eq!(
                p.to_qr_string(),
                Err(SetupError::UnsupportedVersion(version))
            );
        }
        let p = SetupPayload {
            version: 8,
            ..matter_example()
        };
        assert_eq!(p.validate(), Err(SetupError::UnsupportedVersion(8)));
    }

    #[test]
    fn qr_rejects_passcodes_outside_the_range_or_forbidden_r6() {
        let mut rejected = FORBIDDEN_PASSCODES.to_vec();
        rejected.extend([100_000_000, (1 << 27) - 1]);
        for passcode in rejected {
            // Build the bit field by hand: encoding refuses such payloads.
            let bytes = SetupPayload {
                passcode,
                ..matter_example()
            }
            .pack();
            assert_eq!(
                SetupPayload::from_qr_string(&qr_of_bytes(&bytes)),
                Err(SetupError::InvalidPasscode),
                "{passcode}"
            );
        }
    }

    #[test]
    fn every_forbidden_passcode_is_refused_everywhere_r6() {
        for passcode in FORBIDDEN_PASSCODES {
            assert!(!passcode_is_valid(passcode));
            let p = SetupPayload {
                passcode,
                ..matter_example()
            };
            assert_eq!(p.validate(), Err(SetupError::InvalidPasscode));
            assert_eq!(p.to_qr_string(), Err(SetupError::InvalidPasscode));
            assert_eq!(p.manual_code(), Err(SetupError::InvalidPasscode));
            // A manual code carrying it, with a correct check digit.
            let middle = passcode & MANUAL_PASSCODE_LOW_MASK;
            let high = passcode >> MANUAL_PASSCODE_LOW_BITS;
            let code = with_check_digit(&format!("0{middle:05}{high:04}"));
            assert_eq!(
                parse_manual_code(&code),
                Err(SetupError::InvalidPasscode),
                "{code}"
            );
        }
        assert!(passcode_is_valid(MIN_PASSCODE));
        assert!(passcode_is_valid(MAX_PASSCODE));
        assert!(passcode_is_valid(11_111_112));
    }

    #[test]
    fn validate_refuses_a_discriminator_above_twelve_bits() {
        for discriminator in [4096, 0x8000, u16::MAX] {
            let p = SetupPayload {
                discriminator,
                ..matter_example()
            };
            let err = SetupError::DiscriminatorRange(discriminator);
            assert_eq!(p.validate(), Err(err.clone()));
            assert_eq!(p.to_qr_string(), Err(err.clone()));
            assert_eq!(p.manual_code(), Err(err));
        }
    }

    #[test]
    fn manual_code_matches_matters_published_example() {
        let p = matter_example();
        assert_eq!(p.short_discriminator(), 15);
        assert_eq!(p.manual_code().unwrap(), "34970112332");
        let code = parse_manual_code("34970112332").unwrap();
        assert_eq!(code.short_discriminator, 15);
        assert_eq!(code.passcode, 20_202_021);
        assert!(code.matches(&p));
    }

    #[test]
    fn manual_code_round_trips_boundaries() {
        for discriminator in (0..=4095).step_by(97).chain([0, 255, 256, 3840, 4095]) {
            for passcode in [
                1, 2, 0x3FFF, 0x4000, 11_111_110, 11_111_112, 20_202_021, 99_999_997, 99_999_998,
            ] {
                let p = payload(0, discriminator, 0, passcode);
                let s = p.manual_code().unwrap();
                assert_eq!(s.len(), MANUAL_CODE_DIGITS);
                assert!(s.bytes().all(|c| c.is_ascii_digit()));
                assert!(s.as_bytes()[0] <= b'3');
                let code = parse_manual_code(&s).unwrap();
                assert_eq!(code.short_discriminator, (discriminator >> 8) as u8);
                assert_eq!(code.passcode, passcode);
                assert!(code.matches(&p));
                // Another passcode or short discriminator does not match.
                assert!(!code.matches(&SetupPayload {
                    passcode: if passcode == 1 { 2 } else { 1 },
                    ..p
                }));
                assert!(!code.matches(&SetupPayload {
                    discriminator: discriminator ^ 0x100,
                    ..p
                }));
                // The low 8 bits of the discriminator are not carried.
                assert!(code.matches(&SetupPayload {
                    discriminator: discriminator ^ 0xFF,
                    ..p
                }));
            }
        }
    }

    #[test]
    fn manual_code_round_trips_random_passcodes() {
        let mut rng = XorShift(42);
        for _ in 0..5_000 {
            let r = rng.next();
            let p = payload(
                0,
                (r & 0xFFF) as u16,
                0,
                random_passcode(rng.next().to_le_bytes()),
            );
            let code = parse_manual_code(&p.manual_code().unwrap()).unwrap();
            assert!(code.matches(&p));
        }
    }

    fn sample_codes() -> Vec<String> {
        [
            payload(0, 0, 0, 1),
            payload(0, 4095, 0, 99_999_998),
            matter_example(),
            payload(0, 1234, 0, 54_321_987),
            payload(0, 2048, 0, 10_000_000),
        ]
        .iter()
        .map(|p| p.manual_code().unwrap())
        .collect()
    }

    #[test]
    fn manual_code_detects_every_single_digit_error_r6() {
        for code in sample_codes() {
            for position in 0..MANUAL_CODE_DIGITS {
                for digit in b'0'..=b'9' {
                    let mut typo = code.clone().into_bytes();
                    if typo[position] == digit {
                        continue;
                    }
                    typo[position] = digit;
                    let typo = String::from_utf8(typo).unwrap();
                    assert_eq!(
                        parse_manual_code(&typo),
                        Err(SetupError::CheckDigit),
                        "{code} -> {typo}"
                    );
                }
            }
        }
    }

    #[test]
    fn manual_code_detects_every_adjacent_transposition_r6() {
        let mut tested = 0;
        for code in sample_codes() {
            for position in 0..MANUAL_CODE_DIGITS - 1 {
                let mut swapped = code.clone().into_bytes();
                if swapped[position] == swapped[position + 1] {
                    continue;
                }
                swapped.swap(position, position + 1);
                let swapped = String::from_utf8(swapped).unwrap();
                assert_eq!(
                    parse_manual_code(&swapped),
                    Err(SetupError::CheckDigit),
                    "{code} -> {swapped}"
                );
                tested += 1;
            }
        }
        assert!(tested > 30);
    }

    #[test]
    fn manual_code_accepts_dash_and_space_separators() {
        let expected = parse_manual_code("34970112332").unwrap();
        for s in [
            "3497-011-2332",
            "3497 011 2332",
            "3497-011 2332",
            "3-4-9-7-0-1-1-2-3-3-2",
            "34970 112332",
        ] {
            assert_eq!(parse_manual_code(s), Ok(expected), "{s}");
        }
    }

    #[test]
    fn manual_code_rejects_misplaced_separators_and_other_characters() {
        for s in [
            "-3497-011-2332",
            "3497-011-2332-",
            " 34970112332",
            "34970112332 ",
            "3497--011-2332",
            "3497 -011-2332",
            "-",
            " ",
        ] {
            assert!(
                matches!(parse_manual_code(s), Err(SetupError::ManualFormat(_))),
                "{s:?}"
            );
        }
        for (s, position) in [
            ("3497_011_2332", 4),
            ("3497.011.2332", 4),
            ("34970112332\n", 11),
            ("3497\t0112332", 4),
            ("349701123a2", 9),
            ("３4970112332", 0),
            ("+34970112332", 0),
        ] {
            assert_eq!(
                parse_manual_code(s),
                Err(SetupError::InvalidCharacter { position }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn manual_code_rejects_wrong_digit_counts() {
        for s in [
            "",
            "3497011233",
            "349701123320",
            "3497-011-233",
            "0",
            "12345678901234567890",
        ] {
            let found = s.bytes().filter(u8::is_ascii_digit).count();
            assert_eq!(
                parse_manual_code(s),
                Err(SetupError::Length {
                    expected: MANUAL_CODE_DIGITS,
                    found
                }),
                "{s:?}"
            );
        }
        // Very long input is counted, not stored.
        let long = "1".repeat(100_000);
        assert_eq!(
            parse_manual_code(&long),
            Err(SetupError::Length {
                expected: MANUAL_CODE_DIGITS,
                found: 100_000
            })
        );
    }

    #[test]
    fn manual_code_rejects_a_leading_digit_above_three() {
        for leading in 4..=9u8 {
            let code = with_check_digit(&format!("{leading}497011233"));
            assert_eq!(
                parse_manual_code(&code),
                Err(SetupError::ManualLeadingDigit(leading))
            );
        }
    }

    #[test]
    fn manual_code_rejects_digits_two_to_six_above_sixteen_bits() {
        for middle in [65_536, 70_000, 99_999] {
            let code = with_check_digit(&format!("0{middle:05}1233"));
            assert_eq!(
                parse_manual_code(&code),
                Err(SetupError::ManualFormat("digits 2-6 exceed 65535"))
            );
        }
        let code = with_check_digit("0655351233");
        assert!(parse_manual_code(&code).is_ok());
    }

    #[test]
    fn manual_code_rejects_passcodes_above_the_range() {
        // High part 6104 gives passcodes >= 6104 << 14 = 100_007_936.
        for high in [6104, 9999] {
            let code = with_check_digit(&format!("000001{high:04}"));
            assert_eq!(parse_manual_code(&code), Err(SetupError::InvalidPasscode));
        }
        // Zero passcode.
        let code = with_check_digit("0000000000");
        assert_eq!(parse_manual_code(&code), Err(SetupError::InvalidPasscode));
    }

    #[test]
    fn random_passcode_is_always_valid_and_covers_both_ends() {
        assert_eq!(VALID_PASSCODE_COUNT, 99_999_988);
        let at = |index: u64| random_passcode(index.to_le_bytes());
        assert_eq!(at(0), MIN_PASSCODE);
        assert_eq!(at(u64::from(VALID_PASSCODE_COUNT) - 1), MAX_PASSCODE);
        assert_eq!(at(u64::from(VALID_PASSCODE_COUNT)), MIN_PASSCODE);
        // Around each forbidden value the mapping steps over it and stays
        // strictly increasing (one-to-one onto the valid passcodes).
        for forbidden in FORBIDDEN_PASSCODES {
            if !(MIN_PASSCODE..=MAX_PASSCODE).contains(&forbidden) {
                continue;
            }
            let below = u64::from(forbidden) - 12;
            let window: Vec<u32> = (below..below + 24).map(at).collect();
            assert!(window.iter().all(|&p| passcode_is_valid(p)));
            assert!(window.windows(2).all(|w| w[1] > w[0]));
            assert!(window.windows(2).all(|w| w[1] - w[0] <= 2));
        }
        let mut rng = XorShift(7);
        for _ in 0..10_000 {
            assert!(passcode_is_valid(random_passcode(rng.next().to_le_bytes())));
        }
        assert!(passcode_is_valid(random_passcode([0xFF; 8])));
    }

    #[test]
    fn debug_and_errors_never_show_the_passcode_r6() {
        let passcode = 20_202_021;
        let p = matter_example();
        let code = parse_manual_code(&p.manual_code().unwrap()).unwrap();
        for text in [
            format!("{p:?}"),
            format!("{p:#?}"),
            format!("{code:?}"),
            format!("{code:#?}"),
        ] {
            assert!(!text.contains(&passcode.to_string()), "{text}");
            assert!(!text.contains(&format!("{passcode:x}")), "{text}");
            assert!(text.contains("passcode: \"<hidden>\""), "{text}");
        }
        let bad = SetupPayload {
            passcode: 12_345_678,
            ..p
        };
        let err = bad.validate().unwrap_err();
        assert!(!format!("{err} {err:?}").contains("12345678"));
    }

    #[test]
    fn errors_have_human_messages() {
        assert_eq!(
            SetupError::Length {
                expected: 18,
                found: 17
            }
            .to_string(),
            "wrong length: expected 18, found 17"
        );
        assert_eq!(
            SetupError::Prefix.to_string(),
            "QR string does not start with \"TT:\""
        );
        assert_eq!(
            SetupError::CheckDigit.to_string(),
            "manual code check digit does not match"
        );
    }

    #[test]
    fn parse_any_survives_arbitrary_input() {
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"TT:".to_vec(),
            matter_example().to_qr_string().unwrap().into_bytes(),
            b"3497-011-2332".to_vec(),
            b"34970112332".to_vec(),
            vec![0xFF, 0xFE, 0x00],
            "TT:é".as_bytes().to_vec(),
        ];
        let mut rng = XorShift(0xDEAD_BEEF);
        for _ in 0..20_000 {
            let len = (rng.next() % 24) as usize;
            // Mostly prefix + alphabet, so QR parses sometimes succeed.
            let mut s = if rng.next() & 1 == 0 {
                b"TT:".to_vec()
            } else {
                Vec::new()
            };
            for _ in 0..len {
                let r = rng.next();
                s.push(match r % 4 {
                    0 => (r >> 8) as u8,
                    1 => b"0123456789 -"[((r >> 8) % 12) as usize],
                    _ => BASE38_ALPHABET[((r >> 8) % 38) as usize],
                });
            }
            inputs.push(s);
        }
        // Every valid manual code prefix space: digits with a check digit.
        for i in 0..2_000u32 {
            inputs.push(
                with_check_digit(&format!(
                    "{:010}",
                    i.wrapping_mul(2_654_435_761) % 4_000_000_000
                ))
                .into_bytes(),
            );
        }
        // Every valid QR string from random bytes with the padding cleared.
        for _ in 0..2_000 {
            let mut bytes = rng.next().to_le_bytes().to_vec();
            bytes.push((rng.next() & 0x03) as u8);
            inputs.push(qr_of_bytes(&bytes).into_bytes());
        }
        let (mut qr_ok, mut manual_ok) = (0, 0);
        for input in inputs {
            parse_any(&input);
            let s = String::from_utf8_lossy(&input);
            qr_ok += usize::from(SetupPayload::from_qr_string(&s).is_ok());
            manual_ok += usize::from(parse_manual_code(&s).is_ok());
        }
        // The round-trip assertions did run on successful parses.
        assert!(qr_ok > 100, "{qr_ok}");
        assert!(manual_ok > 100, "{manual_ok}");
    }
}
