//! Super tasks across car and home over real sessions (issue 5; SPEC §18):
//! the head unit evaluates geofences from the car's fixes and sends the hub
//! only `{place, enter|leave}` (R10, R21, R32); the "car data to home"
//! switch stops car events to the hub from the next event on (R11, R28);
//! tasks, their enabled state, traces and pending delays survive a restart,
//! and a task whose device is gone is reported broken, not dropped; the
//! automation requests are role-checked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod support;

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tether_automation::{
    Action, Condition, DeviceId, Fix, LatLon, Outcome, Place, PlaceId, Task, TaskId, Transition,
    Trigger, Value, VehicleCommand, VehicleEvent,
};
use tether_identity::Role;
use tether_node::{
    AutomationHost, Clock, HOME_SWITCH, HeadUnit, Hub, NodeConfig, NodeError, Phone, TaskState,
    owner_permissions,
};
use tether_proto::v1::{self as pb, envelope, request, response};

use support::{flash_once, until, until_executions};

/// Made-up coordinates with digits that show up if they leak.
const HOME: LatLon = LatLon::new(47.376_887, 8.541_694);
const START_MS: u64 = 1_790_000_000_000;

fn home() -> PlaceId {
    PlaceId::new("home")
}

fn set(device: &str, on: bool) -> Action {
    Action::SetProperty {
        device: DeviceId::new(device),
        property: HOME_SWITCH,
        value: Value::Bool(on),
    }
}

fn leave_task() -> Task {
    Task::new(TaskId(0), "leaving: all off")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Leave,
        })
        .action(set("lights", false))
        .declare_inputs()
}

fn fix_north(metres: f64) -> Fix {
    Fix::new(HOME.lat + metres / 111_320.0, HOME.lon, 8.0)
}

/// An owner, a car on a manual clock with the place "home", and a hub
/// following the car.
async fn setup() -> (
    Phone,
    HeadUnit,
    Hub,
    Arc<AutomationHost>,
    Arc<AutomationHost>,
) {
    let (owner, car) = support::owner_and_enrolled_car();
    car.use_manual_clock(START_MS);
    let address = car.start().await.unwrap();
    let car_tasks = car.automation().await.unwrap();
    car_tasks
        .define_place(Place::circle("home", HOME, 150.0))
        .unwrap();
    let hub = support::enrolled_hub(&owner, NodeConfig::default());
    let hub_tasks = hub.start(Clock::manual(START_MS)).unwrap();
    hub.define_place(Place::named("home")).unwrap();
    hub.connect(address).await.unwrap();
    (owner, car, hub, car_tasks, hub_tasks)
}

/// Sends the phone's `command` to the car with an idempotency key of
/// `key` repeated, and expects it accepted.
async fn command(link: &tether_node::VehicleLink, command: pb::VehicleCommand, key: u8) {
    link.command(command, &[key; 16]).await.unwrap();
}

/// Ends a test's sessions: the phone's link, the hub's, the car.
async fn close(link: &tether_node::VehicleLink, hub: &Hub, car: &HeadUnit) {
    link.close();
    hub.disconnect();
    car.shutdown().await.unwrap();
}

/// Whether the car has acknowledged the hub's current need of events.
fn following(hub: &Hub, tasks: &AutomationHost) -> bool {
    let wanted = tasks.interest();
    wanted.places.contains(&home()) && hub.watching() == wanted
}

/// Moves both clocks to `at_ms`, hands the car `fix`, waits for actions.
async fn drive(car: &Arc<AutomationHost>, hub: &Arc<AutomationHost>, at_ms: u64, fix: Fix) {
    hub.advance_clock(at_ms).await;
    car.advance_clock(at_ms).await;
    let _ = car.handle_fix(fix);
    car.idle(Duration::from_secs(2)).await;
    hub.idle(Duration::from_secs(2)).await;
}

/// A leave: inside, then far out for longer than the dwell (30 s).
async fn leave_home(car: &Arc<AutomationHost>, hub: &Arc<AutomationHost>, from_ms: u64) {
    drive(car, hub, from_ms, fix_north(0.0)).await;
    for (i, m) in [600.0, 900.0, 1200.0, 1500.0].into_iter().enumerate() {
        drive(car, hub, from_ms + 20_000 * (i as u64 + 1), fix_north(m)).await;
    }
}

/// Every encoding of a coordinate we can think of.
fn coordinate_needles() -> Vec<(String, Vec<u8>)> {
    let mut needles = Vec::new();
    for (what, v) in [("lat", HOME.lat), ("lon", HOME.lon)] {
        needles.push((format!("{what} f64 le"), v.to_le_bytes().to_vec()));
        needles.push((format!("{what} f64 be"), v.to_be_bytes().to_vec()));
        needles.push((format!("{what} f32 le"), (v as f32).to_le_bytes().to_vec()));
        needles.push((format!("{what} f32 be"), (v as f32).to_be_bytes().to_vec()));
        let e7 = (v * 1e7).round() as i32;
        needles.push((format!("{what} e7 le"), e7.to_le_bytes().to_vec()));
        for digits in 2..=6 {
            needles.push((
                format!("{what} text .{digits}"),
                format!("{v:.digits$}").into_bytes(),
            ));
        }
    }
    needles
}

