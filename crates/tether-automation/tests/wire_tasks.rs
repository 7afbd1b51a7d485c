//! Tasks on the wire (SPEC §18.1): every model variant survives an
//! encode/decode round trip exactly; the decoder refuses what the model
//! cannot hold, bounds depth and sizes the way validation does, and never
//! recurses on a hostile nesting; the service's requests take fields
//! 200–210 of the envelope and a home event has no room for a coordinate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use prost::Message;
use tether_automation::wire::{
    self, HomeEvent, WireError, decode_task, encode_task, home_event_from_proto,
    home_event_to_proto, task_from_proto, task_to_proto,
};
use tether_automation::{
    Action, AppIntent, Branch, Change, ClockTime, Condition, DayTime, DeviceActionId,
    MAX_ACTION_NODES, MAX_BRANCHES, MAX_CONDITION_NODES, MAX_NESTING, MAX_TRIGGERS, MissedPolicy,
    Mode, Permissions, PlaceId, Recipients, Site, SunEvent, Task, TaskId, Test, Transition,
    Trigger, ValidationError, Value, VehicleCommand, VehicleEvent, Weekday, Weekdays,
};
use tether_proto::v1 as pb;

/// A task that uses every trigger, condition, action, test, value, day
/// time and input variant (not a task the engine would run: it mixes
/// everything).
fn every_variant(mode: Mode, missed: MissedPolicy) -> Task {
    let all_tests = [
        Test::Equals(Value::Bool(true)),
        Test::NotEquals(Value::Text("eco".into())),
        Test::Above(-0.5),
        Test::Below(1e300),
        Test::Between {
            low: -3.25,
            high: 7.0,
        },
        Test::Equals(Value::Int(i64::MIN)),
        Test::Equals(Value::Double(-0.0)),
    ];
    let mut task = Task::new(TaskId(u64::MAX), "every variant ✓")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Enter,
        })
        .trigger(Trigger::Place {
            place: office(),
            transition: Transition::Leave,
        })
        .trigger(Trigger::Signal {
            path: SOC.into(),
            change: Change::Any,
            hold_ms: 0,
        })
        .trigger(Trigger::Signal {
            path: SPEED.into(),
            change: Change::Becomes(Test::Above(120.0)),
            hold_ms: u64::MAX,
        })
        .trigger(Trigger::Property {
            device: motion(),
            property: MOTION,
            change: Change::Becomes(Test::Equals(Value::Bool(true))),
            hold_ms: 5_000,
        })
        .trigger(Trigger::Time {
            at: ClockTime::new(23, 59, 59).unwrap(),
            weekdays: Weekdays::of(&[Weekday::Monday, Weekday::Sunday]),
        })
        .trigger(Trigger::Time {
            at: ClockTime::hm(0, 0),
            weekdays: Weekdays::NONE,
        })
        .trigger(Trigger::Sun {
            event: SunEvent::Sunset,
            offset_min: -720,
            place: home(),
            weekdays: Weekdays::ALL,
        })
        .trigger(Trigger::Sun {
            event: SunEvent::Sunrise,
            offset_min: 720,
            place: office(),
            weekdays: Weekdays::WEEKEND,
        })
        .trigger(Trigger::Manual);
    for event in vehicle_events() {
        task = task.trigger(Trigger::Vehicle(event));
    }
    for test in &all_tests {
        task = task.condition(Condition::Signal {
            path: SOC.into(),
            test: test.clone(),
        });
    }
    task = task
        .condition(Condition::All(vec![]))
        .condition(Condition::Any(vec![
            Condition::Not(Box::new(Condition::Place {
                place: home(),
                inside: true,
            })),
            Condition::Place {
                place: office(),
                inside: false,
            },
            Condition::Property {
                device: lamp(),
                property: BRIGHTNESS,
                test: Test::Between {
                    low: 10.0,
                    high: 20.0,
                },
            },
        ]))
        .condition(Condition::TimeWindow {
            after: Some(DayTime::Clock(ClockTime::hm(22, 30))),
            before: Some(DayTime::Sun {
                event: SunEvent::Sunrise,
                offset_min: 15,
                place: home(),
            }),
            weekdays: Weekdays::WORKDAYS,
        })
        .condition(Condition::TimeWindow {
            after: None,
            before: None,
            weekdays: Weekdays::ALL,
        });
    for event in vehicle_events() {
        task = task.condition(Condition::Vehicle(event));
    }
    let commands = [
        VehicleCommand::Lock,
        VehicleCommand::Unlock,
        VehicleCommand::Climate {
            on: true,
            target_celsius: Some(21.5),
        },
        VehicleCommand::Climate {
            on: false,
            target_celsius: None,
        },
        VehicleCommand::Climate {
            on: true,
            target_celsius: Some(0.0),
        },
        VehicleCommand::Window { percent_open: 0 },
        VehicleCommand::Window { percent_open: 255 },
        VehicleCommand::FlashHonk {
            flash: true,
            honk: false,
        },
    ];
    for command in commands {
        task = task.action(Action::Vehicle(command));
    }
    task.action(Action::SetProperty {
        device: lamp(),
        property: BRIGHTNESS,
        value: Value::Int(-7),
    })
    .action(Action::DeviceAction {
        device: garage(),
        action: CLOSE,
        arguments: vec![
            Value::Bool(false),
            Value::Int(3),
            Value::Double(2.5),
            Value::Text(String::new()),
        ],
    })
    .action(Action::DeviceAction {
        device: garage(),
        action: DeviceActionId { siid: 9, aiid: 0 },
        arguments: vec![],
    })
    .action(Action::App(AppIntent::Navigate {
        destination: office(),
    }))
    .action(Action::App(AppIntent::Notify {
        recipients: Recipients::Owner,
        message: "hello".into(),
    }))
    .action(Action::App(AppIntent::Notify {
        recipients: Recipients::OwnerAndAuthorised,
        message: "everyone".into(),
    }))
    .action(Action::Delay { ms: 0 })
    .action(Action::Choose {
        branches: vec![
            Branch {
                conditions: vec![Condition::Vehicle(VehicleEvent::Parked)],
                actions: vec![Action::Delay { ms: 1_000 }],
            },
            Branch {
                conditions: vec![],
                actions: vec![],
            },
        ],
        otherwise: vec![Action::Choose {
            branches: vec![Branch {
                conditions: vec![],
                actions: vec![set_power(porch(), true)],
            }],
            otherwise: vec![],
        }],
    })
    .mode(mode)
    .missed(missed)
    .declare_inputs()
}

