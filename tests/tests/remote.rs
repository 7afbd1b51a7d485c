//! The remote path end to end (SPEC §19.11; R2, R16, R23): a phone that is
//! not on the car's LAN reads, subscribes and locks through a real
//! mosquitto on loopback, over the same Tether session as on the LAN; a
//! co-user reaches the car at its grant's rendezvous and is cut off by
//! revocation; a phone with a broker still prefers the LAN when the car is
//! on it; a command left for a sleeping car runs once when it wakes, not
//! after its deadline, and never twice whatever the broker replays.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

#[path = "../../crates/tether-relay/tests/support/mod.rs"]
mod mosquitto;
mod support;

use std::time::Duration;

use mosquitto::Mosquitto;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tether_control::{client as control, signals};
use tether_node::{
    CommandOutcome, HeadUnit, MailboxAnswer, MailboxReply, NodeConfig, NodeError, Phone,
    RelayConfig, ShareOptions, SharePermission, SignalData, VehicleRoute, Via,
};
use tether_proto::v1::{CommandState, ErrorCode};
use tether_session::quic::{CloseCode, SessionError};

fn over(broker: &Mosquitto) -> NodeConfig {
    NodeConfig {
        relay: Some(RelayConfig::new("127.0.0.1", broker.port())),
        ..NodeConfig::default()
    }
}

/// An owner's phone and an enrolled, started car, both with the broker.
async fn owner_and_car(broker: &Mosquitto) -> (Phone, HeadUnit) {
    let owner = Phone::open(over(broker)).unwrap();
    owner.create_account().unwrap();
    let car = HeadUnit::open(over(broker)).unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    car.start().await.unwrap();
    (owner, car)
}

