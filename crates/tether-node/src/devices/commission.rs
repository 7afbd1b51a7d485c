//! Commissioning a smart device over Bluetooth LE (SPEC §12, §13), owned by
//! the node: read the setup code, scan for the device's unprovisioned
//! advert, pair (SPAKE2), bind it to the account (a certificate, no group
//! key), hand it the home Wi-Fi sealed, reconnect a dropped link, and keep
//! the binding so the car finds it on the LAN afterwards.
//!
//! The radio is a [`Central`]: the simulated air of [`SimulatedAccessory`]
//! (tests, the demo) or the btleplug backend [`BluezCentral`] on a machine
//! with an adapter. Progress is reported as [`CommissionProgress`] events
//! as each stage is reached.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tether_ble::advert::{Advert, FLAG_PAIRING_OPEN};
use tether_ble::commission::{
    CommissionError, CommissionPlan, CommissionStage, CommissionTimeouts, commission_peripheral,
};
use tether_ble::sim::{SimAir, SimConfig, SimPeripheral};
use tether_ble::sim_device::{SharedLog, SimCommissionee};
use tether_identity::AccountAuthority;
use tether_pairing::pake::PairingError;
use tether_pairing::provision::{Credentials as WifiCredentials, Network, Outcome, Security};
use tether_pairing::setup::{
    FLAG_BLE, ManualCode, SetupPayload, parse_manual_code, random_passcode,
};

#[cfg(feature = "bluetooth")]
pub use tether_ble::bluez::BluezCentral;
pub use tether_ble::radio::{Central, RadioError};
pub use tether_ble::sim::{SimCentral, SimStats};

use crate::NodeError;
use crate::devices::api::CommissionedDevice;

/// How long [`CommissionRequest::new`] scans for the device by default.
pub const DEFAULT_SCAN_WINDOW: Duration = Duration::from_millis(500);

/// The home network a commissioned device joins (WPA2-Personal). Sealed
/// end to end to the device under the pairing key; never stored by the
/// node (R6).
#[derive(Clone, PartialEq, Eq)]
pub struct HomeNetwork {
    /// The SSID.
    pub ssid: Vec<u8>,
    /// The passphrase.
    pub passphrase: Vec<u8>,
}

impl std::fmt::Debug for HomeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeNetwork").finish_non_exhaustive()
    }
}

impl HomeNetwork {
    fn wifi(&self) -> WifiCredentials {
        WifiCredentials {
            ssid: self.ssid.clone(),
            passphrase: self.passphrase.clone(),
            security: Security::Wpa2Personal,
            network: Network::Home,
        }
    }
}

/// A device's setup code as the user presents it: the QR string
/// (`TT:...`) or the 11-digit manual code (SPEC §12.1).
#[derive(Clone, PartialEq, Eq)]
pub struct SetupCode(Code);

#[derive(Clone, PartialEq, Eq)]
enum Code {
    Qr(SetupPayload),
    Manual(ManualCode),
}

impl std::fmt::Debug for SetupCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The passcode is a secret until the device is bound.
        f.write_str(match self.0 {
            Code::Qr(_) => "SetupCode(qr)",
            Code::Manual(_) => "SetupCode(manual)",
        })
    }
}

impl SetupCode {
    /// Reads a QR string or a manual code (spaces and dashes ignored);
    /// [`NodeError::SetupCode`] says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, NodeError> {
        let text = text.trim();
        if text.starts_with("TT:") {
            return SetupPayload::from_qr_string(text)
                .map(|p| Self(Code::Qr(p)))
                .map_err(|e| NodeError::SetupCode(e.to_string()));
        }
        parse_manual_code(text)
            .map(|m| Self(Code::Manual(m)))
            .map_err(|e| NodeError::SetupCode(e.to_string()))
    }

    /// Whether it is the manual code (which names only 4 bits of the
    /// device's discriminator).
    pub fn is_manual(&self) -> bool {
        matches!(self.0, Code::Manual(_))
    }

    fn passcode(&self) -> u32 {
        match &self.0 {
            Code::Qr(p) => p.passcode,
            Code::Manual(m) => m.passcode,
        }
    }

    /// The same code with a passcode one off, as a user who mistyped it
    /// would enter: for demonstrations of the device's refusal and backoff
    /// (R6).
    pub fn mistyped(&self) -> Self {
        let wrong = match self.passcode() {
            1 => 2,
            p => p - 1,
        };
        Self(match &self.0 {
            Code::Qr(p) => Code::Qr(SetupPayload {
                passcode: wrong,
                ..*p
            }),
            Code::Manual(m) => Code::Manual(ManualCode {
                passcode: wrong,
                ..*m
            }),
        })
    }

    /// Whether an unprovisioned advert may be this code's device: the QR
    /// holds the whole 12-bit discriminator and the product model, the
    /// manual code the discriminator's top 4 bits (SPEC §12.1).
    fn matches(&self, advert: &Advert) -> bool {
        let Advert::Unprovisioned {
            product_model,
            discriminator,
            ..
        } = *advert
        else {
            return false;
        };
        match &self.0 {
            Code::Qr(p) => p.discriminator == discriminator && p.product_model == product_model,
            Code::Manual(m) => u16::from(m.short_discriminator) == discriminator >> 8,
        }
    }
}

