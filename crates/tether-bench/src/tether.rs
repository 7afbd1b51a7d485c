//! The side under test: Tether sessions between a phone and a head unit of
//! one account, and a head unit that answers vehicle Gets from a real
//! [`VehicleService`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tether_control::{
    MemoryReceiptLog, Output, PeerInfo, SimulatedVehicle, StreamId, VehicleService, client, signals,
};
use tether_identity::{AccountAuthority, Credentials, DeviceKey, GroupKey, LocalAuthority, Role};
use tether_proto::v1::Envelope;
use tether_session::quic::{ClientSession, Connector, Listener, ServerSession};
use tokio::time::Instant;

use crate::error::BenchError;

/// Every socket of the benchmark binds here.
pub(crate) const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The signal the small command reads: one boolean, as a lock screen would.
pub(crate) const SMALL_COMMAND_SIGNAL: &str = signals::DOOR_ROW1_DRIVER_IS_LOCKED;

/// What the Tether side of the round-trip measurements sends.
pub(crate) const SMALL_COMMAND: &str =
    "GetSignals(Vehicle.Cabin.Door.Row1.DriverSide.IsLocked) to a VehicleService";

/// The two members of one account.
pub(crate) struct Account {
    pub(crate) car: Arc<Credentials>,
    pub(crate) phone: Arc<Credentials>,
    /// The account's discovery key (from its group key).
    pub(crate) discovery_key: [u8; 32],
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Account {
    /// A fresh account with an enrolled car and phone.
    pub(crate) fn generate() -> Result<Self, BenchError> {
        let mut authority =
            LocalAuthority::generate().map_err(|e| BenchError::setup("account authority", e))?;
        let car = member(&mut authority, Role::Vehicle)?;
        let phone = member(&mut authority, Role::Phone)?;
        let discovery_key = phone
            .group_key()
            .ok_or(BenchError::Unexpected("a phone holds the group key"))?
            .discovery_key();
        Ok(Self {
            car,
            phone,
            discovery_key,
        })
    }
}

fn member(authority: &mut LocalAuthority, role: Role) -> Result<Arc<Credentials>, BenchError> {
    let now = unix_now();
    let key = DeviceKey::generate().map_err(|e| BenchError::setup("device key", e))?;
    // The authority checks the proof of possession; a fixed enrollment nonce
    // is enough for a throwaway account.
    let grant = authority
        .enroll(&key.enrollment_request(role, [0x42; 16]), now)
        .map_err(|e| BenchError::setup("enrollment", e))?;
    let credentials =
        Credentials::from_grant(key, &grant, now).map_err(|e| BenchError::setup("grant", e))?;
    Ok(Arc::new(credentials))
}

/// Discovery keys of other accounts, for a resolver holding several.
pub(crate) fn other_discovery_key() -> Result<[u8; 32], BenchError> {
    Ok(GroupKey::generate()
        .map_err(|e| BenchError::setup("group key", e))?
        .discovery_key())
}

/// Connects once and waits until the server side has authenticated the
/// session too. Returns the time taken and both ends.
pub(crate) async fn handshake(
    connector: &Connector,
    listener: &mut Listener,
    addr: SocketAddr,
) -> Result<(Duration, ClientSession, ServerSession), BenchError> {
    let start = Instant::now();
    let (client, server) = tokio::try_join!(
        async { connector.connect(addr).await.map_err(BenchError::from) },
        async {
            listener
                .accept()
                .await
                .ok_or(BenchError::Unexpected("listener closed"))
        },
    )?;
    Ok((start.elapsed(), client, server))
}

/// Waits until `connector` holds a resumption ticket for `addr` (it arrives
/// in the background after `connect` has returned).
pub(crate) async fn ticket_arrived(
    connector: &Connector,
    addr: SocketAddr,
) -> Result<(), BenchError> {
    let give_up = Instant::now() + Duration::from_secs(5);
    while !connector.has_ticket(addr) {
        if Instant::now() > give_up {
            return Err(BenchError::Timeout("a resumption ticket"));
        }
        tokio::task::yield_now().await;
    }
    Ok(())
}

type Service = VehicleService<SimulatedVehicle, MemoryReceiptLog>;

/// Serves every session `listener` accepts with one [`VehicleService`],
/// answering each request inline in the session's task.
pub(crate) async fn serve_vehicle(mut listener: Listener, car_key: DeviceKey) {
    let Ok(service) = VehicleService::new(
        tether_control::Config::default(),
        car_key,
        SimulatedVehicle::new(),
        MemoryReceiptLog::new(),
    ) else {
        return;
    };
    let service = Arc::new(std::sync::Mutex::new(service));
    let start = Instant::now();
    while let Some(session) = listener.accept().await {
        tokio::spawn(serve_session(session, service.clone(), start));
    }
}

async fn serve_session(
    mut session: ServerSession,
    service: Arc<std::sync::Mutex<Service>>,
    start: Instant,
) {
    let peer = PeerInfo::new(session.peer().certificate.role);
    let mut next_stream = 0u64;
    while let Some(request) = session.next_request().await {
        next_stream += 1;
        let stream = StreamId(next_stream);
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let responses = {
            let mut service = service.lock().unwrap_or_else(|p| p.into_inner());
            service.handle_request(stream, peer, &request.envelope, now_ms);
            let mut responses = Vec::with_capacity(1);
            // Gets are answered at once; nothing else is in flight here.
            while let Output::Transmit(t) = service.poll_output() {
                if t.stream == stream {
                    responses.push(t.envelope);
                }
            }
            service.handle_stream_closed(stream);
            responses
        };
        let mut responder = request.responder;
        for response in &responses {
            if responder.send(response).await.is_err() {
                break;
            }
        }
        responder.finish();
    }
}

/// The small command's request.
pub(crate) fn small_command() -> Envelope {
    client::get_signals(0, &[SMALL_COMMAND_SIGNAL])
}

/// One small command on an established session, its answer checked.
pub(crate) async fn call(session: &ClientSession) -> Result<(), BenchError> {
    let response = session.call(small_command()).await?;
    match client::signal_values(&response) {
        Ok(values) if values.values.len() == 1 => Ok(()),
        _ => Err(BenchError::Unexpected("the Get did not return one signal")),
    }
}

/// Encoded sizes of the small command's request and response envelopes
/// (each frame adds a 4-byte length).
pub(crate) fn small_command_sizes() -> Result<(usize, usize), BenchError> {
    let key = DeviceKey::generate().map_err(|e| BenchError::setup("device key", e))?;
    let mut service = VehicleService::new(
        tether_control::Config::default(),
        key,
        SimulatedVehicle::new(),
        MemoryReceiptLog::new(),
    )
    .map_err(|e| BenchError::setup("vehicle service", e))?;
    let mut request = small_command();
    request.request_id = 1;
    service.handle_request(StreamId(1), PeerInfo::new(Role::Phone), &request, 0);
    let Output::Transmit(response) = service.poll_output() else {
        return Err(BenchError::Unexpected("the Get was not answered"));
    };
    Ok((request.encoded_len(), response.envelope.encoded_len()))
}
