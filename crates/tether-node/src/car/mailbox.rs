//! The car's side of the mailbox (SPEC §19.12; the phone's is
//! `crate::phone::mailbox`). Commands for a sleeping car: the phone leaves a sealed,
//! signed command with a deadline in the car's mailbox on the broker; the
//! car runs it exactly once when it wakes if the deadline has not passed,
//! and leaves its signed receipt (or why not) in the phone's own mailbox.
//!
//! Exactly once: the broker delivers a letter at least once (QoS 1, acked
//! only after the answer is posted); the car runs the command through its
//! command log, keyed by the sender's principal and the idempotency key, so
//! a second delivery or a replay by the broker gets the same receipt and
//! executes nothing (SPEC §8.3).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use tether_control::{Principal, SessionId};
use tether_identity::{
    Credentials, LetterContents, MAILBOX_ID_LEN, MailboxKey, OpenedLetter, SharePermission,
    may_post_commands,
};
use tether_proto::v1::{Envelope, ErrorCode, envelope, request, response};
use tether_relay::{Delivery, Mailbox, RelayConfig, TopicId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::NodeError;
use crate::car::serve::ServiceInput;
use crate::config::unix_ms;
use crate::config::unix_now;
use crate::members::KnownMembers;
use crate::share::{Gate, ShareRegistry};

/// How long the car's answer waits in the phone's mailbox.
const ANSWER_EXPIRY_S: u32 = 7 * 24 * 3600;

/// How long the car gives a mailbox command to reach its final state.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn error_envelope(code: ErrorCode, message: &str) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Error(tether_proto::v1::Error {
            code: code as i32,
            message: message.into(),
        })),
        ..Envelope::default()
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The car's side (SPEC §19.12): a mailbox session for the current group
/// key, and one for the previous key during its grace, so members that
/// have not caught up with a removal still reach it (§3.6). A new epoch
/// opens the new mailbox at once, while the car is awake: letters posted
/// under the new key while it sleeps later are queued for it.
pub(crate) async fn serve_car_mailbox(
    relay: &RelayConfig,
    membership: Arc<crate::membership::Membership>,
    service: mpsc::UnboundedSender<ServiceInput>,
    stream_ids: Arc<AtomicU64>,
    members: Arc<KnownMembers>,
    shares: Arc<ShareRegistry>,
) -> Result<CarMailbox, NodeError> {
    let credentials = membership.credentials().clone();
    let served = tokio::sync::watch::Sender::new(credentials.group_key_epoch());
    let served_rx = served.subscribe();
    let key = credentials.group_key().ok_or(NodeError::NotEnrolled)?;
    let account = Audience::Account(members.clone());
    let mut current = AbortOnDrop(
        car_mailbox(
            relay,
            key.mailbox_key(),
            account.clone(),
            credentials.clone(),
            service.clone(),
            stream_ids.clone(),
        )
        .await?,
    );
    let mut previous = match credentials.previous_group_key(unix_now()) {
        Some(old) => car_mailbox(
            relay,
            old.mailbox_key(),
            account.clone(),
            credentials.clone(),
            service.clone(),
            stream_ids.clone(),
        )
        .await
        .ok()
        .map(AbortOnDrop),
        None => None,
    };
    // Each share grant's mailbox (SPEC §19.12, co-users).
    let grants = tokio::spawn(follow_grant_mailboxes(
        relay.clone(),
        membership.clone(),
        shares,
        service.clone(),
        stream_ids.clone(),
    ));
    let relay = relay.clone();
    let watched = membership.clone();
    let task = tokio::spawn(async move {
        let mut epochs = membership.watch_epoch();
        while epochs.changed().await.is_ok() {
            let credentials = membership.credentials().clone();
            let Some(key) = credentials.group_key() else {
                continue;
            };
            match car_mailbox(
                &relay,
                key.mailbox_key(),
                account.clone(),
                credentials,
                service.clone(),
                stream_ids.clone(),
            )
            .await
            {
                Ok(fresh) => {
                    // The old epoch's session stays for the grace; the one
                    // before it ends here.
                    previous = Some(std::mem::replace(&mut current, AbortOnDrop(fresh)));
                    served.send_replace(membership.credentials().group_key_epoch());
                    info!("mailbox moved to the new group key epoch");
                }
                Err(e) => warn!(error = %e, "no mailbox under the new group key"),
            }
        }
        drop((current, previous));
    });
    Ok(CarMailbox {
        task,
        grants,
        served: served_rx,
        membership: watched,
    })
}

