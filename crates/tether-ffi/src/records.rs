//! Owned records and enums crossing the boundary, each converted from or to
//! its `tether-node` counterpart.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use tether_node::{Interfaces, NodeConfig};

use crate::TetherError;

/// Which networks the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Network {
    /// Loopback only: nothing leaves the device (tests, demos).
    LoopbackOnly,
    /// Every interface: the phone's Wi-Fi or the car's hotspot.
    AllInterfaces,
}

/// Identifiers a device knows about itself and its owner. They stay in the
/// local store and are never sent (R2, R3, R4).
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct LocalIdentifiers {
    /// The name the user gave the device.
    #[uniffi(default = None)]
    pub device_name: Option<String>,
    /// A vendor device id (DID).
    #[uniffi(default = None)]
    pub device_id: Option<String>,
    /// The vehicle identification number.
    #[uniffi(default = None)]
    pub vin: Option<String>,
    /// The account's user id at the vendor's cloud.
    #[uniffi(default = None)]
    pub account_uid: Option<String>,
    /// A Bluetooth or Wi-Fi MAC address.
    #[uniffi(default = None)]
    pub mac: Option<String>,
}

impl From<LocalIdentifiers> for tether_node::LocalIdentifiers {
    fn from(i: LocalIdentifiers) -> Self {
        Self {
            device_name: i.device_name,
            device_id: i.device_id,
            vin: i.vin,
            account_uid: i.account_uid,
            mac: i.mac,
        }
    }
}

impl From<tether_node::LocalIdentifiers> for LocalIdentifiers {
    fn from(i: tether_node::LocalIdentifiers) -> Self {
        Self {
            device_name: i.device_name,
            device_id: i.device_id,
            vin: i.vin,
            account_uid: i.account_uid,
            mac: i.mac,
        }
    }
}

/// How to open a node.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NodeSettings {
    /// Directory for the node's SQLite state (created with mode 0700).
    /// `None` keeps all state in memory and loses it when the object goes.
    #[uniffi(default = None)]
    pub data_dir: Option<String>,
    /// Which networks discovery and sessions use.
    pub network: Network,
    /// UDP port of the session endpoint (head unit); 0 picks a free one.
    #[uniffi(default = 0)]
    pub port: u16,
    /// Identifiers kept locally only.
    pub identifiers: LocalIdentifiers,
    /// The MQTT broker of the remote path, `mqtt://HOST:PORT` (SPEC §19):
    /// a head unit also answers there; a phone reaches the car from
    /// anywhere (`Phone.connectViaRelay`). `None`: the LAN only.
    #[uniffi(default = None)]
    pub broker: Option<String>,
}

impl NodeSettings {
    /// The node configuration, with `key_store` for the secrets. A broker
    /// URL that does not parse is `TetherError.InvalidArgument`.
    pub(crate) fn into_config(
        self,
        key_store: Option<std::sync::Arc<dyn tether_node::KeyStore>>,
    ) -> Result<NodeConfig, crate::TetherError> {
        let relay = self
            .broker
            .as_deref()
            .map(tether_node::RelayConfig::from_url)
            .transpose()
            .map_err(|e| crate::TetherError::InvalidArgument {
                detail: e.to_string(),
            })?;
        let (interfaces, bind_ip) = match self.network {
            Network::LoopbackOnly => (Interfaces::LoopbackOnly, IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Network::AllInterfaces => (Interfaces::All, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        };
        Ok(NodeConfig {
            data_dir: self.data_dir.map(PathBuf::from),
            interfaces,
            bind_ip,
            port: self.port,
            identifiers: self.identifiers.into(),
            key_store,
            relay,
            ..NodeConfig::default()
        })
    }
}

/// A vehicle of this phone's account found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DiscoveredVehicle {
    /// Its session endpoint, `ip:port`; pass it to `Phone.connect`.
    pub address: String,
    /// The rotating token it advertised.
    pub token: String,
}

impl From<tether_node::DiscoveredVehicle> for DiscoveredVehicle {
    fn from(v: tether_node::DiscoveredVehicle) -> Self {
        Self {
            address: v.address.to_string(),
            token: v.token,
        }
    }
}

/// What a discovery window saw.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DiscoveryReport {
    /// Members of this phone's account.
    pub resolved: Vec<DiscoveredVehicle>,
    /// Tether tokens seen that no key of this phone resolves (other
    /// accounts); they reveal nothing else.
    pub unresolvable: u64,
}

