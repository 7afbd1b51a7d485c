//! Share grants in the node (R16, R19; SPEC §17).
//!
//! The owner's phone signs a scoped, expiring grant for a co-user's account,
//! installs it on the car over its own session, and hands the co-user an
//! invite (the grant and its key). The car admits the co-user's phone under
//! the grant, refuses every request outside its scope, keeps it working when
//! the owner logs out, and on revocation closes the co-user's live sessions
//! at once and refuses new ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tether_discovery::{Advertiser, AdvertiserConfig};
use tether_identity::{GrantKey, Role, SharePermission, VerifiedGrant, verify_grant};
use tether_proto::v1::{
    Envelope, InstallShareGrant, Request, RevokeShareGrant, ShareGrant, ShareGrantStatus, envelope,
    request, response,
};
use tether_session::quic::{CloseCode, SessionCloser};
use tether_session::{GRANT_ID_LEN, Grantee, Grantees};
use tether_store::{ShareGrantRecord, Store};
use tracing::{info, warn};

use crate::NodeError;
use crate::wire::lock;

/// What the owner shares with a co-user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareOptions {
    /// What the co-user may do; anything else is refused.
    pub permissions: Vec<SharePermission>,
    /// Public keys of the devices covered (none: no device).
    pub devices: Vec<[u8; 32]>,
    /// How long the grant lasts, in seconds from now.
    pub valid_for_s: u64,
    /// The sharer's nickname, shown to the co-user (R22). At most 64 bytes.
    pub nickname: String,
}

/// A grant the owner issued: its id (to revoke it) and the invite to hand to
/// the co-user over a channel both trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedShare {
    /// Names the grant.
    pub grant_id: [u8; GRANT_ID_LEN],
    /// The encoded `ShareInvite` (holds the grant key: a secret).
    pub invite: Vec<u8>,
}

/// A grant a co-user holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldShare {
    /// Names the grant.
    pub grant_id: [u8; GRANT_ID_LEN],
    /// Who shared it (R22).
    pub sharer_nickname: String,
    /// What it allows.
    pub permissions: Vec<SharePermission>,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

/// The owner's request to install a grant on the car.
pub(crate) fn install_request(grant: &ShareGrant, key: &GrantKey) -> Envelope {
    crate::wire::request(request::Kind::InstallShareGrant(InstallShareGrant {
        grant: Some(grant.clone()),
        grant_key: key.as_bytes().to_vec(),
    }))
}

/// The owner's request to revoke a grant.
pub(crate) fn revoke_request(grant_id: &[u8; GRANT_ID_LEN]) -> Envelope {
    crate::wire::request(request::Kind::RevokeShareGrant(RevokeShareGrant {
        grant_id: grant_id.to_vec(),
    }))
}

/// Reads the car's answer to a share request.
pub(crate) fn share_status(reply: Envelope) -> Result<ShareGrantStatus, NodeError> {
    match crate::wire::answer(reply)? {
        response::Kind::ShareGrant(status) => Ok(status),
        _ => Err(NodeError::UnexpectedResponse("not a share grant status")),
    }
}

