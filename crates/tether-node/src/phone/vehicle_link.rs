//! A phone's session with its vehicle: status, subscriptions, commands.

use std::sync::Arc;

use tether_control::client::{self as control, IdempotencyKey};
use tether_proto::v1::{
    CommandReason, CommandState, SignalValue, VehicleCommand, envelope, response, signal_value,
};
use tether_session::quic::{ClientSession, CloseCode, ResponseStream};

use crate::NodeError;

/// A signal value, owned and FFI-friendly.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalData {
    /// A boolean (locked, open...).
    Bool(bool),
    /// A number (temperature, percent, km...).
    Number(f64),
    /// An integer (gear...).
    Integer(i64),
    /// Text.
    Text(String),
    /// A position. Stays between the car and its owner's phone (R10, R21).
    Location {
        /// Degrees.
        latitude: f64,
        /// Degrees.
        longitude: f64,
    },
}

/// One VSS signal reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// VSS path.
    pub path: String,
    /// The value.
    pub value: SignalData,
}

impl Reading {
    pub(crate) fn from_proto(v: &SignalValue) -> Option<Self> {
        use signal_value::Value;
        let value = match v.value.as_ref()? {
            Value::BoolValue(b) => SignalData::Bool(*b),
            Value::DoubleValue(d) => SignalData::Number(*d),
            Value::IntValue(i) => SignalData::Integer(*i),
            Value::StringValue(s) => SignalData::Text(s.clone()),
            Value::Location(p) => SignalData::Location {
                latitude: p.latitude,
                longitude: p.longitude,
            },
        };
        Some(Self {
            path: v.path.clone(),
            value,
        })
    }
}

/// The outcome of one command, with the vehicle's verified receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Every life-cycle state reported, in order (a retry reports only the
    /// final one).
    pub states: Vec<CommandState>,
    /// The final state.
    pub state: CommandState,
    /// Why, when not succeeded.
    pub reason: CommandReason,
    /// The vehicle's execution sequence number from the receipt.
    pub sequence: u64,
    /// The signed receipt bytes, identical on every retry.
    pub receipt: Vec<u8>,
}

/// A live session with the vehicle.
#[derive(Debug, Clone)]
pub struct VehicleLink {
    session: Arc<ClientSession>,
    vehicle_key: [u8; 32],
    /// Over the relay: the conversation's reply topic, unsubscribed when the
    /// last clone of the link is dropped (SPEC §19.11).
    relay: Option<Arc<RelayCall>>,
}

/// One connection's reply topic on the phone's relay socket; hung up on
/// drop, so a long-running app does not collect subscriptions.
pub(crate) struct RelayCall {
    socket: Arc<tether_relay::RelaySocket>,
    pub(crate) addr: std::net::SocketAddr,
}

impl RelayCall {
    /// Draws a fresh reply topic for a responder at `relay_key`'s
    /// rendezvous (SPEC §19.1).
    pub(crate) async fn dial(
        socket: &Arc<tether_relay::RelaySocket>,
        relay_key: &[u8; 32],
    ) -> Result<Self, NodeError> {
        let addr = socket.dial(relay_key).await?;
        Ok(Self {
            socket: socket.clone(),
            addr,
        })
    }
}

impl std::fmt::Debug for RelayCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCall").finish_non_exhaustive()
    }
}

impl Drop for RelayCall {
    fn drop(&mut self) {
        self.socket.hang_up(self.addr);
    }
}

impl VehicleLink {
    pub(crate) fn new(session: ClientSession) -> Result<Self, NodeError> {
        let cert = &session.peer().certificate;
        if cert.role != tether_identity::Role::Vehicle {
            session.close(CloseCode::Normal, "not a vehicle");
            return Err(NodeError::UnexpectedPeer("the peer is not a vehicle"));
        }
        let vehicle_key = cert.public_key;
        Ok(Self {
            session: Arc::new(session),
            vehicle_key,
            relay: None,
        })
    }

