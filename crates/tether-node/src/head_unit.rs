//! The head unit: enrolls in the owner's account, advertises a rotating
//! token over mDNS and serves the vehicle over account-bound sessions.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tether_control::{Config as ControlConfig, Executions, SimulatedVehicle, VehicleService};
use tether_discovery::{Advertiser, AdvertiserConfig, TOKEN_ROTATION};
use tether_identity::{Credentials, DeviceKey, EnrollmentGrant, EnrollmentRequest, Role};
use tether_session::quic::{Listener, ListenerCloser, ListenerStats, StatsHandle};
use tether_store::Store;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::NodeError;
use crate::config::{NodeConfig, random_bytes, unix_now};
use crate::receipt_log::{COMMAND_LOG_KEEP, StoreReceiptLog};
use crate::serve::{ServiceInput, run_service, serve_session};

struct Running {
    address: SocketAddr,
    advertiser: Advertiser,
    stats: StatsHandle,
    closer: ListenerCloser,
    service: mpsc::UnboundedSender<ServiceInput>,
    accept_task: tokio::task::JoinHandle<()>,
    service_task: tokio::task::JoinHandle<()>,
}

/// A car's head unit. Create with [`HeadUnit::open`], enroll once, then
/// [`HeadUnit::start`].
pub struct HeadUnit {
    config: NodeConfig,
    store: Arc<Mutex<Store>>,
    key_pkcs8: Vec<u8>,
    credentials: Mutex<Option<Arc<Credentials>>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl std::fmt::Debug for HeadUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadUnit").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HeadUnit {
    /// Opens (or creates) the head unit's state. A device key is generated
    /// on first use and never leaves this node.
    pub fn open(config: NodeConfig) -> Result<Self, NodeError> {
        let mut store = config.open_store()?;
        let credentials = store.load_identity()?.map(Arc::new);
        let key = match store.load_device_key()? {
            Some(key) => key,
            None => {
                let key = DeviceKey::generate()?;
                store.save_device_key(&key)?;
                key
            }
        };
        Ok(Self {
            config,
            store: Arc::new(Mutex::new(store)),
            key_pkcs8: key.pkcs8().to_vec(),
            credentials: Mutex::new(credentials),
            running: tokio::sync::Mutex::new(None),
        })
    }

    /// The identifiers kept in this node's local store (R2).
    pub fn local_identifiers(&self) -> Result<crate::LocalIdentifiers, NodeError> {
        crate::config::LocalIdentifiers::load(&lock(&self.store))
    }

    /// Whether the head unit holds a certificate.
    pub fn is_enrolled(&self) -> bool {
        lock(&self.credentials).is_some()
    }

    /// The request to hand to the account authority over a trusted channel
    /// (in local mode, the owner's phone).
    pub fn enrollment_request(&self) -> Result<EnrollmentRequest, NodeError> {
        let key = DeviceKey::from_pkcs8(&self.key_pkcs8)?;
        Ok(key.enrollment_request(Role::Vehicle, random_bytes()?))
    }

    /// Accepts the authority's grant, checks it and stores it.
    pub fn complete_enrollment(&self, grant: &EnrollmentGrant) -> Result<(), NodeError> {
        let key = DeviceKey::from_pkcs8(&self.key_pkcs8)?;
        let credentials = Credentials::from_grant(key, grant, unix_now())?;
        if credentials.role() != Role::Vehicle {
            return Err(NodeError::UnexpectedPeer("grant is not for a vehicle"));
        }
        lock(&self.store).save_identity(&credentials)?;
        *lock(&self.credentials) = Some(Arc::new(credentials));
        Ok(())
    }

    /// The vehicle's public key (receipts verify against it).
    pub fn public_key(&self) -> Result<[u8; 32], NodeError> {
        Ok(DeviceKey::from_pkcs8(&self.key_pkcs8)?.public_key())
    }

