//! Harness for super tasks on the wire (SPEC §18.1, §18.2): what a head unit
//! does with a `CreateTask` or an `AcceptTemplate` from a phone. Input: the
//! raw bytes, tried as a `Task` and as a `TaskTemplate`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use prost::Message;
use tether_automation::wire::{
    decode_task, decode_template, encode_task, encode_template, task_to_proto, template_to_proto,
};
use tether_automation::{
    Action, AppIntent, Binding, Branch, Catalogue, Change, ClockTime, CommandKind, Condition,
    Config, DayTime, DeviceActionId, DeviceId, DeviceSpec, Engine, LatLon, MissedPolicy, Mode,
    Permissions, Place, PlaceId, PropertyId, PropertySpec, Recipients, SignalSpec, SunEvent, Task,
    TaskId, Template, Test, Transition, Trigger, Value, ValueKind, VehicleCommand, VehicleEvent,
    Weekdays,
};

const SOC: &str = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current";
const IS_LOCKED: &str = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked";
const POWER: PropertyId = PropertyId::new(2, 1);
const BRIGHTNESS: PropertyId = PropertyId::new(2, 2);
const CLOSE: DeviceActionId = DeviceActionId { siid: 3, aiid: 1 };

/// Any bytes: a typed result, never a panic. A task or template that
/// decodes encodes back to bytes that decode to the same value; the engine
/// validates it (with one task installed, so loop detection runs); a
/// template made of a decoded task holds slots only and binds; a decoded
/// template binds to the fixture's names when its task names only slots.
pub fn automation_task(data: &[u8]) {
    let engine = engine();
    if let Ok(task) = decode_task(data) {
        let again = decode_task(&encode_task(&task));
        assert_eq!(again.as_ref(), Ok(&task), "a task round trip changed it");
        let _ = engine.validate(&task, &Permissions::ALL);
        let template = Template::from_task(&task, "fuzz");
        let again = decode_template(&encode_template(&template));
        assert_eq!(
            again.as_ref(),
            Ok(&template),
            "a template of a decoded task"
        );
        let bound = template
            .bind(&binding_for(&template))
            .expect("a template made here names only its slots");
        let _ = engine.validate(&bound, &Permissions::ALL);
    }
    if let Ok(template) = decode_template(data) {
        let again = decode_template(&encode_template(&template));
        assert_eq!(
            again.as_ref(),
            Ok(&template),
            "a template round trip changed it"
        );
        if let Ok(task) = template.bind(&binding_for(&template)) {
            assert_eq!(task.id, TaskId(0));
            let _ = engine.validate(&task, &Permissions::ALL);
        }
    }
}

