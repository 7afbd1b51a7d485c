//! Publishing our rotating token.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, IfKind, ServiceInfo};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{Daemon, Interfaces, SERVICE_TYPE, SHUTDOWN_WAIT};
use crate::DiscoveryError;
use crate::token::{
    DiscoveryToken, NONCE_BYTES, PROTOCOL_VERSION, Rotation, RotationOutput, TOKEN_ROTATION,
    txt_properties,
};

/// How an [`Advertiser`] publishes itself.
#[derive(Clone)]
pub struct AdvertiserConfig {
    /// The account's discovery key (derived by the caller from the account
    /// group key); tokens are minted with it.
    pub discovery_key: [u8; 32],
    /// The port our session endpoint listens on, published in the SRV record.
    pub port: u16,
    /// Addresses published in A/AAAA records. Empty means `127.0.0.1` for
    /// [`Interfaces::LoopbackOnly`] and every interface address, kept up to
    /// date by mdns-sd, for [`Interfaces::All`].
    pub addresses: Vec<IpAddr>,
    /// Interfaces to advertise on.
    pub interfaces: Interfaces,
    /// How long each token lives ([`TOKEN_ROTATION`] by default).
    pub rotation: Duration,
    /// Protocol version published as `v=` ([`PROTOCOL_VERSION`] by default).
    pub protocol_version: u32,
}

impl AdvertiserConfig {
    /// Loopback-only advertising of `port` with the default rotation period
    /// and protocol version.
    pub fn new(discovery_key: [u8; 32], port: u16) -> Self {
        Self {
            discovery_key,
            port,
            addresses: Vec::new(),
            interfaces: Interfaces::default(),
            rotation: TOKEN_ROTATION,
            protocol_version: PROTOCOL_VERSION,
        }
    }
}

impl std::fmt::Debug for AdvertiserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvertiserConfig")
            .field("discovery_key", &"<redacted>")
            .field("port", &self.port)
            .field("addresses", &self.addresses)
            .field("interfaces", &self.interfaces)
            .field("rotation", &self.rotation)
            .field("protocol_version", &self.protocol_version)
            .finish()
    }
}

enum Command {
    RotateNow(oneshot::Sender<DiscoveryToken>),
    Shutdown(oneshot::Sender<Result<(), DiscoveryError>>),
}

/// Advertises `_tether._udp.local.` under a rotating token (R2).
///
/// The instance name is the token label, the host name `<label>.local.`, and
/// the TXT record only `v=<version>`: nothing names the device, the account
/// or the car. A background task, driven by [`Rotation`], replaces the token
/// every period and on [`rotate_now`](Self::rotate_now), and also on the
/// address changes and name conflicts the daemon reports.
///
/// Call [`shutdown`](Self::shutdown) to withdraw the advertisement and stop
/// the daemon thread and wait for both. Dropping the advertiser aborts the
/// task, which drops the daemon handle and thereby asks the daemon thread to
/// stop (it sends goodbyes for the registered token on its way out); the
/// thread is not leaked, but nothing waits for it. If the Tokio runtime shuts
/// down first, the task is dropped with the same effect.
pub struct Advertiser {
    commands: mpsc::Sender<Command>,
    token: watch::Receiver<DiscoveryToken>,
    task: Option<JoinHandle<()>>,
}

