//! The "car data to home" switch (R11, R28) and the audiences that asked
//! the head unit for place events.

use std::collections::BTreeSet;

use super::{Audience, Engine, Site};
use crate::error::EngineError;
use crate::model::{PlaceId, Task, TaskId};
use crate::trace::{CancelReason, Cause, Outcome};

impl Engine {
    // ----------------------------------------------------- consent (R11)

    /// The "car data to home" switch (R11, R28), effective from this input
    /// on.
    ///
    /// On the hub, turning it off withholds every vehicle signal, vehicle
    /// event and place event from then on; each task that reads car data
    /// is disabled by consent (its runs are cancelled, its trace says so,
    /// its car-data subscriptions are dropped and the values kept for it
    /// forgotten). Turning it on subscribes them again. Earlier traces stay.
    ///
    /// On the head unit, turning it off stops place events for the home
    /// ([`Audience::Home`]) and the evaluation done only for them.
    pub fn handle_consent(&mut self, car_data_to_home: bool, now_ms: u64) {
        let now = self.advance(now_ms);
        if self.config.car_data_to_home == car_data_to_home {
            return;
        }
        self.config.car_data_to_home = car_data_to_home;
        match self.config.site {
            Site::Hub => {
                let dependent: Vec<TaskId> = self
                    .task_ids()
                    .into_iter()
                    .filter(|id| self.tasks.get(id).is_some_and(|e| e.task.reads_car_data()))
                    .collect();
                for id in dependent {
                    if car_data_to_home {
                        let enabled = match self.tasks.get_mut(&id) {
                            Some(entry) => {
                                entry.consent_blocked = false;
                                entry.enabled
                            }
                            None => continue,
                        };
                        if enabled {
                            self.acquire_inputs(id);
                        }
                    } else {
                        self.deactivate(id, CancelReason::ConsentWithdrawn, now);
                        let enabled = match self.tasks.get_mut(&id) {
                            Some(entry) => {
                                entry.consent_blocked = true;
                                entry.enabled
                            }
                            None => continue,
                        };
                        if enabled {
                            self.trace_disabled_by_consent(id, now);
                        }
                    }
                }
            }
            Site::HeadUnit => {
                let home = self
                    .remote_interest
                    .get(&Audience::Home)
                    .cloned()
                    .unwrap_or_default();
                for place in home {
                    if car_data_to_home {
                        self.place_ref(&place);
                    } else {
                        self.place_unref(&place);
                    }
                }
            }
        }
    }

    /// Which places another node wants `{place, enter|leave}` events for
    /// (head unit only; the other node's engine says so with its
    /// [`Subscription::Place`](crate::Subscription::Place) outputs). Replaces the audience's set.
    pub fn handle_remote_interest(
        &mut self,
        audience: Audience,
        places: BTreeSet<PlaceId>,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        self.advance(now_ms);
        if self.config.site != Site::HeadUnit {
            return Ok(());
        }
        for place in &places {
            match self.places.get(place) {
                None => return Err(EngineError::UnknownPlace(place.clone())),
                Some(entry) if entry.shape.is_none() => {
                    return Err(EngineError::BadPlace {
                        place: place.clone(),
                        reason: "a geofence needs a shape",
                    });
                }
                Some(_) => {}
            }
        }
        let old = self
            .remote_interest
            .insert(audience, places.clone())
            .unwrap_or_default();
        let counted = audience == Audience::Phone || self.config.car_data_to_home;
        if counted {
            for place in places.difference(&old) {
                self.place_ref(place);
            }
            for place in old.difference(&places) {
                self.place_unref(place);
            }
        }
        Ok(())
    }

    pub(super) fn consent_blocks(&self, task: &Task) -> bool {
        self.config.site == Site::Hub && !self.config.car_data_to_home && task.reads_car_data()
    }

    pub(super) fn trace_disabled_by_consent(&mut self, id: TaskId, now: u64) {
        let trace = self.new_trace(id, Cause::ConsentWithdrawn, now, Outcome::DisabledByConsent);
        self.push_trace(trace);
    }
}
