//! Sentry mode's danger alerts (R25, R10; SPEC §22): only parked, locked,
//! switched on and outside the owner's quiet places; an impact with someone
//! close makes one alert per incident; each recipient gets it until it
//! acknowledges it, once, whatever the reconnects; it expires; an image
//! leaves only anonymised.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use tether_control::sentry::{
    ALERT_TTL_MS, AlertImage, CarState, INCIDENT_QUIET_MS, MAX_QUEUED_PER_RECIPIENT,
    PROXIMITY_WINDOW_MS, QuietPlace, Reading, Sentry, SentryError, Severity,
};

const PARKED: CarState = CarState {
    parked: true,
    locked: true,
    lat: 48.1372,
    lon: 11.5756,
};

fn owner_phone() -> Vec<u8> {
    b"owner phone".to_vec()
}
fn owner_watch() -> Vec<u8> {
    b"owner watch".to_vec()
}
fn co_user() -> Vec<u8> {
    b"co-user grant".to_vec()
}

fn recipients() -> Vec<Vec<u8>> {
    vec![owner_phone(), owner_watch(), co_user()]
}

fn on() -> Sentry {
    let mut s = Sentry::new();
    s.set_enabled(true);
    s
}

/// Someone close at `at`, then an impact of `severity` 2 s later.
fn incident(s: &mut Sentry, car: &CarState, at: u64, severity: u8) -> Option<u64> {
    assert!(
        s.handle_reading(Reading::Proximity, car, &recipients(), None, at)
            .unwrap()
            .is_none()
    );
    s.handle_reading(
        Reading::Impact { severity },
        car,
        &recipients(),
        None,
        at + 2_000,
    )
    .unwrap()
    .map(|a| a.id)
}

#[test]
fn r25_an_impact_with_someone_close_alerts_every_recipient_once() {
    let mut s = on();
    let id = incident(&mut s, &PARKED, 0, 8).expect("an alert");
    for r in recipients() {
        let pending = s.pending_for(&r, 3_000);
        assert_eq!(pending.len(), 1, "{r:?}");
        assert_eq!(pending[0].id, id);
        assert_eq!(pending[0].severity, Severity::High);
        assert!(!pending[0].summary.is_empty());
    }
    // The phone reconnects twice before it acknowledges: offered again, the
    // same alert; after its acknowledgement never again. The others still
    // have theirs.
    assert_eq!(s.pending_for(&owner_phone(), 4_000)[0].id, id);
    s.acknowledge(&owner_phone(), id);
    s.acknowledge(&owner_phone(), id);
    assert!(s.pending_for(&owner_phone(), 5_000).is_empty());
    assert_eq!(s.pending_for(&owner_watch(), 5_000).len(), 1);
    assert_eq!(s.pending_for(&co_user(), 5_000).len(), 1);
}

#[test]
fn r25_one_alert_per_incident() {
    let mut s = on();
    let first = incident(&mut s, &PARKED, 0, 5).unwrap();
    // More knocks within the quiet period: the same incident.
    assert_eq!(incident(&mut s, &PARKED, 10_000, 9), None);
    let second = incident(&mut s, &PARKED, INCIDENT_QUIET_MS + 5_000, 2).unwrap();
    assert_ne!(first, second);
    let pending = s.pending_for(&owner_phone(), INCIDENT_QUIET_MS + 10_000);
    assert_eq!(
        pending.iter().map(|a| a.severity).collect::<Vec<_>>(),
        [Severity::Medium, Severity::Low]
    );
}

#[test]
fn r25_an_impact_alone_or_too_far_apart_is_no_danger() {
    let mut s = on();
    assert!(
        s.handle_reading(
            Reading::Impact { severity: 9 },
            &PARKED,
            &recipients(),
            None,
            0
        )
        .unwrap()
        .is_none()
    );
    // Someone close long after the impact.
    assert!(
        s.handle_reading(
            Reading::Proximity,
            &PARKED,
            &recipients(),
            None,
            PROXIMITY_WINDOW_MS + 1
        )
        .unwrap()
        .is_none()
    );
    assert!(
        s.pending_for(&owner_phone(), PROXIMITY_WINDOW_MS + 2)
            .is_empty()
    );
}

