//! Super tasks through the FFI surface, driven from Rust as an app would:
//! a task crosses as `tether.v1.Task` bytes, runs on the car, leaves a
//! trace; an unlock waits for the owner's answer through a
//! `ConfirmationListener` (R23), and a declined one does not run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use tether_ffi::{
    Confirmation, ConfirmationListener, HeadUnit, LocalIdentifiers, Network, NodeSettings, Phone,
    TetherError, TraceSummary, VehicleAction, VehicleLink,
};
use tether_node::tether_automation::{
    Action, Task, TaskId, Trigger, VehicleCommand, VehicleEvent, wire,
};

fn loopback() -> NodeSettings {
    NodeSettings {
        data_dir: None,
        network: Network::LoopbackOnly,
        port: 0,
        identifiers: LocalIdentifiers::default(),
        broker: None,
    }
}

/// What the listener heard, in order.
#[derive(Debug)]
enum Heard {
    Question(Confirmation),
    Withdrawn(u64),
    Closed(Option<String>),
}

struct ChannelListener(std::sync::Mutex<Sender<Heard>>);

impl ConfirmationListener for ChannelListener {
    fn on_question(&self, question: Confirmation) {
        let _ = self.0.lock().unwrap().send(Heard::Question(question));
    }
    fn on_withdrawn(&self, id: u64) {
        let _ = self.0.lock().unwrap().send(Heard::Withdrawn(id));
    }
    fn on_closed(&self, error: Option<String>) {
        let _ = self.0.lock().unwrap().send(Heard::Closed(error));
    }
}

fn listener() -> (Box<dyn ConfirmationListener>, Receiver<Heard>) {
    let (tx, rx) = channel();
    (Box::new(ChannelListener(std::sync::Mutex::new(tx))), rx)
}

fn heard(rx: &Receiver<Heard>) -> Heard {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the listener hears the car")
}

/// A car and its owner's phone, connected without discovery.
async fn pair() -> (Arc<HeadUnit>, Arc<Phone>, Arc<VehicleLink>) {
    let phone = Phone::open(loopback(), None).unwrap();
    phone.create_account().unwrap();
    let (car, address) = car_of(&phone).await;
    let link = phone.connect(address).await.unwrap();
    (car, phone, link)
}

