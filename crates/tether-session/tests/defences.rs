//! The responder's defences before authentication (SPEC §5.7; R16, R31),
//! seen from a raw QUIC peer over loopback: half-open handshakes, held
//! requests, and what a peer may make the responder buffer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;
use common::{member, now};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tether_identity::{AccountAuthority, Credentials, GrantKey, LocalAuthority, Role};
use tether_proto::v1::{Envelope, ErrorCode, Ping, Request, envelope, request};
use tether_session::handshake::{
    ClientHandshake, EXPORTER_LABEL, EXPORTER_LEN, GrantAccess, Grantee, HINT_LEN, HandshakeConfig,
    Hint, HintEntropy,
};
use tether_session::quic::{
    ClientSession, CloseCode, Connector, Listener, ListenerStats, SessionConfig, SessionError,
    StatsHandle,
};

const LOOPBACK: &str = "127.0.0.1:0";
const GRANT_ID: [u8; 16] = [0x47; 16];

/// An owner's car and phone, and a co-user's phone admitted by a grant.
struct World {
    car: Arc<Credentials>,
    owner_phone: Arc<Credentials>,
    co_phone: Arc<Credentials>,
    owner_authority: [u8; 32],
    grant_key: GrantKey,
}

fn world() -> World {
    let mut owner = LocalAuthority::generate().unwrap();
    let mut co_user = LocalAuthority::generate().unwrap();
    World {
        car: member(&mut owner, Role::Vehicle),
        owner_phone: member(&mut owner, Role::Phone),
        co_phone: member(&mut co_user, Role::Phone),
        owner_authority: owner.public_key(),
        grant_key: GrantKey::generate().unwrap(),
    }
}

impl World {
    fn grantee(&self) -> Grantee {
        Grantee {
            grant_id: GRANT_ID,
            admission_key: self.grant_key.admission_key(),
            authority_public_key: *self.co_phone.authority_public_key(),
            not_before: now() - 60,
            not_after: now() + 3600,
        }
    }

    fn access(&self) -> GrantAccess {
        GrantAccess {
            admission_key: self.grant_key.admission_key(),
            owner_authority_public_key: self.owner_authority,
            expect_device: false,
        }
    }

    /// The car's listener, admitting the grant. It answers every request
    /// of an authenticated session with `UNSUPPORTED`.
    fn car(&self, config: SessionConfig) -> (SocketAddr, StatsHandle) {
        let mut listener =
            Listener::bind(LOOPBACK.parse().unwrap(), self.car.clone(), config).unwrap();
        listener.grantees().insert(self.grantee());
        let addr = listener.local_addr().unwrap();
        let stats = listener.stats_handle();
        tokio::spawn(async move {
            while let Some(mut session) = listener.accept().await {
                tokio::spawn(async move {
                    while let Some(request) = session.next_request().await {
                        let mut responder = request.responder;
                        let _ = responder.send_error(ErrorCode::Unsupported, "").await;
                        responder.finish();
                    }
                });
            }
        });
        (addr, stats)
    }
}

fn connector(who: &Arc<Credentials>) -> Connector {
    Connector::new(
        LOOPBACK.parse().unwrap(),
        who.clone(),
        SessionConfig::default(),
    )
    .unwrap()
}

/// Whether a request on `session` reached the car's application.
async fn served(session: &ClientSession) -> bool {
    matches!(
        session.call(ping()).await,
        Err(SessionError::Remote {
            code: ErrorCode::Unsupported,
            ..
        })
    )
}

fn ping() -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request {
            kind: Some(request::Kind::Ping(Ping {
                payload: b"hi".to_vec(),
            })),
        })),
        ..Default::default()
    }
}

