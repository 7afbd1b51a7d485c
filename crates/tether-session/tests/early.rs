//! Resumption in TLS 0-RTT early data over real loopback QUIC (SPEC §5.8):
//! reads go at once and are answered after the first round trip; commands
//! are never accepted as early data.

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
    Envelope, ErrorCode, Ping, Pong, Request, Response, VehicleCommand, envelope, request, response,
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

fn command() -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request {
            kind: Some(request::Kind::Command(VehicleCommand::default())),
        })),
        ..Default::default()
    }
}

/// A responder that counts what reaches the application: pings get a pong,
/// anything else is counted as executed and answered `UNSUPPORTED`.
struct Car {
    addr: SocketAddr,
    pings: Arc<AtomicUsize>,
    executed: Arc<AtomicUsize>,
    rotator: tether_session::quic::CertificateRotator,
}

async fn car(creds: Arc<Credentials>) -> Car {
    let mut listener =
        Listener::bind(LOOPBACK.parse().unwrap(), creds, SessionConfig::default()).unwrap();
    let addr = listener.local_addr().unwrap();
    let rotator = listener.certificate_rotator();
    let pings = Arc::new(AtomicUsize::new(0));
    let executed = Arc::new(AtomicUsize::new(0));
    let (p, e) = (pings.clone(), executed.clone());
    tokio::spawn(async move {
        while let Some(mut session) = listener.accept().await {
            let (p, e) = (p.clone(), e.clone());
            tokio::spawn(async move {
                while let Some(req) = session.next_request().await {
                    let mut responder = req.responder;
                    match req.envelope.body {
                        Some(envelope::Body::Request(Request {
                            kind: Some(request::Kind::Ping(ping)),
                        })) => {
                            p.fetch_add(1, Ordering::SeqCst);
                            let pong = Envelope {
                                body: Some(envelope::Body::Response(Response {
                                    kind: Some(response::Kind::Pong(Pong {
                                        payload: ping.payload,
                                    })),
                                })),
                                ..Default::default()
                            };
                            let _ = responder.send(&pong).await;
                        }
                        _ => {
                            e.fetch_add(1, Ordering::SeqCst);
                            let _ = responder
                                .send_error(ErrorCode::Unsupported, "counted")
                                .await;
                        }
                    }
                    responder.finish();
                }
            });
        }
    });
    Car {
        addr,
        pings,
        executed,
        rotator,
    }
}