/// The car's mailbox sessions, for the head unit to stop.
pub(crate) struct CarMailbox {
    task: tokio::task::JoinHandle<()>,
    /// The share grants' mailboxes.
    grants: tokio::task::JoinHandle<()>,
    /// The group key epoch whose mailbox is open.
    served: tokio::sync::watch::Receiver<u32>,
    membership: Arc<crate::membership::Membership>,
}

impl CarMailbox {
    /// Stops it; first waits (at most 2 s) until the mailbox of the epoch
    /// the car holds is open, so a car that goes to sleep right after a key
    /// rotation still gets the letters posted under the new key.
    pub(crate) async fn stop(mut self) {
        let want = self.membership.credentials().group_key_epoch();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.served.wait_for(|epoch| *epoch >= want),
        )
        .await;
        self.task.abort();
        self.grants.abort();
    }
}

/// Whose letters a mailbox session of the car reads (SPEC §19.12).
#[derive(Clone)]
enum Audience {
    /// The account's phones and watches, under the group key's mailbox
    /// key; the members the car heard from are remembered for push.
    Account(Arc<KnownMembers>),
    /// A share grant's co-user, under the grant's mailbox key: its
    /// certificates verify under its own account's authority, and each
    /// letter passes the grant's scope as a session's request would (R16).
    Grant {
        grant_id: [u8; 16],
        grantee_authority: [u8; 32],
        shares: Arc<ShareRegistry>,
    },
}

impl Audience {
    fn open(
        &self,
        key: &MailboxKey,
        own: &[u8; MAILBOX_ID_LEN],
        credentials: &Credentials,
        delivery: &Delivery,
    ) -> Option<OpenedLetter> {
        if delivery.topic.0 != *own {
            return None;
        }
        let opened = match self {
            Audience::Account(_) => key.open(credentials, own, &delivery.payload, unix_now()),
            Audience::Grant {
                grantee_authority, ..
            } => key.open_under(
                credentials,
                grantee_authority,
                own,
                &delivery.payload,
                unix_now(),
            ),
        };
        match opened {
            Ok(letter) => Some(letter),
            Err(e) => {
                debug!(error = %e, "a letter that does not authenticate is dropped");
                None
            }
        }
    }

    /// Who the sender is to the vehicle service, or the refusal to answer
    /// (a co-user's request outside its grant's scope, or a grant no longer
    /// in force).
    fn admit(
        &self,
        letter: &OpenedLetter,
    ) -> Result<tether_control::PeerInfo, (ErrorCode, &'static str)> {
        let role = letter.sender.role;
        match self {
            // Keyed by the sender's device, as its sessions are: a retry
            // over a session with the same key gets the same receipt
            // (SPEC §8.3).
            Audience::Account(_) => Ok(tether_control::PeerInfo::member(role, SessionId(u64::MAX))
                .with_principal(Principal::Device(letter.sender.public_key))),
            Audience::Grant {
                grant_id, shares, ..
            } => {
                let request = Envelope::decode(letter.contents.payload.as_slice())
                    .map_err(|_| (ErrorCode::BadRequest, "the letter holds no envelope"))?;
                match shares.gate(role, Some(grant_id), &request, unix_now()) {
                    Gate::Forward => Ok(tether_control::PeerInfo::co_user(
                        role,
                        SessionId(u64::MAX),
                        shares.grant_allows(grant_id, SharePermission::VehicleLocation),
                    )
                    // A co-user's commands are keyed by its grant, as on
                    // its sessions (SPEC §8.3).
                    .with_principal(Principal::Grant(*grant_id))),
                    Gate::Deny(message) => Err((ErrorCode::PermissionDenied, message)),
                    Gate::Share(_) => Err((
                        ErrorCode::PermissionDenied,
                        "a co-user may not manage share grants",
                    )),
                    Gate::Expired => Err((
                        ErrorCode::PermissionDenied,
                        "the share grant is no longer in force",
                    )),
                }
            }
        }
    }
}

