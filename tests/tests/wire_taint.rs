//! R2 wire taint: a head unit, its owner's phone and a phone of another
//! account run the demo's flow on loopback while every mDNS packet and every
//! QUIC datagram is recorded. The QUIC Initial packets, the only ones a
//! passive observer can decrypt (their keys derive from public values,
//! RFC 9001 §5.2), are decrypted too. No planted identifier (device name,
//! device id, VIN, account UID, MAC: R2, R4) and no protocol identifier
//! (account key id, authority key, device keys, certificates) may appear in
//! any captured byte: as text, hex, base64 at any alignment, or unsalted
//! SHA-256. The same search runs over every byte of the MQTT connections
//! when the nodes use the remote path through a broker (SPEC §19.6).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_control::client as control;
use tether_control::signals;
use tether_identity::{AccountKeyId, Credentials, EnrollmentGrant};
use tether_node::{HeadUnit, LocalIdentifiers, NodeConfig, Phone};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use encodings::{base64_groups, hex, unhex};
use quic_initial::{CryptoStream, InitialKeys, Opened, Side};
use taint::{Capture, Identifier};

/// How long discovery may take before the test fails.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the other account's phone browses (as in the demo).
const STRANGER_BROWSE: Duration = Duration::from_secs(3);
/// Time for goodbyes and close frames to reach the captures.
const SETTLE: Duration = Duration::from_millis(300);
/// The mDNS group and port (RFC 6762 §3).
const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;
/// What Tether's ClientHello carries: constants that name nobody (SPEC §5).
const EXPECTED_SNI: &str = "tether.invalid";
const EXPECTED_ALPN: &[u8] = b"tether/2";
/// The only TXT record Tether publishes: `v=1` (R2), as DNS rdata.
const EXPECTED_TXT_RDATA: &[u8] = b"\x03v=2";

