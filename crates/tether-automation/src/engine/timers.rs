//! The engine's timers, in one ordered queue.

use std::collections::BTreeMap;

use crate::engine::{ConfirmationId, RequestId};
use crate::model::{PlaceId, TaskId, Transition};
use crate::trace::RunId;

/// Due time, class, sequence number. At the same due time a leave comes
/// before an enter, and both before anything else (so a move from one place
/// to another reads leave A, enter B, and tasks see both).
pub(crate) type TimerKey = (u64, u8, u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A place's pending transition has been held for the dwell time.
    Dwell {
        place: PlaceId,
        transition: Transition,
    },
    /// A trigger's `hold_ms` has passed.
    Hold { task: TaskId, trigger: u16 },
    /// A run's delay is over.
    Delay { run: RunId },
    /// No answer to an action request.
    ActionDeadline { request: RequestId },
    /// No answer to a confirmation request.
    ConfirmDeadline { id: ConfirmationId },
    /// A time trigger is due (`occurrence`), or its next moment must be
    /// looked for again (none in the window searched, e.g. polar night).
    Schedule {
        task: TaskId,
        trigger: u16,
        occurrence: bool,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeMap<TimerKey, Timer>,
    seq: u64,
}

impl Timers {
    pub(crate) fn add(&mut self, due: u64, timer: Timer) -> TimerKey {
        let class = match &timer {
            Timer::Dwell {
                transition: Transition::Leave,
                ..
            } => 0,
            Timer::Dwell {
                transition: Transition::Enter,
                ..
            } => 1,
            _ => 2,
        };
        self.seq += 1;
        let key = (due, class, self.seq);
        self.queue.insert(key, timer);
        key
    }

    pub(crate) fn cancel(&mut self, key: TimerKey) {
        self.queue.remove(&key);
    }

    pub(crate) fn next_due(&self) -> Option<u64> {
        self.queue.first_key_value().map(|(k, _)| k.0)
    }

    pub(crate) fn pop_due(&mut self, now: u64) -> Option<(TimerKey, Timer)> {
        if self.next_due()? <= now {
            self.queue.pop_first()
        } else {
            None
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
