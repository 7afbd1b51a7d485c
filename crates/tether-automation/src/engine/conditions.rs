//! Condition evaluation, recorded for the trace.

use super::Engine;
use crate::civil::{DAY_MS, Date, Weekday, local_day};
use crate::model::{Condition, DayTime, Value};
use crate::sun::sun_event_utc_ms;
use crate::trace::ConditionRecord;

fn seen(value: Option<&Value>) -> String {
    value.map_or_else(|| "unknown".to_owned(), Value::to_string)
}

impl Engine {
    /// Evaluates every condition (no short cut: the trace shows each
    /// value) and records them under `prefix`. True when all hold.
    pub(super) fn eval_all(
        &self,
        conditions: &[Condition],
        prefix: &str,
        now: u64,
        out: &mut Vec<ConditionRecord>,
    ) -> bool {
        let mut all = true;
        for (i, condition) in conditions.iter().enumerate() {
            all &= self.eval(condition, &format!("{prefix}[{i}]"), now, out);
        }
        all
    }

    fn eval(
        &self,
        condition: &Condition,
        position: &str,
        now: u64,
        out: &mut Vec<ConditionRecord>,
    ) -> bool {
        let slot = out.len();
        out.push(ConditionRecord {
            position: position.to_owned(),
            description: String::new(),
            value: false,
        });
        let (value, description) = match condition {
            Condition::All(children) => {
                let mut all = true;
                for (i, c) in children.iter().enumerate() {
                    all &= self.eval(c, &format!("{position}.all[{i}]"), now, out);
                }
                (all, format!("all of {}", children.len()))
            }
            Condition::Any(children) => {
                let mut any = false;
                for (i, c) in children.iter().enumerate() {
                    any |= self.eval(c, &format!("{position}.any[{i}]"), now, out);
                }
                (any, format!("any of {}", children.len()))
            }
            Condition::Not(child) => {
                let inner = self.eval(child, &format!("{position}.not"), now, out);
                (!inner, "not".to_owned())
            }
            Condition::Signal { path, test } => {
                let value = self.signal_values.get(path.as_str());
                (
                    value.is_some_and(|v| test.matches(v)),
                    format!("{path} {test} (is {})", seen(value)),
                )
            }
            Condition::Property {
                device,
                property,
                test,
            } => {
                let value = self
                    .property_values
                    .get(device)
                    .and_then(|p| p.get(property));
                (
                    value.is_some_and(|v| test.matches(v)),
                    format!("{property} of {device} {test} (is {})", seen(value)),
                )
            }
            Condition::Place { place, inside } => {
                let state = self.places.get(place).and_then(|p| p.inside);
                let shown = match state {
                    Some(true) => "inside",
                    Some(false) => "outside",
                    None => "unknown",
                };
                let want = if *inside { "inside" } else { "outside" };
                (
                    state == Some(*inside),
                    format!("car {want} {place} (is {shown})"),
                )
            }
            Condition::Vehicle(event) => {
                let (state, on) = event.state();
                let current = self.vehicle_states[state.index()];
                (
                    current == Some(on),
                    format!(
                        "vehicle {event:?} (state {})",
                        match current {
                            Some(true) => "on",
                            Some(false) => "off",
                            None => "unknown",
                        }
                    ),
                )
            }
            Condition::TimeWindow {
                after,
                before,
                weekdays,
            } => self.eval_window(after.as_ref(), before.as_ref(), *weekdays, now),
        };
        out[slot].value = value;
        out[slot].description = description;
        value
    }

    fn eval_window(
        &self,
        after: Option<&DayTime>,
        before: Option<&DayTime>,
        weekdays: crate::civil::Weekdays,
        now: u64,
    ) -> (bool, String) {
        let (day, time) = local_day(now as i64, self.config.utc_offset_min);
        let shown = format!(
            "local time {:02}:{:02}",
            time / 3_600_000,
            (time / 60_000) % 60
        );
        if !weekdays.contains(Weekday::of_day(day)) {
            return (false, format!("time window: not on this weekday ({shown})"));
        }
        let bound = |t: Option<&DayTime>| -> Result<Option<i64>, String> {
            match t {
                None => Ok(None),
                Some(t) => self
                    .day_time_ms(t, day)
                    .map(Some)
                    .ok_or_else(|| format!("time window: no {t:?} today ({shown})")),
            }
        };
        let (start, end) = match (bound(after), bound(before)) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(why), _) | (_, Err(why)) => return (false, why),
        };
        let inside = match (start, end) {
            (None, None) => true,
            (Some(s), None) => time >= s,
            (None, Some(e)) => time < e,
            (Some(s), Some(e)) if s <= e => s <= time && time < e,
            (Some(s), Some(e)) => time >= s || time < e,
        };
        (inside, format!("time window ({shown})"))
    }

    /// Milliseconds into local day `day` of a [`DayTime`]; `None` when the
    /// sun does not rise or set that day, or the place has no shape.
    pub(super) fn day_time_ms(&self, t: &DayTime, day: i64) -> Option<i64> {
        match t {
            DayTime::Clock(clock) => Some(clock.ms_of_day()),
            DayTime::Sun {
                event,
                offset_min,
                place,
            } => {
                let at = self.places.get(place)?.shape.as_ref()?.observer();
                let utc = sun_event_utc_ms(Date::from_day_number(day), at.lat, at.lon, *event)?;
                let local = utc
                    + i64::from(self.config.utc_offset_min) * 60_000
                    + i64::from(*offset_min) * 60_000;
                Some(local - day * DAY_MS)
            }
        }
    }
}
