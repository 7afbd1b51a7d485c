//! A firmware upgrade's progress as a terminal bar (indicatif).
//!
//! ```ignore
//! let bar = progress::upgrade_bar(json);
//! let result = tether_node::send_firmware(&session, &manifest, image, battery, |p| {
//!     progress::show(&bar, p)
//! })
//! .await;
//! progress::finish(&bar, &result);
//! ```

use std::io::IsTerminal;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tether_node::{OtaProgress, OtaReport, OtaTransferError};

const TEMPLATE: &str =
    "{msg:14} [{bar:32}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta}";

/// A bar for one upgrade, drawn on stderr. Hidden when `json` is set (the
/// output is for a program) or stderr is not a terminal.
pub(crate) fn upgrade_bar(json: bool) -> ProgressBar {
    let target = if json || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    let style = ProgressStyle::with_template(TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message("upgrading");
    bar
}

/// Moves the bar to what the device acknowledged: pass it every event of
/// `send_firmware`'s progress callback.
pub(crate) fn show(bar: &ProgressBar, progress: OtaProgress) {
    if bar.length() != Some(progress.total) {
        bar.set_length(progress.total);
        if progress.resumed_from > 0 {
            bar.set_message(format!("resumed at {}", HumanBytes(progress.resumed_from)));
        }
        // Bytes sent before this call do not count towards the rate.
        bar.reset_eta();
    }
    bar.set_position(progress.acknowledged);
}

/// Ends the bar with the outcome: the installed version, or why not.
pub(crate) fn finish(bar: &ProgressBar, result: &Result<OtaReport, OtaTransferError>) {
    match result {
        Ok(report) => bar.finish_with_message(format!("installed {}", report.version)),
        Err(OtaTransferError::LinkLost { offset, .. }) => {
            bar.abandon_with_message(format!("link lost at {}", HumanBytes(*offset)))
        }
        Err(_) => bar.abandon_with_message("refused"),
    }
}
