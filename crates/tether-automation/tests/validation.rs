//! Validation with typed errors (R20, R21, R23): unknown signals,
//! properties and places, values of the wrong kind, actions the author's
//! role may not perform, undeclared or unused inputs, and loops between a
//! task's actions and other tasks' triggers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use tether_automation::{
    Action, AppIntent, Capability, Change, Condition, DeviceId, Input, Mode, Permissions, PlaceId,
    PropertyId, Recipients, Site, Task, TaskId, Test, Trigger, ValidationError, Value, ValueKind,
    VehicleCommand, VehicleEvent,
};

fn base(id: u64) -> Task {
    Task::new(TaskId(id), "t").trigger(Trigger::Manual)
}

fn check(h: &Harness, task: Task) -> Result<(), ValidationError> {
    h.engine.validate(&task.declare_inputs(), &Permissions::ALL)
}

#[test]
fn unknown_names_are_refused_r20() {
    let h = Harness::new(Site::HeadUnit);
    let signal = base(1)
        .trigger(Trigger::Signal {
            path: "Vehicle.Nope".into(),
            change: Change::Any,
            hold_ms: 0,
        })
        .action(set_power(lamp(), true));
    assert_eq!(
        check(&h, signal),
        Err(ValidationError::UnknownSignal("Vehicle.Nope".into()))
    );
    let device = base(1).action(set_power(DeviceId::new("toaster"), true));
    assert_eq!(
        check(&h, device),
        Err(ValidationError::UnknownDevice(DeviceId::new("toaster")))
    );
    let property = base(1).action(Action::SetProperty {
        device: lamp(),
        property: PropertyId::new(9, 9),
        value: Value::Bool(true),
    });
    assert_eq!(
        check(&h, property),
        Err(ValidationError::UnknownProperty {
            device: lamp(),
            property: PropertyId::new(9, 9)
        })
    );
    let place = base(1)
        .condition(Condition::Place {
            place: PlaceId::new("moon"),
            inside: true,
        })
        .action(set_power(lamp(), true));
    assert_eq!(
        check(&h, place),
        Err(ValidationError::UnknownPlace(PlaceId::new("moon")))
    );
    let action = base(1).action(Action::DeviceAction {
        device: lamp(),
        action: CLOSE,
        arguments: vec![],
    });
    assert!(matches!(
        check(&h, action),
        Err(ValidationError::UnknownDeviceAction { .. })
    ));
}

#[test]
fn kinds_access_and_arguments_are_checked_r20() {
    let h = Harness::new(Site::HeadUnit);
    let threshold_on_bool = base(1)
        .condition(Condition::Signal {
            path: IS_LOCKED.into(),
            test: Test::Above(1.0),
        })
        .action(set_power(lamp(), true));
    assert_eq!(
        check(&h, threshold_on_bool),
        Err(ValidationError::TypeMismatch {
            what: IS_LOCKED.into(),
            expected: ValueKind::Bool
        })
    );
    let wrong_value = base(1).action(Action::SetProperty {
        device: lamp(),
        property: POWER,
        value: Value::Int(1),
    });
    assert!(matches!(
        check(&h, wrong_value),
        Err(ValidationError::TypeMismatch { .. })
    ));
    let read_only = base(1).action(Action::SetProperty {
        device: motion(),
        property: MOTION,
        value: Value::Bool(true),
    });
    assert!(matches!(
        check(&h, read_only),
        Err(ValidationError::PropertyNotWritable { .. })
    ));
    let arguments = base(1).action(Action::DeviceAction {
        device: garage(),
        action: CLOSE,
        arguments: vec![Value::Bool(true)],
    });
    assert!(matches!(
        check(&h, arguments),
        Err(ValidationError::WrongArguments {
            expected: 0,
            given: 1,
            ..
        })
    ));
    let nan = base(1)
        .condition(Condition::Signal {
            path: SOC.into(),
            test: Test::Below(f64::NAN),
        })
        .action(set_power(lamp(), true));
    assert!(matches!(
        check(&h, nan),
        Err(ValidationError::InvalidValue(_))
    ));
    assert_eq!(
        check(&h, Task::new(TaskId(1), "").trigger(Trigger::Manual)),
        Err(ValidationError::BadName)
    );
    assert_eq!(
        check(
            &h,
            Task::new(TaskId(1), "x").action(set_power(lamp(), true))
        ),
        Err(ValidationError::NoTrigger)
    );
    assert_eq!(check(&h, base(1)), Err(ValidationError::NoAction));
    assert!(matches!(
        check(
            &h,
            base(1)
                .action(set_power(lamp(), true))
                .mode(Mode::Queued { max: 0 })
        ),
        Err(ValidationError::InvalidValue(_))
    ));
}

