//! Small helpers the node's services share: building a request envelope,
//! reading an answer, and locking a mutex that a panic may have poisoned.

use std::sync::{Mutex, MutexGuard};

use tether_proto::v1::{Envelope, Request, envelope, request, response};

use crate::NodeError;

/// An envelope carrying one request (the session numbers it).
pub(crate) fn request(kind: request::Kind) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request { kind: Some(kind) })),
        ..Envelope::default()
    }
}

/// The response in `reply`, or the peer's typed error.
pub(crate) fn answer(reply: Envelope) -> Result<response::Kind, NodeError> {
    match reply.body {
        Some(envelope::Body::Response(r)) => r
            .kind
            .ok_or(NodeError::UnexpectedResponse("empty response")),
        Some(envelope::Body::Error(e)) => Err(NodeError::Control(
            tether_control::client::ControlError::from_wire(&e),
        )),
        _ => Err(NodeError::UnexpectedResponse("not a response")),
    }
}

/// Locks `m`, taking over the data if a panic poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
