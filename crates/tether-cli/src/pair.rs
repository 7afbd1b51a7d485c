//! `tether pair`: commission a simulated lamp over the simulated Bluetooth
//! radio (SPEC §12, §13), through the node (`HeadUnit::commission`). The
//! lamp shows its setup QR code and manual code; the head unit reads the
//! code, finds the lamp by its advert, pairs with SPAKE2, binds it with the
//! owner phone's authority and hands it sealed Wi-Fi credentials until it
//! reports "joined".

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tether_node::{
    CommissionProgress, CommissionReport, CommissionRequest, HeadUnit, HomeNetwork, NetworkOutcome,
    NodeConfig, NodeError, Phone, SetupCode, SimulatedAccessory,
};

use crate::narrate::Narrator;

/// The simulated lamp's product model.
const LAMP_MODEL: u16 = 0x1a2b;

/// Options of `tether pair`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairOptions {
    pub(crate) json: bool,
    /// Read the 11-digit manual code instead of the QR string.
    pub(crate) manual: bool,
    /// First try a mistyped passcode, to show the refusal and the backoff.
    pub(crate) wrong_first: bool,
    /// PDU loss of the simulated air (each loss is retransmitted).
    pub(crate) loss: f64,
    /// The lamp drops the link once, when the commissioner starts binding
    /// it, to show the reconnection (SPEC §12.7).
    pub(crate) drop_link: bool,
}

/// The demo's home network.
pub(crate) fn home() -> HomeNetwork {
    HomeNetwork {
        ssid: b"Tether Demo Home".to_vec(),
        passphrase: b"demo passphrase 1".to_vec(),
    }
}

pub(crate) fn render_qr(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build())
}