/// One mailbox session of the car under `key` for `audience`, and the
/// task that answers its letters.
async fn car_mailbox(
    relay: &RelayConfig,
    key: MailboxKey,
    audience: Audience,
    credentials: Arc<Credentials>,
    service: mpsc::UnboundedSender<ServiceInput>,
    stream_ids: Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<()>, NodeError> {
    let own = key.car_mailbox();
    let (mailbox, mut letters) =
        Mailbox::connect(relay, key.client_id(&own), vec![TopicId(own)]).await?;
    let mailbox = Arc::new(mailbox);
    Ok(tokio::spawn(async move {
        // Push subscriptions end with this task (their letters stay
        // unacknowledged, so the broker hands them over again on wake).
        let mut pushes = tokio::task::JoinSet::new();
        // The members with a push subscription running, by its letter:
        // they hear every queued command's receipt too.
        let subscribers: Subscribers = Arc::default();
        while let Some(delivery) = letters.recv().await {
            let opened = audience.open(&key, &own, &credentials, &delivery);
            let Some(letter) = opened else {
                // Dropped unanswered; acknowledged so it is not resent.
                let _ = mailbox.ack(&delivery).await;
                continue;
            };
            if let Audience::Account(members) = &audience {
                members.heard(&letter.sender, unix_now());
            }
            let admitted = audience.admit(&letter);
            if let (Ok(peer), Some(request)) = (&admitted, push_request(&letter)) {
                pushes.spawn(push(
                    Push {
                        mailbox: mailbox.clone(),
                        key: key.clone(),
                        own,
                        credentials: credentials.clone(),
                        service: service.clone(),
                        subscribers: subscribers.clone(),
                    },
                    (letter, *peer),
                    request,
                    delivery,
                    stream_ids.clone(),
                ));
                continue;
            }
            let reply = match admitted {
                Ok(peer) => run_letter(&letter, peer, &service, &stream_ids).await,
                Err((code, message)) => error_envelope(code, message),
            };
            let Some((to, sealed)) = seal_answer(&key, &own, &credentials, &letter, &reply) else {
                let _ = mailbox.ack(&delivery).await;
                continue;
            };
            // Every other member that listens hears the receipt too (SPEC
            // §19.12, push): a watch away from the car learns that the
            // phone's queued unlock ran. A grant's listeners are its
            // co-user's own devices only.
            let others: Vec<OpenedLetter> = crate::wire::lock(&subscribers)
                .values()
                .filter(|s| s.sender.public_key != letter.sender.public_key)
                .cloned()
                .collect();
            // And every other phone and watch of the account the car has
            // heard from, listening or not: the broker keeps the answer in
            // its mailbox session until it next connects. Never to a
            // co-user: the owner's commands are not theirs to see.
            let mut except: Vec<_> = others.iter().map(|o| o.sender.public_key).collect();
            except.push(letter.sender.public_key);
            let absent: Vec<OpenedLetter> = match &audience {
                Audience::Account(members) => members
                    .recipients(&credentials, &except)
                    .into_iter()
                    .map(|member| OpenedLetter {
                        contents: LetterContents {
                            reply_mailbox: key.member_mailbox(&member),
                            ..letter.contents.clone()
                        },
                        ..letter.clone()
                    })
                    .collect(),
                Audience::Grant { .. } => Vec::new(),
            };
            let relayed: Vec<OpenedLetter> = others
                .iter()
                .map(|other| OpenedLetter {
                    letter_id: letter.letter_id,
                    ..other.clone()
                })
                .chain(absent)
                .collect();
            for relayed in &relayed {
                if let Some((to, sealed)) = seal_answer(&key, &own, &credentials, relayed, &reply) {
                    post_with_retries(&mailbox, &to, sealed, ANSWER_EXPIRY_S).await;
                }
            }
            // Posted before the letter is acknowledged: a crash in between
            // delivers the letter again, and the command log answers it
            // with the same receipt.
            if post_with_retries(&mailbox, &to, sealed, ANSWER_EXPIRY_S).await
                && let Err(e) = mailbox.ack(&delivery).await
            {
                warn!(error = %e, "acknowledging a letter failed");
            }
        }
        pushes.abort_all();
    }))
}

/// Follows the grants in force (SPEC §19.12, co-users): one mailbox
/// session per grant, opened when it is installed (and at start), closed
/// when it ends. Tells the registry which are open, so installing a grant
/// returns once its mailbox can queue letters.
async fn follow_grant_mailboxes(
    relay: RelayConfig,
    membership: Arc<crate::membership::Membership>,
    shares: Arc<ShareRegistry>,
    service: mpsc::UnboundedSender<ServiceInput>,
    stream_ids: Arc<AtomicU64>,
) {
    let mut open: std::collections::HashMap<[u8; 16], AbortOnDrop> =
        std::collections::HashMap::new();
    let mut changes = shares.watch_grant_keys();
    loop {
        changes.mark_unchanged();
        let wanted = shares.mailboxes();
        // A revoked or expired grant's mailbox is no longer read: its
        // co-user's letters wait unanswered until the broker drops them.
        open.retain(|id, _| wanted.iter().any(|w| w.grant_id == *id));
        for grant in wanted {
            if open.contains_key(&grant.grant_id) {
                continue;
            }
            let audience = Audience::Grant {
                grant_id: grant.grant_id,
                grantee_authority: grant.grantee_authority,
                shares: shares.clone(),
            };
            match car_mailbox(
                &relay,
                grant.key,
                audience,
                membership.credentials().clone(),
                service.clone(),
                stream_ids.clone(),
            )
            .await
            {
                Ok(task) => {
                    open.insert(grant.grant_id, AbortOnDrop(task));
                }
                Err(e) => warn!(error = %e, "no mailbox for a share grant"),
            }
        }
        shares.mailboxes_open(open.keys().copied().collect());
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Posts with a few retries; whether the broker took it.
async fn post_with_retries(
    mailbox: &Mailbox,
    to: &[u8; MAILBOX_ID_LEN],
    sealed: Vec<u8>,
    expiry_s: u32,
) -> bool {
    for wait_ms in [0, 200, 800, 3_000] {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        match mailbox.post(&TopicId(*to), sealed.clone(), expiry_s).await {
            Ok(()) => return true,
            Err(e) => warn!(error = %e, "posting a mailbox answer failed; retrying"),
        }
    }
    false
}

/// What a push subscription needs of the car's mailbox.
struct Push {
    mailbox: Arc<Mailbox>,
    key: MailboxKey,
    own: [u8; MAILBOX_ID_LEN],
    credentials: Arc<Credentials>,
    service: mpsc::UnboundedSender<ServiceInput>,
    subscribers: Subscribers,
}

/// The push subscriptions running, by their letter id.
type Subscribers = Arc<std::sync::Mutex<std::collections::HashMap<[u8; 16], OpenedLetter>>>;

/// A `Subscribe` letter from a member that may read the car (SPEC
/// §19.12): the request, when it is one and still valid.
fn push_request(letter: &OpenedLetter) -> Option<Envelope> {
    let request = Envelope::decode(letter.contents.payload.as_slice()).ok()?;
    let subscribe = matches!(
        &request.body,
        Some(envelope::Body::Request(tether_proto::v1::Request {
            kind: Some(request::Kind::Subscribe(_))
        }))
    );
    (subscribe
        && may_post_commands(letter.sender.role)
        && unix_ms() <= letter.contents.not_after_unix_ms)
        .then_some(request)
}

/// Runs a push subscription until its letter's deadline: every update the
/// vehicle service sends (the first values, then each change) goes to the
/// member's mailbox, whether its app is connected or not. The letter is
/// acknowledged only when the subscription ends, so a car that sleeps and
/// wakes gets it again from the broker and resumes pushing.
async fn push(
    car: Push,
    (letter, peer): (OpenedLetter, tether_control::PeerInfo),
    request: Envelope,
    delivery: Delivery,
    stream_ids: Arc<AtomicU64>,
) {
    let stream = tether_control::StreamId(stream_ids.fetch_add(1, Ordering::Relaxed));
    let (writer, mut answers) = mpsc::unbounded_channel();
    if car
        .service
        .send(ServiceInput::Request {
            stream,
            peer,
            envelope: Box::new(request),
            writer,
        })
        .is_err()
    {
        return;
    }
    crate::wire::lock(&car.subscribers).insert(letter.letter_id, letter.clone());
    let left_ms = letter.contents.not_after_unix_ms.saturating_sub(unix_ms());
    let end = tokio::time::sleep(Duration::from_millis(left_ms));
    tokio::pin!(end);
    info!("push subscription from a member's mailbox started");
    loop {
        tokio::select! {
            answer = answers.recv() => {
                let Some(answer) = answer else { break };
                let last = matches!(answer.body, Some(envelope::Body::Error(_)));
                let expiry = u32::try_from(
                    letter.contents.not_after_unix_ms.saturating_sub(unix_ms()).div_ceil(1000),
                )
                .unwrap_or(u32::MAX)
                .max(1);
                if let Some((to, sealed)) = seal_answer(&car.key, &car.own, &car.credentials, &letter, &answer) {
                    post_with_retries(&car.mailbox, &to, sealed, expiry).await;
                }
                if last {
                    break;
                }
            }
            () = &mut end => break,
        }
    }
    crate::wire::lock(&car.subscribers).remove(&letter.letter_id);
    let _ = car.service.send(ServiceInput::Closed(stream));
    let _ = car.mailbox.ack(&delivery).await;
    info!("push subscription ended");
}

/// Seals `reply` as the car's answer to `letter`, for the sender's mailbox.
fn seal_answer(
    key: &MailboxKey,
    own: &[u8; MAILBOX_ID_LEN],
    credentials: &Credentials,
    letter: &OpenedLetter,
    reply: &Envelope,
) -> Option<([u8; MAILBOX_ID_LEN], Vec<u8>)> {
    let contents = LetterContents {
        not_after_unix_ms: unix_ms().saturating_add(u64::from(ANSWER_EXPIRY_S) * 1000),
        reply_mailbox: *own,
        payload: reply.encode_to_vec(),
        in_reply_to: Some(letter.letter_id),
    };
    match key.seal(credentials, &letter.contents.reply_mailbox, &contents) {
        Ok((sealed, _)) => Some((letter.contents.reply_mailbox, sealed)),
        Err(e) => {
            warn!(error = %e, "sealing a mailbox answer failed");
            None
        }
    }
}

/// Runs a letter's command through the vehicle service, as a request on a
/// session would run (SPEC §8), and returns the final answer.
async fn run_letter(
    letter: &OpenedLetter,
    peer: tether_control::PeerInfo,
    service: &mpsc::UnboundedSender<ServiceInput>,
    stream_ids: &AtomicU64,
) -> Envelope {
    if !may_post_commands(letter.sender.role) {
        return error_envelope(ErrorCode::PermissionDenied, "this role sends no commands");
    }
    // The car's own clock decides; the broker cannot extend a deadline
    // that is inside the signed, sealed letter.
    if unix_ms() > letter.contents.not_after_unix_ms {
        info!("a mailbox command arrived after its deadline: not executed");
        return error_envelope(
            ErrorCode::DeadlineExceeded,
            "the command's deadline passed before the car woke: not executed",
        );
    }
    let Ok(request) = Envelope::decode(letter.contents.payload.as_slice()) else {
        return error_envelope(ErrorCode::BadRequest, "the letter holds no envelope");
    };
    let is_command = matches!(
        &request.body,
        Some(envelope::Body::Request(tether_proto::v1::Request {
            kind: Some(request::Kind::Command(_))
        }))
    );
    if !is_command {
        return error_envelope(
            ErrorCode::Unsupported,
            "a mailbox takes commands and subscriptions only",
        );
    }
    let stream = tether_control::StreamId(stream_ids.fetch_add(1, Ordering::Relaxed));
    let (writer, mut answers) = mpsc::unbounded_channel();
    if service
        .send(ServiceInput::Request {
            stream,
            peer,
            envelope: Box::new(request),
            writer,
        })
        .is_err()
    {
        return error_envelope(ErrorCode::Internal, "the vehicle service stopped");
    }
    let last = tokio::time::timeout(RUN_TIMEOUT, async {
        while let Some(answer) = answers.recv().await {
            let last = match &answer.body {
                Some(envelope::Body::Error(_)) => true,
                Some(envelope::Body::Response(r)) => matches!(
                    &r.kind,
                    Some(response::Kind::CommandStatus(s)) if s.receipt.is_some()
                ),
                _ => false,
            };
            if last {
                return Some(answer);
            }
        }
        None
    })
    .await;
    let _ = service.send(ServiceInput::Closed(stream));
    match last {
        Ok(Some(answer)) => answer,
        Ok(None) => error_envelope(ErrorCode::Internal, "the command ended without a receipt"),
        Err(_) => error_envelope(ErrorCode::DeadlineExceeded, "the command did not finish"),
    }
}
