//! A member's own mDNS adverts across group key epochs (SPEC §3.6, §4.5,
//! §18.8): the car advertises under the discovery key, the hub under the
//! hub discovery key, each derived from the current group key; during a
//! rotation's grace period a second advert stays up under the previous
//! key, so a member that missed the rotation still finds the node.

use std::net::SocketAddr;
use std::sync::Arc;

use tether_discovery::Advertiser;
use tether_identity::{Credentials, GroupKey};
use tether_session::quic::CertificateRotator;
use tracing::{info, warn};

use crate::NodeError;
use crate::config::{NodeConfig, unix_now};
use crate::membership::Membership;

/// Which key of the group key a node advertises under:
/// [`GroupKey::discovery_key`] (the car) or [`GroupKey::hub_discovery_key`]
/// (the hub).
pub(crate) type AdvertKey = fn(&GroupKey) -> [u8; 32];

/// A node's own adverts: under the current epoch's key and, during a group
/// key rotation's grace period, under the previous one.
pub(crate) struct Adverts {
    pub(crate) current: Option<Advertiser>,
    pub(crate) grace: Option<Advertiser>,
}

impl Adverts {
    /// Starts advertising `address` under `credentials`' current group key
    /// and, while its grace lasts, the previous one.
    pub(crate) fn start(
        config: &NodeConfig,
        credentials: &Credentials,
        key_of: AdvertKey,
        address: SocketAddr,
    ) -> Result<Self, NodeError> {
        let group = credentials.group_key().ok_or(NodeError::NotEnrolled)?;
        let grace = credentials
            .previous_group_key(unix_now())
            .map(|k| Advertiser::start(config.advertiser(key_of(&k), address)))
            .transpose()?;
        Ok(Self {
            current: Some(Advertiser::start(
                config.advertiser(key_of(&group), address),
            )?),
            grace,
        })
    }

    /// The label of the token now advertised under the current key.
    pub(crate) fn current_token(&self) -> Option<String> {
        self.current
            .as_ref()
            .map(|a| a.current_token().label().to_owned())
    }

    /// Withdraws both adverts.
    pub(crate) async fn shutdown(adverts: &tokio::sync::Mutex<Self>) -> Result<(), NodeError> {
        let (current, grace) = {
            let mut adverts = adverts.lock().await;
            (adverts.current.take(), adverts.grace.take())
        };
        if let Some(grace) = grace {
            let _ = grace.shutdown().await;
        }
        if let Some(current) = current {
            current.shutdown().await?;
        }
        Ok(())
    }
}

/// Moves a node's adverts to a new group key epoch when `membership`
/// adopts one: the advert under the key just replaced stays up as the
/// grace advert until the list's `previous_epoch_until`, and is withdrawn
/// then (SPEC §3.6). With `certificates`, the listener's TLS key is also
/// replaced at each new token (R2; SPEC §4.5).
pub(crate) async fn follow_epochs(
    adverts: Arc<tokio::sync::Mutex<Adverts>>,
    certificates: Option<CertificateRotator>,
    membership: Arc<Membership>,
    config: NodeConfig,
    key_of: AdvertKey,
    address: SocketAddr,
) {
    let mut epochs = membership.watch_epoch();
    let Some(mut tokens) = adverts
        .lock()
        .await
        .current
        .as_ref()
        .map(|a| a.watch_token())
    else {
        return;
    };
    loop {
        let grace_left = membership
            .credentials()
            .previous_group_key_until()
            .map(|(_, until)| until.saturating_add(1).saturating_sub(unix_now()))
            .filter(|_| adverts.try_lock().map_or(true, |a| a.grace.is_some()));
        let grace_over = async {
            match grace_left {
                Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = tokens.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = epochs.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(key) = membership.credentials().group_key() else {
                    continue;
                };
                let fresh = match Advertiser::start(config.advertiser(key_of(&key), address)) {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "no advert under the new group key");
                        continue;
                    }
                };
                tokens = fresh.watch_token();
                let mut guard = adverts.lock().await;
                let previous = guard.current.replace(fresh);
                let stale = std::mem::replace(&mut guard.grace, previous);
                drop(guard);
                if let Some(stale) = stale {
                    let _ = stale.shutdown().await;
                }
                info!("adverts moved to the new group key epoch");
            }
            () = grace_over => {
                let grace = adverts.lock().await.grace.take();
                if let Some(grace) = grace {
                    let _ = grace.shutdown().await;
                    info!("grace advert of the previous group key withdrawn");
                }
                continue;
            }
        }
        if let Some(certificates) = &certificates
            && let Err(e) = certificates.rotate()
        {
            warn!(error = %e, "a new TLS key for the new token failed");
        }
    }
}

/// The keys under which a member looks for a node advertising under
/// `key_of`: its current group key's and, during the grace period, the
/// previous one's, so a member that has caught up still finds one that has
/// not (SPEC §3.6).
pub(crate) fn browse_keys(
    credentials: &Credentials,
    key_of: AdvertKey,
) -> Result<Vec<[u8; 32]>, NodeError> {
    let group = credentials.group_key().ok_or(NodeError::NotEnrolled)?;
    let mut keys = vec![key_of(&group)];
    if let Some(previous) = credentials.previous_group_key(unix_now()) {
        keys.push(key_of(&previous));
    }
    Ok(keys)
}