/// What the serving loop does with one request of a session.
pub(crate) enum Gate {
    /// In scope: hand it to the service.
    Forward,
    /// Out of scope: answer `PERMISSION_DENIED` with this message.
    Deny(&'static str),
    /// A share request from a member: the node answers it. Boxed: a
    /// request kind is large.
    Share(Box<request::Kind>),
    /// The grant this session ran under has expired: close it.
    Expired,
}

/// The permission a co-user needs for a request (SPEC §17.4); `None` for
/// requests any authenticated peer may make.
fn required_permission(kind: &request::Kind) -> Option<SharePermission> {
    match kind {
        request::Kind::Ping(_) => None,
        request::Kind::GetSignals(_) | request::Kind::Subscribe(_) => {
            Some(SharePermission::VehicleStatus)
        }
        request::Kind::Command(_) => Some(SharePermission::VehicleControl),
        kind if crate::devices::device_permission(kind).is_some() => {
            crate::devices::device_permission(kind)
        }
        // Anything else (share requests, which are handled before this is
        // asked, and kinds without a mapping) is refused to a co-user:
        // `Unspecified` is in no grant.
        _ => Some(SharePermission::Unspecified),
    }
}

/// Waits between the attempts to store a revocation before the owner gets
/// the answer (about 1.5 s in all).
const REVOKE_RETRIES_MS: [u64; 4] = [100, 200, 400, 800];
/// Then, how often the write is tried again in the background.
const REVOKE_BACKGROUND_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Live sessions admitted under one grant.
type Live = HashMap<[u8; GRANT_ID_LEN], Vec<(u64, SessionCloser)>>;

/// The head unit's grants: verified grants in force, the listener's
/// admission table, the live co-user sessions, and one discovery advertiser
/// per grant.
pub(crate) struct ShareRegistry {
    store: Arc<Mutex<Store>>,
    owner_authority: [u8; 32],
    grantees: Arc<Grantees>,
    grants: Mutex<HashMap<[u8; GRANT_ID_LEN], VerifiedGrant>>,
    live: Mutex<Live>,
    members: Mutex<Vec<(u64, SessionCloser)>>,
    next_session: AtomicU64,
    /// The car's advert, whose key each grant's advert replaces.
    advert: AdvertiserConfig,
    advertisers: Mutex<HashMap<[u8; GRANT_ID_LEN], Advertiser>>,
    /// Each grant's key (SPEC §17.1): the car answers at its relay
    /// rendezvous topics (§19.2) and reads its mailbox (§19.12) while the
    /// grant is in force.
    grant_keys: Mutex<HashMap<[u8; GRANT_ID_LEN], GrantKey>>,
    /// Bumped whenever `grant_keys` changes.
    grant_keys_changed: tokio::sync::watch::Sender<u64>,
    /// The grants whose mailbox the car reads on the relay (SPEC §19.12);
    /// `None` while no relay mailbox follows the grants.
    mailboxes_open:
        tokio::sync::watch::Sender<Option<std::collections::HashSet<[u8; GRANT_ID_LEN]>>>,
    /// One timer per grant in force, ending it at its `not_after` (R16).
    expiries: Mutex<HashMap<[u8; GRANT_ID_LEN], tokio::task::AbortHandle>>,
    /// This registry, for the expiry timers (which must not keep it alive).
    this: Weak<ShareRegistry>,
}

/// A grant's mailbox on the relay (SPEC §19.12): where its co-user leaves
/// letters for the car.
#[derive(Clone)]
pub(crate) struct GrantMailbox {
    pub(crate) grant_id: [u8; GRANT_ID_LEN],
    pub(crate) key: tether_identity::MailboxKey,
    /// The co-user account's authority, under which its certificates verify.
    pub(crate) grantee_authority: [u8; 32],
}

/// Unregisters a session when its serving task ends.
pub(crate) struct Registration {
    registry: Arc<ShareRegistry>,
    grant: Option<[u8; GRANT_ID_LEN]>,
    id: u64,
}

impl Registration {
    /// The session's number, unique among the registry's live sessions.
    pub(crate) fn session(&self) -> tether_control::SessionId {
        tether_control::SessionId(self.id)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        match &self.grant {
            Some(g) => {
                if let Some(list) = lock(&self.registry.live).get_mut(g) {
                    list.retain(|(id, _)| *id != self.id);
                }
            }
            None => lock(&self.registry.members).retain(|(id, _)| *id != self.id),
        }
    }
}

impl ShareRegistry {
    /// Loads the grants in force from the store and admits their grantees.
    pub(crate) fn load(
        store: Arc<Mutex<Store>>,
        owner_authority: [u8; 32],
        grantees: Arc<Grantees>,
        advert: AdvertiserConfig,
        now: u64,
    ) -> Result<Arc<Self>, NodeError> {
        let records = lock(&store).active_share_grants(now)?;
        let registry = Arc::new_cyclic(|this| Self {
            store,
            owner_authority,
            grantees,
            grants: Mutex::default(),
            live: Mutex::default(),
            members: Mutex::default(),
            next_session: AtomicU64::new(1),
            advert,
            advertisers: Mutex::default(),
            grant_keys: Mutex::default(),
            grant_keys_changed: tokio::sync::watch::Sender::new(0),
            mailboxes_open: tokio::sync::watch::Sender::new(None),
            expiries: Mutex::default(),
            this: this.clone(),
        });
        for record in records {
            let Ok(signed) = ShareGrant::decode(record.grant.as_slice()) else {
                warn!("a stored share grant does not decode; skipped");
                continue;
            };
            match verify_grant(&signed, &owner_authority, now) {
                Ok(grant) => registry.admit(grant, &GrantKey::from_bytes(&record.grant_key)?)?,
                Err(e) => warn!(error = %e, "a stored share grant is no longer valid; skipped"),
            }
        }
        Ok(registry)
    }

