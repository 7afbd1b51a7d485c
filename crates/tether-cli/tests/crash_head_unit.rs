//! Crash safety of the head unit (issue 15, item 1; RELIABILITY.md): the
//! real `tether head-unit` process is killed with SIGKILL at a random
//! moment while a phone sends commands, then started again on the same
//! data directory. After every restart:
//!
//! - the store opens and the car serves again;
//! - every command the phone saw acknowledged gets the **same** signed
//!   receipt when retried with its key: nothing acknowledged was lost or
//!   corrupted (R23, SPEC §8.3), within the command log's retention (the
//!   newest 4096 commands, R30);
//! - the command in flight at the kill, retried twice, answers the same
//!   both times: it ran at most once;
//! - receipt sequence numbers never repeat and keep increasing across
//!   restarts (the command log's counter survived);
//! - share grants installed and revoked between the commands (R16): a
//!   grant the owner saw installed still admits its co-user, and one the
//!   owner saw revoked still refuses it — a revocation never comes undone.
//!
//! Short form (the README's test command): 10 kills. Long form:
//! `TETHER_CRASH_KILLS=100 cargo test -p tether-cli --test crash_head_unit`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a harness may panic on setup failures

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tether_node::{NodeConfig, Phone, ShareOptions, SharePermission, VehicleLink, commands};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Commands whose receipts the head unit is expected to keep: its command
/// log's 4096 less a margin for the write-ahead marks of commands in
/// flight at a kill.
const RETAINED: u64 = 4096 - 256;

fn random_u64() -> u64 {
    let mut b = [0; 8];
    SystemRandom::new().fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn config(dir: &Path) -> NodeConfig {
    common::config_in(dir)
}

/// A free UDP port on loopback, so the car keeps its address across
/// restarts.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `tether head-unit` on `dir` and waits until it serves.
async fn start_car(dir: &Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["head-unit", "--data-dir"])
        .arg(dir)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("head unit serving on") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        serving,
        Ok(true),
        "the head unit did not serve after a restart"
    );
    // Keep reading its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

