//! [`Engine`]: the automation core (issue 5 items 1–3, 6).

mod conditions;
mod consent;
mod index;
mod inputs;
mod places;
mod run;
mod schedule;
mod snapshot;
mod subscriptions;
mod tasks;
mod timers;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::catalogue::Catalogue;
use crate::geo::Shape;
use crate::model::{
    AppIntent, DeviceActionId, DeviceId, PlaceId, PropertyId, Task, TaskId, Transition, Value,
    VehicleCommand, VehicleState,
};
use crate::trace::{RunId, StepPath, Trace};

use index::Index;
use timers::{TimerKey, Timers};

pub use snapshot::{
    HoldSnapshot, PlaceSnapshot, RestoreReport, RunSnapshot, SNAPSHOT_VERSION, Snapshot, Waiting,
};
pub use validate::{
    MAX_ACTION_NODES, MAX_BRANCHES, MAX_CONDITION_NODES, MAX_DELAY_MS, MAX_HOLD_MS,
    MAX_MESSAGE_BYTES, MAX_MODE_RUNS, MAX_NAME_BYTES, MAX_NESTING, MAX_SUN_OFFSET_MIN,
    MAX_TRIGGERS,
};

/// Signature-free context of the idempotency keys of vehicle commands:
/// SHA-256 over it, the engine's seed, the task, the run and the step.
pub const IDEMPOTENCY_CONTEXT: &[u8] = b"tether/1 automation command\0";

/// Where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The car's head unit: it gets the car's position fixes, evaluates
    /// geofences itself and emits only `{place, enter|leave}` events for the
    /// other nodes (R10, R21).
    HeadUnit,
    /// A home hub: it gets `{place, enter|leave}` events and vehicle state
    /// from the head unit, under the "car data to home" switch (R11).
    Hub,
}

/// A node that asked the head unit for place events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Audience {
    /// The home hub: only while "car data to home" is on (R11).
    Home,
    /// The owner's phone.
    Phone,
}

/// Geofence settings (issue 5: accuracy bound, margin, dwell).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeofenceConfig {
    /// Fixes with a worse accuracy (metres) are dropped unused.
    pub max_accuracy_m: f64,
    /// How far beyond the fence (metres, after accuracy) a fix must be to
    /// count as outside: the hysteresis that stops flapping at the edge.
    pub exit_margin_m: f64,
    /// How long a new inside or outside reading must hold before it is a
    /// transition; an opposite or uncertain fix meanwhile cancels it.
    pub dwell_ms: u64,
}

impl Default for GeofenceConfig {
    fn default() -> Self {
        Self {
            max_accuracy_m: 100.0,
            exit_margin_m: 50.0,
            dwell_ms: 30_000,
        }
    }
}

/// Settings of an [`Engine`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it runs.
    pub site: Site,
    /// Geofence settings (head unit).
    pub geofence: GeofenceConfig,
    /// Traces kept per task (finished runs and non-runs; live runs come on
    /// top).
    pub traces_per_task: usize,
    /// A step handed to the host fails if not answered within this.
    pub action_timeout_ms: u64,
    /// The owner has this long to confirm unlocking or opening the car.
    pub confirmation_timeout_ms: u64,
    /// A time trigger handled at most this late runs as on time; later, the
    /// task's [`crate::MissedPolicy`] decides (and the trace says so).
    pub on_time_tolerance_ms: u64,
    /// Local time is UTC plus this (minutes east); see
    /// [`Engine::handle_utc_offset`].
    pub utc_offset_min: i32,
    /// The "car data to home" switch (R11, R28). Off unless the user turned
    /// it on (R27: separate consent).
    pub car_data_to_home: bool,
    /// Mixed into the idempotency keys of vehicle commands, so that run
    /// numbers starting again at 1 never repeat a key the car has seen.
    /// Draw it at random on every start without a snapshot; a restored
    /// snapshot brings its own.
    pub seed: [u8; 16],
}

impl Default for Config {
    fn default() -> Self {
        Self {
            site: Site::HeadUnit,
            geofence: GeofenceConfig::default(),
            traces_per_task: 20,
            action_timeout_ms: 30_000,
            confirmation_timeout_ms: 120_000,
            on_time_tolerance_ms: 60_000,
            utc_offset_min: 0,
            car_data_to_home: false,
            seed: [0; 16],
        }
    }
}

