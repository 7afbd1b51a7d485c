//! A recorded drive (`examples/drive/*.csv`): the car's position fixes and
//! vehicle events over time, replayed into the head unit's super tasks on
//! a manual clock (the demo, tests). Each fix is handed to the engine and
//! dropped; nothing of the track is stored (R32).
//!
//! One line per step: `seconds, latitude, longitude, accuracy_m[, event]`;
//! a line with an event and empty position fields is a vehicle event
//! (`driving`, `parked`, `locked`, `unlocked`, `charging-started`,
//! `charging-stopped`). `#` starts a comment.

use std::sync::Arc;
use std::time::Duration;

use tether_automation::{Fix, VehicleEvent};

use crate::automation::AutomationHost;

/// Why a track could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    /// A line is not `seconds, lat, lon, accuracy[, event]`.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Time goes backwards.
    #[error("line {line}: time goes backwards")]
    Backwards {
        /// 1-based.
        line: usize,
    },
    /// No step at all.
    #[error("the track is empty")]
    Empty,
}

/// What happens at one moment of a drive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DriveInput {
    /// A position fix.
    Fix(Fix),
    /// A vehicle event.
    Event(VehicleEvent),
}

/// One step of a drive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriveStep {
    /// Seconds since the start of the drive.
    pub at_s: u64,
    /// What happens.
    pub input: DriveInput,
}

/// A recorded drive.
#[derive(Debug, Clone, PartialEq)]
pub struct Drive {
    /// Its steps, in time order.
    pub steps: Vec<DriveStep>,
}

fn event(name: &str) -> Option<VehicleEvent> {
    Some(match name {
        "driving" => VehicleEvent::Driving,
        "parked" => VehicleEvent::Parked,
        "locked" => VehicleEvent::Locked,
        "unlocked" => VehicleEvent::Unlocked,
        "charging-started" => VehicleEvent::ChargingStarted,
        "charging-stopped" => VehicleEvent::ChargingStopped,
        _ => return None,
    })
}

impl Drive {
    /// Reads a track.
    pub fn parse(text: &str) -> Result<Self, DriveError> {
        let mut steps = Vec::new();
        let mut last = 0;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split(',').map(str::trim).collect();
            let bad = |reason| DriveError::BadLine { line, reason };
            if fields.len() < 4 || fields.len() > 5 {
                return Err(bad("expected 4 or 5 comma-separated fields"));
            }
            let at_s: u64 = fields[0].parse().map_err(|_| bad("seconds"))?;
            if at_s < last {
                return Err(DriveError::Backwards { line });
            }
            last = at_s;
            if fields[1].is_empty() && fields[2].is_empty() && fields[3].is_empty() {
                let name = fields.get(4).copied().unwrap_or("");
                let event = event(name).ok_or(bad("unknown vehicle event"))?;
                steps.push(DriveStep {
                    at_s,
                    input: DriveInput::Event(event),
                });
                continue;
            }
            let number = |s: &str, what| {
                s.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or(bad(what))
            };
            let lat = number(fields[1], "latitude")?;
            let lon = number(fields[2], "longitude")?;
            let accuracy = number(fields[3], "accuracy")?;
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) || accuracy < 0.0
            {
                return Err(bad("position out of range"));
            }
            steps.push(DriveStep {
                at_s,
                input: DriveInput::Fix(Fix::new(lat, lon, accuracy)),
            });
            if let Some(name) = fields.get(4).filter(|n| !n.is_empty()) {
                let event = event(name).ok_or(bad("unknown vehicle event"))?;
                steps.push(DriveStep {
                    at_s,
                    input: DriveInput::Event(event),
                });
            }
        }
        if steps.is_empty() {
            return Err(DriveError::Empty);
        }
        Ok(Self { steps })
    }

    /// How long it lasts, seconds.
    pub fn duration_s(&self) -> u64 {
        self.steps.last().map_or(0, |s| s.at_s)
    }

    /// Replays the steps with `at_s` in `from_s..until_s` into the car's
    /// `host`, whose manual clock runs from `start_ms` (the drive's second
    /// 0); the clocks of `also` (a hub's, on manual clocks too) move with
    /// it. Timers due on the way run in order; after each step the replay
    /// waits (up to a second) for the actions it started to be answered,
    /// so the clock never outruns the car or the home. Returns how many
    /// steps ran.
    pub async fn replay(
        &self,
        host: &Arc<AutomationHost>,
        also: &[Arc<AutomationHost>],
        start_ms: u64,
        from_s: u64,
        until_s: u64,
    ) -> usize {
        let mut ran = 0;
        for step in self
            .steps
            .iter()
            .filter(|s| s.at_s >= from_s && s.at_s < until_s)
        {
            let now = start_ms + step.at_s * 1000;
            for other in also {
                other.advance_clock(now).await;
            }
            host.advance_clock(now).await;
            match step.input {
                DriveInput::Fix(fix) => {
                    let _ = host.handle_fix(fix);
                }
                DriveInput::Event(event) => {
                    let _ = host.handle_vehicle_event(event);
                }
            }
            ran += 1;
            for other in also {
                other.idle(Duration::from_secs(1)).await;
            }
            host.idle(Duration::from_secs(1)).await;
        }
        ran
    }
}
