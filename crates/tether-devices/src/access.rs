//! Who may manage devices over a session (R10, R11, R23; SPEC §16.5): the
//! device service's role table, as `tether_control::access` is the
//! vehicle's. The host checks it before a request reaches the
//! [`DeviceManager`](crate::DeviceManager); a co-user's grant permissions
//! (SPEC §17.4) are checked on top.
//!
//! | role | read (list, get, watch) | control (set, invoke) | manage (rename, reorder, unbind) |
//! |---|---|---|---|
//! | phone | yes | yes | yes |
//! | watch | yes | yes | no |
//! | hub | only while "car data to home" is on (R10, R11) | no | no |
//! | vehicle, device | no | no | no |

use tether_identity::Role;
use tether_proto::v1::request;

/// What a device-management request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOperation {
    /// `ListDevices`, `GetDevice`, `WatchDevices`: see devices and state.
    Read,
    /// `SetProperties`, `InvokeAction`: act on a device.
    Control,
    /// `RenameDevice`, `ReorderDevices`, `UnbindDevice`: change the
    /// account's devices (the owner's phone only, R23).
    Manage,
}

/// The operation of a device-management request (100–107), `None` for any
/// other kind.
pub fn operation(kind: &request::Kind) -> Option<DeviceOperation> {
    Some(match kind {
        request::Kind::ListDevices(_)
        | request::Kind::GetDevice(_)
        | request::Kind::WatchDevices(_) => DeviceOperation::Read,
        request::Kind::SetProperties(_) | request::Kind::InvokeAction(_) => {
            DeviceOperation::Control
        }
        request::Kind::RenameDevice(_)
        | request::Kind::ReorderDevices(_)
        | request::Kind::UnbindDevice(_) => DeviceOperation::Manage,
        _ => return None,
    })
}

/// Whether a peer of `role` may do `operation`. `car_data_to_home` is the
/// R11 switch: a hub reads in-car devices only while it is on (R10 lists
/// in-car device state among what the home may get), and never controls
/// or manages them.
pub fn may(role: Role, operation: DeviceOperation, car_data_to_home: bool) -> bool {
    match (role, operation) {
        (Role::Phone, _) => true,
        (Role::Watch, DeviceOperation::Read | DeviceOperation::Control) => true,
        (Role::Hub, DeviceOperation::Read) => car_data_to_home,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [DeviceOperation; 3] = [
        DeviceOperation::Read,
        DeviceOperation::Control,
        DeviceOperation::Manage,
    ];

    #[test]
    fn only_the_owners_phone_renames_reorders_and_unbinds_r23() {
        for role in [Role::Watch, Role::Hub, Role::Vehicle, Role::Device] {
            for consent in [false, true] {
                assert!(!may(role, DeviceOperation::Manage, consent), "{role:?}");
            }
        }
        assert!(may(Role::Phone, DeviceOperation::Manage, false));
    }

    #[test]
    fn a_hub_reads_in_car_devices_only_under_car_data_to_home_r11() {
        assert!(!may(Role::Hub, DeviceOperation::Read, false));
        assert!(may(Role::Hub, DeviceOperation::Read, true));
        assert!(!may(Role::Hub, DeviceOperation::Control, true));
    }

    #[test]
    fn vehicles_and_devices_do_nothing_r23() {
        for role in [Role::Vehicle, Role::Device] {
            for op in ALL {
                assert!(!may(role, op, true), "{role:?} {op:?}");
            }
        }
    }

    #[test]
    fn every_management_request_has_an_operation() {
        use tether_proto::v1::*;
        let kinds = [
            request::Kind::ListDevices(ListDevices {}),
            request::Kind::GetDevice(GetDevice::default()),
            request::Kind::SetProperties(SetProperties::default()),
            request::Kind::InvokeAction(InvokeAction::default()),
            request::Kind::RenameDevice(RenameDevice::default()),
            request::Kind::ReorderDevices(ReorderDevices::default()),
            request::Kind::UnbindDevice(UnbindDevice::default()),
            request::Kind::WatchDevices(WatchDevices {}),
        ];
        for kind in &kinds {
            assert!(crate::DeviceManager::is_management(kind));
            assert!(operation(kind).is_some(), "{kind:?}");
        }
        assert_eq!(operation(&request::Kind::Ping(Ping::default())), None);
    }
}
