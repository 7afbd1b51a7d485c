//! Removing a lost device from the account over real loopback mDNS and QUIC
//! (SPEC §3.6; R3, R31): the owner's phone signs a revocation list and
//! rotates the group key; the car refuses the removed phone cold and on
//! resumption and its new token no longer resolves for it; a watch that was
//! offline catches up from the car on its next contact; old and forged lists
//! change nothing; everything survives a restart; the home hub moves its
//! advert to the new key once the owner's phone hands it the list.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod support;

use std::sync::Arc;
use std::time::Duration;

use tether_discovery::{Browser, DiscoveryEvent, Interfaces};
use tether_identity::{AccountAuthority, Credentials, DeviceKey, GroupKey, LocalAuthority, Role};
use tether_node::{Clock, HeadUnit, NodeConfig, Phone, unix_now};
use tether_proto::v1::{Envelope, ErrorCode, MembershipSync, Request, envelope, request, response};
use tether_session::quic::{CloseCode, Connector, Listener, SessionError};

/// The tokens that resolve under `keys` within `window`, each with the
/// index of the key that minted it.
async fn resolved_tokens(keys: Vec<[u8; 32]>, window: Duration) -> Vec<(usize, String)> {
    let mut browser = Browser::start(keys, Interfaces::LoopbackOnly).unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, browser.next()).await {
        if let DiscoveryEvent::Resolved(r) = event
            && !seen.contains(&(r.key_index, r.token.clone()))
        {
            seen.push((r.key_index, r.token));
        }
    }
    browser.shutdown().await.unwrap();
    seen
}

fn sync_request(sync: MembershipSync) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request {
            kind: Some(request::Kind::MembershipSync(sync)),
        })),
        ..Envelope::default()
    }
}

fn sync_answer(reply: Envelope) -> MembershipSync {
    match reply.body {
        Some(envelope::Body::Response(r)) => match r.kind {
            Some(response::Kind::MembershipSync(s)) => s,
            other => panic!("unexpected answer {other:?}"),
        },
        other => panic!("unexpected body {other:?}"),
    }
}