// ---------------------------------------------------------------------------
// Byte encodings the search looks for (RFC 4648).
// ---------------------------------------------------------------------------
mod encodings {
    const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    /// Hex, lower or upper case.
    pub(crate) fn hex(bytes: &[u8], upper: bool) -> Vec<u8> {
        let digits: &[u8; 16] = if upper {
            b"0123456789ABCDEF"
        } else {
            b"0123456789abcdef"
        };
        bytes
            .iter()
            .flat_map(|b| [digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]])
            .collect()
    }

    /// Decodes hex, ignoring whitespace (for test vectors).
    pub(crate) fn unhex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .map(|b| match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => panic!("not a hex digit: {:?}", char::from(b)),
            })
            .collect();
        assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    /// Base64 of the complete 3-byte groups only, without padding: exactly
    /// the characters that appear in the base64 of any stream in which
    /// `bytes` starts on a 3-byte boundary, whatever surrounds it.
    pub(crate) fn base64_groups(bytes: &[u8], url_safe: bool) -> Vec<u8> {
        let alphabet = if url_safe { URL_SAFE } else { STANDARD };
        bytes
            .chunks_exact(3)
            .flat_map(|g| {
                let n = u32::from(g[0]) << 16 | u32::from(g[1]) << 8 | u32::from(g[2]);
                [18, 12, 6, 0].map(|shift| alphabet[((n >> shift) & 63) as usize])
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// QUIC v1 Initial packets as a passive observer sees them.
// ---------------------------------------------------------------------------
mod quic_initial {
    //! Long-header parsing (RFC 9000 §17.2), Initial keys (RFC 9001 §5.2),
    //! header protection (§5.4), payload decryption (§5.3), the frames an
    //! Initial may carry (RFC 9000 §12.4) and the TLS handshake messages in
    //! its CRYPTO frames (RFC 8446 §4).

    use std::collections::BTreeMap;

    use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, quic};
    use ring::hkdf;

    /// QUIC version 1 (RFC 9000).
    pub(crate) const VERSION_1: u32 = 0x0000_0001;
    /// Long-header packet types (RFC 9000 §17.2, table 5).
    pub(crate) const INITIAL: u8 = 0x0;
    const RETRY: u8 = 0x3;
    /// RFC 9001 §5.2.
    const INITIAL_SALT_V1: [u8; 20] = [
        0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c,
        0xad, 0xcc, 0xbb, 0x7f, 0x0a,
    ];
    /// The header protection sample starts 4 bytes after the start of the
    /// packet number field and is 16 bytes long (RFC 9001 §5.4.2).
    const SAMPLE_OFFSET: usize = 4;
    const SAMPLE_BYTES: usize = 16;
    /// TLS handshake message types (RFC 8446 §4).
    pub(crate) const CLIENT_HELLO: u8 = 1;
    pub(crate) const SERVER_HELLO: u8 = 2;

    /// Who sent a packet; selects the "client in" or "server in" secret.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub(crate) enum Side {
        Client,
        Server,
    }

    /// One side's Initial secret and packet protection keys.
    pub(crate) struct InitialKeys {
        pub(crate) secret: [u8; 32],
        pub(crate) key: [u8; 16],
        pub(crate) iv: [u8; 12],
        pub(crate) hp: [u8; 16],
    }

    impl InitialKeys {
        /// RFC 9001 §5.2: both sides derive from the Destination Connection
        /// ID of the client's *first* Initial.
        pub(crate) fn derive(original_dcid: &[u8], side: Side) -> Self {
            let initial =
                hkdf::Salt::new(hkdf::HKDF_SHA256, &INITIAL_SALT_V1).extract(original_dcid);
            let label: &[u8] = match side {
                Side::Client => b"client in",
                Side::Server => b"server in",
            };
            let secret: [u8; 32] = expand_label(&initial, label);
            let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
            Self {
                secret,
                key: expand_label(&prk, b"quic key"),
                iv: expand_label(&prk, b"quic iv"),
                hp: expand_label(&prk, b"quic hp"),
            }
        }
    }

    /// HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
    fn expand_label<const N: usize>(prk: &hkdf::Prk, label: &[u8]) -> [u8; N] {
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        const PREFIX: &[u8] = b"tls13 ";
        let length = u16::try_from(N).expect("short output").to_be_bytes();
        let label_len = [u8::try_from(PREFIX.len() + label.len()).expect("short label")];
        let info: [&[u8]; 5] = [&length, &label_len, PREFIX, label, &[0]];
        let mut out = [0; N];
        prk.expand(&info, Len(N))
            .and_then(|okm| okm.fill(&mut out))
            .expect("HKDF-SHA256 expands to far more than 32 bytes");
        out
    }

    /// A long-header packet with a Length field (Initial, 0-RTT, Handshake).
    pub(crate) struct LongPacket<'a> {
        pub(crate) packet_type: u8,
        pub(crate) version: u32,
        pub(crate) dcid: &'a [u8],
        pub(crate) scid: &'a [u8],
        /// The whole packet, from its first byte to the end of its payload.
        pub(crate) bytes: &'a [u8],
        /// Where the (protected) packet number starts in `bytes`.
        pub(crate) pn_offset: usize,
    }

    /// The long-header packets coalesced in a datagram (RFC 9000 §12.2), in
    /// order. Parsing stops at a short-header packet (it runs to the end of
    /// the datagram), a Retry or a Version Negotiation packet.
    pub(crate) fn split_datagram(datagram: &[u8]) -> Result<Vec<LongPacket<'_>>, &'static str> {
        let mut packets = Vec::new();
        let mut rest = datagram;
        while let Some(&first) = rest.first() {
            if first & 0x80 == 0 {
                break; // short header
            }
            let mut r = Reader::new(rest);
            r.u8()?;
            let version = r.u32()?;
            if version == 0 {
                break; // Version Negotiation
            }
            let dcid_len = r.u8()?;
            let dcid = r.bytes(usize::from(dcid_len))?;
            let scid_len = r.u8()?;
            let scid = r.bytes(usize::from(scid_len))?;
            let packet_type = (first >> 4) & 0x3;
            if packet_type == RETRY {
                break;
            }
            if packet_type == INITIAL {
                let token_len = r.varint_len()?;
                r.bytes(token_len)?;
            }
            let length = r.varint_len()?;
            let pn_offset = r.position();
            let end = pn_offset
                .checked_add(length)
                .filter(|end| *end <= rest.len())
                .ok_or("packet length runs past the datagram")?;
            packets.push(LongPacket {
                packet_type,
                version,
                dcid,
                scid,
                bytes: &rest[..end],
                pn_offset,
            });
            rest = &rest[end..];
        }
        Ok(packets)
    }

    /// A decrypted packet.
    pub(crate) struct Opened {
        /// The header with protection removed (the AEAD's associated data).
        pub(crate) header: Vec<u8>,
        pub(crate) packet_number: u64,
        pub(crate) payload: Vec<u8>,
    }

    /// Removes header protection and decrypts `packet` (RFC 9001 §5.3,
    /// §5.4). `largest_pn` is the largest packet number decrypted so far in
    /// this packet number space, for packet number recovery.
    pub(crate) fn open(
        packet: &LongPacket<'_>,
        keys: &InitialKeys,
        largest_pn: Option<u64>,
    ) -> Result<Opened, &'static str> {
        let mut bytes = packet.bytes.to_vec();
        let pn_offset = packet.pn_offset;
        let mask = {
            let start = pn_offset + SAMPLE_OFFSET;
            let sample = bytes
                .get(start..start + SAMPLE_BYTES)
                .ok_or("packet too short for a header protection sample")?;
            quic::HeaderProtectionKey::new(&quic::AES_128, &keys.hp)
                .and_then(|hp| hp.new_mask(sample))
                .map_err(|_| "header protection failed")?
        };
        bytes[0] ^= mask[0] & 0x0f; // long header: the low 4 bits
        let pn_len = usize::from(bytes[0] & 0x03) + 1;
        let mut truncated = 0u64;
        for i in 0..pn_len {
            let byte = bytes
                .get_mut(pn_offset + i)
                .ok_or("packet too short for its packet number")?;
            *byte ^= mask[1 + i];
            truncated = truncated << 8 | u64::from(*byte);
        }
        let packet_number = decode_packet_number(largest_pn, truncated, pn_len * 8);
        let mut nonce = keys.iv;
        for (n, p) in nonce[4..].iter_mut().zip(packet_number.to_be_bytes()) {
            *n ^= p;
        }
        let key = LessSafeKey::new(
            UnboundKey::new(&aead::AES_128_GCM, &keys.key).map_err(|_| "bad packet key")?,
        );
        let (header, body) = bytes.split_at_mut(pn_offset + pn_len);
        let payload = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&*header),
                body,
            )
            .map_err(|_| "AEAD authentication failed")?;
        Ok(Opened {
            header: header.to_vec(),
            packet_number,
            payload: payload.to_vec(),
        })
    }

    /// RFC 9000 appendix A.3.
    fn decode_packet_number(largest: Option<u64>, truncated: u64, bits: usize) -> u64 {
        let expected = largest.map_or(0, |l| l + 1);
        let window = 1u64 << bits;
        let half = window / 2;
        let candidate = (expected & !(window - 1)) | truncated;
        if candidate + half <= expected && candidate < (1 << 62) - window {
            candidate + window
        } else if candidate > expected + half && candidate >= window {
            candidate - window
        } else {
            candidate
        }
    }

    /// The CRYPTO frames of an Initial payload as `(offset, data)`. Only the
    /// frames RFC 9000 §12.4 allows in Initial packets are accepted.
    pub(crate) fn crypto_frames(payload: &[u8]) -> Result<Vec<(u64, &[u8])>, &'static str> {
        let mut r = Reader::new(payload);
        let mut frames = Vec::new();
        while !r.is_empty() {
            match r.varint()? {
                0x00 | 0x01 => {} // PADDING, PING
                kind @ (0x02 | 0x03) => {
                    // ACK: largest, delay, range count, first range, ranges.
                    r.varint()?;
                    r.varint()?;
                    let ranges = r.varint()?;
                    r.varint()?;
                    for _ in 0..ranges {
                        r.varint()?;
                        r.varint()?;
                    }
                    if kind == 0x03 {
                        for _ in 0..3 {
                            r.varint()?; // ECN counts
                        }
                    }
                }
                0x06 => {
                    let offset = r.varint()?;
                    let len = r.varint_len()?;
                    frames.push((offset, r.bytes(len)?));
                }
                0x1c => {
                    r.varint()?; // error code
                    r.varint()?; // frame type
                    let len = r.varint_len()?;
                    r.bytes(len)?;
                }
                0x1d => {
                    r.varint()?;
                    let len = r.varint_len()?;
                    r.bytes(len)?;
                }
                _ => return Err("a frame type that Initial packets may not carry"),
            }
        }
        Ok(frames)
    }

    /// CRYPTO frame data reassembled by offset.
    #[derive(Default)]
    pub(crate) struct CryptoStream {
        chunks: BTreeMap<u64, Vec<u8>>,
    }

    impl CryptoStream {
        pub(crate) fn insert(&mut self, offset: u64, data: &[u8]) {
            let chunk = self.chunks.entry(offset).or_default();
            if data.len() > chunk.len() {
                *chunk = data.to_vec();
            }
        }

        /// The stream from offset 0 up to the first gap.
        pub(crate) fn contiguous(&self) -> Vec<u8> {
            let mut out = Vec::new();
            for (&offset, data) in &self.chunks {
                let Ok(offset) = usize::try_from(offset) else {
                    break;
                };
                if offset > out.len() {
                    break;
                }
                if offset + data.len() > out.len() {
                    let from = out.len() - offset;
                    out.extend_from_slice(&data[from..]);
                }
            }
            out
        }
    }

    /// The complete TLS handshake messages at the start of `stream`, as
    /// `(type, body)`.
    pub(crate) fn handshake_messages(stream: &[u8]) -> Vec<(u8, &[u8])> {
        let mut r = Reader::new(stream);
        let mut messages = Vec::new();
        while let (Ok(kind), Ok(len)) = (r.u8(), r.u24()) {
            match r.bytes(len) {
                Ok(body) => messages.push((kind, body)),
                Err(_) => break,
            }
        }
        messages
    }

    /// What a ClientHello says about the server it wants.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) struct ClientHello {
        pub(crate) server_name: Option<String>,
        pub(crate) alpn: Vec<Vec<u8>>,
    }

    /// Parses a ClientHello body (RFC 8446 §4.1.2; SNI: RFC 6066 §3; ALPN:
    /// RFC 7301 §3.1).
    pub(crate) fn parse_client_hello(body: &[u8]) -> Result<ClientHello, &'static str> {
        let mut r = Reader::new(body);
        r.bytes(2 + 32)?; // legacy_version, random
        let session_id = r.u8()?;
        r.bytes(usize::from(session_id))?;
        let suites = r.u16()?;
        r.bytes(usize::from(suites))?;
        let compression = r.u8()?;
        r.bytes(usize::from(compression))?;
        let extensions_len = r.u16()?;
        let mut extensions = Reader::new(r.bytes(usize::from(extensions_len))?);
        let mut hello = ClientHello {
            server_name: None,
            alpn: Vec::new(),
        };
        while !extensions.is_empty() {
            let kind = extensions.u16()?;
            let len = extensions.u16()?;
            let mut data = Reader::new(extensions.bytes(usize::from(len))?);
            match kind {
                0 => {
                    let list = data.u16()?;
                    let mut names = Reader::new(data.bytes(usize::from(list))?);
                    while !names.is_empty() {
                        let name_type = names.u8()?;
                        let len = names.u16()?;
                        let name = names.bytes(usize::from(len))?;
                        if name_type == 0 {
                            hello.server_name = Some(String::from_utf8_lossy(name).into_owned());
                        }
                    }
                }
                16 => {
                    let list = data.u16()?;
                    let mut protocols = Reader::new(data.bytes(usize::from(list))?);
                    while !protocols.is_empty() {
                        let len = protocols.u8()?;
                        hello.alpn.push(protocols.bytes(usize::from(len))?.to_vec());
                    }
                }
                _ => {}
            }
        }
        Ok(hello)
    }

    /// A bounds-checked big-endian reader.
    struct Reader<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn new(bytes: &'a [u8]) -> Self {
            Self { bytes, pos: 0 }
        }

        fn is_empty(&self) -> bool {
            self.pos >= self.bytes.len()
        }

        fn position(&self) -> usize {
            self.pos
        }

        fn bytes(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
            let end = self.pos.checked_add(n).ok_or("length overflow")?;
            let out = self.bytes.get(self.pos..end).ok_or("truncated")?;
            self.pos = end;
            Ok(out)
        }

        fn uint(&mut self, n: usize) -> Result<u64, &'static str> {
            Ok(self
                .bytes(n)?
                .iter()
                .fold(0, |acc, b| acc << 8 | u64::from(*b)))
        }

        fn u8(&mut self) -> Result<u8, &'static str> {
            Ok(self.bytes(1)?[0])
        }

        fn u16(&mut self) -> Result<u16, &'static str> {
            Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
        }

        fn u24(&mut self) -> Result<usize, &'static str> {
            usize::try_from(self.uint(3)?).map_err(|_| "length overflow")
        }

        fn u32(&mut self) -> Result<u32, &'static str> {
            u32::try_from(self.uint(4)?).map_err(|_| "length overflow")
        }

        /// RFC 9000 §16.
        fn varint(&mut self) -> Result<u64, &'static str> {
            let first = *self.bytes.get(self.pos).ok_or("truncated varint")?;
            let len = 1usize << (first >> 6);
            let value = self.uint(len)?;
            Ok(value & ((1u64 << (8 * len - 2)) - 1))
        }

        fn varint_len(&mut self) -> Result<usize, &'static str> {
            usize::try_from(self.varint()?).map_err(|_| "length overflow")
        }
    }
}

