//! `tether pair`: commission a simulated lamp over the simulated Bluetooth
//! radio (SPEC §12, §13). The lamp shows its setup QR code and manual code;
//! the head unit reads the code, finds the lamp by its advert, pairs with
//! SPAKE2 and hands it sealed Wi-Fi credentials until it reports "joined".

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use tether_ble::advert::{Advert, FLAG_PAIRING_OPEN};
use tether_ble::commission::{
    CommissionError, CommissionPlan, CommissionStage, CommissionTimeouts, Commissioned,
    commission_peripheral,
};
use tether_ble::radio::{Central, PeripheralId};
use tether_ble::sim::{SimAir, SimCentral, SimConfig, SimPeripheral};
use tether_ble::sim_device::{SharedLog, SimCommissionee};
use tether_identity::{AccountAuthority, LocalAuthority};
use tether_pairing::pake::PairingError;
use tether_pairing::provision::{Credentials, Network, Outcome, Security};
use tether_pairing::setup::{
    FLAG_BLE, ManualCode, SetupPayload, parse_manual_code, random_passcode,
};

use crate::narrate::Narrator;

/// The simulated lamp's product model.
const LAMP_MODEL: u16 = 0x1a2b;
/// ATT MTU of the simulated links.
const MTU: u16 = 185;
/// How long the head unit scans for the lamp.
const SCAN_WINDOW: Duration = Duration::from_millis(500);

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

/// What the pairing step did besides pairing.
#[derive(Default)]
struct AttemptLog {
    /// Links reconnected after a drop.
    reconnections: u32,
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut out = [0; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| "the system random source failed".to_owned())?;
    Ok(out)
}

fn home() -> Credentials {
    Credentials {
        ssid: b"Tether Demo Home".to_vec(),
        passphrase: b"demo passphrase 1".to_vec(),
        security: Security::Wpa2Personal,
        network: Network::Home,
    }
}

/// The code the head unit read: the full payload (QR) or the manual code.
enum ReadCode {
    Qr(SetupPayload),
    Manual(ManualCode),
}

impl ReadCode {
    fn passcode(&self) -> u32 {
        match self {
            ReadCode::Qr(p) => p.passcode,
            ReadCode::Manual(m) => m.passcode,
        }
    }

    /// Whether an unprovisioned advert may be the device of this code: the
    /// QR holds the whole 12-bit discriminator, the manual code its top 4
    /// bits (SPEC §12.1).
    fn matches(&self, advert: &Advert) -> bool {
        let Advert::Unprovisioned {
            product_model,
            discriminator,
            ..
        } = *advert
        else {
            return false;
        };
        match self {
            ReadCode::Qr(p) => p.discriminator == discriminator && p.product_model == product_model,
            ReadCode::Manual(m) => u16::from(m.short_discriminator) == discriminator >> 8,
        }
    }
}

/// A lamp's setup payload as it boots unprovisioned: a random passcode and
/// discriminator, never derived from a MAC or serial (R2, R6).
fn new_lamp_payload() -> Result<SetupPayload, String> {
    new_payload(LAMP_MODEL)
}

/// The setup payload of a device of `product_model` as it boots
/// unprovisioned.
fn new_payload(product_model: u16) -> Result<SetupPayload, String> {
    Ok(SetupPayload {
        version: 0,
        product_model,
        discriminator: u16::from_be_bytes(random()?) & 0x0fff,
        flags: FLAG_BLE,
        passcode: random_passcode(random()?),
    })
}

/// A simulated air with `loss`, and the lamp of `payload` advertising on it.
fn lamp_on_air(
    payload: &SetupPayload,
    loss: f64,
) -> Result<(SimAir, SimPeripheral, SharedLog), String> {
    let air = SimAir::new(SimConfig {
        loss: loss.clamp(0.0, 0.5),
        latency: Duration::from_millis(3),
        jitter: Duration::from_millis(2),
        seed: u64::from_le_bytes(random()?),
        mtu: MTU,
        ..SimConfig::default()
    });
    let networks = [(home().ssid, home().passphrase)];
    let (lamp, log) = SimCommissionee::new(
        payload.passcode,
        MTU,
        &networks,
        u64::from_le_bytes(random()?),
    )
    .map_err(|e| e.to_string())?;
    let peripheral = air.add_peripheral(Box::new(lamp));
    let advert = Advert::Unprovisioned {
        product_model: payload.product_model,
        discriminator: payload.discriminator,
        flags: FLAG_PAIRING_OPEN,
    };
    peripheral.set_advert(Some(advert.encode().map_err(|e| e.to_string())?));
    Ok((air, peripheral, log))
}