fn leaks(bytes: &[u8]) -> Vec<String> {
    coordinate_needles()
        .into_iter()
        .filter(|(_, n)| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        .map(|(what, _)| what)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_r21_r32_wire_taint_hub_and_phone_never_receive_a_coordinate() {
    let (owner, car, hub, car_tasks, hub_tasks) = setup().await;
    // A second watcher with the hub's role records every byte the car
    // sends a hub.
    let address = car.address().await.unwrap();
    let tap = hub_session(&owner, address).await;
    let mut watch = tap
        .request(request_of(request::Kind::WatchHomeEvents(
            pb::WatchHomeEvents {
                places: vec!["home".into()],
                vehicle_events: true,
            },
        )))
        .await
        .unwrap();

    let link = owner.connect(address).await.unwrap();
    assert!(link.set_car_data_to_home(true).await.unwrap());
    let leave = hub_tasks
        .create(leave_task(), true, &owner_permissions())
        .unwrap();
    let car_task = link
        .create_task(
            &Task::new(TaskId(0), "parked at home: lock")
                .trigger(Trigger::Vehicle(VehicleEvent::Parked))
                .condition(Condition::Place {
                    place: home(),
                    inside: true,
                })
                .action(Action::Vehicle(VehicleCommand::Lock))
                .declare_inputs(),
            true,
        )
        .await
        .unwrap();
    let home_state = hub.home();
    home_state.set("lights", true);
    assert!(until(|| following(&hub, &hub_tasks)).await);

    // The planted location: fixes at home, then away and back.
    let _ = car_tasks.handle_vehicle_event(VehicleEvent::Driving);
    leave_home(&car_tasks, &hub_tasks, START_MS).await;
    assert!(until(|| !home_state.state()["lights"]).await);
    for (i, m) in [900.0, 400.0, 50.0, 0.0, 0.0, 0.0].into_iter().enumerate() {
        drive(
            &car_tasks,
            &hub_tasks,
            START_MS + 200_000 + 20_000 * i as u64,
            fix_north(m),
        )
        .await;
    }
    let _ = car_tasks.handle_vehicle_event(VehicleEvent::Parked);
    car_tasks.idle(Duration::from_secs(2)).await;

    // Everything the phone can ask about tasks.
    let mut phone_bytes = task_answers(link.session(), car_task.task.id.0).await;
    let traces = link.task_traces(car_task.task.id.0, 0).await.unwrap();
    assert!(
        traces.iter().any(|t| t.outcome == Outcome::Completed),
        "the car's task ran: {traces:?}"
    );
    // And everything the phone can ask the hub about its tasks (SPEC
    // §18.8): the leave task ran on the place event, so its trace has one.
    let at_hub = support::session_as(&owner, hub.serve().unwrap(), Role::Phone).await;
    phone_bytes.extend(task_answers(&at_hub, leave.task.id.0).await);
    assert!(
        hub_tasks
            .traces(leave.task.id.0, 0)
            .unwrap()
            .iter()
            .any(|t| t.outcome == Outcome::Completed),
        "the hub's task ran"
    );

    // What the hub's tap received.
    let mut hub_bytes = Vec::new();
    let mut places = Vec::new();
    while let Ok(Ok(Some(reply))) =
        tokio::time::timeout(Duration::from_millis(300), watch.next()).await
    {
        hub_bytes.extend(reply.encode_to_vec());
        if let Some(envelope::Body::Response(pb::Response {
            kind: Some(response::Kind::HomeEvent(event)),
        })) = reply.body
        {
            places.push(event);
        }
    }
    assert!(
        places
            .iter()
            .any(|e| matches!(e.kind, Some(pb::home_event::Kind::Place(_)))),
        "the hub's tap saw the place events: {places:?}"
    );
    assert_eq!(leaks(&hub_bytes), Vec::<String>::new(), "hub");
    assert_eq!(leaks(&phone_bytes), Vec::<String>::new(), "phone");
    // And the store of the car keeps no fix (R32): only the place.
    close(&link, &hub, &car).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_r28_car_data_to_home_off_stops_events_from_the_next_one_and_on_resumes() {
    let (owner, car, hub, car_tasks, hub_tasks) = setup().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    // Off by default (R27): the hub's task waits for consent.
    let leave = hub_tasks
        .create(leave_task(), true, &owner_permissions())
        .unwrap();
    assert_eq!(leave.state, TaskState::DisabledByConsent);
    assert!(link.set_car_data_to_home(true).await.unwrap());
    assert!(until(|| hub_tasks.get(leave.task.id.0).unwrap().state == TaskState::Active).await);
    assert!(until(|| following(&hub, &hub_tasks)).await);
    let home_state = hub.home();
    home_state.set("lights", true);
    leave_home(&car_tasks, &hub_tasks, START_MS).await;
    assert!(until(|| !home_state.state()["lights"]).await);
    let runs_before = hub_tasks.traces(leave.task.id.0, 0).unwrap();
    assert!(runs_before.iter().any(|t| t.outcome == Outcome::Completed));

    // Off: the hub's task is disabled by consent; the car comes home and
    // leaves again, and the hub hears nothing.
    assert!(!link.set_car_data_to_home(false).await.unwrap());
    assert!(
        until(|| hub_tasks.get(leave.task.id.0).unwrap().state == TaskState::DisabledByConsent)
            .await
    );
    home_state.set("lights", true);
    for (i, m) in [0.0, 0.0, 0.0].into_iter().enumerate() {
        drive(
            &car_tasks,
            &hub_tasks,
            START_MS + 300_000 + 20_000 * i as u64,
            fix_north(m),
        )
        .await;
    }
    leave_home(&car_tasks, &hub_tasks, START_MS + 400_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(home_state.state()["lights"], "no event reached the hub");
    let runs_now = hub_tasks.traces(leave.task.id.0, 0).unwrap();
    assert!(
        runs_now.iter().all(|t| t.outcome != Outcome::Running),
        "{runs_now:?}"
    );
    assert_eq!(
        runs_now
            .iter()
            .filter(|t| t.outcome == Outcome::Completed)
            .count(),
        runs_before
            .iter()
            .filter(|t| t.outcome == Outcome::Completed)
            .count(),
        "earlier runs stay, no new one"
    );

    // On again: the next leave reaches the hub.
    assert!(link.set_car_data_to_home(true).await.unwrap());
    assert!(until(|| hub_tasks.get(leave.task.id.0).unwrap().state == TaskState::Active).await);
    assert!(until(|| following(&hub, &hub_tasks)).await);
    for (i, m) in [0.0, 0.0, 0.0].into_iter().enumerate() {
        drive(
            &car_tasks,
            &hub_tasks,
            START_MS + 600_000 + 20_000 * i as u64,
            fix_north(m),
        )
        .await;
    }
    leave_home(&car_tasks, &hub_tasks, START_MS + 700_000).await;
    assert!(until(|| !home_state.state()["lights"]).await);
    close(&link, &hub, &car).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_traces_and_a_pending_delay_survive_a_restart_and_a_gone_device_is_reported_broken() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..NodeConfig::default()
    };
    let owner = support::owner();
    let (porch_task, garage_task) = {
        let hub = support::enrolled_hub(&owner, config.clone());
        let tasks = hub.start(Clock::manual(START_MS)).unwrap();
        // "Porch light on for ten minutes", run by hand.
        let porch = tasks
            .create(
                Task::new(TaskId(0), "porch for ten minutes")
                    .trigger(Trigger::Manual)
                    .action(set("porch", true))
                    .action(Action::Delay { ms: 600_000 })
                    .action(set("porch", false))
                    .declare_inputs(),
                true,
                &owner_permissions(),
            )
            .unwrap();
        let garage = tasks
            .create(
                Task::new(TaskId(0), "close the garage")
                    .trigger(Trigger::Manual)
                    .action(set("garage", true))
                    .declare_inputs(),
                false,
                &owner_permissions(),
            )
            .unwrap();
        assert_ne!(tasks.run(porch.task.id.0).unwrap(), 0);
        tasks.idle(Duration::from_secs(2)).await;
        assert!(hub.home().state()["porch"]);
        tasks.advance_clock(START_MS + 60_000).await;
        (porch.task.id.0, garage.task.id.0)
        // The hub goes down with the delay pending.
    };
    let hub = Hub::open(config.clone()).unwrap();
    let tasks = hub.start(Clock::manual(START_MS + 120_000)).unwrap();
    assert_eq!(tasks.restore_note(), None);
    let listed = tasks.list();
    assert_eq!(listed.len(), 2);
    let garage = listed.iter().find(|t| t.task.id.0 == garage_task).unwrap();
    assert!(!garage.enabled);
    assert_eq!(garage.state, TaskState::Disabled);
    let traces = tasks.traces(porch_task, 0).unwrap();
    assert_eq!(traces.len(), 1, "{traces:?}");
    assert_eq!(traces[0].outcome, Outcome::Running);
    // The delay ends after the restart: the porch goes off (this home's
    // simulated porch starts off, so it is switched on first by hand).
    hub.home().set("porch", true);
    tasks.advance_clock(START_MS + 700_000).await;
    tasks.idle(Duration::from_secs(2)).await;
    assert!(!hub.home().state()["porch"], "the pending delay ran");
    let traces = tasks.traces(porch_task, 0).unwrap();
    assert_eq!(traces.last().unwrap().outcome, Outcome::Completed);

    // The garage door is unbound: its task is broken, kept and says why,
    // across another restart; a new task cannot name it.
    assert_eq!(hub.unbind_device("garage").unwrap(), vec![garage_task]);
    assert!(matches!(
        tasks.create(
            Task::new(TaskId(0), "close it again")
                .trigger(Trigger::Manual)
                .action(set("garage", true))
                .declare_inputs(),
            true,
            &owner_permissions(),
        ),
        Err(tether_node::AutomationError::Invalid(_))
    ));
    drop(tasks);
    drop(hub);
    let hub = Hub::open(config).unwrap();
    let tasks = hub.start(Clock::manual(START_MS + 800_000)).unwrap();
    let garage = tasks.get(garage_task).unwrap();
    assert!(
        matches!(&garage.state, TaskState::Broken(why) if why.contains("garage")),
        "{:?}",
        garage.state
    );
    assert!(matches!(
        tasks.run(garage_task),
        Err(tether_node::AutomationError::Engine(_))
    ));
}

/// A raw session with a hub's certificate of `owner`'s account.
async fn hub_session(
    owner: &Phone,
    address: std::net::SocketAddr,
) -> tether_session::quic::ClientSession {
    support::session_as(owner, address, Role::Hub).await
}

/// The encoded answers to everything a phone can ask about task `id` on
/// the peer of `session`: the list, the task's traces, its template.
async fn task_answers(session: &tether_session::quic::ClientSession, id: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for kind in [
        request::Kind::ListTasks(pb::ListTasks {}),
        request::Kind::GetTraces(pb::GetTraces {
            task_id: id,
            limit: 0,
        }),
        request::Kind::ShareTask(pb::ShareTask {
            task_id: id,
            nickname: "Sam".into(),
            name: String::new(),
        }),
    ] {
        let reply = session.call(request_of(kind)).await.unwrap();
        assert!(
            matches!(reply.body, Some(envelope::Body::Response(_))),
            "{reply:?}"
        );
        bytes.extend(reply.encode_to_vec());
    }
    bytes
}

fn request_of(kind: request::Kind) -> pb::Envelope {
    pb::Envelope {
        body: Some(envelope::Body::Request(pb::Request { kind: Some(kind) })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_a_hub_reads_car_signals_only_while_car_data_to_home_is_on() {
    let (owner, car, hub, _car_tasks, _hub_tasks) = setup().await;
    let address = car.address().await.unwrap();
    let session = hub_session(&owner, address).await;
    let subscribe = || {
        request_of(request::Kind::Subscribe(pb::Subscribe {
            paths: vec![tether_control::signals::BATTERY_STATE_OF_CHARGE.into()],
        }))
    };
    // Off by default (R27): refused.
    assert!(session.call(subscribe()).await.is_err());
    let link = owner.connect(address).await.unwrap();
    assert!(link.set_car_data_to_home(true).await.unwrap());
    let mut stream = session.request(subscribe()).await.unwrap();
    assert!(stream.next().await.unwrap().is_some(), "current values");
    // Off: the live subscription ends, and a new read is refused.
    assert!(!link.set_car_data_to_home(false).await.unwrap());
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the hub's subscription ended");
    assert!(session.call(subscribe()).await.is_err());
    close(&link, &hub, &car).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_requests_are_role_checked_r23() {
    let (owner, car, hub, _car_tasks, _hub_tasks) = setup().await;
    let address = car.address().await.unwrap();
    // A hub may watch home events but not create tasks on the car.
    let hub_session = hub_session(&owner, address).await;
    let create = request_of;
    let denied = |reply: Result<pb::Envelope, tether_session::quic::SessionError>| {
        matches!(
            reply,
            Err(tether_session::quic::SessionError::Remote { code, .. })
                if code == pb::ErrorCode::PermissionDenied
        )
    };
    let reply = hub_session
        .call(create(request::Kind::CreateTask(pb::CreateTask {
            task: Some(tether_automation::wire::task_to_proto(&leave_task())),
            enabled: true,
        })))
        .await;
    assert!(denied(reply), "a hub may not create tasks on the car");
    let reply = hub_session
        .call(create(request::Kind::SetCarDataToHome(
            pb::SetCarDataToHome { on: true },
        )))
        .await;
    assert!(denied(reply), "a hub may not flip the owner's switch");

    // The phone may not watch home events; it may create tasks, and a task
    // naming an unknown signal is refused with a clear error.
    let link = owner.connect(address).await.unwrap();
    let mut stream = link
        .session()
        .request(create(request::Kind::WatchHomeEvents(
            pb::WatchHomeEvents {
                places: vec!["home".into()],
                vehicle_events: false,
            },
        )))
        .await
        .unwrap();
    match stream.next().await {
        Err(tether_session::quic::SessionError::Remote { code, .. }) => {
            assert_eq!(code, pb::ErrorCode::PermissionDenied)
        }
        other => panic!("a phone watched home events: {other:?}"),
    }
    let bad = Task::new(TaskId(0), "bad")
        .trigger(Trigger::Signal {
            path: "Vehicle.NoSuchSignal".into(),
            change: tether_automation::Change::Any,
            hold_ms: 0,
        })
        .action(Action::Vehicle(VehicleCommand::Lock))
        .declare_inputs();
    match link.create_task(&bad, true).await {
        Err(NodeError::Control(e)) => {
            assert!(e.to_string().contains("NoSuchSignal"), "{e}")
        }
        other => panic!("an unknown signal was accepted: {other:?}"),
    }
    // The position is not a signal a task may name (R10, R32).
    let position = Task::new(TaskId(0), "where")
        .trigger(Trigger::Signal {
            path: "Vehicle.CurrentLocation".into(),
            change: tether_automation::Change::Any,
            hold_ms: 0,
        })
        .action(Action::Vehicle(VehicleCommand::Lock))
        .declare_inputs();
    assert!(link.create_task(&position, true).await.is_err());
    assert!(link.list_tasks().await.unwrap().is_empty());
    close(&link, &hub, &car).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_a_task_unlocks_only_parked_and_after_the_owner_confirms_on_the_phone() {
    let (owner, car, hub, car_tasks, _hub_tasks) = setup().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    let unlock = link
        .create_task(
            &Task::new(TaskId(0), "open up")
                .trigger(Trigger::Manual)
                .action(Action::Vehicle(VehicleCommand::Unlock))
                .declare_inputs(),
            true,
        )
        .await
        .unwrap();
    let id = unlock.task.id.0;
    let mut questions = link.watch_confirmations().await.unwrap();
    let _ = car_tasks.handle_vehicle_event(VehicleEvent::Parked);

    // Parked, and the owner says yes: the car unlocks once.
    assert_ne!(link.run_task(id).await.unwrap(), 0);
    let question = questions.next().await.unwrap().unwrap();
    assert!(!question.withdrawn);
    assert_eq!(question.task_id, id);
    assert_eq!(question.command, Some(VehicleCommand::Unlock));
    link.answer_confirmation(question.id, true).await.unwrap();
    assert!(questions.next().await.unwrap().unwrap().withdrawn);
    car_tasks.idle(Duration::from_secs(2)).await;
    assert!(until_executions(&car, |e| e.unlock == 1).await);
    // An answered question cannot be answered again.
    assert!(link.answer_confirmation(question.id, true).await.is_err());

    // The owner says no: nothing happens.
    assert_ne!(link.run_task(id).await.unwrap(), 0);
    let question = questions.next().await.unwrap().unwrap();
    link.answer_confirmation(question.id, false).await.unwrap();
    car_tasks.idle(Duration::from_secs(2)).await;

    // Driving: the task does not even ask.
    let _ = car_tasks.handle_vehicle_event(VehicleEvent::Driving);
    let _ = link.run_task(id).await.unwrap();
    car_tasks.idle(Duration::from_secs(2)).await;
    assert_eq!(car.executions().await.unwrap().unlock, 1);
    let traces = link.task_traces(id, 0).await.unwrap();
    let results: Vec<_> = traces
        .iter()
        .map(|t| t.steps.last().map(|s| s.result.clone()))
        .collect();
    use tether_automation::StepResult;
    assert_eq!(
        results,
        [
            Some(StepResult::Succeeded),
            Some(StepResult::Declined),
            Some(StepResult::NotParked)
        ],
        "{traces:#?}"
    );
    questions.cancel();
    close(&link, &hub, &car).await;
}

/// The car's own tasks hear its signals (SPEC §18.6): a lock command from
/// the phone changes the lock signal, and a task on that signal runs. Only
/// the signals a task declared are read (R21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_a_car_task_hears_the_car_signal_it_names() {
    let (owner, car, hub, car_tasks, _hub_tasks) = setup().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    const LOCKED: &str = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked";
    let flash = link
        .create_task(
            &Task::new(TaskId(0), "locked: flash once")
                .trigger(Trigger::Signal {
                    path: LOCKED.into(),
                    change: tether_automation::Change::Becomes(tether_automation::Test::Equals(
                        Value::Bool(true),
                    )),
                    hold_ms: 0,
                })
                .action(flash_once())
                .declare_inputs(),
            true,
        )
        .await
        .unwrap();
    assert!(
        until(|| car_tasks.interest().signals.contains(LOCKED)).await,
        "the task's signal is wanted"
    );
    // Let the feed read the starting value (unlocked) before the change.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(car.executions().await.unwrap().flash_honk, 0);

    command(&link, tether_control::client::lock(), 9).await;
    assert!(
        until_executions(&car, |e| e.lock == 1 && e.flash_honk == 1).await,
        "{:?}",
        car.executions().await.unwrap()
    );
    let traces = link.task_traces(flash.task.id.0, 0).await.unwrap();
    assert_eq!(traces.len(), 1, "{traces:#?}");
    // Locking again changes nothing: the task does not run again.
    command(&link, tether_control::client::lock(), 10).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(car.executions().await.unwrap().flash_honk, 1);
    close(&link, &hub, &car).await;
}

/// A car task on a vehicle event: "when the car is locked, flash once".
fn flash_when(event: VehicleEvent) -> Task {
    Task::new(TaskId(0), "car event: flash once")
        .trigger(Trigger::Vehicle(event))
        .action(flash_once())
        .declare_inputs()
}

/// The head unit derives vehicle events from its own signals (SPEC §18.6):
/// the phone's lock command locks every door, and a task on `Locked` runs.
/// One event per change: unlocking does not run it, locking again does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_a_car_task_on_the_locked_event_runs_when_the_doors_lock() {
    let (owner, car, hub, car_tasks, _hub_tasks) = setup().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    let task = link
        .create_task(&flash_when(VehicleEvent::Locked), true)
        .await
        .unwrap();
    assert!(until(|| car_tasks.interest().vehicle).await);
    assert!(car_tasks.derives_vehicle_events());
    // Only the lock state is wanted, so only the lock signals are read
    // for events (R21), not the gear.
    assert_eq!(
        car_tasks.wanted_vehicle_states(),
        [tether_automation::VehicleState::Locking].into()
    );
    assert_eq!(car.executions().await.unwrap().flash_honk, 0);

    command(&link, tether_control::client::lock(), 11).await;
    assert!(
        until_executions(&car, |e| e.lock == 1 && e.flash_honk == 1).await,
        "{:?}",
        car.executions().await.unwrap()
    );
    command(&link, tether_control::client::unlock(), 12).await;
    command(&link, tether_control::client::lock(), 13).await;
    assert!(
        until_executions(&car, |e| e.lock == 2 && e.flash_honk == 2).await,
        "{:?}",
        car.executions().await.unwrap()
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(car.executions().await.unwrap().flash_honk, 2);
    let traces = link.task_traces(task.task.id.0, 0).await.unwrap();
    assert_eq!(traces.len(), 2, "{traces:#?}");
    close(&link, &hub, &car).await;
}

/// Found by the crash harness (issue 15): `UpdateTask` of an installed
/// task was refused as a duplicate of itself (the engine's validation saw
/// the old version's number taken), so no task could ever be edited. Now
/// the edit replaces it under the same number, over the wire, and the
/// replaced version no longer runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_edits_a_car_task_in_place_over_a_session() {
    let (owner, car, hub, car_tasks, _hub_tasks) = setup().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    let created = link
        .create_task(&flash_when(VehicleEvent::Locked), true)
        .await
        .unwrap();
    let id = created.task.id.0;
    let mut edited = flash_when(VehicleEvent::Unlocked);
    edited.name = "flash when unlocked".into();
    let updated = link.update_task(id, &edited).await.unwrap();
    assert_eq!(updated.task.id.0, id, "an edit keeps the task's number");
    assert_eq!(updated.task.name, "flash when unlocked");
    let listed = link.list_tasks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].task.name, "flash when unlocked");
    assert_eq!(car_tasks.list()[0].task.name, "flash when unlocked");
    // The old trigger is gone, the new one runs.
    command(&link, tether_control::client::lock(), 21).await;
    command(&link, tether_control::client::unlock(), 22).await;
    assert!(
        until_executions(&car, |e| e.unlock == 1 && e.flash_honk == 1).await,
        "{:?}",
        car.executions().await.unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(car.executions().await.unwrap().flash_honk, 1);
    close(&link, &hub, &car).await;
}

/// The owner manages the hub's tasks over a session (SPEC §18.8): the
/// phone finds the hub by its own token, not the car's, creates a task,
/// lists it, runs it by hand, reads its trace, and the hub's home changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_manages_the_hubs_tasks_over_a_session() {
    let (owner, car, hub, _car_tasks, hub_tasks) = setup().await;
    let served = hub.serve().unwrap();
    assert_eq!(hub.serving_address(), Some(served));
    let found = owner.discover_hub(Duration::from_secs(10)).await.unwrap();
    assert_eq!(found.port(), served.port());
    // Looking for the car never finds the hub: two keys (R2).
    let car_found = owner
        .discover_vehicle(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        car_found.address.port(),
        car.address().await.unwrap().port()
    );

    // Another account's phone resolves nothing (R2).
    let stranger = Phone::open(NodeConfig::default()).unwrap();
    stranger.create_account().unwrap();
    assert!(
        stranger
            .discover_hub(Duration::from_millis(1_500))
            .await
            .is_err()
    );

    let link = owner.connect_hub(found).await.unwrap();
    let tasks = link.tasks();
    let porch = tasks
        .create_task(
            &Task::new(TaskId(0), "porch on")
                .trigger(Trigger::Manual)
                .action(set("porch", true))
                .declare_inputs(),
            true,
        )
        .await
        .unwrap();
    assert_eq!(porch.state, TaskState::Active);
    let listed = tasks.list_tasks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(hub_tasks.list().len(), 1, "the task lives on the hub");
    assert_eq!(hub.home().state().get("porch"), Some(&false));
    let run = tasks.run_task(porch.task.id.0).await.unwrap();
    assert!(run > 0);
    assert!(until(|| hub.home().state().get("porch") == Some(&true)).await);
    let traces = tasks.task_traces(porch.task.id.0, 0).await.unwrap();
    assert_eq!(traces.len(), 1, "{traces:#?}");
    assert!(tasks.set_task_enabled(porch.task.id.0, false).await.is_ok());
    assert!(tasks.delete_task(porch.task.id.0).await.unwrap().is_empty());

    // The car is not a hub: connect_hub refuses it.
    assert!(matches!(
        owner.connect_hub(car.address().await.unwrap()).await,
        Err(NodeError::UnexpectedPeer(_))
    ));
    link.close();
    hub.stop_serving();
    assert_eq!(hub.serving_address(), None);
    hub.disconnect();
    car.shutdown().await.unwrap();
}

/// On the hub, the roles of §18.1 hold (SPEC §18.8): a watch lists but
/// does not create; another hub of the account manages nothing; and the
/// car's own requests (the switch) are not the hub's to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_checks_roles_and_answers_task_management_only() {
    let (owner, car, hub, _car_tasks, _hub_tasks) = setup().await;
    let served = hub.serve().unwrap();
    let create = || {
        request_of(request::Kind::CreateTask(pb::CreateTask {
            task: Some(tether_automation::wire::task_to_proto(
                &Task::new(TaskId(0), "lights on")
                    .trigger(Trigger::Manual)
                    .action(set("lights", true))
                    .declare_inputs(),
            )),
            enabled: true,
        }))
    };
    let list = || request_of(request::Kind::ListTasks(pb::ListTasks {}));
    let error_of = |reply: Result<pb::Envelope, tether_session::quic::SessionError>| match reply {
        Ok(_) => None,
        Err(tether_session::quic::SessionError::Remote { code, .. }) => Some(code),
        Err(e) => panic!("{e}"),
    };

    let watch = support::session_as(&owner, served, Role::Watch).await;
    assert_eq!(error_of(watch.call(list()).await), None);
    assert_eq!(
        error_of(watch.call(create()).await),
        Some(pb::ErrorCode::PermissionDenied)
    );
    let other_hub = support::session_as(&owner, served, Role::Hub).await;
    assert_eq!(
        error_of(other_hub.call(list()).await),
        Some(pb::ErrorCode::PermissionDenied)
    );
    let phone = support::session_as(&owner, served, Role::Phone).await;
    assert_eq!(error_of(phone.call(create()).await), None);
    let switch = request_of(request::Kind::SetCarDataToHome(pb::SetCarDataToHome {
        on: true,
    }));
    assert_eq!(
        error_of(phone.call(switch).await),
        Some(pb::ErrorCode::BadRequest)
    );
    hub.stop_serving();
    hub.disconnect();
    car.shutdown().await.unwrap();
}

/// The derived event crosses to the hub too, and only under the "car data
/// to home" switch (R11): a hub task on the car's `Locked` closes the
/// garage when the phone locks the car.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_a_hub_task_hears_the_derived_locked_event_only_with_consent() {
    let (owner, car, hub, car_tasks, hub_tasks) = setup().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    hub_tasks
        .create(
            Task::new(TaskId(0), "car locked: close the garage")
                .trigger(Trigger::Vehicle(VehicleEvent::Locked))
                .action(set("garage", true))
                .declare_inputs(),
            true,
            &owner_permissions(),
        )
        .unwrap();
    let garage = |hub: &Hub| hub.home().state().get("garage").copied();
    assert_eq!(garage(&hub), Some(false));

    // Switch off: the hub's task is off by consent and the car sends the
    // hub no vehicle event.
    assert!(!car_tasks.wants_vehicle_events());
    command(&link, tether_control::client::lock(), 15).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(garage(&hub), Some(false));

    // Switch on: the next lock reaches the hub's task.
    assert!(link.set_car_data_to_home(true).await.unwrap());
    assert!(until(|| hub_tasks.car_data_to_home() && hub.watching().vehicle).await);
    assert!(until(|| car_tasks.wants_vehicle_events()).await);
    command(&link, tether_control::client::unlock(), 16).await;
    command(&link, tether_control::client::lock(), 17).await;
    assert!(
        until(|| garage(&hub) == Some(true)).await,
        "{:?}",
        hub.home().state()
    );
    close(&link, &hub, &car).await;
}

/// An app that reports vehicle events itself turns the derivation off, so
/// that a lock is not counted twice (SPEC §18.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vehicle_event_reported_by_the_app_is_not_derived_again() {
    let (owner, car, hub, car_tasks, _hub_tasks) = setup().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    link.create_task(&flash_when(VehicleEvent::Locked), true)
        .await
        .unwrap();
    assert!(until(|| car_tasks.interest().vehicle).await);
    // The vehicle app reports the lock it saw; the task runs once.
    assert_eq!(
        car_tasks.report_vehicle_event(VehicleEvent::Locked),
        tether_automation::Delivery::Delivered
    );
    assert!(!car_tasks.derives_vehicle_events());
    assert!(until_executions(&car, |e| e.flash_honk == 1).await);
    // The doors lock on the phone's command: the app would report it; the
    // head unit does not add an event of its own.
    command(&link, tether_control::client::lock(), 14).await;
    assert!(until_executions(&car, |e| e.lock == 1).await);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(car.executions().await.unwrap().flash_honk, 1);
    close(&link, &hub, &car).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_hub_tasks_read_only_the_car_signals_they_name_and_their_home_devices() {
    let (owner, car, hub, _car_tasks, hub_tasks) = setup().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    assert!(link.set_car_data_to_home(true).await.unwrap());
    assert!(until(|| hub_tasks.car_data_to_home()).await);
    let locked = tether_control::signals::DOOR_ROW1_DRIVER_IS_LOCKED;
    // "When the car is locked, close the garage"; "when the porch light
    // goes on, the lights too".
    hub_tasks
        .create(
            Task::new(TaskId(0), "car locked: close up")
                .trigger(Trigger::Signal {
                    path: locked.into(),
                    change: tether_automation::Change::Becomes(tether_automation::Test::Equals(
                        Value::Bool(true),
                    )),
                    hold_ms: 0,
                })
                .action(set("garage", true))
                .declare_inputs(),
            true,
            &owner_permissions(),
        )
        .unwrap();
    hub_tasks
        .create(
            Task::new(TaskId(0), "porch on: lights on")
                .trigger(Trigger::Property {
                    device: DeviceId::new("porch"),
                    property: HOME_SWITCH,
                    change: tether_automation::Change::Becomes(tether_automation::Test::Equals(
                        Value::Bool(true),
                    )),
                    hold_ms: 0,
                })
                .action(set("lights", true))
                .declare_inputs(),
            true,
            &owner_permissions(),
        )
        .unwrap();
    // Only the named signal is asked for (R21); its current value comes
    // first.
    assert!(until(|| hub.watching().signals == [locked.to_owned()].into()).await);
    assert!(until(|| hub.signal_updates() >= 1).await);
    let home_state = hub.home();
    assert!(!home_state.state()["garage"]);
    let outcome = link
        .command(
            tether_node::commands::lock(),
            &tether_node::new_idempotency_key().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state, pb::CommandState::Succeeded);
    assert!(
        until(|| home_state.state()["garage"]).await,
        "the garage closed"
    );
    assert!(hub.set_device("porch", true).unwrap());
    hub_tasks.idle(Duration::from_secs(2)).await;
    assert!(home_state.state()["lights"]);
    // Off: the subscription ends and the hub's signal task is disabled.
    assert!(!link.set_car_data_to_home(false).await.unwrap());
    assert!(until(|| hub.watching().signals.is_empty()).await);
    close(&link, &hub, &car).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r32_a_fix_is_used_at_once_and_never_stored_on_the_car() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Phone::open(NodeConfig::default()).unwrap();
    owner.create_account().unwrap();
    let car = HeadUnit::open(NodeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..NodeConfig::default()
    })
    .unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    car.use_manual_clock(START_MS);
    car.start().await.unwrap();
    let tasks = car.automation().await.unwrap();
    tasks
        .define_place(Place::circle("home", HOME, 150.0))
        .unwrap();
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    link.create_task(
        &Task::new(TaskId(0), "left: lock")
            .trigger(Trigger::Place {
                place: home(),
                transition: Transition::Leave,
            })
            .action(Action::Vehicle(VehicleCommand::Lock))
            .declare_inputs(),
        true,
    )
    .await
    .unwrap();
    // A drive through places with distinctive coordinates.
    let track: Vec<LatLon> = (0..8)
        .map(|i| LatLon::new(47.390_123 + f64::from(i) * 0.001_111, 8.512_345))
        .collect();
    let _ = tasks.handle_fix(Fix::new(HOME.lat, HOME.lon, 5.0));
    for (i, p) in track.iter().enumerate() {
        tasks
            .advance_clock(START_MS + 20_000 * (i as u64 + 1))
            .await;
        let _ = tasks.handle_fix(Fix::new(p.lat, p.lon, 5.0));
    }
    tasks.idle(Duration::from_secs(2)).await;
    let traces = link.task_traces(1, 0).await.unwrap();
    assert!(
        traces.iter().any(|t| t.outcome == Outcome::Completed),
        "the fixes were used: {traces:?}"
    );
    link.close();
    car.shutdown().await.unwrap();
    drop(tasks);
    drop(car);
    // Every file of the car's state, database and WAL alike.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(path).unwrap());
        }
    }
    assert!(!bytes.is_empty());
    for p in &track {
        for needle in [
            p.lat.to_le_bytes().to_vec(),
            p.lat.to_be_bytes().to_vec(),
            (p.lat as f32).to_le_bytes().to_vec(),
            format!("{:.4}", p.lat).into_bytes(),
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "a fix at {p:?} was stored"
            );
        }
    }
    // The place the owner defined is stored, as it must be.
    assert!(bytes.windows(4).any(|w| w == b"home"));
}