fn vehicle_events() -> [VehicleEvent; 6] {
    [
        VehicleEvent::Parked,
        VehicleEvent::Driving,
        VehicleEvent::Locked,
        VehicleEvent::Unlocked,
        VehicleEvent::ChargingStarted,
        VehicleEvent::ChargingStopped,
    ]
}

#[test]
fn every_variant_round_trips_exactly() {
    let modes = [
        Mode::Single,
        Mode::Restart,
        Mode::Queued { max: 1 },
        Mode::Queued { max: u16::MAX },
        Mode::Parallel { max: 100 },
    ];
    let policies = [
        MissedPolicy::Skip,
        MissedPolicy::RunLate { grace_ms: 0 },
        MissedPolicy::RunLate { grace_ms: u64::MAX },
    ];
    for mode in modes {
        for missed in policies {
            let task = every_variant(mode, missed);
            // Every input variant is declared.
            let inputs: Vec<String> = task.inputs.iter().map(|i| format!("{i}")).collect();
            for prefix in ["place", "signal", "property", "vehicle state"] {
                assert!(inputs.iter().any(|i| i.starts_with(prefix)), "{prefix}");
            }
            let bytes = encode_task(&task);
            assert_eq!(decode_task(&bytes), Ok(task.clone()));
            assert_eq!(task_from_proto(task_to_proto(&task)), Ok(task.clone()));
            // And the bytes are stable: the decoded task encodes the same.
            assert_eq!(encode_task(&decode_task(&bytes).unwrap()), bytes);
        }
    }
}

