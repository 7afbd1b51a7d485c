//! Passing the account's revocation list and group key on between members
//! (SPEC §3.6): request 2, `MembershipSync`, after every session to a member.

use std::sync::{Arc, Mutex};

use tether_identity::{Adopted, Credentials, RevocationError};
use tether_proto::v1::{MembershipSync, request, response};
use tether_session::quic::{ClientSession, CloseCode, SessionCloser};
use tether_store::{Store, StoreError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::NodeError;
use crate::wire::{answer, lock, request};

/// A node's view of the account's membership: its credentials (which hold
/// the list and the group key epochs), where they are stored, and a signal
/// raised with the new epoch whenever the group key changes, so the node
/// moves its adverts to the new key.
pub(crate) struct Membership {
    credentials: Arc<Credentials>,
    store: Arc<Mutex<Store>>,
    epoch: watch::Sender<u32>,
    /// Member sessions this node serves, by the peer's public key, so a
    /// removed device's live sessions close when the list arrives.
    live: Mutex<Vec<(u64, [u8; 32], SessionCloser)>>,
    next: std::sync::atomic::AtomicU64,
}

/// Unregisters a served session when dropped.
pub(crate) struct LiveSession {
    membership: Arc<Membership>,
    id: u64,
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        lock(&self.membership.live).retain(|(id, _, _)| *id != self.id);
    }
}

