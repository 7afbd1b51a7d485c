//! Geofences (head unit) and place events (hub).
//!
//! A fix is used the moment it arrives and then dropped: what stays is, per
//! place, inside/outside/unknown and at most one pending transition with
//! the time it began (R32: no track, no position). Only `{place,
//! enter|leave}` leaves the engine (R10, R21).

use super::timers::{Timer, TimerKey};
use super::{Audience, Delivery, Engine, Output, PendingTransition, PlaceEvent, Site};
use crate::geo::{Fix, Reading};
use crate::model::{PlaceId, Transition};
use crate::trace::Cause;

impl Engine {
    /// A position fix of the car (head unit). Fixes less accurate than
    /// [`super::GeofenceConfig::max_accuracy_m`] are dropped. For each place
    /// a live task or audience needs:
    ///
    /// - the first usable reading after start (or after the place became
    ///   needed) sets its state silently;
    /// - a reading opposite to the state starts a transition that must hold
    ///   for the dwell time; a reading that agrees with the state, or an
    ///   uncertain one (near the fence for this accuracy), cancels it;
    /// - transitions due at the same moment come out leaves first, and when
    ///   an enter is confirmed, every other place the car is surely outside
    ///   of but not yet confirmed as left is left first: moving from A to B
    ///   reads leave A, then enter B.
    pub fn handle_fix(&mut self, fix: Fix, now_ms: u64) -> Delivery {
        let now = self.advance(now_ms);
        if self.config.site != Site::HeadUnit || self.location_refs == 0 {
            return Delivery::NotSubscribed;
        }
        let geofence = self.config.geofence;
        let accuracy = fix.accuracy_m;
        if !fix.position.is_valid()
            || !accuracy.is_finite()
            || accuracy < 0.0
            || accuracy > geofence.max_accuracy_m
        {
            return Delivery::Dropped;
        }
        let mut immediate: Vec<(PlaceId, Transition)> = Vec::new();
        for (id, entry) in self.places.iter_mut() {
            if entry.refs == 0 {
                continue;
            }
            let Some(shape) = &entry.shape else {
                continue;
            };
            let reading = shape.classify(&fix, geofence.exit_margin_m);
            let wanted = match (entry.inside, reading) {
                (None, Reading::Inside) => {
                    entry.inside = Some(true);
                    None
                }
                (None, Reading::Outside) => {
                    entry.inside = Some(false);
                    None
                }
                (Some(true), Reading::Outside) => Some(Transition::Leave),
                (Some(false), Reading::Inside) => Some(Transition::Enter),
                // Agreeing with the state, or uncertain: no transition
                // holds.
                _ => None,
            };
            match wanted {
                None => {
                    if let Some(pending) = entry.pending.take() {
                        self.timers.cancel(pending.timer);
                    }
                }
                Some(transition) => {
                    if entry.pending.is_some_and(|p| p.transition == transition) {
                        continue;
                    }
                    if let Some(pending) = entry.pending.take() {
                        self.timers.cancel(pending.timer);
                    }
                    if geofence.dwell_ms == 0 {
                        immediate.push((id.clone(), transition));
                    } else {
                        let timer = self.timers.add(
                            now.saturating_add(geofence.dwell_ms),
                            Timer::Dwell {
                                place: id.clone(),
                                transition,
                            },
                        );
                        entry.pending = Some(PendingTransition {
                            transition,
                            since: now,
                            timer,
                        });
                    }
                }
            }
        }
        // The fix goes out of scope here: nothing of it is kept.
        immediate.sort_by_key(|(_, t)| *t == Transition::Enter);
        for (place, transition) in immediate {
            self.confirm_place(&place, transition, now);
        }
        Delivery::Delivered
    }

    /// A place's transition held for the dwell time.
    pub(super) fn on_dwell(
        &mut self,
        key: TimerKey,
        place: &PlaceId,
        transition: Transition,
        now: u64,
    ) {
        let current = self
            .places
            .get(place)
            .and_then(|e| e.pending)
            .is_some_and(|p| p.timer == key && p.transition == transition);
        if current {
            self.confirm_place(place, transition, now);
        }
    }

    fn confirm_place(&mut self, place: &PlaceId, transition: Transition, now: u64) {
        if transition == Transition::Enter {
            // Leave before enter: a place the car is surely outside of
            // (its leave pending) is left before another is entered.
            let leaving: Vec<PlaceId> = self
                .places
                .iter()
                .filter(|(id, e)| {
                    *id != place && e.pending.is_some_and(|p| p.transition == Transition::Leave)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for other in leaving {
                self.confirm_place(&other, Transition::Leave, now);
            }
        }
        let Some(entry) = self.places.get_mut(place) else {
            return;
        };
        if let Some(pending) = entry.pending.take() {
            self.timers.cancel(pending.timer);
        }
        entry.inside = Some(transition == Transition::Enter);
        self.place_changed(place, transition, now);
    }

    /// A `{place, enter|leave}` event from the head unit (hub). A repeat of
    /// the state already known fires nothing.
    pub fn handle_place_event(
        &mut self,
        place: &PlaceId,
        transition: Transition,
        now_ms: u64,
    ) -> Delivery {
        let now = self.advance(now_ms);
        if self.config.site != Site::Hub {
            return Delivery::NotSubscribed;
        }
        if !self.config.car_data_to_home {
            return Delivery::WithheldByConsent;
        }
        let Some(entry) = self.places.get_mut(place) else {
            return Delivery::NotSubscribed;
        };
        if entry.refs == 0 {
            return Delivery::NotSubscribed;
        }
        let inside = transition == Transition::Enter;
        if entry.inside == Some(inside) {
            return Delivery::Delivered;
        }
        entry.inside = Some(inside);
        self.place_changed(place, transition, now);
        Delivery::Delivered
    }

    /// Tells the audiences that asked (head unit) and fires local tasks.
    fn place_changed(&mut self, place: &PlaceId, transition: Transition, now: u64) {
        if self.config.site == Site::HeadUnit {
            for (audience, places) in &self.remote_interest {
                let allowed = *audience == Audience::Phone || self.config.car_data_to_home;
                if allowed && places.contains(place) {
                    self.outputs.push_back(Output::Place(PlaceEvent {
                        place: place.clone(),
                        transition,
                        audience: *audience,
                    }));
                }
            }
        }
        let slots = self.index.place(place).to_vec();
        let mut last = None;
        for (task_id, trigger) in slots {
            let wanted = self.tasks.get(&task_id).is_some_and(|e| {
                matches!(
                    e.task.triggers.get(usize::from(trigger)),
                    Some(crate::model::Trigger::Place { transition: t, .. }) if *t == transition
                )
            });
            if wanted && last != Some(task_id) {
                last = Some(task_id);
                self.fire(
                    task_id,
                    Cause::Place {
                        place: place.clone(),
                        transition,
                    },
                    now,
                );
            }
        }
    }
}