/// A connector that has met the car once and holds both tickets.
async fn warmed(phone: &Arc<Credentials>, addr: SocketAddr) -> Connector {
    let connector = Connector::new(
        LOOPBACK.parse().unwrap(),
        phone.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let first = connector.connect(addr).await.unwrap();
    assert_eq!(first.round_trips(), 1, "cold: one round trip (SPEC §5.6)");
    first.call(ping(b"first")).await.unwrap();
    for _ in 0..200 {
        if connector.has_ticket(addr) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(connector.has_ticket(addr), "no Tether ticket arrived");
    // The TLS ticket comes right after the TLS handshake, long before.
    first.close(CloseCode::Normal, "done");
    connector
}

fn setup() -> (Arc<Credentials>, Arc<Credentials>) {
    let mut authority = LocalAuthority::generate().unwrap();
    (
        member(&mut authority, Role::Vehicle),
        member(&mut authority, Role::Phone),
    )
}

async fn early_session(connector: &Connector, addr: SocketAddr) -> ClientSession {
    let session = connector.connect(addr).await.unwrap();
    assert!(session.peer().resumed);
    assert_eq!(session.round_trips(), 0, "the first request leaves at once");
    session
}

#[tokio::test]
async fn a_resumed_read_travels_as_early_data_and_is_answered() {
    let (car_creds, phone) = setup();
    let car = car(car_creds).await;
    let connector = warmed(&phone, car.addr).await;
    let session = early_session(&connector, car.addr).await;
    let mut stream = session.request(ping(b"early")).await.unwrap();
    let answer = stream.next().await.unwrap().unwrap();
    assert!(stream.was_early(), "the read went as 0-RTT data");
    match answer.body {
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::Pong(p)),
        })) => assert_eq!(p.payload, b"early"),
        other => panic!("not a pong: {other:?}"),
    }
    // Tickets are single use: each early session leaves a new one behind.
    for _ in 0..200 {
        if connector.has_ticket(car.addr) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(connector.has_ticket(car.addr), "no ticket after resuming");
    session.close(CloseCode::Normal, "done");
    let again = early_session(&connector, car.addr).await;
    again.call(ping(b"again")).await.unwrap();
    assert_eq!(car.pings.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_command_on_an_early_session_waits_for_the_handshake_and_runs_once() {
    let (car_creds, phone) = setup();
    let car = car(car_creds).await;
    let connector = warmed(&phone, car.addr).await;
    let session = early_session(&connector, car.addr).await;
    let mut stream = session.request(command()).await.unwrap();
    assert!(
        !stream.was_early(),
        "a command is never sent as early data (SPEC §5.8)"
    );
    let err = stream.next().await.unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Remote {
                code: ErrorCode::Unsupported,
                ..
            }
        ),
        "reached the application: {err:?}"
    );
    assert_eq!(car.executed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn r23_a_command_sent_as_early_data_is_refused_and_not_executed() {
    let (car_creds, phone) = setup();
    let car = car(car_creds).await;
    let connector = warmed(&phone, car.addr).await;
    // Bypass the initiator's own rule, as a hostile or buggy client would;
    // retry in the rare case the handshake completed before the stream
    // opened (then it is not early data, and not what this test is about).
    let mut refused = None;
    for _ in 0..20 {
        let session = early_session(&connector, car.addr).await;
        let mut stream = session
            .request_unchecked(&command().encode_to_vec())
            .await
            .unwrap();
        let result = stream.next().await;
        if stream.was_early() {
            refused = Some(result);
            break;
        }
        session.close(CloseCode::Normal, "retry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = refused.expect("no stream opened as early data in 20 tries");
    assert!(
        matches!(
            result,
            Err(SessionError::Remote {
                code: ErrorCode::TooEarly,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        car.executed.load(Ordering::SeqCst),
        0,
        "nothing sent as early data was executed"
    );
}

#[tokio::test]
async fn early_data_the_car_refuses_is_sent_again_after_a_full_handshake() {
    let (car_creds, phone) = setup();
    let car = car(car_creds).await;
    let connector = warmed(&phone, car.addr).await;
    // A new TLS certificate (a token rotation, SPEC §4.5) comes with a new
    // TLS ticket store: the car no longer knows the phone's TLS ticket and
    // refuses its early data; the phone's Tether ticket is pinned to the
    // old certificate, so the session falls back to the full handshake on
    // the same connection, and the read goes again.
    car.rotator.rotate().unwrap();
    let session = early_session(&connector, car.addr).await;
    let answer = session.call(ping(b"again")).await.unwrap();
    match answer.body {
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::Pong(p)),
        })) => assert_eq!(p.payload, b"again"),
        other => panic!("not a pong: {other:?}"),
    }
    assert!(!session.is_early());
    // It says how it authenticated in the end: a full handshake.
    assert!(!session.peer().resumed);
    // A command on it runs normally.
    let err = session.call(command()).await.unwrap_err();
    assert!(matches!(
        err,
        SessionError::Remote {
            code: ErrorCode::Unsupported,
            ..
        }
    ));
    assert_eq!(car.executed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stream_opened_in_refused_early_data_is_opened_again_after_the_handshake() {
    let (car_creds, phone) = setup();
    let car = car(car_creds).await;
    let connector = warmed(&phone, car.addr).await;
    car.rotator.rotate().unwrap();
    let session = early_session(&connector, car.addr).await;
    let mut stream = session.request(ping(b"sub")).await.unwrap();
    // The rotation drops the car's TLS ticket store: the stream went as
    // early data and the car refused it (SPEC §5.8).
    assert!(stream.was_early());
    let err = stream.next().await.unwrap_err();
    assert!(err.is_early_data_rejected(), "{err:?}");
    let mut again = session.request_after_early(ping(b"sub")).await.unwrap();
    assert!(!again.was_early());
    match again.next().await.unwrap().map(|e| e.body) {
        Some(Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::Pong(p)),
        }))) => assert_eq!(p.payload, b"sub"),
        other => panic!("not a pong: {other:?}"),
    }
    assert!(!session.peer().resumed, "the full handshake ran after it");
    // Only the second stream reached the application.
    assert_eq!(car.pings.load(Ordering::SeqCst), 2);
}
