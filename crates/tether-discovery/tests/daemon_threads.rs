//! Dropping an `Advertiser` or a `Browser` without `shutdown` must not leak
//! the mdns-sd daemon thread. Its own test binary, so no other test's daemons
//! are counted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::time::Duration;

use tether_discovery::{Advertiser, AdvertiserConfig, Browser, Interfaces};

/// Threads of this process named like mdns-sd's daemon thread.
fn daemon_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("Linux procfs")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "mDNS_daemon")
        .count()
}

async fn wait_for_threads(expected: usize) -> usize {
    for _ in 0..50 {
        if daemon_threads() == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon_threads()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_shutdown_stops_the_daemon_threads() {
    assert_eq!(daemon_threads(), 0);
    let advertiser = Advertiser::start(AdvertiserConfig::new([1; 32], 1)).unwrap();
    let browser = Browser::start(vec![[1; 32]], Interfaces::LoopbackOnly).unwrap();
    assert_eq!(wait_for_threads(2).await, 2);

    drop(browser);
    drop(advertiser);
    assert_eq!(wait_for_threads(0).await, 0);
}