// ---------------------------------------------------------------------------
// The taint search.
// ---------------------------------------------------------------------------
mod taint {
    use std::collections::HashMap;

    use super::encodings::{base64_groups, hex};

    /// Shorter patterns are not searched: an n-byte pattern matches random
    /// bytes by chance with probability about size/2^(8n), and 6 bytes keep
    /// that below 1e-8 for the few hundred kilobytes captured.
    pub(crate) const MIN_PATTERN_BYTES: usize = 6;

    /// A value that must not cross the wire.
    pub(crate) struct Identifier {
        pub(crate) name: String,
        pub(crate) bytes: Vec<u8>,
        /// Text is also searched in lower and upper case (DNS names are
        /// case-insensitive, RFC 4343, so a name could travel re-cased) and
        /// spelled as a host label.
        pub(crate) text: bool,
    }

    impl Identifier {
        pub(crate) fn text(name: impl Into<String>, value: &str) -> Self {
            Self {
                name: name.into(),
                bytes: value.as_bytes().to_vec(),
                text: true,
            }
        }

        pub(crate) fn binary(name: impl Into<String>, value: &[u8]) -> Self {
            Self {
                name: name.into(),
                bytes: value.to_vec(),
                text: false,
            }
        }
    }

    /// One encoded form of an identifier.
    pub(crate) struct Pattern {
        pub(crate) identifier: String,
        pub(crate) form: String,
        pub(crate) bytes: Vec<u8>,
    }

    /// The encodings of `bytes`: raw, hex in both cases, and base64 (standard
    /// and URL-safe) of the suffixes at offsets 0, 1, 2, so that one of them
    /// starts on the 3-byte boundary of any stream that embeds `bytes`.
    fn forms(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = vec![
            ("raw".to_owned(), bytes.to_vec()),
            ("hex".to_owned(), hex(bytes, false)),
            ("HEX".to_owned(), hex(bytes, true)),
        ];
        for shift in 0..3 {
            let Some(suffix) = bytes.get(shift..) else {
                continue;
            };
            out.push((format!("base64@{shift}"), base64_groups(suffix, false)));
            out.push((format!("base64url@{shift}"), base64_groups(suffix, true)));
        }
        out
    }

    /// Every searched form of every identifier, and how many forms were
    /// dropped as shorter than [`MIN_PATTERN_BYTES`].
    pub(crate) fn patterns(identifiers: &[Identifier]) -> (Vec<Pattern>, usize) {
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut dropped = 0;
        for id in identifiers {
            let mut variants = vec![("", id.bytes.clone())];
            if id.text {
                variants.push(("lower ", id.bytes.to_ascii_lowercase()));
                variants.push(("upper ", id.bytes.to_ascii_uppercase()));
                // As a DNS host label would spell it (RFC 952): "Anna's Car"
                // becomes "anna-s-car".
                let label = id
                    .bytes
                    .iter()
                    .map(|b| match b.to_ascii_lowercase() {
                        c @ (b'a'..=b'z' | b'0'..=b'9') => c,
                        _ => b'-',
                    })
                    .collect();
                variants.push(("label ", label));
            }
            for (variant, bytes) in variants {
                let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
                let plain = forms(&bytes).into_iter();
                let hashed = forms(digest.as_ref())
                    .into_iter()
                    .map(|(f, b)| (format!("sha256 {f}"), b));
                for (form, bytes) in plain.chain(hashed) {
                    if bytes.len() < MIN_PATTERN_BYTES {
                        dropped += 1;
                        continue;
                    }
                    let duplicate = patterns
                        .iter()
                        .any(|p| p.identifier == id.name && p.bytes == bytes);
                    if !duplicate {
                        patterns.push(Pattern {
                            identifier: id.name.clone(),
                            form: format!("{variant}{form}"),
                            bytes,
                        });
                    }
                }
            }
        }
        (patterns, dropped)
    }

    /// Captured bytes with a description of where they came from.
    pub(crate) struct Capture {
        pub(crate) label: String,
        pub(crate) bytes: Vec<u8>,
    }

    /// An identifier found in a capture.
    #[derive(Debug)]
    pub(crate) struct Finding {
        pub(crate) identifier: String,
        pub(crate) form: String,
        pub(crate) capture: String,
        pub(crate) offset: usize,
    }

    /// Every occurrence of every pattern in every capture. Patterns are
    /// indexed by their first [`MIN_PATTERN_BYTES`] bytes, so the cost is one
    /// lookup per captured byte.
    pub(crate) fn search(patterns: &[Pattern], captures: &[Capture]) -> Vec<Finding> {
        let mut index: HashMap<&[u8], Vec<&Pattern>> = HashMap::new();
        for p in patterns {
            index
                .entry(&p.bytes[..MIN_PATTERN_BYTES])
                .or_default()
                .push(p);
        }
        let mut findings = Vec::new();
        for capture in captures {
            for (offset, window) in capture.bytes.windows(MIN_PATTERN_BYTES).enumerate() {
                for p in index.get(window).into_iter().flatten() {
                    if capture.bytes[offset..].starts_with(&p.bytes) {
                        findings.push(Finding {
                            identifier: p.identifier.clone(),
                            form: p.form.clone(),
                            capture: capture.label.clone(),
                            offset,
                        });
                    }
                }
            }
        }
        findings
    }
}

// ---------------------------------------------------------------------------
// Just enough DNS (RFC 1035 §4.1) to read an mDNS packet's records.
// ---------------------------------------------------------------------------
mod dns {
    /// TXT (RFC 1035 §3.3.14).
    pub(crate) const TXT: u16 = 16;

    /// A resource record: owner name (lower case, no trailing dot), type, data.
    pub(crate) struct Record {
        pub(crate) name: String,
        pub(crate) rtype: u16,
        pub(crate) rdata: Vec<u8>,
    }