impl From<tether_node::DiscoveryReport> for DiscoveryReport {
    fn from(r: tether_node::DiscoveryReport) -> Self {
        Self {
            resolved: r.resolved.into_iter().map(Into::into).collect(),
            unresolvable: r.unresolvable,
        }
    }
}

/// A signal value.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum SignalData {
    /// A boolean (locked, open...).
    Bool {
        /// The value.
        value: bool,
    },
    /// A number (temperature, percent, km...).
    Number {
        /// The value.
        value: f64,
    },
    /// An integer (gear...).
    Integer {
        /// The value.
        value: i64,
    },
    /// Text.
    Text {
        /// The value.
        value: String,
    },
    /// A position; it stays between the car and its owner's phone (R10, R21).
    Location {
        /// Degrees.
        latitude: f64,
        /// Degrees.
        longitude: f64,
    },
}

/// One VSS signal reading.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Reading {
    /// VSS path, e.g. `Vehicle.Cabin.Door.Row1.DriverSide.IsLocked`.
    pub path: String,
    /// The value.
    pub value: SignalData,
}

impl From<tether_node::Reading> for Reading {
    fn from(r: tether_node::Reading) -> Self {
        use tether_node::SignalData as S;
        let value = match r.value {
            S::Bool(value) => SignalData::Bool { value },
            S::Number(value) => SignalData::Number { value },
            S::Integer(value) => SignalData::Integer { value },
            S::Text(value) => SignalData::Text { value },
            S::Location {
                latitude,
                longitude,
            } => SignalData::Location {
                latitude,
                longitude,
            },
        };
        Self {
            path: r.path,
            value,
        }
    }
}

/// A command the phone asks the vehicle to perform (R23).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum VehicleAction {
    /// Lock every door.
    Lock,
    /// Unlock every door.
    Unlock,
    /// Switch climate control; `target_celsius` `None` keeps the target.
    Climate {
        /// On or off.
        on: bool,
        /// Target cabin temperature.
        target_celsius: Option<f32>,
    },
    /// Move every window to `percent_open` (0 closed .. 100 open).
    Window {
        /// 0..=100.
        percent_open: u8,
    },
    /// Flash the lights and/or honk.
    FlashHonk {
        /// Flash the lights.
        flash: bool,
        /// Honk.
        honk: bool,
    },
}

impl VehicleAction {
    pub(crate) fn to_command(&self) -> Result<tether_node::VehicleCommand, TetherError> {
        use tether_node::commands;
        Ok(match self {
            VehicleAction::Lock => commands::lock(),
            VehicleAction::Unlock => commands::unlock(),
            VehicleAction::Climate { on, target_celsius } => {
                commands::climate(*on, *target_celsius)
            }
            VehicleAction::Window { percent_open } => {
                if *percent_open > 100 {
                    return Err(TetherError::InvalidArgument {
                        detail: format!("percent_open {percent_open} is above 100"),
                    });
                }
                commands::window(*percent_open)
            }
            VehicleAction::FlashHonk { flash, honk } => commands::flash_honk(*flash, *honk),
        })
    }
}

/// A step of a command's life cycle (SPEC §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CommandState {
    /// Not set (never sent by a well-behaved vehicle).
    Unspecified,
    /// The vehicle accepted the command.
    Accepted,
    /// The vehicle is acting.
    InProgress,
    /// Done.
    Succeeded,
    /// The vehicle tried and failed.
    Failed,
    /// The vehicle refused to act (see the reason).
    Rejected,
    /// The vehicle gave up waiting.
    TimedOut,
}

