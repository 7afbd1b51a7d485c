//! `tether soak`: one head unit under a household's load (issue 15, item 3;
//! RELIABILITY.md §3). In one process on loopback: a head unit with its real
//! store, `sessions` concurrent member sessions of the owner's phone, and
//! lock/unlock commands spread evenly over them at `rate` per second for
//! `seconds` — first quiet, then again while a stranger's phone makes
//! `flood` connection attempts. Every command carries its own idempotency
//! key; one that failed is retried once with the same key afterwards.
//! Reports latency (p50/p99), the rate reached, memory per session, and the
//! two invariants: 0 lost (every command ends with a receipt) and 0
//! duplicated (the car actuated exactly once per key).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tether_node::{CommandState, HeadUnit, NodeConfig, NodeError, Phone, VehicleLink, commands};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct SoakOptions {
    pub(crate) sessions: usize,
    pub(crate) rate: u32,
    pub(crate) seconds: u64,
    pub(crate) flood: usize,
    pub(crate) json: bool,
    /// Load a home hub instead: its members' task requests (SPEC §18.8).
    pub(crate) hub: bool,
}

impl SoakOptions {
    /// The figures: 1,000 sessions, 10,000 commands/s, 60 s per
    /// phase, 10,000 non-member attempts.
    pub(crate) fn full(json: bool) -> Self {
        Self {
            sessions: 1000,
            rate: 10_000,
            seconds: 60,
            flood: 10_000,
            json,
            hub: false,
        }
    }

    /// A smoke run of a few seconds.
    pub(crate) fn quick(json: bool) -> Self {
        Self {
            sessions: 50,
            rate: 500,
            seconds: 3,
            flood: 200,
            json,
            hub: false,
        }
    }
}

/// One phase's figures.
#[derive(Debug, Serialize)]
struct Phase {
    commands_sent: u64,
    acknowledged: u64,
    completed: u64,
    failed_then_retried: u64,
    /// Why commands failed before their retry, counted by kind.
    failures: std::collections::BTreeMap<String, u64>,
    achieved_per_s: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    latency_max_us: u64,
}

/// The whole run.
#[derive(Debug, Serialize)]
struct SoakReport {
    /// What was loaded: "head unit" (vehicle commands) or "hub" (task
    /// requests: ListTasks, every tenth a RunTask).
    node: &'static str,
    sessions: usize,
    target_rate_per_s: u32,
    seconds_per_phase: u64,
    setup_s: f64,
    /// Resident memory of the process (head unit and phone together)
    /// before and after the sessions were opened, and the difference per
    /// session (both ends of it).
    rss_before_bytes: u64,
    rss_with_sessions_bytes: u64,
    rss_per_session_bytes: u64,
    quiet: Phase,
    flood: Phase,
    flood_attempts: u64,
    flood_admitted: u64,
    /// Members' p99 during the flood over the quiet p99 (goal ≤ 2).
    flood_p99_ratio: f64,
    /// Requests answered in the end, those whose answer says it was done,
    /// and what the node did: the car's actuations (equal to `completed`),
    /// or the hub's distinct run numbers (equal to the runs it started).
    commands_total: u64,
    completed: u64,
    lost: u64,
    duplicated: u64,
    actuations: u64,
}

fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        data_dir: Some(dir.to_owned()),
        ..NodeConfig::default()
    }
}

/// Resident set size of this process, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A command's key: the phase, the session and its sequence number.
fn key_of(phase: u8, session: usize, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[0] = 0x50;
    key[1] = phase;
    key[2..6].copy_from_slice(&(session as u32).to_be_bytes());
    key[8..16].copy_from_slice(&seq.to_be_bytes());
    key
}

fn command_for(seq: u64) -> tether_node::proto::v1::VehicleCommand {
    if seq.is_multiple_of(2) {
        commands::lock()
    } else {
        commands::unlock()
    }
}

/// One session of the load: what a request is, and how it went.
#[derive(Clone)]
enum Target {
    /// A lock or unlock with its own key, to a head unit.
    Car(Arc<VehicleLink>),
    /// A hub's task requests: `ListTasks`, every tenth a `RunTask` of
    /// `task` (its runs numbered by the hub).
    Hub(Arc<tether_node::HubLink>, u64),
}

/// What one request's answer says.
struct Answer {
    /// The car did it / the hub started a run.
    completed: bool,
    /// The hub's run number, to find a run started twice.
    run: Option<u64>,
}