    fn admit(&self, grant: VerifiedGrant, key: &GrantKey) -> Result<(), NodeError> {
        // The table itself refuses the grant past `not_after` (R16), even
        // before the timer below has removed it.
        self.grantees.insert(Grantee {
            grant_id: grant.grant_id,
            admission_key: key.admission_key(),
            authority_public_key: grant.grantee_authority_public_key,
            not_before: grant.not_before,
            not_after: grant.not_after,
        });
        let advertiser = Advertiser::start(AdvertiserConfig {
            discovery_key: key.discovery_key(),
            ..self.advert.clone()
        })?;
        if let Some(old) = lock(&self.advertisers).insert(grant.grant_id, advertiser) {
            drop(old);
        }
        let (grant_id, not_after) = (grant.grant_id, grant.not_after);
        lock(&self.grants).insert(grant.grant_id, grant);
        // After the grant: a watcher reading `mailboxes` finds both.
        lock(&self.grant_keys).insert(grant_id, key.clone());
        self.grant_keys_changed.send_modify(|n| *n += 1);
        self.expire_at(grant_id, not_after);
        Ok(())
    }

    /// Starts (or restarts) the timer that ends a grant once its validity
    /// is over: the first instant after the second `not_after`. The wall
    /// clock is read again on waking, so a clock that moved is followed.
    fn expire_at(&self, grant_id: [u8; GRANT_ID_LEN], not_after: u64) {
        let this = self.this.clone();
        let timer = tokio::spawn(async move {
            let end = UNIX_EPOCH + Duration::from_secs(not_after.saturating_add(1));
            while let Ok(left) = end.duration_since(SystemTime::now()) {
                // At most an hour at a time: a clock set forward is noticed.
                tokio::time::sleep(left.min(Duration::from_secs(3600)) + Duration::from_millis(1))
                    .await;
            }
            if let Some(registry) = this.upgrade() {
                registry.expire(&grant_id, crate::config::unix_now()).await;
            }
        });
        if let Some(old) = lock(&self.expiries).insert(grant_id, timer.abort_handle()) {
            old.abort();
        }
    }

    /// A grant's validity ended (R16; SPEC §17.5): it leaves the admission
    /// table and the grants in force, every live session under it is closed
    /// with code 6 (`share expired`), and its advert is withdrawn, so its
    /// holder neither resolves the car's token nor reaches its certificate
    /// any more. The store keeps the record (it is no longer active).
    /// Nothing happens if the grant in force is valid at `now` (installed
    /// again with a later end) or gone (revoked).
    async fn expire(&self, grant_id: &[u8; GRANT_ID_LEN], now: u64) {
        {
            let mut grants = lock(&self.grants);
            match grants.get(grant_id) {
                Some(grant) if grant.not_after < now => {}
                _ => return,
            }
            // Under the lock, so an install of the same grant cannot slip in.
            self.grantees.remove(grant_id);
            grants.remove(grant_id);
        }
        lock(&self.expiries).remove(grant_id);
        let sessions = lock(&self.live).remove(grant_id).unwrap_or_default();
        for (_, closer) in &sessions {
            closer.close(CloseCode::Revoked, "share expired");
        }
        self.forget_relay_key(grant_id);
        let advertiser = lock(&self.advertisers).remove(grant_id);
        if let Some(advertiser) = advertiser
            && let Err(e) = advertiser.shutdown().await
        {
            warn!(error = %e, "withdrawing an expired grant's advert failed");
        }
        info!(sessions = sessions.len(), "share grant expired");
    }

