//! Network faults between the phone and the car (issue 15, item 2;
//! RELIABILITY.md §2). The harness makes two network namespaces joined by a
//! veth pair — the car's and the phone's — and removes them at the end; no
//! traffic leaves them. The real `tether head-unit` runs in the car's
//! namespace, the owner's phone (this test binary run again) in the phone's,
//! and between them every datagram crosses a fault injector in the car's
//! namespace: loss (5 %, 20 %), delay with jitter (50–300 ms, which reorders),
//! explicit reordering, the veth itself set down for 5 s, and 4 s in which
//! the car's answers are lost (what it runs, the phone must not run twice).
//!
//! Why an injector and not `tc netem`: this machine's kernel is built without
//! `sch_netem` (CONFIG_NET_SCH_NETEM is not set, no modules), so the qdisc
//! does not exist. The injector does what netem's `loss`, `delay … jitter`
//! and `reorder` do, per datagram, in user space, on the only path between
//! the two namespaces; the link-down fault is the kernel's own.
//!
//! The phone sends lock/unlock commands one after the other, each with its
//! own idempotency key, retrying a key (reconnecting when its session is
//! gone) until it has a receipt, and keeps a subscription to the driver's
//! door lock open, re-subscribing whenever it ends. Checked at the end:
//! sessions recovered by themselves after every fault (a command answered
//! within 30 s of clearing it); every command completed exactly once (one
//! receipt per key, and the receipts' sequence numbers are exactly 1..=N: a
//! second execution would have used a number no receipt shows); the
//! subscription ends on the car's latest value, which is what the last
//! command set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a harness may panic on setup failures

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use tether_node::{CommandState, NodeConfig, Phone, VehicleLink, commands, signals};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::{Child, ChildStdin, Command};

const CHILD_ENV: &str = "TETHER_NETFAULT_CHILD";
const CAR_PORT: u16 = 47_000;
const FRONT_PORT: u16 = 47_001;
const CAR_IP: &str = "10.231.0.1";
const PHONE_IP: &str = "10.231.0.2";
/// The MQTT broker in the car's namespace, and the injector's TCP front.
const BROKER_PORT: u16 = 1883;
const RELAY_FRONT_PORT: u16 = 1884;

/// How the phone reaches the car.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Straight over the veth (QUIC over UDP), through the injector.
    Lan,
    /// Through the MQTT broker in the car's namespace (SPEC §19), the
    /// phone's TCP connection to it through the injector.
    Relay,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Lan => "lan",
            Route::Relay => "relay",
        }
    }
}

fn config(dir: &Path) -> NodeConfig {
    common::config_in(dir)
}

fn random_u64() -> u64 {
    let mut b = [0; 8];
    SystemRandom::new().fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

// ---- the fault injector ----------------------------------------------------

/// The faults in force, set by lines on the injector's stdin.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Faults {
    /// Probability a datagram is dropped.
    loss: f64,
    /// Each datagram is held a uniform random time in this range, ms.
    delay_ms: (u64, u64),
    /// Probability a datagram is held `reorder_ms` more than the others.
    reorder: f64,
    reorder_ms: u64,
    /// Probability a datagram from the car to the phone is dropped, on top
    /// of `loss`: commands arrive and run, their answers do not.
    answer_loss: f64,
}

