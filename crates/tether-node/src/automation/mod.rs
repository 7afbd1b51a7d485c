//! Super tasks on a node (SPEC §18): the host around the sans-IO engine of
//! `tether-automation`. It owns the engine, reads the clock for it, performs
//! the actions it asks for through an [`Actuator`], persists tasks, traces,
//! places and the engine's snapshot in the store, and carries place and
//! vehicle events between the head unit and the home hub.
//!
//! - On the **head unit** the engine gets the car's position fixes and
//!   evaluates geofences itself; only `{place, enter|leave}` and vehicle
//!   events go to the hub, and only while "car data to home" is on (R10,
//!   R11, R21, R28). A fix is used at once and never stored (R32).
//! - On the **hub** the engine gets those events from the head unit and
//!   acts on the home's devices.

pub(crate) mod catalogue;
pub(crate) mod drive;
pub(crate) mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_automation::template::{Binding, Template, TemplateError};
use tether_automation::{
    ActionResult, Audience, Catalogue, Config, ConfirmRequest, ConfirmationId, Delivery, DeviceId,
    Effect, Engine, EngineError, Fix, LatLon, Output, Permissions, Place, PlaceId, Shape, Snapshot,
    Subscription, Task, TaskId, TaskStatus, Trace, Transition, ValidationError, Value,
    VehicleEvent, wire,
};
use tether_proto::v1 as pb;
use tether_store::{Store, StoreError, TaskRecord};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use crate::wire::lock;

/// The store setting that keeps the "car data to home" switch.
const CONSENT_SETTING: &str = "automation.car_data_to_home";

/// Longest failure reason kept in a trace.
const MAX_REASON_BYTES: usize = 256;

/// Traces kept per task in the store.
pub const TRACES_KEPT: usize = 20;

/// Why a super-task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    /// The task is not valid here (unknown signal or device, a loop, a
    /// command the author's role may not send…).
    #[error("invalid task: {0}")]
    Invalid(#[from] ValidationError),
    /// The engine refused (unknown task or place, a bad place).
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// Bytes that are not a task, template or trace.
    #[error("malformed: {0}")]
    Wire(#[from] wire::WireError),
    /// A template could not be bound.
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    /// No task with this number.
    #[error("no task {0}")]
    UnknownTask(u64),
    /// No question with this number is waiting for the owner.
    #[error("no confirmation {0} is pending")]
    NoSuchQuestion(u64),
    /// A request field is missing or wrong.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// This peer may not do this.
    #[error("permission denied: {0}")]
    Denied(&'static str),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl AutomationError {
    /// The wire error code for this error.
    pub(crate) fn code(&self) -> pb::ErrorCode {
        match self {
            AutomationError::UnknownTask(_)
            | AutomationError::NoSuchQuestion(_)
            | AutomationError::Engine(EngineError::UnknownTask(_)) => pb::ErrorCode::NotFound,
            AutomationError::Denied(_) => pb::ErrorCode::PermissionDenied,
            AutomationError::Store(_) => pb::ErrorCode::Internal,
            _ => pb::ErrorCode::BadRequest,
        }
    }
}

/// An action's effect, performed by the node.
pub type EffectFuture = Pin<Box<dyn Future<Output = ActionResult> + Send>>;

/// Performs what tasks ask for: device writes and actions, vehicle
/// commands, app intents. Each node brings its own.
pub trait Actuator: Send + Sync + 'static {
    /// Performs `effect` and says how it went.
    fn perform(&self, effect: Effect) -> EffectFuture;

    /// A device property's value now, if this node knows it: handed to the
    /// engine when a task starts reading it, so a change trigger knows
    /// where it starts from.
    fn current(
        &self,
        _device: &DeviceId,
        _property: tether_automation::PropertyId,
    ) -> Option<Value> {
        None
    }
}

/// The engine's clock: the system's, or a manual one that the host moves
/// (a replayed drive, tests).
#[derive(Debug)]
pub enum Clock {
    /// Unix time.
    System,
    /// Unix milliseconds set by [`AutomationHost::advance_clock`].
    Manual(AtomicU64),
}

impl Clock {
    /// A manual clock starting at `unix_ms`.
    pub fn manual(unix_ms: u64) -> Self {
        Clock::Manual(AtomicU64::new(unix_ms))
    }

    fn now_ms(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            Clock::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }
}

/// A task as a user sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    /// The task (its `id` is its number).
    pub task: Task,
    /// Whether its owner enabled it.
    pub enabled: bool,
    /// Whether it can run now.
    pub state: TaskState,
}

/// Whether a task can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// It listens and runs.
    Active,
    /// Its owner disabled it.
    Disabled,
    /// It reads car data and "car data to home" is off (R11).
    DisabledByConsent,
    /// A device or place it names is gone: it is kept, and says why.
    Broken(String),
}

impl TaskState {
    /// A short word for it.
    pub fn label(&self) -> &str {
        match self {
            TaskState::Active => "active",
            TaskState::Disabled => "disabled",
            TaskState::DisabledByConsent => "disabled by consent",
            TaskState::Broken(_) => "broken",
        }
    }
}

/// Something a task did that the node shows: the demo narrates these.
#[derive(Debug, Clone, PartialEq)]
pub struct Performed {
    /// The task.
    pub task: TaskId,
    /// What it asked for.
    pub effect: Effect,
    /// How it went.
    pub result: ActionResult,
}

struct Record {
    task: Task,
    enabled: bool,
    broken: Option<String>,
}

