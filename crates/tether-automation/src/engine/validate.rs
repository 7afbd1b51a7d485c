//! Task validation: names against the catalogue and the places, actions
//! against the author's permissions, declared inputs against used ones
//! (R21), sizes, and loops between tasks.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use super::{Engine, Site};
use crate::catalogue::Permissions;
use crate::error::{Capability, ValidationError};
use crate::model::{
    Action, AppIntent, Change, CommandKind, Condition, DayTime, DeviceId, PlaceId, PropertyId,
    Task, TaskId, Test, Trigger, Value, ValueKind, VehicleCommand, VehicleEvent,
};

/// Longest task name, bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 64;
/// Most triggers per task.
pub const MAX_TRIGGERS: usize = 16;
/// Most condition nodes per task (all nested ones and those of `Choose`
/// branches count).
pub const MAX_CONDITION_NODES: usize = 64;
/// Most actions per task (nested ones count).
pub const MAX_ACTION_NODES: usize = 64;
/// Deepest nesting of conditions or `Choose`.
pub const MAX_NESTING: usize = 8;
/// Most branches of a `Choose`.
pub const MAX_BRANCHES: usize = 16;
/// Largest maximum of a mode.
pub const MAX_MODE_RUNS: u16 = 100;
/// Longest notification, bytes of UTF-8.
pub const MAX_MESSAGE_BYTES: usize = 512;
/// Longest delay (7 days).
pub const MAX_DELAY_MS: u64 = 7 * 86_400_000;
/// Longest hold of a trigger (1 day).
pub const MAX_HOLD_MS: u64 = 86_400_000;
/// Largest sunrise/sunset offset, minutes.
pub const MAX_SUN_OFFSET_MIN: i32 = 720;

struct Counts {
    conditions: usize,
    actions: usize,
}

/// Every place a task names.
pub(super) fn places_named(task: &Task) -> BTreeSet<PlaceId> {
    fn day_time(t: &Option<DayTime>, out: &mut BTreeSet<PlaceId>) {
        if let Some(DayTime::Sun { place, .. }) = t {
            out.insert(place.clone());
        }
    }
    fn condition(c: &Condition, out: &mut BTreeSet<PlaceId>) {
        match c {
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| condition(c, out)),
            Condition::Not(c) => condition(c, out),
            Condition::Place { place, .. } => {
                out.insert(place.clone());
            }
            Condition::TimeWindow { after, before, .. } => {
                day_time(after, out);
                day_time(before, out);
            }
            Condition::Signal { .. } | Condition::Property { .. } | Condition::Vehicle(_) => {}
        }
    }
    fn actions(list: &[Action], out: &mut BTreeSet<PlaceId>) {
        for a in list {
            match a {
                Action::App(AppIntent::Navigate { destination }) => {
                    out.insert(destination.clone());
                }
                Action::Choose {
                    branches,
                    otherwise,
                } => {
                    for b in branches {
                        b.conditions.iter().for_each(|c| condition(c, out));
                        actions(&b.actions, out);
                    }
                    actions(otherwise, out);
                }
                _ => {}
            }
        }
    }
    let mut out = BTreeSet::new();
    for t in &task.triggers {
        match t {
            Trigger::Place { place, .. } | Trigger::Sun { place, .. } => {
                out.insert(place.clone());
            }
            _ => {}
        }
    }
    task.conditions.iter().for_each(|c| condition(c, &mut out));
    actions(&task.actions, &mut out);
    out
}

fn check_number(x: f64) -> Result<(), ValidationError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(ValidationError::InvalidValue("a number must be finite"))
    }
}

fn check_value(
    value: &Value,
    expected: ValueKind,
    what: &dyn Fn() -> String,
) -> Result<(), ValidationError> {
    if !expected.accepts(value.kind()) {
        return Err(ValidationError::TypeMismatch {
            what: what(),
            expected,
        });
    }
    if let Value::Double(d) = value {
        check_number(*d)?;
    }
    Ok(())
}

