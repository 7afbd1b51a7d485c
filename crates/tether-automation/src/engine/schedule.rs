//! Time triggers (clock and sun) and what happens to those missed.

use super::Engine;
use super::timers::Timer;
use crate::civil::{DAY_MS, Date, Weekday, local_day};
use crate::model::{MissedPolicy, TaskId, Trigger};
use crate::sun::sun_event_utc_ms;
use crate::trace::{Cause, MissReason, Outcome};

/// Days searched ahead for a trigger's next moment.
const SEARCH_DAYS: i64 = 8;
/// Most missed moments counted (a node down for years still says "many").
const MAX_COUNTED_MISSES: u32 = 10_000;

/// The next moment of a time trigger after some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// It is due then.
    At(u64),
    /// None in the window searched (polar day or night): look again then.
    Recheck(u64),
}

impl Engine {
    fn next_moment(&self, trigger: &Trigger, after: u64) -> Option<Next> {
        let offset = self.config.utc_offset_min;
        let offset_ms = i64::from(offset) * 60_000;
        let after_i = after as i64;
        let (day0, _) = local_day(after_i, offset);
        match trigger {
            Trigger::Time { at, weekdays } => {
                for day in day0..day0 + SEARCH_DAYS {
                    if !weekdays.contains(Weekday::of_day(day)) {
                        continue;
                    }
                    let utc = day * DAY_MS + at.ms_of_day() - offset_ms;
                    if utc > after_i {
                        return u64::try_from(utc).ok().map(Next::At);
                    }
                }
                None
            }
            Trigger::Sun {
                event,
                offset_min,
                place,
                weekdays,
            } => {
                let at = self.places.get(place)?.shape.as_ref()?.observer();
                for day in day0 - 1..day0 + SEARCH_DAYS {
                    if !weekdays.contains(Weekday::of_day(day)) {
                        continue;
                    }
                    let Some(utc) =
                        sun_event_utc_ms(Date::from_day_number(day), at.lat, at.lon, *event)
                    else {
                        continue;
                    };
                    let utc = utc + i64::from(*offset_min) * 60_000;
                    if utc > after_i {
                        return u64::try_from(utc).ok().map(Next::At);
                    }
                }
                let recheck = (day0 + SEARCH_DAYS) * DAY_MS - offset_ms;
                u64::try_from(recheck.max(after_i + 1))
                    .ok()
                    .map(Next::Recheck)
            }
            _ => None,
        }
    }

    /// Schedules the task's time triggers at their next moment after
    /// `after`.
    pub(super) fn schedule_task(&mut self, id: TaskId, after: u64) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let task = std::sync::Arc::clone(&entry.task);
        for (i, trigger) in task.triggers.iter().enumerate() {
            if matches!(trigger, Trigger::Time { .. } | Trigger::Sun { .. }) {
                self.schedule_trigger(id, i as u16, trigger, after);
            }
        }
    }

    fn schedule_trigger(&mut self, id: TaskId, index: u16, trigger: &Trigger, after: u64) {
        let Some(next) = self.next_moment(trigger, after) else {
            return;
        };
        let (due, occurrence) = match next {
            Next::At(t) => (t, true),
            Next::Recheck(t) => (t, false),
        };
        let key = self.timers.add(
            due,
            Timer::Schedule {
                task: id,
                trigger: index,
                occurrence,
            },
        );
        if let Some(entry) = self.tasks.get_mut(&id) {
            entry.schedule.retain(|(i, _)| *i != index);
            entry.schedule.push((index, key));
        }
    }

    pub(super) fn unschedule_task(&mut self, id: TaskId) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        for (_, key) in std::mem::take(&mut entry.schedule) {
            self.timers.cancel(key);
        }
    }

    /// A time trigger's timer: due at `due`, handled at `now`. One moment
    /// handled within [`super::Config::on_time_tolerance_ms`] runs; moments
    /// handled later (the node was down, or the host late) follow the
    /// task's [`MissedPolicy`], and the trace says which.
    pub(super) fn on_schedule(
        &mut self,
        id: TaskId,
        index: u16,
        occurrence: bool,
        due: u64,
        now: u64,
    ) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let task = std::sync::Arc::clone(&entry.task);
        let enabled = entry.enabled;
        let Some(trigger) = task.triggers.get(usize::from(index)) else {
            return;
        };
        if !occurrence {
            self.schedule_trigger(id, index, trigger, due);
            return;
        }
        // Every moment from `due` up to now.
        let mut count: u32 = 1;
        let mut last = due;
        let mut cursor = due;
        while count < MAX_COUNTED_MISSES {
            match self.next_moment(trigger, cursor) {
                Some(Next::At(t)) if t <= now => {
                    count += 1;
                    last = t;
                    cursor = t;
                }
                Some(Next::Recheck(t)) if t <= now => cursor = t,
                _ => break,
            }
        }
        let late_ms = now - last;
        let sun = match trigger {
            Trigger::Sun { event, .. } => Some(*event),
            _ => None,
        };
        let cause = Cause::Time {
            sun,
            scheduled_ms: last,
            late_ms,
            missed: count - 1,
        };
        if enabled {
            let on_time = count == 1 && late_ms <= self.config.on_time_tolerance_ms;
            match task.missed {
                _ if on_time => self.fire(id, cause, now),
                MissedPolicy::RunLate { grace_ms } if late_ms <= grace_ms => {
                    self.fire(id, cause, now);
                }
                policy => {
                    let reason = match policy {
                        MissedPolicy::Skip => MissReason::PolicySkip,
                        MissedPolicy::RunLate { .. } => MissReason::OutsideGrace,
                    };
                    let trace = self.new_trace(
                        id,
                        cause,
                        now,
                        Outcome::Missed {
                            occurrences: count,
                            reason,
                        },
                    );
                    self.push_trace(trace);
                }
            }
        }
        self.schedule_trigger(id, index, trigger, now);
    }
}