#[test]
fn an_installed_task_decodes_and_validates_again() {
    let task = Task::new(TaskId(7), "evening")
        .trigger(Trigger::Sun {
            event: SunEvent::Sunset,
            offset_min: -30,
            place: home(),
            weekdays: Weekdays::ALL,
        })
        .condition(Condition::Place {
            place: home(),
            inside: true,
        })
        .action(set_power(porch(), true))
        .declare_inputs();
    let mut h = Harness::new(Site::HeadUnit);
    h.engine.validate(&task, &Permissions::ALL).unwrap();
    let decoded = decode_task(&encode_task(&task)).unwrap();
    h.engine.validate(&decoded, &Permissions::ALL).unwrap();
    h.install(decoded);
}

fn proto(task: &Task) -> pb::Task {
    task_to_proto(task)
}

fn simple() -> Task {
    Task::new(TaskId(1), "simple")
        .trigger(Trigger::Manual)
        .action(set_power(lamp(), true))
        .declare_inputs()
}

#[test]
fn empty_oneofs_and_unspecified_enums_are_refused() {
    let mut m = proto(&simple());
    m.triggers[0].kind = None;
    assert_eq!(task_from_proto(m), Err(WireError::Missing("Trigger.kind")));

    let mut m = proto(&simple());
    m.mode = None;
    assert_eq!(task_from_proto(m), Err(WireError::Missing("Task.mode")));

    let mut m = proto(&simple());
    m.missed = None;
    assert_eq!(task_from_proto(m), Err(WireError::Missing("Task.missed")));

    let mut m = proto(&simple());
    m.mode.as_mut().unwrap().kind = 0;
    assert_eq!(task_from_proto(m), Err(WireError::Missing("Mode.kind")));

    let mut m = proto(&simple());
    m.mode.as_mut().unwrap().kind = 99;
    assert_eq!(
        task_from_proto(m),
        Err(WireError::UnknownEnum {
            field: "Mode.kind",
            value: 99
        })
    );

    let place = Task::new(TaskId(1), "p")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Enter,
        })
        .action(set_power(lamp(), true));
    let mut m = proto(&place);
    if let Some(pb::trigger::Kind::Place(p)) = m.triggers[0].kind.as_mut() {
        p.transition = 0;
    }
    assert_eq!(task_from_proto(m), Err(WireError::Missing("Transition")));
    assert_eq!(
        wire::vehicle_event_from_proto(7),
        Err(WireError::UnknownEnum {
            field: "VehicleEvent",
            value: 7
        })
    );

    let mut m = proto(&simple());
    if let Some(pb::action::Kind::SetProperty(s)) = m.actions[0].kind.as_mut() {
        s.value = Some(pb::Value { kind: None });
    }
    assert_eq!(task_from_proto(m), Err(WireError::Missing("Value.kind")));
}

#[test]
fn non_finite_numbers_are_refused() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let with_threshold = Task::new(TaskId(1), "t")
            .trigger(Trigger::Signal {
                path: SOC.into(),
                change: Change::Becomes(Test::Below(bad)),
                hold_ms: 0,
            })
            .action(set_power(lamp(), true));
        assert_eq!(
            decode_task(&encode_task(&with_threshold)),
            Err(WireError::NotFinite("Test.below"))
        );
        // Device-action arguments are not checked by validation: the
        // decoder refuses them itself.
        let argument =
            Task::new(TaskId(1), "t")
                .trigger(Trigger::Manual)
                .action(Action::DeviceAction {
                    device: garage(),
                    action: CLOSE,
                    arguments: vec![Value::Double(bad)],
                });
        assert_eq!(
            decode_task(&encode_task(&argument)),
            Err(WireError::NotFinite("Value.double_value"))
        );
    }
    let climate = Task::new(TaskId(1), "t")
        .trigger(Trigger::Manual)
        .action(Action::Vehicle(VehicleCommand::Climate {
            on: true,
            target_celsius: Some(f32::NAN),
        }));
    assert_eq!(
        decode_task(&encode_task(&climate)),
        Err(WireError::NotFinite("Climate.target_celsius"))
    );
}