impl From<tether_node::CommandState> for CommandState {
    fn from(s: tether_node::CommandState) -> Self {
        use tether_node::CommandState as S;
        match s {
            S::Unspecified => CommandState::Unspecified,
            S::Accepted => CommandState::Accepted,
            S::InProgress => CommandState::InProgress,
            S::Succeeded => CommandState::Succeeded,
            S::Failed => CommandState::Failed,
            S::Rejected => CommandState::Rejected,
            S::TimedOut => CommandState::TimedOut,
        }
    }
}

/// Why a command did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CommandReason {
    /// No reason (it succeeded).
    Unspecified,
    /// Another user or task holds the function.
    InUse,
    /// The signal cannot be written.
    ReadOnly,
    /// This vehicle cannot do it.
    Unsupported,
    /// The vehicle is busy.
    Busy,
    /// This device's role may not do it.
    NotPermitted,
    /// An argument is out of range.
    InvalidArgument,
}

impl From<tether_node::CommandReason> for CommandReason {
    fn from(r: tether_node::CommandReason) -> Self {
        use tether_node::CommandReason as R;
        match r {
            R::Unspecified => CommandReason::Unspecified,
            R::InUse => CommandReason::InUse,
            R::ReadOnly => CommandReason::ReadOnly,
            R::Unsupported => CommandReason::Unsupported,
            R::Busy => CommandReason::Busy,
            R::NotPermitted => CommandReason::NotPermitted,
            R::InvalidArgument => CommandReason::InvalidArgument,
        }
    }
}

/// The outcome of one command, with the vehicle's verified receipt.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CommandOutcome {
    /// Every state reported, in order (a retry reports only the final one).
    pub states: Vec<CommandState>,
    /// The final state.
    pub state: CommandState,
    /// Why, when not succeeded.
    pub reason: CommandReason,
    /// The vehicle's execution sequence number.
    pub sequence: u64,
    /// The signed receipt, byte-identical on every retry with the same key.
    pub receipt: Vec<u8>,
}

impl From<tether_node::CommandOutcome> for CommandOutcome {
    fn from(o: tether_node::CommandOutcome) -> Self {
        Self {
            states: o.states.into_iter().map(Into::into).collect(),
            state: o.state.into(),
            reason: o.reason.into(),
            sequence: o.sequence,
            receipt: o.receipt,
        }
    }
}

/// A command left in the car's mailbox on the broker (SPEC §19.12).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PostedCommand {
    /// The letter's id; the car's answer names it (`MailboxReply.inReplyTo`).
    pub letter_id: Vec<u8>,
    /// Unix milliseconds after which the car will not run it.
    pub not_after_unix_ms: u64,
}

impl From<tether_node::PostedCommand> for PostedCommand {
    fn from(p: tether_node::PostedCommand) -> Self {
        Self {
            letter_id: p.letter_id.to_vec(),
            not_after_unix_ms: p.not_after_unix_ms,
        }
    }
}

/// A mailbox letter's idempotency key: exactly 16 bytes.
pub(crate) fn mailbox_key(bytes: &[u8]) -> Result<[u8; 16], crate::TetherError> {
    bytes
        .try_into()
        .map_err(|_| crate::TetherError::InvalidArgument {
            detail: "a mailbox idempotency key is 16 bytes".into(),
        })
}

/// What the car answered to a command left in its mailbox.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct MailboxReply {
    /// The letter it answers (`PostedCommand.letterId`).
    pub in_reply_to: Vec<u8>,
    /// The outcome with the verified receipt, when the car ran it (or had:
    /// the same receipt).
    pub outcome: Option<CommandOutcome>,
    /// When it did not: the car's error code (`ERROR_CODE_DEADLINE_EXCEEDED`
    /// when it woke after the deadline) and text.
    pub refused_code: Option<String>,
    /// The car's text for a refusal.
    pub refused_message: Option<String>,
    /// Values pushed for a subscription left with `Phone.pushSubscribe`
    /// (empty for a command's answer).
    pub signals: Vec<Reading>,
}

