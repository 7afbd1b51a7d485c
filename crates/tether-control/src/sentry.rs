//! Sentry mode's danger alerts (R25, R10; SPEC §22, issue 16 item 1, first
//! part): the head unit's state machine. Sans-IO: sensor readings, the
//! car's state and time come in as arguments; what to send each recipient
//! comes out of [`Sentry::pending_for`]; no clock, no store, no network.
//!
//! - **When.** Sentry is on for this car, the car is parked and locked, it is
//!   not inside one of the owner's "sentry stays off" places (judged here,
//!   from the car's own position, which never leaves the car: R10), and
//!   someone stays close to the car within [`PROXIMITY_WINDOW_MS`] of an
//!   impact. One alert per incident: further readings within
//!   [`INCIDENT_QUIET_MS`] of it add nothing.
//! - **To whom.** The owner's devices and every co-user whose grant includes
//!   alerts; the recipients are the caller's, at the moment of the incident.
//! - **Once each.** Every recipient has its own queue; an alert stays in it
//!   until that recipient acknowledges it, however many times it is offered
//!   again (reconnects, retries, several sessions), and is dropped at its
//!   expiry. An acknowledged alert is never offered to that recipient again.
//! - **The image.** An optional still image travels only after the car's
//!   anonymiser ran on it (faces and plates blurred); the alert says so. The
//!   blur is the backend's; this core only refuses an image not marked
//!   anonymised.

use std::collections::{BTreeMap, VecDeque};

/// An impact and someone close count as one danger within this long.
pub const PROXIMITY_WINDOW_MS: u64 = 10_000;
/// After an alert, readings within this long belong to the same incident.
pub const INCIDENT_QUIET_MS: u64 = 60_000;
/// An alert not acknowledged by a recipient within this long is dropped
/// from its queue.
pub const ALERT_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Alerts waiting per recipient, at most: the oldest goes first.
pub const MAX_QUEUED_PER_RECIPIENT: usize = 32;

/// A circle in degrees and metres: a "sentry stays off" place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuietPlace {
    /// Centre latitude.
    pub lat: f64,
    /// Centre longitude.
    pub lon: f64,
    /// Radius in metres.
    pub radius_m: f64,
}

impl QuietPlace {
    fn contains(&self, lat: f64, lon: f64) -> bool {
        let centre = crate::navigation::Position {
            lat: self.lat,
            lon: self.lon,
        };
        centre.distance_m(&crate::navigation::Position { lat, lon }) <= self.radius_m
    }
}

/// What the car is doing when a reading comes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CarState {
    /// In park.
    pub parked: bool,
    /// Every door locked.
    pub locked: bool,
    /// Where the car is (degrees); used here, never sent.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// A sensor reading from the vehicle backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// Someone is close to the car.
    Proximity,
    /// An impact, 1 (a knock) to 10 (a crash).
    Impact {
        /// How hard.
        severity: u8,
    },
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Someone touched the car.
    Low,
    /// A hard knock.
    Medium,
    /// Glass, a crash.
    High,
}

impl Severity {
    fn of(impact: u8) -> Self {
        match impact {
            0..=3 => Severity::Low,
            4..=7 => Severity::Medium,
            _ => Severity::High,
        }
    }
}

/// A still image the car's anonymiser processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertImage {
    /// The encoded image.
    pub bytes: Vec<u8>,
    /// Faces and plates blurred by the car before it leaves it.
    pub anonymised: bool,
}

/// One danger alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its number on this car; a recipient acknowledges it by it.
    pub id: u64,
    /// When (the caller's milliseconds).
    pub at_ms: u64,
    /// How bad.
    pub severity: Severity,
    /// A short text for the notification.
    pub summary: String,
    /// A still image, anonymised.
    pub image: Option<AlertImage>,
    /// After this the alert is dropped undelivered.
    pub expires_at_ms: u64,
}

