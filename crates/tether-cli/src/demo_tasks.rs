//! The super-task part of `tether demo` (issue 5): a home hub joins the
//! account; the owner creates "when the car leaves home, turn off the
//! lights and close the garage; when it arrives after sunset, turn on the
//! porch light" on the hub and "when the car is parked at home, lock it" on
//! the car; a recorded drive (`examples/drive/home-evening.csv`) takes the
//! car out of the home geofence and back; the traces say why each task
//! fired; the task is shared as a template and bound to another home; and
//! "car data to home" turned off stops every car event to the hub.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tether_node::tether_automation::template::Template;
use tether_node::tether_automation::{
    Action, Cause, Condition, Date, DayTime, Fix, LatLon, Outcome, Place, PlaceId, StepResult,
    SunEvent, Task, TaskId, Trace, Transition, Trigger, Value, VehicleCommand, VehicleEvent,
    Weekdays, wire,
};
use tether_node::{
    AutomationHost, Clock, Drive, HOME_SWITCH, HeadUnit, Hub, NodeConfig, NodeError, Phone,
    SimHome, TaskState, VehicleLink,
};

use crate::narrate::Narrator;

/// The recorded drive, shipped in `examples/`.
pub(crate) const DRIVE: &str = include_str!("../../../examples/drive/home-evening.csv");

/// The home's centre in the recorded drive (made up).
pub(crate) const HOME: LatLon = LatLon::new(48.13720, 11.57560);

/// The drive starts at 14:50 UTC on 29 November 2026: the car leaves in
/// daylight and comes back after sunset (about 15:21 UTC there).
pub(crate) fn drive_start_ms() -> u64 {
    (Date::new(2026, 11, 29).midnight_utc_ms() + (14 * 60 + 50) * 60_000) as u64
}

/// The second of the drive by which the car is parked away.
const AWAY_S: u64 = 1_200;

fn home() -> PlaceId {
    PlaceId::new("home")
}

fn set(device: &str, on: bool) -> Action {
    Action::SetProperty {
        device: tether_node::tether_automation::DeviceId::new(device),
        property: HOME_SWITCH,
        value: Value::Bool(on),
    }
}

/// The hub's task: leaving home turns the lights off and closes the
/// garage.
pub(crate) fn leave_task() -> Task {
    Task::new(TaskId(0), "leaving: switch off and close up")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Leave,
        })
        .action(set("lights", false))
        .action(set("garage", true))
        .declare_inputs()
}

/// The hub's task: arriving home after sunset turns the porch light on.
pub(crate) fn arrive_task() -> Task {
    Task::new(TaskId(0), "arriving after dark: light the way")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Enter,
        })
        .condition(Condition::TimeWindow {
            after: Some(DayTime::Sun {
                event: SunEvent::Sunset,
                offset_min: 0,
                place: home(),
            }),
            before: None,
            weekdays: Weekdays::ALL,
        })
        .action(set("porch", true))
        .declare_inputs()
}

/// The car's task: parked at home, it locks itself.
pub(crate) fn lock_task() -> Task {
    Task::new(TaskId(0), "parked: lock up")
        .trigger(Trigger::Vehicle(VehicleEvent::Parked))
        .condition(Condition::Place {
            place: home(),
            inside: true,
        })
        .action(Action::Vehicle(VehicleCommand::Lock))
        .declare_inputs()
}

