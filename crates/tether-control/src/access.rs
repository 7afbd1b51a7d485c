//! Who may read and who may command the car (R23). The table is in the crate
//! doc; these two functions are the only place it is enforced.

use tether_identity::Role;

use crate::service::{PeerInfo, Requester};
use crate::signals::{Sensitivity, Signal};

/// Whether a peer of `role` may read (get or subscribe to) `signal`.
///
/// Phone and watch are the owner's devices and read everything. Hub and
/// vehicle peers read the car's state but not its position (R10 shares
/// geofence state with the home, never a position; R21 gives automations only
/// the minimum they need). Smart devices read nothing.
pub fn may_read(role: Role, signal: &Signal) -> bool {
    match role {
        Role::Phone | Role::Watch => true,
        Role::Hub | Role::Vehicle => signal.sensitivity == Sensitivity::Vehicle,
        Role::Device => false,
    }
}

/// Whether `peer` may read `signal`: its role's rule, and for a co-user
/// (R16) the grant's too. A grant session is its own requester class: the
/// co-user's phone certificate does not make it the owner's phone, so it
/// reads the position only if the grant allows `VEHICLE_LOCATION` (R21,
/// R32; SPEC §17.4).
pub fn peer_may_read(peer: &PeerInfo, signal: &Signal) -> bool {
    may_read(peer.role, signal)
        && match peer.requester {
            Requester::Member => true,
            Requester::CoUser { location } => {
                signal.sensitivity == Sensitivity::Vehicle || location
            }
        }
}

/// Whether a peer of `role` may read anything at all.
pub fn may_read_any(role: Role) -> bool {
    !matches!(role, Role::Device)
}

/// Whether a peer of `role` may send a `VehicleCommand` (R23: control only
/// from the owner's phone, and the watch paired with it).
pub fn may_command(role: Role) -> bool {
    matches!(role, Role::Phone | Role::Watch)
}
