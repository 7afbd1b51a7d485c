//! Driver profiles (R26; SPEC §20): the merge takes the most recent change
//! per setting, breaks equal times the same way on every car, carries
//! settings a model lacks without applying them, and leads every car that
//! saw the same changes to the same profile, in any order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use tether_control::profile::{Profile, SettingKey, SettingValue, Stamped, WriterId, merge};

const CAR_A: WriterId = WriterId([0xa0; 8]);
const CAR_B: WriterId = WriterId([0xb0; 8]);

fn key(name: &str) -> SettingKey {
    SettingKey::new(name)
}

fn all(_: &SettingKey) -> bool {
    true
}

#[test]
fn r26_the_most_recent_change_wins_per_setting_not_per_profile() {
    let mut a = Profile::new(1_000);
    a.set(
        key("seat.driver.position"),
        SettingValue::Int(40),
        5_000,
        CAR_A,
    );
    a.set(
        key("climate.temperature"),
        SettingValue::Int(215),
        9_000,
        CAR_A,
    );
    let mut b = Profile::new(2_000);
    b.set(
        key("seat.driver.position"),
        SettingValue::Int(55),
        7_000,
        CAR_B,
    );
    b.set(
        key("climate.temperature"),
        SettingValue::Int(200),
        8_000,
        CAR_B,
    );
    b.set(
        key("drive.mode"),
        SettingValue::Text("sport".into()),
        3_000,
        CAR_B,
    );

    let on_a = merge(&a, &b, all);
    // B's seat is newer, A's climate is: each setting on its own.
    assert_eq!(
        on_a.profile.settings[&key("seat.driver.position")].value,
        SettingValue::Int(55)
    );
    assert_eq!(
        on_a.profile.settings[&key("climate.temperature")].value,
        SettingValue::Int(215)
    );
    assert_eq!(
        on_a.profile.settings[&key("drive.mode")].value,
        SettingValue::Text("sport".into())
    );
    // Car A applies what changed for it, nothing else.
    assert_eq!(
        on_a.apply,
        [
            (key("drive.mode"), SettingValue::Text("sport".into())),
            (key("seat.driver.position"), SettingValue::Int(55)),
        ]
    );
    // Creation is the earliest known, modification the newest change.
    assert_eq!(on_a.profile.created_ms, 1_000);
    assert_eq!(on_a.profile.modified_ms(), 9_000);
    // Car B reaches the same profile from the other side.
    assert_eq!(merge(&b, &a, all).profile, on_a.profile);
}

#[test]
fn r26_equal_times_are_broken_by_the_writing_car_the_same_way_everywhere() {
    let mut a = Profile::new(0);
    a.set(key("mirror.left"), SettingValue::Int(3), 5_000, CAR_A);
    let mut b = Profile::new(0);
    b.set(key("mirror.left"), SettingValue::Int(8), 5_000, CAR_B);
    let on_a = merge(&a, &b, all);
    let on_b = merge(&b, &a, all);
    assert_eq!(on_a.profile, on_b.profile, "the cars disagree");
    // The larger writer id wins a tie: car B's.
    assert_eq!(
        on_a.profile.settings[&key("mirror.left")].value,
        SettingValue::Int(8)
    );
    assert_eq!(on_a.apply, [(key("mirror.left"), SettingValue::Int(8))]);
    assert!(on_b.apply.is_empty(), "car B already has it");
}

#[test]
fn r26_a_setting_a_model_lacks_is_carried_on_not_applied_and_not_lost() {
    let mut a = Profile::new(0);
    a.set(
        key("camera.watermark"),
        SettingValue::Bool(true),
        4_000,
        CAR_A,
    );
    a.set(
        key("seat.driver.position"),
        SettingValue::Int(40),
        4_000,
        CAR_A,
    );
    // Car B's model has no camera.
    let no_camera = |k: &SettingKey| k.0 != "camera.watermark";
    let on_b = merge(&Profile::new(0), &a, no_camera);
    assert_eq!(on_b.carried, [key("camera.watermark")]);
    assert_eq!(
        on_b.apply,
        [(key("seat.driver.position"), SettingValue::Int(40))]
    );
    // B changes the seat; its copy reaches car C, which has a camera: the
    // watermark B could not use arrives intact.
    let mut b = on_b.profile;
    b.set(
        key("seat.driver.position"),
        SettingValue::Int(60),
        6_000,
        CAR_B,
    );
    let on_c = merge(&Profile::new(0), &b, all);
    assert!(on_c.carried.is_empty());
    assert!(
        on_c.apply
            .contains(&(key("camera.watermark"), SettingValue::Bool(true)))
    );
    assert!(
        on_c.apply
            .contains(&(key("seat.driver.position"), SettingValue::Int(60)))
    );
}

#[test]
fn r26_a_car_whose_clock_went_back_still_changes_the_setting() {
    let mut p = Profile::new(0);
    p.set(
        key("drive.mode"),
        SettingValue::Text("eco".into()),
        10_000,
        CAR_A,
    );
    // The clock now reads earlier than the last change.
    p.set(
        key("drive.mode"),
        SettingValue::Text("comfort".into()),
        9_000,
        CAR_A,
    );
    let s: &Stamped = &p.settings[&key("drive.mode")];
    assert_eq!(s.value, SettingValue::Text("comfort".into()));
    assert_eq!(s.modified_ms, 10_001);
}

/// A small deterministic generator, for many profiles.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn random_profile(rng: &mut Rng) -> Profile {
    let writers = [CAR_A, CAR_B, WriterId([0xc0; 8])];
    let mut p = Profile::new(rng.next(1_000));
    for name in ["seat", "mirror", "climate", "mode", "watermark"] {
        if rng.next(3) > 0 {
            p.settings.insert(
                key(name),
                Stamped {
                    value: SettingValue::Int(rng.next(4) as i64),
                    // Few distinct times: many ties.
                    modified_ms: rng.next(3),
                    writer: writers[rng.next(3) as usize],
                },
            );
        }
    }
    p
}

#[test]
fn r26_every_car_that_saw_the_same_copies_holds_the_same_profile_in_any_order() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2_000 {
        let (a, b, c) = (
            random_profile(&mut rng),
            random_profile(&mut rng),
            random_profile(&mut rng),
        );
        let m = |x: &Profile, y: &Profile| merge(x, y, all).profile;
        assert_eq!(m(&a, &b), m(&b, &a), "not commutative");
        assert_eq!(m(&m(&a, &b), &c), m(&a, &m(&b, &c)), "not associative");
        assert_eq!(m(&a, &a), a, "not idempotent");
        // Merging again what is already in changes nothing and applies nothing.
        let ab = m(&a, &b);
        let again = merge(&ab, &b, all);
        assert_eq!(again.profile, ab);
        assert!(again.apply.is_empty());
    }
}