fn check_test(
    test: &Test,
    kind: ValueKind,
    what: &dyn Fn() -> String,
) -> Result<(), ValidationError> {
    match test {
        Test::Equals(v) | Test::NotEquals(v) => check_value(v, kind, what),
        Test::Above(t) | Test::Below(t) => {
            if !kind.is_numeric() {
                return Err(ValidationError::TypeMismatch {
                    what: what(),
                    expected: kind,
                });
            }
            check_number(*t)
        }
        Test::Between { low, high } => {
            if !kind.is_numeric() {
                return Err(ValidationError::TypeMismatch {
                    what: what(),
                    expected: kind,
                });
            }
            check_number(*low)?;
            check_number(*high)?;
            if low > high {
                return Err(ValidationError::InvalidValue(
                    "a range's low end is above its high end",
                ));
            }
            Ok(())
        }
    }
}

/// Something an action does that a trigger may notice (for loops).
enum Touch<'a> {
    Write(&'a DeviceId, PropertyId, &'a Value),
    Invoke(&'a DeviceId),
    Command(CommandKind),
}

fn touches<'a>(actions: &'a [Action], out: &mut Vec<Touch<'a>>) {
    for a in actions {
        match a {
            Action::SetProperty {
                device,
                property,
                value,
            } => out.push(Touch::Write(device, *property, value)),
            Action::DeviceAction { device, .. } => out.push(Touch::Invoke(device)),
            Action::Vehicle(command) => out.push(Touch::Command(command.kind())),
            Action::Choose {
                branches,
                otherwise,
            } => {
                for b in branches {
                    touches(&b.actions, out);
                }
                touches(otherwise, out);
            }
            Action::App(_) | Action::Delay { .. } => {}
        }
    }
}

impl Engine {
    /// Everything but loops.
    pub(super) fn check_task(
        &self,
        task: &Task,
        permissions: &Permissions,
    ) -> Result<(), ValidationError> {
        if task.name.is_empty() || task.name.len() > MAX_NAME_BYTES {
            return Err(ValidationError::BadName);
        }
        if task.triggers.is_empty() {
            return Err(ValidationError::NoTrigger);
        }
        if task.triggers.len() > MAX_TRIGGERS {
            return Err(ValidationError::TooLarge {
                what: "triggers",
                limit: MAX_TRIGGERS,
            });
        }
        if task.actions.is_empty() {
            return Err(ValidationError::NoAction);
        }
        if task.mode.max_runs() == 0 || task.mode.max_runs() > MAX_MODE_RUNS {
            return Err(ValidationError::InvalidValue(
                "a mode's maximum must be 1..=100",
            ));
        }
        for trigger in &task.triggers {
            self.check_trigger(trigger)?;
        }
        let mut counts = Counts {
            conditions: 0,
            actions: 0,
        };
        for c in &task.conditions {
            self.check_condition(c, 1, &mut counts)?;
        }
        self.check_actions(&task.actions, permissions, 1, &mut counts)?;
        // R21: exactly the inputs used, declared.
        let required = task.required_inputs();
        if let Some(input) = required.difference(&task.inputs).next() {
            return Err(ValidationError::UndeclaredInput(input.clone()));
        }
        if let Some(input) = task.inputs.difference(&required).next() {
            return Err(ValidationError::UnusedInput(input.clone()));
        }
        Ok(())
    }

    fn check_place(&self, place: &PlaceId, needs_shape: bool) -> Result<(), ValidationError> {
        match self.places.get(place) {
            None => Err(ValidationError::UnknownPlace(place.clone())),
            Some(entry) if needs_shape && entry.shape.is_none() => {
                Err(ValidationError::PlaceWithoutShape(place.clone()))
            }
            Some(_) => Ok(()),
        }
    }

    fn check_signal(&self, path: &str) -> Result<ValueKind, ValidationError> {
        self.catalogue
            .signal(path)
            .map(|s| s.kind)
            .ok_or_else(|| ValidationError::UnknownSignal(path.to_owned()))
    }