/// What to commission.
#[derive(Debug, Clone)]
pub struct CommissionRequest {
    /// The device's setup code.
    pub code: SetupCode,
    /// The name to list it under.
    pub name: String,
    /// The network it joins.
    pub network: HomeNetwork,
    /// How long to scan for it.
    pub scan_window: Duration,
}

impl CommissionRequest {
    /// A request with the default scan window.
    pub fn new(code: SetupCode, name: impl Into<String>, network: HomeNetwork) -> Self {
        Self {
            code,
            name: name.into(),
            network,
            scan_window: DEFAULT_SCAN_WINDOW,
        }
    }
}

/// A stage of commissioning, reported as it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommissionProgress {
    /// Scanning for the code's device.
    Scanning,
    /// Its unprovisioned advert was heard.
    Found {
        /// Signal strength, dBm, if the radio reports it.
        rssi: Option<i16>,
    },
    /// SPAKE2 request sent.
    PairingStarted,
    /// Both SPAKE2 confirmations verified: the passcode was right.
    Paired,
    /// The device holds its certificate (no group key).
    Bound,
    /// The sealed Wi-Fi credentials were sent.
    CredentialsSent,
    /// The link dropped; reconnecting (the `retry`th time).
    Reconnecting {
        /// 1 for the first reconnection.
        retry: u32,
    },
    /// The device asked to wait this long before pairing again (R6).
    Waiting {
        /// Seconds.
        seconds: u32,
    },
    /// The binding is stored on the head unit: the car looks for the
    /// device on the LAN from now on.
    Saved,
}

impl From<CommissionStage> for CommissionProgress {
    fn from(stage: CommissionStage) -> Self {
        match stage {
            CommissionStage::PairingStarted => Self::PairingStarted,
            CommissionStage::Paired => Self::Paired,
            CommissionStage::Bound => Self::Bound,
            CommissionStage::CredentialsSent => Self::CredentialsSent,
            CommissionStage::Reconnecting { retry } => Self::Reconnecting { retry },
            CommissionStage::Waiting { seconds } => Self::Waiting { seconds },
        }
    }
}

/// What the device reported about the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkOutcome {
    /// Joined: it is on the LAN and will be found over mDNS.
    Joined,
    /// The access point refused the passphrase.
    WrongPassphrase,
    /// No access point with that SSID was found.
    NetworkNotFound,
    /// Joining did not finish in time.
    Timeout,
    /// The credentials could not be used.
    Invalid,
}

impl From<Outcome> for NetworkOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Joined => Self::Joined,
            Outcome::WrongPassphrase => Self::WrongPassphrase,
            Outcome::NetworkNotFound => Self::NetworkNotFound,
            Outcome::Timeout => Self::Timeout,
            Outcome::Invalid => Self::Invalid,
        }
    }
}

/// What commissioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommissionReport {
    /// The device's public key (its identity in the account).
    pub device_key: [u8; 32],
    /// Its certificate's serial.
    pub serial: u64,
    /// Its product model, from its advert.
    pub product_model: u16,
    /// What it reported about the network. The binding is stored only
    /// when it joined; otherwise commission it again with the right
    /// network.
    pub outcome: NetworkOutcome,
    /// Links reconnected after a drop.
    pub reconnections: u32,
    /// Signal strength of its advert, dBm, if the radio reported it.
    pub rssi: Option<i16>,
}

