//! `tether share`: share the car with a co-user's account, one step per
//! command, across processes (R16, R19; SPEC §17).
//!
//! ```text
//! co-user$ tether share --data-dir CO key                     # prints the account key
//! owner$   tether share --data-dir OWNER grant --to KEY --allow vehicle-status > invite
//! co-user$ tether share --data-dir CO accept "$(cat invite)"
//! co-user$ tether share --data-dir CO status GRANT_ID         # reads the shared car
//! owner$   tether share --data-dir OWNER revoke GRANT_ID
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use tether_node::{
    HeldShare, Interfaces, NodeConfig, NodeError, Phone, ShareOptions, SharePermission,
};

/// How long to look for the car before giving up.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// A permission of a grant, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Allow {
    /// Read and subscribe to vehicle signals.
    VehicleStatus,
    /// Send vehicle commands.
    VehicleControl,
    /// List and control the shared devices.
    DeviceControl,
    /// Bind new devices to the owner's account.
    DeviceBindNew,
    /// Unbind a shared device.
    DeviceDelete,
    /// Rename a shared device.
    DeviceRename,
    /// Reorder the device list.
    DeviceSort,
    /// Upgrade a shared device.
    DeviceUpgrade,
    /// Ask for the in-car camera's live view.
    CameraView,
    /// Read the car's position at the moment (needs vehicle status too;
    /// never by subscription, R32).
    VehicleLocation,
}

impl From<Allow> for SharePermission {
    fn from(a: Allow) -> Self {
        match a {
            Allow::VehicleStatus => SharePermission::VehicleStatus,
            Allow::VehicleControl => SharePermission::VehicleControl,
            Allow::DeviceControl => SharePermission::DeviceControl,
            Allow::DeviceBindNew => SharePermission::DeviceBindNew,
            Allow::DeviceDelete => SharePermission::DeviceDelete,
            Allow::DeviceRename => SharePermission::DeviceRename,
            Allow::DeviceSort => SharePermission::DeviceSort,
            Allow::DeviceUpgrade => SharePermission::DeviceUpgrade,
            Allow::CameraView => SharePermission::CameraView,
            Allow::VehicleLocation => SharePermission::VehicleLocation,
        }
    }
}

/// What `tether share` does.
#[derive(Debug, Subcommand)]
pub(crate) enum ShareAction {
    /// Print this phone's account key (hex): the owner needs it to share.
    Key,
    /// (Owner) grant a co-user's account access to the car; prints the invite
    /// (hex) to hand over on a channel you trust.
    Grant {
        /// The co-user's account key (hex, from `tether share key`).
        #[arg(long)]
        to: String,
        /// What the co-user may do (repeat or comma-separate).
        #[arg(long, value_enum, value_delimiter = ',', required = true)]
        allow: Vec<Allow>,
        /// How long the grant lasts, in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
        /// Your nickname, shown to the co-user.
        #[arg(long, default_value = "owner")]
        nickname: String,
    },
    /// (Owner) revoke a grant: the co-user's live sessions close at once.
    Revoke {
        /// The grant id (hex) printed by `grant`.
        grant_id: String,
    },
    /// (Co-user) check and keep an invite.
    Accept {
        /// The invite (hex) printed by the owner's `grant`.
        invite: String,
    },
    /// (Co-user) list the shares held.
    List,
    /// (Co-user) find the shared car by the grant's token and read its status.
    Status {
        /// The grant id (hex).
        grant_id: String,
        /// How long to look for the car, in seconds.
        #[arg(long, default_value_t = 15)]
        timeout_s: u64,
    },
}

fn parse_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], NodeError> {
    let bytes = hex_decode(text.trim()).ok_or(NodeError::State(what))?;
    bytes.try_into().map_err(|_| NodeError::State(what))
}

pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn permission_name(p: SharePermission) -> String {
    p.as_str_name()
        .trim_start_matches("SHARE_PERMISSION_")
        .to_lowercase()
        .replace('_', "-")
}

