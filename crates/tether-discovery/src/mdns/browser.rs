//! Finding members' tokens on the LAN.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use mdns_sd::{ResolvedService, ServiceEvent};

use super::{Daemon, Interfaces, SERVICE_TYPE};
use crate::DiscoveryError;
use crate::token::{DiscoveryToken, TokenResolver, parse_txt};

/// A member's advertisement that one of our keys resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Index, in the list given to [`Browser::start`], of the key that minted
    /// the token.
    pub key_index: usize,
    /// The token label (the instance name).
    pub token: String,
    /// The advertised addresses, IPv4 first, each once.
    pub addresses: Vec<IpAddr>,
    /// The advertised port of the member's session endpoint.
    pub port: u16,
    /// The protocol version from the TXT record.
    pub protocol_version: u32,
}

/// What a [`Browser`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A token one of our keys minted, with its records. May repeat for the
    /// same token when its records change.
    Resolved(Resolved),
    /// A well-formed Tether token that none of our keys minted: another
    /// account's device. We learn nothing else about it (R2).
    Unresolvable {
        /// The token label.
        token: String,
    },
    /// A previously resolved token was withdrawn (rotation or shutdown).
    Lost {
        /// Index of the key that had resolved it.
        key_index: usize,
        /// The withdrawn token label.
        token: String,
    },
}

/// Browses `_tether._udp.local.` and resolves tokens with our discovery keys.
///
/// Instances whose name is not a token, or whose TXT record breaks the rule
/// of [`parse_txt`], are ignored and counted in
/// [`malformed_seen`](Self::malformed_seen); nothing a peer sends makes it
/// panic. Dropping the browser stops its daemon thread.
pub struct Browser {
    daemon: Daemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    resolver: TokenResolver,
    /// Resolved instances by full service name, to report [`DiscoveryEvent::Lost`].
    resolved: HashMap<String, (usize, String)>,
    unresolvable_seen: u64,
    malformed_seen: u64,
}

impl Browser {
    /// Starts a daemon browsing for tokens that `keys` resolve.
    ///
    /// With no keys every token is [`DiscoveryEvent::Unresolvable`]: this is
    /// what a non-member sees.
    pub fn start(keys: Vec<[u8; 32]>, interfaces: Interfaces) -> Result<Self, DiscoveryError> {
        let daemon = Daemon::start(interfaces)?;
        let events = daemon
            .handle()
            .browse(SERVICE_TYPE)
            .map_err(|e| DiscoveryError::daemon("browse", e))?;
        Ok(Self {
            daemon,
            events,
            resolver: TokenResolver::new(&keys),
            resolved: HashMap::new(),
            unresolvable_seen: 0,
            malformed_seen: 0,
        })
    }

    /// The next event, or `None` once the daemon has stopped.
    ///
    /// Cancel safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<DiscoveryEvent> {
        loop {
            let event = self.events.recv_async().await.ok()?;
            if let Some(event) = self.handle_service_event(event) {
                return Some(event);
            }
        }
    }

    /// Waits up to `timeout` for the first advertisement one of our keys
    /// resolves, skipping everything else.
    pub async fn find_first(&mut self, timeout: Duration) -> Result<Resolved, DiscoveryError> {
        let search = async {
            while let Some(event) = self.next().await {
                if let DiscoveryEvent::Resolved(resolved) = event {
                    return Ok(resolved);
                }
            }
            Err(DiscoveryError::Stopped)
        };
        tokio::time::timeout(timeout, search)
            .await
            .map_err(|_| DiscoveryError::Timeout { waited: timeout })?
    }

    /// How many resolved instances carried a token none of our keys minted.
    pub fn unresolvable_seen(&self) -> u64 {
        self.unresolvable_seen
    }

    /// How many resolved instances were ignored because their name was not a
    /// token or their TXT record broke the rule.
    pub fn malformed_seen(&self) -> u64 {
        self.malformed_seen
    }

    /// Stops browsing and the daemon thread, and waits for it.
    pub async fn shutdown(mut self) -> Result<(), DiscoveryError> {
        self.daemon.shutdown().await
    }

    fn handle_service_event(&mut self, event: ServiceEvent) -> Option<DiscoveryEvent> {
        match event {
            ServiceEvent::ServiceResolved(service) => self.handle_resolved(&service),
            ServiceEvent::ServiceRemoved(_, fullname) => {
                let (key_index, token) = self.resolved.remove(&fullname)?;
                Some(DiscoveryEvent::Lost { key_index, token })
            }
            _ => None,
        }
    }

    fn handle_resolved(&mut self, service: &ResolvedService) -> Option<DiscoveryEvent> {
        let Some(token) =
            instance_label(&service.fullname).and_then(|label| DiscoveryToken::parse(label).ok())
        else {
            self.malformed_seen += 1;
            tracing::debug!("ignoring an instance whose name is not a token");
            return None;
        };
        let Some(key_index) = self.resolver.resolve(&token) else {
            self.unresolvable_seen += 1;
            return Some(DiscoveryEvent::Unresolvable {
                token: token.label().to_owned(),
            });
        };
        let txt = service
            .txt_properties
            .iter()
            .map(|property| (property.key(), property.val()));
        let protocol_version = match parse_txt(txt) {
            Ok(version) => version,
            Err(error) => {
                self.malformed_seen += 1;
                tracing::debug!(%error, "ignoring a member token with a bad TXT record");
                return None;
            }
        };
        let mut addresses: Vec<IpAddr> = service.addresses.iter().map(|a| a.to_ip_addr()).collect();
        // IPv4 first: IPv6 loopback never resolves with mdns-sd, and a
        // link-local IPv6 address without its scope is of no use.
        addresses.sort_by_key(|address| (address.is_ipv6(), *address));
        addresses.dedup();
        self.resolved.insert(
            service.fullname.clone(),
            (key_index, token.label().to_owned()),
        );
        Some(DiscoveryEvent::Resolved(Resolved {
            key_index,
            token: token.label().to_owned(),
            addresses,
            port: service.port,
            protocol_version,
        }))
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("resolver", &self.resolver)
            .field("unresolvable_seen", &self.unresolvable_seen)
            .field("malformed_seen", &self.malformed_seen)
            .finish_non_exhaustive()
    }
}

/// The instance label of `<label>._tether._udp.local.`, if that is its shape.
fn instance_label(fullname: &str) -> Option<&str> {
    fullname.strip_suffix(SERVICE_TYPE)?.strip_suffix('.')
}

#[cfg(test)]
mod tests {
    use super::instance_label;

    #[test]
    fn instance_label_strips_exactly_the_service_type() {
        assert_eq!(instance_label("abc._tether._udp.local."), Some("abc"));
        assert_eq!(instance_label("a.b._tether._udp.local."), Some("a.b"));
        assert_eq!(instance_label("_tether._udp.local."), None);
        assert_eq!(instance_label("abc._other._udp.local."), None);
    }
}
