//! The account's phones and watches a car has heard from (SPEC §19.12,
//! push): whom the receipt of a command left in its mailbox reaches, besides
//! the sender, whether their app is connected or not.
//!
//! The car is not the account's authority and holds no list of the devices
//! enrolled, so it learns a member when one proves itself: a session of the
//! account (LAN or relay) or a letter that opened and verified. The keys
//! are kept in the store's `account_devices` table (with the time first
//! heard), so they survive the car's sleep; they stay on the car (R2).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tether_identity::{Credentials, PUBLIC_KEY_LEN, Role, VerifiedCertificate, may_post_commands};
use tether_store::Store;
use tracing::warn;

use crate::NodeError;
use crate::wire::lock;

/// Members heard, by device public key.
pub(crate) struct KnownMembers {
    store: Arc<Mutex<Store>>,
    heard: Mutex<HashMap<[u8; PUBLIC_KEY_LEN], Role>>,
}

impl std::fmt::Debug for KnownMembers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownMembers")
            .field("heard", &lock(&self.heard).len())
            .finish()
    }
}

impl KnownMembers {
    /// The members the store remembers.
    pub(crate) fn load(store: Arc<Mutex<Store>>) -> Result<Arc<Self>, NodeError> {
        let heard = lock(&store)
            .list_account_devices()?
            .into_iter()
            .filter(|d| d.removed_unix_s.is_none())
            .filter_map(|d| Some((d.public_key, Role::from_proto(d.role)?)))
            .filter(|(_, role)| may_post_commands(*role))
            .collect();
        Ok(Arc::new(Self {
            store,
            heard: Mutex::new(heard),
        }))
    }

    /// Notes a member that proved itself to the car (a session of the
    /// account, not a co-user's; or a letter). Only phones and watches,
    /// the roles that command (R23), are kept. A store failure is logged:
    /// the member is still known until the car stops.
    pub(crate) fn heard(&self, peer: &VerifiedCertificate, now: u64) {
        if !may_post_commands(peer.role) {
            return;
        }
        if lock(&self.heard)
            .insert(peer.public_key, peer.role)
            .is_some()
        {
            return;
        }
        if let Err(e) = lock(&self.store).record_account_device(
            &peer.public_key,
            peer.role.to_proto() as i32,
            peer.serial,
            now,
        ) {
            warn!(error = %e, "remembering a member failed");
        }
    }

    /// The members an answer goes to, other than `except`: every one heard
    /// that is not on the account's revocation list now (SPEC §3.6).
    pub(crate) fn recipients(
        &self,
        credentials: &Credentials,
        except: &[[u8; PUBLIC_KEY_LEN]],
    ) -> Vec<[u8; PUBLIC_KEY_LEN]> {
        let mut out: Vec<_> = lock(&self.heard)
            .keys()
            .filter(|k| !except.contains(k) && !credentials.is_revoked(k))
            .copied()
            .collect();
        out.sort_unstable();
        out
    }
}
