//! Commissioning through the bindings (SPEC §12.8): the head unit reads a
//! device's setup code, finds it over Bluetooth LE, pairs, binds it with
//! the owner phone's authority and hands it the home Wi-Fi, with progress
//! delivered to an app callback. `SimulatedAccessory` is a device on a
//! simulated air, for apps' tests and the Python example.

use std::sync::Arc;

use crate::runtime::{guard, run};
use crate::{HeadUnit, Phone, TetherError};

/// A stage of commissioning (`tether_node::CommissionProgress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CommissionStage {
    /// Scanning for the code's device.
    Scanning,
    /// Its advert was heard, with its signal strength in dBm if known.
    Found {
        /// dBm.
        rssi: Option<i16>,
    },
    /// SPAKE2 request sent.
    PairingStarted,
    /// The passcode was right: both confirmations verified.
    Paired,
    /// The device holds its certificate (no group key).
    Bound,
    /// The sealed Wi-Fi credentials were sent.
    CredentialsSent,
    /// The link dropped; reconnecting (the `retry`th time).
    Reconnecting {
        /// 1 for the first.
        retry: u32,
    },
    /// The device asks to wait this long before pairing again (R6).
    Waiting {
        /// Seconds.
        seconds: u32,
    },
    /// The binding is kept by the head unit.
    Saved,
}

impl From<tether_node::CommissionProgress> for CommissionStage {
    fn from(p: tether_node::CommissionProgress) -> Self {
        use tether_node::CommissionProgress as P;
        match p {
            P::Scanning => Self::Scanning,
            P::Found { rssi } => Self::Found { rssi },
            P::PairingStarted => Self::PairingStarted,
            P::Paired => Self::Paired,
            P::Bound => Self::Bound,
            P::CredentialsSent => Self::CredentialsSent,
            P::Reconnecting { retry } => Self::Reconnecting { retry },
            P::Waiting { seconds } => Self::Waiting { seconds },
            // Non-exhaustive upstream: a later stage reads as the last one.
            _ => Self::Saved,
        }
    }
}

/// The home network a commissioned device joins (WPA2-Personal).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HomeNetwork {
    /// The SSID.
    pub ssid: Vec<u8>,
    /// The passphrase.
    pub passphrase: Vec<u8>,
}

impl From<HomeNetwork> for tether_node::HomeNetwork {
    fn from(n: HomeNetwork) -> Self {
        Self {
            ssid: n.ssid,
            passphrase: n.passphrase,
        }
    }
}

/// Hears commissioning's progress. Implemented by the app; called on a
/// Tether runtime thread.
#[uniffi::export(callback_interface)]
pub trait CommissionListener: Send + Sync {
    /// A stage was reached.
    fn on_stage(&self, stage: CommissionStage);
}

/// What commissioning did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CommissionResult {
    /// The device's public key (32 bytes).
    pub device_key: Vec<u8>,
    /// Its certificate's serial.
    pub serial: u64,
    /// Its product model.
    pub product_model: u16,
    /// The device's network report: `JOINED` (kept by the head unit),
    /// `WRONG_PASSPHRASE`, `NETWORK_NOT_FOUND`, `TIMEOUT` or `INVALID`
    /// (not kept: commission again with the right network).
    pub outcome: String,
    /// Links reconnected after a drop.
    pub reconnections: u32,
}

impl From<tether_node::CommissionReport> for CommissionResult {
    fn from(r: tether_node::CommissionReport) -> Self {
        use tether_node::NetworkOutcome as N;
        Self {
            device_key: r.device_key.to_vec(),
            serial: r.serial,
            product_model: r.product_model,
            outcome: match r.outcome {
                N::Joined => "JOINED",
                N::WrongPassphrase => "WRONG_PASSPHRASE",
                N::NetworkNotFound => "NETWORK_NOT_FOUND",
                N::Timeout => "TIMEOUT",
                _ => "INVALID",
            }
            .into(),
            reconnections: r.reconnections,
        }
    }
}

/// A smart device powered on unprovisioned on a simulated Bluetooth air
/// (`tether_node::SimulatedAccessory`).
#[derive(Debug, uniffi::Object)]
pub struct SimulatedAccessory {
    inner: Arc<tether_node::SimulatedAccessory>,
}