#[test]
fn r25_sentry_watches_only_when_on_parked_and_locked() {
    let mut off = Sentry::new();
    assert_eq!(incident(&mut off, &PARKED, 0, 9), None);
    let mut s = on();
    let driving = CarState {
        parked: false,
        ..PARKED
    };
    let unlocked = CarState {
        locked: false,
        ..PARKED
    };
    assert_eq!(incident(&mut s, &driving, 0, 9), None);
    assert_eq!(incident(&mut s, &unlocked, 100_000, 9), None);
    // Switched off in between: nothing half-seen carries over.
    s.handle_reading(Reading::Proximity, &PARKED, &recipients(), None, 200_000)
        .unwrap();
    s.set_enabled(false);
    s.set_enabled(true);
    assert!(
        s.handle_reading(
            Reading::Impact { severity: 9 },
            &PARKED,
            &recipients(),
            None,
            201_000
        )
        .unwrap()
        .is_none()
    );
}

#[test]
fn r10_r25_inside_a_quiet_place_sentry_stays_off_judged_in_the_car() {
    let mut s = on();
    s.set_quiet_places(vec![QuietPlace {
        lat: PARKED.lat,
        lon: PARKED.lon,
        radius_m: 150.0,
    }])
    .unwrap();
    assert!(!s.watching(&PARKED));
    assert_eq!(incident(&mut s, &PARKED, 0, 9), None);
    // 1 km north: outside it.
    let away = CarState {
        lat: PARKED.lat + 1_000.0 / 111_195.0,
        ..PARKED
    };
    assert!(s.watching(&away));
    assert!(incident(&mut s, &away, 10_000, 9).is_some());
    for bad in [
        QuietPlace {
            lat: 91.0,
            lon: 0.0,
            radius_m: 10.0,
        },
        QuietPlace {
            lat: 0.0,
            lon: 0.0,
            radius_m: -1.0,
        },
        QuietPlace {
            lat: 0.0,
            lon: f64::NAN,
            radius_m: 10.0,
        },
    ] {
        assert!(matches!(
            s.set_quiet_places(vec![bad]),
            Err(SentryError::InvalidPlace(_))
        ));
    }
}

#[test]
fn r25_an_image_leaves_only_anonymised() {
    let mut s = on();
    s.handle_reading(Reading::Proximity, &PARKED, &recipients(), None, 0)
        .unwrap();
    let raw = AlertImage {
        bytes: vec![1, 2, 3],
        anonymised: false,
    };
    assert_eq!(
        s.handle_reading(
            Reading::Impact { severity: 6 },
            &PARKED,
            &recipients(),
            Some(raw),
            1_000
        ),
        Err(SentryError::NotAnonymised)
    );
    assert!(s.pending_for(&owner_phone(), 1_000).is_empty());
    let blurred = AlertImage {
        bytes: vec![9, 9],
        anonymised: true,
    };
    let alert = s
        .handle_reading(
            Reading::Impact { severity: 6 },
            &PARKED,
            &recipients(),
            Some(blurred.clone()),
            2_000,
        )
        .unwrap()
        .unwrap();
    assert_eq!(alert.image, Some(blurred));
}

#[test]
fn r25_an_alert_nobody_acknowledged_expires_and_queues_are_bounded() {
    let mut s = on();
    let id = incident(&mut s, &PARKED, 0, 5).unwrap();
    assert_eq!(s.pending_for(&co_user(), ALERT_TTL_MS)[0].id, id);
    assert!(s.pending_for(&co_user(), ALERT_TTL_MS + 2_001).is_empty());
    // A recipient that never answers keeps only the newest alerts.
    let mut t = ALERT_TTL_MS * 2;
    for _ in 0..MAX_QUEUED_PER_RECIPIENT + 5 {
        incident(&mut s, &PARKED, t, 5).unwrap();
        t += INCIDENT_QUIET_MS + 3_000;
    }
    let pending = s.pending_for(&owner_watch(), t);
    assert_eq!(pending.len(), MAX_QUEUED_PER_RECIPIENT);
    assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
    // A revoked co-user's queue goes at once.
    s.forget(&co_user());
    assert!(s.pending_for(&co_user(), t).is_empty());
}