/// A co-user with its own account, holding a grant of `permission` that
/// the owner issued over a relay session; that session, and the grant.
async fn co_user_over_relay(
    broker: &Mosquitto,
    owner: &Phone,
    permission: SharePermission,
) -> (Phone, tether_node::VehicleLink, tether_node::IssuedShare) {
    let co_user = Phone::open(over(broker)).unwrap();
    co_user.create_account().unwrap();
    let owner_link = owner.connect_via_relay().await.unwrap();
    let issued = owner
        .share(
            &owner_link,
            co_user.authority_public_key().unwrap(),
            &ShareOptions {
                permissions: vec![permission],
                devices: Vec::new(),
                valid_for_s: 3600,
                nickname: "Ana".into(),
            },
        )
        .await
        .unwrap();
    co_user.accept_invite(&issued.invite).unwrap();
    (co_user, owner_link, issued)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_phone_reads_subscribes_and_locks_the_car_through_the_broker() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let link = owner.connect_via_relay().await.unwrap();
    assert!(link.via_relay());
    assert!(
        !link.resumed(),
        "each relay connection is cold (SPEC §19.5)"
    );

    let mut sub = link
        .subscribe(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(first[0].value, SignalData::Bool(false));
    let outcome = link.command(control::lock(), &[7; 16]).await.unwrap();
    assert!(!outcome.receipt.is_empty());
    let pushed = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the subscription delivers through the broker")
        .unwrap()
        .unwrap();
    assert_eq!(pushed[0].value, SignalData::Bool(true));
    let read = link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    assert_eq!(read[0].value, SignalData::Bool(true));
    // A retry over the relay is the same command: run once (SPEC §8.3).
    let again = link.command(control::lock(), &[7; 16]).await.unwrap();
    assert_eq!(again.receipt, outcome.receipt);
    assert_eq!(car.executions().await.unwrap().lock, 1);
    sub.cancel();
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_co_user_works_remotely_and_is_cut_off_by_revocation() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    // The owner shares from afar, too.
    let (co_user, owner_link, issued) =
        co_user_over_relay(&broker, &owner, SharePermission::VehicleStatus).await;
    let co_link = co_user
        .connect_shared_via_relay(issued.grant_id)
        .await
        .unwrap();
    assert!(co_link.via_relay());
    co_link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    // The grant's scope holds over the relay as on the LAN.
    assert!(co_link.command(control::lock(), &[8; 16]).await.is_err());
    assert_eq!(car.executions().await.unwrap().lock, 0);
    // The co-user is not a member: the account's own rendezvous refuses it.
    assert!(co_user.connect_via_relay().await.is_err());

    assert_eq!(
        owner
            .revoke_share(&owner_link, issued.grant_id)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(3), co_link.session().closed())
            .await
            .expect("the co-user's relay session is closed at once"),
        SessionError::Closed {
            code: Some(CloseCode::Revoked),
            ..
        }
    ));
    // And it gets no new session: the car no longer answers at the grant's
    // rendezvous (and would refuse the grant if it did).
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        co_user.connect_shared_via_relay(issued.grant_id),
    )
    .await;
    assert!(
        !matches!(again, Ok(Ok(_))),
        "a revoked co-user got a session"
    );
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_path_prefers_the_lan_and_takes_the_relay_when_the_lan_fails() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    // The car is on the LAN too: the LAN wins.
    let (lan, route) = owner
        .reach_vehicle_via(Via::Auto, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(route, VehicleRoute::Discovered);
    assert!(!lan.via_relay());
    drop(lan);
    // Forced, and when the LAN finds nothing in time: the relay.
    let (relay, route) = owner
        .reach_vehicle_via(Via::Relay, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(route, VehicleRoute::Relay);
    assert!(relay.via_relay());
    relay
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    // A phone that has never seen the car on the LAN (nothing remembered)
    // and gives mDNS no time goes through the broker.
    let away = support::member_phone(&owner, tether_identity::Role::Phone, over(&broker));
    let (link, route) = away
        .reach_vehicle_via(Via::Auto, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(route, VehicleRoute::Relay);
    link.get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    // Without a broker there is no remote path, and the error says so.
    let lan_only =
        support::member_phone(&owner, tether_identity::Role::Phone, NodeConfig::default());
    assert!(matches!(
        lan_only.connect_via_relay().await,
        Err(NodeError::NoRelay)
    ));
    car.shutdown().await.unwrap();
}

/// The account's group key, from a phone's store (the node exposes none).
fn group_key_of(dir: &std::path::Path) -> tether_identity::GroupKey {
    tether_store::Store::open(dir)
        .unwrap()
        .load_identity()
        .unwrap()
        .unwrap()
        .group_key()
        .unwrap()
}

fn executed(reply: Option<MailboxReply>) -> CommandOutcome {
    match reply.expect("the car answered").answer {
        MailboxAnswer::Executed(outcome) => outcome,
        other => panic!("not executed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_a_command_left_for_a_sleeping_car_runs_once_when_it_wakes() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    car.shutdown().await.unwrap(); // the car sleeps
    let posted = owner
        .post_command(control::unlock(), [0x11; 16], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        owner
            .next_mailbox_reply(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none(),
        "nobody answers while the car sleeps"
    );
    car.start().await.unwrap(); // it wakes: the broker delivers the letter
    let reply = owner
        .next_mailbox_reply(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        reply.as_ref().map(|r| r.in_reply_to),
        Some(posted.letter_id)
    );
    let first = executed(reply);
    assert_eq!(first.state, CommandState::Succeeded);
    assert_eq!(car.executions().await.unwrap().unlock, 1);
    // Posted again with the same key (a retry): the same receipt, not run.
    owner
        .post_command(control::unlock(), [0x11; 16], Duration::from_secs(60))
        .await
        .unwrap();
    let again = executed(
        owner
            .next_mailbox_reply(Duration::from_secs(10))
            .await
            .unwrap(),
    );
    assert_eq!(again.receipt, first.receipt);
    assert_eq!(car.executions().await.unwrap().unlock, 1);
    // And over a live session with the same key: the same receipt too.
    let link = owner.connect_via_relay().await.unwrap();
    let live = link.command(control::unlock(), &[0x11; 16]).await.unwrap();
    assert_eq!(live.receipt, first.receipt);
    assert_eq!(car.executions().await.unwrap().unlock, 1);
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_command_whose_deadline_passed_is_refused_and_not_run() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    car.shutdown().await.unwrap();
    let posted = owner
        .post_command(control::lock(), [0x22; 16], Duration::from_millis(200))
        .await
        .unwrap();
    // Past the deadline, but before the broker's Message Expiry (whole
    // seconds, rounded up): the broker still delivers it, and the car
    // refuses it on its own clock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    car.start().await.unwrap();
    let reply = owner
        .next_mailbox_reply(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the car says why it did not run the command");
    assert_eq!(reply.in_reply_to, posted.letter_id);
    assert!(
        matches!(
            reply.answer,
            MailboxAnswer::Refused {
                code: ErrorCode::DeadlineExceeded,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(car.executions().await.unwrap().lock, 0);
    // Values out of range are refused before anything is posted.
    assert!(
        owner
            .post_command(control::lock(), [0x23; 16], Duration::ZERO)
            .await
            .is_err()
    );
    assert!(
        owner
            .post_command(
                control::lock(),
                [0x23; 16],
                tether_node::MAX_LETTER_VALIDITY + Duration::from_secs(1)
            )
            .await
            .is_err()
    );
    car.shutdown().await.unwrap();
}

/// A raw MQTT client on the broker: what an operator who replays, or a
/// stranger who publishes, can do.
async fn raw_client(broker: &Mosquitto, id: &str) -> (AsyncClient, rumqttc::v5::EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.port());
    options.set_max_packet_size(Some(64 * 1024));
    AsyncClient::new(options, 64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_replaying_a_letter_runs_it_once_and_garbage_gets_nothing_r31() {
    let broker = Mosquitto::start();
    let owner_dir = tempfile::tempdir().unwrap();
    let owner = Phone::open(NodeConfig {
        data_dir: Some(owner_dir.path().to_path_buf()),
        ..over(&broker)
    })
    .unwrap();
    owner.create_account().unwrap();
    let car = HeadUnit::open(over(&broker)).unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    car.start().await.unwrap();
    let mailbox = group_key_of(owner_dir.path()).mailbox_key().car_mailbox();
    let topic = tether_relay::TopicId(mailbox).topic(&tether_relay::TopicPrefix::default());

    // The operator records what is posted to the car's mailbox.
    let (spy, mut spy_loop) = raw_client(&broker, "operator-spy").await;
    spy.subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = spy_loop.poll().await.unwrap() {
            break;
        }
    }
    owner
        .post_command(control::lock(), [0x33; 16], Duration::from_secs(60))
        .await
        .unwrap();
    let captured = loop {
        if let Event::Incoming(Packet::Publish(p)) = spy_loop.poll().await.unwrap() {
            break p.payload.to_vec();
        }
    };
    let first = executed(
        owner
            .next_mailbox_reply(Duration::from_secs(10))
            .await
            .unwrap(),
    );
    assert_eq!(car.executions().await.unwrap().lock, 1);

    // Replayed, garbage, and a letter altered in one byte.
    let mut altered = captured.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 1;
    for payload in [captured.clone(), vec![1; 100], altered, captured] {
        spy.publish(topic.clone(), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    // Drive the spy's connection so the publishes leave.
    tokio::spawn(async move { while spy_loop.poll().await.is_ok() {} });
    // Each replay is answered with the same receipt; nothing runs twice;
    // garbage and the altered letter get no answer at all.
    for _ in 0..2 {
        let replayed = executed(
            owner
                .next_mailbox_reply(Duration::from_secs(10))
                .await
                .unwrap(),
        );
        assert_eq!(replayed.receipt, first.receipt);
    }
    assert!(
        owner
            .next_mailbox_reply(Duration::from_millis(800))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(car.executions().await.unwrap().lock, 1);
    // Members are still served.
    let link = owner.connect_via_relay().await.unwrap();
    link.get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    car.shutdown().await.unwrap();
}

/// A removal rotates the group key (SPEC §3.6): the car that learns the new
/// key opens its new mailbox at once, so a letter posted under the new key
/// while it sleeps afterwards is queued for it (SPEC §19.12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_under_a_new_group_key_reaches_a_car_that_slept_after_the_rotation() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let lost = support::member_phone(&owner, tether_identity::Role::Phone, over(&broker));
    owner.remove_device(lost.public_key().unwrap()).unwrap();
    // The owner's next contact hands the list and the new key to the car.
    owner.connect_via_relay().await.unwrap();
    assert_eq!(car.group_key_epoch(), 1);
    car.shutdown().await.unwrap();
    let posted = owner
        .post_command(control::lock(), [0x44; 16], Duration::from_secs(60))
        .await
        .unwrap();
    car.start().await.unwrap();
    let reply = owner
        .next_mailbox_reply(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        reply.as_ref().map(|r| r.in_reply_to),
        Some(posted.letter_id)
    );
    assert_eq!(executed(reply).state, CommandState::Succeeded);
    // The removed phone's letters (sealed under the old key it knows) run
    // nothing: its certificate is on the list.
    assert!(
        lost.post_command(control::unlock(), [0x45; 16], Duration::from_secs(60))
            .await
            .is_ok(),
        "the broker takes anything"
    );
    assert!(
        lost.next_mailbox_reply(Duration::from_secs(2))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(car.executions().await.unwrap().unlock, 0);
    car.shutdown().await.unwrap();
}

/// Waits for the next pushed value of the driver's door lock.
async fn pushed_lock(phone: &Phone) -> bool {
    loop {
        let reply = phone
            .next_mailbox_reply(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("a push arrives");
        if let MailboxAnswer::Signals(values) = reply.answer {
            let value = values
                .iter()
                .find(|r| r.path == signals::DOOR_IS_LOCKED[0])
                .map(|r| r.value.clone());
            match value {
                Some(SignalData::Bool(b)) => return b,
                other => panic!("unexpected push {other:?}"),
            }
        }
    }
}

/// Push (SPEC §19.12): a subscription left in the car's mailbox delivers
/// the first value and each change to the phone's mailbox while the app is
/// not connected, and resumes after the car slept and woke (R23).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_a_push_subscription_delivers_changes_and_survives_the_car_sleeping() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let watch = support::member_phone(&owner, tether_identity::Role::Watch, over(&broker));
    watch
        .push_subscribe(
            vec![signals::DOOR_IS_LOCKED[0].into()],
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert!(!pushed_lock(&watch).await, "the first value");
    // The owner locks over a live session; the watch hears it by push.
    let link = owner.connect_via_relay().await.unwrap();
    link.command(control::lock(), &[0x55; 16]).await.unwrap();
    assert!(pushed_lock(&watch).await, "the change");
    link.close();
    // The car sleeps and wakes: the subscription's letter comes back from
    // the broker, and pushing resumes.
    car.shutdown().await.unwrap();
    car.start().await.unwrap();
    // A fresh simulated vehicle after the restart: unlocked again.
    assert!(!pushed_lock(&watch).await, "pushing resumed after the wake");
    // A command the owner leaves in the mailbox: its receipt reaches the
    // listening watch too, with the change it made.
    let posted = owner
        .post_command(control::lock(), [0x56; 16], Duration::from_secs(60))
        .await
        .unwrap();
    let (mut receipt, mut locked) = (false, false);
    while !(receipt && locked) {
        let reply = watch
            .next_mailbox_reply(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("the watch hears the queued command");
        match reply.answer {
            MailboxAnswer::Executed(outcome) => {
                assert_eq!(reply.in_reply_to, posted.letter_id);
                assert_eq!(outcome.state, CommandState::Succeeded);
                receipt = true;
            }
            MailboxAnswer::Signals(values) => {
                locked |= values.iter().any(|r| r.value == SignalData::Bool(true));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        executed(
            owner
                .next_mailbox_reply(Duration::from_secs(10))
                .await
                .unwrap()
        )
        .state,
        CommandState::Succeeded
    );
    car.shutdown().await.unwrap();
}

/// Push without a subscription (SPEC §19.12): the receipt of a command the
/// owner leaves in the car's mailbox also reaches the account's watch,
/// which the car has heard from once and which left nothing in the mailbox
/// — across the car's sleep, since the car remembers whom it heard. A
/// phone of the account the car never heard from gets nothing (the car
/// holds no list of the enrolled devices).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_a_queued_commands_receipt_reaches_every_member_the_car_has_heard() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let watch = support::member_phone(&owner, tether_identity::Role::Watch, over(&broker));
    let unheard = support::member_phone(&owner, tether_identity::Role::Phone, over(&broker));
    // The watch meets the car once, then only keeps its mailbox.
    let link = watch.connect_via_relay().await.unwrap();
    link.get(vec![signals::RANGE.into()]).await.unwrap();
    link.close();
    for member in [&watch, &unheard] {
        assert!(
            member
                .next_mailbox_reply(Duration::from_millis(200))
                .await
                .unwrap()
                .is_none(),
            "nothing waits yet"
        );
    }
    // The car sleeps and wakes: it still knows the watch.
    car.shutdown().await.unwrap();
    car.start().await.unwrap();
    let posted = owner
        .post_command(control::lock(), [0x57; 16], Duration::from_secs(60))
        .await
        .unwrap();
    let reply = watch
        .next_mailbox_reply(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the watch hears the owner's queued command");
    assert_eq!(reply.in_reply_to, posted.letter_id);
    assert_eq!(executed(Some(reply)).state, CommandState::Succeeded);
    assert_eq!(
        executed(
            owner
                .next_mailbox_reply(Duration::from_secs(10))
                .await
                .unwrap()
        )
        .state,
        CommandState::Succeeded
    );
    assert!(
        unheard
            .next_mailbox_reply(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none(),
        "a member the car never heard from is not written to"
    );
    car.shutdown().await.unwrap();
}

/// A co-user's mailbox (SPEC §19.12; R16, R23): under its grant's own
/// mailbox key it leaves a command for the sleeping car, which runs it once
/// on waking within the grant's scope; what the grant does not cover is
/// refused; the owner's devices do not hear the co-user's commands, nor
/// the co-user the owner's; after revocation the car no longer reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_a_co_user_leaves_commands_in_its_grants_mailbox_until_revoked() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let (co_user, _owner_link, issued) =
        co_user_over_relay(&broker, &owner, SharePermission::VehicleControl).await;
    let grant = issued.grant_id;
    // The car sleeps; the co-user leaves an unlock for it.
    car.shutdown().await.unwrap();
    let posted = co_user
        .post_shared_command(
            grant,
            control::unlock(),
            [0x61; 16],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    car.start().await.unwrap();
    let reply = co_user
        .next_shared_mailbox_reply(grant, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        reply.as_ref().map(|r| r.in_reply_to),
        Some(posted.letter_id)
    );
    let first = executed(reply);
    assert_eq!(first.state, CommandState::Succeeded);
    assert_eq!(car.executions().await.unwrap().unlock, 1);
    // Posted again with the same key: the same receipt, not run again.
    co_user
        .post_shared_command(
            grant,
            control::unlock(),
            [0x61; 16],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let again = executed(
        co_user
            .next_shared_mailbox_reply(grant, Duration::from_secs(10))
            .await
            .unwrap(),
    );
    assert_eq!(again.receipt, first.receipt);
    assert_eq!(car.executions().await.unwrap().unlock, 1);
    // The owner's phone, which the car has heard, is not told of it.
    assert!(
        owner
            .next_mailbox_reply(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none(),
        "a co-user's command reached the owner's mailbox"
    );
    // Reading the car is outside this grant: refused, by name.
    co_user
        .push_subscribe_shared(
            grant,
            vec![signals::DOOR_IS_LOCKED[0].into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    match co_user
        .next_shared_mailbox_reply(grant, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the car answers")
        .answer
    {
        MailboxAnswer::Refused { code, .. } => assert_eq!(code, ErrorCode::PermissionDenied),
        other => panic!("a push outside the grant's scope ran: {other:?}"),
    }
    // Revoked: the car no longer reads the grant's mailbox. (The owner's
    // session ended with the car's sleep.)
    let owner_link = owner.connect_via_relay().await.unwrap();
    owner.revoke_share(&owner_link, grant).await.unwrap();
    co_user
        .post_shared_command(grant, control::lock(), [0x62; 16], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        co_user
            .next_shared_mailbox_reply(grant, Duration::from_millis(1500))
            .await
            .unwrap()
            .is_none(),
        "a revoked co-user's letter was answered"
    );
    assert_eq!(car.executions().await.unwrap().lock, 0);
    car.shutdown().await.unwrap();
}

/// The home hub on the remote path (SPEC §19.11): the owner manages the
/// home's super tasks from anywhere, at the hub relay key's rendezvous
/// (not the car's: looking for one never reaches the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_reaches_the_home_hub_through_the_broker() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let hub = support::enrolled_hub(&owner, over(&broker));
    hub.start(tether_node::Clock::manual(0)).unwrap();
    hub.serve().unwrap();
    assert!(
        owner.connect_hub_via_relay().await.is_err(),
        "the hub does not answer through the broker until asked to"
    );
    hub.serve_relay().await.unwrap();
    let link = owner.connect_hub_via_relay().await.unwrap();
    assert!(link.via_relay());
    assert!(link.tasks().list_tasks().await.unwrap().is_empty());
    // The car is reached at its own rendezvous, the hub at the hub's.
    let car_link = owner.connect_via_relay().await.unwrap();
    assert!(car_link.get(vec![signals::RANGE.into()]).await.is_ok());
    hub.stop_serving();
    car.shutdown().await.unwrap();
}

/// The phone walks out of the Wi-Fi (SPEC §19.11): a subscription moves
/// from the LAN to the relay and keeps delivering; the gap is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_a_subscription_moves_to_the_relay_when_the_phone_leaves_the_lan() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let mut roaming = owner.subscribe_anywhere(
        vec![signals::DOOR_IS_LOCKED[0].into()],
        Duration::from_secs(10),
    );
    let lock_of = |event: tether_node::RoamEvent| match event {
        tether_node::RoamEvent::Values(v) => v
            .iter()
            .find(|r| r.path == signals::DOOR_IS_LOCKED[0])
            .map(|r| r.value.clone()),
        other => panic!("not values: {other:?}"),
    };
    assert_eq!(
        lock_of(roaming.next(&owner).await.unwrap()),
        Some(SignalData::Bool(false))
    );
    assert_ne!(
        roaming.route(),
        Some(VehicleRoute::Relay),
        "on the LAN first"
    );

    owner.set_lan_available(false); // the phone leaves the Wi-Fi
    let moved = roaming.next(&owner).await.unwrap();
    let tether_node::RoamEvent::Moved { route, gap_ms } = moved else {
        panic!("expected a move, got {moved:?}");
    };
    assert_eq!(route, VehicleRoute::Relay);
    println!("subscription moved from the LAN to the relay: {gap_ms} ms without values");
    assert_eq!(
        lock_of(roaming.next(&owner).await.unwrap()),
        Some(SignalData::Bool(false))
    );
    // It keeps delivering: a lock from another session arrives.
    let link = owner.connect_via_relay().await.unwrap();
    link.command(control::lock(), &[0x66; 16]).await.unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(5), roaming.next(&owner))
        .await
        .expect("the change arrives over the relay")
        .unwrap();
    assert_eq!(lock_of(pushed), Some(SignalData::Bool(true)));
    car.shutdown().await.unwrap();
}