    fn u16_at(msg: &[u8], pos: usize) -> Result<u16, &'static str> {
        let b = msg.get(pos..pos + 2).ok_or("truncated")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The answer, authority and additional records of a DNS message.
    pub(crate) fn records(msg: &[u8]) -> Result<Vec<Record>, &'static str> {
        let questions = u16_at(msg, 4)?;
        let records = [6, 8, 10]
            .iter()
            .map(|at| u16_at(msg, *at).map(usize::from))
            .sum::<Result<usize, _>>()?;
        let mut pos = 12;
        for _ in 0..questions {
            pos = read_name(msg, pos)?.1 + 4;
        }
        let mut out = Vec::new();
        for _ in 0..records {
            let (name, next) = read_name(msg, pos)?;
            let rtype = u16_at(msg, next)?;
            let rdlen = usize::from(u16_at(msg, next + 8)?);
            let start = next + 10;
            let rdata = msg.get(start..start + rdlen).ok_or("truncated rdata")?;
            out.push(Record {
                name,
                rtype,
                rdata: rdata.to_vec(),
            });
            pos = start + rdlen;
        }
        Ok(out)
    }

    /// A possibly compressed name and the position after it.
    fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), &'static str> {
        let mut labels = Vec::new();
        let mut end = None;
        let mut jumps = 0;
        loop {
            let len = *msg.get(pos).ok_or("truncated name")?;
            match len {
                0 => return Ok((labels.join("."), end.unwrap_or(pos + 1))),
                l if l & 0xc0 == 0xc0 => {
                    let low = *msg.get(pos + 1).ok_or("truncated pointer")?;
                    if end.is_none() {
                        end = Some(pos + 2);
                    }
                    pos = usize::from(u16::from_be_bytes([l & 0x3f, low]));
                    jumps += 1;
                    if jumps > 64 {
                        return Err("compression loop");
                    }
                }
                l if l & 0xc0 == 0 => {
                    let l = usize::from(l);
                    let label = msg.get(pos + 1..pos + 1 + l).ok_or("truncated label")?;
                    labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                    pos += 1 + l;
                }
                _ => return Err("reserved label type"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Captures: a recording UDP relay for QUIC, a passive mDNS listener.
// ---------------------------------------------------------------------------

/// Which way a relayed datagram went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToCar,
    ToPhone,
}

/// One relayed datagram.
struct Datagram {
    /// Which phone socket (one per phone endpoint) it belongs to.
    flow: usize,
    direction: Direction,
    bytes: Vec<u8>,
}

/// A UDP relay on loopback: phones connect to [`Relay::address`]; each
/// phone socket gets its own socket towards the car. Every datagram is
/// recorded before it is forwarded, so the log is in causal order.
struct Relay {
    address: SocketAddr,
    log: Arc<Mutex<Vec<Datagram>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(car: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap());
        let address = front.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Datagram>>> = Arc::default();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (main_log, main_tasks) = (log.clone(), tasks.clone());
        let main = tokio::spawn(async move {
            let mut flows: HashMap<SocketAddr, (usize, Arc<UdpSocket>)> = HashMap::new();
            let mut buf = vec![0u8; 65_535];
            loop {
                // Errors (e.g. an ICMP unreachable reported late) are one-shot.
                let Ok((n, phone)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                if !flows.contains_key(&phone) {
                    let back = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap());
                    back.connect(car).await.unwrap();
                    let flow = flows.len();
                    let (back2, front2, log2) = (back.clone(), front.clone(), main_log.clone());
                    let task = tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_535];
                        loop {
                            let Ok(n) = back2.recv(&mut buf).await else {
                                continue;
                            };
                            log2.lock().unwrap().push(Datagram {
                                flow,
                                direction: Direction::ToPhone,
                                bytes: buf[..n].to_vec(),
                            });
                            let _ = front2.send_to(&buf[..n], phone).await;
                        }
                    });
                    main_tasks.lock().unwrap().push(task);
                    flows.insert(phone, (flow, back));
                }
                let (flow, back) = &flows[&phone];
                main_log.lock().unwrap().push(Datagram {
                    flow: *flow,
                    direction: Direction::ToCar,
                    bytes: buf[..n].to_vec(),
                });
                let _ = back.send(&buf[..n]).await;
            }
        });
        tasks.lock().unwrap().push(main);
        Self {
            address,
            log,
            tasks,
        }
    }

    fn stop(self) -> Vec<Datagram> {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// A passive mDNS listener on loopback. It binds the group address itself
/// (not 0.0.0.0) with SO_REUSEADDR and SO_REUSEPORT, so it shares port 5353
/// with the mDNS daemons but can never take a unicast datagram meant for
/// one of them; it sees every multicast mDNS packet on `lo`. (mdns-sd sends
/// unicast only to legacy queriers, whose source port is not 5353; Tether's
/// nodes are not such queriers.)
struct MdnsCapture {
    packets: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl MdnsCapture {
    fn start() -> Self {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket
            .bind(&SocketAddr::from((MDNS_GROUP, MDNS_PORT)).into())
            .unwrap();
        socket
            .join_multicast_v4(&MDNS_GROUP, &Ipv4Addr::LOCALHOST)
            .unwrap();
        socket.set_multicast_loop_v4(true).unwrap();
        socket.set_nonblocking(true).unwrap();
        let socket = UdpSocket::from_std(socket.into()).unwrap();
        let packets: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = packets.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                if let Ok((n, _)) = socket.recv_from(&mut buf).await {
                    sink.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        Self { packets, task }
    }

    fn stop(self) -> Vec<Vec<u8>> {
        self.task.abort();
        std::mem::take(&mut *self.packets.lock().unwrap())
    }
}

// ---------------------------------------------------------------------------
// Decrypting the Initials of a relay log.
// ---------------------------------------------------------------------------

/// Follows the connections in a relay log and decrypts every Initial packet
/// with keys any observer can derive.
#[derive(Default)]
struct InitialObserver {
    /// A client's Source Connection ID → the Destination Connection ID of
    /// its first Initial, from which both sides' keys derive (RFC 9001 §5.2).
    original_dcid: HashMap<Vec<u8>, Vec<u8>>,
    /// Largest packet number per (connection, sender).
    largest_pn: HashMap<(Vec<u8>, Side), u64>,
    streams: HashMap<(Vec<u8>, Side), CryptoStream>,
    seen: HashMap<Side, usize>,
    opened: Vec<(Side, Opened)>,
    failures: Vec<String>,
}

impl InitialObserver {
    fn observe(&mut self, side: Side, label: &str, datagram: &[u8]) {
        let packets = match quic_initial::split_datagram(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.failures
                    .push(format!("{label}: unparsable datagram: {e}"));
                return;
            }
        };
        for packet in packets
            .iter()
            .filter(|p| p.packet_type == quic_initial::INITIAL)
        {
            *self.seen.entry(side).or_default() += 1;
            if packet.version != quic_initial::VERSION_1 {
                self.failures.push(format!(
                    "{label}: Initial of version {:#010x}",
                    packet.version
                ));
                continue;
            }
            let original = match side {
                Side::Client => self
                    .original_dcid
                    .entry(packet.scid.to_vec())
                    .or_insert_with(|| packet.dcid.to_vec())
                    .clone(),
                Side::Server => match self.original_dcid.get(packet.dcid) {
                    Some(original) => original.clone(),
                    None => {
                        self.failures
                            .push(format!("{label}: server Initial for an unseen client"));
                        continue;
                    }
                },
            };
            let keys = InitialKeys::derive(&original, side);
            let space = (original, side);
            let opened =
                match quic_initial::open(packet, &keys, self.largest_pn.get(&space).copied()) {
                    Ok(opened) => opened,
                    Err(e) => {
                        self.failures
                            .push(format!("{label}: Initial not opened: {e}"));
                        continue;
                    }
                };
            let largest = self.largest_pn.entry(space.clone()).or_default();
            *largest = (*largest).max(opened.packet_number);
            match quic_initial::crypto_frames(&opened.payload) {
                Ok(frames) => {
                    let stream = self.streams.entry(space).or_default();
                    for (offset, data) in frames {
                        stream.insert(offset, data);
                    }
                }
                Err(e) => self.failures.push(format!("{label}: bad frames: {e}")),
            }
            self.opened.push((side, opened));
        }
    }

    fn opened(&self, side: Side) -> usize {
        self.opened.iter().filter(|(s, _)| *s == side).count()
    }

    /// Each connection's reassembled CRYPTO stream from `side`.
    fn streams(&self, side: Side) -> Vec<Vec<u8>> {
        self.streams
            .iter()
            .filter(|((_, s), _)| *s == side)
            .map(|(_, stream)| stream.contiguous())
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Identifiers.
// ---------------------------------------------------------------------------

fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0; N];
    ring::rand::SystemRandom::new().fill(&mut out).unwrap();
    out
}

/// The planted identifiers of one node, with a MAC also in its other
/// spellings (no separators, dashes, the six raw bytes).
fn planted(who: &str, ids: &LocalIdentifiers) -> Vec<Identifier> {
    let fields = [
        ("device_name", &ids.device_name),
        ("device_id", &ids.device_id),
        ("vin", &ids.vin),
        ("account_uid", &ids.account_uid),
        ("mac", &ids.mac),
    ];
    let mut out = Vec::new();
    for (field, value) in fields {
        let Some(value) = value else { continue };
        out.push(Identifier::text(format!("{who}.{field}"), value));
        if field == "mac" {
            let bare = value.replace(':', "");
            out.push(Identifier::text(format!("{who}.mac (bare)"), &bare));
            out.push(Identifier::text(
                format!("{who}.mac (dashes)"),
                &value.replace(':', "-"),
            ));
            out.push(Identifier::binary(
                format!("{who}.mac (bytes)"),
                &unhex(&bare),
            ));
        }
    }
    out
}

/// A member's key and certificate.
fn member(
    who: &str,
    public_key: &[u8],
    certificate: &tether_identity::DeviceCertificate,
) -> Vec<Identifier> {
    vec![
        Identifier::binary(format!("{who}.public_key"), public_key),
        Identifier::binary(format!("{who}.certificate.body"), &certificate.body),
        Identifier::binary(
            format!("{who}.certificate.signature"),
            &certificate.signature,
        ),
    ]
}

/// An account's authority key, its key id and (a secret) its group key.
fn account(name: &str, authority_public_key: &[u8], group_key: &[u8]) -> Vec<Identifier> {
    vec![
        Identifier::binary(format!("{name}.authority_public_key"), authority_public_key),
        Identifier::binary(
            format!("{name}.account_key_id"),
            &AccountKeyId::of(authority_public_key).0,
        ),
        Identifier::binary(format!("{name}.group_key"), group_key),
    ]
}

/// The credentials a phone keeps in its store (the node exposes no
/// accessor for the phone's own certificate).
fn stored_credentials(dir: &Path) -> Credentials {
    tether_store::Store::open(dir)
        .unwrap()
        .load_identity()
        .unwrap()
        .expect("the phone is enrolled")
}

fn node_config(dir: Option<&Path>, identifiers: LocalIdentifiers) -> NodeConfig {
    NodeConfig {
        data_dir: dir.map(Path::to_path_buf),
        identifiers,
        ..NodeConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_no_identifier_crosses_the_wire() {
    // Unique per run, so concurrent runs on this host cannot be confused.
    let run = String::from_utf8(hex(&random::<4>(), true)).unwrap();
    let mac = |last: u8| {
        let r = random::<3>();
        format!("02:7e:{:02x}:{:02x}:{:02x}:{last:02x}", r[0], r[1], r[2])
    };
    let owner_uid = format!("uid-{run}-owner");
    let car_ids = LocalIdentifiers {
        device_name: Some(format!("Wire Taint Car {run}")),
        device_id: Some(format!("did-car-{run}")),
        vin: Some(format!("LTETHER00{run}")),
        account_uid: Some(owner_uid.clone()),
        mac: Some(mac(1)),
    };
    let phone_ids = LocalIdentifiers {
        device_name: Some(format!("Wire Taint Phone {run}")),
        device_id: Some(format!("did-phone-{run}")),
        vin: car_ids.vin.clone(),
        account_uid: Some(owner_uid),
        mac: Some(mac(2)),
    };
    let stranger_ids = LocalIdentifiers {
        device_name: Some(format!("Wire Taint Stranger {run}")),
        device_id: Some(format!("did-stranger-{run}")),
        vin: Some(format!("LSTRANGER{run}")),
        account_uid: Some(format!("uid-{run}-stranger")),
        mac: Some(mac(3)),
    };

    // Listen before anything is advertised.
    let mdns = MdnsCapture::start();

    // Enrollment, as in the demo.
    let phone_dir = tempfile::tempdir().unwrap();
    let phone = Phone::open(node_config(Some(phone_dir.path()), phone_ids.clone())).unwrap();
    phone.create_account().unwrap();
    let car = HeadUnit::open(node_config(None, car_ids.clone())).unwrap();
    let grant: EnrollmentGrant = phone
        .enroll_device(&car.enrollment_request().unwrap())
        .unwrap();
    car.complete_enrollment(&grant).unwrap();
    let phone_credentials = stored_credentials(phone_dir.path());
    assert_eq!(
        phone_credentials.authority_public_key()[..],
        grant.authority_public_key[..]
    );

    let car_address = car.start().await.unwrap();
    let mut tokens = vec![car.current_token().await.unwrap()];
    let relay = Relay::start(car_address).await;

    // Discovery, then everything a member does, through the relay.
    let found = phone.discover_vehicle(DISCOVERY_TIMEOUT).await.unwrap();
    assert_eq!(found.address, car_address);
    let link = phone.connect(relay.address).await.unwrap();
    assert_eq!(link.vehicle_key(), car.public_key().unwrap());
    assert!(!link.get(Vec::new()).await.unwrap().is_empty());
    let locks: Vec<String> = signals::DOOR_IS_LOCKED
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut sub = link.subscribe(locks).await.unwrap();
    sub.next().await.unwrap().unwrap();
    let key = random::<16>();
    link.command(control::lock(), &key).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    sub.cancel();
    link.command(control::lock(), &key).await.unwrap();
    for _ in 0..200 {
        if phone.has_ticket(relay.address).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    link.close();
    let resumed = phone.connect(relay.address).await.unwrap();
    assert!(resumed.resumed(), "the second session should resume");
    resumed.get(vec![signals::RANGE.into()]).await.unwrap();
    resumed.close();

    // A phone of another account browses and is refused.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger =
        Phone::open(node_config(Some(stranger_dir.path()), stranger_ids.clone())).unwrap();
    stranger.create_account().unwrap();
    let stranger_credentials = stored_credentials(stranger_dir.path());
    let report = stranger.discover(STRANGER_BROWSE).await.unwrap();
    assert!(report.resolved.is_empty(), "{report:?}");
    let refused = stranger.connect(relay.address).await.unwrap_err();
    assert!(refused.is_refused(), "{refused:?}");

    tokens.push(car.current_token().await.unwrap());
    tokens.dedup();
    tokio::time::sleep(SETTLE).await;
    car.shutdown().await.unwrap(); // goodbye packets
    tokio::time::sleep(SETTLE).await;
    let datagrams = relay.stop();
    let mdns_packets = mdns.stop();

    // What must not be seen.
    let mut identifiers = Vec::new();
    identifiers.extend(planted("car", &car_ids));
    identifiers.extend(planted("phone", &phone_ids));
    identifiers.extend(planted("stranger", &stranger_ids));
    let car_certificate = grant
        .certificate
        .clone()
        .expect("grants carry a certificate");
    identifiers.extend(member("car", &car.public_key().unwrap(), &car_certificate));
    identifiers.extend(member(
        "phone",
        &phone_credentials.certificate().public_key,
        phone_credentials.certificate_message(),
    ));
    identifiers.extend(member(
        "stranger",
        &stranger_credentials.certificate().public_key,
        stranger_credentials.certificate_message(),
    ));
    identifiers.extend(account(
        "owner",
        &grant.authority_public_key,
        &grant.group_key,
    ));
    identifiers.extend(account(
        "stranger_account",
        stranger_credentials.authority_public_key(),
        stranger_credentials
            .group_key()
            .expect("phones hold the group key")
            .as_bytes(),
    ));
    let (patterns, dropped) = taint::patterns(&identifiers);

    // The QUIC capture: raw datagrams plus what the Initials decrypt to.
    let mut observer = InitialObserver::default();
    let mut corpus = Vec::new();
    for (direction, side) in [
        (Direction::ToCar, Side::Client),
        (Direction::ToPhone, Side::Server),
    ] {
        for (i, d) in datagrams
            .iter()
            .enumerate()
            .filter(|(_, d)| d.direction == direction)
        {
            let label = format!("QUIC datagram #{i} flow {} {direction:?}", d.flow);
            observer.observe(side, &label, &d.bytes);
            corpus.push(Capture {
                label,
                bytes: d.bytes.clone(),
            });
        }
    }
    let flows = datagrams.iter().map(|d| d.flow).max().map_or(0, |f| f + 1);
    let to_car = datagrams
        .iter()
        .filter(|d| d.direction == Direction::ToCar)
        .count();
    assert!(
        flows >= 2,
        "the member phone and the stranger each use a socket"
    );
    assert!(to_car > 0 && datagrams.len() > to_car, "traffic both ways");
    assert!(observer.failures.is_empty(), "{:#?}", observer.failures);
    for side in [Side::Client, Side::Server] {
        assert!(observer.opened(side) > 0, "no {side:?} Initial decrypted");
        assert_eq!(
            observer.opened(side),
            observer.seen[&side],
            "every {side:?} Initial must decrypt"
        );
    }
    // Decryption provably works: each connection's ClientHello is readable
    // and names only Tether's constants.
    let mut client_hellos = 0;
    let mut hints_seen = std::collections::HashSet::new();
    for stream in observer.streams(Side::Client) {
        for (kind, body) in quic_initial::handshake_messages(&stream) {
            if kind == quic_initial::CLIENT_HELLO {
                let hello = quic_initial::parse_client_hello(body).unwrap();
                assert_eq!(hello.server_name.as_deref(), Some(EXPECTED_SNI));
                // SPEC §5.2: the protocol id, then exactly two admission
                // hints of one size, fresh on every connection (R2).
                assert_eq!(hello.alpn.first().map(Vec::as_slice), Some(EXPECTED_ALPN));
                assert_eq!(hello.alpn.len(), 1 + tether_session::HINTS);
                for hint in &hello.alpn[1..] {
                    assert_eq!(hint.len(), tether_session::handshake::HINT_LEN);
                    assert!(
                        hints_seen.insert(hint.clone()),
                        "R2: a hint seen on two connections"
                    );
                }
                client_hellos += 1;
            }
        }
        corpus.push(Capture {
            label: "client CRYPTO stream (Initial)".into(),
            bytes: stream,
        });
    }
    let server_hellos = observer
        .streams(Side::Server)
        .into_iter()
        .map(|stream| {
            let hellos = quic_initial::handshake_messages(&stream)
                .iter()
                .filter(|(kind, _)| *kind == quic_initial::SERVER_HELLO)
                .count();
            corpus.push(Capture {
                label: "server CRYPTO stream (Initial)".into(),
                bytes: stream,
            });
            hellos
        })
        .sum::<usize>();
    // Cold session, resumed session, the stranger's attempt.
    assert!(client_hellos >= 3, "{client_hellos} ClientHellos decrypted");
    assert!(server_hellos >= 3, "{server_hellos} ServerHellos decrypted");
    for (i, (side, opened)) in observer.opened.iter().enumerate() {
        corpus.push(Capture {
            label: format!(
                "{side:?} Initial #{i} (pn {}) decrypted",
                opened.packet_number
            ),
            bytes: [&opened.header[..], &opened.payload[..]].concat(),
        });
    }

    // The mDNS capture provably works: the car's tokens are in it, and the
    // only TXT data under them is `v=1`.
    let mut with_token = 0;
    let mut txt_checked = 0;
    for (i, packet) in mdns_packets.iter().enumerate() {
        let carries = |t: &String| packet.windows(t.len()).any(|w| w == t.as_bytes());
        if tokens.iter().any(carries) {
            with_token += 1;
            for record in dns::records(packet).unwrap() {
                let ours = tokens
                    .iter()
                    .any(|t| record.name.split('.').next() == Some(t.as_str()));
                if ours && record.rtype == dns::TXT {
                    assert_eq!(record.rdata, EXPECTED_TXT_RDATA, "TXT of {}", record.name);
                    txt_checked += 1;
                }
            }
        }
        corpus.push(Capture {
            label: format!("mDNS packet #{i}"),
            bytes: packet.clone(),
        });
    }
    assert!(
        with_token > 0,
        "no captured mDNS packet carries the car's token"
    );
    assert!(txt_checked > 0, "no TXT record of the car captured");

    // The search itself finds what is there: the SNI is in the plaintexts.
    let control = taint::patterns(&[Identifier::text("control.sni", EXPECTED_SNI)]).0;
    assert!(!taint::search(&control, &corpus).is_empty());

    let findings = taint::search(&patterns, &corpus);
    let corpus_bytes: usize = corpus.iter().map(|c| c.bytes.len()).sum();
    println!(
        "wire taint: {} QUIC datagrams ({to_car} to the car, {} to the phones) in {flows} flows; \
         {} mDNS packets ({with_token} with the car's token, {txt_checked} TXT records checked); \
         {} client and {} server Initials decrypted, {client_hellos} ClientHellos, \
         {server_hellos} ServerHellos; {} identifiers, {} patterns ({dropped} forms under \
         {} bytes skipped) over {} captures, {corpus_bytes} bytes; {} findings",
        datagrams.len(),
        datagrams.len() - to_car,
        mdns_packets.len(),
        observer.opened(Side::Client),
        observer.opened(Side::Server),
        identifiers.len(),
        patterns.len(),
        taint::MIN_PATTERN_BYTES,
        corpus.len(),
        findings.len(),
    );
    assert!(
        findings.is_empty(),
        "identifiers crossed the wire (R2):\n{}",
        findings
            .iter()
            .map(|f| format!(
                "  {} as {} in {} at byte {}",
                f.identifier, f.form, f.capture, f.offset
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A TCP proxy in front of the broker that records every byte of every
/// MQTT connection, both ways: what the broker operator (or anyone on the
/// path to it) sees (SPEC §19.6).
/// Recorded byte streams: connection number, direction, bytes.
type Streams = Vec<(usize, &'static str, Vec<u8>)>;

struct MqttTap {
    port: u16,
    streams: Arc<Mutex<Streams>>,
    task: JoinHandle<()>,
}

impl MqttTap {
    async fn start(broker_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let streams: Arc<Mutex<Streams>> = Arc::default();
        let recorded = streams.clone();
        let task = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((client, _)) = listener.accept().await {
                let id = next;
                next += 1;
                let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await
                else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (broker_read, broker_write) = broker.into_split();
                for (from, to, way) in [
                    (client_read, broker_write, "to broker"),
                    (broker_read, client_write, "from broker"),
                ] {
                    let recorded = recorded.clone();
                    let slot = {
                        let mut all = recorded.lock().unwrap();
                        all.push((id, way, Vec::new()));
                        all.len() - 1
                    };
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let (mut from, mut to) = (from, to);
                        let mut buf = vec![0; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf).await {
                            if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            recorded.lock().unwrap()[slot]
                                .2
                                .extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown().await;
                    });
                }
            }
        });
        Self {
            port,
            streams,
            task,
        }
    }

    fn stop(self) -> Streams {
        self.task.abort();
        self.streams.lock().unwrap().clone()
    }
}

#[path = "../../crates/tether-relay/tests/support/mod.rs"]
mod mosquitto;

/// R2, R4 on the remote path (SPEC §19.6): the car, the owner's phone, a
/// co-user and a stranger use the relay while every byte of their MQTT
/// connections is recorded. No planted identifier, key, certificate or
/// key id appears in any form the LAN test searches; the relay keys do not
/// either; the rendezvous topics that do appear are the HMAC pseudonyms of
/// their windows, different from one window to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_r4_no_identifier_crosses_the_broker() {
    let run = String::from_utf8(hex(&random::<4>(), true)).unwrap();
    let ids = |who: &str, last: u8| LocalIdentifiers {
        device_name: Some(format!("Broker Taint {who} {run}")),
        device_id: Some(format!("did-{who}-{run}")),
        vin: Some(format!("LBROKER{who}{run}")),
        account_uid: Some(format!("uid-{run}-{who}")),
        mac: Some(format!("02:7f:{}:{last:02x}", {
            let r = random::<3>();
            format!("{:02x}:{:02x}:{:02x}", r[0], r[1], r[2])
        })),
    };
    let (car_ids, phone_ids, co_ids, stranger_ids) = (
        ids("car", 1),
        ids("phone", 2),
        ids("couser", 3),
        ids("stranger", 4),
    );
    let broker = mosquitto::Mosquitto::start();
    let tap = MqttTap::start(broker.port()).await;
    let over = |dir: Option<&Path>, ids: &LocalIdentifiers| NodeConfig {
        relay: Some(tether_node::RelayConfig::new("127.0.0.1", tap.port)),
        ..node_config(dir, ids.clone())
    };

    let phone_dir = tempfile::tempdir().unwrap();
    let phone = Phone::open(over(Some(phone_dir.path()), &phone_ids)).unwrap();
    phone.create_account().unwrap();
    let car = HeadUnit::open(over(None, &car_ids)).unwrap();
    let grant: EnrollmentGrant = phone
        .enroll_device(&car.enrollment_request().unwrap())
        .unwrap();
    car.complete_enrollment(&grant).unwrap();
    let phone_credentials = stored_credentials(phone_dir.path());
    car.start().await.unwrap();

    // Everything a member does, from afar.
    let link = phone.connect_via_relay().await.unwrap();
    assert!(link.via_relay());
    assert!(!link.get(Vec::new()).await.unwrap().is_empty());
    let mut sub = link
        .subscribe(vec![signals::DOOR_IS_LOCKED[0].to_string()])
        .await
        .unwrap();
    sub.next().await.unwrap().unwrap();
    link.command(control::lock(), &random::<16>())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    sub.cancel();

    // A co-user at the grant's rendezvous.
    let co_dir = tempfile::tempdir().unwrap();
    let co_user = Phone::open(over(Some(co_dir.path()), &co_ids)).unwrap();
    co_user.create_account().unwrap();
    let co_credentials = stored_credentials(co_dir.path());
    let issued = phone
        .share(
            &link,
            co_user.authority_public_key().unwrap(),
            &tether_node::ShareOptions {
                permissions: vec![tether_node::SharePermission::VehicleStatus],
                devices: Vec::new(),
                valid_for_s: 3600,
                nickname: format!("Owner {run}"),
            },
        )
        .await
        .unwrap();
    co_user.accept_invite(&issued.invite).unwrap();
    let co_link = co_user
        .connect_shared_via_relay(issued.grant_id)
        .await
        .unwrap();
    co_link.get(vec![signals::RANGE.into()]).await.unwrap();
    co_link.close();
    link.close();

    // A stranger's account: it cannot even name the car's rendezvous, and
    // its own (of its account's key) has nobody.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = Phone::open(over(Some(stranger_dir.path()), &stranger_ids)).unwrap();
    stranger.create_account().unwrap();
    let stranger_credentials = stored_credentials(stranger_dir.path());
    assert!(
        tokio::time::timeout(Duration::from_secs(2), stranger.connect_via_relay())
            .await
            .map_or(true, |r| r.is_err())
    );

    tokio::time::sleep(SETTLE).await;
    car.shutdown().await.unwrap();
    tokio::time::sleep(SETTLE).await;
    let streams = tap.stop();

    let group_key = tether_identity::GroupKey::from_bytes(&grant.group_key).unwrap();
    let relay_key = group_key.relay_key();
    let mut identifiers = Vec::new();
    for (who, ids) in [
        ("car", &car_ids),
        ("phone", &phone_ids),
        ("co_user", &co_ids),
        ("stranger", &stranger_ids),
    ] {
        identifiers.extend(planted(who, ids));
    }
    identifiers.push(Identifier::text("nickname", &format!("Owner {run}")));
    let car_certificate = grant.certificate.clone().unwrap();
    identifiers.extend(member("car", &car.public_key().unwrap(), &car_certificate));
    for (who, c) in [
        ("phone", &phone_credentials),
        ("co_user", &co_credentials),
        ("stranger", &stranger_credentials),
    ] {
        identifiers.extend(member(
            who,
            &c.certificate().public_key,
            c.certificate_message(),
        ));
        identifiers.extend(account(
            &format!("{who}_account"),
            c.authority_public_key(),
            c.group_key().expect("phones hold a group key").as_bytes(),
        ));
    }
    identifiers.push(Identifier::binary("owner.relay_key", &relay_key));
    identifiers.push(Identifier::binary(
        "owner.hub_relay_key",
        &group_key.hub_relay_key(),
    ));
    identifiers.push(Identifier::binary("grant.id", &issued.grant_id));
    let (patterns, dropped) = taint::patterns(&identifiers);

    let corpus: Vec<Capture> = streams
        .iter()
        .map(|(id, way, bytes)| Capture {
            label: format!("MQTT connection #{id} {way}"),
            bytes: bytes.clone(),
        })
        .collect();
    let connections = streams
        .iter()
        .map(|(id, ..)| *id)
        .max()
        .map_or(0, |m| m + 1);
    let corpus_bytes: usize = corpus.iter().map(|c| c.bytes.len()).sum();
    assert!(
        connections >= 4,
        "car, phone, co-user and stranger each connect"
    );
    assert!(
        corpus_bytes > 10_000,
        "sessions crossed the tap: {corpus_bytes} bytes"
    );

    // The capture provably holds the car's rendezvous topic of this window
    // (the search finds what is there); the next window's is another string.
    let prefix = tether_relay::TopicPrefix::default();
    let now = tether_node::unix_now();
    let rendezvous = tether_relay::Rendezvous::new(&relay_key);
    let window = tether_relay::window_at(now);
    let this_window = rendezvous.id(window).topic(&prefix);
    let next_window = rendezvous.id(window + 1).topic(&prefix);
    assert_ne!(this_window, next_window);
    assert_ne!(
        this_window[prefix.as_str().len()..],
        next_window[prefix.as_str().len()..]
    );
    let control = taint::patterns(&[Identifier::text("control.topic", &this_window)]).0;
    assert!(
        !taint::search(&control, &corpus).is_empty(),
        "the capture does not hold the car's topic"
    );

    let findings = taint::search(&patterns, &corpus);
    println!(
        "broker taint: {connections} MQTT connections, {corpus_bytes} bytes; {} identifiers, \
         {} patterns ({dropped} forms skipped); {} findings",
        identifiers.len(),
        patterns.len(),
        findings.len()
    );
    assert!(
        findings.is_empty(),
        "identifiers crossed the broker (R2, R4):\n{}",
        findings
            .iter()
            .map(|f| format!(
                "  {} as {} in {} at byte {}",
                f.identifier, f.form, f.capture, f.offset
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn raw(bytes: &[u8]) -> Capture {
    Capture {
        label: "probe".into(),
        bytes: bytes.to_vec(),
    }
}

/// RFC 9001 appendix A.2: the client Initial for DCID 0x8394c8f03e515708.
const RFC9001_CLIENT_INITIAL: &str = "
    c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11
    d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399
    1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c
    8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212
    30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5
    457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208
    4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec
    4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3
    485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db
    059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c
    7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8
    9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556
    be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74
    68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a
    c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00
    f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632
    291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964
    25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd
    14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff
    ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198
    e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd
    c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73
    203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f
    cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e
    fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade
    a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047
    90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2
    162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4
    40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0
    6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e
    8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0
    be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400
    54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab
    760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9
    f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4
    056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064
    7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241
    e221af44860018ab0856972e194cd934";

/// RFC 9001 appendix A.2: the unprotected header and the CRYPTO frame that
/// starts the payload (917 bytes of PADDING follow).
const RFC9001_CLIENT_HEADER: &str = "c300000001088394c8f03e5157080000449e00000002";
const RFC9001_CLIENT_CRYPTO_FRAME: &str = "
    060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868
    04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578
    616d706c652e636f6dff01000100000a00080006001d00170018001000070005
    04616c706e000500050100000000003300260024001d00209370b2c9caa47fba
    baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400
    0d0010000e0403050306030203080408050806002d00020101001c0002400100
    3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000
    75300901100f088394c8f03e51570806048000ffff";

/// RFC 9001 appendix A.3: the server Initial and its plaintext.
const RFC9001_SERVER_INITIAL: &str = "
    cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a
    5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3
    dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84
    022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4
    2158407dd074ee";
const RFC9001_SERVER_HEADER: &str = "c1000000010008f067a5502a4262b50040750001";
const RFC9001_SERVER_PAYLOAD: &str = "
    02000000000600405a020000560303eefce7f7b37ba1d1632e96677825ddf739
    88cfc79825df566dc5430b9a045a1200130100002e00330024001d00209d3c94
    0d89690b84d08a60993c144eca684d1081287c834d5311bcf32bb9da1a002b00
    020304";

#[test]
fn quic_initial_decryption_matches_rfc9001_appendix_a() {
    let dcid = unhex("8394c8f03e515708");
    // A.1: keys.
    let client = InitialKeys::derive(&dcid, Side::Client);
    assert_eq!(
        client.secret.to_vec(),
        unhex("c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea")
    );
    assert_eq!(
        client.key.to_vec(),
        unhex("1f369613dd76d5467730efcbe3b1a22d")
    );
    assert_eq!(client.iv.to_vec(), unhex("fa044b2f42a3fd3b46fb255c"));
    assert_eq!(
        client.hp.to_vec(),
        unhex("9f50449e04a0e810283a1e9933adedd2")
    );
    let server = InitialKeys::derive(&dcid, Side::Server);
    assert_eq!(
        server.secret.to_vec(),
        unhex("3c199828fd139efd216c155ad844cc81fb82fa8d7446fa7d78be803acdda951b")
    );
    assert_eq!(
        server.key.to_vec(),
        unhex("cf3a5331653c364c88f0f379b6067e37")
    );
    assert_eq!(server.iv.to_vec(), unhex("0ac1493ca1905853b0bba03e"));
    assert_eq!(
        server.hp.to_vec(),
        unhex("c206b8d9b9f0f37644430b490eeaa314")
    );

    // A.2: the client Initial.
    let datagram = unhex(RFC9001_CLIENT_INITIAL);
    assert_eq!(datagram.len(), 1200);
    let packets = quic_initial::split_datagram(&datagram).unwrap();
    assert_eq!(packets.len(), 1);
    let packet = &packets[0];
    assert_eq!(packet.packet_type, quic_initial::INITIAL);
    assert_eq!(packet.version, quic_initial::VERSION_1);
    assert_eq!(packet.dcid, &dcid[..]);
    assert!(packet.scid.is_empty());
    let opened = quic_initial::open(packet, &client, None).unwrap();
    assert_eq!(opened.header, unhex(RFC9001_CLIENT_HEADER));
    assert_eq!(opened.packet_number, 2);
    let frame = unhex(RFC9001_CLIENT_CRYPTO_FRAME);
    assert_eq!(opened.payload.len(), frame.len() + 917);
    assert_eq!(opened.payload[..frame.len()], frame[..]);
    assert!(opened.payload[frame.len()..].iter().all(|b| *b == 0));
    // The ClientHello inside: SNI example.com, ALPN "alpn".
    let frames = quic_initial::crypto_frames(&opened.payload).unwrap();
    assert_eq!(frames.len(), 1);
    let mut stream = CryptoStream::default();
    stream.insert(frames[0].0, frames[0].1);
    let stream = stream.contiguous();
    let messages = quic_initial::handshake_messages(&stream);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, quic_initial::CLIENT_HELLO);
    let hello = quic_initial::parse_client_hello(messages[0].1).unwrap();
    assert_eq!(hello.server_name.as_deref(), Some("example.com"));
    assert_eq!(hello.alpn, vec![b"alpn".to_vec()]);
    // A wrong key must not "decrypt".
    assert!(quic_initial::open(packet, &server, None).is_err());

    // A.3: the server Initial, keyed by the client's original DCID.
    let datagram = unhex(RFC9001_SERVER_INITIAL);
    let packets = quic_initial::split_datagram(&datagram).unwrap();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].scid, &unhex("f067a5502a4262b5")[..]);
    let opened = quic_initial::open(&packets[0], &server, None).unwrap();
    assert_eq!(opened.header, unhex(RFC9001_SERVER_HEADER));
    assert_eq!(opened.packet_number, 1);
    assert_eq!(opened.payload, unhex(RFC9001_SERVER_PAYLOAD));
    let frames = quic_initial::crypto_frames(&opened.payload).unwrap();
    let messages = quic_initial::handshake_messages(frames[0].1);
    assert_eq!(messages[0].0, quic_initial::SERVER_HELLO);
}

#[test]
fn base64_and_hex_match_rfc4648() {
    // RFC 4648 §10 (complete groups) and the two alphabets' last symbols.
    assert_eq!(base64_groups(b"foobar", false), b"Zm9vYmFy");
    assert_eq!(base64_groups(b"fooba", false), b"Zm9v");
    assert_eq!(base64_groups(&[0xfb, 0xff, 0xbf], false), b"+/+/");
    assert_eq!(base64_groups(&[0xfb, 0xff, 0xbf], true), b"-_-_");
    assert_eq!(hex(&[0x00, 0xab, 0x9f], false), b"00ab9f");
    assert_eq!(hex(&[0x00, 0xab, 0x9f], true), b"00AB9F");
    assert_eq!(unhex("00AB9f"), vec![0x00, 0xab, 0x9f]);
}

/// The search must find an identifier however it is embedded: in each
/// encoding, at each of the three base64 alignments, re-cased, hashed.
#[test]
fn taint_search_finds_every_encoding_at_every_alignment() {
    let text = "LTETHER00DEADBEEF";
    let binary: Vec<u8> = (0..32u8).map(|i| 0xf8 | (i % 8)).collect(); // many '+' and '/'
    let probes = [
        Identifier::text("text", text),
        Identifier::binary("binary", &binary),
    ];
    let (patterns, _) = taint::patterns(&probes);
    for probe in &probes {
        let digest = ring::digest::digest(&ring::digest::SHA256, &probe.bytes);
        let mut embedded = vec![
            probe.bytes.clone(),
            probe.bytes.to_ascii_lowercase(),
            digest.as_ref().to_vec(),
        ];
        if probe.text {
            embedded.push(probe.bytes.to_ascii_uppercase());
        }
        for inner in embedded {
            for prefix in 0..3 {
                let mut stream = vec![b'#'; prefix];
                stream.extend_from_slice(&inner);
                stream.resize(stream.len().div_ceil(3) * 3 + 3, b'#');
                let encodings = [
                    stream.clone(),
                    hex(&stream, false),
                    hex(&stream, true),
                    base64_groups(&stream, false),
                    base64_groups(&stream, true),
                ];
                for (i, encoded) in encodings.iter().enumerate() {
                    let findings = taint::search(&patterns, &[raw(encoded)]);
                    assert!(
                        findings.iter().any(|f| f.identifier == probe.name),
                        "{} (prefix {prefix}, encoding {i}) not found",
                        probe.name
                    );
                }
            }
        }
    }
    // And nothing in bytes that do not contain it.
    let noise: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    assert!(taint::search(&patterns, &[raw(&noise)]).is_empty());
}
