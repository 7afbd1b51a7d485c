//! The phone's side of the mailbox on the relay (SPEC §19.12): it leaves
//! sealed, signed commands and subscriptions for a sleeping car in the
//! car's mailbox, and reads the car's answers from its own, whose
//! persistent broker session keeps them while the app is away.

use std::time::Duration;

use prost::Message;
use tether_identity::{Credentials, LetterContents, MAILBOX_ID_LEN, MailboxKey, Role};
use tether_proto::v1::{
    CommandReason, CommandReceipt, CommandState, Envelope, ErrorCode, VehicleCommand, envelope,
    response,
};
use tether_relay::{Delivery, Mailbox, RelayConfig, TopicId};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::NodeError;
use crate::config::unix_ms;
use crate::config::unix_now;
use crate::phone::vehicle_link::CommandOutcome;

/// The longest a letter may be valid: the broker keeps a mailbox's session
/// that long ([`tether_relay::mailbox::SESSION_EXPIRY_S`]).
pub const MAX_LETTER_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A command left in the car's mailbox ([`crate::Phone::post_command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedCommand {
    /// The letter's id; the car's answer names it.
    pub letter_id: [u8; MAILBOX_ID_LEN],
    /// The command's idempotency key (post again with it: run once).
    pub idempotency_key: [u8; 16],
    /// Unix milliseconds after which the car will not run it.
    pub not_after_unix_ms: u64,
}

/// What the car answered to a letter.
#[derive(Debug, Clone, PartialEq)]
pub enum MailboxAnswer {
    /// The command ran (or had run: the same receipt); receipt verified
    /// against the car's certified key.
    Executed(CommandOutcome),
    /// Signal values pushed for a subscription left in the mailbox
    /// ([`crate::Phone::push_subscribe`]): the first values, then each
    /// change, while the subscription is valid.
    Signals(Vec<crate::Reading>),
    /// The car did not run it, and says why (`DEADLINE_EXCEEDED`: it woke
    /// after the deadline; `PERMISSION_DENIED`...).
    Refused {
        /// The car's error code.
        code: ErrorCode,
        /// Its text.
        message: String,
    },
}

/// An answer that came to the phone's mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxReply {
    /// The letter it answers.
    pub in_reply_to: [u8; MAILBOX_ID_LEN],
    /// The answer.
    pub answer: MailboxAnswer,
}

/// Letter id → (idempotency key, command) of the commands posted.
type Pending = std::collections::HashMap<[u8; 16], ([u8; 16], VehicleCommand)>;

/// The phone's mailbox session (made on first use) and the commands it is
/// waiting on.
pub(crate) struct PhoneMailbox {
    /// The group key epoch it was opened under.
    pub(crate) epoch: u32,
    pub(crate) key: MailboxKey,
    pub(crate) own: [u8; MAILBOX_ID_LEN],
    pub(crate) mailbox: Mailbox,
    pub(crate) letters: tokio::sync::Mutex<mpsc::Receiver<Delivery>>,
    /// letter id → (idempotency key, command), to check each receipt is
    /// for what was asked.
    pub(crate) pending: std::sync::Mutex<Pending>,
    /// For a share grant's mailbox (a co-user's): the owner's authority,
    /// under which the car's certificate verifies. `None`: the account's.
    pub(crate) owner_authority: Option<[u8; 32]>,
}

impl PhoneMailbox {
    pub(crate) async fn open(
        relay: &RelayConfig,
        credentials: &Credentials,
    ) -> Result<Self, NodeError> {
        let key = credentials
            .group_key()
            .ok_or(NodeError::NotEnrolled)?
            .mailbox_key();
        Self::connect(relay, credentials, key, None).await
    }

    /// A co-user's mailbox under a share grant (SPEC §19.12): the grant's
    /// mailbox key; the car's answers verify under the owner's authority.
    pub(crate) async fn open_shared(
        relay: &RelayConfig,
        credentials: &Credentials,
        grant_key: &tether_identity::GrantKey,
        owner_authority: [u8; 32],
    ) -> Result<Self, NodeError> {
        Self::connect(
            relay,
            credentials,
            grant_key.mailbox_key(),
            Some(owner_authority),
        )
        .await
    }

    async fn connect(
        relay: &RelayConfig,
        credentials: &Credentials,
        key: MailboxKey,
        owner_authority: Option<[u8; 32]>,
    ) -> Result<Self, NodeError> {
        let own = key.member_mailbox(&credentials.certificate().public_key);
        let (mailbox, letters) =
            Mailbox::connect(relay, key.client_id(&own), vec![TopicId(own)]).await?;
        Ok(Self {
            epoch: credentials.group_key_epoch(),
            key,
            own,
            mailbox,
            letters: tokio::sync::Mutex::new(letters),
            pending: std::sync::Mutex::default(),
            owner_authority,
        })
    }

    pub(crate) async fn post(
        &self,
        credentials: &Credentials,
        command: VehicleCommand,
        idempotency_key: [u8; 16],
        valid_for: Duration,
    ) -> Result<PostedCommand, NodeError> {
        let key = tether_control::client::IdempotencyKey::from_bytes(&idempotency_key)
            .ok_or(NodeError::State("idempotency key must be 16 to 32 bytes"))?;
        let request = tether_control::client::command(1, &key, 0, command);
        // Known before it is posted: a `next` already waiting may read the
        // answer before `post` returns.
        let (letter_id, not_after_unix_ms) = self
            .post_to_car(credentials, &request, valid_for, |id| {
                crate::wire::lock(&self.pending).insert(id, (idempotency_key, command));
            })
            .await?;
        Ok(PostedCommand {
            letter_id,
            idempotency_key,
            not_after_unix_ms,
        })
    }