/// A second connection to the car's database that makes every write of the
/// engine's snapshot fail (as a full disk would), until `heal`.
struct BrokenSnapshots(rusqlite::Connection);

impl BrokenSnapshots {
    fn new(data_dir: &std::path::Path) -> Self {
        let conn = rusqlite::Connection::open(data_dir.join(tether_store::DATABASE_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER fail_snapshot_insert BEFORE INSERT ON automation_state
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END;
             CREATE TRIGGER fail_snapshot_update BEFORE UPDATE ON automation_state
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
        Self(conn)
    }

    fn heal(self) {
        self.0
            .execute_batch("DROP TRIGGER fail_snapshot_insert; DROP TRIGGER fail_snapshot_update;")
            .unwrap();
    }
}

/// Persist before dispatch (SPEC §18.6, R23): the snapshot that holds the
/// run numbers is stored before a run's vehicle command leaves. When it
/// cannot be stored the command is not sent and the run's trace says so;
/// after a restart the next run is not numbered like one whose command
/// went out, so its idempotency key is new and the car acts (before, the
/// car answered the old receipt and did nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_a_run_not_stored_sends_nothing_and_after_a_restart_the_next_run_still_acts() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..NodeConfig::default()
    };
    let owner = Phone::open(NodeConfig::default()).unwrap();
    owner.create_account().unwrap();
    let car = HeadUnit::open(config.clone()).unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    car.use_manual_clock(START_MS);
    car.start().await.unwrap();
    let tasks = car.automation().await.unwrap();
    let task = tasks
        .create(
            Task::new(TaskId(0), "find my car")
                .trigger(Trigger::Manual)
                .action(flash_once())
                .declare_inputs(),
            true,
            &owner_permissions(),
        )
        .unwrap()
        .task
        .id
        .0;
    assert_eq!(tasks.run(task).unwrap(), 1);
    assert!(until_executions(&car, |e| e.flash_honk == 1).await);