/// Scans and returns the first peripheral whose advert matches `code`, with
/// its RSSI.
async fn find_lamp(
    central: &SimCentral,
    code: &ReadCode,
) -> Result<Option<(PeripheralId, Option<i16>)>, String> {
    Ok(central
        .scan(SCAN_WINDOW)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|r| {
            r.tether_data()
                .map(Advert::decode)
                .is_some_and(|a| a.is_ok_and(|a| code.matches(&a)))
        })
        .map(|r| (r.id, r.rssi)))
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
    let payload = (|| {
        let payload = new_lamp_payload()?;
        let qr = payload.to_qr_string().map_err(|e| e.to_string())?;
        let manual = payload.manual_code().map_err(|e| e.to_string())?;
        Ok::<_, String>((payload, qr, manual))
    })();
    let Ok((payload, qr, manual)) =
        payload.map_err(|e| n.record("lamp shows its setup code", t, Err(e)))
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
    let read = if options.manual {
        parse_manual_code(&manual).map(ReadCode::Manual)
    } else {
        SetupPayload::from_qr_string(&qr).map(ReadCode::Qr)
    };
    let Ok(read) = read.map_err(|e| n.record("head unit reads the code", t, Err(e.to_string())))
    else {
        return Err(());
    };
    n.record(
        "head unit reads the code",
        t,
        Ok(if options.manual {
            "manual code, check digit ok"
        } else {
            "QR string"
        }
        .into()),
    );

    // The lamp advertises on the simulated air.
    let (air, peripheral, log) = match lamp_on_air(&payload, options.loss) {
        Ok(on_air) => on_air,
        Err(e) => {
            n.record("lamp advertises", Instant::now(), Err(e));
            return Err(());
        }
    };

    // Scan and pick the lamp by its advert.
    let t = Instant::now();
    let central = air.central();
    let found = find_lamp(&central, &read).await;
    let id: PeripheralId = match found {
        Ok(Some((id, rssi))) => {
            n.record(
                "scan finds the lamp",
                t,
                Ok(match rssi {
                    Some(dbm) => format!("unprovisioned advert matches the code, RSSI {dbm} dBm"),
                    None => "unprovisioned advert matches the code".to_owned(),
                }),
            );
            id
        }
        Ok(None) => {
            n.record("scan finds the lamp", t, Err("no matching advert".into()));
            return Err(());
        }
        Err(e) => {
            n.record("scan finds the lamp", t, Err(e));
            return Err(());
        }
    };

    // The account authority (in local mode it lives on the owner's phone;
    // here it stands in for it).
    let Ok(mut authority) = LocalAuthority::generate() else {
        n.record(
            "pair, bind and provision",
            Instant::now(),
            Err("cannot make the account authority".into()),
        );
        return Err(());
    };
    // Fresh randomness for each attempt's SPAKE2 and binding nonce.
    let Ok(seeds) = (0..3)
        .map(|_| random::<32>())
        .collect::<Result<Vec<_>, _>>()
    else {
        n.record(
            "pair and provision",
            Instant::now(),
            Err("the system random source failed".into()),
        );
        return Err(());
    };

    if options.wrong_first {
        let t = Instant::now();
        let wrong = if read.passcode() == 1 {
            2
        } else {
            read.passcode() - 1
        };
        let first = attempt(&central, &id, wrong, seeds[0], &mut authority, None).await;
        n.record(
            "a mistyped passcode is refused",
            t,
            match first {
                Err(CommissionError::Pairing(PairingError::WrongPasscode)) => {
                    Ok("wrong passcode; the lamp counted the attempt (R6)".into())
                }
                other => Err(format!("expected a wrong-passcode refusal, got {other:?}")),
            },
        );
        let t = Instant::now();
        let second = attempt(
            &central,
            &id,
            read.passcode(),
            seeds[1],
            &mut authority,
            None,
        )
        .await;
        n.record(
            "an immediate retry must wait",
            t,
            match second {
                Err(CommissionError::Pairing(PairingError::RetryLater { retry_after_s })) => {
                    tokio::time::sleep(Duration::from_secs(u64::from(retry_after_s))).await;
                    Ok(format!(
                        "the lamp asked to wait {retry_after_s} s (backoff)"
                    ))
                }
                other => Err(format!("expected a backoff, got {other:?}")),
            },
        );
    }

    // Pair and provision.
    let t = Instant::now();
    let mut attempt_log = AttemptLog::default();
    let result = attempt(
        &central,
        &id,
        read.passcode(),
        seeds[2],
        &mut authority,
        options.drop_link.then_some((&peripheral, &mut attempt_log)),
    )
    .await;
    let reconnected = match attempt_log.reconnections {
        0 => String::new(),
        1 => "; the link dropped once and was reconnected".to_owned(),
        n => format!("; the link dropped and was reconnected {n} times"),
    };
    n.record(
        "pair, bind and provision",
        t,
        match &result {
            Ok(Commissioned {
                outcome: Outcome::Joined,
                certificate,
                ..
            }) => Ok(format!(
                "SPAKE2 paired; bound as a device (certificate #{}, no group key); sealed Wi-Fi credentials sent{reconnected}",
                certificate.serial
            )),
            other => Err(format!("{other:?}")),
        },
    );
    let t = Instant::now();
    let joined = log
        .lock()
        .map(|l| l.joined.iter().any(|c| c.ssid == home().ssid))
        .unwrap_or(false);
    n.record(
        "lamp joined the home Wi-Fi",
        t,
        if joined {
            Ok("the lamp reports joined; next it is found on the LAN".into())
        } else {
            Err("the lamp did not join".into())
        },
    );
    let stats = air.stats();
    Ok((
        setup,
        json!({
            "loss": options.loss,
            "pdus_sent": stats.pdus_sent,
            "pdus_lost": stats.pdus_lost,
            "links_dropped": stats.links_dropped,
            "reconnections": attempt_log.reconnections,
        }),
    ))
}