/// Data the engine wants from its host: the union of the inputs that its
/// live tasks declare (R21), and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subscription {
    /// The car's position fixes (head unit only, for its geofences).
    Location,
    /// `{place, enter|leave}` events for a place (from the head unit).
    Place(PlaceId),
    /// A vehicle signal.
    Signal(String),
    /// A device property.
    Property(DeviceId, PropertyId),
    /// Events of one of the car's states.
    Vehicle(VehicleState),
}

/// An action request, answered by [`Engine::handle_action_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A confirmation request, answered by [`Engine::handle_confirmation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfirmationId(pub u64);

/// The idempotency key of a vehicle command (32 bytes, within the 16..=32
/// that the vehicle service takes): derived from the engine's seed, the
/// task, the run and the step, so a retry of the same step (by the host, or
/// after a restore) is the same command to the car.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(pub [u8; 32]);

/// What the host must do for an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write a device property.
    SetProperty {
        /// The device.
        device: DeviceId,
        /// The property.
        property: PropertyId,
        /// The value.
        value: Value,
    },
    /// Run a device action.
    DeviceAction {
        /// The device.
        device: DeviceId,
        /// The action.
        action: DeviceActionId,
        /// Its arguments.
        arguments: Vec<Value>,
    },
    /// Send a command to the car over a session, with the author's role
    /// (the session layer checks it again: automation bypasses no role).
    Vehicle {
        /// The command.
        command: VehicleCommand,
        /// Its idempotency key.
        idempotency_key: IdempotencyKey,
    },
    /// Hand something to an app.
    App(AppIntent),
}

/// An action for the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    /// Answer with this.
    pub id: RequestId,
    /// The task.
    pub task: TaskId,
    /// The run.
    pub run: RunId,
    /// The step.
    pub step: StepPath,
    /// What to do.
    pub effect: Effect,
    /// The engine gives up waiting then.
    pub deadline_ms: u64,
}

/// A question for the owner's phone: may this task unlock or open the car
/// now?
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmRequest {
    /// Answer with this.
    pub id: ConfirmationId,
    /// The task.
    pub task: TaskId,
    /// Its name, to show.
    pub task_name: String,
    /// The run.
    pub run: RunId,
    /// The command waiting.
    pub command: VehicleCommand,
    /// After this the command does not run.
    pub deadline_ms: u64,
}

/// A place event for another node: only the place's name and the
/// direction, never a coordinate (R10, R21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceEvent {
    /// The place.
    pub place: PlaceId,
    /// Enter or leave.
    pub transition: Transition,
    /// Who asked for it.
    pub audience: Audience,
}

/// How an action went, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    /// Done.
    Succeeded,
    /// Not done, and why.
    Failed(String),
    /// Never sent: the host could not first store the engine's snapshot
    /// that records the run (SPEC §18.6). The host persists before any
    /// action of a run leaves, so a restart can never reuse the run's
    /// number, and with it a vehicle command's idempotency key.
    NotDispatched,
}

/// What became of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Delivery {
    /// Used.
    Delivered,
    /// No live task declared it: dropped unused and unstored.
    NotSubscribed,
    /// Car data on the hub while "car data to home" is off: dropped (R11).
    WithheldByConsent,
    /// A fix that is not a position or is less accurate than
    /// [`GeofenceConfig::max_accuracy_m`]: dropped unused.
    Dropped,
}

/// Whether a task can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// It listens and runs.
    Active,
    /// Disabled by its owner.
    Disabled,
    /// It reads car data and "car data to home" is off (R11).
    DisabledByConsent,
}

/// What the engine asks of its host, drained by [`Engine::poll_output`]
/// until [`Output::Pending`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Start delivering this data.
    Subscribe(Subscription),
    /// Stop delivering this data.
    Unsubscribe(Subscription),
    /// Perform an action, then answer with [`Engine::handle_action_result`].
    Action(ActionRequest),
    /// Ask the owner on the phone, then answer with
    /// [`Engine::handle_confirmation`].
    Confirm(ConfirmRequest),
    /// A confirmation request is no longer wanted (run ended): take the
    /// question off the phone.
    ConfirmWithdrawn(ConfirmationId),
    /// Send this place event to its audience.
    Place(PlaceEvent),
    /// Nothing more until the next input.
    Pending,
}

/// Where a run is in its actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorFrame {
    /// Index in the list.
    pub index: u16,
    /// For a `Choose` at `index` that is running: the branch taken.
    pub branch: Option<u16>,
}

/// What a run waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wait {
    Nothing,
    Queued,
    Delay {
        until: u64,
        timer: TimerKey,
    },
    Result {
        request: RequestId,
        timer: TimerKey,
    },
    Confirmation {
        id: ConfirmationId,
        deadline: u64,
        timer: TimerKey,
    },
}