    pub(crate) async fn post_subscription(
        &self,
        credentials: &Credentials,
        paths: &[String],
        valid_for: Duration,
    ) -> Result<PostedCommand, NodeError> {
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let request = tether_control::client::subscribe(1, &paths);
        let (letter_id, not_after_unix_ms) = self
            .post_to_car(credentials, &request, valid_for, |_| {})
            .await?;
        Ok(PostedCommand {
            letter_id,
            idempotency_key: [0; 16],
            not_after_unix_ms,
        })
    }

    /// Seals `request` for the car's mailbox, valid for `valid_for` (1 ms
    /// to 7 days), tells `sealed` its letter id, and posts it; the letter
    /// id and deadline. A failed post forgets the pending command again.
    async fn post_to_car(
        &self,
        credentials: &Credentials,
        request: &Envelope,
        valid_for: Duration,
        sealed: impl FnOnce([u8; MAILBOX_ID_LEN]),
    ) -> Result<([u8; MAILBOX_ID_LEN], u64), NodeError> {
        if valid_for.is_zero() || valid_for > MAX_LETTER_VALIDITY {
            return Err(NodeError::State(
                "a mailbox letter is valid for 1 ms to 7 days",
            ));
        }
        let not_after_unix_ms = unix_ms().saturating_add(valid_for.as_millis() as u64);
        let contents = LetterContents {
            not_after_unix_ms,
            reply_mailbox: self.own,
            payload: request.encode_to_vec(),
            in_reply_to: None,
        };
        let car = self.key.car_mailbox();
        let (letter, letter_id) = self.key.seal(credentials, &car, &contents)?;
        sealed(letter_id);
        // Whole seconds, rounded up: the broker may drop it once the
        // deadline passed, never before.
        let expiry = u32::try_from(valid_for.as_millis().div_ceil(1000)).unwrap_or(u32::MAX);
        if let Err(e) = self.mailbox.post(&TopicId(car), letter, expiry).await {
            crate::wire::lock(&self.pending).remove(&letter_id);
            return Err(e.into());
        }
        Ok((letter_id, not_after_unix_ms))
    }

    /// The next answer from the car, at most `timeout`; `None` when none
    /// came. Letters that do not authenticate, or not from the car, are
    /// dropped.
    pub(crate) async fn next(
        &self,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<Option<MailboxReply>, NodeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut letters = self.letters.lock().await;
        loop {
            let delivery = match tokio::time::timeout_at(deadline, letters.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(NodeError::Relay(tether_relay::RelayError::Closed)),
                Ok(Some(d)) => d,
            };
            let reply = self.read(credentials, &delivery);
            self.mailbox.ack(&delivery).await?;
            match reply {
                Some(reply) => return Ok(Some(reply)),
                None => continue,
            }
        }
    }

    fn read(&self, credentials: &Credentials, delivery: &Delivery) -> Option<MailboxReply> {
        let opened = match &self.owner_authority {
            None => self
                .key
                .open(credentials, &self.own, &delivery.payload, unix_now()),
            Some(owner) => {
                self.key
                    .open_under(credentials, owner, &self.own, &delivery.payload, unix_now())
            }
        };
        let letter = match opened {
            Ok(l) => l,
            Err(e) => {
                debug!(error = %e, "a letter that does not authenticate is dropped");
                return None;
            }
        };
        if letter.sender.role != Role::Vehicle {
            debug!("a letter not from the car is dropped");
            return None;
        }
        let in_reply_to = letter.contents.in_reply_to?;
        let answer = Envelope::decode(letter.contents.payload.as_slice()).ok()?;
        let pending = crate::wire::lock(&self.pending).remove(&in_reply_to);
        let answer = match answer.body {
            Some(envelope::Body::Error(e)) => MailboxAnswer::Refused {
                code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
                message: e.message,
            },
            Some(envelope::Body::Response(tether_proto::v1::Response {
                kind: Some(response::Kind::Signals(values) | response::Kind::Update(values)),
            })) => {
                if let Some(pending) = pending {
                    // A subscription answers many times.
                    crate::wire::lock(&self.pending).insert(in_reply_to, pending);
                }
                MailboxAnswer::Signals(
                    values
                        .values
                        .iter()
                        .filter_map(crate::Reading::from_proto)
                        .collect(),
                )
            }
            Some(envelope::Body::Response(tether_proto::v1::Response {
                kind: Some(response::Kind::CommandStatus(status)),
            })) => {
                let receipt: CommandReceipt = status.receipt?;
                let car_key = letter.sender.public_key;
                let body = match &pending {
                    Some((key, command)) => {
                        let key = tether_control::client::IdempotencyKey::from_bytes(key)?;
                        tether_control::client::verify_receipt_for(
                            &car_key, &receipt, &key, command,
                        )
                    }
                    None => tether_control::client::verify_receipt(&car_key, &receipt),
                };
                let body = match body {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "a mailbox receipt does not verify; dropped");
                        return None;
                    }
                };
                let state =
                    CommandState::try_from(status.state).unwrap_or(CommandState::Unspecified);
                MailboxAnswer::Executed(CommandOutcome {
                    states: vec![state],
                    state,
                    reason: CommandReason::try_from(status.reason)
                        .unwrap_or(CommandReason::Unspecified),
                    sequence: body.sequence,
                    receipt: receipt.encode_to_vec(),
                })
            }
            _ => return None,
        };
        Some(MailboxReply {
            in_reply_to,
            answer,
        })
    }
}