impl Advertiser {
    /// Starts the daemon, registers the first token and spawns the rotation
    /// task. Must be called inside a Tokio runtime.
    pub fn start(config: AdvertiserConfig) -> Result<Self, DiscoveryError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| DiscoveryError::NoRuntime)?;
        let daemon = Daemon::start(config.interfaces)?;
        // Registered before the first token so that a conflict on it is seen.
        let monitor = daemon
            .handle()
            .monitor()
            .map_err(|e| DiscoveryError::daemon("monitor", e))?;
        let mut task = AdvertiserTask {
            rotation: Rotation::new(config.rotation),
            daemon,
            config,
            rng: SystemRandom::new(),
            registered: None,
        };
        // The first output is always `Rotate`: register now, so that start
        // reports a failure and `current_token` is valid at once.
        let first = match task.rotation.poll_output(Instant::now()) {
            RotationOutput::Rotate => task.rotate()?,
            RotationOutput::Timeout(_) => unreachable!("a new Rotation yields Rotate first"),
        };
        let (token_tx, token_rx) = watch::channel(first);
        let (commands, commands_rx) = mpsc::channel(8);
        let join = runtime.spawn(task.run(commands_rx, monitor, token_tx));
        Ok(Self {
            commands,
            token: token_rx,
            task: Some(join),
        })
    }

    /// The token advertised now.
    pub fn current_token(&self) -> DiscoveryToken {
        self.token.borrow().clone()
    }

    /// Follows the token: the receiver sees each new one as it is handed to
    /// the daemon (periodic rotation, [`rotate_now`](Self::rotate_now),
    /// network changes), so the host can renew what else a rotation must
    /// change (its TLS key, SPEC §4.5).
    pub fn watch_token(&self) -> watch::Receiver<DiscoveryToken> {
        self.token.clone()
    }

    /// Reports a network change: the token is replaced at once. Returns the
    /// new token once it has been handed to the daemon (it is announced
    /// after mDNS probing, about a second later).
    pub async fn rotate_now(&self) -> Result<DiscoveryToken, DiscoveryError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::RotateNow(reply))
            .await
            .map_err(|_| DiscoveryError::Stopped)?;
        answer.await.map_err(|_| DiscoveryError::Stopped)
    }

    /// Withdraws the advertisement (goodbye packets), stops the daemon
    /// thread and waits for both.
    pub async fn shutdown(mut self) -> Result<(), DiscoveryError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        let result = if self.commands.send(Command::Shutdown(reply)).await.is_ok() {
            answer.await.unwrap_or(Err(DiscoveryError::Stopped))
        } else {
            Err(DiscoveryError::Stopped)
        };
        // The task returns right after replying; a join error can only be a
        // panic inside it, which is already reported through `result`.
        let _ = task.await;
        result
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser")
            .field("token", &*self.token.borrow())
            .finish_non_exhaustive()
    }
}

struct AdvertiserTask {
    daemon: Daemon,
    config: AdvertiserConfig,
    rotation: Rotation,
    rng: SystemRandom,
    /// Full service name of the registered token, if any.
    registered: Option<String>,
}