    /// A weak handle on the session, for the phone to close it when the LAN
    /// goes away.
    pub(crate) fn weak_session(&self) -> std::sync::Weak<ClientSession> {
        Arc::downgrade(&self.session)
    }

    /// Marks the link as running over the relay; `call` lives as long as it.
    pub(crate) fn over_relay(mut self, call: RelayCall) -> Self {
        self.relay = Some(Arc::new(call));
        self
    }

    /// Whether the session runs through the MQTT broker (SPEC §19.11)
    /// rather than directly over the LAN.
    pub fn via_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// Round trips before the first request could be sent (1 cold, 0
    /// resumed in early data, 1 without a TLS ticket), counted by the
    /// session layer (SPEC §5.6, §5.8).
    pub fn round_trips(&self) -> u32 {
        self.session.round_trips()
    }

    /// Whether the session was resumed from a ticket.
    pub fn resumed(&self) -> bool {
        self.session.peer().resumed
    }

    /// The vehicle's public key, as certified by the account.
    pub fn vehicle_key(&self) -> [u8; 32] {
        self.vehicle_key
    }

    pub(crate) fn shared_session(&self) -> Arc<ClientSession> {
        self.session.clone()
    }

    /// The underlying session (for tests and benchmarks).
    #[doc(hidden)]
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// Reads signals; an empty list reads every signal the phone may see.
    pub async fn get(&self, paths: Vec<String>) -> Result<Vec<Reading>, NodeError> {
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let reply = self.session.call(control::get_signals(0, &paths)).await?;
        let values = control::signal_values(&reply)?;
        Ok(values
            .values
            .iter()
            .filter_map(Reading::from_proto)
            .collect())
    }

    /// Subscribes to signals; the first item holds the current values,
    /// later items the changes.
    pub async fn subscribe(&self, paths: Vec<String>) -> Result<Subscription, NodeError> {
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let stream = self.session.request(control::subscribe(0, &paths)).await?;
        Ok(Subscription { stream })
    }

    /// Sends a command with an idempotency key and follows its life cycle to
    /// the end. The receipt is verified against the vehicle's certified key
    /// and this command. A retry with the same key executes nothing and
    /// returns the same receipt (R23; SPEC §8.3).
    pub async fn command(
        &self,
        command: VehicleCommand,
        key: &[u8],
    ) -> Result<CommandOutcome, NodeError> {
        let key = IdempotencyKey::from_bytes(key)
            .ok_or(NodeError::State("idempotency key must be 16 to 32 bytes"))?;
        let mut stream = self
            .session
            .request(control::command(0, &key, 0, command))
            .await?;
        let mut states = Vec::new();
        while let Some(reply) = stream.next().await? {
            let status = control::command_status(&reply)?;
            let state = CommandState::try_from(status.state).unwrap_or(CommandState::Unspecified);
            states.push(state);
            if let Some(receipt) = &status.receipt {
                let body = control::verify_receipt_for(&self.vehicle_key, receipt, &key, &command)?;
                use prost::Message;
                return Ok(CommandOutcome {
                    states,
                    state,
                    reason: CommandReason::try_from(status.reason)
                        .unwrap_or(CommandReason::Unspecified),
                    sequence: body.sequence,
                    receipt: receipt.encode_to_vec(),
                });
            }
        }
        Err(NodeError::UnexpectedResponse(
            "command stream ended without a receipt",
        ))
    }

    /// Closes the session.
    pub fn close(&self) {
        self.session.close(CloseCode::Normal, "bye");
    }
}

/// Signal updates pushed by the vehicle.
#[derive(Debug)]
pub struct Subscription {
    stream: ResponseStream,
}

