//! Virtual socket addresses (SPEC §19.4): how the driver names a peer to
//! quinn. They exist only inside this process; none is ever put on the wire.
//!
//! A peer is named by the id of the reply topic of its conversation: the
//! 16 bytes become the IPv6 address, and the port tells the two sides apart
//! (a responder this socket dialed, or an initiator that reached it at a
//! rendezvous topic). The mapping is a pure function both ways, so a
//! responder keeps no table an unauthenticated flood could fill.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use crate::topic::TopicId;

/// Port of a responder this socket dialed ([`Peer::Dialed`]).
pub const DIALED_PORT: u16 = 1;
/// Port of an initiator that reached this socket ([`Peer::Answered`]).
pub const ANSWERED_PORT: u16 = 2;

/// A peer, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A responder this socket dialed; the id is our reply topic's.
    Dialed(TopicId),
    /// An initiator that reached us; the id is its reply topic's.
    Answered(TopicId),
}

impl Peer {
    /// The virtual address quinn knows the peer by.
    pub fn addr(&self) -> SocketAddr {
        let (id, port) = match self {
            Peer::Dialed(id) => (id, DIALED_PORT),
            Peer::Answered(id) => (id, ANSWERED_PORT),
        };
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(id.0), port, 0, 0))
    }

    /// The peer a virtual address names, if it is one of ours.
    pub fn from_addr(addr: SocketAddr) -> Option<Self> {
        let SocketAddr::V6(v6) = addr else {
            return None;
        };
        if v6.flowinfo() != 0 || v6.scope_id() != 0 {
            return None;
        }
        let id = TopicId(v6.ip().octets());
        match v6.port() {
            DIALED_PORT => Some(Peer::Dialed(id)),
            ANSWERED_PORT => Some(Peer::Answered(id)),
            _ => None,
        }
    }
}

/// The address the socket reports as its own (IPv6, so that quinn accepts
/// the IPv6 virtual addresses; unspecified, port 0: it names nothing).
pub fn local_addr() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_round_trip_and_others_are_not_ours() {
        let id = TopicId([0xab; 16]);
        for peer in [Peer::Dialed(id), Peer::Answered(id)] {
            assert_eq!(Peer::from_addr(peer.addr()), Some(peer));
        }
        assert_ne!(Peer::Dialed(id).addr(), Peer::Answered(id).addr());
        assert_eq!(
            Peer::from_addr("127.0.0.1:1".parse().unwrap_or(local_addr())),
            None
        );
        assert_eq!(Peer::from_addr(local_addr()), None);
        let mut other = Peer::Dialed(id).addr();
        other.set_port(3);
        assert_eq!(Peer::from_addr(other), None);
    }
}
