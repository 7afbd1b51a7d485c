//! Sharing a task (R22): the template shows the sharer's nickname and the
//! task, and holds nothing that identifies the sharer's places or devices:
//! no coordinate in any encoding, no place or device id, no notification
//! text. Bound to the recipient's own places and devices it validates and
//! runs on the recipient's engine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use std::collections::BTreeMap;

use common::*;
use tether_automation::wire::{
    WireError, binding_from_proto, binding_to_proto, decode_template, encode_template,
    template_to_proto,
};
use tether_automation::{
    Action, AppIntent, Binding, Branch, Catalogue, ClockTime, Condition, DayTime, DeviceId,
    DeviceSpec, Effect, Engine, LatLon, Permissions, Place, PlaceId, PlaceSlot, PropertySpec,
    PropertyUse, Recipients, Site, SunEvent, Task, TaskId, Template, TemplateError, Test,
    Transition, Trigger, Value, ValueKind, Weekdays,
};

// The sharer's world: distinctive names and coordinates to search for.
const GRANDMA: &str = "Oma Hilde, Lindenweg 7";
const PRACTICE: &str = "Praxis Dr. Kaya";
const GRANDMA_AT: LatLon = LatLon::new(47.654_321_9, 9.182_736_4);
const PRACTICE_AT: LatLon = LatLon::new(52.519_876_5, 13.401_234_5);
const SHARER_LAMP: &str = "a1f3c9e2-sharer-lamp";
const SHARER_MOTION: &str = "7b0d44e1-sharer-motion";
const SHARER_GARAGE: &str = "c0ffee99-sharer-garage";
const NOTE: &str = "Angekommen bei Oma Hilde";

fn grandma() -> PlaceId {
    PlaceId::new(GRANDMA)
}
fn practice() -> PlaceId {
    PlaceId::new(PRACTICE)
}
fn sharer_lamp() -> DeviceId {
    DeviceId::new(SHARER_LAMP)
}
fn sharer_motion() -> DeviceId {
    DeviceId::new(SHARER_MOTION)
}
fn sharer_garage() -> DeviceId {
    DeviceId::new(SHARER_GARAGE)
}

fn sharer_catalogue() -> Catalogue {
    let rw = |kind| PropertySpec {
        kind,
        readable: true,
        writable: true,
    };
    Catalogue::new()
        .with_device(
            sharer_lamp(),
            DeviceSpec::default()
                .property(POWER, rw(ValueKind::Bool))
                .property(BRIGHTNESS, rw(ValueKind::Int)),
        )
        .with_device(
            sharer_motion(),
            DeviceSpec::default().property(
                MOTION,
                PropertySpec {
                    kind: ValueKind::Bool,
                    readable: true,
                    writable: false,
                },
            ),
        )
        .with_device(
            sharer_garage(),
            DeviceSpec::default()
                .property(POWER, rw(ValueKind::Bool))
                .action(CLOSE, 0),
        )
}

