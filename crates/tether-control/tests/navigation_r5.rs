//! Navigation hand-off (R5, R32; SPEC §21): a destination from the phone
//! waits for the driver, guidance starts only when accepted, unanswered
//! offers expire, and parking short of the destination hands the rest of the
//! way to the phone; nothing about a parked position stays in the car.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use tether_control::navigation::{
    ARRIVED_WITHIN_M, Destination, MAX_PENDING_OFFERS, Navigation, NavigationError,
    NavigationEvent, OFFER_TTL_MS, Place, Position,
};

const MUSEUM: Position = Position {
    lat: 48.1372,
    lon: 11.5756,
};

fn place(name: &str, position: Position) -> Place {
    Place {
        name: name.into(),
        position,
    }
}

fn museum() -> Destination {
    Destination {
        place: place("Museum", MUSEUM),
        waypoints: vec![place(
            "Bakery",
            Position {
                lat: 48.14,
                lon: 11.56,
            },
        )],
    }
}

/// `metres` north of the museum.
fn north(metres: f64) -> Position {
    Position {
        lat: MUSEUM.lat + metres / 111_195.0,
        lon: MUSEUM.lon,
    }
}

fn events(nav: &mut Navigation) -> Vec<NavigationEvent> {
    std::iter::from_fn(|| nav.poll_event()).collect()
}

#[test]
fn r5_guidance_starts_only_once_the_driver_accepts() {
    let mut nav = Navigation::new();
    let id = nav.offer(museum(), 0).unwrap();
    assert_eq!(events(&mut nav), [NavigationEvent::Offered(id)]);
    assert!(
        nav.guiding().is_none(),
        "guiding before the driver accepted"
    );
    assert_eq!(nav.pending().len(), 1);
    assert_eq!(nav.pending()[0].1.waypoints.len(), 1);
    let accepted = nav.accept(id, 1_000).unwrap();
    assert_eq!(accepted.place.name, "Museum");
    assert_eq!(nav.guiding().unwrap().0, id);
    assert!(nav.pending().is_empty());
    assert_eq!(events(&mut nav), [NavigationEvent::Accepted(id)]);
    // Answered once only.
    assert_eq!(
        nav.accept(id, 2_000),
        Err(NavigationError::NoSuchOffer(id.0))
    );
}

#[test]
fn r5_a_declined_or_unanswered_destination_never_guides() {
    let mut nav = Navigation::new();
    let a = nav.offer(museum(), 0).unwrap();
    let b = nav.offer(museum(), 10).unwrap();
    nav.decline(a, 20).unwrap();
    assert_eq!(nav.poll_timeout(), Some(10 + OFFER_TTL_MS));
    nav.handle_timeout(10 + OFFER_TTL_MS);
    assert_eq!(
        events(&mut nav),
        [
            NavigationEvent::Offered(a),
            NavigationEvent::Offered(b),
            NavigationEvent::Declined(a),
            NavigationEvent::Expired(b),
        ]
    );
    assert!(
        nav.accept(b, 10 + OFFER_TTL_MS).is_err(),
        "an expired offer was accepted"
    );
    assert!(nav.guiding().is_none());
    assert_eq!(nav.poll_timeout(), None);
}

#[test]
fn r5_bad_destinations_and_too_many_waiting_are_refused() {
    let mut nav = Navigation::new();
    let bad = |lat: f64, lon: f64| Destination {
        place: place("x", Position { lat, lon }),
        waypoints: Vec::new(),
    };
    for (lat, lon) in [
        (91.0, 0.0),
        (0.0, 181.0),
        (f64::NAN, 0.0),
        (0.0, f64::INFINITY),
    ] {
        assert!(matches!(
            nav.offer(bad(lat, lon), 0),
            Err(NavigationError::Invalid(_))
        ));
    }
    let mut unnamed = museum();
    unnamed.place.name = "  ".into();
    assert!(matches!(
        nav.offer(unnamed, 0),
        Err(NavigationError::Invalid(_))
    ));
    let mut long = museum();
    long.place.name = "m".repeat(65);
    assert!(matches!(
        nav.offer(long, 0),
        Err(NavigationError::Invalid(_))
    ));
    let mut stops = museum();
    stops.waypoints = vec![place("stop", MUSEUM); 9];
    assert!(matches!(
        nav.offer(stops, 0),
        Err(NavigationError::Invalid(_))
    ));
    for _ in 0..MAX_PENDING_OFFERS {
        nav.offer(museum(), 0).unwrap();
    }
    assert_eq!(nav.offer(museum(), 0), Err(NavigationError::Busy));
    // Nothing refused became an offer.
    assert_eq!(nav.pending().len(), MAX_PENDING_OFFERS);
}

#[test]
fn r5_r32_parked_short_of_the_destination_the_rest_goes_to_the_phone_once() {
    let mut nav = Navigation::new();
    let id = nav.offer(museum(), 0).unwrap();
    nav.accept(id, 0).unwrap();
    events(&mut nav);
    // A stop far away (5 km): guidance goes on, nothing handed off.
    nav.parked_at(north(5_000.0), 10_000);
    assert!(events(&mut nav).is_empty());
    assert!(nav.guiding().is_some());
    // Parked 400 m short.
    nav.parked_at(north(400.0), 20_000);
    let handed = events(&mut nav);
    match handed.as_slice() {
        [
            NavigationEvent::Walk {
                offer,
                from,
                to,
                distance_m,
            },
        ] => {
            assert_eq!(*offer, id);
            assert_eq!(*from, north(400.0));
            assert_eq!(to.name, "Museum");
            assert!((distance_m - 400.0).abs() < 2.0, "{distance_m}");
        }
        other => panic!("expected one walk, got {other:?}"),
    }
    // Guidance ended: parking again hands off nothing, and the car holds no
    // position (R32): nothing it keeps names the parked place.
    assert!(nav.guiding().is_none());
    nav.parked_at(north(300.0), 30_000);
    assert!(events(&mut nav).is_empty());
    assert!(!format!("{nav:?}").contains(&format!("{}", north(400.0).lat)));
}

#[test]
fn r5_parked_at_the_destination_is_arrived() {
    let mut nav = Navigation::new();
    let id = nav.offer(museum(), 0).unwrap();
    nav.accept(id, 0).unwrap();
    events(&mut nav);
    nav.parked_at(north(ARRIVED_WITHIN_M - 5.0), 1_000);
    assert_eq!(events(&mut nav), [NavigationEvent::Arrived(id)]);
    assert!(nav.guiding().is_none());
}

#[test]
fn a_second_accepted_destination_replaces_the_first() {
    let mut nav = Navigation::new();
    let a = nav.offer(museum(), 0).unwrap();
    let mut home = museum();
    home.place = place("Home", north(3_000.0));
    let b = nav.offer(home, 0).unwrap();
    nav.accept(a, 1).unwrap();
    nav.accept(b, 2).unwrap();
    assert_eq!(nav.guiding().unwrap().0, b);
    assert_eq!(nav.guiding().unwrap().1.place.name, "Home");
}

#[test]
fn distances_are_great_circle_metres() {
    let d = MUSEUM.distance_m(&north(1_000.0));
    assert!((d - 1_000.0).abs() < 5.0, "{d}");
    assert_eq!(MUSEUM.distance_m(&MUSEUM), 0.0);
    // Antipodes: half the Earth's circumference.
    let far = Position {
        lat: -MUSEUM.lat,
        lon: MUSEUM.lon - 180.0,
    };
    assert!((MUSEUM.distance_m(&far) - 20_015_000.0).abs() < 10_000.0);
}