#[test]
fn numbers_outside_the_model_are_refused() {
    let time = Task::new(TaskId(1), "t")
        .trigger(Trigger::Time {
            at: ClockTime::hm(7, 0),
            weekdays: Weekdays::ALL,
        })
        .action(set_power(lamp(), true));
    let mut m = proto(&time);
    if let Some(pb::trigger::Kind::Time(t)) = m.triggers[0].kind.as_mut() {
        t.weekdays = 0x80;
    }
    assert_eq!(
        task_from_proto(m),
        Err(WireError::OutOfRange("Trigger.Time.weekdays"))
    );
    let mut m = proto(&time);
    if let Some(pb::trigger::Kind::Time(t)) = m.triggers[0].kind.as_mut() {
        t.at = Some(pb::ClockTime {
            hour: 24,
            minute: 0,
            second: 0,
        });
    }
    assert_eq!(task_from_proto(m), Err(WireError::OutOfRange("ClockTime")));

    // i32::MIN has no absolute value: refused before validation sees it.
    let mut sun = Task::new(TaskId(1), "t")
        .trigger(Trigger::Sun {
            event: SunEvent::Sunrise,
            offset_min: 0,
            place: home(),
            weekdays: Weekdays::ALL,
        })
        .action(set_power(lamp(), true));
    if let Trigger::Sun { offset_min, .. } = &mut sun.triggers[0] {
        *offset_min = i32::MIN;
    }
    assert_eq!(
        decode_task(&encode_task(&sun)),
        Err(WireError::OutOfRange("offset_min"))
    );

    let mut m = proto(&simple());
    m.mode = Some(pb::Mode {
        kind: pb::mode::Kind::Single.into(),
        max: 3,
    });
    assert_eq!(task_from_proto(m), Err(WireError::OutOfRange("Mode.max")));
    let mut m = proto(&simple());
    m.mode = Some(pb::Mode {
        kind: pb::mode::Kind::Queued.into(),
        max: 70_000,
    });
    assert_eq!(task_from_proto(m), Err(WireError::OutOfRange("Mode.max")));

    let mut m = proto(&simple());
    m.actions = vec![pb::Action {
        kind: Some(pb::action::Kind::Vehicle(pb::action::VehicleCommand {
            kind: Some(pb::action::vehicle_command::Kind::Window(
                pb::action::vehicle_command::Window { percent_open: 256 },
            )),
        })),
    }];
    assert_eq!(
        task_from_proto(m),
        Err(WireError::OutOfRange("Window.percent_open"))
    );
}

/// `Not` nested `levels` deep around a vehicle condition.
fn nested_not(levels: usize) -> Condition {
    let mut c = Condition::Vehicle(VehicleEvent::Parked);
    for _ in 1..levels {
        c = Condition::Not(Box::new(c));
    }
    c
}

/// `Choose` nested so its innermost action sits at `levels`.
fn nested_choose(levels: usize) -> Action {
    let mut a = Action::Delay { ms: 1 };
    for _ in 1..levels {
        a = Action::Choose {
            branches: vec![Branch {
                conditions: vec![],
                actions: vec![a],
            }],
            otherwise: vec![],
        };
    }
    a
}

