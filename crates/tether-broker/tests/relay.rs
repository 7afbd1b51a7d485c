//! The embedded broker carries what the relay needs (SPEC §19.10): a real
//! Tether session over it, and a persistent session's QoS 1 queue for a
//! client that was away (what the mailbox for a sleeping car relies on).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tether_broker::{BrokerError, EmbeddedBroker};
use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
use tether_proto::v1::{Envelope, Ping, Request, Response, envelope, request, response};
use tether_relay::{RelayConfig, RelaySocket};
use tether_session::quic::{Connector, Listener, SessionConfig};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn member(authority: &mut LocalAuthority, role: Role) -> Arc<Credentials> {
    let key = DeviceKey::generate().unwrap();
    let grant = authority
        .enroll(&key.enrollment_request(role, [3; 16]), now())
        .unwrap();
    Arc::new(Credentials::from_grant(key, &grant, now()).unwrap())
}

async fn start() -> EmbeddedBroker {
    EmbeddedBroker::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_embedded_broker_refuses_any_address_but_loopback() {
    let err = EmbeddedBroker::start("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::NotLoopback(_)), "{err}");
    let broker = start().await;
    assert!(broker.addr().ip().is_loopback());
    assert_ne!(broker.addr().port(), 0);
    assert_eq!(broker.url(), format!("mqtt://{}", broker.addr()));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tether_session_runs_through_the_embedded_broker() {
    let broker = start().await;
    let mut authority = LocalAuthority::generate().unwrap();
    let car = member(&mut authority, Role::Vehicle);
    let phone = member(&mut authority, Role::Phone);
    let relay_key = car.group_key().unwrap().relay_key();
    let config = || RelayConfig::new("127.0.0.1", broker.addr().port());

    let car_socket = RelaySocket::connect(config()).await.unwrap();
    car_socket.listen(&[relay_key]).await.unwrap();
    let mut listener =
        Listener::bind_socket(car_socket.clone(), car, SessionConfig::default()).unwrap();
    tokio::spawn(async move {
        while let Some(mut session) = listener.accept().await {
            tokio::spawn(async move {
                while let Some(req) = session.next_request().await {
                    let mut responder = req.responder;
                    if let Some(envelope::Body::Request(Request {
                        kind: Some(request::Kind::Ping(p)),
                    })) = req.envelope.body
                    {
                        let pong = Envelope {
                            body: Some(envelope::Body::Response(Response {
                                kind: Some(response::Kind::Pong(tether_proto::v1::Pong {
                                    payload: p.payload,
                                })),
                            })),
                            ..Default::default()
                        };
                        let _ = responder.send(&pong).await;
                        responder.finish();
                    }
                }
            });
        }
    });

    let phone_socket = RelaySocket::connect(config()).await.unwrap();
    let connector =
        Connector::with_socket(phone_socket.clone(), phone, SessionConfig::default()).unwrap();
    let address = phone_socket.dial(&relay_key).await.unwrap();
    let session = connector.connect(address).await.unwrap();
    for i in 0..20u8 {
        let reply = session
            .call(Envelope {
                body: Some(envelope::Body::Request(Request {
                    kind: Some(request::Kind::Ping(Ping {
                        payload: vec![i; 200],
                    })),
                })),
                ..Default::default()
            })
            .await
            .unwrap();
        match reply.body {
            Some(envelope::Body::Response(Response {
                kind: Some(response::Kind::Pong(p)),
            })) => assert_eq!(p.payload, vec![i; 200]),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(car_socket.stats().received > 0);
    broker.shutdown().await;
}

/// A client that connects with a persistent session (clean start off,
/// session expiry 60 s) and the given id.
fn persistent(broker: &EmbeddedBroker, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.addr().port());
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(60));
    AsyncClient::new(options, 64)
}

async fn next_publish(eventloop: &mut EventLoop) -> Vec<u8> {
    loop {
        if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await.unwrap() {
            return p.payload.to_vec();
        }
    }
}

async fn until_suback(eventloop: &mut EventLoop) {
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_gets_the_qos1_messages_sent_while_it_was_away() {
    let broker = start().await;
    let (sleeper, mut sleeper_loop) = persistent(&broker, "sleeper0123456789");
    sleeper
        .subscribe("tether/1/m/test", QoS::AtLeastOnce)
        .await
        .unwrap();
    until_suback(&mut sleeper_loop).await;
    sleeper.disconnect().await.unwrap();
    while sleeper_loop.poll().await.is_ok() {}
    drop(sleeper_loop);

    let (sender, mut sender_loop) = AsyncClient::new(
        MqttOptions::new("sender", "127.0.0.1", broker.addr().port()),
        64,
    );
    sender
        .publish(
            "tether/1/m/test",
            QoS::AtLeastOnce,
            false,
            b"queued".to_vec(),
        )
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = sender_loop.poll().await.unwrap() {
            break;
        }
    }

    let (_sleeper, mut sleeper_loop) = persistent(&broker, "sleeper0123456789");
    let got = tokio::time::timeout(Duration::from_secs(5), next_publish(&mut sleeper_loop))
        .await
        .expect("the queued message arrives on reconnect");
    assert_eq!(got, b"queued");
    broker.shutdown().await;
}