impl Faults {
    /// `clear`, `loss P`, `delay MIN MAX`, `reorder P MS`.
    fn apply(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| {
            words
                .get(i)
                .and_then(|w| w.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        match words.first().copied() {
            Some("clear") => *self = Faults::default(),
            Some("loss") => self.loss = num(1),
            Some("delay") => self.delay_ms = (num(1) as u64, num(2) as u64),
            Some("answer-loss") => self.answer_loss = num(1),
            Some("reorder") => {
                self.reorder = num(1);
                self.reorder_ms = num(2) as u64;
            }
            _ => {}
        }
    }

    /// What happens to one datagram (`to_phone`: from the car): `None`
    /// dropped, else its delay.
    fn judge(&self, rng: &mut u64, to_phone: bool) -> Option<Duration> {
        let mut next = || {
            // xorshift64*: fast, and seeded from the system RNG.
            *rng ^= *rng >> 12;
            *rng ^= *rng << 25;
            *rng ^= *rng >> 27;
            (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        };
        if next() < self.loss || (to_phone && next() < self.answer_loss) {
            return None;
        }
        let (low, high) = self.delay_ms;
        let mut ms = low as f64 + next() * high.saturating_sub(low) as f64;
        if next() < self.reorder {
            ms += self.reorder_ms as f64;
        }
        Some(Duration::from_micros((ms * 1000.0) as u64))
    }
}

/// Forwards datagrams between the phones that reach `front` and the car at
/// `upstream`, one upstream socket per phone address, through `faults`.
async fn inject(front: UdpSocket, upstream: SocketAddr, faults: Arc<Mutex<Faults>>) {
    let front = Arc::new(front);
    let mut peers: BTreeMap<SocketAddr, Arc<UdpSocket>> = BTreeMap::new();
    let mut rng = random_u64() | 1;
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = front.recv_from(&mut buf).await {
        let up = match peers.get(&from) {
            Some(up) => up.clone(),
            None => {
                let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                up.connect(upstream).await.unwrap();
                let (back, front, faults, up2) = (from, front.clone(), faults.clone(), up.clone());
                let mut rng = random_u64() | 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = up2.recv(&mut buf).await {
                        let verdict = faults.lock().unwrap().judge(&mut rng, true);
                        if let Some(delay) = verdict {
                            let (front, datagram) = (front.clone(), buf[..n].to_vec());
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = front.send_to(&datagram, back).await;
                            });
                        }
                    }
                });
                peers.insert(from, up.clone());
                up
            }
        };
        let verdict = faults.lock().unwrap().judge(&mut rng, false);
        if let Some(delay) = verdict {
            let datagram = buf[..n].to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = up.send(&datagram).await;
            });
        }
    }
}

