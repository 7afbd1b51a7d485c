//! Firmware-upgrade throughput (R15; SPEC §15.1): one image sent over a
//! Tether session by `tether_node::send_firmware` to an
//! [`OtaTarget`], against the same bytes written to one bare quinn stream,
//! the two alternated in the same run.
//!
//! Both sides run on connections opened before timing starts, on endpoints
//! with the same UDP socket buffers (`raw_config::endpoint`). The Tether
//! side is the whole upgrade: the start, the image as the body of one
//! request with the device's acknowledgements in a window, the device's
//! storing and SHA-256, and the finish. The bare side hands the image to
//! quinn as one shared buffer, as the upgrade hands over its chunks (no
//! copy on either side), after the image's expected SHA-256 (32 bytes, as
//! the manifest carries it to the device). Its receiver does what every
//! verified transfer must (issue 19, item 4): it stores each chunk and
//! hashes it as it arrives (`ring::digest::Context`, straight from the
//! buffer QUIC received it in), then compares the digest with the expected
//! one and answers the image's length, or [`DIGEST_MISMATCH`] if it
//! differs. Like with like: the device's SHA-256 is no longer the only hash
//! in the comparison.

use std::sync::Arc;
use std::time::Duration;

use prost::bytes::Bytes;
use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
use tether_node::{OtaManifest, OtaTarget, send_firmware};
use tether_session::quic::{CloseCode, Connector, Listener, SessionConfig};
use tokio::time::Instant;

use crate::config::tether_first;
use crate::error::BenchError;
use crate::tether::LOOPBACK;
use crate::{BenchConfig, bare};

/// The product model of the benchmark's device.
const MODEL: u16 = 0xbe7c;
/// The vehicle battery level the head unit reports (above the R15 gate).
const BATTERY_PERCENT: u8 = 90;
const MIB: f64 = 1024.0 * 1024.0;
/// The baseline receiver's answer when the image's SHA-256 is not the one
/// announced (no image is this long).
const DIGEST_MISMATCH: u64 = u64::MAX;
/// Length of the SHA-256 that precedes the image on a baseline stream.
const DIGEST_BYTES: usize = 32;

/// Throughput of each transfer, MiB/s, in the order run.
pub(crate) struct OtaThroughput {
    pub(crate) tether_mib_s: Vec<f64>,
    pub(crate) bare_mib_s: Vec<f64>,
}

/// Aborts a server task when the measurement ends, however it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn unix_now() -> u64 {
    tether_node::unix_now()
}

fn member(authority: &mut LocalAuthority, role: Role) -> Result<Arc<Credentials>, BenchError> {
    let key = DeviceKey::generate().map_err(|e| BenchError::setup("device key", e))?;
    let grant = authority
        .enroll(&key.enrollment_request(role, [0x07; 16]), unix_now())
        .map_err(|e| BenchError::setup("enrollment", e))?;
    let credentials = Credentials::from_grant(key, &grant, unix_now())
        .map_err(|e| BenchError::setup("grant", e))?;
    Ok(Arc::new(credentials))
}

fn signed_manifest(vendor: &DeviceKey, image: &[u8], version: String) -> OtaManifest {
    let mut manifest = OtaManifest {
        product_model: u32::from(MODEL),
        version,
        size: image.len() as u64,
        sha256: sha256(image).to_vec(),
        signature: Vec::new(),
    };
    manifest.signature = vendor
        .sign(&tether_ota::manifest_signing_input(&manifest))
        .to_vec();
    manifest
}

/// Runs `config.ota_transfers` upgrades and as many bare transfers of an
/// image of `config.ota_image_bytes`, alternating which goes first.
pub(crate) async fn measure_ota(
    config: &BenchConfig,
    session_config: &SessionConfig,
) -> Result<OtaThroughput, BenchError> {
    // A head unit upgrades a hub of its account (a responder must hold the
    // group key, so a hub stands for the device).
    let mut authority =
        LocalAuthority::generate().map_err(|e| BenchError::setup("account authority", e))?;
    let head_unit = member(&mut authority, Role::Vehicle)?;
    let hub = member(&mut authority, Role::Hub)?;
    let vendor = DeviceKey::generate().map_err(|e| BenchError::setup("vendor key", e))?;
    let target = OtaTarget::new(vendor.public_key(), MODEL, "0");

    let mut listener = Listener::bind(LOOPBACK, hub, session_config.clone())?;
    let addr = listener.local_addr()?;
    let served = target.clone();
    let _device = AbortOnDrop(
        tokio::spawn(async move {
            while let Some(session) = listener.accept().await {
                let target = served.clone();
                tokio::spawn(async move { target.serve(session).await });
            }
        })
        .abort_handle(),
    );
    let bare_server = bare::server(session_config)?;
    let bare_addr = bare_server
        .local_addr()
        .map_err(|e| BenchError::setup("baseline socket", e))?;
    let _sink = AbortOnDrop(tokio::spawn(serve_sink(bare_server)).abort_handle());

    let connector = Connector::new(LOOPBACK, head_unit, session_config.clone())?;
    let session = connector.connect(addr).await?;
    let bare_client = bare::Client::new(session_config)?;
    let conn = bare_client.connect(bare_addr).await?;

    let image: Vec<u8> = (0..config.ota_image_bytes)
        .map(|i| (i.wrapping_mul(167) % 251) as u8)
        .collect();
    let mut out = OtaThroughput {
        tether_mib_s: Vec::with_capacity(config.ota_transfers),
        bare_mib_s: Vec::with_capacity(config.ota_transfers),
    };
    // One untimed transfer each first: congestion windows open, buffers
    // are allocated.
    for round in 0..=config.ota_transfers {
        let timed = round > 0;
        for tether_turn in [tether_first(round), !tether_first(round)] {
            if tether_turn {
                // A new version each time, or the device would answer that
                // it is installed already.
                let manifest = signed_manifest(&vendor, &image, format!("1.{round}"));
                let input = image.clone();
                let start = Instant::now();
                let report =
                    send_firmware(&session, &manifest, input, BATTERY_PERCENT, |_| {}).await?;
                let elapsed = start.elapsed();
                if report.bytes_sent != image.len() as u64 {
                    return Err(BenchError::Unexpected("the upgrade did not send the image"));
                }
                if timed {
                    out.tether_mib_s.push(mib_per_s(image.len(), elapsed));
                }
            } else {
                // A copy of the image and its digest, made before timing
                // starts as for the upgrade's input and manifest.
                let input = Bytes::from(image.clone());
                let digest = sha256(&image);
                let start = Instant::now();
                bare_transfer(&conn, digest, input).await?;
                let elapsed = start.elapsed();
                if timed {
                    out.bare_mib_s.push(mib_per_s(image.len(), elapsed));
                }
            }
        }
    }
    let installed = target
        .installed()
        .ok_or(BenchError::Unexpected("nothing was installed"))?;
    if installed.image != image {
        return Err(BenchError::Unexpected("the installed image differs"));
    }

    session.close(CloseCode::Normal, "bench done");
    conn.close(0u32.into(), b"bench done");
    Ok(out)
}