/// "Welcome at grandma's": every kind of place and device use.
fn sharers_task() -> Task {
    Task::new(TaskId(41), "welcome")
        .trigger(Trigger::Place {
            place: grandma(),
            transition: Transition::Enter,
        })
        .trigger(Trigger::Sun {
            event: SunEvent::Sunset,
            offset_min: -15,
            place: grandma(),
            weekdays: Weekdays::ALL,
        })
        .trigger(Trigger::Property {
            device: sharer_motion(),
            property: MOTION,
            change: tether_automation::Change::Becomes(Test::Equals(Value::Bool(true))),
            hold_ms: 0,
        })
        .condition(Condition::Any(vec![
            Condition::Place {
                place: grandma(),
                inside: true,
            },
            Condition::TimeWindow {
                after: Some(DayTime::Sun {
                    event: SunEvent::Sunset,
                    offset_min: 0,
                    place: practice(),
                }),
                before: Some(DayTime::Clock(ClockTime::hm(23, 0))),
                weekdays: Weekdays::ALL,
            },
            Condition::Property {
                device: sharer_lamp(),
                property: BRIGHTNESS,
                test: Test::Below(50.0),
            },
        ]))
        .action(Action::SetProperty {
            device: sharer_lamp(),
            property: POWER,
            value: Value::Bool(true),
        })
        .action(Action::DeviceAction {
            device: sharer_garage(),
            action: CLOSE,
            arguments: vec![],
        })
        .action(Action::App(AppIntent::Navigate {
            destination: practice(),
        }))
        .action(Action::App(AppIntent::Notify {
            recipients: Recipients::OwnerAndAuthorised,
            message: NOTE.into(),
        }))
        .action(Action::Choose {
            branches: vec![Branch {
                conditions: vec![Condition::Property {
                    device: sharer_lamp(),
                    property: POWER,
                    test: Test::Equals(Value::Bool(true)),
                }],
                actions: vec![Action::SetProperty {
                    device: sharer_lamp(),
                    property: BRIGHTNESS,
                    value: Value::Int(80),
                }],
            }],
            otherwise: vec![],
        })
        .declare_inputs()
}

/// The task is a real one: the sharer's engine accepts it.
fn sharers_engine() -> Engine {
    let mut engine = Engine::new(config(Site::HeadUnit), sharer_catalogue());
    engine
        .add_place(Place::circle(GRANDMA, GRANDMA_AT, 120.0))
        .unwrap();
    engine
        .add_place(Place::circle(PRACTICE, PRACTICE_AT, 80.0))
        .unwrap();
    engine
        .install(sharers_task(), &Permissions::ALL, MONDAY_MS)
        .unwrap();
    engine
}

fn template() -> Template {
    let engine = sharers_engine();
    let task = engine.task(TaskId(41)).unwrap();
    Template::from_task_with(task, "Ana", engine.catalogue())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every way a coordinate could be written into bytes.
fn encodings_of(x: f64) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("f64 LE".into(), x.to_le_bytes().to_vec()),
        ("f64 BE".into(), x.to_be_bytes().to_vec()),
        ("f32 LE".into(), (x as f32).to_le_bytes().to_vec()),
        ("f32 BE".into(), (x as f32).to_be_bytes().to_vec()),
        (
            "E7 LE".into(),
            ((x * 1e7).round() as i32).to_le_bytes().to_vec(),
        ),
        (
            "E7 text".into(),
            format!("{}", (x * 1e7).round() as i64).into_bytes(),
        ),
    ];
    for precision in 2..=7 {
        out.push((
            format!("text .{precision}"),
            format!("{x:.precision$}").into_bytes(),
        ));
        // Decimal comma, as some locales write it.
        out.push((
            format!("text ,{precision}"),
            format!("{x:.precision$}").replace('.', ",").into_bytes(),
        ));
    }
    out
}

#[test]
fn r22_template_holds_no_coordinate_or_device_id() {
    let bytes = encode_template(&template());
    for (name, at) in [("grandma", GRANDMA_AT), ("practice", PRACTICE_AT)] {
        for x in [at.lat, at.lon] {
            for (how, needle) in encodings_of(x) {
                assert!(
                    !contains(&bytes, &needle),
                    "{name}'s coordinate {x} ({how}) is in the template"
                );
            }
        }
    }
    for id in [
        GRANDMA,
        PRACTICE,
        "Lindenweg",
        "Hilde",
        "Kaya",
        SHARER_LAMP,
        SHARER_MOTION,
        SHARER_GARAGE,
        "sharer",
        NOTE,
    ] {
        assert!(
            !contains(&bytes, id.as_bytes()),
            "`{id}` is in the template"
        );
    }
    // What the share page shows is there.
    assert!(contains(&bytes, b"Ana"));
    assert!(contains(&bytes, b"welcome"));
}

