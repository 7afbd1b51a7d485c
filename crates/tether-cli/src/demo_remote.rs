//! The demo's remote path (issue 13; SPEC §19): the owner's phone "leaves
//! home" and reads, subscribes and locks through the MQTT broker, a co-user
//! works remotely until the owner revokes the share, and the phone walks
//! back onto the LAN. The broker is the embedded one unless `tether demo
//! --broker` names a real one.

use std::time::{Duration, Instant};

use serde_json::json;
use tether_node::commands as control;
use tether_node::signals;
use tether_node::{
    HeadUnit, MailboxAnswer, NodeError, Phone, ShareOptions, SharePermission, SignalData,
    VehicleRoute, Via,
};

use crate::narrate::Narrator;

/// How long the demo waits for something pushed through the broker.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

fn locked(readings: &[tether_node::Reading]) -> Option<bool> {
    readings.iter().find_map(|r| match r.value {
        SignalData::Bool(b) if r.path == signals::DOOR_IS_LOCKED[0] => Some(b),
        _ => None,
    })
}

/// The remote steps. `owner` and `co_user` must have the broker in their
/// configuration, and `car` must have been started with it.
pub(crate) async fn remote_steps(
    owner: &Phone,
    car: &HeadUnit,
    co_user: &Phone,
    n: &mut Narrator,
    extra: &mut serde_json::Value,
) -> Result<(), NodeError> {
    // The phone walks out of the Wi-Fi with a subscription running: it
    // moves to the broker and keeps delivering.
    let t = Instant::now();
    let mut roaming =
        owner.subscribe_anywhere(vec![signals::DOOR_IS_LOCKED[0].into()], PUSH_TIMEOUT);
    let moved = async {
        roaming.next(owner).await?; // the first values, on the LAN
        let before = roaming.route();
        owner.set_lan_available(false);
        let moved = roaming.next(owner).await?;
        let values = roaming.next(owner).await?;
        Ok::<_, NodeError>((before, moved, values))
    }
    .await;
    n.record(
        "subscription follows off the LAN",
        t,
        match moved {
            Ok((
                Some(before),
                tether_node::RoamEvent::Moved {
                    route: VehicleRoute::Relay,
                    gap_ms,
                },
                tether_node::RoamEvent::Values(_),
            )) if before != VehicleRoute::Relay => {
                extra["lan_to_relay_gap_ms"] = json!(gap_ms);
                Ok(format!(
                    "the phone left the Wi-Fi: its door-lock subscription moved from the LAN to the broker, {gap_ms} ms without values"
                ))
            }
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        },
    );
    drop(roaming);

    // The phone is away from home: the broker only.
    let t = Instant::now();
    let link = match owner.reach_vehicle_via(Via::Relay, PUSH_TIMEOUT).await {
        Ok((link, _)) => link,
        Err(e) => {
            n.record("phone leaves home, via broker", t, Err(e.to_string()));
            return Ok(());
        }
    };
    let cold_ms = t.elapsed().as_millis() as u64;
    let status = link.get(Vec::new()).await;
    extra["relay_cold_connect_ms"] = json!(cold_ms);
    n.record(
        "phone leaves home, via broker",
        t,
        match &status {
            Ok(r) if link.via_relay() && !r.is_empty() => Ok(format!(
                "session through the broker in {cold_ms} ms (same handshake, end to end encrypted; the broker sees pseudonymous topics); {} signals read",
                r.len()
            )),
            Ok(_) => Err("no signals through the broker".into()),
            Err(e) => Err(e.to_string()),
        },
    );

    // Subscribe and lock from afar: the change is pushed back through it.
    let t = Instant::now();
    let pushed = async {
        let unlocked = link.command(control::unlock(), &[0x51; 16]).await?;
        let mut sub = link
            .subscribe(vec![signals::DOOR_IS_LOCKED[0].into()])
            .await?;
        let first = sub.next().await?.unwrap_or_default();
        let outcome = link.command(control::lock(), &[0x52; 16]).await?;
        let update = tokio::time::timeout(PUSH_TIMEOUT, sub.next())
            .await
            .map_err(|_| NodeError::UnexpectedResponse("no update through the broker"))??
            .unwrap_or_default();
        sub.cancel();
        Ok::<_, NodeError>((unlocked, locked(&first), outcome, locked(&update)))
    }
    .await;
    n.record(
        "subscribe and lock via broker",
        t,
        match pushed {
            Ok((unlocked, Some(false), outcome, Some(true)))
                if unlocked.state == tether_node::proto::v1::CommandState::Succeeded
                    && outcome.state == tether_node::proto::v1::CommandState::Succeeded =>
            {
                Ok(format!(
                    "unlocked, subscribed, locked; the update came back through the broker; signed receipt #{} verified",
                    outcome.sequence
                ))
            }
            Ok((_, before, outcome, after)) => Err(format!(
                "lock state {before:?} -> {after:?}, command {:?}",
                outcome.state
            )),
            Err(e) => Err(e.to_string()),
        },
    );

    // A co-user works remotely too, at the grant's own rendezvous, until
    // the owner revokes the share (R16).
    let t = Instant::now();
    let shared = async {
        let issued = owner
            .share(
                &link,
                co_user.authority_public_key()?,
                &ShareOptions {
                    permissions: vec![SharePermission::VehicleStatus],
                    devices: Vec::new(),
                    valid_for_s: 3600,
                    nickname: "Demo Owner".into(),
                },
            )
            .await?;
        co_user.accept_invite(&issued.invite)?;
        let co_link = co_user.connect_shared_via_relay(issued.grant_id).await?;
        let read = co_link.get(vec![signals::RANGE.into()]).await?;
        let refused = co_link
            .command(control::unlock(), &[0x53; 16])
            .await
            .is_err();
        // Its grant's own mailbox (SPEC §19.12): a subscription left there
        // is pushed to the co-user's mailbox, app connected or not.
        co_user
            .push_subscribe_shared(
                issued.grant_id,
                vec![signals::RANGE.into()],
                Duration::from_secs(60),
            )
            .await?;
        let pushed = matches!(
            co_user
                .next_shared_mailbox_reply(issued.grant_id, PUSH_TIMEOUT)
                .await?
                .map(|r| r.answer),
            Some(MailboxAnswer::Signals(values)) if values.len() == 1
        );
        let closed_sessions = owner.revoke_share(&link, issued.grant_id).await?;
        let closed = tokio::time::timeout(PUSH_TIMEOUT, co_link.session().closed())
            .await
            .is_ok();
        // Nobody answers at the grant's rendezvous any more: the attempt
        // gets no session (given 1.5 s here, not the 5 s handshake limit).
        let again = tokio::time::timeout(
            Duration::from_millis(1500),
            co_user.connect_shared_via_relay(issued.grant_id),
        )
        .await;
        Ok::<_, NodeError>((
            read.len(),
            refused,
            pushed,
            closed_sessions,
            closed,
            matches!(again, Ok(Ok(_))),
        ))
    }
    .await;
    n.record(
        "co-user remote, then revoked",
        t,
        match shared {
            Ok((1, true, true, 1, true, false)) => Ok(
                "the co-user read the car through the broker, was refused a command outside the grant, and got the range pushed to its grant's mailbox; the revocation closed its session and its next attempt found no car".into(),
            ),
            Ok(other) => Err(format!(
                "(read, refused, pushed, closed by revoke, closed, came back) = {other:?}"
            )),
            Err(e) => Err(e.to_string()),
        },
    );
    link.close();
    let executions = car.executions().await?;
    extra["remote_executions"] = json!({ "lock": executions.lock, "unlock": executions.unlock });

    // Back home: the automatic path takes the LAN again.
    let t = Instant::now();
    owner.set_lan_available(true);
    let back = owner.reach_vehicle_via(Via::Auto, PUSH_TIMEOUT).await;
    n.record(
        "phone back on the LAN",
        t,
        match back {
            Ok((link, route)) if !link.via_relay() && route != VehicleRoute::Relay => {
                link.close();
                Ok(format!(
                    "with the broker still configured, the car answered on the LAN ({route:?})"
                ))
            }
            Ok((_, route)) => Err(format!("took {route:?}")),
            Err(e) => Err(e.to_string()),
        },
    );
    Ok(())
}