/// Commissions a simulated lamp (a random setup code, read as a QR string)
/// on a fresh simulated air with `authority`: scan, pair, bind, provision.
/// For `tether demo`; returns the lamp's setup QR string and the result.
pub(crate) async fn commission_simulated(
    product_model: u16,
    authority: &mut (dyn AccountAuthority + Send),
) -> Result<SimDevice, String> {
    let payload = new_payload(product_model)?;
    let qr = payload.to_qr_string().map_err(|e| e.to_string())?;
    let code = ReadCode::Qr(SetupPayload::from_qr_string(&qr).map_err(|e| e.to_string())?);
    let (air, _peripheral, log) = lamp_on_air(&payload, 0.0)?;
    let central = air.central();
    let (id, _) = find_lamp(&central, &code)
        .await?
        .ok_or("the device was not heard")?;
    let commissioned = attempt(&central, &id, code.passcode(), random()?, authority, None)
        .await
        .map_err(|e| e.to_string())?;
    // What the device kept from its binding, to serve members on the LAN.
    let (credentials, secret) = log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .binding
        .take()
        .ok_or("the device kept no binding")?;
    if secret != commissioned.device_secret {
        return Err("the device and the car derived different device secrets".into());
    }
    Ok(SimDevice {
        qr,
        commissioned,
        credentials,
        product_model,
    })
}

/// A device commissioned over the simulated radio: what the car learnt and
/// what the device kept.
pub(crate) struct SimDevice {
    /// The setup QR string the head unit read (shown in the terminal).
    pub(crate) qr: String,
    /// The car's side: certificate, device secret, network outcome.
    pub(crate) commissioned: Commissioned,
    /// The device's side: its credentials (role device, no group key).
    pub(crate) credentials: tether_identity::Credentials,
    /// Its product model.
    pub(crate) product_model: u16,
}

/// One commissioning attempt (reconnecting a dropped link, SPEC §12.7),
/// then disconnect. With `drop_link`, the lamp drops the first link as
/// binding starts, and the reconnections are counted.
async fn attempt(
    central: &tether_ble::sim::SimCentral,
    id: &PeripheralId,
    passcode: u32,
    seed: [u8; 32],
    authority: &mut (dyn AccountAuthority + Send),
    mut drop_link: Option<(&SimPeripheral, &mut AttemptLog)>,
) -> Result<Commissioned, CommissionError> {
    let mut dropped = false;
    let mut bind_nonce = [0; 16];
    bind_nonce.copy_from_slice(&seed[16..]);
    let plan = CommissionPlan {
        passcode,
        credentials: home(),
        seed,
        bind_nonce,
        unix_now: tether_node::unix_now(),
    };
    commission_peripheral(
        central,
        id,
        &plan,
        authority,
        CommissionTimeouts::default(),
        |stage| match stage {
            CommissionStage::Paired if !dropped => {
                if let Some((lamp, _)) = &drop_link {
                    dropped = true;
                    lamp.disconnect();
                }
            }
            // The rare stages a user should hear of as they happen (stderr:
            // stdout may be JSON).
            CommissionStage::Reconnecting { retry } => {
                if let Some((_, log)) = &mut drop_link {
                    log.reconnections = retry;
                }
                eprintln!("  the Bluetooth link dropped; reconnecting ({retry})")
            }
            CommissionStage::Waiting { seconds } => {
                eprintln!("  the device asks to wait {seconds} s before pairing again")
            }
            _ => {}
        },
    )
    .await
}
