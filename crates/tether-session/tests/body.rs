//! Requests with a body (SPEC §6.2) over real loopback QUIC: the request
//! frame, then frames of raw bytes on the same stream, answered while they
//! flow.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;
use common::member;

use std::net::SocketAddr;

use prost::bytes::Bytes;
use tether_identity::{LocalAuthority, Role};
use tether_proto::v1::{
    Envelope, ErrorCode, Ping, Pong, Request, Response, envelope, request, response,
};
use tether_session::FrameError;
use tether_session::quic::{
    ClientSession, Connector, IncomingRequest, Listener, SessionConfig, SessionError,
};
use tokio::sync::mpsc;

const LOOPBACK: &str = "127.0.0.1:0";

fn ping() -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request {
            kind: Some(request::Kind::Ping(Ping::default())),
        })),
        ..Default::default()
    }
}

fn pong(payload: Vec<u8>) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::Pong(Pong { payload })),
        })),
        ..Default::default()
    }
}

fn pong_payload(envelope: &Envelope) -> Vec<u8> {
    match &envelope.body {
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::Pong(p)),
        })) => p.payload.clone(),
        other => panic!("not a pong: {other:?}"),
    }
}

/// A responder of one account that hands every request to the test, and
/// a member session to it (the client's frame limit is `client_limit`),
/// with the connector that holds its endpoint.
async fn pair(client_limit: usize) -> (mpsc::Receiver<IncomingRequest>, ClientSession, Connector) {
    let mut authority = LocalAuthority::generate().unwrap();
    let car = member(&mut authority, Role::Vehicle);
    let phone = member(&mut authority, Role::Phone);
    let mut listener =
        Listener::bind(LOOPBACK.parse().unwrap(), car, SessionConfig::default()).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(mut session) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(request) = session.next_request().await {
                    let _ = tx.send(request).await;
                }
            });
        }
    });
    let config = SessionConfig {
        max_frame_bytes: client_limit,
        ..Default::default()
    };
    let connector = Connector::new(LOOPBACK.parse().unwrap(), phone, config).unwrap();
    let session = connector.connect(addr).await.unwrap();
    (rx, session, connector)
}

#[tokio::test]
async fn a_body_arrives_in_frames_while_answers_flow_back() {
    let (mut requests, session, _connector) = pair(64 * 1024).await;
    let (mut writer, mut answers) = session.request_with_body(ping()).await.unwrap();
    let mut request = requests.recv().await.unwrap();
    assert!(request.envelope.body_follows, "the flag travels");
    let mut body = request.take_body().expect("a body");
    assert!(request.take_body().is_none(), "taken once");
    let mut responder = request.responder;

    let sizes: [u32; 4] = [1, 0, 64 * 1024, 3000];
    for (i, size) in sizes.into_iter().enumerate() {
        let frame: Vec<u8> = (0..size).map(|b| (b % 251) as u8 ^ i as u8).collect();
        writer.send(Bytes::from(frame.clone())).await.unwrap();
        // Read whole, or as the pieces it arrived in: the same bytes.
        let got = if i % 2 == 0 {
            body.next().await.unwrap().unwrap()
        } else {
            let mut parts = Vec::new();
            assert!(body.next_parts(&mut parts).await.unwrap());
            parts.concat()
        };
        assert_eq!(got, frame, "frame {i}");
        // The answer goes out before the body ends.
        responder
            .send(&pong(size.to_be_bytes().to_vec()))
            .await
            .unwrap();
        let answer = answers.next().await.unwrap().unwrap();
        assert_eq!(pong_payload(&answer), size.to_be_bytes());
    }
    writer.finish();
    assert_eq!(body.next().await.unwrap(), None, "the end of the body");
    responder.finish();
    assert!(answers.next().await.unwrap().is_none());
}

#[tokio::test]
async fn a_body_frame_over_the_responders_limit_ends_the_body_and_the_session_survives() {
    // The client may send frames up to 128 KiB; the responder takes 64.
    let (mut requests, session, _connector) = pair(128 * 1024).await;
    let (mut writer, mut answers) = session.request_with_body(ping()).await.unwrap();
    let mut request = requests.recv().await.unwrap();
    let mut body = request.take_body().unwrap();
    writer.send(Bytes::from(vec![1; 100 * 1024])).await.unwrap();
    let err = body.next().await.unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Frame(FrameError::TooLarge {
                announced: 102_400,
                limit: 65_536
            })
        ),
        "{err:?}"
    );
    let mut responder = request.responder;
    responder
        .send_error(ErrorCode::MessageTooLarge, "too large")
        .await
        .unwrap();
    responder.finish();
    let err = answers.next().await.unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Remote {
                code: ErrorCode::MessageTooLarge,
                ..
            }
        ),
        "{err:?}"
    );

    // Another request on the same session is served.
    let mut answers = session.request(ping()).await.unwrap();
    let request = requests.recv().await.unwrap();
    assert!(!request.envelope.body_follows);
    let mut responder = request.responder;
    responder.send(&pong(b"ok".to_vec())).await.unwrap();
    responder.finish();
    assert_eq!(pong_payload(&answers.next().await.unwrap().unwrap()), b"ok");
}

#[tokio::test]
async fn a_writer_refuses_a_frame_over_its_own_limit_and_sends_nothing() {
    let (mut requests, session, _connector) = pair(1024).await;
    let (mut writer, _answers) = session.request_with_body(ping()).await.unwrap();
    let err = writer.send(Bytes::from(vec![0; 1025])).await.unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::MessageTooLarge {
                len: 1025,
                limit: 1024
            }
        ),
        "{err:?}"
    );
    assert_eq!(writer.max_frame_bytes(), 1024);
    writer.send(Bytes::from(vec![9; 1024])).await.unwrap();
    writer.finish();
    let mut request = requests.recv().await.unwrap();
    let mut body = request.take_body().unwrap();
    assert_eq!(body.next().await.unwrap(), Some(vec![9; 1024]));
    assert_eq!(body.next().await.unwrap(), None);
}

#[tokio::test]
async fn a_body_the_responder_does_not_take_is_stopped() {
    let (mut requests, session, _connector) = pair(64 * 1024).await;
    let (mut writer, mut answers) = session.request_with_body(ping()).await.unwrap();
    let request = requests.recv().await.unwrap();
    // Answered without reading the body: dropping the responder stops it.
    let mut responder = request.responder;
    responder.send(&pong(Vec::new())).await.unwrap();
    responder.finish();
    assert!(answers.next().await.unwrap().is_some());
    let mut sent = 0;
    let err = loop {
        match writer.send(Bytes::from(vec![0; 16 * 1024])).await {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "the stream was never stopped");
    };
    assert!(
        matches!(err, SessionError::Write(quinn::WriteError::Stopped(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_body_dropped_unfinished_is_seen_as_abandoned() {
    let (mut requests, session, _connector) = pair(64 * 1024).await;
    let (mut writer, _answers) = session.request_with_body(ping()).await.unwrap();
    writer.send(Bytes::from_static(b"part")).await.unwrap();
    let mut request = requests.recv().await.unwrap();
    let mut body = request.take_body().unwrap();
    assert_eq!(body.next().await.unwrap(), Some(b"part".to_vec()));
    drop(writer);
    let err = body.next().await.unwrap_err();
    assert!(
        matches!(err, SessionError::Read(quinn::ReadError::Reset(_))),
        "{err:?}"
    );
}