#[test]
fn actions_the_authors_role_may_not_perform_are_refused_r23() {
    let h = Harness::new(Site::Hub);
    // A hub's role may not command the car (the session layer's table,
    // handed in as permissions).
    let hub = Permissions {
        vehicle_commands: false,
        ..Permissions::ALL
    };
    let lock = base(1).action(Action::Vehicle(VehicleCommand::Lock));
    assert_eq!(
        h.engine.validate(&lock.clone().declare_inputs(), &hub),
        Err(ValidationError::NotPermitted(Capability::CommandVehicle))
    );
    assert!(
        h.engine
            .validate(&lock.declare_inputs(), &Permissions::ALL)
            .is_ok()
    );
    let notify = base(2).action(Action::App(AppIntent::Notify {
        recipients: Recipients::Owner,
        message: "hi".into(),
    }));
    assert_eq!(
        h.engine
            .validate(&notify.declare_inputs(), &Permissions::NONE),
        Err(ValidationError::NotPermitted(Capability::Notify))
    );
    let lamp_on = base(3).action(set_power(lamp(), true));
    assert_eq!(
        h.engine
            .validate(&lamp_on.declare_inputs(), &Permissions::NONE),
        Err(ValidationError::NotPermitted(Capability::ControlDevices))
    );
}

#[test]
fn inputs_must_be_declared_exactly_r21() {
    let h = Harness::new(Site::HeadUnit);
    let task = base(1)
        .condition(Condition::Signal {
            path: SOC.into(),
            test: Test::Above(50.0),
        })
        .action(set_power(lamp(), true));
    let mut undeclared = task.clone();
    undeclared.inputs.clear();
    assert_eq!(
        h.engine.validate(&undeclared, &Permissions::ALL),
        Err(ValidationError::UndeclaredInput(Input::Signal(SOC.into())))
    );
    let mut extra = task.declare_inputs();
    extra.inputs.insert(Input::Place(home()));
    assert_eq!(
        h.engine.validate(&extra, &Permissions::ALL),
        Err(ValidationError::UnusedInput(Input::Place(home())))
    );
    // An action that opens the car reads the parking state.
    let unlock = base(2).action(Action::Vehicle(VehicleCommand::Unlock));
    assert!(
        unlock
            .required_inputs()
            .contains(&Input::Vehicle(tether_automation::VehicleState::Parking))
    );
}

fn lamp_flip(id: u64, when_on: bool) -> Task {
    // When the lamp becomes `when_on`, set it to the opposite.
    Task::new(TaskId(id), format!("flip {id}"))
        .trigger(Trigger::Property {
            device: lamp(),
            property: POWER,
            change: Change::Becomes(Test::Equals(Value::Bool(when_on))),
            hold_ms: 0,
        })
        .action(set_power(lamp(), !when_on))
}

#[test]
fn loops_that_would_retrigger_without_end_are_refused_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    // "Lamp on → off" alone cannot retrigger itself: writing "off" never
    // makes the lamp become "on".
    h.install(lamp_flip(1, true));
    // "Lamp off → on" closes the loop.
    assert_eq!(
        check(&h, lamp_flip(2, false)),
        Err(ValidationError::Loop {
            cycle: vec![TaskId(2), TaskId(1)]
        })
    );
    // A task that retriggers itself on any change.
    let itself = Task::new(TaskId(3), "echo")
        .trigger(Trigger::Property {
            device: porch(),
            property: POWER,
            change: Change::Any,
            hold_ms: 0,
        })
        .action(set_power(porch(), true));
    assert_eq!(
        check(&h, itself),
        Err(ValidationError::Loop {
            cycle: vec![TaskId(3)]
        })
    );
    // Through the car: locking changes the lock signals, whose change
    // locks again; and a lock fires "locked".
    let relock = Task::new(TaskId(4), "relock")
        .trigger(Trigger::Signal {
            path: IS_LOCKED.into(),
            change: Change::Any,
            hold_ms: 0,
        })
        .action(Action::Vehicle(VehicleCommand::Lock));
    assert!(matches!(
        check(&h, relock),
        Err(ValidationError::Loop { .. })
    ));
    h.install(
        Task::new(TaskId(5), "locked: climate on")
            .trigger(Trigger::Vehicle(VehicleEvent::Locked))
            .action(Action::Vehicle(VehicleCommand::Climate {
                on: true,
                target_celsius: None,
            })),
    );
    let climate_locks = Task::new(TaskId(6), "climate: lock")
        .trigger(Trigger::Signal {
            path: HVAC.into(),
            change: Change::Any,
            hold_ms: 0,
        })
        .action(Action::Vehicle(VehicleCommand::Lock));
    assert_eq!(
        check(&h, climate_locks),
        Err(ValidationError::Loop {
            cycle: vec![TaskId(6), TaskId(5)]
        })
    );
    assert_eq!(
        check(&h, lamp_flip(1, true)),
        Err(ValidationError::DuplicateTask(TaskId(1)))
    );
}
