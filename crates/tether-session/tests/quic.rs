//! The QUIC driver over real loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;
use common::member;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message;
use tether_identity::{Credentials, LocalAuthority, Role};
use tether_proto::v1::{
    Envelope, ErrorCode, Ping, Pong, Request, Response, envelope, request, response,
};
use tether_session::quic::{
    ClientSession, CloseCode, Connector, Listener, SessionConfig, SessionError,
};

const LOOPBACK: &str = "127.0.0.1:0";

fn ping(payload: &[u8]) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request {
            kind: Some(request::Kind::Ping(Ping {
                payload: payload.to_vec(),
            })),
        })),
        ..Default::default()
    }
}

fn pong_payload(env: &Envelope) -> Vec<u8> {
    match &env.body {
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::Pong(p)),
        })) => p.payload.clone(),
        other => panic!("not a pong: {other:?}"),
    }
}

/// A responder that answers each Ping with `repeat` Pongs and counts them.
struct EchoServer {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    stats: tether_session::quic::StatsHandle,
}

async fn echo_server(
    creds: Arc<Credentials>,
    config: SessionConfig,
    repeat: usize,
    silent: bool,
) -> EchoServer {
    let listener = Listener::bind(LOOPBACK.parse().unwrap(), creds, config).unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let stats = listener.stats_handle();
    let (mut l, s) = (listener, served.clone());
    tokio::spawn(async move {
        loop {
            let Some(mut session) = l.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                while let Some(req) = session.next_request().await {
                    s.fetch_add(1, Ordering::SeqCst);
                    let mut responder = req.responder;
                    let payload = match req.envelope.body {
                        Some(envelope::Body::Request(Request {
                            kind: Some(request::Kind::Ping(p)),
                        })) => p.payload,
                        _ => {
                            responder
                                .send_error(ErrorCode::Unsupported, "only ping")
                                .await
                                .ok();
                            continue;
                        }
                    };
                    if silent {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            drop(responder);
                        });
                        continue;
                    }
                    tokio::spawn(async move {
                        for _ in 0..repeat {
                            let pong = Envelope {
                                body: Some(envelope::Body::Response(Response {
                                    kind: Some(response::Kind::Pong(Pong {
                                        payload: payload.clone(),
                                    })),
                                })),
                                ..Default::default()
                            };
                            if responder.send(&pong).await.is_err() {
                                return;
                            }
                        }
                        responder.finish();
                    });
                }
            });
        }
    });
    EchoServer {
        addr,
        served,
        stats,
    }
}

struct Setup {
    car: Arc<Credentials>,
    phone: Arc<Credentials>,
}

fn setup() -> Setup {
    let mut authority = LocalAuthority::generate().unwrap();
    Setup {
        car: member(&mut authority, Role::Vehicle),
        phone: member(&mut authority, Role::Phone),
    }
}