/// A co-user's handshake left half-open: its hints (in the TLS
/// ClientHello) prove the grant, the car's sealed `ServerAuth` is read and
/// opened, and no `ClientAuth` ever follows.
async fn half_open_grant_handshake(
    w: &World,
    attacker: &Connector,
    addr: SocketAddr,
) -> Option<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    let mut entropy: HintEntropy = [0; _];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut entropy).unwrap();
    let mut core = ClientHandshake::with_grant(
        w.co_phone.clone(),
        &w.access(),
        entropy,
        &HandshakeConfig::default(),
    );
    let conn = attacker.connect_offering(addr, core.hints()).await.ok()?;
    let mut exporter = [0; EXPORTER_LEN];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .unwrap();
    let pin = tether_session::quic::peer_certificate_pin(&conn)?;
    let mut uni = conn.accept_uni().await.ok()?;
    let mut len = [0; 4];
    uni.read_exact(&mut len).await.ok()?;
    let mut sealed = vec![0; u32::from_be_bytes(len) as usize];
    uni.read_exact(&mut sealed).await.ok()?;
    core.handle_server_auth(&sealed, &pin, &exporter, now())
        .ok()?;
    // The handshake stream, opened and left silent (quinn tells the car of
    // it only with its first byte: it never comes).
    let (send, recv) = conn.open_bi().await.ok()?;
    Some((conn, send, recv))
}

/// 48 random bytes: a stranger's hint, under no key anyone holds.
fn random_hint() -> Hint {
    let mut hint = [0; HINT_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut hint).unwrap();
    hint
}

#[tokio::test]
async fn half_open_handshakes_of_a_co_user_or_a_stranger_cannot_lock_the_owner_out_r16_r31() {
    let w = world();
    let cap = 4;
    let (addr, stats) = w.car(SessionConfig {
        max_unauthenticated: cap,
        // Long enough that no slot frees itself by timing out in the test.
        handshake_timeout: Duration::from_secs(60),
        ..Default::default()
    });
    let attacker = connector(&w.co_phone);

    // Every slot: a co-user's handshake, proven under the grant, half-open.
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(
            half_open_grant_handshake(&w, &attacker, addr)
                .await
                .expect("the car answers a valid grant proof"),
        );
    }
    assert_eq!(stats.get().unauthenticated_now, cap as u64);

    // Then strangers: random hints, QUIC done, a stream open, nothing sent.
    let mut strangers = Vec::new();
    for _ in 0..cap {
        let hints = [random_hint(), random_hint()];
        if let Ok(conn) = attacker.connect_offering(addr, &hints).await {
            let stream = conn.open_bi().await.ok();
            strangers.push((conn, stream));
        }
    }

    // The owner still gets in, and is served.
    let owner = connector(&w.owner_phone);
    let session = owner.connect(addr).await;
    let seen: ListenerStats = stats.get();
    let session = session.unwrap_or_else(|e| panic!("the owner was locked out ({e}): {seen:?}"));
    assert!(served(&session).await);
    let stats = stats.get();
    assert_eq!(stats.rejected_busy, 0, "{stats:?}");
    assert_eq!(stats.authenticated, 1, "{stats:?}");
    assert!(stats.evicted >= cap as u64, "{stats:?}");
    drop((held, strangers));
}

#[tokio::test]
async fn a_non_member_can_make_the_responder_hold_only_a_bounded_amount_before_authentication_r31()
{
    let w = world();
    let config = SessionConfig {
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let bound = config.max_unauthenticated_bytes();
    let (addr, _stats) = w.car(config);
    let conn = connector(&w.co_phone)
        .connect_unauthenticated(addr)
        .await
        .unwrap();

    // The handshake stream stays silent; every stream the car lets us open
    // is filled with frames of the largest size, 1 MiB each.
    let (_hs_send, _hs_recv) = conn.open_bi().await.unwrap();
    let frame = tether_session::encode_frame(&vec![0x55; tether_session::MAX_FRAME_BYTES]);
    for _ in 0..64 {
        let (conn, frame) = (conn.clone(), frame.clone());
        tokio::spawn(async move {
            let Ok((mut send, recv)) = conn.open_bi().await else {
                return;
            };
            for _ in 0..16 {
                if send.write_all(&frame).await.is_err() {
                    break;
                }
            }
            drop(recv);
        });
    }
    // Until the car gives up at the handshake deadline.
    let _ = conn.closed().await;

    // Everything the peer sent, packet overhead and handshake included,
    // stays within the figure of SPEC §5.7 plus an eighth for QUIC framing.
    let sent = conn.stats().udp_tx.bytes;
    eprintln!("sent {sent} bytes before the deadline; bound {bound}");
    assert!(
        sent <= bound + bound / 8 + 16 * 1024,
        "an unauthenticated peer sent {sent} bytes, over the bound of {bound}"
    );
}

/// Opens a QUIC connection, leaves the handshake stream silent and sends
/// one request on the next stream; returns the frame the car answers on it
/// and how the connection ended.
async fn request_held_past_the_deadline(
    who: &Connector,
    addr: SocketAddr,
) -> (Vec<u8>, quinn::ConnectionError) {
    let conn = who.connect_unauthenticated(addr).await.unwrap();
    let (_hs_send, _hs_recv) = conn.open_bi().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&tether_session::encode_frame(&ping().encode_to_vec()))
        .await
        .unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1024).await.unwrap_or_default();
    (reply, conn.closed().await)
}