fn random<const N: usize>() -> Result<[u8; N], NodeError> {
    let mut out = [0; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| NodeError::Random)?;
    Ok(out)
}

impl crate::HeadUnit {
    /// Commissions a smart device over Bluetooth LE (SPEC §12, §13): scans
    /// `central` for the unprovisioned advert that matches the request's
    /// setup code, pairs with SPAKE2, has `authority` (the account's: in
    /// local mode the owner's phone, [`crate::Phone::authority`]) certify
    /// it as a device without a group key, hands it the home network
    /// sealed, reconnects a link that drops, and — when it joined — keeps
    /// the binding ([`crate::HeadUnit::add_commissioned`]), so a later
    /// [`crate::HeadUnit::scan_devices`] finds it on the LAN. `progress` hears
    /// each stage as it is reached. A wrong passcode is
    /// [`NodeError::is_wrong_passcode`]; the device's backoff
    /// [`NodeError::retry_after_s`].
    pub async fn commission<C: Central>(
        &self,
        central: &C,
        authority: &mut (dyn AccountAuthority + Send),
        request: &CommissionRequest,
        mut progress: impl FnMut(CommissionProgress) + Send,
    ) -> Result<CommissionReport, NodeError> {
        progress(CommissionProgress::Scanning);
        let seen = central
            .scan(request.scan_window)
            .await
            .map_err(|e| NodeError::Commission(Box::new(CommissionError::Radio(e))))?;
        let (id, rssi, product_model) = seen
            .into_iter()
            .find_map(|r| {
                let advert = Advert::decode(r.tether_data()?).ok()?;
                let Advert::Unprovisioned { product_model, .. } = advert else {
                    return None;
                };
                request
                    .code
                    .matches(&advert)
                    .then_some((r.id, r.rssi, product_model))
            })
            .ok_or(NodeError::NoDeviceFound)?;
        progress(CommissionProgress::Found { rssi });
        let seed: [u8; 32] = random()?;
        let mut bind_nonce = [0; 16];
        bind_nonce.copy_from_slice(&seed[16..]);
        let plan = CommissionPlan {
            passcode: request.code.passcode(),
            credentials: request.network.wifi(),
            seed,
            bind_nonce,
            unix_now: crate::unix_now(),
        };
        let mut reconnections = 0;
        let done = commission_peripheral(
            central,
            &id,
            &plan,
            authority,
            CommissionTimeouts::default(),
            |stage| {
                if let CommissionStage::Reconnecting { retry } = stage {
                    reconnections = retry;
                }
                progress(stage.into());
            },
        )
        .await
        .map_err(|e| NodeError::Commission(Box::new(e)))?;
        let outcome = NetworkOutcome::from(done.outcome);
        if outcome == NetworkOutcome::Joined {
            self.add_commissioned(
                &CommissionedDevice {
                    device_key: done.certificate.public_key,
                    certificate: done.certificate_message.clone(),
                    serial: done.certificate.serial,
                    product_model,
                    name: request.name.clone(),
                    ssid: Some(request.network.ssid.clone()),
                    device_secret: done.device_secret,
                },
                crate::unix_now(),
            )
            .await?;
            progress(CommissionProgress::Saved);
        }
        Ok(CommissionReport {
            device_key: done.certificate.public_key,
            serial: done.certificate.serial,
            product_model,
            outcome,
            reconnections,
            rssi,
        })
    }
}

impl NodeError {
    /// Commissioning: the device refused the passcode (and counted the
    /// attempt, R6).
    pub fn is_wrong_passcode(&self) -> bool {
        matches!(self, NodeError::Commission(e)
            if matches!(**e, CommissionError::Pairing(PairingError::WrongPasscode)))
    }