/// Every slot of `template` bound to the fixture's home, the first of its
/// devices that fits (else the lamp) and a text.
fn binding_for(template: &Template) -> Binding {
    let catalogue = engine().catalogue();
    let fitting = |slot: &tether_automation::DeviceSlot| {
        ["lamp", "garage"]
            .into_iter()
            .map(DeviceId::new)
            .find(|d| catalogue.device(d).is_some_and(|spec| slot.fits(spec)))
            .unwrap_or_else(|| DeviceId::new("lamp"))
    };
    Binding {
        places: template
            .places
            .iter()
            .map(|p| (p.slot.clone(), PlaceId::new("home")))
            .collect(),
        devices: template
            .devices
            .iter()
            .map(|d| (d.slot.clone(), fitting(d)))
            .collect(),
        messages: template
            .messages
            .iter()
            .map(|m| (m.clone(), "hello".to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn catalogue() -> Catalogue {
    let rw = |kind| PropertySpec {
        kind,
        readable: true,
        writable: true,
    };
    Catalogue::new()
        .with_signal(SOC, SignalSpec::sensor(ValueKind::Double))
        .with_signal(
            IS_LOCKED,
            SignalSpec::actuator(ValueKind::Bool, &[CommandKind::Lock, CommandKind::Unlock]),
        )
        .with_device(
            DeviceId::new("lamp"),
            DeviceSpec::default()
                .property(POWER, rw(ValueKind::Bool))
                .property(BRIGHTNESS, rw(ValueKind::Int)),
        )
        .with_device(
            DeviceId::new("garage"),
            DeviceSpec::default()
                .property(POWER, rw(ValueKind::Bool))
                .action(CLOSE, 0),
        )
}

/// A head unit's engine with two places and one task, built once.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut engine = Engine::new(Config::default(), catalogue());
        engine
            .add_place(Place::circle("home", LatLon::new(48.137, 11.575), 150.0))
            .expect("a valid place");
        engine
            .add_place(Place::circle("office", LatLon::new(48.152, 11.575), 150.0))
            .expect("a valid place");
        engine
            .install(porch_light(), &Permissions::ALL, 0)
            .expect("a valid task");
        engine
    })
}

/// Installed in the fixture: the garage's power follows the lamp's.
fn porch_light() -> Task {
    Task::new(TaskId(1), "follow")
        .trigger(Trigger::Property {
            device: DeviceId::new("lamp"),
            property: POWER,
            change: Change::Any,
            hold_ms: 0,
        })
        .action(Action::SetProperty {
            device: DeviceId::new("garage"),
            property: POWER,
            value: Value::Bool(true),
        })
        .declare_inputs()
}

/// A task that validates against the fixture and uses most of the model.
fn evening() -> Task {
    Task::new(TaskId(2), "evening")
        .trigger(Trigger::Place {
            place: PlaceId::new("home"),
            transition: Transition::Enter,
        })
        .trigger(Trigger::Sun {
            event: SunEvent::Sunset,
            offset_min: -30,
            place: PlaceId::new("home"),
            weekdays: Weekdays::WORKDAYS,
        })
        .trigger(Trigger::Time {
            at: ClockTime::hm(18, 30),
            weekdays: Weekdays::WEEKEND,
        })
        .trigger(Trigger::Signal {
            path: SOC.into(),
            change: Change::Becomes(Test::Below(20.0)),
            hold_ms: 60_000,
        })
        .trigger(Trigger::Vehicle(VehicleEvent::Parked))
        .trigger(Trigger::Manual)
        .condition(Condition::Any(vec![
            Condition::Not(Box::new(Condition::Vehicle(VehicleEvent::Driving))),
            Condition::TimeWindow {
                after: Some(DayTime::Sun {
                    event: SunEvent::Sunset,
                    offset_min: 0,
                    place: PlaceId::new("office"),
                }),
                before: Some(DayTime::Clock(ClockTime::hm(23, 0))),
                weekdays: Weekdays::ALL,
            },
        ]))
        .condition(Condition::Property {
            device: DeviceId::new("lamp"),
            property: BRIGHTNESS,
            test: Test::Between {
                low: 0.0,
                high: 40.0,
            },
        })
        .action(Action::SetProperty {
            device: DeviceId::new("lamp"),
            property: BRIGHTNESS,
            value: Value::Int(80),
        })
        .action(Action::Delay { ms: 5_000 })
        .action(Action::Choose {
            branches: vec![Branch {
                conditions: vec![Condition::Place {
                    place: PlaceId::new("home"),
                    inside: true,
                }],
                actions: vec![Action::DeviceAction {
                    device: DeviceId::new("garage"),
                    action: CLOSE,
                    arguments: vec![],
                }],
            }],
            otherwise: vec![Action::App(AppIntent::Notify {
                recipients: Recipients::Owner,
                message: "not home".into(),
            })],
        })
        .action(Action::App(AppIntent::Navigate {
            destination: PlaceId::new("office"),
        }))
        .action(Action::Vehicle(VehicleCommand::Climate {
            on: true,
            target_celsius: Some(21.5),
        }))
        .action(Action::Vehicle(VehicleCommand::Lock))
        .mode(Mode::Queued { max: 3 })
        .missed(MissedPolicy::RunLate { grace_ms: 600_000 })
        .declare_inputs()
}

/// A length-delimited protobuf field.
fn delimited(field: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3) | 2];
    let mut n = inner.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(inner);
    out
}

pub(super) fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    let evening = evening();
    // The seeds start on the success path: the fixture accepts the task and
    // the bound template.
    engine()
        .validate(&evening, &Permissions::ALL)
        .expect("the evening seed validates");
    add("automation_task", "evening", encode_task(&evening));
    add("automation_task", "follow", encode_task(&porch_light()));
    let template = Template::from_task_with(&evening, "Ana", &catalogue());
    let bound = template
        .bind(&binding_for(&template))
        .expect("a template made here binds");
    engine()
        .validate(&bound, &Permissions::ALL)
        .expect("the bound template validates");
    add("automation_task", "template", encode_template(&template));

    // A template with a slot listed twice, and one whose task names a
    // place that is not a slot.
    let mut twice = template_to_proto(&template);
    twice.devices.extend(twice.devices.clone());
    add(
        "automation_task",
        "template_duplicate_slot",
        twice.encode_to_vec(),
    );
    let mut forged = template.clone();
    forged.task.triggers[0] = Trigger::Place {
        place: PlaceId::new("home"),
        transition: Transition::Leave,
    };
    add(
        "automation_task",
        "template_not_a_slot",
        encode_template(&forged),
    );

    // Numbers the model refuses: a NaN threshold, an unknown enum value.
    let mut nan = task_to_proto(&evening);
    if let Some(tether_proto::v1::trigger::Kind::Signal(s)) = nan.triggers[3].kind.as_mut() {
        s.change = Some(tether_proto::v1::Change {
            kind: Some(tether_proto::v1::change::Kind::Becomes(
                tether_proto::v1::Test {
                    kind: Some(tether_proto::v1::test::Kind::Below(f64::NAN)),
                },
            )),
        });
    }
    add("automation_task", "nan_threshold", nan.encode_to_vec());
    let mut unknown = task_to_proto(&evening);
    if let Some(mode) = unknown.mode.as_mut() {
        mode.kind = 42;
    }
    add("automation_task", "unknown_mode", unknown.encode_to_vec());

    // Nesting: past the engine's 8 levels, and past prost's 100.
    for (name, levels) in [("nested_9", 9), ("nested_200", 200)] {
        let mut inner = vec![0x40, 1]; // Condition.vehicle = PARKED
        for _ in 1..levels {
            inner = delimited(3, &inner); // Condition.not
        }
        let mut bytes = delimited(4, &inner); // Task.conditions
        bytes.extend(encode_task(&porch_light()));
        add("automation_task", name, bytes);
    }
    add("automation_task", "empty", Vec::new());
    add("automation_task", "garbage", vec![0xff; 7]);
}
