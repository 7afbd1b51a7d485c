//! Commissioning end to end over the simulated radio: a lamp advertises as
//! unprovisioned, the head unit scans, connects, pairs with the passcode from
//! the lamp's setup payload and hands it Wi-Fi credentials (R6, R13).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::time::Duration;

use std::time::{SystemTime, UNIX_EPOCH};
use tether_ble::advert::{Advert, FLAG_PAIRING_OPEN};

use tether_ble::commission::{
    CommissionError, CommissionPlan, CommissionStage, CommissionTimeouts, Commissioned, commission,
    commission_peripheral,
};
use tether_ble::radio::{Central, Link, PeripheralId};
use tether_ble::sim::{SimAir, SimConfig};
use tether_ble::sim_device::{SharedLog, SimCommissionee};
use tether_identity::{LocalAuthority, Role};
use tether_pairing::device::CommissioneeEvent;
use tether_pairing::pake::PairingError;
use tether_pairing::provision::{Credentials, Network, Outcome, Security};
use tether_pairing::setup::SetupPayload;

const MTU: u16 = 185;

fn payload() -> SetupPayload {
    SetupPayload {
        version: 0,
        product_model: 0x1a2b,
        discriminator: 3840,
        flags: 1,
        passcode: 20_202_021,
    }
}

fn home() -> Credentials {
    Credentials {
        ssid: b"Home".to_vec(),
        passphrase: b"lamp-friendly-pass".to_vec(),
        security: Security::Wpa2Personal,
        network: Network::Home,
    }
}

fn lamp_on(air: &SimAir, mtu: u16) -> (SharedLog, tether_ble::sim::SimPeripheral) {
    let networks = [(home().ssid, home().passphrase)];
    let (lamp, log) = SimCommissionee::new(payload().passcode, mtu, &networks, 99).unwrap();
    let peripheral = air.add_peripheral(Box::new(lamp));
    let advert = Advert::Unprovisioned {
        product_model: payload().product_model,
        discriminator: payload().discriminator,
        flags: FLAG_PAIRING_OPEN,
    };
    peripheral.set_advert(Some(advert.encode().unwrap()));
    (log, peripheral)
}

/// Scans and returns the peripheral whose advert matches the setup payload.
async fn find_lamp(air: &SimAir) -> PeripheralId {
    let seen = air
        .central()
        .scan(Duration::from_millis(500))
        .await
        .unwrap();
    seen.into_iter()
        .find(|r| {
            matches!(
                r.tether_data().map(Advert::decode),
                Some(Ok(Advert::Unprovisioned { discriminator, product_model, .. }))
                    if discriminator == payload().discriminator
                        && product_model == payload().product_model
            )
        })
        .map(|r| r.id)
        .expect("the lamp is advertising")
}

async fn run(
    air: &SimAir,
    id: &PeripheralId,
    passcode: u32,
    credentials: &Credentials,
    seed: u8,
) -> (Result<Outcome, CommissionError>, Vec<CommissionStage>) {
    let (result, stages) = run_bound(air, id, passcode, credentials, seed).await;
    (result.map(|c| c.outcome), stages)
}

/// One commissioning (pair, bind, provision) with a fresh account authority.
async fn run_bound(
    air: &SimAir,
    id: &PeripheralId,
    passcode: u32,
    credentials: &Credentials,
    seed: u8,
) -> (Result<Commissioned, CommissionError>, Vec<CommissionStage>) {
    let link = air.central().connect(id).await.unwrap();
    let mut stages = Vec::new();
    let mut authority = LocalAuthority::generate().unwrap();
    let plan = CommissionPlan {
        passcode,
        credentials: credentials.clone(),
        seed: [seed; 32],
        bind_nonce: [seed; 16],
        unix_now: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    };
    let result = commission(
        &link,
        &plan,
        &mut authority,
        CommissionTimeouts::default(),
        |s| stages.push(s),
    )
    .await;
    link.disconnect().await.unwrap();
    (result, stages)
}