/// The car answered with a typed `BAD_REQUEST`.
fn bad_request(reply: Result<Envelope, SessionError>) -> bool {
    matches!(
        reply,
        Err(SessionError::Remote {
            code: ErrorCode::BadRequest,
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_removed_phone_is_refused_its_session_closed_and_the_new_token_unresolvable() {
    let (owner, car) = support::owner_and_enrolled_car();
    car.start().await.unwrap();
    let address = car.address().await.unwrap();
    let lost = support::member_phone(&owner, Role::Phone, NodeConfig::default());
    let lost_link = lost.connect(address).await.unwrap();
    assert!(lost_link.get(Vec::new()).await.is_ok());
    let devices = owner.account_devices().unwrap();
    assert!(
        devices
            .iter()
            .any(|d| d.public_key == lost.public_key().unwrap())
    );
    assert_eq!(devices.iter().filter(|d| d.this_device).count(), 1);

    let removal = owner.remove_device(lost.public_key().unwrap()).unwrap();
    assert_eq!((removal.serial, removal.group_key_epoch), (1, 1));
    assert!(owner.remove_device(owner.public_key().unwrap()).is_err());
    // The owner's next contact hands the list and the new key to the car.
    let owner_link = owner.connect(address).await.unwrap();
    assert_eq!(car.revocation_serial(), 1);
    assert_eq!(car.group_key_epoch(), 1);
    assert!(owner_link.get(Vec::new()).await.is_ok());
    // At once: the removed phone's live session is closed as revoked.
    assert!(matches!(
        lost_link.session().closed().await,
        SessionError::Closed {
            code: Some(CloseCode::Revoked),
            ..
        }
    ));
    // Cold (and with the ticket it held, which the car's new TLS key voids
    // or the car refuses): no session.
    assert!(lost.connect(address).await.is_err());
    lost.forget_tickets().await.unwrap();
    assert!(lost.connect(address).await.is_err());
    assert!(
        owner
            .account_devices()
            .unwrap()
            .iter()
            .any(|d| d.removed && d.public_key == lost.public_key().unwrap())
    );
    // The car's new-epoch token does not resolve for it (only the grace
    // advert under the old key does, SPEC §3.6), while the owner finds it.
    assert!(car.has_grace_advert().await);
    let token = car.current_token().await.unwrap();
    let found = owner.discover(Duration::from_secs(3)).await.unwrap();
    assert!(found.resolved.iter().any(|v| v.token == token), "{found:?}");
    let seen = lost.discover(Duration::from_secs(3)).await.unwrap();
    assert!(!seen.resolved.iter().any(|v| v.token == token), "{seen:?}");
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_watch_catches_up_from_the_car_and_keeps_working() {
    let (owner, car) = support::owner_and_enrolled_car();
    car.start().await.unwrap();
    let address = car.address().await.unwrap();
    let watch = support::member_phone(&owner, Role::Watch, NodeConfig::default());
    let lost = support::member_phone(&owner, Role::Phone, NodeConfig::default());
    owner.remove_device(lost.public_key().unwrap()).unwrap();
    owner.connect(address).await.unwrap();
    assert_eq!(car.revocation_serial(), 1);
    // The watch was offline: it still holds epoch 0 and no list. It finds
    // the car by the grace advert under the old key, proves the old key,
    // and receives the list and the new key from the car (not the owner).
    assert_eq!(watch.group_key_epoch().unwrap(), 0);
    let found = watch
        .discover_vehicle(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(found.address, address);
    let link = watch.connect(found.address).await.unwrap();
    assert_eq!(watch.revocation_serial().unwrap(), 1);
    assert_eq!(watch.group_key_epoch().unwrap(), 1);
    assert!(link.get(Vec::new()).await.is_ok());
    // From now on it is on the new key: it resolves the car's current
    // token and opens a fresh session with the new proof.
    let token = car.current_token().await.unwrap();
    let report = watch.discover(Duration::from_secs(3)).await.unwrap();
    assert!(
        report.resolved.iter().any(|v| v.token == token),
        "{report:?}"
    );
    watch.forget_tickets().await.unwrap();
    let fresh = watch.connect(address).await.unwrap();
    assert!(fresh.get(Vec::new()).await.is_ok());
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_list_is_ignored_and_a_forged_one_is_refused() {
    let (owner, car) = support::owner_and_enrolled_car();
    car.start().await.unwrap();
    let address = car.address().await.unwrap();
    let first = support::member_phone(&owner, Role::Phone, NodeConfig::default());
    let second = support::member_phone(&owner, Role::Phone, NodeConfig::default());
    owner.remove_device(first.public_key().unwrap()).unwrap();
    owner.connect(address).await.unwrap();
    // A member asking with serial 0 gets the car's list and key.
    let member = support::session_as(&owner, address, Role::Hub).await;
    let held = sync_answer(
        member
            .call(sync_request(MembershipSync::default()))
            .await
            .unwrap(),
    );
    assert_eq!(held.serial, 1);
    let list_1 = held.list.clone().unwrap();
    assert_eq!(held.group_key.len(), 32);
    owner.remove_device(second.public_key().unwrap()).unwrap();
    owner.connect(address).await.unwrap();
    assert_eq!(car.revocation_serial(), 2);
    // The first list again: ignored, not an error.
    let reply = sync_answer(
        member
            .call(sync_request(MembershipSync {
                serial: 1,
                list: Some(list_1.clone()),
                group_key: held.group_key.clone(),
            }))
            .await
            .unwrap(),
    );
    assert_eq!(car.revocation_serial(), 2);
    assert_eq!(reply.serial, 2);
    // A list with a serial above the car's, but not signed by the
    // authority: refused with a typed error, nothing changes.
    let mut forged = list_1.clone();
    forged.signature[3] ^= 0x40;
    let refused = member
        .call(sync_request(MembershipSync {
            serial: 9,
            list: Some(forged),
            group_key: vec![0; 32],
        }))
        .await;
    assert!(bad_request(refused), "a forged list");
    let other = LocalAuthority::generate().unwrap();
    let mut other = other;
    let (foreign, key) = other.remove_devices(None, &[[1; 32]], unix_now()).unwrap();
    let refused = member
        .call(sync_request(MembershipSync {
            serial: 1,
            list: Some(foreign),
            group_key: key.as_bytes().to_vec(),
        }))
        .await;
    assert!(bad_request(refused), "another account's list");
    assert_eq!(car.revocation_serial(), 2);
    assert_eq!(car.group_key_epoch(), 2);
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_and_the_new_key_survive_restarts() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = |i: usize| NodeConfig {
        data_dir: Some(dirs[i].path().to_path_buf()),
        ..NodeConfig::default()
    };
    let owner = Phone::open(config(0)).unwrap();
    owner.create_account().unwrap();
    let car = HeadUnit::open(config(1)).unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    car.start().await.unwrap();
    let lost = support::member_phone(&owner, Role::Phone, NodeConfig::default());
    let address = car.address().await.unwrap();
    owner.remove_device(lost.public_key().unwrap()).unwrap();
    owner.connect(address).await.unwrap();
    car.shutdown().await.unwrap();
    drop(car);
    drop(owner);

    let owner = Phone::open(config(0)).unwrap();
    assert_eq!(owner.revocation_serial().unwrap(), 1);
    assert_eq!(owner.group_key_epoch().unwrap(), 1);
    let car = HeadUnit::open(config(1)).unwrap();
    assert_eq!(car.revocation_serial(), 1);
    car.start().await.unwrap();
    let address = car.address().await.unwrap();
    // Still refused after the restart; the owner still gets in on the new
    // key, and the car still advertises the grace token.
    assert!(lost.connect(address).await.is_err());
    assert!(
        owner
            .connect(address)
            .await
            .unwrap()
            .get(Vec::new())
            .await
            .is_ok()
    );
    assert!(car.has_grace_advert().await);
    // A device the restarted authority enrolls gets the new key.
    let late = support::member_phone(&owner, Role::Watch, NodeConfig::default());
    assert_eq!(late.group_key_epoch().unwrap(), 0);
    late.connect(address).await.unwrap();
    assert_eq!(late.revocation_serial().unwrap(), 1);
    car.shutdown().await.unwrap();
}

/// The resumption path over QUIC itself: a ticket issued before the removal
/// resumes nothing once the car holds the list (the car's TLS key is
/// unchanged here, so the ticket's pin matches and the phone resumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_a_ticket_of_a_removed_phone_is_refused_on_resumption() {
    let now = unix_now();
    let mut authority = LocalAuthority::generate().unwrap();
    let enroll = |authority: &mut LocalAuthority, role| {
        let key = DeviceKey::generate().unwrap();
        let grant = authority
            .enroll(&key.enrollment_request(role, [1; 16]), now)
            .unwrap();
        Arc::new(Credentials::from_grant(key, &grant, now).unwrap())
    };
    let car = enroll(&mut authority, Role::Vehicle);
    let lost = enroll(&mut authority, Role::Phone);
    let mut listener = Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        car.clone(),
        Default::default(),
    )
    .unwrap();
    let address = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let mut sessions = Vec::new();
        while let Some(s) = listener.accept().await {
            sessions.push(s);
        }
    });
    let connector = Connector::new(
        "127.0.0.1:0".parse().unwrap(),
        lost.clone(),
        Default::default(),
    )
    .unwrap();
    let first = connector.connect(address).await.unwrap();
    assert!(support::until(|| connector.has_ticket(address)).await);
    first.close(CloseCode::Normal, "done");
    let (list, key) = authority
        .remove_devices(None, &[lost.key().public_key()], now)
        .unwrap();
    car.adopt(&list, Some(key.as_bytes())).unwrap();
    let resumed = connector.connect(address).await.unwrap();
    assert!(resumed.peer().resumed);
    assert!(matches!(
        resumed.closed().await,
        SessionError::Closed {
            code: Some(CloseCode::Refused),
            ..
        }
    ));
    served.abort();
}

/// SPEC §3.6, §18.8: the hub learns the list and the new key when the
/// owner's phone contacts it (found under the previous key, since the hub
/// has not caught up yet), then advertises under the new epoch's hub
/// discovery key with a grace advert under the old one. The owner still
/// finds it; the removed phone, which holds only the old key, resolves the
/// grace token at most, never the new one, and is refused by the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_the_hub_moves_its_advert_to_the_new_key_the_removed_phone_cannot_resolve_it() {
    let owner = support::owner();
    let hub = support::enrolled_hub(&owner, NodeConfig::default());
    hub.start(Clock::manual(0)).unwrap();
    let served = hub.serve().unwrap();
    // The lost phone, enrolled by hand to keep the group key its grant
    // carried (epoch 0).
    let lost = Phone::open(NodeConfig::default()).unwrap();
    let grant = owner
        .enroll_device(&lost.enrollment_request(Role::Phone).unwrap())
        .unwrap();
    lost.complete_enrollment(&grant).unwrap();
    let old_key = GroupKey::from_bytes(&grant.group_key)
        .unwrap()
        .hub_discovery_key();
    let old_token = hub.current_token().await.unwrap();
    assert!(lost.connect_hub(served).await.is_ok());

    owner.remove_device(lost.public_key().unwrap()).unwrap();
    assert_eq!(hub.revocation_serial(), 0);
    // The owner is on the new key, the hub not yet: the owner finds it
    // under the previous key and hands the list over on contact.
    let found = owner.discover_hub(Duration::from_secs(10)).await.unwrap();
    assert_eq!(found.port(), served.port());
    owner.connect_hub(found).await.unwrap().close();
    assert_eq!(hub.revocation_serial(), 1);
    let mut moved = false;
    for _ in 0..150 {
        if hub.has_grace_advert().await {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "the hub keeps advertising under the old key only");
    let new_token = hub.current_token().await.unwrap();
    assert_ne!(new_token, old_token);

    // A device enrolled now receives the new key in its grant: the hub's
    // current token resolves under it, and the owner still finds the hub.
    let late = Phone::open(NodeConfig::default()).unwrap();
    let new_key = GroupKey::from_bytes(
        &owner
            .enroll_device(&late.enrollment_request(Role::Watch).unwrap())
            .unwrap()
            .group_key,
    )
    .unwrap()
    .hub_discovery_key();
    let seen = resolved_tokens(vec![new_key, old_key], Duration::from_secs(3)).await;
    assert!(seen.contains(&(0, new_token.clone())), "{seen:?}");
    assert_eq!(
        owner
            .discover_hub(Duration::from_secs(10))
            .await
            .unwrap()
            .port(),
        served.port()
    );
    // The removed phone's key resolves no token of the new epoch.
    let lost_sees = resolved_tokens(vec![old_key], Duration::from_secs(3)).await;
    assert!(
        !lost_sees.iter().any(|(_, token)| *token == new_token),
        "{lost_sees:?}"
    );
    lost.forget_tickets().await.unwrap();
    assert!(lost.connect_hub(served).await.is_err());
    hub.stop_serving();
}