impl Subscription {
    /// The next batch of values; `None` when the vehicle ended it.
    pub async fn next(&mut self) -> Result<Option<Vec<Reading>>, NodeError> {
        let Some(reply) = self.stream.next().await? else {
            return Ok(None);
        };
        let values = match &reply.body {
            Some(envelope::Body::Response(r)) => match &r.kind {
                Some(response::Kind::Signals(v) | response::Kind::Update(v)) => v,
                _ => return Err(NodeError::UnexpectedResponse("not a signal update")),
            },
            _ => return Err(NodeError::UnexpectedResponse("not a response")),
        };
        Ok(Some(
            values
                .values
                .iter()
                .filter_map(Reading::from_proto)
                .collect(),
        ))
    }

    /// Ends the subscription.
    pub fn cancel(self) {
        self.stream.cancel();
    }
}

/// A fresh random 16-byte idempotency key for [`VehicleLink::command`]. Keep
/// it to retry the same command safely (R23).
pub fn new_idempotency_key() -> Result<[u8; 16], NodeError> {
    crate::config::random_bytes()
}

/// A subscription that follows the car across paths (SPEC §19.11): when its
/// session is lost (the phone left the Wi-Fi, [`crate::Phone::set_lan_available`],
/// or the path died), [`RoamingSubscription::next`] reaches the car again
/// by whichever path is there and subscribes anew, and says how long the
/// values were interrupted.
#[derive(Debug)]
pub struct RoamingSubscription {
    paths: Vec<String>,
    current: Option<(VehicleLink, Subscription, crate::VehicleRoute)>,
    lost_at: Option<std::time::Instant>,
    timeout: std::time::Duration,
    /// The first values after a move, handed out after the `Moved` event.
    pending: Option<Vec<Reading>>,
}

/// What a [`RoamingSubscription`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum RoamEvent {
    /// Values (the first after each subscription, then each change).
    Values(Vec<Reading>),
    /// The subscription moved to another session: the path it runs on now,
    /// and how long no value could arrive (from the loss of the old session
    /// to the first values on the new one), in milliseconds.
    Moved {
        /// The path now.
        route: crate::VehicleRoute,
        /// The interruption.
        gap_ms: u64,
    },
}

impl RoamingSubscription {
    pub(crate) fn new(paths: Vec<String>, timeout: std::time::Duration) -> Self {
        Self {
            paths,
            current: None,
            lost_at: None,
            timeout,
            pending: None,
        }
    }

    /// The path the subscription runs on, once running.
    pub fn route(&self) -> Option<crate::VehicleRoute> {
        self.current.as_ref().map(|(_, _, r)| *r)
    }

    /// The next event. A lost session is followed by a new one on any path
    /// the phone can take (at most the timeout given at the start for each
    /// attempt); the first values after a move come as `Moved`, then as
    /// `Values`.
    pub async fn next(&mut self, phone: &crate::Phone) -> Result<RoamEvent, NodeError> {
        if let Some(first) = self.pending.take() {
            return Ok(RoamEvent::Values(first));
        }
        loop {
            if let Some((_, sub, _)) = self.current.as_mut() {
                match sub.next().await {
                    Ok(Some(values)) => return Ok(RoamEvent::Values(values)),
                    Ok(None) | Err(_) => {
                        self.current = None;
                        self.lost_at = Some(std::time::Instant::now());
                        continue;
                    }
                }
            }
            let (link, route) = phone.reach_vehicle(self.timeout).await?;
            let mut sub = link.subscribe(self.paths.clone()).await?;
            let first = sub.next().await?.ok_or(NodeError::UnexpectedResponse(
                "the subscription ended at once",
            ))?;
            self.current = Some((link, sub, route));
            match self.lost_at.take() {
                Some(lost) => {
                    // The first values are delivered with the next call.
                    self.pending = Some(first);
                    return Ok(RoamEvent::Moved {
                        route,
                        gap_ms: lost.elapsed().as_millis() as u64,
                    });
                }
                None => return Ok(RoamEvent::Values(first)),
            }
        }
    }
}