#[tokio::test(start_paused = true)]
async fn a_lamp_is_found_paired_and_joins_the_home_wifi_r6_r13() {
    let air = SimAir::new(SimConfig {
        mtu: MTU,
        ..SimConfig::default()
    });
    let (log, _lamp) = lamp_on(&air, MTU);
    let id = find_lamp(&air).await;
    let (result, stages) = run_bound(&air, &id, payload().passcode, &home(), 1).await;
    let commissioned = result.unwrap();
    assert_eq!(commissioned.outcome, Outcome::Joined);
    assert_eq!(commissioned.certificate.role, Role::Device);
    assert_eq!(
        stages,
        vec![
            CommissionStage::PairingStarted,
            CommissionStage::Paired,
            CommissionStage::Bound,
            CommissionStage::CredentialsSent
        ]
    );
    let log = log.lock().unwrap();
    assert_eq!(log.limiter.failures(), 0);
    assert!(log.events.contains(&CommissioneeEvent::Paired));
    assert!(log.events.contains(&CommissioneeEvent::Credentials(home())));
    assert_eq!(log.joined, vec![home()]);
    // The lamp holds the certificate the authority issued, and no group key
    // (the device core refuses one, R8).
    assert_eq!(log.bound, vec![commissioned.certificate.serial]);
}

#[tokio::test(start_paused = true)]
async fn wifi_failures_are_typed_and_a_retry_joins_r13() {
    let air = SimAir::new(SimConfig {
        mtu: MTU,
        ..SimConfig::default()
    });
    let (_log, _lamp) = lamp_on(&air, MTU);
    let id = find_lamp(&air).await;
    let wrong_pass = Credentials {
        passphrase: b"not-the-passphrase".to_vec(),
        ..home()
    };
    let unknown = Credentials {
        ssid: b"Neighbour".to_vec(),
        ..home()
    };
    let (result, _) = run(&air, &id, payload().passcode, &wrong_pass, 1).await;
    assert_eq!(result, Ok(Outcome::WrongPassphrase));
    let (result, _) = run(&air, &id, payload().passcode, &unknown, 2).await;
    assert_eq!(result, Ok(Outcome::NetworkNotFound));
    let (result, _) = run(&air, &id, payload().passcode, &home(), 3).await;
    assert_eq!(result, Ok(Outcome::Joined));
}

