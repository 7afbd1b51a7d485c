//! The task model (R20): a task is a name, triggers, conditions, actions, a
//! mode, a policy for time triggers missed while the node was down, and the
//! inputs it declares (R21).
//!
//! Plain Rust values: the wire service encodes them later. Every identifier
//! here is opaque to the engine: a [`PlaceId`] is the user's name for a
//! place, a [`DeviceId`] the host's handle for a device, a signal a COVESA
//! VSS path.

use std::collections::BTreeSet;
use std::fmt;

use crate::civil::{ClockTime, Weekdays};

/// A task's identifier, chosen by the host (stable across restarts: the
/// snapshot refers to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

/// A place the user named ("home", "office"). Only this name crosses to
/// other nodes, never the place's coordinates (R10, R21).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlaceId(pub String);

impl PlaceId {
    /// A place named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
}

impl fmt::Display for PlaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for PlaceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A device, as the host names it (e.g. the hex of a `tether-devices`
/// handle). Opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub String);

impl DeviceId {
    /// A device named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A device property, by MIoT service and property iid (SPEC §16.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PropertyId {
    /// Service iid.
    pub siid: u32,
    /// Property iid.
    pub piid: u32,
}

impl PropertyId {
    /// Property `piid` of service `siid`.
    pub const fn new(siid: u32, piid: u32) -> Self {
        Self { siid, piid }
    }
}

impl fmt::Display for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.siid, self.piid)
    }
}

/// A device action, by MIoT service and action iid (SPEC §16.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceActionId {
    /// Service iid.
    pub siid: u32,
    /// Action iid.
    pub aiid: u32,
}

impl fmt::Display for DeviceActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.siid, self.aiid)
    }
}

/// A value of a signal or property.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A real number.
    Double(f64),
    /// Text.
    Text(String),
}

impl Value {
    /// Its kind.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Bool(_) => ValueKind::Bool,
            Value::Int(_) => ValueKind::Int,
            Value::Double(_) => ValueKind::Double,
            Value::Text(_) => ValueKind::Text,
        }
    }

    /// The value as a number, for thresholds (integers and reals only).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Double(d) => Some(*d),
            Value::Bool(_) | Value::Text(_) => None,
        }
    }

    /// Equality where an integer and a real with the same value are equal.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self.as_f64(), other.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// The kind of a [`Value`], as the catalogue declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// [`Value::Bool`].
    Bool,
    /// [`Value::Int`].
    Int,
    /// [`Value::Double`].
    Double,
    /// [`Value::Text`].
    Text,
}

impl ValueKind {
    /// Whether thresholds apply (integers and reals).
    pub fn is_numeric(self) -> bool {
        matches!(self, ValueKind::Int | ValueKind::Double)
    }

    /// Whether a value of kind `other` may stand where this kind is
    /// expected (integers and reals mix).
    pub fn accepts(self, other: ValueKind) -> bool {
        self == other || (self.is_numeric() && other.is_numeric())
    }
}

/// A test on a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// Equal (integers and reals compare by value).
    Equals(Value),
    /// Not equal.
    NotEquals(Value),
    /// Strictly above.
    Above(f64),
    /// Strictly below.
    Below(f64),
    /// Within `low..=high`.
    Between {
        /// Lower bound, included.
        low: f64,
        /// Upper bound, included.
        high: f64,
    },
}

impl Test {
    /// Whether `value` passes. A threshold on a non-number fails.
    pub fn matches(&self, value: &Value) -> bool {
        match self {
            Test::Equals(v) => value.same_as(v),
            Test::NotEquals(v) => !value.same_as(v),
            Test::Above(t) => value.as_f64().is_some_and(|x| x > *t),
            Test::Below(t) => value.as_f64().is_some_and(|x| x < *t),
            Test::Between { low, high } => value.as_f64().is_some_and(|x| *low <= x && x <= *high),
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Test::Equals(v) => write!(f, "= {v}"),
            Test::NotEquals(v) => write!(f, "!= {v}"),
            Test::Above(t) => write!(f, "> {t}"),
            Test::Below(t) => write!(f, "< {t}"),
            Test::Between { low, high } => write!(f, "in {low}..={high}"),
        }
    }
}

/// When a signal or property trigger fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// On every change of value. The first value after start only sets the
    /// state.
    Any,
    /// When the value starts to pass the test (an edge: a value that
    /// already passed does not fire again). The first value after start
    /// only sets the state.
    Becomes(Test),
}

/// Entering or leaving a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transition {
    /// The car went from outside to inside.
    Enter,
    /// The car went from inside to outside.
    Leave,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transition::Enter => "enter",
            Transition::Leave => "leave",
        })
    }
}