#[uniffi::export]
impl SimulatedAccessory {
    /// A device of `product_model` that can join `network`.
    #[uniffi::constructor]
    pub fn power_on(product_model: u16, network: HomeNetwork) -> Result<Arc<Self>, TetherError> {
        guard(|| {
            Ok(Arc::new(Self {
                inner: Arc::new(tether_node::SimulatedAccessory::power_on(
                    product_model,
                    &[network.into()],
                    0.0,
                )?),
            }))
        })
    }

    /// Its setup code as a QR string.
    pub fn setup_qr(&self) -> Result<String, TetherError> {
        guard(|| Ok(self.inner.setup_qr()?))
    }

    /// Its 11-digit manual code.
    pub fn manual_code(&self) -> Result<String, TetherError> {
        guard(|| Ok(self.inner.manual_code()?))
    }

    /// Whether it joined the network `ssid`.
    pub fn joined(&self, ssid: Vec<u8>) -> bool {
        self.inner.joined(&ssid)
    }
}

fn request(
    setup_code: &str,
    name: String,
    network: HomeNetwork,
) -> Result<tether_node::CommissionRequest, TetherError> {
    Ok(tether_node::CommissionRequest::new(
        tether_node::SetupCode::parse(setup_code)?,
        name,
        network.into(),
    ))
}

fn hear(
    listener: Option<Arc<dyn CommissionListener>>,
) -> impl FnMut(tether_node::CommissionProgress) + Send {
    move |p| {
        if let Some(l) = &listener {
            // A panicking listener loses its calls, not the commissioning.
            let _ = guard(|| {
                l.on_stage(p.into());
                Ok(())
            });
        }
    }
}

/// One commissioning on `central`, certified by `owner`'s authority.
async fn commission_on<C: tether_node::Central>(
    car: &tether_node::HeadUnit,
    owner: &tether_node::Phone,
    central: &C,
    request: &tether_node::CommissionRequest,
    listener: Option<Arc<dyn CommissionListener>>,
) -> Result<CommissionResult, TetherError> {
    let mut authority = owner.authority()?;
    Ok(car
        .commission(central, &mut authority, request, hear(listener))
        .await?
        .into())
}

#[uniffi::export]
impl HeadUnit {
    /// Commissions the device of `setup_code` (QR string or manual code)
    /// on `accessory`'s simulated air, certified by `owner`'s account
    /// authority, joining it to `network`; keeps the binding when it joined.
    /// A wrong passcode or the device's backoff is `TetherError.Commission`
    /// with `wrong_passcode` / `retry_after_s`.
    pub async fn commission_simulated(
        &self,
        accessory: Arc<SimulatedAccessory>,
        owner: Arc<Phone>,
        setup_code: String,
        name: String,
        network: HomeNetwork,
        listener: Option<Box<dyn CommissionListener>>,
    ) -> Result<CommissionResult, TetherError> {
        let request = request(&setup_code, name, network)?;
        let listener: Option<Arc<dyn CommissionListener>> = listener.map(Arc::from);
        let car = self.node();
        let owner = owner.node();
        let accessory = accessory.inner.clone();
        run(async move {
            commission_on(&car, &owner, &accessory.central(), &request, listener).await
        })
        .await
    }

    /// As `commission_simulated`, over the machine's Bluetooth adapter
    /// (BlueZ): `TetherError.Commission` at once when there is none.
    pub async fn commission_bluetooth(
        &self,
        owner: Arc<Phone>,
        setup_code: String,
        name: String,
        network: HomeNetwork,
        listener: Option<Box<dyn CommissionListener>>,
    ) -> Result<CommissionResult, TetherError> {
        let request = request(&setup_code, name, network)?;
        let listener: Option<Arc<dyn CommissionListener>> = listener.map(Arc::from);
        let car = self.node();
        let owner = owner.node();
        run(async move {
            let central =
                tether_node::BluezCentral::new()
                    .await
                    .map_err(|e| TetherError::Commission {
                        detail: e.to_string(),
                        wrong_passcode: false,
                        retry_after_s: None,
                    })?;
            commission_on(&car, &owner, &central, &request, listener).await
        })
        .await
    }
}
