//! `tether demo`: a head unit and two phones in one process, over real
//! loopback mDNS and real QUIC, each step checked.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use tether_node::commands as control;
use tether_node::proto::v1::CommandState;
use tether_node::signals;
use tether_node::{
    CommandOutcome, HeadUnit, Interfaces, LocalIdentifiers, NodeConfig, NodeError, Phone, Reading,
    ShareOptions, SharePermission, SignalData,
};

use crate::narrate::Narrator;

/// How long discovery may take before the demo fails.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the other-account phone browses.
const STRANGER_BROWSE: Duration = Duration::from_secs(3);

fn err(e: NodeError) -> String {
    e.to_string()
}

fn describe(readings: &[Reading]) -> String {
    let find = |path: &str| readings.iter().find(|r| r.path == path).map(|r| &r.value);
    let number = |path: &str| match find(path) {
        Some(SignalData::Number(n)) => format!("{n:.1}"),
        Some(SignalData::Integer(i)) => i.to_string(),
        _ => "?".into(),
    };
    let range_km = match find(signals::RANGE) {
        Some(SignalData::Integer(m)) => format!("{}", m / 1000),
        _ => "?".into(),
    };
    let locked = match find(signals::DOOR_IS_LOCKED[0]) {
        Some(SignalData::Bool(b)) => b.to_string(),
        _ => "?".into(),
    };
    format!(
        "{} signals: battery {}%, range {} km, cabin {} °C, locked {locked}",
        readings.len(),
        number(signals::BATTERY_STATE_OF_CHARGE),
        range_km,
        number(signals::CABIN_TEMPERATURE),
    )
}

fn all_locked(readings: &[Reading]) -> Option<bool> {
    let locks: Vec<bool> = readings
        .iter()
        .filter(|r| signals::DOOR_IS_LOCKED.contains(&r.path.as_str()))
        .filter_map(|r| match r.value {
            SignalData::Bool(b) => Some(b),
            _ => None,
        })
        .collect();
    (!locks.is_empty()).then(|| locks.iter().all(|b| *b))
}

