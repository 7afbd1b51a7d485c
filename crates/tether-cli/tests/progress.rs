//! The upgrade progress bar helper (src/progress.rs), compiled here until
//! the CLI's upgrade command calls it.

#[path = "../src/progress.rs"]
mod progress;

use tether_node::{OtaProgress, OtaReport, OtaTransferError};

fn event(acknowledged: u64, resumed_from: u64) -> OtaProgress {
    OtaProgress {
        acknowledged,
        total: 1000,
        resumed_from,
    }
}

#[test]
fn the_bar_follows_acknowledgements_and_ends_with_the_outcome() {
    // `--json`: hidden, but it still tracks the transfer.
    let bar = progress::upgrade_bar(true);
    assert!(bar.is_hidden());
    progress::show(&bar, event(250, 250));
    assert_eq!(bar.length(), Some(1000));
    assert_eq!(bar.position(), 250);
    assert!(bar.message().contains("resumed"));
    progress::show(&bar, event(1000, 250));
    assert_eq!(bar.position(), 1000);
    let report = OtaReport {
        version: "1.2.3".into(),
        total: 1000,
        resumed_from: 250,
        bytes_sent: 750,
        chunks_sent: 1,
    };
    progress::finish(&bar, &Ok(report));
    assert!(bar.is_finished());
    assert_eq!(bar.message(), "installed 1.2.3");
}

#[test]
fn a_refused_upgrade_abandons_the_bar() {
    let bar = progress::upgrade_bar(true);
    progress::show(&bar, event(0, 0));
    progress::finish(&bar, &Err(OtaTransferError::LowBattery { percent: 12 }));
    assert!(bar.is_finished());
    assert_eq!(bar.position(), 0);
    assert_eq!(bar.message(), "refused");
}