/// Sunrise or sunset (upper limb at the horizon with standard refraction,
/// NOAA's 90.833° zenith; see [`crate::sun`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SunEvent {
    /// Sunrise.
    Sunrise,
    /// Sunset.
    Sunset,
}

/// A time of the local day: on the clock, or relative to the sun at a
/// place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayTime {
    /// A clock time.
    Clock(ClockTime),
    /// Sunrise or sunset at `place`, plus `offset_min` (negative: before).
    Sun {
        /// Which.
        event: SunEvent,
        /// Minutes after the event (before, if negative).
        offset_min: i32,
        /// Where the sun is computed: the centre of this place's shape.
        place: PlaceId,
    },
}

/// Something the car reports as it happens. Each comes in pairs that set
/// one of the car's states ([`VehicleState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VehicleEvent {
    /// Shifted into park.
    Parked,
    /// Shifted out of park.
    Driving,
    /// Central locking locked.
    Locked,
    /// Central locking unlocked.
    Unlocked,
    /// Charging started.
    ChargingStarted,
    /// Charging stopped.
    ChargingStopped,
}

impl VehicleEvent {
    /// The state this event sets, and to what.
    pub fn state(self) -> (VehicleState, bool) {
        match self {
            VehicleEvent::Parked => (VehicleState::Parking, true),
            VehicleEvent::Driving => (VehicleState::Parking, false),
            VehicleEvent::Locked => (VehicleState::Locking, true),
            VehicleEvent::Unlocked => (VehicleState::Locking, false),
            VehicleEvent::ChargingStarted => (VehicleState::Charging, true),
            VehicleEvent::ChargingStopped => (VehicleState::Charging, false),
        }
    }
}

/// One of the car's on/off states that [`VehicleEvent`]s set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VehicleState {
    /// Parked or driving.
    Parking,
    /// Locked or unlocked.
    Locking,
    /// Charging or not.
    Charging,
}

impl VehicleState {
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What starts a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// The car enters or leaves a place (evaluated on the head unit, R10).
    Place {
        /// The place.
        place: PlaceId,
        /// Enter or leave.
        transition: Transition,
    },
    /// A vehicle signal changes or crosses a threshold.
    Signal {
        /// VSS path, e.g. `Vehicle.Powertrain.TractionBattery.StateOfCharge.Current`.
        path: String,
        /// What counts.
        change: Change,
        /// The new state must hold this long before the task fires (a
        /// "for"); 0 fires at once.
        hold_ms: u64,
    },
    /// A device property changes or crosses a threshold.
    Property {
        /// The device.
        device: DeviceId,
        /// The property.
        property: PropertyId,
        /// What counts.
        change: Change,
        /// As for [`Trigger::Signal`].
        hold_ms: u64,
    },
    /// A local clock time on some weekdays.
    Time {
        /// When.
        at: ClockTime,
        /// On which days.
        weekdays: Weekdays,
    },
    /// Sunrise or sunset at a place, with an offset, on some weekdays.
    Sun {
        /// Which.
        event: SunEvent,
        /// Minutes after the event (before, if negative).
        offset_min: i32,
        /// Where.
        place: PlaceId,
        /// On which days (of the local date of the event).
        weekdays: Weekdays,
    },
    /// The car reports an event.
    Vehicle(VehicleEvent),
    /// Only when someone runs it.
    Manual,
}

/// What must hold for a triggered task to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// All of them (true when empty).
    All(Vec<Condition>),
    /// At least one of them (false when empty).
    Any(Vec<Condition>),
    /// The opposite.
    Not(Box<Condition>),
    /// A vehicle signal's last value passes a test (false while unknown).
    Signal {
        /// VSS path.
        path: String,
        /// The test.
        test: Test,
    },
    /// A device property's last value passes a test (false while unknown).
    Property {
        /// The device.
        device: DeviceId,
        /// The property.
        property: PropertyId,
        /// The test.
        test: Test,
    },
    /// The local time is within a window on some weekdays. Without `after`
    /// the window opens at midnight, without `before` it closes at
    /// midnight; when `after` is later than `before` it spans midnight.
    TimeWindow {
        /// Opens at (included).
        after: Option<DayTime>,
        /// Closes at (excluded).
        before: Option<DayTime>,
        /// On which days (of now).
        weekdays: Weekdays,
    },
    /// The car is inside (or outside) a place (false while unknown).
    Place {
        /// The place.
        place: PlaceId,
        /// Inside, or outside.
        inside: bool,
    },
    /// The car's last event of this kind is this one (e.g. it is parked).
    Vehicle(VehicleEvent),
}

