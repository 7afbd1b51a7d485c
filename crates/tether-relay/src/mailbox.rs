//! A mailbox on the broker (SPEC §19.12): one MQTT 5 connection with a
//! **persistent session**, so letters posted while its owner is away are
//! queued by the broker (QoS 1) and delivered when it comes back.
//!
//! Unlike the transport socket (§19.5: clean start, random client id), a
//! mailbox reconnects under the same client id, which the owner derives from
//! its key (it names no one without it), and asks the broker to keep its
//! session for [`RelayConfig`]-independent [`SESSION_EXPIRY_S`]. Letters are
//! acknowledged to the broker only when the caller says it has handled them
//! ([`Mailbox::ack`]), so a crash between delivery and handling gets the
//! letter again: at-least-once delivery, made exactly-once by the receiver.
//! The crate knows no identity: it carries opaque bytes under topic ids.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::{mpsc, oneshot};

use crate::mqtt::{AbortOnDrop, Failover};
use crate::topic::{TopicId, TopicPrefix};
use crate::{RelayConfig, RelayError};

/// How long the broker keeps a mailbox's session (and its queue) after
/// its owner disconnected: 7 days, the longest a letter may wait.
pub const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// How long [`Mailbox::post`] waits for the broker's PUBACK.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest payload a mailbox accepts from the broker.
const MAX_PACKET: u32 = 16 * 1024;

/// A letter delivered to the mailbox; hand it back to [`Mailbox::ack`]
/// once handled.
#[derive(Debug)]
pub struct Delivery {
    /// The topic id it arrived under (one of the mailbox's).
    pub topic: TopicId,
    /// The sealed bytes.
    pub payload: Vec<u8>,
    publish: Publish,
}

type Waiters = Arc<
    Mutex<(
        VecDeque<oneshot::Sender<()>>,
        Vec<(u16, oneshot::Sender<()>)>,
    )>,
>;

/// A persistent MQTT session holding one or more mailboxes.
pub struct Mailbox {
    client: AsyncClient,
    prefix: TopicPrefix,
    /// Posts waiting for their packet id (FIFO), then for their PUBACK.
    waiters: Waiters,
    _task: AbortOnDrop,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Mailbox {
    /// Connects under `client_id` with a persistent session and subscribes
    /// (QoS 1) to `mailboxes` on every CONNACK. Letters come out of the
    /// returned receiver, queued ones first. Waits until the broker has
    /// acknowledged the first subscription.
    pub async fn connect(
        config: &RelayConfig,
        client_id: String,
        mailboxes: Vec<TopicId>,
    ) -> Result<(Self, mpsc::Receiver<Delivery>), RelayError> {
        let failover = Failover::new(config);
        let (host, port) = failover.current();
        let options = mailbox_options(config, &client_id, host, port);
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (tx, rx) = mpsc::channel(256);
        let (first_tx, first_rx) = oneshot::channel();
        let waiters: Waiters = Arc::default();
        let topics: Vec<String> = mailboxes.iter().map(|m| m.topic(&config.prefix)).collect();
        let task = tokio::spawn(drive(
            client.clone(),
            eventloop,
            topics,
            config.prefix.clone(),
            tx,
            waiters.clone(),
            first_tx,
            Failover::new(config),
            (config.clone(), client_id),
        ));
        let mailbox = Self {
            client,
            prefix: config.prefix.clone(),
            waiters,
            _task: AbortOnDrop(task.abort_handle()),
        };
        // Each broker of the list may take the whole connect timeout.
        let wait = config
            .connect_timeout
            .saturating_mul(u32::try_from(config.brokers().len()).unwrap_or(u32::MAX));
        match tokio::time::timeout(wait, first_rx).await {
            Ok(Ok(Ok(()))) => Ok((mailbox, rx)),
            Ok(Ok(Err(e))) => Err(RelayError::Connect(e)),
            Ok(Err(_)) => Err(RelayError::Closed),
            Err(_) => Err(RelayError::Connect("no CONNACK in time".into())),
        }
    }

    /// Posts `payload` to the mailbox `to` (QoS 1, not retained), to be
    /// dropped by the broker after `expiry_s` (MQTT 5 Message Expiry; the
    /// receiver checks the letter's own deadline whatever the broker does).
    /// Returns once the broker acknowledged it.
    pub async fn post(
        &self,
        to: &TopicId,
        payload: Vec<u8>,
        expiry_s: u32,
    ) -> Result<(), RelayError> {
        let (tx, rx) = oneshot::channel();
        // Queued before the publish, so the FIFO order of packet ids holds.
        lock(&self.waiters).0.push_back(tx);
        let properties = PublishProperties {
            message_expiry_interval: Some(expiry_s.max(1)),
            ..PublishProperties::default()
        };
        if self
            .client
            .publish_with_properties(
                to.topic(&self.prefix),
                QoS::AtLeastOnce,
                false,
                payload,
                properties,
            )
            .await
            .is_err()
        {
            lock(&self.waiters).0.pop_back();
            return Err(RelayError::Closed);
        }
        match tokio::time::timeout(POST_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RelayError::Closed),
            Err(_) => Err(RelayError::NotAcknowledged),
        }
    }