    /// Tracks a session so a revocation or a logout can close it.
    pub(crate) fn register(
        self: &Arc<Self>,
        grant: Option<[u8; GRANT_ID_LEN]>,
        closer: SessionCloser,
    ) -> Registration {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        match &grant {
            Some(g) => {
                lock(&self.live)
                    .entry(*g)
                    .or_default()
                    .push((id, closer.clone()));
                // A handshake that finished while its grant was being
                // revoked or expired would miss the sweep of live sessions:
                // close it here (R16).
                if !lock(&self.grants).contains_key(g) {
                    closer.close(CloseCode::Revoked, "share ended");
                }
            }
            None => lock(&self.members).push((id, closer)),
        }
        Registration {
            registry: self.clone(),
            grant,
            id,
        }
    }

    /// Decides what happens to one request of a peer of `role` (SPEC
    /// §17.4, §17.5).
    pub(crate) fn gate(
        &self,
        role: Role,
        grant: Option<&[u8; GRANT_ID_LEN]>,
        envelope: &Envelope,
        now: u64,
    ) -> Gate {
        let Some(envelope::Body::Request(Request { kind: Some(kind) })) = &envelope.body else {
            // Malformed: the service answers BAD_REQUEST.
            return Gate::Forward;
        };
        let share = matches!(
            kind,
            request::Kind::InstallShareGrant(_) | request::Kind::RevokeShareGrant(_)
        );
        let Some(grant_id) = grant else {
            return match (share, role) {
                (false, _) => Gate::Forward,
                // The owner's phone installs and revokes grants; a watch,
                // a hub or another vehicle of the account does not (R16,
                // R23).
                (true, Role::Phone) => Gate::Share(Box::new(kind.clone())),
                (true, _) => Gate::Deny("only the owner's phone manages share grants"),
            };
        };
        // R16: a co-user can never manage grants (no escalation).
        if share {
            return Gate::Deny("a co-user may not manage share grants");
        }
        let grants = lock(&self.grants);
        let Some(verified) = grants.get(grant_id) else {
            return Gate::Expired;
        };
        if !verified.is_valid_at(now) {
            return Gate::Expired;
        }
        match required_permission(kind) {
            None => Gate::Forward,
            Some(p) if verified.permissions.allows(p) => Gate::Forward,
            Some(_) => Gate::Deny("outside the scope of the share grant"),
        }
    }

    /// Handles a member's share request (install or revoke).
    pub(crate) async fn handle(
        self: &Arc<Self>,
        kind: request::Kind,
        now: u64,
    ) -> Result<ShareGrantStatus, (tether_proto::v1::ErrorCode, String)> {
        use tether_proto::v1::ErrorCode;
        match kind {
            request::Kind::InstallShareGrant(install) => {
                let signed = install
                    .grant
                    .ok_or((ErrorCode::BadRequest, "missing grant".to_owned()))?;
                let grant = verify_grant(&signed, &self.owner_authority, now)
                    .map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
                let key = GrantKey::from_bytes(&install.grant_key)
                    .map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
                let record = ShareGrantRecord {
                    grant_id: grant.grant_id,
                    grant: signed.encode_to_vec(),
                    grant_key: *key.as_bytes(),
                    not_after: grant.not_after,
                    revoked_unix_s: None,
                };
                if let Some(old) = lock(&self.store)
                    .get_share_grant(&grant.grant_id)
                    .map_err(|e| (ErrorCode::Internal, e.to_string()))?
                    && old.revoked_unix_s.is_some()
                {
                    // A revoked grant stays revoked: the owner issues a new one.
                    return Err((
                        ErrorCode::PermissionDenied,
                        "this share grant was revoked".to_owned(),
                    ));
                }
                lock(&self.store)
                    .put_share_grant(&record)
                    .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
                let grant_id = grant.grant_id;
                self.admit(grant, &key)
                    .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
                self.until_mailbox_open(&grant_id).await;
                info!("share grant installed");
                Ok(ShareGrantStatus {
                    grant_id: grant_id.to_vec(),
                    active: true,
                    sessions_closed: 0,
                })
            }
            request::Kind::RevokeShareGrant(revoke) => {
                let grant_id: [u8; GRANT_ID_LEN] = revoke
                    .grant_id
                    .as_slice()
                    .try_into()
                    .map_err(|_| (ErrorCode::BadRequest, "grant id length".to_owned()))?;
                let closed = self
                    .revoke(&grant_id, now)
                    .await
                    .map_err(|e| (ErrorCode::Internal, e.to_string()))?
                    .ok_or((ErrorCode::NotFound, "no such share grant".to_owned()))?;
                Ok(ShareGrantStatus {
                    grant_id: grant_id.to_vec(),
                    active: false,
                    sessions_closed: closed,
                })
            }
            _ => Err((ErrorCode::BadRequest, "not a share request".to_owned())),
        }
    }

