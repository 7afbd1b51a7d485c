//! The TXT rule: an advertisement says which protocol version it speaks and
//! nothing else (R2).

/// The protocol version this crate advertises: the handshake's (SPEC §4, §5.1).
pub const PROTOCOL_VERSION: u32 = 2;

/// The only TXT key Tether publishes or accepts.
pub const TXT_VERSION_KEY: &str = "v";

/// Longest accepted TXT value in bytes: `u32::MAX` has ten decimal digits.
pub const MAX_TXT_VALUE_BYTES: usize = 10;

/// Why a peer's TXT record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxtError {
    /// The record has a key other than `v`. Tether advertisements carry no
    /// other property (R2), so this is not one of ours or it is misbehaving.
    #[error("TXT record has a key other than `v`")]
    UnexpectedKey,
    /// The record has no `v` key.
    #[error("TXT record has no `v` key")]
    MissingVersion,
    /// `v` appears more than once.
    #[error("TXT record has more than one `v`")]
    DuplicateVersion,
    /// `v` has no value or an empty one.
    #[error("TXT `v` has no value")]
    EmptyVersion,
    /// The value of `v` is longer than [`MAX_TXT_VALUE_BYTES`].
    #[error("TXT `v` is {len} bytes long, at most {MAX_TXT_VALUE_BYTES} allowed")]
    ValueTooLong {
        /// Length of the rejected value in bytes.
        len: usize,
    },
    /// The value of `v` is not a decimal `u32`.
    #[error("TXT `v` is not a decimal u32")]
    NotNumeric,
}

/// The TXT properties of an advertisement: `v=<version>` and nothing else.
pub fn txt_properties(version: u32) -> Vec<(String, String)> {
    vec![(TXT_VERSION_KEY.to_owned(), version.to_string())]
}

/// Checks a peer's TXT properties, given as `(key, value)` pairs, and returns
/// the protocol version.
///
/// Refuses any key other than `v`, a missing or repeated `v`, and a value
/// that is empty, longer than [`MAX_TXT_VALUE_BYTES`] or not a decimal `u32`.
/// Keys are compared exactly: DNS-SD keys are case-insensitive, but ours is
/// always written `v`, and one spelling keeps the check simple.
pub fn parse_txt<'a, I>(properties: I) -> Result<u32, TxtError>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut version = None;
    for (key, value) in properties {
        if key != TXT_VERSION_KEY {
            return Err(TxtError::UnexpectedKey);
        }
        if version.is_some() {
            return Err(TxtError::DuplicateVersion);
        }
        version = Some(parse_version(value)?);
    }
    version.ok_or(TxtError::MissingVersion)
}

fn parse_version(value: Option<&[u8]>) -> Result<u32, TxtError> {
    let value = match value {
        None | Some([]) => return Err(TxtError::EmptyVersion),
        Some(v) => v,
    };
    if value.len() > MAX_TXT_VALUE_BYTES {
        return Err(TxtError::ValueTooLong { len: value.len() });
    }
    // `u32::from_str` would also take a leading `+`; only digits are allowed.
    let mut number: u64 = 0;
    for &byte in value {
        if !byte.is_ascii_digit() {
            return Err(TxtError::NotNumeric);
        }
        number = number * 10 + u64::from(byte - b'0');
    }
    u32::try_from(number).map_err(|_| TxtError::NotNumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(props: &[(&str, Option<&str>)]) -> Result<u32, TxtError> {
        parse_txt(props.iter().map(|(k, v)| (*k, v.map(str::as_bytes))))
    }

    #[test]
    fn txt_round_trips_the_version() {
        let props = txt_properties(PROTOCOL_VERSION);
        assert_eq!(props, vec![("v".to_owned(), "2".to_owned())]);
        let parsed = parse_txt(props.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))));
        assert_eq!(parsed, Ok(2));
        assert_eq!(parse(&[("v", Some("4294967295"))]), Ok(u32::MAX));
    }

    #[test]
    fn txt_with_extra_key_is_rejected_r2() {
        assert_eq!(
            parse(&[("v", Some("1")), ("name", Some("car"))]),
            Err(TxtError::UnexpectedKey)
        );
        assert_eq!(parse(&[("mac", Some("aa"))]), Err(TxtError::UnexpectedKey));
        assert_eq!(parse(&[("V", Some("1"))]), Err(TxtError::UnexpectedKey));
        assert_eq!(parse(&[("", None)]), Err(TxtError::UnexpectedKey));
    }

    #[test]
    fn txt_without_version_is_rejected() {
        assert_eq!(parse(&[]), Err(TxtError::MissingVersion));
    }

    #[test]
    fn txt_with_two_versions_is_rejected() {
        assert_eq!(
            parse(&[("v", Some("1")), ("v", Some("1"))]),
            Err(TxtError::DuplicateVersion)
        );
    }

    #[test]
    fn txt_bad_values_are_rejected() {
        assert_eq!(parse(&[("v", None)]), Err(TxtError::EmptyVersion));
        assert_eq!(parse(&[("v", Some(""))]), Err(TxtError::EmptyVersion));
        assert_eq!(parse(&[("v", Some("one"))]), Err(TxtError::NotNumeric));
        assert_eq!(parse(&[("v", Some("+1"))]), Err(TxtError::NotNumeric));
        assert_eq!(parse(&[("v", Some("-1"))]), Err(TxtError::NotNumeric));
        assert_eq!(parse(&[("v", Some("1 "))]), Err(TxtError::NotNumeric));
        assert_eq!(
            parse(&[("v", Some("4294967296"))]),
            Err(TxtError::NotNumeric)
        );
        assert_eq!(
            parse(&[("v", Some("00000000001"))]),
            Err(TxtError::ValueTooLong { len: 11 })
        );
        let invalid_utf8: &[u8] = &[0xff, 0xfe];
        assert_eq!(
            parse_txt([("v", Some(invalid_utf8))]),
            Err(TxtError::NotNumeric)
        );
    }
}