/// A command for the car, as `tether_control::client` builds them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VehicleCommand {
    /// Lock.
    Lock,
    /// Unlock: needs the car parked and the owner's confirmation at run
    /// time.
    Unlock,
    /// Climate on or off, with an optional target temperature.
    Climate {
        /// On or off.
        on: bool,
        /// Target, °C.
        target_celsius: Option<f32>,
    },
    /// Every window to this position; above 0 opens the car, which needs it
    /// parked and the owner's confirmation at run time.
    Window {
        /// Percent open, 0..=100.
        percent_open: u8,
    },
    /// Flash the lights and/or honk.
    FlashHonk {
        /// Flash.
        flash: bool,
        /// Honk.
        honk: bool,
    },
}

impl VehicleCommand {
    /// Whether the command unlocks or opens the car: such a command runs
    /// only when the car is parked and the owner confirms on the phone.
    pub fn opens_the_car(&self) -> bool {
        match self {
            VehicleCommand::Unlock => true,
            VehicleCommand::Window { percent_open } => *percent_open > 0,
            VehicleCommand::Lock
            | VehicleCommand::Climate { .. }
            | VehicleCommand::FlashHonk { .. } => false,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> CommandKind {
        match self {
            VehicleCommand::Lock => CommandKind::Lock,
            VehicleCommand::Unlock => CommandKind::Unlock,
            VehicleCommand::Climate { .. } => CommandKind::Climate,
            VehicleCommand::Window { .. } => CommandKind::Window,
            VehicleCommand::FlashHonk { .. } => CommandKind::FlashHonk,
        }
    }
}

/// The kind of a [`VehicleCommand`], for the catalogue's "which command
/// changes this signal".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommandKind {
    /// [`VehicleCommand::Lock`].
    Lock,
    /// [`VehicleCommand::Unlock`].
    Unlock,
    /// [`VehicleCommand::Climate`].
    Climate,
    /// [`VehicleCommand::Window`].
    Window,
    /// [`VehicleCommand::FlashHonk`].
    FlashHonk,
}

/// Who a notification goes to (R25's audience).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recipients {
    /// The owner's devices.
    Owner,
    /// The owner and the users the owner authorised for the car.
    OwnerAndAuthorised,
}

/// Something for an app: a hand-off or a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppIntent {
    /// Hand navigation to `destination` over to the car. Only the place's
    /// name travels; the car resolves it locally.
    Navigate {
        /// The place.
        destination: PlaceId,
    },
    /// Tell people something.
    Notify {
        /// Who.
        recipients: Recipients,
        /// What (at most [`crate::MAX_MESSAGE_BYTES`]).
        message: String,
    },
}

/// One branch of [`Action::Choose`].
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// All must hold.
    pub conditions: Vec<Condition>,
    /// What to do then.
    pub actions: Vec<Action>,
}

/// A step of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
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
        /// Its arguments, in order.
        arguments: Vec<Value>,
    },
    /// Command the car (with an idempotency key the engine derives).
    Vehicle(VehicleCommand),
    /// Hand something to an app.
    App(AppIntent),
    /// Wait.
    Delay {
        /// How long, in milliseconds.
        ms: u64,
    },
    /// The first branch whose conditions hold runs; else `otherwise`
    /// (if/else is one branch).
    Choose {
        /// Tried in order.
        branches: Vec<Branch>,
        /// When none holds.
        otherwise: Vec<Action>,
    },
}

/// What a new trigger does while the task is already running (after Home
/// Assistant's script modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At most one run; a trigger meanwhile is skipped (traced).
    Single,
    /// At most one run; a trigger meanwhile cancels it and starts anew.
    Restart,
    /// Runs one after the other; at most `max` waiting and running
    /// together, beyond that a trigger is skipped (traced).
    Queued {
        /// Most runs running and waiting.
        max: u16,
    },
    /// Runs side by side, at most `max`; beyond that a trigger is skipped
    /// (traced).
    Parallel {
        /// Most runs at once.
        max: u16,
    },
}

impl Mode {
    /// The most runs this mode holds at once (running and queued).
    pub fn max_runs(self) -> u16 {
        match self {
            Mode::Single | Mode::Restart => 1,
            Mode::Queued { max } | Mode::Parallel { max } => max,
        }
    }
}

/// What happens to a time trigger (clock or sun) whose moment passed while
/// the node was down, or while the host did not call in time. Never silent:
/// either way the trace says what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedPolicy {
    /// Do not run; trace the miss.
    #[default]
    Skip,
    /// Run once, late, if the latest missed moment is at most `grace_ms`
    /// ago; otherwise trace the miss.
    RunLate {
        /// How late a run may still be.
        grace_ms: u64,
    },
}

/// A piece of data a task reads (R21: each task declares them; the engine
/// subscribes to nothing else).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    /// Whether the car is inside a place (on the head unit from the car's
    /// location; elsewhere only as `{place, enter|leave}` events).
    Place(PlaceId),
    /// A vehicle signal.
    Signal(String),
    /// A device property.
    Property(DeviceId, PropertyId),
    /// One of the car's on/off states (its events).
    Vehicle(VehicleState),
}

