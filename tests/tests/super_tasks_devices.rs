//! The car's super tasks control the devices bound to the car (issue 5;
//! SPEC §16, §18.6): a real lamp on the LAN is named in a task by the id the
//! phone learns from the device list, a task's writes reach the lamp through
//! the car and complete once the lamp acknowledged them, a property the lamp
//! reports starts a task, and when the lamp is unbound its tasks are kept,
//! broken, saying why, and no new task may name it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::sync::Arc;
use std::time::Duration;

use tether_automation::{
    Action, Change, DeviceId, Outcome, PropertyId, Task, TaskId, Test, Trigger, Value,
};
use tether_identity::{DeviceKey, Role};
use tether_node::{AutomationHost, DeviceNode, HeadUnit, NodeError, Phone, TaskState, VehicleLink};
use tether_proto::v1::{DeviceValue, PropertyValue, device_value};

mod support;
use support::{flash_once, until, until_executions};

const SCAN: Duration = Duration::from_secs(15);
const START_MS: u64 = 1_790_000_000_000;
/// The lamp's power (SPEC §16.1: light service 2, property 1, bool).
const POWER: PropertyId = PropertyId::new(2, 1);
/// The lamp's brightness (2.2, uint8 1–100).
const BRIGHTNESS: PropertyId = PropertyId::new(2, 2);

struct Setup {
    car: HeadUnit,
    tasks: Arc<AutomationHost>,
    link: VehicleLink,
    lamp: DeviceNode,
    /// The lamp's handle as the phone lists it.
    handle: Vec<u8>,
    /// The lamp as the car's tasks name it.
    lamp_id: DeviceId,
}

/// An owner, a car on a manual clock, and a lamp bound to the car and found
/// on the LAN.
async fn setup(secret: [u8; 32]) -> (Phone, Setup) {
    let (owner, car) = support::owner_and_enrolled_car();
    car.use_manual_clock(START_MS);
    let address = car.start().await.unwrap();
    let key = DeviceKey::generate().unwrap();
    let grant = owner
        .enroll_device(&key.enrollment_request(Role::Device, [1; 16]))
        .unwrap();
    let (lamp, _vendor) = support::bind_lamp(&car, key, &grant, secret, "Desk lamp").await;
    assert_eq!(
        car.scan_devices(SCAN).await.unwrap(),
        1,
        "the lamp was found"
    );
    let link = owner.connect(address).await.unwrap();
    let listed = link.list_devices().await.unwrap();
    assert_eq!(listed.len(), 1);
    let handle = listed[0].handle.clone();
    let lamp_id = listed[0].task_device();
    let tasks = car.automation().await.unwrap();
    (
        owner,
        Setup {
            car,
            tasks,
            link,
            lamp,
            handle,
            lamp_id,
        },
    )
}

fn lamp_value(lamp: &DeviceNode, property: PropertyId) -> Option<device_value::Kind> {
    lamp.values()
        .into_iter()
        .find(|v| v.siid == property.siid && v.piid == property.piid)
        .and_then(|v| v.value)
        .and_then(|v| v.kind)
}

fn set(device: &DeviceId, property: PropertyId, value: Value) -> Action {
    Action::SetProperty {
        device: device.clone(),
        property,
        value,
    }
}

/// "Lamp on at 70 %", run by hand.
fn lamp_on_task(lamp: &DeviceId) -> Task {
    Task::new(TaskId(0), "desk lamp on")
        .trigger(Trigger::Manual)
        .action(set(lamp, POWER, Value::Bool(true)))
        .action(set(lamp, BRIGHTNESS, Value::Int(70)))
        .declare_inputs()
}