    /// Revokes a grant: no new handshake, no resumption, and every live
    /// session under it closed now (R16, R19). `None` if no such grant was
    /// ever installed; revoking twice is not an error.
    ///
    /// Fails closed: the grant leaves memory and its sessions close before
    /// the store is written, so a store error cannot keep a co-user in. The
    /// write is retried ([`REVOKE_RETRIES_MS`]), then again in the
    /// background until it lands, so a restart does not bring the grant
    /// back (SPEC §17.5).
    pub(crate) async fn revoke(
        self: &Arc<Self>,
        grant_id: &[u8; GRANT_ID_LEN],
        now: u64,
    ) -> Result<Option<u32>, NodeError> {
        // Order matters: stop admitting first, then close what is live, so
        // no handshake can slip in between.
        self.grantees.remove(grant_id);
        let in_force = lock(&self.grants).remove(grant_id).is_some();
        let sessions = lock(&self.live).remove(grant_id).unwrap_or_default();
        for (_, closer) in &sessions {
            closer.close(CloseCode::Revoked, "share revoked");
        }
        self.forget_relay_key(grant_id);
        let advertiser = lock(&self.advertisers).remove(grant_id);
        if let Some(advertiser) = advertiser
            && let Err(e) = advertiser.shutdown().await
        {
            warn!(error = %e, "withdrawing a revoked grant's advert failed");
        }
        let mut stored = self.store_revocation(grant_id, now);
        for wait_ms in REVOKE_RETRIES_MS {
            let Err(e) = &stored else { break };
            warn!(error = %e, "storing a revocation failed; retrying");
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            stored = self.store_revocation(grant_id, now);
        }
        let known = match stored {
            Ok(known) => known || in_force,
            Err(e) if in_force => {
                // In force until now: it is revoked in memory already, and
                // must stay so across a restart.
                warn!(error = %e, "a revocation is not stored yet; retrying in the background");
                let registry = Arc::downgrade(self);
                let grant_id = *grant_id;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(REVOKE_BACKGROUND_RETRY).await;
                        let Some(registry) = registry.upgrade() else {
                            return;
                        };
                        if registry.store_revocation(&grant_id, now).is_ok() {
                            info!("a revocation was stored after retries");
                            return;
                        }
                    }
                });
                true
            }
            Err(e) => return Err(e),
        };
        if !known {
            return Ok(None);
        }
        info!(sessions = sessions.len(), "share grant revoked");
        Ok(Some(sessions.len() as u32))
    }

    /// The relay keys of the grants in force (SPEC §19.2).
    pub(crate) fn relay_keys(&self) -> Vec<[u8; 32]> {
        lock(&self.grant_keys)
            .values()
            .map(GrantKey::relay_key)
            .collect()
    }

    /// The mailboxes of the grants in force (SPEC §19.12, co-users): each
    /// grant's id, mailbox key and grantee authority.
    pub(crate) fn mailboxes(&self) -> Vec<GrantMailbox> {
        let keys = lock(&self.grant_keys);
        let grants = lock(&self.grants);
        keys.iter()
            .filter_map(|(id, key)| {
                grants.get(id).map(|g| GrantMailbox {
                    grant_id: *id,
                    key: key.mailbox_key(),
                    grantee_authority: g.grantee_authority_public_key,
                })
            })
            .collect()
    }

    /// The car's mailbox reports which grants' mailboxes it reads.
    pub(crate) fn mailboxes_open(&self, open: std::collections::HashSet<[u8; GRANT_ID_LEN]>) {
        self.mailboxes_open.send_replace(Some(open));
    }

    /// Waits (at most 2 s) until the car reads `grant_id`'s mailbox on the
    /// relay, if it has a relay: installing a grant then returns once the
    /// broker queues its co-user's letters (SPEC §19.12).
    async fn until_mailbox_open(&self, grant_id: &[u8; GRANT_ID_LEN]) {
        let mut open = self.mailboxes_open.subscribe();
        if open.borrow().is_none() {
            return;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            open.wait_for(|o| o.as_ref().is_none_or(|o| o.contains(grant_id))),
        )
        .await;
    }

    /// Changes whenever a grant comes or goes (its relay rendezvous and its
    /// mailbox follow it).
    pub(crate) fn watch_grant_keys(&self) -> tokio::sync::watch::Receiver<u64> {
        self.grant_keys_changed.subscribe()
    }

    /// A grant ended: the car stops answering at its rendezvous topics.
    fn forget_relay_key(&self, grant_id: &[u8; GRANT_ID_LEN]) {
        if lock(&self.grant_keys).remove(grant_id).is_some() {
            self.grant_keys_changed.send_modify(|n| *n += 1);
        }
    }

    /// Marks a grant revoked in the store; whether the store knew it.
    fn store_revocation(&self, grant_id: &[u8; GRANT_ID_LEN], now: u64) -> Result<bool, NodeError> {
        let mut store = lock(&self.store);
        let known = store.get_share_grant(grant_id)?.is_some();
        if known {
            store.revoke_share_grant(grant_id, now)?;
        }
        Ok(known)
    }

    /// The owner logged out of the car: the owner's sessions close; co-user
    /// sessions admitted by a grant keep working (R16).
    pub(crate) fn owner_logged_out(&self) -> usize {
        let members = std::mem::take(&mut *lock(&self.members));
        for (_, closer) in &members {
            closer.close(CloseCode::Normal, "logged out");
        }
        members.len()
    }

    /// Whether a grant in force allows `permission`.
    pub(crate) fn grant_allows(
        &self,
        grant_id: &[u8; GRANT_ID_LEN],
        permission: SharePermission,
    ) -> bool {
        lock(&self.grants)
            .get(grant_id)
            .is_some_and(|g| g.permissions.allows(permission))
    }

    /// The devices a grant covers (none if it is no longer in force).
    pub(crate) fn grant_devices(&self, grant_id: &[u8; GRANT_ID_LEN]) -> Vec<[u8; 32]> {
        lock(&self.grants)
            .get(grant_id)
            .map(|g| g.devices.clone())
            .unwrap_or_default()
    }

    /// How many co-user sessions are live under each grant.
    pub(crate) fn live_sessions(&self) -> usize {
        lock(&self.live).values().map(Vec::len).sum()
    }

    /// Grants in force.
    pub(crate) fn active(&self) -> Vec<VerifiedGrant> {
        lock(&self.grants).values().cloned().collect()
    }

    /// Withdraws every grant advert and stops the expiry timers (shutdown).
    pub(crate) async fn shutdown(&self) {
        for (_, timer) in lock(&self.expiries).drain() {
            timer.abort();
        }
        let all: Vec<Advertiser> = lock(&self.advertisers).drain().map(|(_, a)| a).collect();
        for advertiser in all {
            let _ = advertiser.shutdown().await;
        }
    }
}
