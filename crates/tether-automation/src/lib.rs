//! Super tasks: automations across car, phone and home (R20, R21), with
//! only the minimum data (R10, R21, R32) and a revocable switch for car
//! data to the home (R11, R28). Issue 5, items 1–3 and 6, engine side.
//!
//! This crate is a sans-IO core: a fully deterministic engine that
//! contains no networking code, reads no clock and spawns nothing. Events
//! and the current time go in (`handle_*`, times as Unix milliseconds);
//! subscriptions, actions for the host, confirmation requests, place events
//! and timer deadlines come out ([`Engine::poll_output`],
//! [`Engine::poll_timeout`]). The only clock reading in the crate is in
//! [`bench`](mod@bench), which measures the engine.
//!
//! - [`model`]: the task — name, triggers, conditions, actions, [`Mode`],
//!   [`MissedPolicy`], declared [`Input`]s.
//! - [`geo`]: places (circle, polygon) and how a fix with its accuracy is
//!   read against them.
//! - [`sun`]: sunrise and sunset from a place's latitude and longitude and
//!   the date (NOAA's equations), computed here.
//! - [`Catalogue`], [`Permissions`]: what tasks may name and what their
//!   author may do, handed in by the host from the crates that own them.
//! - [`Engine`]: validation with typed errors ([`ValidationError`]), a
//!   dispatch index so an event touches only interested tasks, runs under
//!   their mode, traces ([`Trace`]), timers that survive a restart
//!   ([`Snapshot`]), the unlock/open safety rule, the consent switch.
//! - [`template`]: a task shared with another account (R22) as a
//!   [`Template`]: the sharer's nickname, and the task with its places,
//!   devices and notification texts replaced by slots the recipient binds.
//! - [`wire`]: the protobuf forms of tasks, templates, traces and
//!   snapshots (SPEC §18.1), with decoders that bound what they build.
//! - [`bench`](mod@bench): [`bench::dispatch_bench`], the dispatch-cost figures for
//!   `tether bench --json`.
//!
//! # Minimum data
//! A task declares its inputs and the engine subscribes to their union
//! over live tasks, nothing else ([`Output::Subscribe`]); data it did not
//! subscribe to is dropped unread ([`Delivery::NotSubscribed`]). On the head
//! unit, position fixes are read against each needed place the moment they
//! arrive and dropped; only per-place inside/outside and a pending
//! transition's start are kept, and only `{place, enter|leave}`
//! ([`PlaceEvent`]) goes to other nodes. No output, trace or snapshot
//! carries a coordinate.
//!
//! # Usage
//! ```
//! use tether_automation::{
//!     Action, Catalogue, Config, DeviceId, DeviceSpec, Engine, Fix, LatLon, Output, Permissions,
//!     Place, PlaceId, PropertyId, PropertySpec, Subscription, Task, TaskId, Transition, Trigger,
//!     Value, ValueKind, ActionResult, Effect,
//! };
//!
//! let lamp = DeviceId::new("lamp");
//! let power = PropertyId::new(2, 1);
//! let catalogue = Catalogue::new().with_device(
//!     lamp.clone(),
//!     DeviceSpec::default().property(
//!         power,
//!         PropertySpec { kind: ValueKind::Bool, readable: true, writable: true },
//!     ),
//! );
//! let mut geofence = tether_automation::GeofenceConfig::default();
//! geofence.dwell_ms = 0;
//! let config = Config { geofence, ..Config::default() };
//! let mut engine = Engine::new(config, catalogue);
//! engine.add_place(Place::circle("home", LatLon::new(48.137, 11.575), 150.0)).unwrap();
//!
//! // "When the car leaves home, turn off the lights."
//! let task = Task::new(TaskId(1), "leave home")
//!     .trigger(Trigger::Place { place: PlaceId::new("home"), transition: Transition::Leave })
//!     .action(Action::SetProperty { device: lamp, property: power, value: Value::Bool(false) })
//!     .declare_inputs();
//! engine.install(task, &Permissions::ALL, 0).unwrap();
//! engine.start(0);
//! assert_eq!(engine.poll_output(), Output::Subscribe(Subscription::Location));
//!
//! // The first fix sets the state silently; leaving fires the task.
//! let _ = engine.handle_fix(Fix::new(48.137, 11.575, 10.0), 1_000);
//! let _ = engine.handle_fix(Fix::new(48.147, 11.575, 10.0), 60_000);
//! let Output::Action(request) = engine.poll_output() else { panic!() };
//! assert!(matches!(request.effect, Effect::SetProperty { value: Value::Bool(false), .. }));
//! engine.handle_action_result(request.id, ActionResult::Succeeded, 61_000).unwrap();
//! assert_eq!(engine.poll_output(), Output::Pending);
//! ```

pub mod bench;
mod catalogue;
pub mod civil;
mod engine;
mod error;
pub mod geo;
pub mod model;
pub mod sun;
pub mod template;
pub mod trace;
pub mod wire;

pub use catalogue::{Catalogue, DeviceSpec, Permissions, PropertySpec, SignalSpec};
pub use civil::{ClockTime, Date, Weekday, Weekdays};
pub use engine::{
    ActionRequest, ActionResult, Audience, Config, ConfirmRequest, ConfirmationId, CursorFrame,
    Delivery, Effect, Engine, GeofenceConfig, IDEMPOTENCY_CONTEXT, IdempotencyKey,
    MAX_ACTION_NODES, MAX_BRANCHES, MAX_CONDITION_NODES, MAX_DELAY_MS, MAX_HOLD_MS,
    MAX_MESSAGE_BYTES, MAX_MODE_RUNS, MAX_NAME_BYTES, MAX_NESTING, MAX_SUN_OFFSET_MIN,
    MAX_TRIGGERS, Output, PlaceEvent, RequestId, Site, Subscription, TaskStatus,
};
pub use engine::{
    HoldSnapshot, PlaceSnapshot, RestoreReport, RunSnapshot, SNAPSHOT_VERSION, Snapshot, Waiting,
};
pub use error::{Capability, EngineError, RestoreError, ValidationError};
pub use geo::{Fix, LatLon, Place, Shape};
pub use model::{
    Action, AppIntent, Branch, Change, CommandKind, Condition, DayTime, DeviceActionId, DeviceId,
    Input, MissedPolicy, Mode, PlaceId, PropertyId, Recipients, SunEvent, Task, TaskId, Test,
    Transition, Trigger, Value, ValueKind, VehicleCommand, VehicleEvent, VehicleState,
};
pub use template::{Binding, DeviceSlot, PlaceSlot, PropertyUse, Template, TemplateError};
pub use trace::{
    CancelReason, Cause, ConditionRecord, MissReason, Outcome, RunId, SkipReason, StepPath,
    StepRecord, StepResult, Trace,
};