/// What a hub's tasks need from the car: place events, vehicle events,
/// vehicle signals (R21: nothing else is asked for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Places.
    pub places: BTreeSet<PlaceId>,
    /// Vehicle events (parked, locked, charging…).
    pub vehicle: bool,
    /// Vehicle signals (VSS paths), read with a subscription while "car
    /// data to home" is on.
    pub signals: BTreeSet<String>,
}

/// A question for the owner: may this task unlock or open the car now
/// (R23)? Or the end of one.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfirmNotice {
    /// Answer with [`AutomationHost::confirm`].
    Ask(ConfirmRequest),
    /// No longer wanted: answered, timed out, or the run ended.
    Withdrawn(ConfirmationId),
}

struct Watcher {
    interest: Interest,
    events: mpsc::UnboundedSender<pb::HomeEvent>,
}

struct Inner {
    engine: Engine,
    records: BTreeMap<TaskId, Record>,
    next_id: u64,
    watchers: Vec<Watcher>,
    interest: Interest,
    /// The vehicle states behind `interest.vehicle`.
    vehicle_states: BTreeSet<tether_automation::VehicleState>,
    confirmations: BTreeMap<ConfirmationId, ConfirmRequest>,
    confirm_watchers: Vec<mpsc::UnboundedSender<ConfirmNotice>>,
    performed: Vec<Performed>,
    persisted_seq: u64,
    /// Added to the engine's trace numbers in the store: when the engine
    /// started afresh its numbers restart, and stored traces must stay.
    seq_offset: u64,
    /// The last snapshot written, its clock zeroed.
    last_snapshot: Option<Snapshot>,
    /// The engine's next trace number when traces were last written.
    persisted_next_trace: u64,
    open_traces: BTreeSet<(TaskId, u64)>,
}

/// The engine of one node with its store, clock and actuator.
pub struct AutomationHost {
    inner: Mutex<Inner>,
    wake: Notify,
    interest_changed: Notify,
    /// Actions handed to the actuator and not yet answered.
    in_flight: std::sync::atomic::AtomicUsize,
    answered: Notify,
    consent: tokio::sync::watch::Sender<bool>,
    clock: Clock,
    actuator: Arc<dyn Actuator>,
    store: Arc<Mutex<Store>>,
    /// Why the stored snapshot could not be restored, if so.
    restore_note: Option<String>,
    /// The embedding app reports vehicle events itself
    /// ([`AutomationHost::report_vehicle_event`]): the head unit then stops
    /// deriving them from its signals, so none is counted twice.
    app_reports_vehicle_events: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for AutomationHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutomationHost").finish_non_exhaustive()
    }
}

fn encode_place(place: &Place) -> Option<String> {
    match place.shape.as_ref()? {
        Shape::Circle { center, radius_m } => {
            Some(format!("circle {} {} {}", center.lat, center.lon, radius_m))
        }
        Shape::Polygon(vertices) => {
            let mut text = String::from("polygon");
            for v in vertices {
                text.push_str(&format!(" {} {}", v.lat, v.lon));
            }
            Some(text)
        }
    }
}

fn decode_place(name: &str, text: &[u8]) -> Option<Place> {
    let text = std::str::from_utf8(text).ok()?;
    let mut words = text.split(' ');
    let kind = words.next()?;
    let numbers: Vec<f64> = words.map(str::parse).collect::<Result<_, _>>().ok()?;
    match (kind, numbers.as_slice()) {
        ("circle", [lat, lon, r]) => Some(Place::circle(name, LatLon::new(*lat, *lon), *r)),
        ("polygon", n) if n.len() >= 6 && n.len() % 2 == 0 => Some(Place::polygon(
            name,
            n.chunks(2).map(|c| LatLon::new(c[0], c[1])).collect(),
        )),
        _ => None,
    }
}