impl AdvertiserTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        monitor: mdns_sd::Receiver<DaemonEvent>,
        token_tx: watch::Sender<DiscoveryToken>,
    ) {
        let mut monitor = Some(monitor);
        loop {
            let deadline = self.drain(&token_tx);
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.rotation.handle_timeout(Instant::now());
                }
                command = commands.recv() => match command {
                    Some(Command::RotateNow(reply)) => {
                        self.rotation.handle_network_change();
                        let _ = self.drain(&token_tx);
                        let _ = reply.send(token_tx.borrow().clone());
                    }
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(self.stop().await);
                        return;
                    }
                    None => {
                        // Unreachable while `Advertiser` lives (its drop
                        // aborts us); stop cleanly anyway.
                        let _ = self.stop().await;
                        return;
                    }
                },
                event = next_event(&monitor) => match event {
                    Some(event) => self.handle_daemon_event(event),
                    None => monitor = None,
                },
            }
        }
    }

    /// Drains the rotation core until it asks to wait.
    fn drain(&mut self, token_tx: &watch::Sender<DiscoveryToken>) -> Instant {
        loop {
            match self.rotation.poll_output(Instant::now()) {
                RotationOutput::Rotate => match self.rotate() {
                    Ok(token) => {
                        tracing::debug!(token = %token, "discovery token rotated");
                        token_tx.send_replace(token);
                    }
                    // Keep going: the next period retries. The old token was
                    // withdrawn only if the new one was ready to register.
                    Err(error) => tracing::warn!(%error, "discovery token rotation failed"),
                },
                RotationOutput::Timeout(deadline) => return deadline,
            }
        }
    }

    fn handle_daemon_event(&mut self, event: DaemonEvent) {
        match event {
            // A new or lost address is a network change: do not carry the
            // token over to the new network (R2).
            DaemonEvent::IpAdd(_) | DaemonEvent::IpDel(_) => self.rotation.handle_network_change(),
            // The daemon renamed our instance to `<label> (2)` after a
            // conflict; that name is no longer a token, so mint a new one.
            DaemonEvent::NameChange(_) => self.rotation.handle_network_change(),
            DaemonEvent::Error(error) => tracing::warn!(%error, "mDNS daemon error"),
            _ => {}
        }
    }

    /// Mints a token with a fresh nonce, withdraws the old one and registers
    /// the new one.
    fn rotate(&mut self) -> Result<DiscoveryToken, DiscoveryError> {
        let mut nonce = [0u8; NONCE_BYTES];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| DiscoveryError::Random)?;
        let token = DiscoveryToken::mint(&self.config.discovery_key, nonce);
        let info = self.service_info(&token)?;
        let fullname = info.get_fullname().to_owned();

        // Withdraw first, so that at most one token is ever live. The gap
        // (about a second of probing) is harmless every fifteen minutes.
        if let Some(old) = self.registered.take() {
            // The status only says whether it was registered; goodbyes are
            // sent by the daemon either way.
            if let Err(error) = self.daemon.handle().unregister(&old) {
                tracing::warn!(%error, "withdrawing the old discovery token failed");
            }
        }
        self.daemon
            .handle()
            .register(info)
            .map_err(|e| DiscoveryError::daemon("register", e))?;
        self.registered = Some(fullname);
        Ok(token)
    }

    fn service_info(&self, token: &DiscoveryToken) -> Result<ServiceInfo, DiscoveryError> {
        let label = token.label();
        let host = format!("{label}.local.");
        let txt = txt_properties(self.config.protocol_version);
        let mut addresses = self.config.addresses.clone();
        let auto = addresses.is_empty() && self.config.interfaces == Interfaces::All;
        if addresses.is_empty() && self.config.interfaces == Interfaces::LoopbackOnly {
            addresses.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let mut info = ServiceInfo::new(
            SERVICE_TYPE,
            label,
            &host,
            &addresses[..],
            self.config.port,
            &txt[..],
        )
        .map_err(|e| DiscoveryError::daemon("build the service record", e))?;
        if auto {
            info = info.enable_addr_auto();
        }
        if self.config.interfaces == Interfaces::LoopbackOnly {
            // Belt and braces: the daemon has only loopback enabled anyway.
            info.set_interfaces(vec![IfKind::LoopbackV4]);
        }
        Ok(info)
    }

    /// Withdraws the token and stops the daemon.
    async fn stop(&mut self) -> Result<(), DiscoveryError> {
        if let Some(old) = self.registered.take() {
            match self.daemon.handle().unregister(&old) {
                Ok(status) => {
                    // Wait until the goodbye has been sent, bounded.
                    let _ = tokio::time::timeout(SHUTDOWN_WAIT, status.recv_async()).await;
                }
                Err(error) => tracing::warn!(%error, "withdrawing the discovery token failed"),
            }
        }
        self.daemon.shutdown().await
    }
}

/// The next daemon event, or `None` once the monitor channel has closed;
/// with no monitor left, never completes.
async fn next_event(monitor: &Option<mdns_sd::Receiver<DaemonEvent>>) -> Option<DaemonEvent> {
    match monitor {
        Some(monitor) => monitor.recv_async().await.ok(),
        None => std::future::pending().await,
    }
}