async fn connect(phone: &Phone, address: SocketAddr) -> VehicleLink {
    for _ in 0..100 {
        if let Ok(link) = phone.connect(address).await {
            return link;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no session with the restarted car");
}

/// Lock for even keys, unlock for odd ones: a retry is the same command.
fn command_for(n: u64) -> tether_node::proto::v1::VehicleCommand {
    if n.is_multiple_of(2) {
        commands::lock()
    } else {
        commands::unlock()
    }
}

fn key_of(n: u64) -> [u8; 16] {
    let mut key = [0x5a; 16];
    key[..8].copy_from_slice(&n.to_be_bytes());
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_a_head_unit_killed_mid_write_loses_nothing_acknowledged_and_runs_nothing_twice() {
    let kills: u32 = std::env::var("TETHER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let phone_dir = tempfile::tempdir().unwrap();
    let car_dir = tempfile::tempdir().unwrap();
    let phone = Phone::open(config(phone_dir.path())).unwrap();
    phone.create_account().unwrap();
    common::enroll_car_in(&phone, car_dir.path());
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // key number → (receipt, sequence) the phone saw acknowledged.
    let mut acked: BTreeMap<u64, (Vec<u8>, u64)> = BTreeMap::new();
    let mut next = 0u64;
    let mut in_flight_seen = 0;
    // The co-user the owner shares with, and the grants it saw settled.
    let co_user_dir = tempfile::tempdir().unwrap();
    let co_user = Phone::open(config(co_user_dir.path())).unwrap();
    co_user.create_account().unwrap();
    let grantee = co_user.authority_public_key().unwrap();
    let mut active: Vec<[u8; 16]> = Vec::new();
    let mut revoked: Vec<[u8; 16]> = Vec::new();
    let options = ShareOptions {
        permissions: vec![SharePermission::VehicleStatus],
        devices: Vec::new(),
        valid_for_s: 3600,
        nickname: "crash".into(),
    };
    for round in 0..kills {
        let mut car = start_car(car_dir.path(), port).await;
        let link = connect(&phone, address).await;
        // Nothing acknowledged before is lost or changed — within the
        // command log's retention: the head unit keeps the newest 4096
        // commands (R30, `COMMAND_LOG_KEEP`), pruned at start; a retry of an
        // older one is a new command. A margin for write-ahead marks.
        let newest = acked.values().map(|(_, s)| *s).max().unwrap_or(0);
        let kept = |sequence: u64| sequence + RETAINED > newest;
        for (n, (receipt, _)) in acked.iter().filter(|(_, (_, s))| kept(*s)) {
            let again = link.command(command_for(*n), &key_of(*n)).await.unwrap();
            assert_eq!(
                &again.receipt, receipt,
                "round {round}: key {n} lost its receipt"
            );
        }
        // The latest grants settled before a kill still hold as settled.
        // A session may open in early data before the car has judged it
        // (SPEC §5.8): what counts is whether the car answers on it.
        for grant in active.iter().rev().take(2) {
            let shared = co_user.connect_shared(*grant, address).await.unwrap();
            assert!(
                shared.get(Vec::new()).await.is_ok(),
                "round {round}: an installed grant no longer admits"
            );
        }
        for grant in revoked.iter().rev().take(2) {
            let answered = match co_user.connect_shared(*grant, address).await {
                Ok(shared) => shared.get(Vec::new()).await.is_ok(),
                Err(_) => false,
            };
            assert!(!answered, "round {round}: a revoked grant admits again");
        }
        // Commands until the kill, at a random moment 5 to 300 ms in.
        let kill_at = tokio::time::sleep(Duration::from_millis(5 + random_u64() % 296));
        tokio::pin!(kill_at);
        let mut unsettled = false;
        let in_flight = loop {
            let n = next;
            let key = key_of(n);
            // Every 16th step installs a grant, every 16th (offset) revokes
            // the oldest active one; the kill may fall in either write.
            if n % 16 == 5 {
                tokio::select! {
                    issued = phone.share(&link, grantee, &options) => {
                        let issued = issued.unwrap();
                        co_user.accept_invite(&issued.invite).unwrap();
                        active.push(issued.grant_id);
                        next += 1;
                        continue;
                    }
                    () = &mut kill_at => {
                        unsettled = true;
                        break n;
                    }
                }
            }
            if n % 16 == 13 && !active.is_empty() {
                let grant = active[0];
                tokio::select! {
                    done = phone.revoke_share(&link, grant) => {
                        done.unwrap();
                        active.remove(0);
                        revoked.push(grant);
                        next += 1;
                        continue;
                    }
                    () = &mut kill_at => {
                        // Unsettled: in neither list from now on.
                        active.remove(0);
                        unsettled = true;
                        break n;
                    }
                }
            }
            tokio::select! {
                outcome = link.command(command_for(n), &key) => {
                    let outcome = outcome.unwrap();
                    acked.insert(n, (outcome.receipt, outcome.sequence));
                    next += 1;
                }
                () = &mut kill_at => break n,
            }
        };
        car.start_kill().unwrap();
        car.wait().await.unwrap();
        drop(link);
        next += 1;
        // After the restart: the command in flight answers the same twice
        // (a grant or revocation in flight is left unsettled: neither list
        // names it).
        let mut car = start_car(car_dir.path(), port).await;
        let link = connect(&phone, address).await;
        if unsettled {
            car.start_kill().unwrap();
            car.wait().await.unwrap();
            continue;
        }
        let first = link
            .command(command_for(in_flight), &key_of(in_flight))
            .await
            .map(|o| (o.receipt, o.sequence))
            .map_err(|e| e.to_string());
        let second = link
            .command(command_for(in_flight), &key_of(in_flight))
            .await
            .map(|o| (o.receipt, o.sequence))
            .map_err(|e| e.to_string());
        assert_eq!(
            first, second,
            "round {round}: the in-flight command ran twice"
        );
        if let Ok(done) = first {
            in_flight_seen += 1;
            acked.insert(in_flight, done);
        }
        car.start_kill().unwrap();
        car.wait().await.unwrap();
    }
    // Sequence numbers: one per command, increasing with the key order the
    // commands were sent in, never reused across restarts.
    let sequences: Vec<u64> = acked.values().map(|(_, s)| *s).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "sequences repeat or go back: {sequences:?}"
    );
    assert!(
        acked.len() > kills as usize,
        "too few commands to mean anything: {}",
        acked.len()
    );
    assert!(!revoked.is_empty(), "no revocation was tested");
    eprintln!(
        "{kills} kills, {} commands acknowledged, {in_flight_seen} in-flight commands completed on retry, {} grants installed and {} revoked",
        acked.len(),
        active.len() + revoked.len(),
        revoked.len()
    );
}
