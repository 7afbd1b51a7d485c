//! The remote path through a real 3-node ejabberd cluster (SPEC §19.5,
//! §19.11; R23, R31): the car and the phone are on different nodes, each
//! with the others as fallbacks; kill -9 the phone's node, then the car's:
//! both relay sockets move to a surviving node by themselves, the phone
//! gets a session again, a retried command runs exactly once and a new
//! subscription delivers.
//!
//! One ejabberd cluster at a time per machine (node names and epmd are
//! shared): everything is in one test function, and the cluster is started
//! by `tests/brokers/ejabberd-cluster.sh` and stopped when dropped (on a
//! panic too). A missing ejabberd fails the test; `./test` installs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tether_control::{client as control, signals};
use tether_node::{
    CommandOutcome, HeadUnit, NodeConfig, NodeError, Phone, RelayConfig, SignalData, VehicleLink,
};

/// A 3-node ejabberd cluster of this test's own on 127.0.0.1.
struct Cluster {
    base: tempfile::TempDir,
    ports: [u16; 3],
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("brokers/ejabberd-cluster.sh")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start() -> Self {
        assert!(
            Path::new("/usr/sbin/ejabberdctl").exists()
                || Command::new("sh")
                    .args(["-c", "command -v ejabberdctl"])
                    .status()
                    .is_ok_and(|s| s.success()),
            "ejabberd is not installed: the cluster test needs a real ejabberd. \
             Run the repository's ./test (it installs what the tests need), \
             or: apt-get install -y ejabberd"
        );
        let cluster = Self {
            base: tempfile::tempdir().unwrap(),
            ports: [free_port(), free_port(), free_port()],
        };
        let ports = cluster.ports.map(|p| p.to_string()).join(" ");
        let status = cluster.run(&["start"], &[("PORTS", &ports)]);
        assert!(status, "the ejabberd cluster did not start");
        cluster
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> bool {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(args).env("BASE", self.base.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.status().is_ok_and(|s| s.success())
    }

    /// kill -9 node `i` (1-3) and wait until it is gone.
    fn kill(&self, i: usize) {
        assert!(self.run(&["kill", &i.to_string()], &[]), "kill -9 node {i}");
    }

    /// The nodes in this order, the first as the broker, the others as
    /// fallbacks; ejabberd needs non-empty credentials (SPEC §19.7).
    fn config(&self, order: [usize; 3]) -> NodeConfig {
        let [first, rest @ ..] = order.map(|i| ("127.0.0.1".to_owned(), self.ports[i - 1]));
        let mut relay = RelayConfig::new(first.0, first.1);
        relay.fallbacks = rest.to_vec();
        relay.login = Some(("tether".into(), "tether".into()));
        NodeConfig {
            relay: Some(relay),
            ..NodeConfig::default()
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.run(&["stop"], &[]);
    }
}

/// Bounds a wait; the failure names what did not happen.
async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {secs} s"))
}

/// Sends `command` under `key` until it completes (at most 90 s), on the
/// same link while it works and on a new relay session when it does not.
/// Returns the outcome, the link it completed on and how many new sessions
/// it took.
async fn command_until_done(
    owner: &Phone,
    link: VehicleLink,
    command: impl Fn() -> tether_proto::v1::VehicleCommand,
    key: &[u8; 16],
) -> (CommandOutcome, VehicleLink, u32) {
    let mut link = Some(link);
    let mut new_sessions = 0;
    within(90, "a command through the surviving nodes", async {
        loop {
            let Some(current) = link.take() else {
                match tokio::time::timeout(Duration::from_secs(10), owner.connect_via_relay()).await
                {
                    Ok(Ok(l)) => {
                        link = Some(l);
                        new_sessions += 1;
                    }
                    Ok(Err(e)) => eprintln!("relay_cluster: connect_via_relay failed ({e})"),
                    Err(_) => eprintln!("relay_cluster: connect_via_relay timed out"),
                }
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(8), current.command(command(), key))
                .await
            {
                Ok(Ok(outcome)) => return (outcome, current, new_sessions),
                Ok(Err(e)) => eprintln!("relay_cluster: command failed ({e}); new session"),
                Err(_) => eprintln!("relay_cluster: command timed out; new session"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

fn locked() -> String {
    signals::DOOR_IS_LOCKED[0].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_r31_car_and_phone_fail_over_across_ejabberd_nodes_and_commands_run_once() {
    let cluster = Cluster::start();
    // The car on node 1 first, the phone on node 3 first.
    let owner = Phone::open(cluster.config([3, 2, 1])).unwrap();
    owner.create_account().unwrap();
    let car = HeadUnit::open(cluster.config([1, 2, 3])).unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    within(30, "the car starts on the cluster", car.start())
        .await
        .unwrap();
    let link = within(
        30,
        "a relay session across nodes",
        owner.connect_via_relay(),
    )
    .await
    .unwrap();
    assert!(link.via_relay());

    // Read, subscribe and lock through node 3 → node 1.
    let read = within(10, "a read", link.get(vec![locked()]))
        .await
        .unwrap();
    assert_eq!(read[0].value, SignalData::Bool(false));
    let mut sub = within(10, "a subscription", link.subscribe(vec![locked()]))
        .await
        .unwrap();
    let first = within(10, "the first value", sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first[0].value, SignalData::Bool(false));
    let lock_key = [23; 16];
    let locked_once = within(10, "the lock", link.command(control::lock(), &lock_key))
        .await
        .unwrap();
    assert!(!locked_once.receipt.is_empty());
    let pushed = within(10, "the lock's push", sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed[0].value, SignalData::Bool(true));
    assert_eq!(car.executions().await.unwrap().lock, 1);

    // kill -9 the phone's node: its socket moves on; the same command again
    // (a retry after a lost answer) is the same command, run once (§8.3).
    let t = Instant::now();
    cluster.kill(3);
    let (again, link, sessions) = command_until_done(&owner, link, control::lock, &lock_key).await;
    eprintln!(
        "relay_cluster: node 3 killed; the retried lock completed after {} ms ({sessions} new sessions)",
        t.elapsed().as_millis()
    );
    assert_eq!(again.receipt, locked_once.receipt, "the same receipt");
    assert_eq!(car.executions().await.unwrap().lock, 1, "exactly once");
    drop(sub);

    // A new subscription delivers after an unlock.
    let mut sub = within(
        10,
        "a subscription after failover",
        link.subscribe(vec![locked()]),
    )
    .await
    .unwrap();
    let now = within(10, "the current value", sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now[0].value, SignalData::Bool(true));
    within(10, "the unlock", link.command(control::unlock(), &[24; 16]))
        .await
        .unwrap();
    let pushed = within(10, "the unlock's push", sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed[0].value, SignalData::Bool(false));
    drop(sub);

    // kill -9 the car's node: the car's socket moves to node 2, and a
    // phone command still completes (once).
    let t = Instant::now();
    cluster.kill(1);
    let (relocked, _link, sessions) =
        command_until_done(&owner, link, control::lock, &[25; 16]).await;
    eprintln!(
        "relay_cluster: node 1 killed; a new lock completed after {} ms ({sessions} new sessions)",
        t.elapsed().as_millis()
    );
    assert!(!relocked.receipt.is_empty());
    assert_eq!(car.executions().await.unwrap().lock, 2);
    let _: Result<(), NodeError> = car.shutdown().await;
}