#[derive(Debug)]
struct Run {
    task: TaskId,
    cursor: Vec<CursorFrame>,
    wait: Wait,
    trace: Trace,
}

#[derive(Debug)]
struct TaskEntry {
    task: Arc<Task>,
    enabled: bool,
    consent_blocked: bool,
    /// Runs going on, oldest first.
    active: Vec<RunId>,
    /// Runs waiting (mode queued), oldest first.
    queue: VecDeque<RunId>,
    /// Finished traces and non-runs, oldest first, bounded.
    traces: VecDeque<Trace>,
    /// The timer of each time trigger, by trigger index.
    schedule: Vec<(u16, TimerKey)>,
}

impl TaskEntry {
    fn live(&self) -> bool {
        self.enabled && !self.consent_blocked
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingTransition {
    transition: Transition,
    since: u64,
    timer: TimerKey,
}

#[derive(Debug)]
struct PlaceEntry {
    shape: Option<Shape>,
    /// Live tasks (and, on the head unit, audiences) that need its state.
    refs: u32,
    /// Inside (`Some(true)`), outside, or not known yet. Nothing else about
    /// the car's position is kept (R32).
    inside: Option<bool>,
    pending: Option<PendingTransition>,
}

/// The automation engine (issue 5; R20, R21, R10, R11, R32).
///
/// Sans-IO: it contains no networking code, reads no clock and spawns
/// nothing. Time is `now_ms`, Unix milliseconds (UTC) passed with every
/// input: wall-clock time, because time-of-day triggers and timers that
/// survive a restart need it. A `now_ms` earlier than one seen before is
/// taken as the later one.
///
/// # Order of calls
/// 1. [`Engine::new`], then [`Engine::add_place`] for each place and
///    [`Engine::install`] for each task.
/// 2. Either [`Engine::start`], or [`Engine::restore`] with the last
///    [`Snapshot`](crate::Snapshot); the first input starts it otherwise.
/// 3. Feed inputs as they come (`handle_*`). Each one first fires every
///    timer due by its `now_ms`, in time order, then takes effect.
/// 4. After every input, drain [`Engine::poll_output`] until
///    [`Output::Pending`]; call [`Engine::handle_timeout`] at
///    [`Engine::poll_timeout`].
/// 5. After draining, persist [`Engine::snapshot`] if timers must survive
///    a restart.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    catalogue: Catalogue,
    started: bool,
    /// The latest time seen.
    clock: u64,
    tasks: HashMap<TaskId, TaskEntry>,
    index: Index,
    places: BTreeMap<PlaceId, PlaceEntry>,
    remote_interest: BTreeMap<Audience, BTreeSet<PlaceId>>,
    location_refs: u32,
    signal_refs: HashMap<String, u32>,
    property_refs: HashMap<DeviceId, HashMap<PropertyId, u32>>,
    vehicle_refs: [u32; 3],
    signal_values: HashMap<String, Value>,
    property_values: HashMap<DeviceId, HashMap<PropertyId, Value>>,
    vehicle_states: [Option<bool>; 3],
    timers: Timers,
    holds: HashMap<(TaskId, u16), (TimerKey, u64)>,
    runs: HashMap<RunId, Run>,
    requests: HashMap<RequestId, RunId>,
    confirmations: HashMap<ConfirmationId, RunId>,
    outputs: VecDeque<Output>,
    next_run: u64,
    next_request: u64,
    next_trace: u64,
}

impl Engine {
    /// An engine for tasks that name what `catalogue` lists.
    pub fn new(config: Config, catalogue: Catalogue) -> Self {
        Self {
            config,
            catalogue,
            started: false,
            clock: 0,
            tasks: HashMap::new(),
            index: Index::default(),
            places: BTreeMap::new(),
            remote_interest: BTreeMap::new(),
            location_refs: 0,
            signal_refs: HashMap::new(),
            property_refs: HashMap::new(),
            vehicle_refs: [0; 3],
            signal_values: HashMap::new(),
            property_values: HashMap::new(),
            vehicle_states: [None; 3],
            timers: Timers::default(),
            holds: HashMap::new(),
            runs: HashMap::new(),
            requests: HashMap::new(),
            confirmations: HashMap::new(),
            outputs: VecDeque::new(),
            next_run: 1,
            next_request: 1,
            next_trace: 1,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What tasks may name.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Replaces what tasks may name (a device bound or unbound). Tasks
    /// already installed are not checked again: the host first removes (or
    /// marks broken) those that name something gone; later installs are
    /// validated against the new catalogue.
    pub fn set_catalogue(&mut self, catalogue: Catalogue) {
        self.catalogue = catalogue;
    }

    /// The next thing the host must do; [`Output::Pending`] when there is
    /// nothing.
    pub fn poll_output(&mut self) -> Output {
        self.outputs.pop_front().unwrap_or(Output::Pending)
    }

    /// When [`Engine::handle_timeout`] must next be called (Unix ms).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next_due()
    }

    /// Fires every timer due by `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
    }