/// Polls `check` for up to 3 s.
async fn until(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..150 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// One line per trace: what triggered it, and how it went.
pub(crate) fn describe_trace(trace: &Trace) -> String {
    let cause = match &trace.cause {
        Cause::Place { place, transition } => format!(
            "car {} {}",
            match transition {
                Transition::Enter => "entered",
                Transition::Leave => "left",
            },
            place.0
        ),
        Cause::Vehicle(event) => format!("car {event:?}").to_lowercase(),
        Cause::Manual => "run by hand".into(),
        Cause::ConsentWithdrawn => "\"car data to home\" turned off".into(),
        other => format!("{other:?}"),
    };
    let conditions: Vec<String> = trace
        .conditions
        .iter()
        .map(|c| format!("{} = {}", c.description, c.value))
        .collect();
    let mut outcome = match trace.outcome {
        Outcome::Completed => "completed".to_owned(),
        Outcome::ConditionsNotMet => "conditions not met".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    };
    let steps: Vec<String> = trace
        .steps
        .iter()
        .map(|s| match &s.result {
            StepResult::Succeeded => format!("{}: done", s.description),
            StepResult::Failed(why) => format!("{}: failed ({why})", s.description),
            other => format!("{}: {other:?}", s.description),
        })
        .collect();
    if !steps.is_empty() {
        outcome = format!("{} → {outcome}", steps.join(", "));
    }
    if conditions.is_empty() {
        format!("{cause} → {outcome}")
    } else {
        format!("{cause}; {} → {outcome}", conditions.join(", "))
    }
}

/// The super-task steps. `car` runs on a manual clock from
/// [`drive_start_ms`].
#[allow(clippy::too_many_arguments)]
pub(crate) async fn task_steps(
    config: &NodeConfig,
    phone: &Phone,
    car: &HeadUnit,
    link: &VehicleLink,
    address: SocketAddr,
    n: &mut Narrator,
    extra: &mut serde_json::Value,
) -> Result<(), NodeError> {
    let start = drive_start_ms();
    let drive = Drive::parse(DRIVE).map_err(|_| NodeError::State("the recorded drive is bad"))?;
    let car_tasks = car.automation().await?;

    // 1. The hub joins the account and follows the car.
    let t = Instant::now();
    let hub = Hub::open(config.clone())?;
    hub.complete_enrollment(&phone.enroll_device(&hub.enrollment_request()?)?)?;
    let hub_tasks = hub.start(Clock::manual(start))?;
    // The car knows where home is; the hub knows the name, and its own
    // location for sun times. Neither sends a coordinate (R10).
    car_tasks.define_place(Place::circle("home", HOME, 150.0))?;
    hub.define_place(Place::circle("home", HOME, 150.0))?;
    let found = hub.discover_car(Duration::from_secs(10)).await;
    let joined = match found {
        Ok(at) if at.port() == address.port() => hub.connect(at).await.map(|()| at),
        Ok(_) => Err(NodeError::State("the hub found another endpoint")),
        Err(e) => Err(e),
    };
    if !n.record(
        "hub joins and follows car",
        t,
        joined
            .map(|at| {
                format!("hub enrolled (role hub), found the car at {at}, watching home events")
            })
            .map_err(|e| e.to_string()),
    ) {
        return Ok(());
    }

    // 2. The owner turns on "car data to home" (a separate consent, R27)
    //    and creates the tasks from the phone: two on the hub over the
    //    hub's own session (found by its own token, SPEC §18.8), one on the
    //    car over the car's.
    let t = Instant::now();
    let consent = link.set_car_data_to_home(true).await?;
    // The hub hears of it over its watch.
    let consent = consent && until(|| hub_tasks.car_data_to_home()).await;
    let served = hub.serve()?;
    let found = phone.discover_hub(Duration::from_secs(10)).await?;
    if found.port() != served.port() {
        return Err(NodeError::State("the phone found another hub endpoint"));
    }
    let hub_link = phone.connect_hub(found).await?;
    let leave = hub_link.tasks().create_task(&leave_task(), true).await?;
    let arrive = hub_link.tasks().create_task(&arrive_task(), true).await?;
    let lock = link.create_task(&lock_task(), true).await?;
    let listed = link.list_tasks().await?;
    let house = hub.home();
    house.set("lights", true);
    let watching = until(|| {
        let wanted = hub_tasks.interest();
        wanted.places.contains(&home()) && hub.watching() == wanted
    })
    .await;
    let created = consent
        && watching
        && listed
            .iter()
            .any(|t| t.task.id == lock.task.id && t.state == TaskState::Active)
        && leave.state == TaskState::Active
        && arrive.state == TaskState::Active;
    n.record(
        "owner creates super tasks",
        t,
        if created {
            Ok(format!(
                "hub (over its own session): \"{}\", \"{}\"; car (over the car's): \"{}\"; car data to home: on",
                leave.task.name, arrive.task.name, lock.task.name
            ))
        } else {
            Err(format!(
                "consent {consent}, hub watching {watching}, car lists {}, hub tasks {} and {}",
                listed.len(),
                leave.state.label(),
                arrive.state.label()
            ))
        },
    );

    // 3. The drive: out of the home geofence in daylight.
    let t = Instant::now();
    let ran = drive
        .replay(
            &car_tasks,
            std::slice::from_ref(&hub_tasks),
            start,
            0,
            AWAY_S,
        )
        .await;
    let left = until(|| {
        let s = house.state();
        s.get("lights") == Some(&false) && s.get("garage") == Some(&true)
    })
    .await;
    let state = house.state();
    n.record(
        "car leaves home",
        t,
        if left {
            Ok(format!(
                "{ran} fixes and events replayed; hub got {{home, leave}}: lights off, garage closed"
            ))
        } else {
            Err(format!("home is {state:?}"))
        },
    );

    // 4. Back after sunset: the porch light goes on; parked at home, the
    //    car locks itself.
    let t = Instant::now();
    let locks_before = car.executions().await?.lock;
    let ran = drive
        .replay(
            &car_tasks,
            std::slice::from_ref(&hub_tasks),
            start,
            AWAY_S,
            drive.duration_s() + 1,
        )
        .await;
    let porch = until(|| house.state().get("porch") == Some(&true)).await;
    let mut locked = false;
    for _ in 0..150 {
        if car.executions().await?.lock > locks_before {
            locked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n.record(
        "car returns after sunset",
        t,
        if porch && locked {
            Ok(format!(
                "{ran} more steps; hub got {{home, enter}} after sunset: porch light on; \
                 parked at home: car locked by its task"
            ))
        } else {
            Err(format!("porch on {porch}, car locked {locked}"))
        },
    );

    // 5. `tether tasks trace`: why each task fired.
    let t = Instant::now();
    let hub_leave = hub_link.tasks().task_traces(leave.task.id.0, 0).await?;
    let hub_arrive = hub_link.tasks().task_traces(arrive.task.id.0, 0).await?;
    let car_lock = link.task_traces(lock.task.id.0, 0).await?;
    let why = |traces: &[Trace]| traces.last().map(describe_trace).unwrap_or_default();
    let traced = hub_leave.iter().any(|t| t.outcome == Outcome::Completed)
        && hub_arrive.iter().any(|t| t.outcome == Outcome::Completed)
        && car_lock.iter().any(|t| t.outcome == Outcome::Completed);
    extra["traces"] = json!({
        "leave": hub_leave.iter().map(describe_trace).collect::<Vec<_>>(),
        "arrive": hub_arrive.iter().map(describe_trace).collect::<Vec<_>>(),
        "lock": car_lock.iter().map(describe_trace).collect::<Vec<_>>(),
    });
    n.record(
        "tasks trace says why",
        t,
        if traced {
            Ok(format!(
                "leave: {}; arrive: {}; lock: {}",
                why(&hub_leave),
                why(&hub_arrive),
                why(&car_lock)
            ))
        } else {
            Err("a task has no completed run".into())
        },
    );

    // 6. Sharing (R22): the arrival task as a template, bound by a family
    //    member to their own home and devices.
    let t = Instant::now();
    let template = hub_link
        .tasks()
        .share_task(arrive.task.id.0, "Sam", None)
        .await?;
    let bytes = wire::encode_template(&template);
    let leaks = leaked(&bytes);
    let family = Hub::open_with_home(
        config.clone(),
        SimHome::with_devices(&["front door light", "hall"]),
    )?;
    family.complete_enrollment(&phone.enroll_device(&family.enrollment_request()?)?)?;
    let family_tasks = family.start(Clock::manual(start))?;
    family.define_place(Place::circle(
        "our house",
        LatLon::new(52.5200, 13.4050),
        120.0,
    ))?;
    let accepted = accept_for_family(&family_tasks, &template);
    n.record(
        "share task as template",
        t,
        match (&accepted, leaks.is_empty()) {
            (Ok(info), true) => Ok(format!(
                "{} bytes from \"{}\", no coordinate or device id; rebound to \"our house\" and \
                 \"front door light\": {}",
                bytes.len(),
                template.nickname,
                match info.state {
                    // Their home has not heard from their car yet (R27).
                    TaskState::DisabledByConsent => {
                        "installed, waiting for their own car's \"car data to home\"".to_owned()
                    }
                    ref other => other.label().to_owned(),
                }
            )),
            (Ok(_), false) => Err(format!("the template leaks {leaks:?}")),
            (Err(e), _) => Err(e.to_string()),
        },
    );

    // 7. "Car data to home" off: from the next event on, nothing of the
    //    car reaches the hub (R11, R28).
    let t = Instant::now();
    link.set_car_data_to_home(false).await?;
    let disabled = until(|| {
        hub_tasks.get(leave.task.id.0).map(|i| i.state) == Some(TaskState::DisabledByConsent)
    })
    .await;
    house.set("lights", true);
    let traces_before = hub_tasks.traces(leave.task.id.0, 0)?.len();
    // The car drives off again.
    let later = start + (drive.duration_s() + 600) * 1000;
    for (i, north_m) in [0.0, 400.0, 800.0, 1200.0].into_iter().enumerate() {
        let at = later + i as u64 * 20_000;
        car_tasks.advance_clock(at).await;
        hub_tasks.advance_clock(at).await;
        let _ = car_tasks.handle_fix(Fix::new(HOME.lat + north_m / 111_320.0, HOME.lon, 8.0));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let untouched = house.state().get("lights") == Some(&true);
    let traces_after = hub_tasks.traces(leave.task.id.0, 0)?;
    let kept = traces_after.len() >= traces_before
        && traces_after.iter().any(|t| t.outcome == Outcome::Completed);
    n.record(
        "car data to home off",
        t,
        if disabled && untouched && kept {
            Ok(
                "hub tasks disabled by consent; the car left home again and the hub heard \
                nothing; earlier runs stay in the traces"
                    .into(),
            )
        } else {
            Err(format!(
                "disabled {disabled}, lights untouched {untouched}, traces kept {kept}"
            ))
        },
    );
    hub.disconnect();
    Ok(())
}

/// The family member binds the template to their place and device.
fn accept_for_family(
    family: &Arc<AutomationHost>,
    template: &Template,
) -> Result<tether_node::TaskInfo, NodeError> {
    let mut binding = tether_node::tether_automation::template::Binding::default();
    for slot in &template.places {
        binding
            .places
            .insert(slot.slot.clone(), PlaceId::new("our house"));
    }
    for slot in &template.devices {
        binding.devices.insert(
            slot.slot.clone(),
            tether_node::tether_automation::DeviceId::new("front door light"),
        );
    }
    Ok(family.accept(template, &binding, true, &tether_node::owner_permissions())?)
}

/// What of the sharer's home shows in `bytes`: the home's coordinates in
/// any common encoding, the place's name, the devices' ids.
pub(crate) fn leaked(bytes: &[u8]) -> Vec<String> {
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, v) in [("latitude", HOME.lat), ("longitude", HOME.lon)] {
        needles.push((format!("{what} f64 le"), v.to_le_bytes().to_vec()));
        needles.push((format!("{what} f64 be"), v.to_be_bytes().to_vec()));
        needles.push((format!("{what} f32 le"), (v as f32).to_le_bytes().to_vec()));
        for digits in [3, 4, 5] {
            needles.push((format!("{what} text"), format!("{v:.digits$}").into_bytes()));
        }
    }
    for id in ["porch", "lights", "garage", "home"] {
        needles.push((format!("id {id}"), id.as_bytes().to_vec()));
    }
    needles
        .into_iter()
        .filter(|(_, needle)| bytes.windows(needle.len()).any(|w| w == needle.as_slice()))
        .map(|(what, _)| what)
        .collect()
}