/// "When the lamp goes off, flash the lights."
fn lamp_off_task(lamp: &DeviceId) -> Task {
    Task::new(TaskId(0), "lamp off: flash")
        .trigger(Trigger::Property {
            device: lamp.clone(),
            property: POWER,
            change: Change::Becomes(Test::Equals(Value::Bool(false))),
            hold_ms: 0,
        })
        .action(flash_once())
        .declare_inputs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_r14_r20_a_car_task_controls_a_bound_lamp_and_its_reports_start_tasks() {
    let (_owner, s) = setup([0x61; 32]).await;
    // The id the phone learns is the one the car's own screen lists.
    let on_screen = s.car.list_devices().await.unwrap();
    assert_eq!(on_screen[0].task_device(), s.lamp_id);
    assert_eq!(
        lamp_value(&s.lamp, POWER),
        Some(device_value::Kind::BoolValue(false))
    );

    // A manual task writes the lamp through the car (R13, R14).
    let on = s
        .link
        .create_task(&lamp_on_task(&s.lamp_id), true)
        .await
        .unwrap();
    assert_eq!(on.state, TaskState::Active);
    assert_ne!(s.link.run_task(on.task.id.0).await.unwrap(), 0);
    s.tasks.idle(Duration::from_secs(5)).await;
    assert_eq!(
        lamp_value(&s.lamp, POWER),
        Some(device_value::Kind::BoolValue(true))
    );
    assert_eq!(
        lamp_value(&s.lamp, BRIGHTNESS),
        Some(device_value::Kind::UintValue(70))
    );
    let traces = s.link.task_traces(on.task.id.0, 0).await.unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].outcome, Outcome::Completed, "{traces:#?}");
    // And the phone reads the same state through the car.
    let through_car = s.link.device_values(&s.handle).await.unwrap();
    assert!(through_car.iter().any(|v| v.siid == 2
        && v.piid == 2
        && v.value
            == Some(DeviceValue {
                kind: Some(device_value::Kind::UintValue(70))
            })));

    // A value the model refuses fails the step with the model's reason;
    // nothing reaches the lamp.
    let too_bright = s
        .link
        .create_task(
            &Task::new(TaskId(0), "too bright")
                .trigger(Trigger::Manual)
                .action(set(&s.lamp_id, BRIGHTNESS, Value::Int(101)))
                .declare_inputs(),
            true,
        )
        .await
        .unwrap();
    assert_ne!(s.link.run_task(too_bright.task.id.0).await.unwrap(), 0);
    s.tasks.idle(Duration::from_secs(5)).await;
    let traces = s.link.task_traces(too_bright.task.id.0, 0).await.unwrap();
    assert_eq!(traces[0].outcome, Outcome::Failed, "{traces:#?}");
    assert!(
        format!("{traces:?}").contains("out of range"),
        "the reason is the model's: {traces:#?}"
    );
    assert_eq!(
        lamp_value(&s.lamp, BRIGHTNESS),
        Some(device_value::Kind::UintValue(70))
    );

    // A property trigger (R20): the lamp is on now, and the phone switches
    // it off through the car; the lamp's report starts the car's task.
    let off = s
        .link
        .create_task(&lamp_off_task(&s.lamp_id), true)
        .await
        .unwrap();
    assert_eq!(s.car.executions().await.unwrap().flash_honk, 0);
    s.link
        .set_device_properties(
            &s.handle,
            vec![PropertyValue {
                siid: POWER.siid,
                piid: POWER.piid,
                value: Some(DeviceValue {
                    kind: Some(device_value::Kind::BoolValue(false)),
                }),
            }],
        )
        .await
        .unwrap();
    assert!(
        until(|| lamp_value(&s.lamp, POWER) == Some(device_value::Kind::BoolValue(false))).await
    );
    assert!(
        until_executions(&s.car, |e| e.flash_honk >= 1).await,
        "the lamp going off flashed the lights"
    );
    s.tasks.idle(Duration::from_secs(5)).await;
    let traces = s.link.task_traces(off.task.id.0, 0).await.unwrap();
    assert_eq!(traces.len(), 1, "it fired once: {traces:#?}");
    assert_eq!(traces[0].outcome, Outcome::Completed);
    // Switching it off again is no change: the task does not fire.
    s.link
        .invoke_device_action(&s.handle, 2, 1, Vec::new())
        .await
        .unwrap();
    assert!(
        until(|| lamp_value(&s.lamp, POWER) == Some(device_value::Kind::BoolValue(true))).await
    );
    s.tasks.idle(Duration::from_secs(2)).await;
    assert_eq!(s.car.executions().await.unwrap().flash_honk, 1);
    s.link.close();
    s.lamp.shutdown().await.unwrap();
    s.car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_r20_the_lamps_id_survives_a_restart_and_unbinding_breaks_its_tasks_without_dropping_them()
 {
    let (owner, s) = setup([0x62; 32]).await;
    let on = s
        .link
        .create_task(&lamp_on_task(&s.lamp_id), true)
        .await
        .unwrap();
    let off = s
        .link
        .create_task(&lamp_off_task(&s.lamp_id), true)
        .await
        .unwrap();
    let flash = s
        .link
        .create_task(
            &Task::new(TaskId(0), "flash")
                .trigger(Trigger::Manual)
                .action(flash_once())
                .declare_inputs(),
            true,
        )
        .await
        .unwrap();
    s.link.close();

    // Restart: the lamp keeps its id, and the tasks naming it still
    // validate against the catalogue the car rebuilds from its bindings.
    s.car.shutdown().await.unwrap();
    let address = s.car.start().await.unwrap();
    let link = owner.connect(address).await.unwrap();
    assert_eq!(s.car.scan_devices(SCAN).await.unwrap(), 1);
    let listed = link.list_devices().await.unwrap();
    assert_eq!(listed[0].task_device(), s.lamp_id);
    let tasks = link.list_tasks().await.unwrap();
    assert_eq!(tasks.len(), 3);
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Active),
        "{tasks:#?}"
    );
    let car_tasks = s.car.automation().await.unwrap();
    assert_ne!(link.run_task(on.task.id.0).await.unwrap(), 0);
    car_tasks.idle(Duration::from_secs(5)).await;
    assert!(
        until(|| lamp_value(&s.lamp, POWER) == Some(device_value::Kind::BoolValue(true))).await
    );

    // Unbind (R13): both tasks naming the lamp are broken and say which
    // device went; the task that does not name it is untouched.
    assert!(link.unbind_device(&s.handle).await.unwrap().is_empty());
    tokio::time::timeout(Duration::from_secs(5), s.lamp.unbound())
        .await
        .expect("the lamp was told to forget");
    for _ in 0..2 {
        let tasks = link.list_tasks().await.unwrap();
        assert_eq!(tasks.len(), 3, "no task was dropped: {tasks:#?}");
        for id in [on.task.id.0, off.task.id.0] {
            let task = tasks.iter().find(|t| t.task.id.0 == id).unwrap();
            assert!(
                matches!(&task.state, TaskState::Broken(why) if why.contains(&s.lamp_id.0)),
                "{:?}",
                task.state
            );
        }
        let kept = tasks
            .iter()
            .find(|t| t.task.id.0 == flash.task.id.0)
            .unwrap();
        assert_eq!(kept.state, TaskState::Active);
    }
    // A broken task does not run.
    assert!(link.run_task(on.task.id.0).await.is_err());
    // A new task naming the lamp is refused with a validation error that
    // names it.
    let refused = link.create_task(&lamp_on_task(&s.lamp_id), true).await;
    assert!(
        matches!(&refused, Err(NodeError::Control(e)) if e.to_string().contains("unknown device")
            && e.to_string().contains(&s.lamp_id.0)),
        "{refused:?}"
    );
    assert_eq!(link.list_tasks().await.unwrap().len(), 3);
    link.close();
    s.lamp.shutdown().await.unwrap();
    s.car.shutdown().await.unwrap();
}