#[test]
fn r22_template_keeps_the_structure_and_says_what_each_slot_needs() {
    let t = template();
    assert_eq!(t.nickname, "Ana");
    assert_eq!(t.task.id, TaskId(0));
    assert_eq!(t.task.name, "welcome");
    assert_eq!(t.task.triggers.len(), 3);
    assert_eq!(t.task.actions.len(), 5);
    assert_eq!(
        t.places,
        vec![
            PlaceSlot {
                slot: "place-1".into(),
                geofence: true,
                sun: true,
                destination: false,
            },
            PlaceSlot {
                slot: "place-2".into(),
                geofence: false,
                sun: true,
                destination: true,
            },
        ]
    );
    let slots: Vec<&str> = t.devices.iter().map(|d| d.slot.as_str()).collect();
    assert_eq!(slots, ["device-1", "device-2", "device-3"]);
    // device-1 is the motion sensor (first named, by a trigger).
    let motion_use = PropertyUse {
        kind: Some(ValueKind::Bool),
        read: true,
        write: false,
    };
    assert_eq!(
        t.devices[0].properties,
        BTreeMap::from([(MOTION, motion_use)])
    );
    // device-2 is the lamp: brightness read (kind from the catalogue) and
    // written, power written and read.
    let light = &t.devices[1];
    assert_eq!(light.properties[&BRIGHTNESS].kind, Some(ValueKind::Int));
    assert!(light.properties[&BRIGHTNESS].read && light.properties[&BRIGHTNESS].write);
    assert!(light.properties[&POWER].read && light.properties[&POWER].write);
    assert_eq!(t.devices[2].actions, BTreeMap::from([(CLOSE, 0)]));
    assert_eq!(t.messages, ["message-1"]);
    // Thresholds, times, offsets and the audience are kept.
    assert!(matches!(
        t.task.triggers[1],
        Trigger::Sun {
            offset_min: -15,
            ..
        }
    ));
    assert!(t.task.actions.iter().any(|a| matches!(
        a,
        Action::App(AppIntent::Notify {
            recipients: Recipients::OwnerAndAuthorised,
            message,
        }) if message == "message-1"
    )));

    // Which of the recipient's devices fit which slot.
    let recipient = catalogue();
    let spec = |d: DeviceId| recipient.device(&d).unwrap().clone();
    assert!(t.devices[0].fits(&spec(motion())));
    // (A light's power is the same iid as the motion property: it fits
    // too; a device without it, or with another kind, does not.)
    assert!(t.devices[0].fits(&spec(lamp())));
    assert!(!t.devices[0].fits(&DeviceSpec::default()));
    let text = DeviceSpec::default().property(
        MOTION,
        PropertySpec {
            kind: ValueKind::Text,
            readable: true,
            writable: false,
        },
    );
    assert!(!t.devices[0].fits(&text));
    assert!(t.devices[1].fits(&spec(porch())));
    assert!(!t.devices[1].fits(&spec(garage())));
    assert!(t.devices[2].fits(&spec(garage())));
    assert!(!t.devices[2].fits(&spec(porch())));

    // Without the sharer's catalogue, kinds come from the task's values.
    let plain = Template::from_task(&sharers_task(), "Ana");
    assert_eq!(
        plain.devices[1].properties[&BRIGHTNESS].kind,
        Some(ValueKind::Int)
    );
    assert_eq!(
        plain.devices[1].properties[&POWER].kind,
        Some(ValueKind::Bool)
    );
    assert_eq!(plain.task, t.task);
}

fn recipients_binding() -> Binding {
    Binding {
        places: BTreeMap::from([("place-1".into(), home()), ("place-2".into(), office())]),
        devices: BTreeMap::from([
            ("device-1".into(), motion()),
            ("device-2".into(), porch()),
            ("device-3".into(), garage()),
        ]),
        messages: BTreeMap::from([("message-1".into(), "Welcome home".into())]),
    }
}

