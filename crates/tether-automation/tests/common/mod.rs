//! Test kit: a fake clock, a catalogue of a small car and home, places, and
//! a harness that drives the engine like a host (drains outputs, answers
//! actions, fires timers as time passes).

#![allow(dead_code, unreachable_pub)]

use tether_automation::{
    Action, ActionRequest, ActionResult, Catalogue, CommandKind, Config, ConfirmRequest,
    DeviceActionId, DeviceId, DeviceSpec, Engine, Fix, GeofenceConfig, LatLon, Outcome, Output,
    Permissions, Place, PlaceEvent, PlaceId, PropertyId, PropertySpec, SignalSpec, Site,
    Subscription, Task, TaskId, Trace, Value, ValueKind,
};

pub const SOC: &str = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current";
pub const SPEED: &str = "Vehicle.Speed";
pub const IS_LOCKED: &str = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked";
pub const HVAC: &str = "Vehicle.Cabin.HVAC.IsAirConditioningActive";
pub const POWER: PropertyId = PropertyId::new(2, 1);
pub const BRIGHTNESS: PropertyId = PropertyId::new(2, 2);
pub const MOTION: PropertyId = PropertyId::new(2, 1);
pub const CLOSE: DeviceActionId = DeviceActionId { siid: 3, aiid: 1 };

/// 2026-11-30, a Monday, 00:00 UTC.
pub const MONDAY_MS: u64 = 1_795_996_800_000;
pub const MINUTE: u64 = 60_000;
pub const HOUR: u64 = 3_600_000;
pub const DAY: u64 = 86_400_000;

pub const HOME: LatLon = LatLon::new(48.137_2, 11.575_4);
pub const OFFICE: LatLon = LatLon::new(48.152_2, 11.575_4);
pub const HOME_RADIUS_M: f64 = 150.0;

pub fn lamp() -> DeviceId {
    DeviceId::new("lamp")
}
pub fn porch() -> DeviceId {
    DeviceId::new("porch")
}
pub fn garage() -> DeviceId {
    DeviceId::new("garage")
}
pub fn motion() -> DeviceId {
    DeviceId::new("motion")
}
pub fn home() -> PlaceId {
    PlaceId::new("home")
}
pub fn office() -> PlaceId {
    PlaceId::new("office")
}

pub fn catalogue() -> Catalogue {
    let rw = |kind| PropertySpec {
        kind,
        readable: true,
        writable: true,
    };
    let light = DeviceSpec::default()
        .property(POWER, rw(ValueKind::Bool))
        .property(BRIGHTNESS, rw(ValueKind::Int));
    Catalogue::new()
        .with_signal(SOC, SignalSpec::sensor(ValueKind::Double))
        .with_signal(SPEED, SignalSpec::sensor(ValueKind::Double))
        .with_signal(
            IS_LOCKED,
            SignalSpec::actuator(ValueKind::Bool, &[CommandKind::Lock, CommandKind::Unlock]),
        )
        .with_signal(
            HVAC,
            SignalSpec::actuator(ValueKind::Bool, &[CommandKind::Climate]),
        )
        .with_device(lamp(), light.clone())
        .with_device(porch(), light)
        .with_device(
            garage(),
            DeviceSpec::default()
                .property(POWER, rw(ValueKind::Bool))
                .action(CLOSE, 0),
        )
        .with_device(
            motion(),
            DeviceSpec::default().property(
                MOTION,
                PropertySpec {
                    kind: ValueKind::Bool,
                    readable: true,
                    writable: false,
                },
            ),
        )
}

/// A position `metres` north of `from`.
pub fn north_of(from: LatLon, metres: f64) -> LatLon {
    LatLon::new(from.lat + metres / 111_195.0, from.lon)
}

pub fn fix_at(at: LatLon, accuracy_m: f64) -> Fix {
    Fix {
        position: at,
        accuracy_m,
    }
}

pub fn config(site: Site) -> Config {
    Config {
        site,
        geofence: GeofenceConfig {
            max_accuracy_m: 100.0,
            exit_margin_m: 50.0,
            dwell_ms: 30_000,
        },
        ..Config::default()
    }
}

/// An engine on a fake clock, driven like a host.
pub struct Harness {
    pub engine: Engine,
    pub now: u64,
    /// Every output seen, in order (for taint checks).
    pub seen: Vec<Output>,
}

impl Harness {
    pub fn new(site: Site) -> Self {
        Self::with_config(config(site))
    }

