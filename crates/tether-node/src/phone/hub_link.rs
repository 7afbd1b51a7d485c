//! The phone's side of the home hub's task service (SPEC §18.8): the
//! owner manages the hub's super tasks over an account-bound session, as
//! on the car.

use std::sync::Arc;

use tether_session::quic::{ClientSession, CloseCode};

use crate::NodeError;
use crate::phone::automation_link::Tasks;

/// An authenticated session to the account's home hub. Obtained from
/// [`Phone::connect_hub`](crate::Phone::connect_hub). Cheap to share.
#[derive(Debug, Clone)]
pub struct HubLink {
    session: Arc<ClientSession>,
    /// Over the relay: the reply topic, hung up with the link.
    relay: Option<Arc<crate::phone::vehicle_link::RelayCall>>,
}

impl HubLink {
    pub(crate) fn new(session: ClientSession) -> Result<Self, NodeError> {
        if session.peer().certificate.role != tether_identity::Role::Hub {
            session.close(CloseCode::Normal, "not a hub");
            return Err(NodeError::UnexpectedPeer("the peer is not a home hub"));
        }
        Ok(Self {
            session: Arc::new(session),
            relay: None,
        })
    }

    pub(crate) fn over_relay(mut self, call: crate::phone::vehicle_link::RelayCall) -> Self {
        self.relay = Some(Arc::new(call));
        self
    }

    /// Whether the session runs through the MQTT broker (SPEC §19.11).
    pub fn via_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// The hub's super tasks: create, list, run, trace, share, accept,
    /// enable and delete, as on the car (SPEC §18.1).
    pub fn tasks(&self) -> Tasks {
        Tasks(self.session.clone())
    }

    /// Whether the session was resumed from a ticket.
    pub fn resumed(&self) -> bool {
        self.session.peer().resumed
    }

    /// Closes the session.
    pub fn close(&self) {
        self.session.close(CloseCode::Normal, "bye");
    }
}