impl AutomationHost {
    /// Opens the host: places, tasks and the snapshot come back from the
    /// store. A stored task that no longer validates (its device is gone)
    /// comes back broken, not dropped. A snapshot that cannot be read is
    /// reported ([`AutomationHost::restore_note`]) and the engine starts
    /// afresh.
    pub fn open(
        mut config: Config,
        catalogue: Catalogue,
        permissions: Permissions,
        store: Arc<Mutex<Store>>,
        actuator: Arc<dyn Actuator>,
        clock: Clock,
    ) -> Result<Arc<Self>, AutomationError> {
        let now = clock.now_ms();
        config.seed = crate::config::random_bytes()
            .map_err(|_| AutomationError::BadRequest("no random source"))?;
        let (places, stored, snapshot) = {
            let store = lock(&store);
            // R27: off unless the user turned it on.
            config.car_data_to_home = store.get_setting(CONSENT_SETTING)?.as_deref() == Some("on");
            (
                store.list_places()?,
                store.list_tasks()?,
                store.automation_snapshot()?,
            )
        };
        let car_data_to_home = config.car_data_to_home;
        let mut engine = Engine::new(config, catalogue);
        for (name, bytes) in places {
            match decode_place(&name, &bytes) {
                Some(place) => engine.add_place(place)?,
                None => warn!(place = %name, "a stored place could not be read"),
            }
        }
        let mut records = BTreeMap::new();
        let mut disabled = Vec::new();
        let mut next_id = lock(&store).max_task_id()?;
        for stored in stored {
            let id = TaskId(stored.task_id);
            next_id = next_id.max(stored.task_id);
            let mut task = match wire::decode_task(&stored.task) {
                Ok(task) => task,
                Err(e) => {
                    warn!(task = stored.task_id, error = %e, "a stored task could not be read");
                    continue;
                }
            };
            task.id = id;
            let mut broken = stored.broken.clone();
            if broken.is_none() {
                if let Err(e) = engine.install(task.clone(), &permissions, now) {
                    broken = Some(e.to_string());
                } else if !stored.enabled {
                    // After the restore: the engine must not start first.
                    disabled.push(id);
                }
            }
            records.insert(
                id,
                Record {
                    task,
                    enabled: stored.enabled,
                    broken,
                },
            );
        }
        let mut restore_note = None;
        let mut restored = false;
        match snapshot.map(|bytes| wire::decode_snapshot(&bytes)) {
            Some(Ok(snapshot)) => match engine.restore(snapshot, now) {
                Ok(_) => restored = true,
                Err(e) => {
                    restore_note = Some(e.to_string());
                    engine.start(now);
                }
            },
            Some(Err(e)) => {
                restore_note = Some(e.to_string());
                engine.start(now);
            }
            None => engine.start(now),
        }
        for id in disabled {
            engine.set_enabled(id, false, now)?;
        }
        let seq_offset = if restored {
            0
        } else {
            lock(&store).max_trace_seq()?
        };
        // Every trace the engine holds now is written on the first persist.
        let persisted_seq = 0;
        let host = Arc::new(Self {
            inner: Mutex::new(Inner {
                engine,
                records,
                next_id,
                watchers: Vec::new(),
                interest: Interest::default(),
                vehicle_states: BTreeSet::new(),
                confirmations: BTreeMap::new(),
                confirm_watchers: Vec::new(),
                performed: Vec::new(),
                persisted_seq,
                seq_offset,
                last_snapshot: None,
                persisted_next_trace: u64::MAX,
                open_traces: BTreeSet::new(),
            }),
            wake: Notify::new(),
            interest_changed: Notify::new(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            answered: Notify::new(),
            consent: tokio::sync::watch::Sender::new(car_data_to_home),
            clock,
            actuator,
            store,
            restore_note,
            app_reports_vehicle_events: std::sync::atomic::AtomicBool::new(false),
        });
        host.settle();
        Ok(host)
    }

    /// Why the stored snapshot was not restored, if it was not.
    pub fn restore_note(&self) -> Option<&str> {
        self.restore_note.as_deref()
    }

    /// The engine's time now (Unix ms).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs timers on the system clock until the host is dropped. A manual
    /// clock's timers run in [`AutomationHost::advance_clock`] instead.
    pub fn spawn_timers(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let wait = {
                    let Some(host) = weak.upgrade() else { return };
                    let due = lock(&host.inner).engine.poll_timeout();
                    match (&host.clock, due) {
                        (Clock::System, Some(at)) => {
                            Duration::from_millis(at.saturating_sub(host.now_ms()))
                        }
                        // Re-check now and then: the host may be gone.
                        _ => Duration::from_secs(1),
                    }
                };
                let Some(host) = weak.upgrade() else { return };
                let woken = {
                    let notified = host.wake.notified();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => false,
                        _ = notified => true,
                    }
                };
                if !woken && matches!(host.clock, Clock::System) {
                    let now = host.now_ms();
                    let due = lock(&host.inner).engine.poll_timeout();
                    if due.is_some_and(|at| at <= now) {
                        lock(&host.inner).engine.handle_timeout(now);
                        host.settle();
                    }
                }
            }
        })
    }

    /// Waits (at most `limit`) until every action handed to the actuator
    /// has been answered. Returns whether that happened. A replayed drive
    /// waits so that its clock does not outrun real actions.
    pub async fn idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let answered = self.answered.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                return self.in_flight.load(Ordering::SeqCst) == 0;
            }
        }
    }

    /// Moves a manual clock to `unix_ms` (never back), running what falls
    /// due on the way in order, and after each, waiting (up to a second)
    /// for the actions it started: a manual clock never outruns the real
    /// actions it waits for.
    pub async fn advance_clock(self: &Arc<Self>, unix_ms: u64) {
        let Clock::Manual(now) = &self.clock else {
            return;
        };
        loop {
            self.idle(Duration::from_secs(1)).await;
            let due = lock(&self.inner).engine.poll_timeout();
            match due {
                Some(at) if at <= unix_ms => {
                    now.fetch_max(at, Ordering::SeqCst);
                    let at = now.load(Ordering::SeqCst);
                    lock(&self.inner).engine.handle_timeout(at);
                    self.settle();
                }
                _ => break,
            }
        }
        now.fetch_max(unix_ms, Ordering::SeqCst);
        lock(&self.inner)
            .engine
            .handle_timeout(now.load(Ordering::SeqCst));
        self.settle();
        self.idle(Duration::from_secs(1)).await;
    }

    // ---- tasks -------------------------------------------------------

    /// Installs a new task (its id is assigned here) for an author with
    /// `permissions`.
    pub fn create(
        self: &Arc<Self>,
        mut task: Task,
        enabled: bool,
        permissions: &Permissions,
    ) -> Result<TaskInfo, AutomationError> {
        let now = self.now_ms();
        let info = {
            let mut inner = lock(&self.inner);
            let id = TaskId(inner.next_id + 1);
            task.id = id;
            inner.engine.install(task.clone(), permissions, now)?;
            if !enabled {
                inner.engine.set_enabled(id, false, now)?;
            }
            inner.next_id = id.0;
            let record = Record {
                task,
                enabled,
                broken: None,
            };
            self.save(&record)?;
            inner.records.insert(id, record);
            info_of(&inner, id).ok_or(AutomationError::UnknownTask(id.0))?
        };
        self.settle();
        Ok(info)
    }

    /// Replaces task `id` (its runs are cancelled; its traces stay).
    pub fn update(
        self: &Arc<Self>,
        id: u64,
        mut task: Task,
        permissions: &Permissions,
    ) -> Result<TaskInfo, AutomationError> {
        let now = self.now_ms();
        let id = TaskId(id);
        let info = {
            let mut inner = lock(&self.inner);
            let enabled = match inner.records.get(&id) {
                Some(r) => r.enabled,
                None => return Err(AutomationError::UnknownTask(id.0)),
            };
            task.id = id;
            // The old version holds the number until it is removed below.
            inner.engine.validate_replacement(&task, permissions)?;
            if inner.engine.task(id).is_some() {
                inner.engine.remove(id, now)?;
            }
            inner.engine.install(task.clone(), permissions, now)?;
            if !enabled {
                inner.engine.set_enabled(id, false, now)?;
            }
            let record = Record {
                task,
                enabled,
                broken: None,
            };
            self.save(&record)?;
            inner.records.insert(id, record);
            info_of(&inner, id).ok_or(AutomationError::UnknownTask(id.0))?
        };
        self.settle();
        Ok(info)
    }

    /// Deletes task `id` and its traces.
    pub fn delete(self: &Arc<Self>, id: u64) -> Result<(), AutomationError> {
        let now = self.now_ms();
        {
            let mut inner = lock(&self.inner);
            if inner.records.remove(&TaskId(id)).is_none() {
                return Err(AutomationError::UnknownTask(id));
            }
            if inner.engine.task(TaskId(id)).is_some() {
                inner.engine.remove(TaskId(id), now)?;
            }
            lock(&self.store).delete_task(id)?;
        }
        self.settle();
        Ok(())
    }

    /// Enables or disables task `id`.
    pub fn set_enabled(
        self: &Arc<Self>,
        id: u64,
        enabled: bool,
    ) -> Result<TaskInfo, AutomationError> {
        let now = self.now_ms();
        let info = {
            let mut inner = lock(&self.inner);
            let id = TaskId(id);
            if !inner.records.contains_key(&id) {
                return Err(AutomationError::UnknownTask(id.0));
            }
            if inner.engine.task(id).is_some() {
                inner.engine.set_enabled(id, enabled, now)?;
            }
            if let Some(record) = inner.records.get_mut(&id) {
                record.enabled = enabled;
            }
            if let Some(record) = inner.records.get(&id) {
                self.save(record)?;
            }
            info_of(&inner, id).ok_or(AutomationError::UnknownTask(id.0))?
        };
        self.settle();
        Ok(info)
    }

    /// Every task, by number.
    pub fn list(&self) -> Vec<TaskInfo> {
        let inner = lock(&self.inner);
        inner
            .records
            .keys()
            .filter_map(|id| info_of(&inner, *id))
            .collect()
    }

    /// Task `id`.
    pub fn get(&self, id: u64) -> Option<TaskInfo> {
        info_of(&lock(&self.inner), TaskId(id))
    }

    /// Runs task `id` now (its conditions still apply). Returns the run's
    /// number, or 0 if its mode or conditions kept it from running.
    pub fn run(self: &Arc<Self>, id: u64) -> Result<u64, AutomationError> {
        let now = self.now_ms();
        let run = {
            let mut inner = lock(&self.inner);
            if !inner.records.contains_key(&TaskId(id)) {
                return Err(AutomationError::UnknownTask(id));
            }
            let before = inner.engine.traces(TaskId(id)).last().map(|t| t.seq);
            inner.engine.handle_manual_run(TaskId(id), now)?;
            inner
                .engine
                .traces(TaskId(id))
                .into_iter()
                .rev()
                .find(|t| Some(t.seq) > before)
                .and_then(|t| t.run)
                .map_or(0, |r| r.0)
        };
        self.settle();
        Ok(run)
    }

    /// Task `id`'s traces, oldest first, at most `limit` (0: all kept).
    pub fn traces(&self, id: u64, limit: usize) -> Result<Vec<Trace>, AutomationError> {
        if !lock(&self.inner).records.contains_key(&TaskId(id)) {
            return Err(AutomationError::UnknownTask(id));
        }
        // The snapshot too: one that could not be stored is an error here.
        self.persist()?;
        let stored = lock(&self.store).list_traces(id)?;
        let mut traces = Vec::with_capacity(stored.len());
        for bytes in stored {
            match wire::decode_trace(&bytes) {
                Ok(trace) => traces.push(trace),
                Err(e) => warn!(task = id, error = %e, "a stored trace could not be read"),
            }
        }
        if limit > 0 && traces.len() > limit {
            traces.drain(..traces.len() - limit);
        }
        Ok(traces)
    }

    /// Task `id` as a template to share, with `nickname` shown and its
    /// places and devices stripped (R22). `name`, when given, replaces the
    /// task's name in the template (1..=[`tether_automation::MAX_NAME_BYTES`]
    /// bytes): the name the owner typed may say where or who.
    pub fn share(
        &self,
        id: u64,
        nickname: &str,
        name: Option<&str>,
    ) -> Result<Template, AutomationError> {
        if let Some(name) = name
            && (name.trim().is_empty() || name.len() > tether_automation::MAX_NAME_BYTES)
        {
            return Err(AutomationError::BadRequest(
                "a template's name must be 1..=64 bytes",
            ));
        }
        let inner = lock(&self.inner);
        let record = inner
            .records
            .get(&TaskId(id))
            .ok_or(AutomationError::UnknownTask(id))?;
        let mut template = Template::from_task(&record.task, nickname);
        if let Some(name) = name {
            name.clone_into(&mut template.task.name);
        }
        Ok(template)
    }

    /// Binds a shared template to this node's own places and devices and
    /// installs it (R22).
    pub fn accept(
        self: &Arc<Self>,
        template: &Template,
        binding: &Binding,
        enabled: bool,
        permissions: &Permissions,
    ) -> Result<TaskInfo, AutomationError> {
        let task = template.bind(binding)?;
        self.create(task, enabled, permissions)
    }

    /// Replaces what tasks may name (a device bound or unbound). Call
    /// [`AutomationHost::device_gone`] for each device that went.
    pub fn set_catalogue(&self, catalogue: Catalogue) {
        lock(&self.inner).engine.set_catalogue(catalogue);
    }

    /// Marks every task that names `device` broken (the device was
    /// unbound): it stops, is kept, and says why.
    pub fn device_gone(self: &Arc<Self>, device: &DeviceId) -> Result<Vec<u64>, AutomationError> {
        let now = self.now_ms();
        let mut broken = Vec::new();
        {
            let mut inner = lock(&self.inner);
            let ids: Vec<TaskId> = inner
                .records
                .iter()
                .filter(|(_, r)| r.broken.is_none() && names_device(&r.task, device))
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if inner.engine.task(id).is_some() {
                    inner.engine.remove(id, now)?;
                }
                if let Some(record) = inner.records.get_mut(&id) {
                    record.broken = Some(format!("device `{}` was unbound", device.0));
                }
                if let Some(record) = inner.records.get(&id) {
                    self.save(record)?;
                }
                broken.push(id.0);
            }
        }
        self.settle();
        Ok(broken)
    }

    // ---- places and inputs -------------------------------------------

    /// Defines (or replaces) a place. On the head unit it needs a shape;
    /// the hub may give one for sun times, or none. Stored locally, never
    /// sent (R10).
    pub fn define_place(self: &Arc<Self>, place: Place) -> Result<(), AutomationError> {
        {
            let mut inner = lock(&self.inner);
            if let Some(text) = encode_place(&place) {
                lock(&self.store).put_place(&place.id.0, text.as_bytes())?;
            }
            let _ = inner.engine.remove_place(&place.id);
            inner.engine.add_place(place)?;
        }
        self.settle();
        Ok(())
    }

    /// A position fix of the car (head unit): read against the places
    /// that tasks and the hub need, then dropped (R32).
    pub fn handle_fix(self: &Arc<Self>, fix: Fix) -> Delivery {
        let now = self.now_ms();
        let delivery = lock(&self.inner).engine.handle_fix(fix, now);
        self.settle();
        delivery
    }

    /// A vehicle event: to this node's tasks, and (head unit) to each hub
    /// that asked, while "car data to home" is on (R11).
    pub fn handle_vehicle_event(self: &Arc<Self>, event: VehicleEvent) -> Delivery {
        let now = self.now_ms();
        let delivery = {
            let mut inner = lock(&self.inner);
            if inner.engine.config().car_data_to_home {
                let notice = wire::home_event_to_proto(&wire::HomeEvent::Vehicle(event));
                inner
                    .watchers
                    .retain(|w| !w.interest.vehicle || w.events.send(notice.clone()).is_ok());
            }
            inner.engine.handle_vehicle_event(event, now)
        };
        self.settle();
        delivery
    }

    /// A vehicle event reported by the app that embeds the head unit (the
    /// vehicle's own software knows best). From the first report on, the
    /// head unit no longer derives vehicle events from its signals (SPEC
    /// §18.6), so that no event is counted twice.
    pub fn report_vehicle_event(self: &Arc<Self>, event: VehicleEvent) -> Delivery {
        self.app_reports_vehicle_events
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle_vehicle_event(event)
    }

    /// Whether the head unit derives vehicle events from its signals: until
    /// the app reports one itself.
    pub fn derives_vehicle_events(&self) -> bool {
        !self
            .app_reports_vehicle_events
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether anyone wants vehicle events now: this node's tasks, or (head
    /// unit) a hub that asked for them while "car data to home" is on.
    pub fn wants_vehicle_events(&self) -> bool {
        !self.wanted_vehicle_states().is_empty()
    }

    /// The vehicle states whose events are wanted now (R21): those this
    /// node's tasks declared, and every state while a hub asks for vehicle
    /// events under "car data to home" (its request names no state).
    pub fn wanted_vehicle_states(&self) -> BTreeSet<tether_automation::VehicleState> {
        use tether_automation::VehicleState;
        let inner = lock(&self.inner);
        let hub_wants = inner.engine.config().car_data_to_home
            && inner
                .watchers
                .iter()
                .any(|w| w.interest.vehicle && !w.events.is_closed());
        if hub_wants {
            return [
                VehicleState::Parking,
                VehicleState::Locking,
                VehicleState::Charging,
            ]
            .into();
        }
        inner.vehicle_states.clone()
    }

    /// A device property's new value (a home device changed).
    pub fn handle_property(
        self: &Arc<Self>,
        device: &DeviceId,
        property: tether_automation::PropertyId,
        value: Value,
    ) -> Delivery {
        let now = self.now_ms();
        let delivery = lock(&self.inner)
            .engine
            .handle_property(device, property, value, now);
        self.settle();
        delivery
    }

    /// A vehicle signal's new value.
    pub fn handle_signal(self: &Arc<Self>, path: &str, value: Value) -> Delivery {
        let now = self.now_ms();
        let delivery = lock(&self.inner).engine.handle_signal(path, value, now);
        self.settle();
        delivery
    }

    /// A `{place, enter|leave}` event from the head unit (hub).
    pub fn handle_place_event(
        self: &Arc<Self>,
        place: &PlaceId,
        transition: Transition,
    ) -> Delivery {
        let now = self.now_ms();
        let delivery = lock(&self.inner)
            .engine
            .handle_place_event(place, transition, now);
        self.settle();
        delivery
    }

    /// The "car data to home" switch (R11, R28). On the head unit, off
    /// stops place and vehicle events to the hub from the next event on; on
    /// the hub, off disables every task that reads car data.
    ///
    /// Stored before it is answered, so a restart keeps it. If the store
    /// fails the caller gets the error; a withdrawal (off) still takes
    /// effect in memory at once (R28: fail closed, it is written again by
    /// the next switch), a consent (on) does not.
    pub fn set_car_data_to_home(self: &Arc<Self>, on: bool) -> Result<(), AutomationError> {
        let now = self.now_ms();
        let stored = {
            let mut inner = lock(&self.inner);
            let stored = match (
                lock(&self.store).set_setting(CONSENT_SETTING, if on { "on" } else { "off" }),
                on,
            ) {
                (Err(e), true) => return Err(e.into()),
                (stored, _) => stored,
            };
            inner.engine.handle_consent(on, now);
            let notice = pb::HomeEvent {
                kind: Some(pb::home_event::Kind::Consent(pb::ConsentState {
                    car_data_to_home: on,
                })),
            };
            inner
                .watchers
                .retain(|w| w.events.send(notice.clone()).is_ok());
            stored
        };
        self.consent.send_replace(on);
        self.settle();
        if let Err(e) = stored {
            warn!(error = %e, "the consent withdrawal is in force but could not be stored");
            return Err(e.into());
        }
        Ok(())
    }

    /// Follows the "car data to home" switch (the head unit ends a hub's
    /// signal subscriptions when it goes off, R11).
    pub fn consent_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.consent.subscribe()
    }

    /// Whether "car data to home" is on.
    pub fn car_data_to_home(&self) -> bool {
        lock(&self.inner).engine.config().car_data_to_home
    }

    /// A hub asks for place and vehicle events (head unit). Events flow
    /// into the returned channel until it is dropped. An unknown place is
    /// an error.
    pub fn watch_home(
        self: &Arc<Self>,
        interest: Interest,
    ) -> Result<mpsc::UnboundedReceiver<pb::HomeEvent>, AutomationError> {
        let now = self.now_ms();
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut inner = lock(&self.inner);
            let _ = tx.send(pb::HomeEvent {
                kind: Some(pb::home_event::Kind::Consent(pb::ConsentState {
                    car_data_to_home: inner.engine.config().car_data_to_home,
                })),
            });
            inner.watchers.retain(|w| !w.events.is_closed());
            inner.watchers.push(Watcher {
                interest: interest.clone(),
                events: tx,
            });
            let places = union_places(&inner.watchers);
            inner
                .engine
                .handle_remote_interest(Audience::Home, places, now)?;
        }
        self.settle();
        Ok(rx)
    }

    /// What this node's tasks need from the head unit (hub): changes are
    /// signalled by [`AutomationHost::interest_changed`].
    pub fn interest(&self) -> Interest {
        lock(&self.inner).interest.clone()
    }

    /// Resolves when [`AutomationHost::interest`] changes after this call.
    pub fn interest_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.interest_changed.notified()
    }

    /// Unlock or open requests waiting for the owner (R23 safety).
    pub fn pending_confirmations(&self) -> Vec<ConfirmRequest> {
        lock(&self.inner).confirmations.values().cloned().collect()
    }

    /// Questions for the owner as they come (those pending now first),
    /// and their withdrawal, until the receiver is dropped.
    pub fn watch_confirmations(&self) -> mpsc::UnboundedReceiver<ConfirmNotice> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = lock(&self.inner);
        for request in inner.confirmations.values() {
            let _ = tx.send(ConfirmNotice::Ask(request.clone()));
        }
        inner.confirm_watchers.retain(|w| !w.is_closed());
        inner.confirm_watchers.push(tx);
        rx
    }

    /// The owner's answer to a confirmation request. An id that is not
    /// pending (answered, withdrawn, never asked) is an error.
    pub fn confirm(self: &Arc<Self>, id: ConfirmationId, yes: bool) -> Result<(), AutomationError> {
        let now = self.now_ms();
        {
            let mut inner = lock(&self.inner);
            if inner.confirmations.remove(&id).is_none() {
                return Err(AutomationError::NoSuchQuestion(id.0));
            }
            inner
                .confirm_watchers
                .retain(|w| w.send(ConfirmNotice::Withdrawn(id)).is_ok());
            inner.engine.handle_confirmation(id, yes, now)?;
        }
        self.settle();
        Ok(())
    }

    /// The actions performed since the last call, in order.
    pub fn take_performed(&self) -> Vec<Performed> {
        std::mem::take(&mut lock(&self.inner).performed)
    }

    /// The engine's status of task `id`.
    pub fn status(&self, id: u64) -> Option<TaskStatus> {
        lock(&self.inner).engine.status(TaskId(id))
    }

    // ---- the loop ----------------------------------------------------

    fn save(&self, record: &Record) -> Result<(), AutomationError> {
        lock(&self.store).put_task(&TaskRecord {
            task_id: record.task.id.0,
            task: wire::encode_task(&record.task),
            enabled: record.enabled,
            broken: record.broken.clone(),
        })?;
        Ok(())
    }

    /// Drains the engine's outputs, persists, then hands the actions out.
    ///
    /// Persist first (SPEC §18.6): the snapshot holding the run numbers is
    /// stored before any action of a run leaves, so a restart never numbers
    /// a new run like one whose vehicle command already went out (its
    /// idempotency key `H(seed, task, run, step)` would repeat, and the car
    /// would answer the old receipt without acting, R23). When the write
    /// fails, nothing is sent: each action is answered
    /// [`ActionResult::NotDispatched`] and its run fails with that in its
    /// trace; the engine's outputs are then drained again.
    fn settle(self: &Arc<Self>) {
        loop {
            let started = self.drain_outputs();
            match self.persist() {
                Ok(()) => {
                    self.dispatch(started);
                    break;
                }
                Err(e) if started.is_empty() => {
                    warn!(error = %e, "the automation snapshot could not be stored");
                    break;
                }
                Err(e) => {
                    warn!(
                        error = %e,
                        actions = started.len(),
                        "the automation snapshot could not be stored: the actions are not sent"
                    );
                    let now = self.now_ms();
                    let mut inner = lock(&self.inner);
                    for request in started {
                        inner.performed.push(Performed {
                            task: request.task,
                            effect: request.effect,
                            result: ActionResult::NotDispatched,
                        });
                        if let Err(e) = inner.engine.handle_action_result(
                            request.id,
                            ActionResult::NotDispatched,
                            now,
                        ) {
                            debug!(error = %e, "an undispatched action was no longer pending");
                        }
                        self.in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                    drop(inner);
                    self.answered.notify_waiters();
                }
            }
        }
        self.wake.notify_waiters();
    }

    /// Drains the engine's outputs; returns the actions it asked for.
    fn drain_outputs(&self) -> Vec<tether_automation::ActionRequest> {
        let mut started = Vec::new();
        {
            let mut inner = lock(&self.inner);
            let mut read = Vec::new();
            loop {
                match inner.engine.poll_output() {
                    Output::Pending => {
                        if read.is_empty() {
                            break;
                        }
                        // Properties a task started reading: where they
                        // stand now.
                        let now = self.now_ms();
                        for (device, property) in std::mem::take(&mut read) {
                            if let Some(value) = self.actuator.current(&device, property) {
                                let _ = inner.engine.handle_property(&device, property, value, now);
                            }
                        }
                    }
                    Output::Action(request) => {
                        // Counted in flight from the moment the engine asks,
                        // under its lock: a manual clock that waits for
                        // actions (`advance_clock`) must not jump past one
                        // that is being stored and not yet sent.
                        self.in_flight.fetch_add(1, Ordering::SeqCst);
                        started.push(request);
                    }
                    Output::Confirm(request) => {
                        let notice = ConfirmNotice::Ask(request.clone());
                        inner
                            .confirm_watchers
                            .retain(|w| w.send(notice.clone()).is_ok());
                        inner.confirmations.insert(request.id, request);
                    }
                    Output::ConfirmWithdrawn(id) => {
                        if inner.confirmations.remove(&id).is_some() {
                            inner
                                .confirm_watchers
                                .retain(|w| w.send(ConfirmNotice::Withdrawn(id)).is_ok());
                        }
                    }
                    Output::Place(event) => {
                        if event.audience == Audience::Home {
                            let notice = wire::home_event_to_proto(&wire::HomeEvent::Place {
                                place: event.place.clone(),
                                transition: event.transition,
                            });
                            inner.watchers.retain(|w| {
                                !w.interest.places.contains(&event.place)
                                    || w.events.send(notice.clone()).is_ok()
                            });
                        }
                    }
                    Output::Subscribe(subscription) => {
                        if let Subscription::Property(device, property) = &subscription {
                            read.push((device.clone(), *property));
                        }
                        change_interest(&mut inner, &subscription, true);
                        self.interest_changed.notify_waiters();
                    }
                    Output::Unsubscribe(subscription) => {
                        change_interest(&mut inner, &subscription, false);
                        self.interest_changed.notify_waiters();
                    }
                }
            }
        }
        started
    }

    /// Hands actions to the actuator, once their run is stored.
    fn dispatch(self: &Arc<Self>, started: Vec<tether_automation::ActionRequest>) {
        for request in started {
            let host = Arc::downgrade(self);
            let effect = request.effect.clone();
            let work = self.actuator.perform(effect.clone());
            tokio::spawn(async move {
                let result = match work.await {
                    // A reason goes into the trace: keep it short.
                    ActionResult::Failed(mut why) if why.len() > MAX_REASON_BYTES => {
                        let mut end = MAX_REASON_BYTES;
                        while !why.is_char_boundary(end) {
                            end -= 1;
                        }
                        why.truncate(end);
                        ActionResult::Failed(why)
                    }
                    result => result,
                };
                let Some(host) = host.upgrade() else { return };
                let now = host.now_ms();
                {
                    let mut inner = lock(&host.inner);
                    inner.performed.push(Performed {
                        task: request.task,
                        effect,
                        result: result.clone(),
                    });
                    if let Err(e) = inner.engine.handle_action_result(request.id, result, now) {
                        debug!(error = %e, "an action's result came too late");
                    }
                }
                host.settle();
                host.in_flight.fetch_sub(1, Ordering::SeqCst);
                host.answered.notify_waiters();
            });
        }
    }

    /// Writes the snapshot and new or changed traces. A snapshot that could
    /// not be stored is an error (and is written again next time); a trace
    /// that could not is only logged, and tried again while it is open.
    ///
    /// A car hands in a fix every second or so: when nothing but the
    /// engine's clock moved, nothing is written. (Skipping the clock alone
    /// is safe: a time trigger due meanwhile would have changed the
    /// snapshot, with a run or a trace.)
    fn persist(&self) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        let snapshot = inner.engine.snapshot();
        let next_trace = snapshot.next_trace;
        let unchanged = Snapshot {
            taken_at_ms: 0,
            ..snapshot.clone()
        };
        if inner.last_snapshot.as_ref() == Some(&unchanged) && inner.open_traces.is_empty() {
            return Ok(());
        }
        let snapshot_changed = inner.last_snapshot.as_ref() != Some(&unchanged);
        let traces_changed =
            next_trace != inner.persisted_next_trace || !inner.open_traces.is_empty();
        let mut max_seq = inner.persisted_seq;
        let mut open = BTreeSet::new();
        let mut traces = Vec::new();
        if traces_changed {
            for id in inner.engine.task_ids() {
                for trace in inner.engine.traces(id) {
                    let fresh = trace.seq > inner.persisted_seq;
                    if fresh || inner.open_traces.contains(&(id, trace.seq)) {
                        let key = inner.seq_offset + trace.seq;
                        traces.push((id.0, key, wire::encode_trace(&trace)));
                    }
                    if matches!(
                        trace.outcome,
                        tether_automation::Outcome::Running | tether_automation::Outcome::Queued
                    ) {
                        open.insert((id, trace.seq));
                    }
                    max_seq = max_seq.max(trace.seq);
                }
            }
        }
        // The snapshot and the traces in one commit (not one per trace).
        let encoded = snapshot_changed.then(|| wire::encode_snapshot(&snapshot));
        let stored =
            lock(&self.store).put_automation_changes(encoded.as_deref(), &traces, TRACES_KEPT);
        if let Err(e) = stored {
            if snapshot_changed {
                // Written again next time.
                return Err(e);
            }
            // Traces only: tried again while they are open.
            warn!(error = %e, "traces could not be stored");
        }
        if snapshot_changed {
            inner.last_snapshot = Some(unchanged);
        }
        if !traces_changed {
            return Ok(());
        }
        inner.persisted_next_trace = next_trace;
        inner.persisted_seq = max_seq;
        inner.open_traces = open;
        Ok(())
    }
}

