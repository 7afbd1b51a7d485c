//! Real mDNS on IPv4 loopback only: every daemon here is started with
//! `Interfaces::LoopbackOnly`, so nothing leaves the machine.
//!
//! Keys are random per run, so concurrent runs (or other Tether tests on the
//! same host) only ever show up here as unresolvable tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tether_discovery::{
    Advertiser, AdvertiserConfig, Browser, DiscoveryEvent, DiscoveryToken, Interfaces,
    PROTOCOL_VERSION,
};

/// Upper bound for one discovery; registration probing takes about 1 s.
const CAP: Duration = Duration::from_secs(10);

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .expect("system RNG works in tests");
    key
}

/// A port number unlikely to collide between concurrent runs; nothing binds it.
fn random_port() -> u16 {
    let mut raw = [0u8; 2];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("system RNG works in tests");
    20_000 + u16::from_be_bytes(raw) % 20_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_resolves_advertised_port_and_non_member_sees_only_unresolvable_r2() {
    let key_a = random_key();
    let key_b = random_key();
    let port = random_port();
    let advertiser = Advertiser::start(AdvertiserConfig::new(key_a, port)).unwrap();
    let label = advertiser.current_token().label().to_owned();

    let mut member = Browser::start(vec![random_key(), key_a], Interfaces::LoopbackOnly).unwrap();
    let mut stranger = Browser::start(vec![key_b], Interfaces::LoopbackOnly).unwrap();

    let (found, stranger_saw) = tokio::join!(member.find_first(CAP), async {
        // The stranger must see our token, and only as unresolvable.
        tokio::time::timeout(CAP, async {
            loop {
                match stranger.next().await {
                    Some(DiscoveryEvent::Unresolvable { token }) if token == label => return true,
                    Some(DiscoveryEvent::Resolved(r)) => panic!("non-member resolved {r:?}"),
                    Some(_) => continue,
                    None => return false,
                }
            }
        })
        .await
    });

    let found = found.unwrap();
    assert_eq!(found.key_index, 1);
    assert_eq!(found.token, label);
    assert_eq!(found.port, port);
    assert_eq!(found.protocol_version, PROTOCOL_VERSION);
    assert_eq!(found.addresses, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    assert_eq!(stranger_saw, Ok(true), "stranger never saw the token");
    assert!(stranger.unresolvable_seen() >= 1);

    stranger.shutdown().await.unwrap();
    member.shutdown().await.unwrap();
    advertiser.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_now_changes_the_label_and_members_still_resolve_r2() {
    let key = random_key();
    let port = random_port();
    let advertiser = Advertiser::start(AdvertiserConfig::new(key, port)).unwrap();
    let first = advertiser.current_token();

    let mut browser = Browser::start(vec![key], Interfaces::LoopbackOnly).unwrap();
    let resolved = browser.find_first(CAP).await.unwrap();
    assert_eq!(resolved.token, first.label());

    let second = advertiser.rotate_now().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(advertiser.current_token(), second);
    // Nothing links the two labels: different nonces, different tags.
    assert_ne!(second.nonce(), first.nonce());

    // Both happen, in either order: the old token's goodbye and the new
    // token's resolution (after about a second of probing).
    let (resolved_second, lost_first) = tokio::time::timeout(CAP, async {
        let (mut resolved, mut lost) = (None, false);
        while resolved.is_none() || !lost {
            match browser.next().await {
                Some(DiscoveryEvent::Resolved(r)) if r.token == second.label() => {
                    resolved = Some(r)
                }
                Some(DiscoveryEvent::Lost { token, .. }) if token == first.label() => lost = true,
                Some(_) => {}
                None => panic!("browser stopped"),
            }
        }
        (resolved, lost)
    })
    .await
    .expect("new token resolved and old token withdrawn within the cap");
    let resolved_second = resolved_second.unwrap();
    assert_eq!(resolved_second.port, port);
    assert_eq!(resolved_second.key_index, 0);
    assert!(lost_first);

    browser.shutdown().await.unwrap();
    advertiser.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_name_and_txt_carry_nothing_but_token_and_version_r2() {
    // What a passive listener receives, field by field.
    let key = random_key();
    let advertiser = Advertiser::start(AdvertiserConfig::new(key, random_port())).unwrap();
    let token = advertiser.current_token();
    assert!(DiscoveryToken::parse(token.label()).is_ok());

    let daemon = mdns_sd::ServiceDaemon::new().unwrap();
    daemon.disable_interface(mdns_sd::IfKind::All).unwrap();
    daemon
        .enable_interface(mdns_sd::IfKind::LoopbackV4)
        .unwrap();
    let events = daemon.browse(tether_discovery::SERVICE_TYPE).unwrap();
    let service = tokio::time::timeout(CAP, async {
        loop {
            let event = events.recv_async().await.unwrap();
            if let mdns_sd::ServiceEvent::ServiceResolved(s) = event
                && s.fullname.starts_with(token.label())
            {
                return s;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        service.fullname,
        format!("{}.{}", token.label(), tether_discovery::SERVICE_TYPE)
    );
    assert_eq!(service.host, format!("{}.local.", token.label()));
    let txt: Vec<String> = service
        .txt_properties
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(txt, vec!["v=2".to_owned()]);

    let status = daemon.shutdown().unwrap();
    let _ = status.recv_async().await;
    advertiser.shutdown().await.unwrap();
}

#[test]
fn advertiser_outside_a_runtime_is_a_typed_error() {
    let error = Advertiser::start(AdvertiserConfig::new([0; 32], 1)).unwrap_err();
    assert!(matches!(error, tether_discovery::DiscoveryError::NoRuntime));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertiser_rotates_by_itself_when_the_period_elapses_r2() {
    let mut config = AdvertiserConfig::new(random_key(), random_port());
    config.rotation = Duration::from_secs(1);
    let advertiser = Advertiser::start(config).unwrap();
    let first = advertiser.current_token();
    let rotated = tokio::time::timeout(CAP, async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = advertiser.current_token();
            if now != first {
                return now;
            }
        }
    })
    .await
    .unwrap();
    assert_ne!(rotated.label(), first.label());
    advertiser.shutdown().await.unwrap();
}