#[test]
fn the_decoder_counts_limits_the_way_validation_does() {
    let h = Harness::new(Site::HeadUnit);
    let check = |task: Task, fits: bool, what: &'static str| {
        let task = task.declare_inputs();
        let decoded = decode_task(&encode_task(&task));
        let validated = h.engine.validate(&task, &Permissions::ALL);
        if fits {
            assert_eq!(decoded, Ok(task), "{what}");
            assert_eq!(validated, Ok(()), "{what}");
        } else {
            assert_eq!(decoded, Err(WireError::TooLarge(what)));
            assert!(
                matches!(validated, Err(ValidationError::TooLarge { .. })),
                "{what}: {validated:?}"
            );
        }
    };
    let base = || Task::new(TaskId(1), "limits").trigger(Trigger::Manual);
    for (levels, fits) in [(MAX_NESTING, true), (MAX_NESTING + 1, false)] {
        check(
            base()
                .condition(nested_not(levels))
                .action(Action::Delay { ms: 1 }),
            fits,
            "nesting",
        );
        check(base().action(nested_choose(levels)), fits, "nesting");
    }
    for (n, fits) in [
        (MAX_CONDITION_NODES, true),
        (MAX_CONDITION_NODES + 1, false),
    ] {
        let mut t = base().action(Action::Delay { ms: 1 });
        // Half at the top, half in a choose branch: both count.
        for _ in 0..n / 2 {
            t = t.condition(Condition::Vehicle(VehicleEvent::Parked));
        }
        t = t.action(Action::Choose {
            branches: vec![Branch {
                conditions: vec![Condition::Vehicle(VehicleEvent::Locked); n - n / 2],
                actions: vec![],
            }],
            otherwise: vec![],
        });
        check(t, fits, "conditions");
    }
    for (n, fits) in [(MAX_ACTION_NODES, true), (MAX_ACTION_NODES + 1, false)] {
        let mut t = base();
        for _ in 0..n {
            t = t.action(Action::Delay { ms: 1 });
        }
        check(t, fits, "actions");
    }
    let branches = |n: usize| Action::Choose {
        branches: vec![
            Branch {
                conditions: vec![],
                actions: vec![],
            };
            n
        ],
        otherwise: vec![],
    };
    check(base().action(branches(MAX_BRANCHES)), true, "");
    check(
        base().action(branches(MAX_BRANCHES + 1)),
        false,
        "Choose.branches",
    );
    let mut t = base().action(Action::Delay { ms: 1 });
    for _ in 0..MAX_TRIGGERS {
        t = t.trigger(Trigger::Manual);
    }
    check(t, false, "Task.triggers");
    let long_name = Task::new(TaskId(1), "x".repeat(65))
        .trigger(Trigger::Manual)
        .action(Action::Delay { ms: 1 });
    assert_eq!(
        decode_task(&encode_task(&long_name)),
        Err(WireError::TooLarge("Task.name"))
    );
    assert_eq!(
        h.engine.validate(&long_name, &Permissions::ALL),
        Err(ValidationError::BadName)
    );
}

/// Varint `n`.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A length-delimited field `field` holding `inner`.
fn delimited(field: u32, inner: &[u8]) -> Vec<u8> {
    let mut out = varint(((field << 3) | 2) as usize);
    out.extend(varint(inner.len()));
    out.extend_from_slice(inner);
    out
}

#[test]
fn hostile_nesting_is_refused_without_deep_recursion() {
    // 2 000 `Condition.not` (field 3) inside one task condition (field
    // 4): prost stops at its recursion limit (100).
    let mut inner = Vec::new();
    for _ in 0..2_000 {
        inner = delimited(3, &inner);
    }
    let bytes = delimited(4, &inner);
    assert!(matches!(decode_task(&bytes), Err(WireError::Decode(_))));

    // Within prost's limit but past the engine's: refused by depth, the
    // conversion never going deeper than the limit.
    let mut inner = vec![0x40, 1]; // Condition.vehicle (field 8) = PARKED
    for _ in 0..60 {
        inner = delimited(3, &inner);
    }
    let mut bytes = delimited(4, &inner);
    bytes.extend(proto(&simple()).encode_to_vec());
    assert_eq!(decode_task(&bytes), Err(WireError::TooLarge("nesting")));
}