    /// Tells the broker a delivered letter was handled: it is not
    /// delivered again.
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), RelayError> {
        self.client
            .ack(&delivery.publish)
            .await
            .map_err(|_| RelayError::Closed)
    }
}

/// The options of a mailbox's connection to `host:port`: always the same
/// client id and a persistent session, whichever node of a cluster it is
/// (SPEC §19.12).
fn mailbox_options(config: &RelayConfig, client_id: &str, host: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_S))
        .set_manual_acks(true)
        .set_max_packet_size(Some(MAX_PACKET))
        .set_connection_timeout(config.connect_timeout.as_secs().max(1));
    if let Some((user, password)) = &config.login {
        options.set_credentials(user.clone(), password.clone());
    }
    crate::mqtt::no_delay(&mut options);
    options
}

#[allow(clippy::too_many_arguments)] // one task's whole state
async fn drive(
    client: AsyncClient,
    mut eventloop: EventLoop,
    topics: Vec<String>,
    prefix: TopicPrefix,
    tx: mpsc::Sender<Delivery>,
    waiters: Waiters,
    first: oneshot::Sender<Result<(), String>>,
    mut failover: Failover,
    (config, client_id): (RelayConfig, String),
) {
    let mut first = Some(first);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failover.connected();
                // Again on every CONNACK: a broker that lost the session
                // (restart without persistence) would drop them silently.
                for t in &topics {
                    let _ = client.try_subscribe(t.clone(), QoS::AtLeastOnce);
                }
                if topics.is_empty()
                    && let Some(f) = first.take()
                {
                    let _ = f.send(Ok(()));
                }
            }
            // `connect` returns once the broker holds the subscriptions, so
            // a letter posted right after is queued for this session.
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Ok(topic) = prefix.parse(&p.topic) else {
                    // Not ours: acknowledge so the broker stops resending.
                    let _ = client.try_ack(&p);
                    continue;
                };
                let delivery = Delivery {
                    topic,
                    payload: p.payload.to_vec(),
                    publish: p,
                };
                if tx.send(delivery).await.is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut w = lock(&waiters);
                if let Some(waiter) = w.0.pop_front() {
                    w.1.push((pkid, waiter));
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let mut w = lock(&waiters);
                if let Some(i) = w.1.iter().position(|(id, _)| *id == ack.pkid) {
                    let (_, waiter) = w.1.swap_remove(i);
                    let _ = waiter.send(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                let next = failover.failed();
                if failover.exhausted()
                    && let Some(f) = first.take()
                {
                    let _ = f.send(Err(e.to_string()));
                    return;
                }
                tracing::debug!(error = %e, "mailbox broker connection lost; reconnecting");
                if let Some((host, port)) = next {
                    tracing::debug!(host, port, "mailbox fails over to the next broker");
                    eventloop.options = mailbox_options(&config, &client_id, &host, port);
                }
                tokio::time::sleep(failover.next_wait()).await;
            }
        }
    }
}
