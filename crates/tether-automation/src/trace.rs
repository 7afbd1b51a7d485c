//! Traces: for each run, what triggered it, each condition's value and each
//! step's result; and for each trigger that did not become a run, why
//! (skipped by the mode, conditions false, a missed time, the consent
//! switch). Retention is bounded per task ([`crate::Config::traces_per_task`]).
//!
//! A trace names places, signals and devices, and holds the values of the
//! signals and properties the task declared; it never holds a position
//! (R10, R32).

use crate::model::{
    DeviceId, PlaceId, PropertyId, SunEvent, TaskId, Transition, Value, VehicleEvent,
};

/// A run of a task, numbered by the engine (continuing across a restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

/// The position of a step in a task's actions: the index in the top list,
/// then, for each `Choose` entered, the branch taken (its index, or the
/// number of branches for `otherwise`) and the index in that branch.
pub type StepPath = Vec<u16>;

/// What started a run (or would have).
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// The car entered or left a place.
    Place {
        /// The place.
        place: PlaceId,
        /// Enter or leave.
        transition: Transition,
    },
    /// A vehicle signal.
    Signal {
        /// Its path.
        path: String,
        /// The value that fired (or held).
        value: Value,
        /// How long it had held, for a trigger with a hold.
        held_ms: u64,
    },
    /// A device property.
    Property {
        /// The device.
        device: DeviceId,
        /// The property.
        property: PropertyId,
        /// The value.
        value: Value,
        /// How long it had held.
        held_ms: u64,
    },
    /// A clock time, or sunrise or sunset (`sun`).
    Time {
        /// The sun event, for a sun trigger.
        sun: Option<SunEvent>,
        /// The moment it was due (the latest one, if several were missed).
        scheduled_ms: u64,
        /// How late it was handled.
        late_ms: u64,
        /// Earlier moments missed before this one (none ran).
        missed: u32,
    },
    /// The car reported an event.
    Vehicle(VehicleEvent),
    /// Someone ran it.
    Manual,
    /// The "car data to home" switch was turned off (R11).
    ConsentWithdrawn,
}

/// The value of one condition at trigger time.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionRecord {
    /// Where it is: `conditions[0]`, `conditions[1].any[0]`,
    /// `step 2 branch 0 conditions[0]`.
    pub position: String,
    /// What it tested and what was seen.
    pub description: String,
    /// Its value.
    pub value: bool,
}

/// How a step ended (or stands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// Handed to the host; no answer yet.
    Pending,
    /// The host reports success.
    Succeeded,
    /// The host reports failure.
    Failed(String),
    /// No answer within [`crate::Config::action_timeout_ms`].
    TimedOut,
    /// A delay (finished, or still running while the run is).
    Waited,
    /// A choose: the branch taken (`None`: `otherwise`, or nothing).
    Chose(Option<usize>),
    /// Waiting for the owner to confirm on the phone.
    AwaitingConfirmation,
    /// The owner declined.
    Declined,
    /// The owner did not answer in time.
    ConfirmationTimedOut,
    /// Refused: unlocking or opening the car needs it parked.
    NotParked,
    /// The run was cancelled meanwhile.
    Cancelled,
    /// Never sent: the host could not store the run first
    /// ([`crate::ActionResult::NotDispatched`]).
    NotDispatched,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Its position.
    pub step: StepPath,
    /// When it started.
    pub at_ms: u64,
    /// What it does.
    pub description: String,
    /// How it went.
    pub result: StepResult,
}

/// Why a trigger did not start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Mode single: a run was going on.
    AlreadyRunning,
    /// Mode queued: the queue was full.
    QueueFull,
    /// Mode parallel: as many runs as allowed were going on.
    TooManyRuns,
}

/// Why a run was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// Mode restart: a new trigger replaced it.
    Restarted,
    /// The task was disabled.
    Disabled,
    /// The task was removed.
    Removed,
    /// The "car data to home" switch was turned off (R11).
    ConsentWithdrawn,
}

/// Why a time trigger did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissReason {
    /// The task's policy is to skip missed times.
    PolicySkip,
    /// The latest missed time is older than the grace window.
    OutsideGrace,
}

/// How a trace stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Waiting in the queue (mode queued).
    Queued,
    /// Every step done.
    Completed,
    /// The conditions did not hold; nothing ran.
    ConditionsNotMet,
    /// The mode did not allow another run.
    Skipped(SkipReason),
    /// A step failed, timed out, or was refused or declined; later steps
    /// did not run.
    Failed,
    /// Cancelled.
    Cancelled(CancelReason),
    /// The task reads car data and the "car data to home" switch is off
    /// (R11): it is disabled until it is turned on again.
    DisabledByConsent,
    /// A time trigger's moment passed while the node was down (or busy),
    /// and it did not run.
    Missed {
        /// How many moments were missed.
        occurrences: u32,
        /// Why none ran.
        reason: MissReason,
    },
}

/// The trace of one run, or of one trigger that did not become a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Creation order across the engine (continues across a restore).
    pub seq: u64,
    /// The task.
    pub task: TaskId,
    /// The run, if one started (or is queued).
    pub run: Option<RunId>,
    /// When it was triggered.
    pub at_ms: u64,
    /// What triggered it.
    pub cause: Cause,
    /// Each condition's value, in order, nested ones after their parent.
    pub conditions: Vec<ConditionRecord>,
    /// Each step, in the order it ran.
    pub steps: Vec<StepRecord>,
    /// How it stands.
    pub outcome: Outcome,
    /// When it ended.
    pub ended_ms: Option<u64>,
}
