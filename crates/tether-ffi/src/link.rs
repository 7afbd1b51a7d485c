//! A phone's session with its vehicle, and signal subscriptions delivered
//! through a foreign callback.

use std::sync::Arc;

use crate::TetherError;
use crate::records::{CommandOutcome, Reading, VehicleAction};
use crate::runtime::{Background, guard, run, runtime};

/// A live, account-bound session with a vehicle. Cheap to share between
/// threads; calls on one link run concurrently (one QUIC stream each).
#[derive(Debug, uniffi::Object)]
pub struct VehicleLink {
    inner: tether_node::VehicleLink,
}

impl VehicleLink {
    pub(crate) fn new(inner: tether_node::VehicleLink) -> Self {
        Self { inner }
    }

    pub(crate) fn node(&self) -> &tether_node::VehicleLink {
        &self.inner
    }
}

#[uniffi::export]
impl VehicleLink {
    /// Round trips before the first request could be sent: 1 cold, 0
    /// resumed in early data (1 without a TLS ticket) (SPEC §5.6, §5.8).
    pub fn round_trips(&self) -> u32 {
        self.inner.round_trips()
    }

    /// Whether the session was resumed from a ticket.
    pub fn resumed(&self) -> bool {
        self.inner.resumed()
    }

    /// Whether the session runs through the MQTT broker (the remote path,
    /// SPEC §19.11) rather than directly over the LAN.
    pub fn via_relay(&self) -> bool {
        self.inner.via_relay()
    }

    /// The vehicle's public key as certified by the account.
    pub fn vehicle_key(&self) -> Vec<u8> {
        self.inner.vehicle_key().to_vec()
    }

    /// Reads signals (VSS paths); an empty list reads every signal this
    /// phone may see.
    pub async fn read(&self, paths: Vec<String>) -> Result<Vec<Reading>, TetherError> {
        let inner = self.inner.clone();
        run(async move {
            inner
                .get(paths)
                .await
                .map(|r| r.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// Subscribes to signals. `listener` first receives the current values,
    /// then every change, on a Tether runtime thread, until the returned
    /// handle is cancelled or destroyed, or the session ends (then
    /// `on_closed` is called once).
    pub async fn subscribe(
        &self,
        paths: Vec<String>,
        listener: Box<dyn SignalListener>,
    ) -> Result<Arc<SignalSubscription>, TetherError> {
        let inner = self.inner.clone();
        let mut subscription = run(async move { inner.subscribe(paths).await }).await?;
        let listener: Arc<dyn SignalListener> = Arc::from(listener);
        let task = runtime()?.spawn(async move {
            let reason = loop {
                match subscription.next().await {
                    Ok(Some(readings)) => {
                        let readings = readings.into_iter().map(Into::into).collect();
                        let l = listener.clone();
                        // A panicking listener ends the subscription, not the runtime.
                        if guard(|| {
                            l.on_signals(readings);
                            Ok(())
                        })
                        .is_err()
                        {
                            break Some("the listener panicked".to_owned());
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(TetherError::from(e).to_string()),
                }
            };
            let _ = guard(|| {
                listener.on_closed(reason);
                Ok(())
            });
        });
        Ok(Arc::new(SignalSubscription {
            task: Background::new(task.abort_handle()),
        }))
    }

    /// Sends a command with an idempotency key (16 to 32 bytes, e.g. from
    /// `new_idempotency_key()`) and follows it to the end. The receipt is
    /// verified against the vehicle's certified key; a retry with the same
    /// key executes nothing and returns the same receipt (R23; SPEC §8.3).
    pub async fn command(
        &self,
        action: VehicleAction,
        idempotency_key: Vec<u8>,
    ) -> Result<CommandOutcome, TetherError> {
        let command = action.to_command()?;
        let inner = self.inner.clone();
        run(async move {
            inner
                .command(command, &idempotency_key)
                .await
                .map(Into::into)
        })
        .await
    }

    /// Closes the session; later calls fail with `TetherError.Session`.
    pub fn close(&self) {
        let _ = guard(|| {
            self.inner.close();
            Ok(())
        });
    }
}

/// Receives a subscription's signal updates. Implemented by the app.
#[uniffi::export(callback_interface)]
pub trait SignalListener: Send + Sync {
    /// A batch of readings: first the current values, then each change.
    fn on_signals(&self, readings: Vec<Reading>);
    /// The subscription ended: `error` is `None` when the vehicle ended it,
    /// or says why (session lost, listener failed). Not called after
    /// `SignalSubscription.cancel()`.
    fn on_closed(&self, error: Option<String>);
}

/// A running subscription. Cancelling it, or destroying the object, stops
/// the updates.
#[derive(Debug, uniffi::Object)]
pub struct SignalSubscription {
    task: Background,
}

#[uniffi::export]
impl SignalSubscription {
    /// Stops the updates; no callback is made afterwards. Idempotent.
    pub fn cancel(&self) {
        self.task.cancel();
    }

    /// Whether updates may still arrive.
    pub fn is_active(&self) -> bool {
        self.task.is_active()
    }
}