impl Membership {
    pub(crate) fn new(credentials: Arc<Credentials>, store: Arc<Mutex<Store>>) -> Arc<Self> {
        let epoch = credentials.group_key_epoch();
        Arc::new(Self {
            credentials,
            store,
            epoch: watch::Sender::new(epoch),
            live: Mutex::default(),
            next: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// The credentials whose membership this is.
    pub(crate) fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// Tells the new epoch whenever the group key changes.
    pub(crate) fn watch_epoch(&self) -> watch::Receiver<u32> {
        self.epoch.subscribe()
    }

    /// Registers a member session this node serves. A session of a device
    /// the list already names is closed at once.
    pub(crate) fn register(
        self: &Arc<Self>,
        peer_key: [u8; 32],
        closer: SessionCloser,
    ) -> LiveSession {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.live).push((id, peer_key, closer.clone()));
        if self.credentials.is_revoked(&peer_key) {
            closer.close(CloseCode::Revoked, "device removed");
        }
        LiveSession {
            membership: self.clone(),
            id,
        }
    }

    /// Takes `list` (and `group_key`) if newer, stores it, closes the live
    /// sessions of the devices it removes and signals a new epoch.
    pub(crate) fn adopt(
        &self,
        list: &tether_identity::RevocationList,
        group_key: Option<&[u8]>,
    ) -> Result<Adopted, NodeError> {
        self.adopt_storing(list, group_key, |store, credentials| {
            store.save_membership(credentials)
        })
    }

    /// [`Membership::adopt`], with the write done by `save` (which gets the
    /// credentials once they hold the new list): the phone that removed a
    /// device stores its authority and its own membership together.
    pub(crate) fn adopt_storing(
        &self,
        list: &tether_identity::RevocationList,
        group_key: Option<&[u8]>,
        save: impl FnOnce(&mut Store, &Credentials) -> Result<(), StoreError>,
    ) -> Result<Adopted, NodeError> {
        let adopted = self.credentials.adopt(list, group_key)?;
        if let Adopted::Updated { new_epoch } = adopted {
            // The list is in force in memory before the write: a store
            // error must not keep a removed device in (fail closed).
            let saved = save(&mut lock(&self.store), &self.credentials);
            let removed: Vec<SessionCloser> = lock(&self.live)
                .iter()
                .filter(|(_, key, _)| self.credentials.is_revoked(key))
                .map(|(_, _, closer)| closer.clone())
                .collect();
            for closer in &removed {
                closer.close(CloseCode::Revoked, "device removed");
            }
            info!(
                serial = self.credentials.revocation_serial(),
                epoch = self.credentials.group_key_epoch(),
                sessions_closed = removed.len(),
                "revocation list adopted"
            );
            if new_epoch {
                self.epoch.send_replace(self.credentials.group_key_epoch());
            }
            saved?;
        }
        Ok(adopted)
    }

    /// What this node hands over to `peer_key`: its list and current key,
    /// unless the list removes the peer.
    fn offer(&self) -> MembershipSync {
        let serial = self.credentials.revocation_serial();
        MembershipSync {
            serial,
            list: self.credentials.revocation_list().map(|l| l.signed),
            group_key: self
                .credentials
                .group_key()
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// The responder's answer to a `MembershipSync` from an authenticated
    /// member whose public key is `peer_key` (SPEC §3.6).
    pub(crate) fn answer(
        &self,
        peer_key: &[u8; 32],
        sync: &MembershipSync,
    ) -> Result<MembershipSync, RevocationError> {
        if let Some(list) = &sync.list {
            let key = (!sync.group_key.is_empty()).then_some(sync.group_key.as_slice());
            match self.adopt(list, key) {
                Ok(_) => {}
                Err(NodeError::Revocation(e)) => return Err(e),
                // Adopted in memory; the store write is retried at the
                // next change. Not the peer's fault.
                Err(e) => warn!(error = %e, "the revocation list was not stored"),
            }
        }
        let own = self.credentials.revocation_serial();
        if own > sync.serial && !self.credentials.is_revoked(peer_key) {
            Ok(self.offer())
        } else {
            Ok(MembershipSync {
                serial: own,
                ..MembershipSync::default()
            })
        }
    }

    /// The initiator's side, on a fresh session to a member: compares
    /// serials, adopts a newer list the responder hands over, or hands its
    /// own over when the responder's is older.
    pub(crate) async fn sync(&self, session: &ClientSession) -> Result<(), NodeError> {
        let peer = &session.peer().certificate;
        if !peer.role.holds_group_key() || session.peer().grant.is_some() {
            return Ok(());
        }
        let own = self.credentials.revocation_serial();
        let reply = call(
            session,
            MembershipSync {
                serial: own,
                ..MembershipSync::default()
            },
        )
        .await?;
        if let Some(list) = &reply.list {
            let key = (!reply.group_key.is_empty()).then_some(reply.group_key.as_slice());
            self.adopt(list, key)?;
        } else if reply.serial < own && !self.credentials.is_revoked(&peer.public_key) {
            call(session, self.offer()).await?;
        }
        Ok(())
    }
}

impl Membership {
    /// [`Membership::sync`] on a session just opened: a refused handshake
    /// ([`NodeError::is_refused`]: the peer answers `UNAUTHENTICATED`, or
    /// closes as refused) fails the
    /// connection; anything else (a peer closing for its own reasons, such
    /// as a logged-out car, SPEC §17.5) leaves the session to the caller.
    pub(crate) async fn sync_on_connect(&self, session: &ClientSession) -> Result<(), NodeError> {
        match self.sync(session).await {
            Ok(()) => Ok(()),
            // A resumed session is used before the responder has checked
            // the ticket (SPEC §5.5): a refusal may arrive as the session
            // closing under the sync, whatever the close code. A closed
            // session is never handed out as a link.
            Err(e) if e.is_refused() || session.is_closed() => Err(e),
            Err(e) => {
                warn!(error = %e, "membership sync failed");
                Ok(())
            }
        }
    }
}

/// The node's [`Membership`] for `credentials`, made on first use (and anew
/// when the credentials were replaced by an enrollment).
pub(crate) fn membership_of(
    slot: &Mutex<Option<Arc<Membership>>>,
    credentials: &Arc<Credentials>,
    store: &Arc<Mutex<Store>>,
) -> Arc<Membership> {
    let mut slot = lock(slot);
    match &*slot {
        Some(m) if Arc::ptr_eq(&m.credentials, credentials) => m.clone(),
        _ => {
            let m = Membership::new(credentials.clone(), store.clone());
            *slot = Some(m.clone());
            m
        }
    }
}

async fn call(session: &ClientSession, sync: MembershipSync) -> Result<MembershipSync, NodeError> {
    match answer(
        session
            .call(request(request::Kind::MembershipSync(sync)))
            .await?,
    )? {
        response::Kind::MembershipSync(reply) => Ok(reply),
        _ => Err(NodeError::UnexpectedResponse("not a membership answer")),
    }
}