impl Input {
    /// Whether this is data from the car: what the "car data to home"
    /// switch governs (R11). Device properties are the home's own.
    pub fn is_car_data(&self) -> bool {
        !matches!(self, Input::Property(..))
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Place(p) => write!(f, "place {p}"),
            Input::Signal(s) => write!(f, "signal {s}"),
            Input::Property(d, p) => write!(f, "property {p} of {d}"),
            Input::Vehicle(v) => write!(f, "vehicle state {v:?}"),
        }
    }
}

/// An automation (R20).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its identifier.
    pub id: TaskId,
    /// Its name, 1..=[`crate::MAX_NAME_BYTES`] bytes.
    pub name: String,
    /// Any of them starts it.
    pub triggers: Vec<Trigger>,
    /// All must hold at trigger time.
    pub conditions: Vec<Condition>,
    /// What it does, in order.
    pub actions: Vec<Action>,
    /// What a trigger does while it runs.
    pub mode: Mode,
    /// What a missed time trigger does.
    pub missed: MissedPolicy,
    /// The data it reads: must equal [`Task::required_inputs`] (R21).
    pub inputs: BTreeSet<Input>,
}

impl Task {
    /// An empty task (mode single, missed time triggers skipped).
    pub fn new(id: TaskId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            triggers: Vec::new(),
            conditions: Vec::new(),
            actions: Vec::new(),
            mode: Mode::Single,
            missed: MissedPolicy::Skip,
            inputs: BTreeSet::new(),
        }
    }

    /// Adds a trigger.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.triggers.push(trigger);
        self
    }

    /// Adds a condition.
    pub fn condition(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    /// Adds an action.
    pub fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the missed-time policy.
    pub fn missed(mut self, missed: MissedPolicy) -> Self {
        self.missed = missed;
        self
    }

    /// Declares exactly the inputs the task uses ([`Task::required_inputs`]).
    pub fn declare_inputs(mut self) -> Self {
        self.inputs = self.required_inputs();
        self
    }

    /// The data the task's triggers, conditions and actions read. An action
    /// that opens the car adds [`VehicleState::Parking`]: the safety rule
    /// checks it at run time.
    pub fn required_inputs(&self) -> BTreeSet<Input> {
        let mut inputs = BTreeSet::new();
        for trigger in &self.triggers {
            match trigger {
                Trigger::Place { place, .. } => {
                    inputs.insert(Input::Place(place.clone()));
                }
                Trigger::Signal { path, .. } => {
                    inputs.insert(Input::Signal(path.clone()));
                }
                Trigger::Property {
                    device, property, ..
                } => {
                    inputs.insert(Input::Property(device.clone(), *property));
                }
                Trigger::Vehicle(event) => {
                    inputs.insert(Input::Vehicle(event.state().0));
                }
                Trigger::Time { .. } | Trigger::Sun { .. } | Trigger::Manual => {}
            }
        }
        for condition in &self.conditions {
            condition_inputs(condition, &mut inputs);
        }
        action_inputs(&self.actions, &mut inputs);
        inputs
    }

    /// Whether the task reads car data (R11: the "car data to home" switch
    /// governs it where it runs on the hub).
    pub fn reads_car_data(&self) -> bool {
        self.inputs.iter().any(Input::is_car_data)
    }
}

fn condition_inputs(condition: &Condition, inputs: &mut BTreeSet<Input>) {
    match condition {
        Condition::All(cs) | Condition::Any(cs) => {
            for c in cs {
                condition_inputs(c, inputs);
            }
        }
        Condition::Not(c) => condition_inputs(c, inputs),
        Condition::Signal { path, .. } => {
            inputs.insert(Input::Signal(path.clone()));
        }
        Condition::Property {
            device, property, ..
        } => {
            inputs.insert(Input::Property(device.clone(), *property));
        }
        Condition::Place { place, .. } => {
            inputs.insert(Input::Place(place.clone()));
        }
        Condition::Vehicle(event) => {
            inputs.insert(Input::Vehicle(event.state().0));
        }
        Condition::TimeWindow { .. } => {}
    }
}

fn action_inputs(actions: &[Action], inputs: &mut BTreeSet<Input>) {
    for action in actions {
        match action {
            Action::Choose {
                branches,
                otherwise,
            } => {
                for branch in branches {
                    for c in &branch.conditions {
                        condition_inputs(c, inputs);
                    }
                    action_inputs(&branch.actions, inputs);
                }
                action_inputs(otherwise, inputs);
            }
            Action::Vehicle(command) if command.opens_the_car() => {
                inputs.insert(Input::Vehicle(VehicleState::Parking));
            }
            _ => {}
        }
    }
}