fn union_places(watchers: &[Watcher]) -> BTreeSet<PlaceId> {
    watchers
        .iter()
        .flat_map(|w| w.interest.places.iter().cloned())
        .collect()
}

fn change_interest(inner: &mut Inner, subscription: &Subscription, on: bool) {
    fn set<T: Ord + Clone>(set: &mut BTreeSet<T>, item: &T, on: bool) {
        if on {
            set.insert(item.clone());
        } else {
            set.remove(item);
        }
    }
    match subscription {
        Subscription::Place(place) => set(&mut inner.interest.places, place, on),
        Subscription::Signal(path) => set(&mut inner.interest.signals, path, on),
        Subscription::Vehicle(state) => {
            set(&mut inner.vehicle_states, state, on);
            inner.interest.vehicle = !inner.vehicle_states.is_empty();
        }
        Subscription::Location | Subscription::Property(..) => {}
    }
}

fn info_of(inner: &Inner, id: TaskId) -> Option<TaskInfo> {
    let record = inner.records.get(&id)?;
    let state = match (&record.broken, inner.engine.status(id)) {
        (Some(reason), _) => TaskState::Broken(reason.clone()),
        (None, Some(TaskStatus::Active)) => TaskState::Active,
        (None, Some(TaskStatus::DisabledByConsent)) => TaskState::DisabledByConsent,
        (None, _) => TaskState::Disabled,
    };
    Some(TaskInfo {
        task: record.task.clone(),
        enabled: record.enabled,
        state,
    })
}

fn names_device(task: &Task, device: &DeviceId) -> bool {
    tether_automation::template::devices_named(task).contains(device)
}

/// A vehicle signal's value as a task sees it. Texts are bounded like a
/// task's own, so its trace stays readable. A position is never a task's
/// input (R10): geofences are evaluated from it, and it goes no further.
pub(crate) fn task_value(
    value: tether_proto::v1::signal_value::Value,
) -> Option<tether_automation::Value> {
    use tether_proto::v1::signal_value::Value as V;
    match value {
        V::BoolValue(b) => Some(tether_automation::Value::Bool(b)),
        V::DoubleValue(d) => Some(tether_automation::Value::Double(d)),
        V::IntValue(i) => Some(tether_automation::Value::Int(i)),
        V::StringValue(s) if s.len() <= tether_automation::MAX_MESSAGE_BYTES => {
            Some(tether_automation::Value::Text(s))
        }
        V::StringValue(_) | V::Location(_) => None,
    }
}