/// Runs `tether pair`. Exit code 0 only if the lamp joined (and, with
/// `wrong_first`, the wrong passcode was refused and the lamp asked to wait).
pub(crate) async fn run(options: PairOptions) -> ExitCode {
    let mut n = Narrator {
        json: options.json,
        steps: Vec::new(),
    };
    let outcome = narrate(&mut n, options).await;
    let ok = outcome.is_ok() && n.steps.iter().all(|s| s.ok);
    if options.json {
        let (setup, stats) = outcome.unwrap_or_default();
        println!(
            "{}",
            json!({ "ok": ok, "steps": n.steps, "setup": setup, "radio": stats })
        );
    } else {
        println!(
            "{}",
            if ok {
                "pairing: every step behaved as described"
            } else {
                "pairing: FAILED"
            }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn narrate(
    n: &mut Narrator,
    options: PairOptions,
) -> Result<(serde_json::Value, serde_json::Value), ()> {
    // The lamp boots unprovisioned: a random passcode and discriminator,
    // never derived from a MAC or serial (R2, R6).
    let t = Instant::now();
    let shown =
        SimulatedAccessory::power_on(LAMP_MODEL, &[home()], options.loss).and_then(|lamp| {
            let qr = lamp.setup_qr()?;
            let manual = lamp.manual_code()?;
            Ok((lamp, qr, manual))
        });
    let Ok((lamp, qr, manual)) =
        shown.map_err(|e| n.record("lamp shows its setup code", t, Err(e.to_string())))
    else {
        return Err(());
    };
    if !options.json {
        match render_qr(&qr) {
            Ok(art) => println!("{art}"),
            Err(e) => println!("(cannot draw the QR code: {e})"),
        }
        println!("  setup code {qr}   manual code {manual}\n");
    }
    n.record(
        "lamp shows its setup code",
        t,
        Ok(format!("QR {qr}, manual code {manual}")),
    );
    let setup = json!({ "qr": qr, "manual_code": manual });

    // The head unit reads the code.
    let t = Instant::now();
    let read = SetupCode::parse(if options.manual { &manual } else { &qr });
    let Ok(code) = read.map_err(|e| n.record("head unit reads the code", t, Err(e.to_string())))
    else {
        return Err(());
    };
    n.record(
        "head unit reads the code",
        t,
        Ok(if code.is_manual() {
            "manual code, check digit ok"
        } else {
            "QR string"
        }
        .into()),
    );

    // The owner's phone hosts the account authority; the car commissions.
    let nodes = async {
        let owner = Phone::open(NodeConfig::default())?;
        owner.create_account()?;
        let car = HeadUnit::open(NodeConfig::default())?;
        car.complete_enrollment(&owner.enroll_device(&car.enrollment_request()?)?)?;
        car.start().await?;
        Ok::<_, NodeError>((owner, car))
    }
    .await;
    let (owner, car) = match nodes {
        Ok(nodes) => nodes,
        Err(e) => {
            n.record("scan finds the lamp", Instant::now(), Err(e.to_string()));
            return Err(());
        }
    };
    let result = commission_steps(n, options, &lamp, &code, &owner, &car).await;
    let _ = car.shutdown().await;
    let reconnections = result?;
    let t = Instant::now();
    n.record(
        "lamp joined the home Wi-Fi",
        t,
        if lamp.joined(&home().ssid) {
            Ok("the lamp reports joined; next it is found on the LAN".into())
        } else {
            Err("the lamp did not join".into())
        },
    );
    let stats = lamp.radio_stats();
    Ok((
        setup,
        json!({
            "loss": options.loss,
            "pdus_sent": stats.pdus_sent,
            "pdus_lost": stats.pdus_lost,
            "links_dropped": stats.links_dropped,
            "reconnections": reconnections,
        }),
    ))
}

/// When each progress event came.
type Heard = Arc<Mutex<Vec<(Instant, CommissionProgress)>>>;

/// One `HeadUnit::commission` call that also drops the lamp's link once
/// when asked; what it heard.
async fn commission_once(
    car: &HeadUnit,
    owner: &Phone,
    lamp: &SimulatedAccessory,
    code: SetupCode,
    drop_link: bool,
) -> (
    Result<CommissionReport, NodeError>,
    Vec<(Instant, CommissionProgress)>,
) {
    let heard: Heard = Arc::default();
    let log = heard.clone();
    let mut dropped = false;
    let result = match owner.authority() {
        Ok(mut authority) => {
            car.commission(
                &lamp.central(),
                &mut authority,
                &CommissionRequest::new(code, "Lamp", home()),
                |p| {
                    if p == CommissionProgress::Paired && drop_link && !dropped {
                        dropped = true;
                        lamp.drop_link();
                    }
                    // The rare stages a user should hear of as they happen
                    // (stderr: stdout may be JSON).
                    match p {
                        CommissionProgress::Reconnecting { retry } => {
                            eprintln!("  the Bluetooth link dropped; reconnecting ({retry})")
                        }
                        CommissionProgress::Waiting { seconds } => {
                            eprintln!("  the device asks to wait {seconds} s before pairing again")
                        }
                        _ => {}
                    }
                    log.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((Instant::now(), p));
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    let heard = heard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    (result, heard)
}

/// The scan, the optional mistyped attempt and its backoff, and the
/// commissioning itself; the reconnections it made.
async fn commission_steps(
    n: &mut Narrator,
    options: PairOptions,
    lamp: &SimulatedAccessory,
    code: &SetupCode,
    owner: &Phone,
    car: &HeadUnit,
) -> Result<u32, ()> {
    let t = Instant::now();
    let first_code = if options.wrong_first {
        code.mistyped()
    } else {
        code.clone()
    };
    let (first, heard) = commission_once(
        car,
        owner,
        lamp,
        first_code,
        options.drop_link && !options.wrong_first,
    )
    .await;
    let found = heard.iter().find_map(|(at, p)| match p {
        CommissionProgress::Found { rssi } => Some((*at, *rssi)),
        _ => None,
    });
    let Some((found_at, rssi)) = found else {
        n.record(
            "scan finds the lamp",
            t,
            Err(match first {
                Err(e) => e.to_string(),
                Ok(_) => "no matching advert".into(),
            }),
        );
        return Err(());
    };
    n.record(
        "scan finds the lamp",
        t,
        Ok(match rssi {
            Some(dbm) => format!("unprovisioned advert matches the code, RSSI {dbm} dBm"),
            None => "unprovisioned advert matches the code".to_owned(),
        }),
    );
    let (result, started) = if options.wrong_first {
        n.record(
            "a mistyped passcode is refused",
            found_at,
            match &first {
                Err(e) if e.is_wrong_passcode() => {
                    Ok("wrong passcode; the lamp counted the attempt (R6)".into())
                }
                other => Err(format!("expected a wrong-passcode refusal, got {other:?}")),
            },
        );
        let t = Instant::now();
        let (second, _) = commission_once(car, owner, lamp, code.clone(), false).await;
        n.record(
            "an immediate retry must wait",
            t,
            match second.as_ref().err().and_then(NodeError::retry_after_s) {
                Some(seconds) => {
                    tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
                    Ok(format!("the lamp asked to wait {seconds} s (backoff)"))
                }
                None => Err(format!("expected a backoff, got {second:?}")),
            },
        );
        let t = Instant::now();
        let (third, _) = commission_once(car, owner, lamp, code.clone(), options.drop_link).await;
        (third, t)
    } else {
        (first, found_at)
    };
    let reconnections = result.as_ref().map_or(0, |r| r.reconnections);
    let reconnected = match reconnections {
        0 => String::new(),
        1 => "; the link dropped once and was reconnected".to_owned(),
        n => format!("; the link dropped and was reconnected {n} times"),
    };
    let ok = n.record(
        "pair, bind and provision",
        started,
        match &result {
            Ok(report) if report.outcome == NetworkOutcome::Joined => Ok(format!(
                "SPAKE2 paired; bound as a device (certificate #{}, no group key); sealed Wi-Fi credentials sent; kept by the head unit{reconnected}",
                report.serial
            )),
            other => Err(format!("{other:?}")),
        },
    );
    if ok { Ok(reconnections) } else { Err(()) }
}