impl Target {
    async fn send(&self, seq: u64, key: &[u8; 16]) -> Result<Answer, NodeError> {
        match self {
            Target::Car(link) => link
                .command(command_for(seq), key)
                .await
                .map(|outcome| Answer {
                    completed: outcome.state == CommandState::Succeeded,
                    run: None,
                }),
            Target::Hub(link, task) if seq.is_multiple_of(10) => {
                link.tasks().run_task(*task).await.map(|run| Answer {
                    completed: run != 0,
                    run: (run != 0).then_some(run),
                })
            }
            Target::Hub(link, _) => link.tasks().list_tasks().await.map(|tasks| Answer {
                completed: !tasks.is_empty(),
                run: None,
            }),
        }
    }

    /// A failed car command may be retried with its key (it runs at most
    /// once); a hub's `RunTask` has no key, so nothing of the hub's is.
    fn retries(&self) -> bool {
        matches!(self, Target::Car(_))
    }
}

/// What one session's task did in a phase.
#[derive(Default)]
struct SessionRun {
    latencies_us: Vec<u64>,
    sent: u64,
    acked: u64,
    /// Answers that say it was done (the others refused, with a reason).
    completed: u64,
    /// Keys (and sequence numbers) whose request failed; retried later.
    failed: Vec<([u8; 16], u64)>,
    /// Why they failed (the error's text, its first words), counted.
    failures: std::collections::BTreeMap<String, u64>,
    /// Run numbers the hub gave.
    runs: Vec<u64>,
}

/// An error's text up to its first digit (ids and counts vary).
fn failure_kind(e: &NodeError) -> String {
    let text = e.to_string();
    let end = text
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(text.len())
        .min(80);
    text[..end].trim_end().to_owned()
}

/// Sends on `target` every `period`, from `start` until `end`.
async fn drive(
    target: Target,
    phase: u8,
    session: usize,
    period: Duration,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) -> SessionRun {
    let mut run = SessionRun::default();
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        ticks.tick().await;
        if tokio::time::Instant::now() >= end {
            break;
        }
        let key = key_of(phase, session, seq);
        let sent = Instant::now();
        run.sent += 1;
        match target.send(seq, &key).await {
            Ok(answer) => {
                run.acked += 1;
                run.completed += u64::from(answer.completed);
                run.runs.extend(answer.run);
                run.latencies_us
                    .push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Err(e) => {
                run.failed.push((key, seq));
                *run.failures.entry(failure_kind(&e)).or_default() += 1;
            }
        }
        seq += 1;
    }
    run
}