    /// The whole subscription set now (the outputs give its changes).
    pub fn subscriptions(&self) -> BTreeSet<Subscription> {
        let mut set = BTreeSet::new();
        if self.location_refs > 0 {
            set.insert(Subscription::Location);
        }
        if self.config.site == Site::Hub {
            for (id, place) in &self.places {
                if place.refs > 0 {
                    set.insert(Subscription::Place(id.clone()));
                }
            }
        }
        for path in self.signal_refs.keys() {
            set.insert(Subscription::Signal(path.clone()));
        }
        for (device, props) in &self.property_refs {
            for property in props.keys() {
                set.insert(Subscription::Property(device.clone(), *property));
            }
        }
        for (state, refs) in [
            VehicleState::Parking,
            VehicleState::Locking,
            VehicleState::Charging,
        ]
        .into_iter()
        .zip(self.vehicle_refs)
        {
            if refs > 0 {
                set.insert(Subscription::Vehicle(state));
            }
        }
        set
    }

    /// The task `id`.
    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id).map(|e| e.task.as_ref())
    }

    /// The ids of the installed tasks, in order.
    pub fn task_ids(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Whether the task can run.
    pub fn status(&self, id: TaskId) -> Option<TaskStatus> {
        self.tasks.get(&id).map(|e| {
            if !e.enabled {
                TaskStatus::Disabled
            } else if e.consent_blocked {
                TaskStatus::DisabledByConsent
            } else {
                TaskStatus::Active
            }
        })
    }

    /// The task's traces, oldest first: the retained finished ones, then
    /// those of runs going on or queued.
    pub fn traces(&self, id: TaskId) -> Vec<Trace> {
        let Some(entry) = self.tasks.get(&id) else {
            return Vec::new();
        };
        let mut traces: Vec<Trace> = entry.traces.iter().cloned().collect();
        traces.extend(
            entry
                .active
                .iter()
                .chain(entry.queue.iter())
                .filter_map(|run| self.runs.get(run))
                .map(|run| run.trace.clone()),
        );
        traces.sort_by_key(|t| t.seq);
        traces
    }

    /// Whether the car is inside `place` (`None`: not known, or the place is
    /// not needed by any live task).
    pub fn place_state(&self, place: &PlaceId) -> Option<bool> {
        self.places.get(place).and_then(|p| p.inside)
    }

    /// Timers pending (delays, holds, dwell, time triggers, deadlines).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Fires every timer due by `now` and moves the clock; returns the
    /// effective time (never earlier than one seen before).
    fn advance(&mut self, now: u64) -> u64 {
        if !self.started {
            self.start(now);
        }
        let now = now.max(self.clock);
        while let Some((key, timer)) = self.timers.pop_due(now) {
            self.on_timer(key, timer, now);
        }
        self.clock = now;
        now
    }

    fn on_timer(&mut self, key: TimerKey, timer: timers::Timer, now: u64) {
        use timers::Timer;
        match timer {
            Timer::Dwell { place, transition } => self.on_dwell(key, &place, transition, now),
            Timer::Hold { task, trigger } => self.on_hold(task, trigger, now),
            Timer::Delay { run } => self.on_delay(run, now),
            Timer::ActionDeadline { request } => self.on_action_deadline(request, now),
            Timer::ConfirmDeadline { id } => self.on_confirm_deadline(id, now),
            Timer::Schedule {
                task,
                trigger,
                occurrence,
            } => self.on_schedule(task, trigger, occurrence, key.0, now),
        }
    }

    fn push_trace(&mut self, trace: Trace) {
        let cap = self.config.traces_per_task.max(1);
        if let Some(entry) = self.tasks.get_mut(&trace.task) {
            entry.traces.push_back(trace);
            while entry.traces.len() > cap {
                entry.traces.pop_front();
            }
        }
    }

    fn next_trace_seq(&mut self) -> u64 {
        let seq = self.next_trace;
        self.next_trace += 1;
        seq
    }
}