    // The store fails to write the snapshot: run 2's command stays home.
    let broken = BrokenSnapshots::new(dir.path());
    assert_eq!(tasks.run(task).unwrap(), 2);
    assert!(tasks.idle(Duration::from_secs(2)).await);
    assert!(
        matches!(
            tasks.traces(task, 0),
            Err(tether_node::AutomationError::Store(_))
        ),
        "reading traces reports the failing store"
    );
    // (Had it been sent, `idle` would have waited for its answer.)
    assert_eq!(
        car.executions().await.unwrap().flash_honk,
        1,
        "nothing was sent for a run that is not stored"
    );
    broken.heal();
    let traces = tasks.traces(task, 0).unwrap();
    let last = traces.last().unwrap();
    assert_eq!(last.run.map(|r| r.0), Some(2));
    assert_eq!(last.outcome, Outcome::Failed);
    assert_eq!(
        last.steps[0].result,
        tether_automation::StepResult::NotDispatched
    );

    // A restart; the next run's command acts on the (fresh) car.
    drop(tasks);
    car.shutdown().await.unwrap();
    drop(car);
    let car = HeadUnit::open(config).unwrap();
    car.use_manual_clock(START_MS + 60_000);
    car.start().await.unwrap();
    let tasks = car.automation().await.unwrap();
    assert_eq!(tasks.restore_note(), None);
    tasks.run(task).unwrap();
    assert!(
        until_executions(&car, |e| e.flash_honk == 1).await,
        "the run after the restart acted: its key is not an old one"
    );
    assert!(tasks.idle(Duration::from_secs(2)).await);
    let traces = tasks.traces(task, 0).unwrap();
    assert_eq!(traces.last().unwrap().outcome, Outcome::Completed);
    car.shutdown().await.unwrap();
}