    /// Binds the session endpoint, starts advertising and serving. Must be
    /// called inside a tokio runtime.
    pub async fn start(&self) -> Result<SocketAddr, NodeError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(NodeError::State("already started"));
        }
        let credentials = lock(&self.credentials)
            .clone()
            .ok_or(NodeError::NotEnrolled)?;
        let group = credentials.group_key().ok_or(NodeError::NotEnrolled)?;
        let discovery_key = group.discovery_key();
        let mut listener = Listener::bind(
            SocketAddr::new(self.config.bind_ip, self.config.port),
            credentials.clone(),
            self.config.session.clone(),
        )?;
        let address = listener.local_addr()?;
        let stats = listener.stats_handle();
        let closer = listener.closer();
        let advertiser = Advertiser::start(AdvertiserConfig {
            discovery_key,
            port: address.port(),
            // An unspecified bind address (all interfaces) lets mdns-sd
            // advertise each interface's own address.
            addresses: if address.ip().is_unspecified() {
                Vec::new()
            } else {
                vec![address.ip()]
            },
            interfaces: self.config.interfaces,
            rotation: TOKEN_ROTATION,
            protocol_version: tether_session::PROTOCOL_VERSION,
        })?;
        let service = VehicleService::new(
            ControlConfig::default(),
            DeviceKey::from_pkcs8(&self.key_pkcs8)?,
            SimulatedVehicle::new(),
            {
                lock(&self.store).prune_command_log(COMMAND_LOG_KEEP)?;
                StoreReceiptLog(self.store.clone())
            },
        )
        .map_err(|_| NodeError::State("receipt log unavailable"))?;
        let (service_tx, service_rx) = mpsc::unbounded_channel();
        let service_task = tokio::spawn(run_service(service, service_rx));
        let stream_ids = Arc::new(AtomicU64::new(1));
        let tx = service_tx.clone();
        let accept_task = tokio::spawn(async move {
            while let Some(session) = listener.accept().await {
                info!(role = %session.peer().certificate.role, resumed = session.peer().resumed, "session authenticated");
                tokio::spawn(serve_session(session, tx.clone(), stream_ids.clone()));
            }
        });
        *running = Some(Running {
            address,
            advertiser,
            stats,
            closer,
            service: service_tx,
            accept_task,
            service_task,
        });
        Ok(address)
    }

    /// The session endpoint's address, once started.
    pub async fn address(&self) -> Option<SocketAddr> {
        self.running.lock().await.as_ref().map(|r| r.address)
    }

    /// The discovery token now advertised (a random-looking label).
    pub async fn current_token(&self) -> Option<String> {
        self.running
            .lock()
            .await
            .as_ref()
            .map(|r| r.advertiser.current_token().label().to_owned())
    }

    /// Rotates the discovery token now (call on a network change).
    pub async fn rotate_token(&self) -> Result<String, NodeError> {
        let running = self.running.lock().await;
        let r = running.as_ref().ok_or(NodeError::State("not started"))?;
        Ok(r.advertiser.rotate_now().await?.label().to_owned())
    }

    /// Listener counters (authenticated, refused, evicted...).
    pub async fn listener_stats(&self) -> Option<ListenerStats> {
        self.running.lock().await.as_ref().map(|r| r.stats.get())
    }

    /// How many times the (simulated) car executed each command.
    pub async fn executions(&self) -> Result<Executions, NodeError> {
        let (tx, rx) = oneshot::channel();
        {
            let running = self.running.lock().await;
            let r = running.as_ref().ok_or(NodeError::State("not started"))?;
            r.service
                .send(ServiceInput::Executions(tx))
                .map_err(|_| NodeError::ServiceStopped)?;
        }
        rx.await.map_err(|_| NodeError::ServiceStopped)
    }

    /// Stops advertising (withdrawing the token) and closes every session.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let Some(r) = self.running.lock().await.take() else {
            return Ok(());
        };
        let result = r.advertiser.shutdown().await;
        r.closer.close();
        r.accept_task.abort();
        r.service_task.abort();
        result?;
        Ok(())
    }
}