#[tokio::test]
async fn a_request_held_past_the_handshake_deadline_gets_unauthenticated_r31() {
    let w = world();
    let (addr, stats) = w.car(SessionConfig {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let stranger = connector(&w.co_phone);
    for _ in 0..5 {
        let (reply, closed) = request_held_past_the_deadline(&stranger, addr).await;
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code.into_inner() == CloseCode::HandshakeTimeout as u64),
            "{closed:?}"
        );
        let mut decoder = tether_session::FrameDecoder::new(1024);
        decoder.handle_bytes(&reply);
        let frame = decoder
            .poll_frame()
            .unwrap()
            .expect("SPEC §5.7: the held request is answered before the close");
        let answer = Envelope::decode(frame.as_slice()).unwrap();
        assert!(
            matches!(answer.body, Some(envelope::Body::Error(ref e))
                if e.code == ErrorCode::Unauthenticated as i32),
            "{answer:?}"
        );
    }
    assert_eq!(stats.get().timed_out, 5);
}

#[tokio::test]
async fn a_rotated_certificate_cannot_link_two_connections_and_sessions_survive_r2() {
    let w = world();
    let mut listener = Listener::bind(
        LOOPBACK.parse().unwrap(),
        w.car.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let rotator = listener.certificate_rotator();
    tokio::spawn(async move {
        while let Some(mut session) = listener.accept().await {
            tokio::spawn(async move {
                while let Some(request) = session.next_request().await {
                    let mut responder = request.responder;
                    let _ = responder.send_error(ErrorCode::Unsupported, "").await;
                    responder.finish();
                }
            });
        }
    });
    let stranger = connector(&w.co_phone);
    let pin = |conn: quinn::Connection| tether_session::quic::peer_certificate_pin(&conn).unwrap();
    let first = pin(stranger.connect_unauthenticated(addr).await.unwrap());
    let again = pin(stranger.connect_unauthenticated(addr).await.unwrap());
    assert_eq!(first, again, "one certificate between rotations");

    let owner = connector(&w.owner_phone);
    let before = owner.connect(addr).await.unwrap();
    assert!(served(&before).await);
    assert!(owner.has_ticket(addr));

    rotator.rotate().unwrap();
    let after = pin(stranger.connect_unauthenticated(addr).await.unwrap());
    assert_ne!(first, after, "R2: a new TLS key after the rotation");

    // The open session keeps working. The owner's next connection tries
    // early data with its TLS ticket (SPEC §5.8); the rotated car no longer
    // knows that ticket and refuses it, and the Tether ticket pinned to the
    // old certificate is not used either: the session authenticates again
    // with a full handshake on the same connection.
    assert!(served(&before).await);
    let resumed = owner.connect(addr).await.unwrap();
    assert!(served(&resumed).await);
    assert!(!resumed.is_early(), "the TLS handshake completed");
    // Its new tickets are for the new certificate: the next one resumes
    // in early data again.
    for _ in 0..200 {
        if owner.has_ticket(addr) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let next = owner.connect(addr).await.unwrap();
    assert!(next.peer().resumed);
    assert_eq!(next.round_trips(), 0, "early data again");
    assert!(served(&next).await);
}