    fn check_readable_property(
        &self,
        device: &DeviceId,
        property: PropertyId,
    ) -> Result<ValueKind, ValidationError> {
        let spec = self
            .catalogue
            .device(device)
            .ok_or_else(|| ValidationError::UnknownDevice(device.clone()))?
            .properties
            .get(&property)
            .ok_or_else(|| ValidationError::UnknownProperty {
                device: device.clone(),
                property,
            })?;
        if !spec.readable {
            return Err(ValidationError::PropertyNotReadable {
                device: device.clone(),
                property,
            });
        }
        Ok(spec.kind)
    }

    fn check_day_time(&self, t: &DayTime) -> Result<(), ValidationError> {
        if let DayTime::Sun {
            offset_min, place, ..
        } = t
        {
            if offset_min.unsigned_abs() > MAX_SUN_OFFSET_MIN.unsigned_abs() {
                return Err(ValidationError::InvalidValue(
                    "a sun offset is at most 12 hours",
                ));
            }
            self.check_place(place, true)?;
        }
        Ok(())
    }

    fn check_trigger(&self, trigger: &Trigger) -> Result<(), ValidationError> {
        let geofence_needs_shape = self.config.site == Site::HeadUnit;
        match trigger {
            Trigger::Place { place, .. } => self.check_place(place, geofence_needs_shape),
            Trigger::Signal {
                path,
                change,
                hold_ms,
            } => {
                let kind = self.check_signal(path)?;
                if let Change::Becomes(test) = change {
                    check_test(test, kind, &|| path.clone())?;
                }
                if *hold_ms > MAX_HOLD_MS {
                    return Err(ValidationError::InvalidValue("a hold is at most a day"));
                }
                Ok(())
            }
            Trigger::Property {
                device,
                property,
                change,
                hold_ms,
            } => {
                let kind = self.check_readable_property(device, *property)?;
                if let Change::Becomes(test) = change {
                    check_test(test, kind, &|| format!("property {property} of {device}"))?;
                }
                if *hold_ms > MAX_HOLD_MS {
                    return Err(ValidationError::InvalidValue("a hold is at most a day"));
                }
                Ok(())
            }
            Trigger::Time { weekdays, .. } => {
                if weekdays.is_empty() {
                    return Err(ValidationError::InvalidValue(
                        "a time trigger needs a weekday",
                    ));
                }
                Ok(())
            }
            Trigger::Sun {
                offset_min,
                place,
                weekdays,
                event,
            } => {
                if weekdays.is_empty() {
                    return Err(ValidationError::InvalidValue(
                        "a time trigger needs a weekday",
                    ));
                }
                self.check_day_time(&DayTime::Sun {
                    event: *event,
                    offset_min: *offset_min,
                    place: place.clone(),
                })
            }
            Trigger::Vehicle(_) | Trigger::Manual => Ok(()),
        }
    }

    fn check_condition(
        &self,
        c: &Condition,
        depth: usize,
        counts: &mut Counts,
    ) -> Result<(), ValidationError> {
        counts.conditions += 1;
        if counts.conditions > MAX_CONDITION_NODES {
            return Err(ValidationError::TooLarge {
                what: "conditions",
                limit: MAX_CONDITION_NODES,
            });
        }
        if depth > MAX_NESTING {
            return Err(ValidationError::TooLarge {
                what: "levels of nesting",
                limit: MAX_NESTING,
            });
        }
        match c {
            Condition::All(cs) | Condition::Any(cs) => {
                for c in cs {
                    self.check_condition(c, depth + 1, counts)?;
                }
                Ok(())
            }
            Condition::Not(c) => self.check_condition(c, depth + 1, counts),
            Condition::Signal { path, test } => {
                let kind = self.check_signal(path)?;
                check_test(test, kind, &|| path.clone())
            }
            Condition::Property {
                device,
                property,
                test,
            } => {
                let kind = self.check_readable_property(device, *property)?;
                check_test(test, kind, &|| format!("property {property} of {device}"))
            }
            Condition::TimeWindow {
                after,
                before,
                weekdays,
            } => {
                if weekdays.is_empty() {
                    return Err(ValidationError::InvalidValue(
                        "a time window needs a weekday",
                    ));
                }
                if let Some(t) = after {
                    self.check_day_time(t)?;
                }
                if let Some(t) = before {
                    self.check_day_time(t)?;
                }
                Ok(())
            }
            Condition::Place { place, .. } => {
                self.check_place(place, self.config.site == Site::HeadUnit)
            }
            Condition::Vehicle(_) => Ok(()),
        }
    }