fn held_json(h: &HeldShare) -> serde_json::Value {
    json!({
        "grant_id": hex(&h.grant_id),
        "sharer": h.sharer_nickname,
        "permissions": h.permissions.iter().map(|p| permission_name(*p)).collect::<Vec<_>>(),
        "not_after": h.not_after,
    })
}

fn emit(json_out: bool, value: serde_json::Value, text: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// Runs one `tether share` step on the phone whose state is in `data_dir`.
pub(crate) async fn run(
    data_dir: PathBuf,
    interfaces: Interfaces,
    json_out: bool,
    action: ShareAction,
) -> Result<ExitCode, NodeError> {
    let phone = Phone::open(NodeConfig {
        data_dir: Some(data_dir),
        interfaces,
        ..NodeConfig::default()
    })?;
    match action {
        ShareAction::Key => {
            let key = hex(&phone.authority_public_key()?);
            emit(json_out, json!({ "account_key": key }), key.clone());
        }
        ShareAction::Grant {
            to,
            allow,
            hours,
            nickname,
        } => {
            let grantee = parse_hex::<32>(&to, "--to must be a 64-digit hex account key")?;
            let found = phone.discover_vehicle(DISCOVERY_TIMEOUT).await?;
            let link = phone.connect(found.address).await?;
            let options = ShareOptions {
                permissions: allow.into_iter().map(Into::into).collect(),
                devices: Vec::new(),
                valid_for_s: hours.saturating_mul(3600),
                nickname,
            };
            let issued = phone.share(&link, grantee, &options).await?;
            link.close();
            emit(
                json_out,
                json!({ "grant_id": hex(&issued.grant_id), "invite": hex(&issued.invite) }),
                format!(
                    "grant {} installed on the car\ninvite (a secret; hand it over on a channel you trust):\n{}",
                    hex(&issued.grant_id),
                    hex(&issued.invite)
                ),
            );
        }
        ShareAction::Revoke { grant_id } => {
            let id = parse_hex::<16>(&grant_id, "the grant id must be 32 hex digits")?;
            let found = phone.discover_vehicle(DISCOVERY_TIMEOUT).await?;
            let link = phone.connect(found.address).await?;
            let closed = phone.revoke_share(&link, id).await?;
            link.close();
            emit(
                json_out,
                json!({ "grant_id": hex(&id), "revoked": true, "sessions_closed": closed }),
                format!("grant revoked; {closed} live co-user session(s) closed"),
            );
        }
        ShareAction::Accept { invite } => {
            let bytes = hex_decode(invite.trim()).ok_or(NodeError::State(
                "the invite must be hex, as `grant` prints it",
            ))?;
            let held = phone.accept_invite(&bytes)?;
            emit(
                json_out,
                held_json(&held),
                format!(
                    "accepted a share from {:?}: grant {}, allows {}",
                    held.sharer_nickname,
                    hex(&held.grant_id),
                    held.permissions
                        .iter()
                        .map(|p| permission_name(*p))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        ShareAction::List => {
            let held = phone.held_shares()?;
            let text = held
                .iter()
                .map(|h| {
                    format!(
                        "{} from {:?}: {}",
                        hex(&h.grant_id),
                        h.sharer_nickname,
                        h.permissions
                            .iter()
                            .map(|p| permission_name(*p))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            emit(
                json_out,
                json!({ "shares": held.iter().map(held_json).collect::<Vec<_>>() }),
                if held.is_empty() {
                    "no shares held".into()
                } else {
                    text
                },
            );
        }
        ShareAction::Status {
            grant_id,
            timeout_s,
        } => {
            let id = parse_hex::<16>(&grant_id, "the grant id must be 32 hex digits")?;
            let found = phone
                .discover_shared_vehicle(id, Duration::from_secs(timeout_s))
                .await?;
            let link = phone.connect_shared(id, found.address).await?;
            let readings = link.get(Vec::new()).await?;
            link.close();
            emit(
                json_out,
                json!({
                    "signals": readings.iter().map(|r| json!({ "path": r.path, "value": format!("{:?}", r.value) })).collect::<Vec<_>>(),
                }),
                readings
                    .iter()
                    .map(|r| format!("{:<55} {:?}", r.path, r.value))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