#[test]
fn requests_and_responses_take_fields_200_to_210() {
    use pb::request::Kind as Rq;
    use pb::response::Kind as Rs;
    let task = || Some(task_to_proto(&simple()));
    let requests: [(u32, Rq); 11] = [
        (
            200,
            Rq::CreateTask(pb::CreateTask {
                task: task(),
                enabled: true,
            }),
        ),
        (
            201,
            Rq::UpdateTask(pb::UpdateTask {
                task_id: 1,
                task: task(),
            }),
        ),
        (202, Rq::DeleteTask(pb::DeleteTask { task_id: 1 })),
        (203, Rq::ListTasks(pb::ListTasks {})),
        (204, Rq::RunTask(pb::RunTask { task_id: 1 })),
        (
            205,
            Rq::GetTraces(pb::GetTraces {
                task_id: 1,
                limit: 5,
            }),
        ),
        (
            206,
            Rq::ShareTask(pb::ShareTask {
                task_id: 1,
                nickname: "Ana".into(),
                name: "Lock up".into(),
            }),
        ),
        (
            207,
            Rq::AcceptTemplate(pb::AcceptTemplate {
                template: None,
                binding: None,
                enabled: true,
            }),
        ),
        (
            208,
            Rq::SetTaskEnabled(pb::SetTaskEnabled {
                task_id: 1,
                enabled: false,
            }),
        ),
        (209, Rq::WatchHomeEvents(pb::WatchHomeEvents::default())),
        (210, Rq::SetCarDataToHome(pb::SetCarDataToHome { on: true })),
    ];
    for (field, kind) in requests {
        let bytes = pb::Request { kind: Some(kind) }.encode_to_vec();
        assert_eq!(
            bytes[..2],
            varint(((field << 3) | 2) as usize)[..],
            "{field}"
        );
    }
    let responses: [(u32, Rs); 7] = [
        (200, Rs::TaskInfo(pb::TaskInfo::default())),
        (201, Rs::TaskList(pb::TaskList::default())),
        (202, Rs::RunStarted(pb::RunStarted { run_id: 3 })),
        (203, Rs::TraceList(pb::TraceList::default())),
        (204, Rs::TaskTemplate(pb::TaskTemplate::default())),
        (205, Rs::HomeEvent(pb::HomeEvent::default())),
        (206, Rs::ConsentState(pb::ConsentState::default())),
    ];
    for (field, kind) in responses {
        let bytes = pb::Response { kind: Some(kind) }.encode_to_vec();
        assert_eq!(
            bytes[..2],
            varint(((field << 3) | 2) as usize)[..],
            "{field}"
        );
    }
}

#[test]
fn home_events_round_trip() {
    let events = [
        HomeEvent::Place {
            place: PlaceId::new("home"),
            transition: Transition::Leave,
        },
        HomeEvent::Vehicle(VehicleEvent::ChargingStarted),
        HomeEvent::Consent {
            car_data_to_home: false,
        },
    ];
    for event in events {
        let bytes = home_event_to_proto(&event).encode_to_vec();
        let decoded = pb::HomeEvent::decode(bytes.as_slice()).unwrap();
        assert_eq!(home_event_from_proto(decoded), Ok(event));
    }
    assert_eq!(
        home_event_from_proto(pb::HomeEvent::default()),
        Err(WireError::Missing("HomeEvent.kind"))
    );
}

/// The body of `message Name { … }` in `proto` (top level, balanced braces).
fn message_body<'a>(proto: &'a str, name: &str) -> &'a str {
    let start = proto
        .find(&format!("\nmessage {name} {{"))
        .unwrap_or_else(|| panic!("message {name}"));
    let mut depth = 0;
    for (i, c) in proto[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &proto[start..start + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced {name}")
}

#[test]
fn r10_a_home_event_has_no_field_for_a_coordinate() {
    let proto = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../proto/tether/v1/automation.proto"
    ))
    .unwrap();
    for message in [
        "HomeEvent",
        "PlaceTransition",
        "VehicleEventNotice",
        "ConsentState",
    ] {
        let body = message_body(&proto, message);
        for word in ["double ", "float ", "GeoPoint", "bytes ", "fixed", "LatLon"] {
            assert!(
                !body.contains(word),
                "{message} has a `{word}` field:\n{body}"
            );
        }
    }
    // And a task has none either: numbers in it are thresholds, values
    // and the climate target only.
    let task_numbers = ["double ", "float "];
    for message in ["Trigger", "Condition", "DayTime", "Input", "Task"] {
        let body = message_body(&proto, message);
        for word in task_numbers {
            assert!(!body.contains(word), "{message}: {body}");
        }
    }
}