#[tokio::test(start_paused = true)]
async fn a_wrong_passcode_fails_is_counted_and_the_next_try_must_wait_r6() {
    let air = SimAir::new(SimConfig {
        mtu: MTU,
        ..SimConfig::default()
    });
    let (log, _lamp) = lamp_on(&air, MTU);
    let id = find_lamp(&air).await;
    let (result, stages) = run(&air, &id, payload().passcode + 1, &home(), 1).await;
    assert_eq!(
        result,
        Err(CommissionError::Pairing(PairingError::WrongPasscode))
    );
    assert_eq!(stages, vec![CommissionStage::PairingStarted]);
    assert_eq!(log.lock().unwrap().limiter.failures(), 1);
    // Less than the 1 s backoff has passed on the lamp's clock: it asks to
    // wait, without doing any SPAKE2 work.
    let (result, _) = run(&air, &id, payload().passcode, &home(), 2).await;
    assert!(
        matches!(
            result,
            Err(CommissionError::Pairing(PairingError::RetryLater { .. }))
        ),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn commissioning_survives_a_lossy_jittery_air_r13() {
    let air = SimAir::new(SimConfig {
        mtu: 23,
        loss: 0.05,
        jitter: Duration::from_millis(5),
        seed: 7,
        ..SimConfig::default()
    });
    let mut joined = 0;
    for cycle in 0..20u8 {
        let (_log, lamp) = lamp_on(&air, 23);
        let id = find_lamp(&air).await;
        let (result, _) = run(&air, &id, payload().passcode, &home(), cycle).await;
        if result == Ok(Outcome::Joined) {
            joined += 1;
        }
        lamp.remove();
    }
    assert_eq!(joined, 20);
    assert!(air.stats().pdus_lost > 0, "the air lost nothing: no test");
}

/// A perfect air with one advertising lamp, already found by a scan.
async fn lamp_in_the_air() -> (
    SimAir,
    SharedLog,
    tether_ble::sim::SimPeripheral,
    PeripheralId,
) {
    let air = SimAir::new(SimConfig {
        mtu: MTU,
        ..SimConfig::default()
    });
    let (log, lamp) = lamp_on(&air, MTU);
    let id = find_lamp(&air).await;
    (air, log, lamp, id)
}

/// Commissions through [`commission_peripheral`] with a fresh authority,
/// disconnecting the lamp's link (from the lamp's side, as a radio drop
/// would) whenever `drop_at` says so for a stage reached.
async fn run_dropping(
    air: &SimAir,
    lamp: &tether_ble::sim::SimPeripheral,
    id: &PeripheralId,
    link_retries: u32,
    mut drop_at: impl FnMut(CommissionStage) -> bool + Send,
) -> (Result<Commissioned, CommissionError>, Vec<CommissionStage>) {
    let mut stages = Vec::new();
    let mut authority = LocalAuthority::generate().unwrap();
    let plan = CommissionPlan {
        passcode: payload().passcode,
        credentials: home(),
        seed: [9; 32],
        bind_nonce: [9; 16],
        unix_now: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    };
    let timeouts = CommissionTimeouts {
        link_retries,
        ..CommissionTimeouts::default()
    };
    let result = commission_peripheral(
        &air.central(),
        id,
        &plan,
        &mut authority,
        timeouts,
        |stage| {
            stages.push(stage);
            if drop_at(stage) {
                lamp.disconnect();
            }
        },
    )
    .await;
    (result, stages)
}

#[tokio::test(start_paused = true)]
async fn a_link_dropped_mid_pairing_is_reconnected_after_the_lamps_backoff_r6_r13() {
    let (air, log, lamp, id) = lamp_in_the_air().await;
    let mut dropped = false;
    let (result, stages) = run_dropping(&air, &lamp, &id, 2, |stage| {
        let now = stage == CommissionStage::PairingStarted && !dropped;
        dropped |= now;
        now
    })
    .await;
    let commissioned = result.expect("the second link commissions the lamp");
    assert_eq!(commissioned.outcome, Outcome::Joined);
    // The lamp counted the abandoned attempt (R6) and asked the next link
    // to wait; the commissioner waited and paired.
    assert!(
        stages.contains(&CommissionStage::Reconnecting { retry: 1 }),
        "{stages:?}"
    );
    assert!(
        matches!(
            stages
                .iter()
                .find(|s| matches!(s, CommissionStage::Waiting { .. })),
            Some(CommissionStage::Waiting { seconds: 1 })
        ),
        "{stages:?}"
    );
    assert_eq!(
        stages[stages.len() - 3..],
        [
            CommissionStage::Paired,
            CommissionStage::Bound,
            CommissionStage::CredentialsSent
        ]
    );
    let log = log.lock().unwrap();
    assert_eq!(log.limiter.failures(), 0, "a success clears the count");
    assert_eq!(log.bound, vec![commissioned.certificate.serial]);
    assert_eq!(log.joined, vec![home()]);
}

#[tokio::test(start_paused = true)]
async fn a_link_dropped_after_binding_sends_only_the_credentials_again_r13() {
    let (air, log, lamp, id) = lamp_in_the_air().await;
    let (result, stages) =
        run_dropping(&air, &lamp, &id, 2, |stage| stage == CommissionStage::Bound).await;
    let commissioned = result.expect("the second link provisions the lamp");
    assert_eq!(commissioned.outcome, Outcome::Joined);
    assert_eq!(
        stages,
        vec![
            CommissionStage::PairingStarted,
            CommissionStage::Paired,
            CommissionStage::Bound,
            CommissionStage::Reconnecting { retry: 1 },
            CommissionStage::PairingStarted,
            CommissionStage::Paired,
            CommissionStage::CredentialsSent,
        ]
    );
    let log = log.lock().unwrap();
    // Bound once: the link dropped after the lamp confirmed its binding.
    assert_eq!(log.bound, vec![commissioned.certificate.serial]);
    // The secret returned is the one the lamp kept from its binding, not
    // the second pairing's.
    let (_, kept_secret) = log.binding.as_ref().expect("the lamp kept its binding");
    assert_eq!(*kept_secret, commissioned.device_secret);
    assert_eq!(log.joined, vec![home()]);
}

/// A fresh lamp whose every link drops as soon as pairing starts: the
/// result, the stages and the lamp's count of failed attempts.
async fn every_link_drops(
    link_retries: u32,
) -> (Result<(), CommissionError>, Vec<CommissionStage>, u32) {
    let (air, log, lamp, id) = lamp_in_the_air().await;
    let (result, stages) = run_dropping(&air, &lamp, &id, link_retries, |stage| {
        stage == CommissionStage::PairingStarted
    })
    .await;
    let failures = log.lock().unwrap().limiter.failures();
    (result.map(|_| ()), stages, failures)
}

#[tokio::test(start_paused = true)]
async fn reconnections_are_bounded_and_leave_the_user_most_attempts_r6() {
    let dropped = Err(CommissionError::Radio(
        tether_ble::radio::RadioError::Disconnected,
    ));
    let (result, stages, failures) = every_link_drops(2).await;
    assert_eq!(result, dropped);
    let links = stages
        .iter()
        .filter(|s| **s == CommissionStage::PairingStarted)
        .count();
    assert!(
        (3..=4).contains(&links),
        "three links, one wait: {stages:?}"
    );
    assert!(!stages.contains(&CommissionStage::Reconnecting { retry: 3 }));
    // Abandoned attempts are counted (R6), but the lamp is far from its
    // lockout: the retries do not use up the user's guesses.
    assert!((1..=3).contains(&failures), "{failures}");

    // Without retries a drop is returned at once, as before.
    let (result, stages, _) = every_link_drops(0).await;
    assert_eq!(result, dropped);
    assert_eq!(stages, vec![CommissionStage::PairingStarted]);
}

/// What [`rough_air`] saw.
struct RoughAir {
    joined: usize,
    links_dropped: u64,
    reconnections: usize,
    /// Joined lamps that were bound more than once (a drop between grant
    /// and confirmation).
    bound_again: usize,
    /// Joined lamps whose kept certificate or device secret differs from
    /// what the commissioner returned: must stay 0.
    disagreements: usize,
}

/// `cycles` fresh lamps commissioned over one air that drops links (20 %
/// PDU loss, a link drops after 2 losses in a row).
async fn rough_air(link_retries: u32, cycles: u8) -> RoughAir {
    let air = SimAir::new(SimConfig {
        mtu: MTU,
        loss: 0.2,
        supervision_losses: 2,
        seed: 11,
        ..SimConfig::default()
    });
    let mut out = RoughAir {
        joined: 0,
        links_dropped: 0,
        reconnections: 0,
        bound_again: 0,
        disagreements: 0,
    };
    for _ in 0..cycles {
        let (log, lamp) = lamp_on(&air, MTU);
        let id = find_lamp(&air).await;
        let (result, stages) = run_dropping(&air, &lamp, &id, link_retries, |_| false).await;
        out.reconnections += stages
            .iter()
            .filter(|s| matches!(s, CommissionStage::Reconnecting { .. }))
            .count();
        if let Ok(commissioned) = result
            && commissioned.outcome == Outcome::Joined
        {
            out.joined += 1;
            let log = log.lock().unwrap();
            out.bound_again += usize::from(log.bound.len() > 1);
            let agrees = log.binding.as_ref().is_some_and(|(credentials, secret)| {
                credentials.certificate().serial == commissioned.certificate.serial
                    && *secret == commissioned.device_secret
            });
            out.disagreements += usize::from(!agrees);
        }
        lamp.remove();
    }
    out.links_dropped = air.stats().links_dropped;
    out
}

#[tokio::test(start_paused = true)]
async fn on_an_air_that_drops_links_reconnecting_commissions_more_lamps_r13() {
    let without = rough_air(0, 30).await;
    let with = rough_air(2, 30).await;
    assert!(
        without.links_dropped > 0 && with.links_dropped > 0,
        "no link dropped: no test"
    );
    assert_eq!(without.reconnections, 0);
    assert!(with.reconnections > 0);
    assert!(
        with.joined > without.joined,
        "with reconnections {} of 30 joined, without {}",
        with.joined,
        without.joined
    );
    // Whatever link dropped, each joined lamp keeps the certificate and
    // device secret the commissioner returned (SPEC §12.7).
    assert_eq!(
        without.disagreements + with.disagreements,
        0,
        "{} lamps were bound again",
        with.bound_again
    );
}
