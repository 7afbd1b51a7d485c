//! Subscriptions by reference count: the union of the declared inputs of
//! live tasks (R21). Data no live task needs any more is forgotten.

use std::sync::Arc;

use super::{Engine, Output, Site, Subscription};
use crate::model::{Input, PlaceId, TaskId, VehicleState};

impl Engine {
    // ---------------------------------------- subscriptions by reference

    pub(super) fn acquire_inputs(&mut self, id: TaskId) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let task = Arc::clone(&entry.task);
        for input in &task.inputs {
            match input {
                Input::Place(place) => self.place_ref(place),
                Input::Signal(path) => {
                    let refs = self.signal_refs.entry(path.clone()).or_insert(0);
                    *refs += 1;
                    if *refs == 1 {
                        self.outputs
                            .push_back(Output::Subscribe(Subscription::Signal(path.clone())));
                    }
                }
                Input::Property(device, property) => {
                    let refs = self
                        .property_refs
                        .entry(device.clone())
                        .or_default()
                        .entry(*property)
                        .or_insert(0);
                    *refs += 1;
                    if *refs == 1 {
                        self.outputs
                            .push_back(Output::Subscribe(Subscription::Property(
                                device.clone(),
                                *property,
                            )));
                    }
                }
                Input::Vehicle(state) => {
                    self.vehicle_refs[state.index()] += 1;
                    if self.vehicle_refs[state.index()] == 1 {
                        self.outputs
                            .push_back(Output::Subscribe(Subscription::Vehicle(*state)));
                    }
                }
            }
        }
    }

    /// Releases a task's inputs; data no live task needs any more is
    /// forgotten (R30: kept only as long as the purpose needs).
    pub(super) fn release_inputs(&mut self, id: TaskId) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let task = Arc::clone(&entry.task);
        for input in &task.inputs {
            match input {
                Input::Place(place) => self.place_unref(place),
                Input::Signal(path) => {
                    if let Some(refs) = self.signal_refs.get_mut(path.as_str()) {
                        *refs -= 1;
                        if *refs == 0 {
                            self.signal_refs.remove(path.as_str());
                            self.signal_values.remove(path.as_str());
                            self.outputs
                                .push_back(Output::Unsubscribe(Subscription::Signal(path.clone())));
                        }
                    }
                }
                Input::Property(device, property) => {
                    if let Some(props) = self.property_refs.get_mut(device)
                        && let Some(refs) = props.get_mut(property)
                    {
                        *refs -= 1;
                        if *refs == 0 {
                            props.remove(property);
                            if props.is_empty() {
                                self.property_refs.remove(device);
                            }
                            if let Some(values) = self.property_values.get_mut(device) {
                                values.remove(property);
                                if values.is_empty() {
                                    self.property_values.remove(device);
                                }
                            }
                            self.outputs
                                .push_back(Output::Unsubscribe(Subscription::Property(
                                    device.clone(),
                                    *property,
                                )));
                        }
                    }
                }
                Input::Vehicle(state) => self.vehicle_unref(*state),
            }
        }
    }

    pub(super) fn vehicle_unref(&mut self, state: VehicleState) {
        let refs = &mut self.vehicle_refs[state.index()];
        if *refs > 0 {
            *refs -= 1;
            if *refs == 0 {
                self.vehicle_states[state.index()] = None;
                self.outputs
                    .push_back(Output::Unsubscribe(Subscription::Vehicle(state)));
            }
        }
    }

    pub(super) fn place_ref(&mut self, place: &PlaceId) {
        let Some(entry) = self.places.get_mut(place) else {
            return;
        };
        entry.refs += 1;
        if entry.refs == 1 {
            match self.config.site {
                Site::HeadUnit => {
                    self.location_refs += 1;
                    if self.location_refs == 1 {
                        self.outputs
                            .push_back(Output::Subscribe(Subscription::Location));
                    }
                }
                Site::Hub => self
                    .outputs
                    .push_back(Output::Subscribe(Subscription::Place(place.clone()))),
            }
        }
    }

    /// The last user of a place's state is gone: the state and any pending
    /// transition are forgotten.
    pub(super) fn place_unref(&mut self, place: &PlaceId) {
        let Some(entry) = self.places.get_mut(place) else {
            return;
        };
        if entry.refs == 0 {
            return;
        }
        entry.refs -= 1;
        if entry.refs > 0 {
            return;
        }
        entry.inside = None;
        if let Some(pending) = entry.pending.take() {
            self.timers.cancel(pending.timer);
        }
        match self.config.site {
            Site::HeadUnit => {
                self.location_refs = self.location_refs.saturating_sub(1);
                if self.location_refs == 0 {
                    self.outputs
                        .push_back(Output::Unsubscribe(Subscription::Location));
                }
            }
            Site::Hub => self
                .outputs
                .push_back(Output::Unsubscribe(Subscription::Place(place.clone()))),
        }
    }
}