/// The car sleeps (SPEC §19.12): a command left in its mailbox runs once
/// when it wakes and the receipt reaches the phone; one whose deadline
/// passed while it slept is refused and not run. Run last: the car's LAN
/// port changes when it wakes.
pub(crate) async fn sleep_steps(
    owner: &Phone,
    car: &HeadUnit,
    n: &mut Narrator,
    extra: &mut serde_json::Value,
) -> Result<(), NodeError> {
    let t = Instant::now();
    car.shutdown().await?;
    let key = tether_node::new_idempotency_key()?;
    let posted = owner
        .post_command(control::unlock(), key, Duration::from_secs(600))
        .await;
    let expired = owner
        .post_command(
            control::flash_honk(true, false),
            tether_node::new_idempotency_key()?,
            Duration::from_millis(300),
        )
        .await;
    let (posted, expired) = match (posted, expired) {
        (Ok(p), Ok(e)) => (p, e),
        (Err(e), _) | (_, Err(e)) => {
            n.record("car sleeps, unlock queued", t, Err(e.to_string()));
            return Ok(());
        }
    };
    // Past the flash's deadline, before the broker's expiry (1 s).
    let asleep_answers = owner.next_mailbox_reply(Duration::from_millis(400)).await?;
    let before = car.executions().await.ok();
    car.start().await?;
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let wait = if answers.is_empty() {
            PUSH_TIMEOUT
        } else {
            Duration::from_secs(1)
        };
        match owner.next_mailbox_reply(wait).await? {
            Some(reply) => answers.push(reply),
            None => break,
        }
    }
    let executions = car.executions().await?;
    let find = |id: &[u8; 16]| {
        answers
            .iter()
            .find(|a| a.in_reply_to == *id)
            .map(|a| &a.answer)
    };
    n.record(
        "car sleeps, unlock queued",
        t,
        match find(&posted.letter_id) {
            Some(MailboxAnswer::Executed(outcome))
                if asleep_answers.is_none()
                    && before.is_none()
                    && executions.unlock == 1
                    && outcome.state == tether_node::proto::v1::CommandState::Succeeded =>
            {
                Ok(format!(
                    "posted sealed to the car's mailbox while it slept; it woke, ran the unlock once and the signed receipt #{} waited for the phone in its own mailbox",
                    outcome.sequence
                ))
            }
            other => Err(format!(
                "answer {other:?}, unlocks {}, answered while asleep: {}",
                executions.unlock,
                asleep_answers.is_some()
            )),
        },
    );
    let t = Instant::now();
    n.record(
        "expired queued command refused",
        t,
        match find(&expired.letter_id) {
            Some(MailboxAnswer::Refused { code, .. })
                if *code == tether_node::proto::v1::ErrorCode::DeadlineExceeded
                    && executions.flash_honk == 0 =>
            {
                Ok("a flash with a 300 ms deadline, read after the car woke: refused (deadline exceeded) and not run".into())
            }
            // The broker may drop it at its Message Expiry: then nothing runs
            // and nothing answers, which is also right.
            None if executions.flash_honk == 0 => Ok(
                "a flash with a 300 ms deadline: the broker dropped it at its expiry; not run".into(),
            ),
            other => Err(format!("answer {other:?}, flashes {}", executions.flash_honk)),
        },
    );
    extra["mailbox_answers"] = json!(answers.len());
    Ok(())
}