    pub fn with_config(config: Config) -> Self {
        let mut engine = Engine::new(config, catalogue());
        engine
            .add_place(Place::circle("home", HOME, HOME_RADIUS_M))
            .expect("home");
        engine
            .add_place(Place::circle("office", OFFICE, 150.0))
            .expect("office");
        Self {
            engine,
            now: MONDAY_MS,
            seen: Vec::new(),
        }
    }

    pub fn install(&mut self, task: Task) {
        self.engine
            .install(task.declare_inputs(), &Permissions::ALL, self.now)
            .expect("valid task");
    }

    pub fn start(&mut self) {
        self.engine.start(self.now);
    }

    /// Every output until `Pending`.
    pub fn drain(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        loop {
            match self.engine.poll_output() {
                Output::Pending => break,
                o => {
                    self.seen.push(o.clone());
                    out.push(o);
                }
            }
        }
        out
    }

    /// Moves the fake clock forward by `ms`, firing every timer on the way
    /// at its due time (like a host that wakes at `poll_timeout`).
    pub fn advance(&mut self, ms: u64) -> Vec<Output> {
        let target = self.now + ms;
        let mut out = Vec::new();
        while let Some(due) = self.engine.poll_timeout() {
            if due > target {
                break;
            }
            self.now = due.max(self.now);
            self.engine.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = target;
        self.engine.handle_timeout(self.now);
        out.extend(self.drain());
        out
    }

    /// Lets `ms` pass like [`Harness::advance`], answering every action
    /// with success the moment it comes out; returns the actions.
    pub fn run_for(&mut self, ms: u64) -> Vec<ActionRequest> {
        let target = self.now + ms;
        let mut seen = Vec::new();
        loop {
            let due = self.engine.poll_timeout().filter(|d| *d <= target);
            self.now = due.unwrap_or(target).max(self.now);
            self.engine.handle_timeout(self.now);
            let out = self.drain();
            seen.extend(self.succeed_until_quiet(out));
            if due.is_none() {
                return seen;
            }
        }
    }

    pub fn fix(&mut self, at: LatLon, accuracy_m: f64) -> Vec<Output> {
        let _ = self.engine.handle_fix(fix_at(at, accuracy_m), self.now);
        self.drain()
    }

    pub fn signal(&mut self, path: &str, value: Value) -> Vec<Output> {
        let _ = self.engine.handle_signal(path, value, self.now);
        self.drain()
    }

    pub fn property(
        &mut self,
        device: &DeviceId,
        property: PropertyId,
        value: Value,
    ) -> Vec<Output> {
        let _ = self
            .engine
            .handle_property(device, property, value, self.now);
        self.drain()
    }

    /// Answers every action in `outputs` with success; returns what follows.
    pub fn succeed_all(&mut self, outputs: &[Output]) -> Vec<Output> {
        let mut next = Vec::new();
        for request in actions(outputs) {
            self.engine
                .handle_action_result(request.id, ActionResult::Succeeded, self.now)
                .expect("pending");
            next.extend(self.drain());
        }
        next
    }

    /// Answers actions with success until none is left; returns every
    /// action seen.
    pub fn succeed_until_quiet(&mut self, outputs: Vec<Output>) -> Vec<ActionRequest> {
        let mut seen = Vec::new();
        let mut pending = outputs;
        loop {
            let requests = actions(&pending);
            if requests.is_empty() {
                return seen;
            }
            seen.extend(requests.iter().cloned());
            pending = self.succeed_all(&pending);
        }
    }

    pub fn traces(&self, id: TaskId) -> Vec<Trace> {
        self.engine.traces(id)
    }

    pub fn outcomes(&self, id: TaskId) -> Vec<Outcome> {
        self.traces(id).iter().map(|t| t.outcome).collect()
    }
}

pub fn actions(outputs: &[Output]) -> Vec<ActionRequest> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Action(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

pub fn confirms(outputs: &[Output]) -> Vec<ConfirmRequest> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Confirm(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

pub fn place_events(outputs: &[Output]) -> Vec<PlaceEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Place(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

pub fn subscribed(outputs: &[Output]) -> Vec<Subscription> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Subscribe(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// A write of `value` to `device`'s power.
pub fn set_power(device: DeviceId, on: bool) -> Action {
    Action::SetProperty {
        device,
        property: POWER,
        value: Value::Bool(on),
    }
}

/// The devices written by `requests`, with the values.
pub fn writes(requests: &[ActionRequest]) -> Vec<(String, Value)> {
    requests
        .iter()
        .filter_map(|r| match &r.effect {
            tether_automation::Effect::SetProperty { device, value, .. } => {
                Some((device.0.clone(), value.clone()))
            }
            _ => None,
        })
        .collect()
}