    /// Commissioning: the device asks to wait this many seconds before the
    /// next attempt (its backoff after wrong passcodes, R6).
    pub fn retry_after_s(&self) -> Option<u32> {
        match self {
            NodeError::Commission(e) => match **e {
                CommissionError::Pairing(PairingError::RetryLater { retry_after_s }) => {
                    Some(retry_after_s)
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// What a commissioned device keeps from its binding: its credentials
/// (role device, no group key) and the device secret shared with the car
/// (SPEC §12.6). Install it in a [`crate::DeviceNode`] to serve members.
#[derive(Clone)]
pub struct DeviceBinding {
    pub(crate) credentials: Arc<tether_identity::Credentials>,
    pub(crate) secret: [u8; 32],
}

impl std::fmt::Debug for DeviceBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBinding").finish_non_exhaustive()
    }
}

impl DeviceBinding {
    /// The device's public key.
    pub fn device_key(&self) -> [u8; 32] {
        self.credentials.key().public_key()
    }
}

/// ATT MTU of the simulated links.
const SIM_MTU: u16 = 185;

/// A smart device powered on unprovisioned on a simulated Bluetooth air
/// (tests, the demo, `tether pair`): a random setup code (never derived
/// from a MAC or serial, R2, R6), its advert on the air, and the device
/// side of commissioning, which joins a network if it is one of those it
/// can see. [`SimulatedAccessory::central`] is the head unit's radio on
/// the same air.
pub struct SimulatedAccessory {
    air: SimAir,
    peripheral: SimPeripheral,
    log: SharedLog,
    payload: SetupPayload,
}

impl std::fmt::Debug for SimulatedAccessory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedAccessory")
            .field("product_model", &self.payload.product_model)
            .finish_non_exhaustive()
    }
}

impl SimulatedAccessory {
    /// A device of `product_model` that can see `networks`, on an air that
    /// loses `loss` of its PDUs (0 to 0.5; each loss is retransmitted).
    pub fn power_on(
        product_model: u16,
        networks: &[HomeNetwork],
        loss: f64,
    ) -> Result<Self, NodeError> {
        let payload = SetupPayload {
            version: 0,
            product_model,
            discriminator: u16::from_be_bytes(random()?) & 0x0fff,
            flags: FLAG_BLE,
            passcode: random_passcode(random()?),
        };
        let air = SimAir::new(SimConfig {
            loss: loss.clamp(0.0, 0.5),
            latency: Duration::from_millis(3),
            jitter: Duration::from_millis(2),
            seed: u64::from_le_bytes(random()?),
            mtu: SIM_MTU,
            ..SimConfig::default()
        });
        let networks: Vec<(Vec<u8>, Vec<u8>)> = networks
            .iter()
            .map(|n| (n.ssid.clone(), n.passphrase.clone()))
            .collect();
        let (device, log) = SimCommissionee::new(
            payload.passcode,
            SIM_MTU,
            &networks,
            u64::from_le_bytes(random()?),
        )
        .map_err(|e| NodeError::SetupCode(e.to_string()))?;
        let peripheral = air.add_peripheral(Box::new(device));
        let advert = Advert::Unprovisioned {
            product_model,
            discriminator: payload.discriminator,
            flags: FLAG_PAIRING_OPEN,
        };
        peripheral.set_advert(Some(
            advert
                .encode()
                .map_err(|e| NodeError::SetupCode(e.to_string()))?,
        ));
        Ok(Self {
            air,
            peripheral,
            log,
            payload,
        })
    }

    /// The setup code as a QR string (what its label shows).
    pub fn setup_qr(&self) -> Result<String, NodeError> {
        self.payload
            .to_qr_string()
            .map_err(|e| NodeError::SetupCode(e.to_string()))
    }

    /// The 11-digit manual code (what its label shows beside the QR).
    pub fn manual_code(&self) -> Result<String, NodeError> {
        self.payload
            .manual_code()
            .map_err(|e| NodeError::SetupCode(e.to_string()))
    }

    /// The head unit's radio on this device's air.
    pub fn central(&self) -> SimCentral {
        self.air.central()
    }

    /// The device drops its Bluetooth link (a demonstration of the
    /// commissioner's reconnection, SPEC §12.7).
    pub fn drop_link(&self) {
        self.peripheral.disconnect();
    }

    /// Whether it joined the network named `ssid`.
    pub fn joined(&self, ssid: &[u8]) -> bool {
        lock(&self.log).joined.iter().any(|c| c.ssid == ssid)
    }

    /// What it kept from its last binding (once commissioned), handed
    /// over once: to install in the [`crate::DeviceNode`] it becomes.
    pub fn take_binding(&self) -> Option<DeviceBinding> {
        lock(&self.log)
            .binding
            .take()
            .map(|(credentials, secret)| DeviceBinding {
                credentials: Arc::new(credentials),
                secret,
            })
    }

    /// The air's counters.
    pub fn radio_stats(&self) -> SimStats {
        self.air.stats()
    }
}

fn lock<T>(m: &Arc<Mutex<T>>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