/// The relay's injector: a TCP proxy from `listener` to the broker at
/// `upstream` that holds each chunk for the delay `faults` give it, in order
/// (a TCP stream cannot reorder; its loss is the kernel's, set with nftables).
async fn inject_tcp(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    faults: Arc<Mutex<Faults>>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
            continue;
        };
        let (in_read, in_write) = inbound.into_split();
        let (out_read, out_write) = outbound.into_split();
        tokio::spawn(pipe(in_read, out_write, faults.clone()));
        tokio::spawn(pipe(out_read, in_write, faults.clone()));
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Mutex<Faults>>,
) {
    use tokio::io::AsyncReadExt;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut rng = random_u64() | 1;
    let mut last = tokio::time::Instant::now();
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let delay = {
            let faults = *faults.lock().unwrap();
            Faults {
                loss: 0.0,
                answer_loss: 0.0,
                ..faults
            }
            .judge(&mut rng, false)
        }
        .unwrap_or_default();
        last = last.max(tokio::time::Instant::now() + delay);
        if tx.send((last, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

// ---- the phone (child) -----------------------------------------------------

fn key_of(n: u64) -> [u8; 16] {
    let mut key = [0x4e; 16];
    key[8..].copy_from_slice(&n.to_be_bytes());
    key
}

fn is_locked(readings: &[tether_node::Reading]) -> Option<bool> {
    readings.iter().find_map(|r| match r.value {
        tether_node::SignalData::Bool(b) if r.path == signals::DOOR_ROW1_DRIVER_IS_LOCKED => {
            Some(b)
        }
        _ => None,
    })
}

async fn connect(phone: &Phone, route: Route) -> VehicleLink {
    let car: SocketAddr = format!("{CAR_IP}:{FRONT_PORT}").parse().unwrap();
    loop {
        let attempt = async {
            match route {
                Route::Lan => phone.connect(car).await,
                Route::Relay => phone.connect_via_relay().await,
            }
        };
        if let Ok(Ok(link)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
            return link;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The phone's side: commands until `stop` on stdin, a subscription
/// throughout; one line per event on stdout, after a `@ ` marker.
async fn phone_child(dir: PathBuf, route: Route) {
    let say = |line: String| println!("\n@ {line}");
    // Its sockets on its end of the veth (the default, loopback, reaches
    // nothing outside the namespace).
    let phone = Arc::new(
        Phone::open(NodeConfig {
            bind_ip: PHONE_IP.parse().unwrap(),
            relay: (route == Route::Relay)
                .then(|| tether_node::RelayConfig::new(CAR_IP, RELAY_FRONT_PORT)),
            ..config(&dir)
        })
        .unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "stop" {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    }
    // The subscription, on a session of its own, re-opened whenever it ends.
    let last_seen = Arc::new(Mutex::new(None::<bool>));
    {
        let (phone, last_seen) = (phone.clone(), last_seen.clone());
        tokio::spawn(async move {
            loop {
                let link = connect(&phone, route).await;
                let path = vec![signals::DOOR_ROW1_DRIVER_IS_LOCKED.to_owned()];
                if let Ok(Ok(mut sub)) =
                    tokio::time::timeout(Duration::from_secs(5), link.subscribe(path)).await
                {
                    while let Ok(Ok(Some(readings))) =
                        tokio::time::timeout(Duration::from_secs(20), sub.next()).await
                    {
                        if let Some(locked) = is_locked(&readings) {
                            *last_seen.lock().unwrap() = Some(locked);
                            println!("\n@ sub {locked}");
                        }
                    }
                }
                println!("\n@ sub-lost");
                link.close();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let mut link = connect(&phone, route).await;
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let command = if n.is_multiple_of(2) {
            commands::lock()
        } else {
            commands::unlock()
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Short, so that a fault makes the phone retry the key on a new
            // session: what exactly-once must survive.
            match tokio::time::timeout(Duration::from_secs(2), link.command(command, &key_of(n)))
                .await
            {
                Ok(Ok(outcome)) => {
                    say(format!(
                        "ack {n} {} {} {attempts}",
                        outcome.sequence, outcome.state as i32
                    ));
                    break;
                }
                _ => {
                    say(format!("retry {n}"));
                    link.close();
                    link = connect(&phone, route).await;
                }
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The car's own value, then the subscription's once it has caught up.
    let path = vec![signals::DOOR_ROW1_DRIVER_IS_LOCKED.to_owned()];
    let locked = loop {
        if let Ok(Ok(readings)) =
            tokio::time::timeout(Duration::from_secs(5), link.get(path.clone())).await
            && let Some(locked) = is_locked(&readings)
        {
            break locked;
        }
        link = connect(&phone, route).await;
    };
    say(format!("final {locked}"));
    let give_up = Instant::now() + Duration::from_secs(15);
    while *last_seen.lock().unwrap() != Some(locked) && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(format!("sub-last {:?}", *last_seen.lock().unwrap()));
    say("done".into());
    std::process::exit(0);
}

// ---- the namespaces (parent) -----------------------------------------------

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` (iproute2) is needed for the network-fault test: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Namespaces {
    car: String,
    phone: String,
    phone_link: String,
}

impl Namespaces {
    fn create(tag: char) -> Self {
        let id = std::process::id();
        let (car, phone) = (format!("tf{id}{tag}c"), format!("tf{id}{tag}p"));
        let (car_link, phone_link) = (format!("tf{id}{tag}c0"), format!("tf{id}{tag}p0"));
        ip(&["netns", "add", &car]);
        let ns = Namespaces {
            car: car.clone(),
            phone: phone.clone(),
            phone_link: phone_link.clone(),
        };
        ip(&["netns", "add", &phone]);
        ip(&[
            "link",
            "add",
            &car_link,
            "netns",
            &car,
            "type",
            "veth",
            "peer",
            "name",
            &phone_link,
            "netns",
            &phone,
        ]);
        for (netns, link, address) in [(&car, &car_link, CAR_IP), (&phone, &phone_link, PHONE_IP)] {
            ip(&["-n", netns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{address}/30"),
                "dev",
                link,
            ]);
            ip(&["-n", netns, "link", "set", link, "up"]);
        }
        ns
    }

    /// Kernel-level loss in the phone's namespace (nftables `numgen`), in
    /// both directions, or only of what comes in (`answers_only`); 0 clears.
    fn set_kernel_loss(&self, percent: u32, answers_only: bool) {
        let nft = |script: &str| {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.phone, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(script.as_bytes())?;
                    child.wait_with_output()
                })
                .unwrap_or_else(|e| panic!("`nft` (nftables) is needed for the relay faults: {e}"));
            assert!(
                out.status.success(),
                "nft: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        nft("table inet tetherfault\ndelete table inet tetherfault\n");
        if percent == 0 {
            return;
        }
        let verdict = if percent >= 100 {
            "drop".to_owned()
        } else {
            format!("numgen random mod 100 < {percent} drop")
        };
        let output = if answers_only {
            String::new()
        } else {
            format!(
                "chain out {{ type filter hook output priority 0; oifname != \"lo\" {verdict}; }}\n"
            )
        };
        nft(&format!(
            "table inet tetherfault {{\n{output}chain in {{ type filter hook input priority 0; iifname != \"lo\" {verdict}; }}\n}}\n"
        ));
    }

    /// The phone's end of the veth down or up (the kernel's link state).
    fn set_link(&self, up: bool) {
        ip(&[
            "-n",
            &self.phone,
            "link",
            "set",
            &self.phone_link,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for netns in [&self.car, &self.phone] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", netns])
                .output();
        }
    }
}

/// Runs `program args` inside `netns`, stdout piped.
fn in_netns(netns: &str, program: &Path, args: &[&str], env: &[(&str, String)]) -> Child {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

/// Collects a child's `@ ` lines with their arrival time.
fn collect(child: &mut Child, marker: bool) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
    let sink = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            let line = if marker {
                match line.strip_prefix("@ ") {
                    Some(ours) => ours.to_owned(),
                    None => continue,
                }
            } else {
                line
            };
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    lines
}

async fn until_line(
    lines: &Arc<Mutex<Vec<(Instant, String)>>>,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> bool {
    let give_up = Instant::now() + within;
    while Instant::now() < give_up {
        if lines.lock().unwrap().iter().any(|(_, l)| pred(l)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn send(stdin: &mut ChildStdin, line: &str) {
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
}

fn acks(lines: &Arc<Mutex<Vec<(Instant, String)>>>) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l.starts_with("ack "))
        .count()
}

fn self_args() -> [&'static str; 4] {
    [
        "--exact",
        "netfault_child",
        "--nocapture",
        "--test-threads=1",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_sessions_recover_from_loss_delay_reordering_and_a_link_down_and_run_each_command_once()
{
    fault_run(Route::Lan).await;
}

/// The same over the relay (SPEC §19): phone → MQTT broker → car, with the
/// phone's TCP connection to the broker crossing the veth. Loss is the
/// kernel's (nftables in the phone's namespace: TCP retransmits), the delay
/// and jitter the injector's (in order: a TCP stream does not reorder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_relay_sessions_recover_from_loss_delay_and_a_link_down_and_run_each_command_once() {
    fault_run(Route::Relay).await;
}

async fn fault_run(route: Route) {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the network-fault test makes network namespaces (ip netns): run it as root"
    );
    let phone_dir = tempfile::tempdir().unwrap();
    let car_dir = tempfile::tempdir().unwrap();
    {
        let phone = Phone::open(config(phone_dir.path())).unwrap();
        phone.create_account().unwrap();
        common::enroll_car_in(&phone, car_dir.path());
    }
    let net = Namespaces::create(if route == Route::Lan { 'l' } else { 'r' });
    let tether = PathBuf::from(env!("CARGO_BIN_EXE_tether"));
    let me = std::env::current_exe().unwrap();
    let car_dir_s = car_dir.path().display().to_string();
    let port = CAR_PORT.to_string();
    let broker_url = format!("mqtt://127.0.0.1:{BROKER_PORT}");
    let mut car_args = vec!["head-unit", "--data-dir", &car_dir_s, "--port", &port];
    let mut broker = None;
    if route == Route::Relay {
        let mut child = in_netns(
            &net.car,
            &tether,
            &["broker", "--port", &BROKER_PORT.to_string()],
            &[],
        );
        let broker_lines = collect(&mut child, false);
        assert!(
            until_line(&broker_lines, Duration::from_secs(20), |l| l
                .contains("broker at"))
            .await,
            "the broker did not start in the car's namespace"
        );
        broker = Some(child);
        car_args.extend(["--broker", &broker_url]);
    }
    let mut car = in_netns(&net.car, &tether, &car_args, &[]);
    let car_lines = collect(&mut car, false);
    assert!(
        until_line(&car_lines, Duration::from_secs(20), |l| l
            .starts_with("head unit serving on"))
        .await,
        "the head unit did not start in its namespace"
    );
    let mut injector = in_netns(
        &net.car,
        &me,
        &self_args(),
        &[
            (CHILD_ENV, "injector".into()),
            ("TETHER_NETFAULT_ROUTE", route.name().into()),
        ],
    );
    let injector_lines = collect(&mut injector, true);
    assert!(until_line(&injector_lines, Duration::from_secs(20), |l| l == "ready").await);
    let mut injector_in = injector.stdin.take().unwrap();
    let mut phone = in_netns(
        &net.phone,
        &me,
        &self_args(),
        &[
            (CHILD_ENV, "phone".into()),
            ("TETHER_NETFAULT_ROUTE", route.name().into()),
            (
                "TETHER_NETFAULT_DIR",
                phone_dir.path().display().to_string(),
            ),
        ],
    );
    let lines = collect(&mut phone, true);
    let mut phone_in = phone.stdin.take().unwrap();
    assert!(
        until_line(&lines, Duration::from_secs(20), |l| l.starts_with("ack ")).await,
        "no command got through before any fault"
    );

    // Each fault for a while, then cleared: a command must get through
    // within 30 s of clearing it.
    let lan_faults: &[(&str, &str, u64)] = &[
        ("loss 5 %", "loss 0.05", 8),
        ("loss 20 %", "loss 0.20", 8),
        ("delay 50–300 ms (jitter reorders)", "delay 50 300", 8),
        ("reordering (25 % held 100 ms)", "reorder 0.25 100", 8),
        ("veth down for 5 s", "link-down", 5),
        // The car runs what arrives but its answers are lost: the phone
        // retries those keys on a new session and must get the receipts
        // of what already ran, not a second run.
        ("answers lost for 4 s", "answer-loss 1.0", 4),
    ];
    let relay_faults: &[(&str, &str, u64)] = &[
        ("loss 5 % (kernel)", "kernel-loss 5", 8),
        ("loss 20 % (kernel)", "kernel-loss 20", 8),
        ("delay 50–300 ms (in order)", "delay 50 300", 8),
        ("veth down for 5 s", "link-down", 5),
        ("answers lost for 4 s (kernel)", "kernel-answer-loss", 4),
    ];
    let faults = if route == Route::Lan {
        lan_faults
    } else {
        relay_faults
    };
    let mut report = Vec::new();
    for &(name, fault, seconds) in faults {
        let before = acks(&lines);
        match fault.split_once(' ').map_or(fault, |(kind, _)| kind) {
            "link-down" => net.set_link(false),
            "kernel-loss" => net.set_kernel_loss(fault[12..].parse().unwrap(), false),
            "kernel-answer-loss" => net.set_kernel_loss(100, true),
            _ => send(&mut injector_in, fault).await,
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let during = acks(&lines) - before;
        net.set_link(true);
        net.set_kernel_loss(0, false);
        send(&mut injector_in, "clear").await;
        let cleared = Instant::now();
        let at_clear = acks(&lines);
        let give_up = Instant::now() + Duration::from_secs(30);
        while acks(&lines) <= at_clear && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let recovered = acks(&lines) > at_clear;
        assert!(
            recovered,
            "{name}: no command got through within 30 s of clearing it"
        );
        let recovery = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, l)| *at >= cleared && l.starts_with("ack "))
            .map(|(at, _)| at.duration_since(cleared))
            .next()
            .unwrap_or_default();
        report.push(format!(
            "{name}: {during} commands completed during the fault, next one {} ms after clearing",
            recovery.as_millis()
        ));
    }
    send(&mut phone_in, "stop").await;
    assert!(
        until_line(&lines, Duration::from_secs(60), |l| l == "done").await,
        "the phone did not finish"
    );
    let _ = phone.kill().await;
    let _ = injector.kill().await;
    let _ = car.kill().await;
    if let Some(mut broker) = broker {
        let _ = broker.kill().await;
    }

    // Exactly once: one receipt per key, sequences exactly 1..=N.
    let lines = lines.lock().unwrap().clone();
    let mut receipts: BTreeMap<u64, (u64, i32)> = BTreeMap::new();
    let mut retries = 0;
    for (_, line) in &lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("ack") => {
                let n: u64 = words[1].parse().unwrap();
                let previous =
                    receipts.insert(n, (words[2].parse().unwrap(), words[3].parse().unwrap()));
                assert!(previous.is_none(), "command {n} answered twice");
            }
            Some("retry") => retries += 1,
            _ => {}
        }
    }
    let count = receipts.len() as u64;
    assert!(count > 20, "too few commands to mean anything: {count}");
    assert_eq!(
        receipts.keys().copied().collect::<Vec<_>>(),
        (0..count).collect::<Vec<_>>(),
        "a command went missing"
    );
    let mut sequences: Vec<u64> = receipts.values().map(|(s, _)| *s).collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=count).collect::<Vec<_>>(),
        "a command ran more than once (a sequence number no receipt shows) or a receipt repeats"
    );
    // The car's latest value is what the last command that succeeded set,
    // and the subscription ended on it.
    let succeeded = CommandState::Succeeded as i32;
    let last_set = receipts
        .iter()
        .rev()
        .find(|(_, (_, state))| *state == succeeded)
        .map(|(n, _)| n.is_multiple_of(2))
        .expect("no command succeeded");
    let value = |prefix: &str| {
        lines
            .iter()
            .rev()
            .find_map(|(_, l)| l.strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_default()
    };
    assert_eq!(value("final "), last_set.to_string(), "the car's state");
    assert_eq!(
        value("sub-last "),
        format!("Some({last_set})"),
        "the subscription did not end on the car's latest value"
    );
    let lost_subscriptions = lines.iter().filter(|(_, l)| l == "sub-lost").count();
    eprintln!(
        "{}: {count} commands, each once ({retries} retries of a key); {lost_subscriptions} subscriptions re-opened\n{}",
        route.name(),
        report.join("\n")
    );
}

/// The children's entry (`TETHER_NETFAULT_CHILD=injector|phone`). Without
/// it: the injector in this process on loopback, against an echo socket —
/// everything through when clear, nothing at 100 % loss, held when delayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netfault_child() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("injector") => {
            let relay = std::env::var("TETHER_NETFAULT_ROUTE").as_deref() == Ok("relay");
            let faults = Arc::new(Mutex::new(Faults::default()));
            let control = faults.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(tokio::io::stdin()).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    control.lock().unwrap().apply(&line);
                }
            });
            if relay {
                let front = tokio::net::TcpListener::bind((CAR_IP, RELAY_FRONT_PORT))
                    .await
                    .unwrap();
                println!("\n@ ready");
                inject_tcp(
                    front,
                    SocketAddr::from(([127, 0, 0, 1], BROKER_PORT)),
                    faults,
                )
                .await;
            } else {
                let front = UdpSocket::bind((CAR_IP, FRONT_PORT)).await.unwrap();
                println!("\n@ ready");
                inject(front, SocketAddr::from(([127, 0, 0, 1], CAR_PORT)), faults).await;
            }
            return;
        }
        Ok("phone") => {
            let dir = PathBuf::from(std::env::var("TETHER_NETFAULT_DIR").unwrap());
            let route = if std::env::var("TETHER_NETFAULT_ROUTE").as_deref() == Ok("relay") {
                Route::Relay
            } else {
                Route::Lan
            };
            phone_child(dir, route).await;
            return;
        }
        _ => {}
    }
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let faults = Arc::new(Mutex::new(Faults::default()));
    tokio::spawn(inject(front, echo_addr, faults.clone()));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(front_addr).await.unwrap();
    let round = |wait: Duration| {
        let client = &client;
        async move {
            client.send(b"ping").await.unwrap();
            let mut buf = [0u8; 16];
            let start = Instant::now();
            match tokio::time::timeout(wait, client.recv(&mut buf)).await {
                Ok(Ok(4)) => Some(start.elapsed()),
                _ => None,
            }
        }
    };
    for _ in 0..20 {
        assert!(
            round(Duration::from_secs(1)).await.is_some(),
            "clear: a datagram was lost"
        );
    }
    faults.lock().unwrap().apply("loss 1.0");
    for _ in 0..20 {
        assert!(
            round(Duration::from_millis(50)).await.is_none(),
            "100 % loss let one through"
        );
    }
    faults.lock().unwrap().apply("clear");
    faults.lock().unwrap().apply("delay 100 100");
    let took = round(Duration::from_secs(2))
        .await
        .expect("delayed, not lost");
    // Held 100 ms each way.
    assert!(took >= Duration::from_millis(200), "not held: {took:?}");
    let mut f = Faults::default();
    faults.lock().unwrap().apply("clear");
    faults.lock().unwrap().apply("answer-loss 1.0");
    assert!(
        round(Duration::from_millis(200)).await.is_none(),
        "an answer got through"
    );
    f.apply("reorder 0.25 100");
    assert_eq!((f.reorder, f.reorder_ms), (0.25, 100));
    f.apply("clear");
    assert_eq!(f, Faults::default());
}
