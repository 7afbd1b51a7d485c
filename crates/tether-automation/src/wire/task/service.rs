//! The pieces of the automation service (SPEC §18.1) that are not a task:
//! how a task stands (`TaskState`) and what the head unit tells the home
//! hub (`HomeEvent`: a place's name and direction, a vehicle event, the
//! consent switch; never a coordinate, R10, R21).

use tether_proto::v1 as pb;

use super::{
    WireError, place_id, transition_from_proto, transition_to_proto, vehicle_event_from_proto,
    vehicle_event_to_proto,
};
use crate::TaskStatus;
use crate::model::{PlaceId, Transition, VehicleEvent};

/// The `TaskState` of a task the engine holds. `TASK_STATE_BROKEN` is the
/// host's to set, for a stored task that no longer validates.
pub fn task_state_to_proto(status: TaskStatus) -> pb::TaskState {
    match status {
        TaskStatus::Active => pb::TaskState::Active,
        TaskStatus::Disabled => pb::TaskState::Disabled,
        TaskStatus::DisabledByConsent => pb::TaskState::DisabledByConsent,
    }
}

/// A place and a direction in their protobuf form: a place trigger, or a
/// place event for the home hub.
pub fn place_transition_to_proto(place: &PlaceId, transition: Transition) -> pb::PlaceTransition {
    pb::PlaceTransition {
        place: place.0.clone(),
        transition: transition_to_proto(transition).into(),
    }
}

/// The place and direction `message` holds.
pub fn place_transition_from_proto(
    message: pb::PlaceTransition,
) -> Result<(PlaceId, Transition), WireError> {
    Ok((
        place_id(message.place, "PlaceTransition.place")?,
        transition_from_proto(message.transition)?,
    ))
}

/// What the head unit sends the home hub on a `WatchHomeEvents` stream
/// (response 205, and 206 first). Nothing in it can carry a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeEvent {
    /// The car entered or left a place (for
    /// [`crate::Engine::handle_place_event`]).
    Place {
        /// The user's name for the place.
        place: PlaceId,
        /// Enter or leave.
        transition: Transition,
    },
    /// The car reported an event (for
    /// [`crate::Engine::handle_vehicle_event`]).
    Vehicle(VehicleEvent),
    /// The "car data to home" switch (for [`crate::Engine::handle_consent`]).
    Consent {
        /// On: the hub's tasks may receive car data (R11).
        car_data_to_home: bool,
    },
}

/// The protobuf form of `event`.
pub fn home_event_to_proto(event: &HomeEvent) -> pb::HomeEvent {
    use pb::home_event::Kind;
    let kind = match event {
        HomeEvent::Place { place, transition } => {
            Kind::Place(place_transition_to_proto(place, *transition))
        }
        HomeEvent::Vehicle(e) => Kind::Vehicle(pb::VehicleEventNotice {
            event: vehicle_event_to_proto(*e).into(),
        }),
        HomeEvent::Consent { car_data_to_home } => Kind::Consent(pb::ConsentState {
            car_data_to_home: *car_data_to_home,
        }),
    };
    pb::HomeEvent { kind: Some(kind) }
}

/// The event `message` holds.
pub fn home_event_from_proto(message: pb::HomeEvent) -> Result<HomeEvent, WireError> {
    use pb::home_event::Kind;
    Ok(
        match message.kind.ok_or(WireError::Missing("HomeEvent.kind"))? {
            Kind::Place(p) => {
                let (place, transition) = place_transition_from_proto(p)?;
                HomeEvent::Place { place, transition }
            }
            Kind::Vehicle(v) => HomeEvent::Vehicle(vehicle_event_from_proto(v.event)?),
            Kind::Consent(c) => HomeEvent::Consent {
                car_data_to_home: c.car_data_to_home,
            },
        },
    )
}