/// A car enrolled in `phone`'s account, started: it and its address.
async fn car_of(phone: &Phone) -> (Arc<HeadUnit>, String) {
    let car = HeadUnit::open(loopback(), None).unwrap();
    car.complete_enrollment(
        phone
            .enroll_device(car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    let address = car.start().await.unwrap();
    (car, address)
}

/// The task's latest trace, once it has ended.
async fn ended_trace(link: &VehicleLink, task: u64) -> TraceSummary {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let traces = link.task_traces(task, 1).await.unwrap();
        if let Some(last) = traces.last().filter(|t| t.ended_ms.is_some()) {
            return last.clone();
        }
        assert!(Instant::now() < deadline, "no ended trace: {traces:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parked_lock() -> Vec<u8> {
    wire::encode_task(
        &Task::new(TaskId(0), "parked: lock")
            .trigger(Trigger::Vehicle(VehicleEvent::Parked))
            .action(Action::Vehicle(VehicleCommand::Lock))
            .declare_inputs(),
    )
}

fn unlock_on_request() -> Vec<u8> {
    wire::encode_task(
        &Task::new(TaskId(0), "let me in")
            .trigger(Trigger::Manual)
            .action(Action::Vehicle(VehicleCommand::Unlock))
            .declare_inputs(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_from_bytes_runs_shares_and_lists_r20_r22() {
    let (car, _phone, link) = pair().await;
    assert!(link.set_car_data_to_home(true).await.unwrap());

    let refused = link.create_task(vec![0xff, 0x00], true).await;
    assert!(
        matches!(refused, Err(TetherError::InvalidArgument { .. })),
        "{refused:?}"
    );
    let created = link.create_task(parked_lock(), true).await.unwrap();
    assert_eq!(
        (created.name.as_str(), created.state.as_str()),
        ("parked: lock", "active")
    );
    assert_eq!(
        wire::decode_task(&created.task).unwrap().id,
        TaskId(created.id)
    );
    assert_eq!(
        link.list_tasks().await.unwrap(),
        std::slice::from_ref(&created)
    );

    let run = link.run_task(created.id).await.unwrap();
    assert!(run > 0);
    let trace = ended_trace(&link, created.id).await;
    assert_eq!(trace.run_id, Some(run));
    assert_eq!(trace.cause, "run by hand");
    assert_eq!(trace.steps, ["vehicle command Lock: done"]);
    assert_eq!(trace.outcome, "completed");
    assert_eq!(car.executions().await.unwrap().lock, 1);

    // R22: the owner may give the template another name than the task's.
    let renamed = link
        .share_task(created.id, "Ana".into(), Some("Lock up".into()))
        .await
        .unwrap();
    let described = tether_ffi::describe_template(renamed).unwrap();
    assert_eq!(described.task_name, "Lock up");
    let too_long = link
        .share_task(created.id, "Ana".into(), Some("x".repeat(65)))
        .await;
    assert!(
        matches!(&too_long, Err(TetherError::Control { code, .. }) if code == "ERROR_CODE_BAD_REQUEST"),
        "{too_long:?}"
    );
    let template = link
        .share_task(created.id, "Ana".into(), None)
        .await
        .unwrap();
    let described = tether_ffi::describe_template(template.clone()).unwrap();
    assert_eq!(described.task_name, created.name);
    assert_eq!(described.nickname, "Ana");
    assert!(described.place_slots.is_empty() && described.device_slots.is_empty());
    let bogus = HashMap::from([("place-1".to_owned(), "home".to_owned())]);
    let refused = link.accept_template(template.clone(), bogus, true).await;
    assert!(
        matches!(refused, Err(TetherError::InvalidArgument { .. })),
        "{refused:?}"
    );
    let copy = link
        .accept_template(template, HashMap::new(), false)
        .await
        .unwrap();
    assert_eq!((copy.enabled, copy.state.as_str()), (false, "disabled"));
    let unknown = link.run_task(9_999).await;
    assert!(
        matches!(&unknown, Err(TetherError::Control { code, .. }) if code == "ERROR_CODE_NOT_FOUND"),
        "{unknown:?}"
    );
    assert_eq!(link.delete_task(copy.id).await.unwrap(), [created]);
    assert!(!link.set_car_data_to_home(false).await.unwrap());
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_waits_for_the_owner_on_the_phone_r23() {
    let (car, _phone, link) = pair().await;
    let (listener, rx) = listener();
    let watch = link.watch_confirmations(listener).await.unwrap();
    assert!(watch.is_active());

    // Not parked: the unlock is refused before anyone is asked.
    let unlock = link.create_task(unlock_on_request(), true).await.unwrap();
    link.run_task(unlock.id).await.unwrap();
    let refused = ended_trace(&link, unlock.id).await;
    assert_eq!(
        refused.steps,
        ["vehicle command Unlock: refused: the car is not parked"]
    );

    // The car parks (its vehicle app reports it); the task declared the
    // parking state, so the event is used.
    assert!(
        car.report_vehicle_event(tether_ffi::VehicleEvent::Parked)
            .await
            .unwrap()
    );

    // Declined: nothing runs.
    link.run_task(unlock.id).await.unwrap();
    let Heard::Question(question) = heard(&rx) else {
        panic!("expected a question")
    };
    assert_eq!(question.task_id, unlock.id);
    assert_eq!(question.task_name, "let me in");
    assert_eq!(question.command, VehicleAction::Unlock);
    link.answer_confirmation(question.id, false).await.unwrap();
    assert!(matches!(heard(&rx), Heard::Withdrawn(id) if id == question.id));
    let declined = ended_trace(&link, unlock.id).await;
    assert_eq!(
        (declined.steps.as_slice(), declined.outcome.as_str()),
        (
            &["vehicle command Unlock: declined by the owner".to_owned()][..],
            "failed"
        )
    );
    let again = link.answer_confirmation(question.id, true).await;
    assert!(
        matches!(&again, Err(TetherError::Control { code, .. }) if code == "ERROR_CODE_NOT_FOUND"),
        "{again:?}"
    );

    // Confirmed: the car unlocks.
    link.run_task(unlock.id).await.unwrap();
    let Heard::Question(question) = heard(&rx) else {
        panic!("expected a question")
    };
    link.answer_confirmation(question.id, true).await.unwrap();
    assert!(matches!(heard(&rx), Heard::Withdrawn(id) if id == question.id));
    let confirmed = ended_trace(&link, unlock.id).await;
    assert_eq!(
        confirmed.steps,
        ["vehicle command Unlock (confirmed by the owner): done"]
    );
    assert_eq!(confirmed.outcome, "completed");
    assert_eq!(car.executions().await.unwrap().unlock, 1);

    // The session ends: the listener hears it once.
    link.close();
    let closed = heard(&rx);
    assert!(
        matches!(closed, Heard::Closed(Some(_))),
        "expected on_closed with a reason, heard {closed:?}"
    );
    watch.cancel();
    assert!(!watch.is_active());
    car.shutdown().await.unwrap();
}

/// The phone manages the home hub's tasks through the bindings (SPEC
/// §18.8): it finds the hub by the hub's own token, connects, and a task
/// sent as bytes runs on the hub and switches its porch light.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_manages_the_hubs_tasks_through_the_bindings() {
    use prost::Message;
    let phone = Phone::open(loopback(), None).unwrap();
    phone.create_account().unwrap();
    let hub = tether_node::Hub::open(tether_node::NodeConfig::default()).unwrap();
    let grant = phone
        .enroll_device(hub.enrollment_request().unwrap().encode_to_vec())
        .unwrap();
    hub.complete_enrollment(&tether_node::EnrollmentGrant::decode(grant.as_slice()).unwrap())
        .unwrap();
    hub.start(tether_node::Clock::System).unwrap();
    let served = hub.serve().unwrap();

    let found = phone.discover_hub(10_000).await.unwrap();
    assert_eq!(found, served.to_string());
    let link = phone.connect_hub(found).await.unwrap();
    let task = Task::new(TaskId(0), "porch on")
        .trigger(Trigger::Manual)
        .action(Action::SetProperty {
            device: tether_node::tether_automation::DeviceId::new("porch"),
            property: tether_node::HOME_SWITCH,
            value: tether_node::tether_automation::Value::Bool(true),
        })
        .declare_inputs();
    let installed = link
        .create_task(wire::encode_task(&task), true)
        .await
        .unwrap();
    assert_eq!(installed.state, "active");
    assert_eq!(link.list_tasks().await.unwrap().len(), 1);
    assert!(link.run_task(installed.id).await.unwrap() > 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.home().state().get("porch") != Some(&true) {
        assert!(Instant::now() < deadline, "{:?}", hub.home().state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let traces = link.task_traces(installed.id, 0).await.unwrap();
    assert_eq!(traces.len(), 1, "{traces:?}");

    // The account's car is not a hub.
    let (_car, car_at) = car_of(&phone).await;
    assert!(matches!(
        phone.connect_hub(car_at).await,
        Err(TetherError::UnexpectedPeer { .. })
    ));
    link.close();
    hub.stop_serving();
}