#[test]
fn r22_bound_template_validates_and_runs_on_the_recipients_devices() {
    // The recipient decodes what was sent, binds it to their own names and
    // installs it as it is: inputs included, nothing re-declared.
    let received = decode_template(&encode_template(&template())).unwrap();
    let bound = received.bind(&recipients_binding()).unwrap();
    assert_eq!(bound.id, TaskId(0));
    let task = Task {
        id: TaskId(5),
        ..bound
    };
    let mut h = Harness::new(Site::HeadUnit);
    h.engine
        .install(task, &Permissions::ALL, h.now)
        .expect("the bound task validates on the recipient's node");
    h.start();
    h.drain();

    // The car arrives at the recipient's home.
    h.fix(north_of(HOME, 2_000.0), 10.0);
    h.now += MINUTE;
    h.fix(HOME, 10.0);
    let requests = h.run_for(MINUTE);
    assert_eq!(writes(&requests), [("porch".to_owned(), Value::Bool(true))]);
    let effects: Vec<&Effect> = requests.iter().map(|r| &r.effect).collect();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::DeviceAction { device, .. } if *device == garage()))
    );
    assert!(effects.contains(&&Effect::App(AppIntent::Navigate {
        destination: office()
    })));
    assert!(effects.contains(&&Effect::App(AppIntent::Notify {
        recipients: Recipients::OwnerAndAuthorised,
        message: "Welcome home".into(),
    })));
    // Nothing of the sharer's reached the recipient's engine.
    let seen = format!("{:?}", h.seen);
    for id in [
        GRANDMA,
        PRACTICE,
        SHARER_LAMP,
        SHARER_MOTION,
        SHARER_GARAGE,
        NOTE,
    ] {
        assert!(!seen.contains(id), "{id}");
    }
}

#[test]
fn r22_binding_must_cover_exactly_the_slots() {
    let t = template();
    let mut missing = recipients_binding();
    missing.devices.remove("device-3");
    assert_eq!(
        t.bind(&missing),
        Err(TemplateError::Unbound("device-3".into()))
    );
    let mut extra = recipients_binding();
    extra.places.insert("place-9".into(), home());
    assert_eq!(
        t.bind(&extra),
        Err(TemplateError::UnknownSlot("place-9".into()))
    );
    let mut no_text = recipients_binding();
    no_text.messages.clear();
    assert_eq!(
        t.bind(&no_text),
        Err(TemplateError::Unbound("message-1".into()))
    );
    // A template whose task names something other than its slots is
    // malformed, whatever the binding.
    let mut forged = t.clone();
    forged.task.triggers[0] = Trigger::Place {
        place: home(),
        transition: Transition::Leave,
    };
    assert_eq!(
        forged.bind(&recipients_binding()),
        Err(TemplateError::NotASlot("home".into()))
    );
}

#[test]
fn r22_templates_and_bindings_round_trip_on_the_wire() {
    let t = template();
    assert_eq!(decode_template(&encode_template(&t)), Ok(t.clone()));
    let b = recipients_binding();
    assert_eq!(binding_from_proto(binding_to_proto(&b)), Ok(b));

    let mut twice = template_to_proto(&t);
    let first = twice.places[0].clone();
    twice.places.push(first);
    assert_eq!(
        tether_automation::wire::template_from_proto(twice),
        Err(WireError::Duplicate("PlaceSlot.slot"))
    );
    let mut long = template_to_proto(&t);
    long.nickname = "n".repeat(65);
    assert_eq!(
        tether_automation::wire::template_from_proto(long),
        Err(WireError::TooLarge("TaskTemplate.nickname"))
    );
}

#[test]
fn r22_a_long_nickname_is_cut_at_a_character_boundary() {
    let t = Template::from_task(&sharers_task(), &"ä".repeat(40));
    assert_eq!(t.nickname, "ä".repeat(32));
    assert!(decode_template(&encode_template(&t)).is_ok());
}