async fn connect(phone: &Arc<Credentials>, addr: SocketAddr) -> (Connector, ClientSession) {
    let connector = Connector::new(
        LOOPBACK.parse().unwrap(),
        phone.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let session = connector.connect(addr).await.unwrap();
    (connector, session)
}

#[tokio::test]
async fn members_exchange_requests_over_loopback_quic() {
    let s = setup();
    let server = echo_server(s.car.clone(), SessionConfig::default(), 1, false).await;
    let (_c, session) = connect(&s.phone, server.addr).await;
    assert_eq!(session.peer().certificate.role, Role::Vehicle);
    assert_eq!(
        session.round_trips(),
        1,
        "cold: QUIC's round trip only (SPEC §5.6)"
    );
    let reply = session.call(ping(b"hi")).await.unwrap();
    assert_eq!(pong_payload(&reply), b"hi");
    // Many requests multiplexed at once, each on its own stream.
    let session = Arc::new(session);
    let tasks: Vec<_> = (0..20u8)
        .map(|i| {
            let session = session.clone();
            tokio::spawn(async move { session.call(ping(&[i])).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(pong_payload(&task.await.unwrap().unwrap()), vec![i as u8]);
    }
    assert_eq!(server.served.load(Ordering::SeqCst), 21);
}

#[tokio::test]
async fn second_connection_resumes_in_one_round_trip() {
    let s = setup();
    let server = echo_server(s.car.clone(), SessionConfig::default(), 1, false).await;
    let connector = Connector::new(
        LOOPBACK.parse().unwrap(),
        s.phone.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let first = connector.connect(server.addr).await.unwrap();
    first.call(ping(b"1")).await.unwrap();
    // The ticket arrives in the background.
    for _ in 0..100 {
        if connector.has_ticket(server.addr) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        connector.has_ticket(server.addr),
        "no resumption ticket arrived"
    );
    first.close(CloseCode::Normal, "done");
    let second = connector.connect(server.addr).await.unwrap();
    assert!(second.peer().resumed);
    // SPEC §5.8: with the TLS ticket too, the ResumeHello and a read go as
    // early data, before the TLS handshake is complete.
    assert_eq!(second.round_trips(), 0, "resumed: in 0-RTT");
    // The request pipelined right behind the ResumeHello is served.
    assert_eq!(pong_payload(&second.call(ping(b"2")).await.unwrap()), b"2");
}

#[tokio::test]
async fn r3_other_account_is_refused_over_quic() {
    let s = setup();
    let mut other = LocalAuthority::generate().unwrap();
    let stranger = member(&mut other, Role::Phone);
    let server = echo_server(s.car.clone(), SessionConfig::default(), 1, false).await;
    let connector = Connector::new(
        LOOPBACK.parse().unwrap(),
        stranger,
        SessionConfig::default(),
    )
    .unwrap();
    // R3: the car's sealed ServerAuth does not open under the stranger's
    // keys, so the stranger gives up without having seen a certificate.
    let err = connector.connect(server.addr).await.unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Handshake(tether_session::HandshakeError::NotAMember)
        ),
        "unexpected error {err:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = server.stats.get();
    assert_eq!(stats.authenticated, 0);
    assert_eq!(stats.refused + stats.abandoned, 1, "{stats:?}");
}

#[tokio::test]
async fn a_peer_that_gives_up_mid_handshake_is_counted_as_abandoned_not_refused() {
    let s = setup();
    let server = echo_server(s.car.clone(), SessionConfig::default(), 1, false).await;
    let connector = Connector::new(
        LOOPBACK.parse().unwrap(),
        s.phone.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let conn = connector
        .connect_unauthenticated(server.addr)
        .await
        .unwrap();
    conn.close(0u32.into(), b"changed my mind");
    let mut stats = server.stats.get();
    for _ in 0..100 {
        if stats.abandoned > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = server.stats.get();
    }
    assert_eq!(stats.abandoned, 1, "{stats:?}");
    assert_eq!(stats.refused, 0, "{stats:?}");
    assert_eq!(stats.authenticated, 0, "{stats:?}");
}

#[tokio::test]
async fn oversized_request_is_refused_and_the_session_survives() {
    let s = setup();
    let server = echo_server(s.car.clone(), SessionConfig::default(), 1, false).await;
    let (_c, session) = connect(&s.phone, server.addr).await;
    // Once the responder has authenticated us: before, its receive window
    // is one frame (SPEC §5.7), so an oversized write would block until it
    // could stop the stream.
    assert_eq!(
        pong_payload(&session.call(ping(b"first")).await.unwrap()),
        b"first"
    );
    // Refused locally with a clear error.
    let big = ping(&vec![0; 70 * 1024]);
    assert!(matches!(
        session.call(big.clone()).await,
        Err(SessionError::MessageTooLarge { .. })
    ));
    // Forced onto the wire: the responder refuses that stream only.
    let mut stream = session
        .request_unchecked(&big.encode_to_vec())
        .await
        .unwrap();
    match stream.next().await {
        Err(SessionError::Remote { code, message }) => {
            assert_eq!(code, ErrorCode::MessageTooLarge);
            assert!(message.contains("limit"), "{message}");
        }
        other => panic!("expected MESSAGE_TOO_LARGE, got {other:?}"),
    }
    assert_eq!(
        pong_payload(&session.call(ping(b"still here")).await.unwrap()),
        b"still here"
    );
    assert_eq!(server.served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_undecodable_request_gets_bad_request_and_the_session_survives() {
    let s = setup();
    let server = echo_server(s.car.clone(), SessionConfig::default(), 1, false).await;
    let (_c, session) = connect(&s.phone, server.addr).await;
    // A whole frame that is no envelope: refused on its stream only.
    let mut stream = session.request_unchecked(&[0xff; 9]).await.unwrap();
    match stream.next().await {
        Err(SessionError::Remote { code, .. }) => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("expected BAD_REQUEST, got {other:?}"),
    }
    assert_eq!(
        pong_payload(&session.call(ping(b"after")).await.unwrap()),
        b"after"
    );
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
}

/// Requests that find the application's queue full wait for room: every
/// one is served, none is dropped or refused (backpressure, SPEC §6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_full_queue_wait_and_none_is_lost() {
    let s = setup();
    let config = SessionConfig {
        request_queue: 1,
        ..SessionConfig::default()
    };
    let mut listener = Listener::bind(LOOPBACK.parse().unwrap(), s.car.clone(), config).unwrap();
    let addr = listener.local_addr().unwrap();
    let (open_tx, open_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut session = listener.accept().await.unwrap();
        // The application does not read until told to.
        open_rx.await.unwrap();
        while let Some(request) = session.next_request().await {
            let payload = match request.envelope.body {
                Some(envelope::Body::Request(Request {
                    kind: Some(request::Kind::Ping(p)),
                })) => p.payload,
                other => panic!("not a ping: {other:?}"),
            };
            let mut responder = request.responder;
            let pong = Envelope {
                body: Some(envelope::Body::Response(Response {
                    kind: Some(response::Kind::Pong(Pong { payload })),
                })),
                ..Default::default()
            };
            responder.send(&pong).await.unwrap();
            responder.finish();
        }
    });
    let (_c, session) = connect(&s.phone, addr).await;
    let session = Arc::new(session);
    let calls: Vec<_> = (0..16u8)
        .map(|i| {
            let session = session.clone();
            tokio::spawn(async move { session.call(ping(&[i; 3])).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "nothing is answered while the application does not read"
    );
    open_tx.send(()).unwrap();
    for (i, call) in calls.into_iter().enumerate() {
        let answer = call.await.unwrap().unwrap();
        assert_eq!(pong_payload(&answer), vec![i as u8; 3]);
    }
}

#[tokio::test]
async fn a_stream_used_before_authentication_is_refused() {
    let s = setup();
    let config = SessionConfig {
        handshake_timeout: Duration::from_millis(400),
        ..Default::default()
    };
    let server = echo_server(s.car.clone(), config, 1, false).await;
    let connector = Connector::new(
        LOOPBACK.parse().unwrap(),
        s.phone.clone(),
        SessionConfig::default(),
    )
    .unwrap();

    // 1. A request where the handshake belongs: refused, connection closed.
    let conn = connector
        .connect_unauthenticated(server.addr)
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&tether_session::encode_frame(
        &ping(b"sneak").encode_to_vec(),
    ))
    .await
    .unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1024).await.unwrap_or_default();
    assert!(
        reply.len() < 16,
        "refusal must be tiny, got {} bytes",
        reply.len()
    );
    let closed = conn.closed().await;
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code.into_inner() == CloseCode::Refused as u64),
        "{closed:?}"
    );

    // 2. A request on a second stream while the handshake stream is silent:
    //    never served; the connection is closed at the handshake deadline.
    let conn = connector
        .connect_unauthenticated(server.addr)
        .await
        .unwrap();
    let (mut hs, _hs_recv) = conn.open_bi().await.unwrap();
    hs.write_all(&[]).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&tether_session::encode_frame(
        &ping(b"sneak").encode_to_vec(),
    ))
    .await
    .unwrap();
    send.finish().unwrap();
    let _ = recv.read_to_end(1024).await;
    let closed = conn.closed().await;
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code.into_inner() == CloseCode::HandshakeTimeout as u64),
        "{closed:?}"
    );
    assert_eq!(
        server.served.load(Ordering::SeqCst),
        0,
        "a request was served before authentication"
    );
}

#[tokio::test]
async fn half_open_flood_does_not_starve_a_member() {
    // KDE Connect's CVE-2020-26164: unauthenticated connections are capped
    // and the oldest non-proven one is evicted, so a member still gets in.
    let s = setup();
    let config = SessionConfig {
        max_unauthenticated: 8,
        handshake_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let server = echo_server(s.car.clone(), config, 1, false).await;
    let attacker = Connector::new(
        LOOPBACK.parse().unwrap(),
        s.phone.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..40 {
        if let Ok(conn) = attacker.connect_unauthenticated(server.addr).await {
            // Half-open: QUIC done, a stream kept open, no hello ever sent.
            let stream = conn.open_bi().await.ok();
            held.push((conn, stream));
        }
    }
    // Keep flooding while the member connects.
    let flood = {
        let addr = server.addr;
        tokio::spawn(async move {
            let mut more = Vec::new();
            for _ in 0..40 {
                if let Ok(c) = attacker.connect_unauthenticated(addr).await {
                    more.push(c);
                }
            }
            more
        })
    };
    let (_c, session) = connect(&s.phone, server.addr).await;
    assert_eq!(
        pong_payload(&session.call(ping(b"member")).await.unwrap()),
        b"member"
    );
    let more = flood.await.unwrap();
    let stats = server.stats.get();
    assert!(stats.evicted >= 30, "expected evictions, got {stats:?}");
    assert!(stats.unauthenticated_now <= 8, "{stats:?}");
    assert_eq!(stats.authenticated, 1);
    // Evicted connections are told why.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let told = held
        .iter()
        .map(|(c, _)| c)
        .filter(|c| {
            matches!(c.close_reason(), Some(quinn::ConnectionError::ApplicationClosed(ref a))
                if a.error_code.into_inner() == CloseCode::Evicted as u64)
        })
        .count();
    let reasons: Vec<_> = held
        .iter()
        .map(|(c, _)| format!("{:?}", c.close_reason()))
        .take(5)
        .collect();
    assert!(
        told > 0,
        "no evicted connection saw CloseCode::Evicted: {reasons:?}"
    );
    drop((held, more));
}

#[tokio::test]
async fn deadline_passes_with_a_typed_error() {
    let s = setup();
    let server = echo_server(s.car.clone(), SessionConfig::default(), 1, true).await;
    let (_c, session) = connect(&s.phone, server.addr).await;
    let mut req = ping(b"slow");
    req.deadline_ms = 150;
    assert!(matches!(
        session.call(req).await,
        Err(SessionError::DeadlineExceeded)
    ));
}

#[tokio::test]
async fn a_stream_carries_pushed_responses_until_finished() {
    let s = setup();
    let server = echo_server(s.car.clone(), SessionConfig::default(), 3, false).await;
    let (_c, session) = connect(&s.phone, server.addr).await;
    let mut stream = session.request(ping(b"sub")).await.unwrap();
    for _ in 0..3 {
        assert_eq!(pong_payload(&stream.next().await.unwrap().unwrap()), b"sub");
    }
    assert!(stream.next().await.unwrap().is_none());
}

#[tokio::test]
async fn close_carries_code_and_reason() {
    let s = setup();
    let mut listener = Listener::bind(
        LOOPBACK.parse().unwrap(),
        s.car.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let (_c, session) = connect(&s.phone, addr).await;
    let server_side = listener.accept().await.unwrap();
    assert_eq!(
        server_side.peer().certificate.public_key,
        s.phone.key().public_key()
    );
    server_side.close(CloseCode::Normal, "going to sleep");
    match session.closed().await {
        SessionError::Closed { code, reason } => {
            assert_eq!(code, Some(CloseCode::Normal));
            assert_eq!(reason, "going to sleep");
        }
        other => panic!("unexpected {other:?}"),
    }
}