/// R28 with a failing store: withdrawing "car data to home" takes effect at
/// once even when it cannot be stored (fail closed), and the owner hears
/// that it was not stored; giving consent that cannot be stored changes
/// nothing. Before, both were answered as done and the store error only
/// logged, so a restart could bring back a consent the owner had withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r28_a_consent_switch_that_cannot_be_stored_fails_closed_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (owner, car) = support::owner_and_enrolled_car_with(NodeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..NodeConfig::default()
    });
    let address = car.start().await.unwrap();
    let link = owner.connect(address).await.unwrap();
    assert!(link.set_car_data_to_home(true).await.unwrap());
    let tasks = car.automation().await.unwrap();
    // The store refuses every settings write from now on.
    let raw = rusqlite::Connection::open(dir.path().join(tether_store::DATABASE_FILE)).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER fail_settings_insert BEFORE INSERT ON settings
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;
         CREATE TRIGGER fail_settings_update BEFORE UPDATE ON settings
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    assert!(
        link.set_car_data_to_home(false).await.is_err(),
        "a withdrawal that was not stored was answered as done"
    );
    assert!(!tasks.car_data_to_home(), "the withdrawal is not in force");
    assert!(link.set_car_data_to_home(true).await.is_err());
    assert!(
        !tasks.car_data_to_home(),
        "a consent that was not stored is in force"
    );
    raw.execute_batch("DROP TRIGGER fail_settings_insert; DROP TRIGGER fail_settings_update;")
        .unwrap();
    assert!(!link.set_car_data_to_home(false).await.unwrap());
    link.close();
    car.shutdown().await.unwrap();
}