/// Runs the demo. Exit code 0 only if every step behaved as described.
pub(crate) async fn run(
    json: bool,
    interfaces: Interfaces,
    broker: Option<tether_node::RelayConfig>,
) -> Result<ExitCode, NodeError> {
    // The remote path's broker: the one named, or one embedded in this
    // process on loopback (SPEC §19.10), so the demo needs nothing
    // installed.
    let (relay, embedded) = match broker {
        Some(config) => (config, None),
        None => {
            let embedded = tether_node::EmbeddedBroker::start(std::net::SocketAddr::from((
                std::net::Ipv4Addr::LOCALHOST,
                0,
            )))
            .await
            .map_err(|e| NodeError::Relay(tether_node::RelayError::Connect(e.to_string())))?;
            let config = tether_node::RelayConfig::new("127.0.0.1", embedded.addr().port());
            (config, Some(embedded))
        }
    };
    let config = NodeConfig {
        interfaces,
        relay: Some(relay),
        ..NodeConfig::default()
    };
    let mut n = Narrator {
        json,
        steps: Vec::new(),
    };
    if !json {
        println!(
            "Tether demo: a head unit and two phones over loopback mDNS and QUIC (the second\n\
             phone's account first refused, then admitted as a co-user), a lamp\n\
             commissioned over simulated Bluetooth, the remote path through an MQTT\n\
             broker ({}), a home hub running super tasks on a recorded drive, a\n\
             lost phone removed from the account, and a sleeping car.\n",
            if embedded.is_some() {
                "embedded on loopback"
            } else {
                "--broker"
            }
        );
    }
    let total = Instant::now();
    let mut round_trips = json!({ "cold": null, "resumed": null });
    let mut extra = json!({});
    extra["broker"] = json!(if embedded.is_some() {
        "embedded"
    } else {
        "external"
    });
    let outcome = steps(&config, &mut n, &mut round_trips, &mut extra).await;
    if let Err(e) = &outcome {
        n.record("demo aborted", total, Err(e.to_string()));
    }
    if let Some(embedded) = embedded {
        embedded.shutdown().await;
    }
    let ok = outcome.is_ok() && n.steps.iter().all(|s| s.ok);
    if json {
        let report = json!({
            "ok": ok,
            "steps": n.steps,
            "round_trips": round_trips,
            "total_ms": total.elapsed().as_millis() as u64,
            "details": extra,
        });
        println!("{report}");
    } else {
        let passed = n.steps.iter().filter(|s| s.ok).count();
        println!(
            "\n{} of {} steps behaved as described: {}",
            passed,
            n.steps.len(),
            if ok { "OK" } else { "FAILED" }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn steps(
    config: &NodeConfig,
    n: &mut Narrator,
    round_trips: &mut serde_json::Value,
    extra: &mut serde_json::Value,
) -> Result<(), NodeError> {
    // 1. Enrollment: the phone creates the account and hosts its authority;
    //    the car's key is made on the car and only its public half travels.
    let t = Instant::now();
    // Identifiers each node knows about itself; they stay local (R2).
    let phone = Phone::open(NodeConfig {
        identifiers: LocalIdentifiers {
            device_name: Some("Demo Owner's Phone".into()),
            account_uid: Some("demo-uid-1001".into()),
            mac: Some("02:00:5e:10:00:01".into()),
            ..LocalIdentifiers::default()
        },
        ..config.clone()
    })?;
    phone.create_account()?;
    let car = HeadUnit::open(NodeConfig {
        identifiers: LocalIdentifiers {
            device_name: Some("Demo Car".into()),
            vin: Some("LDEMO00000VIN0001".into()),
            device_id: Some("did-demo-car-0001".into()),
            account_uid: Some("demo-uid-1001".into()),
            mac: Some("02:00:5e:10:00:02".into()),
        },
        ..config.clone()
    })?;
    let grant = phone.enroll_device(&car.enrollment_request()?)?;
    car.complete_enrollment(&grant)?;
    let enrolled = phone.is_enrolled() && car.is_enrolled();
    n.record(
        "enroll in one account",
        t,
        if enrolled {
            Ok("phone hosts the authority; car and phone hold certificates".into())
        } else {
            Err("not enrolled".into())
        },
    );

    let t = Instant::now();
    // Super tasks run on the recorded drive's clock (the last steps).
    car.use_manual_clock(crate::demo_tasks::drive_start_ms());
    let address = car.start().await?;
    let token = car.current_token().await.unwrap_or_default();
    n.record(
        "head unit advertises",
        t,
        Ok(format!(
            "mDNS instance {token} (rotating token, TXT v=1 only)"
        )),
    );

    // 2. Discovery: the phone resolves the token with its account key.
    let t = Instant::now();
    let found = phone.discover_vehicle(DISCOVERY_TIMEOUT).await;
    let found = match found {
        Ok(f) if f.address.port() == address.port() => {
            n.record(
                "phone discovers the car",
                t,
                Ok(format!("token resolved to {}", f.address)),
            );
            f
        }
        Ok(f) => {
            n.record(
                "phone discovers the car",
                t,
                Err(format!("resolved the wrong endpoint {}", f.address)),
            );
            return Ok(());
        }
        Err(e) => {
            n.record("phone discovers the car", t, Err(err(e)));
            return Ok(());
        }
    };

    // 3. Authentication.
    let t = Instant::now();
    let link = match phone.connect(found.address).await {
        Ok(link) => link,
        Err(e) => {
            n.record("authenticate", t, Err(err(e)));
            return Ok(());
        }
    };
    round_trips["cold"] = json!(link.round_trips());
    n.record(
        "authenticate",
        t,
        // SPEC §5.6: the first request rides with the TLS Finished.
        if link.round_trips() <= 1 {
            Ok(format!(
                "mutual, account-bound; first request after {} round trip",
                link.round_trips()
            ))
        } else {
            Err(format!("{} round trips, goal ≤ 1", link.round_trips()))
        },
    );

    // 4. Status.
    let t = Instant::now();
    let status = link.get(Vec::new()).await;
    let before = match &status {
        Ok(r) => all_locked(r),
        Err(_) => None,
    };
    n.record(
        "read vehicle status",
        t,
        status
            .as_ref()
            .map(|r| describe(r))
            .map_err(|e| e.to_string()),
    );

    // 5. Subscribe to the door locks.
    let t = Instant::now();
    let lock_paths: Vec<String> = signals::DOOR_IS_LOCKED
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut sub = link.subscribe(lock_paths).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
    let initial = match first {
        Ok(Ok(Some(r))) => all_locked(&r),
        _ => None,
    };
    n.record(
        "subscribe to door locks",
        t,
        match initial {
            Some(locked) => Ok(format!("current value: locked = {locked}")),
            None => Err("no initial values".into()),
        },
    );

    // 6. Lock.
    let t = Instant::now();
    let key = random_key()?;
    let first_lock = link.command(control::lock(), &key).await;
    let ok_lock = matches!(&first_lock, Ok(o) if o.state == CommandState::Succeeded);
    n.record(
        "lock the doors",
        t,
        match &first_lock {
            Ok(o) if ok_lock => Ok(format!("{} ; receipt #{} verified", states(o), o.sequence)),
            Ok(o) => Err(format!("ended {:?} ({:?})", o.state, o.reason)),
            Err(e) => Err(e.to_string()),
        },
    );

    let t = Instant::now();
    let pushed = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
    let pushed_locked = match pushed {
        Ok(Ok(Some(r))) => all_locked(&r),
        _ => None,
    };
    n.record(
        "subscription shows the change",
        t,
        if pushed_locked == Some(true) && before != Some(true) {
            Ok("pushed: locked = true".into())
        } else {
            Err(format!(
                "expected a push with locked = true, got {pushed_locked:?}"
            ))
        },
    );
    sub.cancel();

    // 7. Retry with the same idempotency key.
    let t = Instant::now();
    let retry = link.command(control::lock(), &key).await;
    let executions = car.executions().await?;
    let same = match (&first_lock, &retry) {
        (Ok(a), Ok(b)) => a.receipt == b.receipt,
        _ => false,
    };
    extra["lock_executions"] = json!(executions.lock);
    n.record(
        "retry executes at most once",
        t,
        if same && executions.lock == 1 {
            Ok("same signed receipt returned; the car locked once".into())
        } else {
            Err(format!(
                "receipts identical: {same}; lock executions: {}",
                executions.lock
            ))
        },
    );

    // 8. Resume: reconnect with the ticket from the first session.
    let t = Instant::now();
    for _ in 0..100 {
        if phone.has_ticket(found.address).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    link.close();
    let resumed = phone.connect(found.address).await;
    match &resumed {
        Ok(l) => {
            round_trips["resumed"] = json!(l.round_trips());
            // SPEC §5.8: the resumed read travels as early data.
            let good = l.resumed()
                && l.round_trips() == 0
                && l.get(vec![signals::RANGE.into()]).await.is_ok();
            n.record(
                "reconnect resumes",
                t,
                if good {
                    Ok(format!(
                        "resumed; the first read left with the ClientHello ({} round trips before it)",
                        l.round_trips()
                    ))
                } else {
                    Err(format!(
                        "resumed = {}, {} round trips",
                        l.resumed(),
                        l.round_trips()
                    ))
                },
            );
            l.close();
        }
        Err(e) => {
            n.record("reconnect resumes", t, Err(e.to_string()));
        }
    }

    // 9. A phone of another account.
    let t = Instant::now();
    let stranger = Phone::open(config.clone())?;
    stranger.create_account()?;
    let report = stranger.discover(STRANGER_BROWSE).await?;
    extra["stranger_unresolvable_tokens"] = json!(report.unresolvable);
    n.record(
        "other account resolves nothing",
        t,
        if report.resolved.is_empty() {
            Ok(format!(
                "saw {} token(s) it cannot resolve",
                report.unresolvable
            ))
        } else {
            Err(format!("resolved {} endpoint(s)", report.resolved.len()))
        },
    );

    let t = Instant::now();
    let before = car.listener_stats().await.unwrap_or_default();
    let attempt = stranger.connect(found.address).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = car.listener_stats().await.unwrap_or_default();
    n.record(
        "other account is refused",
        t,
        // SPEC §5.4: the car's certificate was sealed for its own account;
        // the stranger could not open it and gave up, having seen nothing.
        match attempt {
            Err(e) if e.is_refused() && after.authenticated == before.authenticated => {
                Ok("not admitted: the car's certificate stayed sealed for its own account".into())
            }
            Err(e) => Err(format!("failed, but not as a refusal: {e}")),
            Ok(_) => Err("a phone of another account was accepted".into()),
        },
    );
    extra["listener"] = json!({
        "authenticated": after.authenticated,
        "refused": after.refused,
        "evicted": after.evicted,
        "timed_out": after.timed_out,
        "abandoned": after.abandoned,
    });

    // 10. Smart devices: commissioned over the simulated radio, back on the
    //     LAN, managed and upgraded through the car (issue 4).
    let mut authority = phone.authority()?;
    let link = phone.connect(found.address).await?;
    let devices =
        crate::demo_devices::device_steps(config, &phone, &car, &link, &mut authority, n, extra)
            .await?;
    link.close();

    // 11. The owner shares the car and the lamp with the other account's
    //     phone as a co-user, logs out, and revokes the share (R16).
    if let Some(devices) = &devices {
        share_steps(&phone, &car, &stranger, found.address, devices, n, extra).await?;
        devices.lamp.shutdown().await?;
        devices.camera.shutdown().await?;
    }

    // 12. The remote path (SPEC §19): the phone leaves home and reaches
    //     the car through the broker; a co-user too, until revoked.
    crate::demo_remote::remote_steps(&phone, &car, &stranger, n, extra).await?;

    // 13. Super tasks across car and home: a hub, a recorded drive, traces,
    //     a shared template, and the "car data to home" switch (issue 5).
    let link = phone.connect(found.address).await?;
    crate::demo_tasks::task_steps(config, &phone, &car, &link, found.address, n, extra).await?;
    link.close();

    // 14. A lost phone: the owner's phone removes a second phone it
    //     enrolled; the car refuses it from the owner's next contact on
    //     (SPEC §3.6).
    crate::demo_removal::removal_steps(config, &phone, &car, found.address, n, extra).await?;

    // 15. The car sleeps: a command left in its mailbox on the broker runs
    //     once when it wakes; one past its deadline does not (SPEC §19.12).
    crate::demo_remote::sleep_steps(&phone, &car, n, extra).await?;

    car.shutdown().await?;
    Ok(())
}

/// The share grant steps of the demo (SPEC §17).
async fn share_steps(
    owner: &Phone,
    car: &HeadUnit,
    co_user: &Phone,
    address: std::net::SocketAddr,
    devices: &crate::demo_devices::DemoDevices,
    n: &mut Narrator,
    extra: &mut serde_json::Value,
) -> Result<(), NodeError> {
    let t = Instant::now();
    let owner_link = owner.connect(address).await?;
    let options = ShareOptions {
        permissions: vec![
            SharePermission::VehicleStatus,
            SharePermission::DeviceControl,
        ],
        devices: vec![devices.lamp_key],
        valid_for_s: 3600,
        nickname: "Demo Owner".into(),
    };
    let issued = owner
        .share(&owner_link, co_user.authority_public_key()?, &options)
        .await?;
    let held = co_user.accept_invite(&issued.invite)?;
    let shared = co_user
        .discover_shared_vehicle(issued.grant_id, DISCOVERY_TIMEOUT)
        .await;
    let co_link = match shared {
        Ok(found) if found.address.port() == address.port() => {
            co_user.connect_shared(issued.grant_id, found.address).await
        }
        Ok(found) => {
            n.record(
                "owner shares with a co-user",
                t,
                Err(format!("the grant token resolved to {}", found.address)),
            );
            return Ok(());
        }
        Err(e) => Err(e),
    };
    let co_link = match co_link {
        Ok(link) => link,
        Err(e) => {
            n.record("owner shares with a co-user", t, Err(err(e)));
            return Ok(());
        }
    };
    let read = co_link.get(vec![signals::RANGE.into()]).await;
    n.record(
        "owner shares with a co-user",
        t,
        match &read {
            Ok(r) if r.len() == 1 => Ok(format!(
                "signed grant installed; the co-user accepted the invite from {:?}, found the car by the grant's own token and reads its status",
                held.sharer_nickname
            )),
            Ok(r) => Err(format!("read {} signals", r.len())),
            Err(e) => Err(e.to_string()),
        },
    );

    // The co-user controls the shared lamp, and sees nothing else.
    let t = Instant::now();
    let controlled = async {
        let list = co_link.list_devices().await?;
        let handle =
            list.first()
                .map(|d| d.handle.clone())
                .ok_or(NodeError::UnexpectedResponse(
                    "the shared lamp is not listed",
                ))?;
        co_link
            .set_device_properties(
                &handle,
                vec![tether_node::proto::v1::PropertyValue {
                    siid: 2,
                    piid: 2,
                    value: Some(tether_node::proto::v1::DeviceValue {
                        kind: Some(tether_node::proto::v1::device_value::Kind::UintValue(70)),
                    }),
                }],
            )
            .await?;
        let renamed = co_link.rename_device(&handle, "Mine").await;
        Ok::<_, NodeError>((list.len(), renamed.is_err()))
    }
    .await;
    let reached = crate::demo_devices::wait_for(
        &devices.lamp,
        2,
        2,
        &tether_node::proto::v1::device_value::Kind::UintValue(70),
    )
    .await;
    n.record(
        "co-user controls the lamp",
        t,
        match controlled {
            Ok((1, true)) if reached => Ok(
                "sees only the shared lamp; set it to 70 %; renaming refused (not granted)".into(),
            ),
            Ok((seen, refused)) => Err(format!(
                "saw {seen} device(s), rename refused {refused}, lamp reached {reached}"
            )),
            Err(e) => Err(err(e)),
        },
    );

    let t = Instant::now();
    let before = car.executions().await?.lock;
    let lock = co_link.command(control::lock(), &random_key()?).await;
    let after = car.executions().await?.lock;
    n.record(
        "co-user held to the grant",
        t,
        match lock {
            Err(NodeError::Control(e))
                if e.code() == Some(tether_node::proto::v1::ErrorCode::PermissionDenied)
                    && before == after =>
            {
                Ok("lock refused: outside the grant's scope; nothing executed".into())
            }
            Err(e) => Err(format!("refused, but not by scope: {e}")),
            Ok(_) => Err("a co-user without vehicle control locked the car".into()),
        },
    );

    let t = Instant::now();
    let closed = car.owner_logged_out().await?;
    let still = co_link.get(vec![signals::RANGE.into()]).await;
    n.record(
        "owner logs out, co-user stays",
        t,
        match still {
            Ok(_) if closed >= 1 => Ok(format!(
                "{closed} owner session(s) closed; the co-user keeps reading"
            )),
            Ok(_) => Err("no owner session was closed".into()),
            Err(e) => Err(format!("the co-user lost access: {e}")),
        },
    );

    // Logged out means refused (SPEC 17.5): the owner's phone comes back
    // only after the owner logs in again on the car's screen.
    let t = Instant::now();
    let refused = match owner.connect(address).await {
        Err(_) => true,
        Ok(link) => link.get(vec![signals::RANGE.into()]).await.is_err(),
    };
    car.owner_logged_in()?;
    let owner_link = owner.connect(address).await?;
    let served = owner_link.get(vec![signals::RANGE.into()]).await.is_ok();
    n.record(
        "owner refused until logged in",
        t,
        match (refused, served) {
            (true, true) => {
                Ok("refused while logged out; served after logging in on the car".into())
            }
            (false, _) => Err("the owner's phone was served while logged out".into()),
            (true, false) => Err("the owner's phone was refused after logging in".into()),
        },
    );

    let t = Instant::now();
    let revoked_at = Instant::now();
    let closed = owner.revoke_share(&owner_link, issued.grant_id).await?;
    let cut = tokio::time::timeout(Duration::from_secs(1), co_link.session().closed()).await;
    let cut_ms = revoked_at.elapsed().as_secs_f64() * 1000.0;
    co_user.forget_tickets().await?;
    let again = co_user.connect_shared(issued.grant_id, address).await;
    extra["revocation_close_ms"] = json!((cut_ms * 10.0).round() / 10.0);
    n.record(
        "revocation cuts the co-user off",
        t,
        match (cut, again) {
            (Ok(_), Err(e)) if e.is_refused() && closed == 1 => Ok(format!(
                "live session closed {cut_ms:.1} ms after the revocation; reconnecting is refused"
            )),
            (Err(_), _) => Err("the co-user's session was still open after 1 s".into()),
            (Ok(_), Ok(_)) => Err("the co-user reconnected after the revocation".into()),
            (Ok(_), Err(e)) => Err(format!("closed {closed} session(s); reconnect: {e}")),
        },
    );
    owner_link.close();
    Ok(())
}

fn states(o: &CommandOutcome) -> String {
    o.states
        .iter()
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("COMMAND_STATE_")
                .to_lowercase()
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

fn random_key() -> Result<Vec<u8>, NodeError> {
    use ring::rand::SecureRandom;
    let mut key = vec![0; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| NodeError::Random)?;
    Ok(key)
}