    fn check_actions(
        &self,
        actions: &[Action],
        permissions: &Permissions,
        depth: usize,
        counts: &mut Counts,
    ) -> Result<(), ValidationError> {
        if depth > MAX_NESTING {
            return Err(ValidationError::TooLarge {
                what: "levels of nesting",
                limit: MAX_NESTING,
            });
        }
        for action in actions {
            counts.actions += 1;
            if counts.actions > MAX_ACTION_NODES {
                return Err(ValidationError::TooLarge {
                    what: "actions",
                    limit: MAX_ACTION_NODES,
                });
            }
            match action {
                Action::SetProperty {
                    device,
                    property,
                    value,
                } => {
                    if !permissions.device_control {
                        return Err(ValidationError::NotPermitted(Capability::ControlDevices));
                    }
                    let spec = self
                        .catalogue
                        .device(device)
                        .ok_or_else(|| ValidationError::UnknownDevice(device.clone()))?
                        .properties
                        .get(property)
                        .ok_or_else(|| ValidationError::UnknownProperty {
                            device: device.clone(),
                            property: *property,
                        })?;
                    if !spec.writable {
                        return Err(ValidationError::PropertyNotWritable {
                            device: device.clone(),
                            property: *property,
                        });
                    }
                    check_value(value, spec.kind, &|| {
                        format!("property {property} of {device}")
                    })?;
                }
                Action::DeviceAction {
                    device,
                    action,
                    arguments,
                } => {
                    if !permissions.device_control {
                        return Err(ValidationError::NotPermitted(Capability::ControlDevices));
                    }
                    let expected = *self
                        .catalogue
                        .device(device)
                        .ok_or_else(|| ValidationError::UnknownDevice(device.clone()))?
                        .actions
                        .get(action)
                        .ok_or_else(|| ValidationError::UnknownDeviceAction {
                            device: device.clone(),
                            action: *action,
                        })?;
                    if arguments.len() != expected {
                        return Err(ValidationError::WrongArguments {
                            device: device.clone(),
                            action: *action,
                            expected,
                            given: arguments.len(),
                        });
                    }
                }
                Action::Vehicle(command) => {
                    if !permissions.vehicle_commands {
                        return Err(ValidationError::NotPermitted(Capability::CommandVehicle));
                    }
                    match command {
                        VehicleCommand::Window { percent_open } if *percent_open > 100 => {
                            return Err(ValidationError::InvalidValue("a window opens 0..=100 %"));
                        }
                        VehicleCommand::Climate {
                            target_celsius: Some(t),
                            ..
                        } if !t.is_finite() => {
                            return Err(ValidationError::InvalidValue("a number must be finite"));
                        }
                        _ => {}
                    }
                }
                Action::App(AppIntent::Navigate { destination }) => {
                    if !permissions.navigation {
                        return Err(ValidationError::NotPermitted(Capability::Navigate));
                    }
                    self.check_place(destination, false)?;
                }
                Action::App(AppIntent::Notify { message, .. }) => {
                    if !permissions.notifications {
                        return Err(ValidationError::NotPermitted(Capability::Notify));
                    }
                    if message.is_empty() || message.len() > MAX_MESSAGE_BYTES {
                        return Err(ValidationError::InvalidValue(
                            "a notification is 1..=512 bytes",
                        ));
                    }
                }
                Action::Delay { ms } => {
                    if *ms > MAX_DELAY_MS {
                        return Err(ValidationError::InvalidValue("a delay is at most 7 days"));
                    }
                }
                Action::Choose {
                    branches,
                    otherwise,
                } => {
                    if branches.is_empty() || branches.len() > MAX_BRANCHES {
                        return Err(ValidationError::TooLarge {
                            what: "branches",
                            limit: MAX_BRANCHES,
                        });
                    }
                    for branch in branches {
                        for c in &branch.conditions {
                            self.check_condition(c, depth + 1, counts)?;
                        }
                        self.check_actions(&branch.actions, permissions, depth + 1, counts)?;
                    }
                    self.check_actions(otherwise, permissions, depth + 1, counts)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the effects of `actions` can fire `trigger`. Conservative:
    /// conditions are not considered, and a device action may change any of
    /// its device's properties. A write of a constant fires a threshold
    /// trigger only if the constant passes its test.
    fn fires(&self, touch: &Touch<'_>, trigger: &Trigger) -> bool {
        match (touch, trigger) {
            (
                Touch::Write(device, property, value),
                Trigger::Property {
                    device: d,
                    property: p,
                    change,
                    ..
                },
            ) => {
                *device == d
                    && *property == *p
                    && match change {
                        Change::Any => true,
                        Change::Becomes(test) => test.matches(value),
                    }
            }
            (Touch::Invoke(device), Trigger::Property { device: d, .. }) => *device == d,
            (Touch::Command(kind), Trigger::Signal { path, .. }) => self
                .catalogue
                .signal(path)
                .is_some_and(|s| s.changed_by.contains(kind)),
            (Touch::Command(CommandKind::Lock), Trigger::Vehicle(VehicleEvent::Locked))
            | (Touch::Command(CommandKind::Unlock), Trigger::Vehicle(VehicleEvent::Unlocked)) => {
                true
            }
            _ => false,
        }
    }

    /// The tasks (installed, or `candidate`) that `task`'s actions can fire.
    fn successors(&self, task: &Task, candidate: &Task) -> Vec<TaskId> {
        let mut list = Vec::new();
        touches(&task.actions, &mut list);
        let mut out: Vec<TaskId> = Vec::new();
        for touch in &list {
            let mut slots: Vec<(TaskId, u16)> = Vec::new();
            match touch {
                Touch::Write(device, property, _) => {
                    slots.extend_from_slice(self.index.property(device, *property));
                }
                Touch::Invoke(device) => slots.extend(self.index.device(device).copied()),
                Touch::Command(kind) => {
                    for path in self.catalogue.signals_changed_by(*kind) {
                        slots.extend_from_slice(self.index.signal(path));
                    }
                    let event = match kind {
                        CommandKind::Lock => Some(VehicleEvent::Locked),
                        CommandKind::Unlock => Some(VehicleEvent::Unlocked),
                        _ => None,
                    };
                    if let Some(event) = event {
                        slots.extend_from_slice(self.index.vehicle(event));
                    }
                }
            }
            for (id, trigger) in slots {
                let fired = self
                    .tasks
                    .get(&id)
                    .and_then(|e| e.task.triggers.get(usize::from(trigger)))
                    .is_some_and(|t| self.fires(touch, t));
                if fired {
                    out.push(id);
                }
            }
            if candidate.triggers.iter().any(|t| self.fires(touch, t)) {
                out.push(candidate.id);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// A loop through `candidate`: tasks whose actions trigger each other
    /// around to it again (a task that triggers itself included). Loops
    /// through other nodes' engines cannot be seen here.
    pub(super) fn find_loop(&self, candidate: &Task) -> Option<Vec<TaskId>> {
        let mut visited: HashSet<TaskId> = HashSet::new();
        let mut stack: Vec<(TaskId, Vec<TaskId>)> = vec![(candidate.id, vec![candidate.id])];
        while let Some((node, path)) = stack.pop() {
            let task: Arc<Task>;
            let task_ref: &Task = if node == candidate.id {
                candidate
            } else {
                match self.tasks.get(&node) {
                    Some(entry) => {
                        task = Arc::clone(&entry.task);
                        &task
                    }
                    None => continue,
                }
            };
            for next in self.successors(task_ref, candidate) {
                if next == candidate.id {
                    return Some(path);
                }
                if visited.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
        None
    }
}