/// Who gets alerts: an opaque name the caller gives (a member device, a
/// co-user's grant); the core never interprets it.
pub type Recipient = Vec<u8>;

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SentryError {
    /// An image not marked anonymised may not leave the car (R25).
    #[error("an image that was not anonymised may not leave the car")]
    NotAnonymised,
    /// A quiet place with a bad centre or radius.
    #[error("invalid place: {0}")]
    InvalidPlace(&'static str),
}

/// The head unit's sentry mode.
#[derive(Debug, Default)]
pub struct Sentry {
    on: bool,
    quiet: Vec<QuietPlace>,
    last_impact: Option<(u64, u8)>,
    last_proximity: Option<u64>,
    last_alert_ms: Option<u64>,
    next_id: u64,
    queues: BTreeMap<Recipient, VecDeque<Alert>>,
}

impl Sentry {
    /// Off, no quiet places.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sentry on or off for this car (the owner's switch).
    pub fn set_enabled(&mut self, on: bool) {
        self.on = on;
        if !on {
            self.last_impact = None;
            self.last_proximity = None;
        }
    }

    /// Whether sentry is on.
    pub fn enabled(&self) -> bool {
        self.on
    }

    /// The owner's "sentry stays off" places (replacing the list).
    pub fn set_quiet_places(&mut self, places: Vec<QuietPlace>) -> Result<(), SentryError> {
        for p in &places {
            if !(p.lat.is_finite() && (-90.0..=90.0).contains(&p.lat)) {
                return Err(SentryError::InvalidPlace("latitude"));
            }
            if !(p.lon.is_finite() && (-180.0..=180.0).contains(&p.lon)) {
                return Err(SentryError::InvalidPlace("longitude"));
            }
            if !(p.radius_m.is_finite() && p.radius_m > 0.0) {
                return Err(SentryError::InvalidPlace("radius"));
            }
        }
        self.quiet = places;
        Ok(())
    }

    /// Whether sentry watches now, where the car is.
    pub fn watching(&self, car: &CarState) -> bool {
        self.on
            && car.parked
            && car.locked
            && !self.quiet.iter().any(|q| q.contains(car.lat, car.lon))
    }

    /// A sensor reading at `now_ms`. When it completes a danger (an impact
    /// and someone close within [`PROXIMITY_WINDOW_MS`]) outside the quiet
    /// period of the last alert, an alert is queued for every one of
    /// `recipients` and returned. `image` (taken by the caller) must be
    /// anonymised.
    pub fn handle_reading(
        &mut self,
        reading: Reading,
        car: &CarState,
        recipients: &[Recipient],
        image: Option<AlertImage>,
        now_ms: u64,
    ) -> Result<Option<Alert>, SentryError> {
        if image.as_ref().is_some_and(|i| !i.anonymised) {
            return Err(SentryError::NotAnonymised);
        }
        self.expire(now_ms);
        if !self.watching(car) {
            return Ok(None);
        }
        match reading {
            Reading::Proximity => self.last_proximity = Some(now_ms),
            Reading::Impact { severity } => self.last_impact = Some((now_ms, severity.min(10))),
        }
        let recent = |t: u64| now_ms.saturating_sub(t) <= PROXIMITY_WINDOW_MS;
        let (Some((impact_ms, severity)), Some(close_ms)) = (self.last_impact, self.last_proximity)
        else {
            return Ok(None);
        };
        if !(recent(impact_ms) && recent(close_ms)) {
            return Ok(None);
        }
        if self
            .last_alert_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < INCIDENT_QUIET_MS)
        {
            return Ok(None);
        }
        self.last_alert_ms = Some(now_ms);
        self.last_impact = None;
        self.last_proximity = None;
        self.next_id += 1;
        let severity = Severity::of(severity);
        let alert = Alert {
            id: self.next_id,
            at_ms: now_ms,
            severity,
            summary: match severity {
                Severity::Low => "Someone touched your parked car".into(),
                Severity::Medium => "A knock on your parked car".into(),
                Severity::High => "A hard impact on your parked car".into(),
            },
            image,
            expires_at_ms: now_ms.saturating_add(ALERT_TTL_MS),
        };
        for recipient in recipients {
            let queue = self.queues.entry(recipient.clone()).or_default();
            if queue.len() >= MAX_QUEUED_PER_RECIPIENT {
                queue.pop_front();
            }
            queue.push_back(alert.clone());
        }
        Ok(Some(alert))
    }

    /// What `recipient` should be sent now (every alert it has not
    /// acknowledged and that has not expired), oldest first. Offering it
    /// again after a reconnect is expected; the recipient shows each id once
    /// and acknowledges it.
    pub fn pending_for(&mut self, recipient: &[u8], now_ms: u64) -> Vec<Alert> {
        self.expire(now_ms);
        self.queues
            .get(recipient)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `recipient` has alert `id`: it leaves its queue and, since every new
    /// alert takes a new number, is never offered to it again.
    pub fn acknowledge(&mut self, recipient: &[u8], id: u64) {
        if let Some(queue) = self.queues.get_mut(recipient) {
            queue.retain(|a| a.id != id);
            if queue.is_empty() {
                self.queues.remove(recipient);
            }
        }
    }

    /// A recipient that may no longer have alerts (its grant revoked, its
    /// device removed): its queue goes at once.
    pub fn forget(&mut self, recipient: &[u8]) {
        self.queues.remove(recipient);
    }

    fn expire(&mut self, now_ms: u64) {
        for queue in self.queues.values_mut() {
            queue.retain(|a| a.expires_at_ms > now_ms);
        }
        self.queues.retain(|_, q| !q.is_empty());
    }
}
