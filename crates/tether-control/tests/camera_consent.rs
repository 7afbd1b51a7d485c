//! Every path of the in-car camera's live-view consent (R18, R19).

use tether_control::camera::{
    AllowReason, CONSENT_TIMEOUT_MS, CabinState, CameraConsent, CameraEvent, RefuseReason,
    Requester,
};

const OWNER: Requester = Requester::Owner;

fn occupied() -> CabinState {
    CabinState::default()
}

fn locked() -> CabinState {
    CabinState {
        locked: true,
        ..CabinState::default()
    }
}

#[test]
fn an_empty_car_lets_the_owner_view_directly_r18() {
    for cabin in [
        locked(),
        CabinState {
            sentry_mode: true,
            ..CabinState::default()
        },
        CabinState {
            parked_power_hold: true,
            ..CabinState::default()
        },
    ] {
        let mut camera = CameraConsent::new(true, cabin);
        assert_eq!(
            camera.request(1, OWNER, 0),
            vec![CameraEvent::Allowed {
                id: 1,
                reason: AllowReason::CarEmpty
            }]
        );
        assert_eq!(camera.live(), Some(1));
    }
}

#[test]
fn a_detected_occupant_overrides_the_empty_judgement_r18() {
    let cabin = CabinState {
        locked: true,
        sentry_mode: true,
        occupant_detected: Some(true),
        ..CabinState::default()
    };
    let mut camera = CameraConsent::new(true, cabin);
    assert!(matches!(
        camera.request(1, OWNER, 0).as_slice(),
        [CameraEvent::Prompt { id: 1, .. }]
    ));
}

#[test]
fn with_someone_inside_the_view_waits_for_consent_on_the_head_unit_r18() {
    let mut camera = CameraConsent::new(true, occupied());
    assert_eq!(
        camera.request(7, OWNER, 1_000),
        vec![CameraEvent::Prompt {
            id: 7,
            deadline_ms: 1_000 + CONSENT_TIMEOUT_MS
        }]
    );
    assert_eq!(camera.live(), None, "nothing streams before consent");
    assert_eq!(
        camera.answer(7, true),
        vec![
            CameraEvent::PromptClosed { id: 7 },
            CameraEvent::Allowed {
                id: 7,
                reason: AllowReason::Consented
            }
        ]
    );
    assert_eq!(camera.live(), Some(7));
}

#[test]
fn a_decline_refuses_the_view_r18() {
    let mut camera = CameraConsent::new(true, occupied());
    camera.request(2, OWNER, 0);
    assert_eq!(
        camera.answer(2, false),
        vec![
            CameraEvent::PromptClosed { id: 2 },
            CameraEvent::Refused {
                id: 2,
                reason: RefuseReason::Declined
            }
        ]
    );
    assert_eq!(camera.live(), None);
    // A late second answer changes nothing.
    assert!(camera.answer(2, true).is_empty());
    assert_eq!(camera.live(), None);
}

#[test]
fn no_answer_in_time_refuses_the_view_r18() {
    let mut camera = CameraConsent::new(true, occupied());
    camera.request(3, OWNER, 0);
    assert!(camera.handle_timeout(CONSENT_TIMEOUT_MS - 1).is_empty());
    assert_eq!(
        camera.handle_timeout(CONSENT_TIMEOUT_MS),
        vec![
            CameraEvent::PromptClosed { id: 3 },
            CameraEvent::Refused {
                id: 3,
                reason: RefuseReason::NoAnswer
            }
        ]
    );
    assert!(
        camera.answer(3, true).is_empty(),
        "an answer after expiry is ignored"
    );
    assert_eq!(camera.live(), None);
}

#[test]
fn a_camera_switched_off_refuses_everything_and_stops_a_live_view_r18() {
    let mut off = CameraConsent::new(false, locked());
    assert_eq!(
        off.request(1, OWNER, 0),
        vec![CameraEvent::Refused {
            id: 1,
            reason: RefuseReason::CameraOff
        }]
    );

    let mut camera = CameraConsent::new(true, locked());
    camera.request(4, OWNER, 0);
    assert_eq!(
        camera.set_enabled(false),
        vec![CameraEvent::Stopped {
            id: 4,
            reason: RefuseReason::CameraOff
        }]
    );
    assert!(!camera.enabled());

    let mut pending = CameraConsent::new(true, occupied());
    pending.request(5, OWNER, 0);
    assert_eq!(
        pending.set_enabled(false),
        vec![
            CameraEvent::PromptClosed { id: 5 },
            CameraEvent::Refused {
                id: 5,
                reason: RefuseReason::CameraOff
            }
        ]
    );
    assert!(pending.answer(5, true).is_empty());
}

#[test]
fn a_view_allowed_for_an_empty_car_stops_when_someone_gets_in_r18() {
    let mut camera = CameraConsent::new(true, locked());
    camera.request(6, OWNER, 0);
    // Still locked and empty: nothing changes.
    assert!(camera.update_cabin(locked()).is_empty());
    assert_eq!(
        camera.update_cabin(occupied()),
        vec![CameraEvent::Stopped {
            id: 6,
            reason: RefuseReason::OccupantPresent
        }]
    );
    // A new request now needs consent.
    assert!(matches!(
        camera.request(8, OWNER, 0).as_slice(),
        [CameraEvent::Prompt { id: 8, .. }]
    ));
}

#[test]
fn a_consented_view_continues_when_the_car_empties() {
    let mut camera = CameraConsent::new(true, occupied());
    camera.request(9, OWNER, 0);
    camera.answer(9, true);
    assert!(camera.update_cabin(locked()).is_empty());
    assert!(camera.update_cabin(occupied()).is_empty());
    assert_eq!(camera.live(), Some(9));
}

#[test]
fn co_users_need_a_camera_share_r19() {
    let mut camera = CameraConsent::new(true, locked());
    assert_eq!(
        camera.request(
            1,
            Requester::CoUser {
                camera_shared: false
            },
            0
        ),
        vec![CameraEvent::Refused {
            id: 1,
            reason: RefuseReason::NotShared
        }]
    );
    assert_eq!(
        camera.request(
            2,
            Requester::CoUser {
                camera_shared: true
            },
            0
        ),
        vec![CameraEvent::Allowed {
            id: 2,
            reason: AllowReason::CarEmpty
        }]
    );
}

#[test]
fn one_view_at_a_time_and_ending_frees_the_camera() {
    let mut camera = CameraConsent::new(true, locked());
    camera.request(1, OWNER, 0);
    assert_eq!(
        camera.request(2, OWNER, 0),
        vec![CameraEvent::Refused {
            id: 2,
            reason: RefuseReason::Busy
        }]
    );
    assert!(
        camera.end(2).is_empty(),
        "ending another id changes nothing"
    );
    assert_eq!(camera.live(), Some(1));
    camera.end(1);
    assert_eq!(camera.live(), None);
    assert!(matches!(
        camera.request(3, OWNER, 0).as_slice(),
        [CameraEvent::Allowed { id: 3, .. }]
    ));

    let mut pending = CameraConsent::new(true, occupied());
    pending.request(4, OWNER, 0);
    assert_eq!(pending.end(4), vec![CameraEvent::PromptClosed { id: 4 }]);
    assert!(
        pending.answer(4, true).is_empty(),
        "a withdrawn request cannot be accepted"
    );
}