/// Runs one phase over every link; returns its figures and the failures.
async fn phase(
    links: &[Target],
    phase_no: u8,
    options: &SoakOptions,
) -> (Phase, Vec<(usize, [u8; 16], u64)>, Vec<u64>) {
    let n = links.len().max(1);
    let period = Duration::from_secs_f64(n as f64 / f64::from(options.rate.max(1)));
    let begin = tokio::time::Instant::now() + Duration::from_millis(50);
    let end = begin + Duration::from_secs(options.seconds);
    let tasks: Vec<_> = links
        .iter()
        .enumerate()
        .map(|(i, link)| {
            // Spread the sessions' first commands evenly over one period.
            let offset = period.mul_f64(i as f64 / n as f64);
            tokio::spawn(drive(
                link.clone(),
                phase_no,
                i,
                period,
                begin + offset,
                end,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut sent, mut acked, mut completed) = (0, 0, 0);
    let mut failed = Vec::new();
    let mut failures = std::collections::BTreeMap::new();
    let mut runs = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        if let Ok(run) = task.await {
            runs.extend(run.runs);
            for (kind, count) in run.failures {
                *failures.entry(kind).or_default() += count;
            }
            sent += run.sent;
            acked += run.acked;
            completed += run.completed;
            latencies.extend(run.latencies_us);
            failed.extend(run.failed.into_iter().map(|(k, s)| (i, k, s)));
        }
    }
    latencies.sort_unstable();
    let elapsed = options.seconds.max(1) as f64;
    (
        Phase {
            commands_sent: sent,
            acknowledged: acked,
            completed,
            failed_then_retried: failed.len() as u64,
            failures,
            achieved_per_s: acked as f64 / elapsed,
            latency_p50_us: percentile(&latencies, 0.50),
            latency_p99_us: percentile(&latencies, 0.99),
            latency_max_us: latencies.last().copied().unwrap_or(0),
        },
        failed,
        runs,
    )
}

/// A stranger's phone (another account) trying to connect: `attempts`
/// spread evenly over `over` (at most 32 in flight), until `stop` is set.
/// Returns (made, admitted).
async fn flood(
    stranger: Arc<Phone>,
    address: SocketAddr,
    attempts: usize,
    over: Duration,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let admitted = Arc::new(AtomicU64::new(0));
    let mut made = 0u64;
    if attempts == 0 {
        return (0, 0);
    }
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    // Paced over 95 % of the phase, so that all are made before it ends.
    let mut ticks = tokio::time::interval(over.mul_f64(0.95).div_f64(attempts as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = tokio::task::JoinSet::new();
    while made < attempts as u64 && !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (stranger, admitted) = (stranger.clone(), admitted.clone());
        running.spawn(async move {
            if stranger.connect(address).await.is_ok() {
                admitted.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
        made += 1;
    }
    while running.join_next().await.is_some() {}
    (made, admitted.load(Ordering::Relaxed))
}

/// Opens `n` sessions, 16 at a time: to the car, or (`hub_task`) to the
/// hub, whose task that is.
async fn open_sessions(
    phone: &Arc<Phone>,
    address: SocketAddr,
    n: usize,
    hub_task: Option<u64>,
) -> Result<Vec<Target>, NodeError> {
    let mut links = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    let mut started = 0;
    while links.len() < n {
        while started < n && pending.len() < 16 {
            let phone = phone.clone();
            pending.spawn(async move {
                match hub_task {
                    Some(task) => phone
                        .connect_hub(address)
                        .await
                        .map(|link| Target::Hub(Arc::new(link), task)),
                    None => phone
                        .connect(address)
                        .await
                        .map(|link| Target::Car(Arc::new(link))),
                }
            });
            started += 1;
        }
        match pending.join_next().await {
            Some(Ok(link)) => links.push(link?),
            Some(Err(_)) => return Err(NodeError::State("a session task failed")),
            None => break,
        }
    }
    Ok(links)
}

/// The node under load, and how to stop it.
enum Served {
    Car(Box<HeadUnit>),
    Hub(Box<tether_node::Hub>),
}

pub(crate) async fn run(options: SoakOptions) -> Result<ExitCode, NodeError> {
    let setup = Instant::now();
    let temp = || {
        tempfile::tempdir().map_err(|_| NodeError::State("cannot make a temporary data directory"))
    };
    let dirs = (temp()?, temp()?, temp()?);
    let phone = Arc::new(Phone::open(config(dirs.0.path()))?);
    phone.create_account()?;
    let (served, address, task) = if options.hub {
        let hub = tether_node::Hub::open(config(dirs.1.path()))?;
        hub.complete_enrollment(&phone.enroll_device(&hub.enrollment_request()?)?)?;
        let host = hub.start(tether_node::Clock::System)?;
        // A task the members run by hand: the porch light on, at once;
        // runs overlap freely (parallel), each gets its own number.
        let porch = tether_node::tether_automation::Task::new(
            tether_node::tether_automation::TaskId(0),
            "porch on",
        )
        .trigger(tether_node::tether_automation::Trigger::Manual)
        .action(tether_node::tether_automation::Action::SetProperty {
            device: tether_node::tether_automation::DeviceId::new("porch"),
            property: tether_node::HOME_SWITCH,
            value: tether_node::tether_automation::Value::Bool(true),
        })
        .mode(tether_node::tether_automation::Mode::Parallel { max: 64 })
        .declare_inputs();
        let task = host
            .create(porch, true, &tether_node::owner_permissions())
            .map_err(NodeError::from)?
            .task
            .id
            .0;
        let address = hub.serve()?;
        (Served::Hub(Box::new(hub)), address, task)
    } else {
        let car = HeadUnit::open(config(dirs.1.path()))?;
        car.complete_enrollment(&phone.enroll_device(&car.enrollment_request()?)?)?;
        let address = car.start().await?;
        (Served::Car(Box::new(car)), address, 0)
    };
    let stranger = Arc::new(Phone::open(config(dirs.2.path()))?);
    stranger.create_account()?;
    let rss_before = rss_bytes();
    let links = open_sessions(
        &phone,
        address,
        options.sessions,
        options.hub.then_some(task),
    )
    .await?;
    let rss_with = rss_bytes();
    let setup_s = setup.elapsed().as_secs_f64();
    let what = if options.hub {
        "hub requests"
    } else {
        "commands"
    };
    if !options.json {
        println!(
            "{} sessions open in {setup_s:.1} s; {} {what}/s for {} s, quiet",
            links.len(),
            options.rate,
            options.seconds
        );
    }
    let (quiet, mut failed, mut runs) = phase(&links, 1, &options).await;
    if !options.json {
        println!(
            "quiet: {} acknowledged ({:.0}/s), p50 {} µs, p99 {} µs; now with {} non-member attempts",
            quiet.acknowledged,
            quiet.achieved_per_s,
            quiet.latency_p50_us,
            quiet.latency_p99_us,
            options.flood
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = tokio::spawn(flood(
        stranger,
        address,
        options.flood,
        Duration::from_secs(options.seconds),
        stop.clone(),
    ));
    let (flooded, failed_flood, flood_runs) = phase(&links, 2, &options).await;
    stop.store(true, Ordering::Relaxed);
    let (flood_attempts, flood_admitted) = flooding.await.unwrap_or((0, 0));
    failed.extend(failed_flood);
    runs.extend(flood_runs);
    // Every failed car command once more, with its key: an answer now is
    // the same command (it ran at most once); still failing is lost. A
    // hub's request that failed is lost (a RunTask has no key to retry).
    let mut lost = 0;
    let mut recovered = 0;
    let mut recovered_completed = 0;
    for (session, key, seq) in &failed {
        let target = &links[*session];
        if !target.retries() {
            lost += 1;
            continue;
        }
        match target.send(*seq, key).await {
            Ok(answer) => {
                recovered += 1;
                recovered_completed += u64::from(answer.completed);
            }
            Err(_) => lost += 1,
        }
    }
    let acked = quiet.acknowledged + flooded.acknowledged + recovered;
    let completed = quiet.completed + flooded.completed + recovered_completed;
    // Done on the node: the car's actuations, or the hub's distinct runs.
    let (actuations, duplicated) = match &served {
        Served::Car(car) => {
            let executions = car.executions().await?;
            let actuations = u64::from(executions.lock) + u64::from(executions.unlock);
            (actuations, actuations.saturating_sub(completed))
        }
        Served::Hub(_) => {
            let started = runs.len() as u64;
            runs.sort_unstable();
            runs.dedup();
            (runs.len() as u64, started - runs.len() as u64)
        }
    };
    let report = SoakReport {
        sessions: links.len(),
        target_rate_per_s: options.rate,
        seconds_per_phase: options.seconds,
        setup_s,
        rss_before_bytes: rss_before,
        rss_with_sessions_bytes: rss_with,
        rss_per_session_bytes: rss_with.saturating_sub(rss_before) / links.len().max(1) as u64,
        flood_p99_ratio: flooded.latency_p99_us as f64 / quiet.latency_p99_us.max(1) as f64,
        quiet,
        flood: flooded,
        flood_attempts,
        flood_admitted,
        commands_total: acked,
        completed,
        lost,
        duplicated,
        node: if options.hub { "hub" } else { "head unit" },
        actuations,
    };
    for link in &links {
        match link {
            Target::Car(link) => link.close(),
            Target::Hub(link, _) => link.close(),
        }
    }
    match served {
        Served::Car(car) => car.shutdown().await?,
        Served::Hub(hub) => hub.stop_serving(),
    }
    // The car: every receipt that says SUCCEEDED is one actuation. The
    // hub: every run number it gave is a distinct run (`duplicated`).
    let ok = report.lost == 0
        && report.duplicated == 0
        && report.flood_admitted == 0
        && (options.hub || report.actuations == report.completed);
    if options.json {
        if !crate::print_json(&report) {
            return Ok(ExitCode::FAILURE);
        }
    } else {
        println!(
            "flood: {} acknowledged ({:.0}/s), p50 {} µs, p99 {} µs ({:.2}× quiet); {} attempts, {} admitted",
            report.flood.acknowledged,
            report.flood.achieved_per_s,
            report.flood.latency_p50_us,
            report.flood.latency_p99_us,
            report.flood_p99_ratio,
            report.flood_attempts,
            report.flood_admitted
        );
        let (answered, done) = if options.hub {
            ("requests answered", "distinct runs started")
        } else {
            ("commands with a receipt", "actuations")
        };
        println!(
            "{} {answered} ({} completed), {} {done}: {} lost, {} duplicated; {} B resident per session",
            report.commands_total,
            report.completed,
            report.actuations,
            report.lost,
            report.duplicated,
            report.rss_per_session_bytes
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