fn sha256(image: &[u8]) -> [u8; DIGEST_BYTES] {
    let mut out = [0u8; DIGEST_BYTES];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, image).as_ref());
    out
}

/// The baseline's receiver: on every stream of every connection, reads the
/// expected SHA-256, then stores and hashes what arrives until the end, and
/// answers its length (8 bytes, big endian), or [`DIGEST_MISMATCH`].
async fn serve_sink(server: quinn::Endpoint) {
    while let Some(incoming) = server.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(sink_stream(send, recv));
            }
        });
    }
}

async fn sink_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut expected = Vec::with_capacity(DIGEST_BYTES);
    // Stored as the device stores an image: appended to one buffer, and
    // hashed chunk by chunk from QUIC's own buffers as it arrives.
    let mut image = Vec::new();
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                let mut bytes = &chunk.bytes[..];
                if expected.len() < DIGEST_BYTES {
                    let take = bytes.len().min(DIGEST_BYTES - expected.len());
                    expected.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                }
                hash.update(bytes);
                image.extend_from_slice(bytes);
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let answer = if hash.finish().as_ref() == expected.as_slice() {
        image.len() as u64
    } else {
        DIGEST_MISMATCH
    };
    if send.write_all(&answer.to_be_bytes()).await.is_ok() {
        let _ = send.finish();
    }
}

/// `digest`, then the image, on one new stream, then the receiver's answer.
/// The image is handed to quinn as one shared buffer, without a copy, as
/// `send_firmware` hands over its chunks.
async fn bare_transfer(
    conn: &quinn::Connection,
    digest: [u8; DIGEST_BYTES],
    image: Bytes,
) -> Result<(), BenchError> {
    let len = image.len();
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| BenchError::baseline("open stream", e))?;
    send.write_all(&digest)
        .await
        .map_err(|e| BenchError::baseline("write", e))?;
    send.write_chunk(image)
        .await
        .map_err(|e| BenchError::baseline("write", e))?;
    send.finish()
        .map_err(|e| BenchError::baseline("finish", e))?;
    let answer = recv
        .read_to_end(8)
        .await
        .map_err(|e| BenchError::baseline("read", e))?;
    if answer == DIGEST_MISMATCH.to_be_bytes() {
        return Err(BenchError::Unexpected(
            "the baseline receiver's SHA-256 differs from the image's",
        ));
    }
    if answer != (len as u64).to_be_bytes() {
        return Err(BenchError::Unexpected("the baseline receiver lost bytes"));
    }
    Ok(())
}

fn mib_per_s(bytes: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 / MIB / secs
    } else {
        0.0
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The median of the per-round ratios `tether / bare`: each round's two
/// transfers ran back to back, so drift on a shared machine cancels.
pub(crate) fn median_ratio(tether: &[f64], bare: &[f64]) -> f64 {
    let ratios: Vec<f64> = tether
        .iter()
        .zip(bare)
        .filter(|(_, b)| **b > 0.0)
        .map(|(t, b)| t / b)
        .collect();
    median(&ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bare_receiver_checks_the_sha256_of_what_it_received() {
        let config = SessionConfig::default();
        let server = bare::server(&config).unwrap();
        let addr = server.local_addr().unwrap();
        let _sink = AbortOnDrop(tokio::spawn(serve_sink(server)).abort_handle());
        let client = bare::Client::new(&config).unwrap();
        let conn = client.connect(addr).await.unwrap();
        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

        let right = sha256(&image);
        bare_transfer(&conn, right, Bytes::from(image.clone()))
            .await
            .unwrap();

        let mut wrong = right;
        wrong[31] ^= 1;
        let refused = bare_transfer(&conn, wrong, Bytes::from(image)).await;
        assert!(
            matches!(refused, Err(BenchError::Unexpected(why)) if why.contains("SHA-256")),
            "{refused:?}"
        );
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median_ratio(&[1.0, 2.0, 9.0], &[2.0, 2.0, 10.0]), 0.9);
    }
}