impl From<tether_node::MailboxReply> for MailboxReply {
    fn from(r: tether_node::MailboxReply) -> Self {
        let mut signals = Vec::new();
        let (outcome, refused_code, refused_message) = match r.answer {
            tether_node::MailboxAnswer::Executed(o) => (Some(o.into()), None, None),
            tether_node::MailboxAnswer::Refused { code, message } => {
                (None, Some(code.as_str_name().to_owned()), Some(message))
            }
            tether_node::MailboxAnswer::Signals(values) => {
                signals = values.into_iter().map(Into::into).collect();
                (None, None, None)
            }
        };
        Self {
            in_reply_to: r.in_reply_to.to_vec(),
            outcome,
            refused_code,
            refused_message,
            signals,
        }
    }
}

/// How often the simulated vehicle actually performed each actuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Executions {
    /// Door locks.
    pub lock: u32,
    /// Door unlocks.
    pub unlock: u32,
    /// Climate switches.
    pub climate: u32,
    /// Window moves.
    pub window: u32,
    /// Flash/honk.
    pub flash_honk: u32,
}

impl From<tether_node::Executions> for Executions {
    fn from(e: tether_node::Executions) -> Self {
        Self {
            lock: e.lock,
            unlock: e.unlock,
            climate: e.climate,
            window: e.window,
            flash_honk: e.flash_honk,
        }
    }
}

/// Counters of the head unit's session listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct ListenerStats {
    /// Sessions that completed the handshake.
    pub authenticated: u64,
    /// Handshakes refused (not a member, bad certificate...).
    pub refused: u64,
    /// Connections dropped because they did not finish in time.
    pub timed_out: u64,
    /// Unauthenticated connections dropped to admit newer ones.
    pub evicted: u64,
    /// Connections not admitted at all.
    pub rejected_busy: u64,
    /// Connections the peer gave up on before the handshake finished.
    pub abandoned: u64,
    /// Connections in the handshake now.
    pub unauthenticated_now: u64,
}

impl From<tether_node::ListenerStats> for ListenerStats {
    fn from(s: tether_node::ListenerStats) -> Self {
        Self {
            authenticated: s.authenticated,
            refused: s.refused,
            timed_out: s.timed_out,
            evicted: s.evicted,
            rejected_busy: s.rejected_busy,
            abandoned: s.abandoned,
            unauthenticated_now: s.unauthenticated_now,
        }
    }
}

/// Parses an `ip:port` address from the app.
pub(crate) fn parse_address(address: &str) -> Result<std::net::SocketAddr, TetherError> {
    address.parse().map_err(|_| TetherError::InvalidArgument {
        detail: format!("not an ip:port address: {address:?}"),
    })
}

/// A device of the account, as the phone's authority enrolled it (SPEC §3.6).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AccountDevice {
    /// Its raw Ed25519 public key (32 bytes), what `remove_device` takes.
    pub public_key: Vec<u8>,
    /// Its role: "vehicle", "phone", "watch", "hub" or "device".
    pub role: String,
    /// Its certificate's serial.
    pub serial: u64,
    /// When it was enrolled, Unix seconds.
    pub enrolled_at: u64,
    /// Whether it was removed.
    pub removed: bool,
    /// Whether it is this phone.
    pub this_device: bool,
}

impl From<tether_node::AccountDevice> for AccountDevice {
    fn from(d: tether_node::AccountDevice) -> Self {
        Self {
            public_key: d.public_key.to_vec(),
            role: d.role.as_str().to_owned(),
            serial: d.serial,
            enrolled_at: d.enrolled_at,
            removed: d.removed,
            this_device: d.this_device,
        }
    }
}

/// What removing a device produced (SPEC §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Removal {
    /// The new revocation list's serial.
    pub serial: u64,
    /// The new group key epoch.
    pub group_key_epoch: u32,
    /// Last second the previous key is still accepted, Unix seconds.
    pub grace_until: u64,
}

impl From<tether_node::Removal> for Removal {
    fn from(r: tether_node::Removal) -> Self {
        Self {
            serial: r.serial,
            group_key_epoch: r.group_key_epoch,
            grace_until: r.grace_until,
        }
    }
}
