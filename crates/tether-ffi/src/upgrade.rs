//! Firmware upgrades through the bindings (R15; SPEC §15): the car's screen
//! upgrades a bound device over its LAN session, with progress delivered to
//! an app callback.

use std::sync::Arc;

use prost::Message;

use crate::runtime::{guard, run};
use crate::{HeadUnit, TetherError};

/// Hears an upgrade's progress. Implemented by the app; called on a Tether
/// runtime thread.
#[uniffi::export(callback_interface)]
pub trait UpgradeListener: Send + Sync {
    /// The device has stored `acknowledged` of `total` bytes; this call
    /// started at `resumed_from` (more than 0 after an interrupted upgrade).
    fn on_progress(&self, acknowledged: u64, total: u64, resumed_from: u64);
}

/// A completed upgrade.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UpgradeReport {
    /// The version the device installed.
    pub version: String,
    /// The image size.
    pub total: u64,
    /// Where this call resumed (0 for a fresh transfer).
    pub resumed_from: u64,
    /// Image bytes this call sent.
    pub bytes_sent: u64,
}

#[uniffi::export]
impl HeadUnit {
    /// Upgrades the bound device `handle` (from `list_devices`) with `image`
    /// and its vendor-signed `manifest` (an encoded `OtaManifest`). Refused
    /// with `TetherError.Upgrade` when the car's own battery is below 30 %
    /// (R15), the device runs a version at least as new (no rollback), the
    /// image does not match its manifest, or the link drops; call again after
    /// a drop (and a `scan_devices`) to resume where the device stopped.
    pub async fn upgrade_device(
        &self,
        handle: Vec<u8>,
        manifest: Vec<u8>,
        image: Vec<u8>,
        listener: Option<Box<dyn UpgradeListener>>,
    ) -> Result<UpgradeReport, TetherError> {
        let manifest = tether_node::OtaManifest::decode(manifest.as_slice())?;
        let listener: Option<Arc<dyn UpgradeListener>> = listener.map(Arc::from);
        let inner = self.node();
        run(async move {
            let report = inner
                .upgrade_device(&handle, &manifest, image, |p| {
                    if let Some(l) = &listener {
                        // A panicking listener loses its progress calls, not
                        // the upgrade.
                        let _ = guard(|| {
                            l.on_progress(p.acknowledged, p.total, p.resumed_from);
                            Ok(())
                        });
                    }
                })
                .await?;
            Ok::<_, tether_node::NodeError>(UpgradeReport {
                version: report.version,
                total: report.total,
                resumed_from: report.resumed_from,
                bytes_sent: report.bytes_sent,
            })
        })
        .await
    }
}
