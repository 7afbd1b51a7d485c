//! Who may read and who may command the car (R23). The table is in the crate
//! doc; these two functions are the only place it is enforced.

use tether_identity::Role;

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

/// Whether a peer of `role` may read anything at all.
pub fn may_read_any(role: Role) -> bool {
    !matches!(role, Role::Device)
}

/// Whether a peer of `role` may send a `VehicleCommand` (R23: control only
/// from the owner's phone, and the watch paired with it).
pub fn may_command(role: Role) -> bool {
    matches!(role, Role::Phone | Role::Watch)
}
