//! The vehicle signals Tether exposes (R23), named by their COVESA VSS paths.
//!
//! VSS names the signals; what a peer may do with each one is Tether's own
//! choice and can be narrower than VSS's: [`Access`] says whether a Tether
//! command changes the signal, and [`Sensitivity`] whether every account member
//! may read it or only the owner's own devices (see [`crate::access`]).
//!
//! Doors, windows and tyres are listed one path per position rather than as an
//! aggregate: VSS has no aggregate "car is locked" signal, and a phone that
//! shows "rear left door open" needs the position anyway. Central locking
//! changes all four `IsLocked` signals together.

/// The kind of value a signal carries: one arm of the `SignalValue.value` oneof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `bool_value`.
    Bool,
    /// `double_value`.
    Double,
    /// `int_value`.
    Int,
    /// `location` (a [`GeoPoint`](tether_proto::v1::GeoPoint)).
    Location,
}

/// Whether Tether lets a peer change the signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Observed only.
    ReadOnly,
    /// Changed by a `VehicleCommand` (and observed).
    Actuator,
}

/// Who may read the signal (R10, R21, R23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sensitivity {
    /// State of the car itself: readable by every member that may read.
    Vehicle,
    /// Reveals where the owner is: readable only by the owner's own devices
    /// (phone, watch). R10 shares geofence *state* with the home, not a
    /// position, and R21 allows automations only the minimum they need.
    Personal,
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal {
    /// The VSS path, e.g. `Vehicle.Speed`.
    pub path: &'static str,
    /// The value arm it is reported in.
    pub value_type: ValueType,
    /// Whether a command changes it.
    pub access: Access,
    /// Who may read it.
    pub sensitivity: Sensitivity,
    /// VSS unit (`km`, `kPa`, `celsius`, `percent`, …); empty when unitless.
    pub unit: &'static str,
}

/// A door position, in the order of the per-door arrays below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    /// Front, driver's side.
    Row1DriverSide,
    /// Front, passenger's side.
    Row1PassengerSide,
    /// Rear, driver's side.
    Row2DriverSide,
    /// Rear, passenger's side.
    Row2PassengerSide,
}

impl Door {
    /// Every door, in array order.
    pub const ALL: [Door; 4] = [
        Door::Row1DriverSide,
        Door::Row1PassengerSide,
        Door::Row2DriverSide,
        Door::Row2PassengerSide,
    ];

    /// Index into [`DOOR_IS_LOCKED`], [`DOOR_IS_OPEN`] and [`WINDOW_POSITION`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Driver's door locked (bool, actuator through Lock/Unlock).
pub const DOOR_ROW1_DRIVER_IS_LOCKED: &str = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked";
/// Front passenger door locked.
pub const DOOR_ROW1_PASSENGER_IS_LOCKED: &str = "Vehicle.Cabin.Door.Row1.PassengerSide.IsLocked";
/// Rear driver-side door locked.
pub const DOOR_ROW2_DRIVER_IS_LOCKED: &str = "Vehicle.Cabin.Door.Row2.DriverSide.IsLocked";
/// Rear passenger-side door locked.
pub const DOOR_ROW2_PASSENGER_IS_LOCKED: &str = "Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked";
/// Every `IsLocked` path, in [`Door`] order.
pub const DOOR_IS_LOCKED: [&str; 4] = [
    DOOR_ROW1_DRIVER_IS_LOCKED,
    DOOR_ROW1_PASSENGER_IS_LOCKED,
    DOOR_ROW2_DRIVER_IS_LOCKED,
    DOOR_ROW2_PASSENGER_IS_LOCKED,
];

/// Driver's door open (bool, read-only: Tether never opens a door).
pub const DOOR_ROW1_DRIVER_IS_OPEN: &str = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen";
/// Front passenger door open.
pub const DOOR_ROW1_PASSENGER_IS_OPEN: &str = "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen";
/// Rear driver-side door open.
pub const DOOR_ROW2_DRIVER_IS_OPEN: &str = "Vehicle.Cabin.Door.Row2.DriverSide.IsOpen";
/// Rear passenger-side door open.
pub const DOOR_ROW2_PASSENGER_IS_OPEN: &str = "Vehicle.Cabin.Door.Row2.PassengerSide.IsOpen";
/// Every `IsOpen` path, in [`Door`] order.
pub const DOOR_IS_OPEN: [&str; 4] = [
    DOOR_ROW1_DRIVER_IS_OPEN,
    DOOR_ROW1_PASSENGER_IS_OPEN,
    DOOR_ROW2_DRIVER_IS_OPEN,
    DOOR_ROW2_PASSENGER_IS_OPEN,
];

/// Driver's window, percent open (int 0..=100, actuator through Window).
pub const WINDOW_ROW1_DRIVER_POSITION: &str = "Vehicle.Cabin.Door.Row1.DriverSide.Window.Position";
/// Front passenger window, percent open.
pub const WINDOW_ROW1_PASSENGER_POSITION: &str =
    "Vehicle.Cabin.Door.Row1.PassengerSide.Window.Position";
/// Rear driver-side window, percent open.
pub const WINDOW_ROW2_DRIVER_POSITION: &str = "Vehicle.Cabin.Door.Row2.DriverSide.Window.Position";
/// Rear passenger-side window, percent open.
pub const WINDOW_ROW2_PASSENGER_POSITION: &str =
    "Vehicle.Cabin.Door.Row2.PassengerSide.Window.Position";
/// Every window path, in [`Door`] order.
pub const WINDOW_POSITION: [&str; 4] = [
    WINDOW_ROW1_DRIVER_POSITION,
    WINDOW_ROW1_PASSENGER_POSITION,
    WINDOW_ROW2_DRIVER_POSITION,
    WINDOW_ROW2_PASSENGER_POSITION,
];

/// Traction battery state of charge, percent (double).
pub const BATTERY_STATE_OF_CHARGE: &str =
    "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current";
/// Remaining range in metres (int; VSS declares uint32 m).
pub const RANGE: &str = "Vehicle.Powertrain.Range";
/// Cabin air temperature, °C (double).
pub const CABIN_TEMPERATURE: &str = "Vehicle.Cabin.HVAC.AmbientAirTemperature";
/// Outside air temperature, °C (double).
pub const EXTERIOR_TEMPERATURE: &str = "Vehicle.Exterior.AirTemperature";
/// Climate control running, heating or cooling (bool, actuator through Climate).
/// VSS has no whole-system HVAC switch; this is the signal the KUKSA and
/// Android VSS clients use for "climate on".
pub const HVAC_IS_ACTIVE: &str = "Vehicle.Cabin.HVAC.IsAirConditioningActive";
/// Target cabin temperature, °C (double, actuator through Climate; VSS declares
/// int8, Tether keeps the half degrees head units offer).
pub const HVAC_TARGET_TEMPERATURE: &str = "Vehicle.Cabin.HVAC.Station.Row1.Driver.Temperature";

/// Front left tyre pressure, kPa (int).
pub const TIRE_ROW1_LEFT_PRESSURE: &str = "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure";
/// Front right tyre pressure, kPa.
pub const TIRE_ROW1_RIGHT_PRESSURE: &str = "Vehicle.Chassis.Axle.Row1.Wheel.Right.Tire.Pressure";
/// Rear left tyre pressure, kPa.
pub const TIRE_ROW2_LEFT_PRESSURE: &str = "Vehicle.Chassis.Axle.Row2.Wheel.Left.Tire.Pressure";
/// Rear right tyre pressure, kPa.
pub const TIRE_ROW2_RIGHT_PRESSURE: &str = "Vehicle.Chassis.Axle.Row2.Wheel.Right.Tire.Pressure";
/// Every tyre path: front left, front right, rear left, rear right.
pub const TIRE_PRESSURE: [&str; 4] = [
    TIRE_ROW1_LEFT_PRESSURE,
    TIRE_ROW1_RIGHT_PRESSURE,
    TIRE_ROW2_LEFT_PRESSURE,
    TIRE_ROW2_RIGHT_PRESSURE,
];

/// Position (GeoPoint). A branch in VSS (`.Latitude`, `.Longitude`); Tether
/// reports it as one value so the two halves are always from the same fix.
pub const LOCATION: &str = "Vehicle.CurrentLocation";
/// Odometer, km (double).
pub const ODOMETER: &str = "Vehicle.TraveledDistance";
/// Speed, km/h (double).
pub const SPEED: &str = "Vehicle.Speed";
/// Whether the vehicle is moving (bool).
pub const IS_MOVING: &str = "Vehicle.IsMoving";
/// Selected gear (int); [`GEAR_PARK`] when parked.
pub const SELECTED_GEAR: &str = "Vehicle.Powertrain.Transmission.SelectedGear";
/// VSS `SelectedGear` value for park.
pub const GEAR_PARK: i64 = 126;
/// VSS `SelectedGear` value for drive.
pub const GEAR_DRIVE: i64 = 127;

const fn entry(
    path: &'static str,
    value_type: ValueType,
    access: Access,
    unit: &'static str,
) -> Signal {
    Signal {
        path,
        value_type,
        access,
        sensitivity: Sensitivity::Vehicle,
        unit,
    }
}

use Access::{Actuator, ReadOnly};
use ValueType::{Bool, Double, Int};

/// Every signal Tether knows, in the order "all signals" are reported.
pub static CATALOGUE: &[Signal] = &[
    entry(DOOR_ROW1_DRIVER_IS_LOCKED, Bool, Actuator, ""),
    entry(DOOR_ROW1_PASSENGER_IS_LOCKED, Bool, Actuator, ""),
    entry(DOOR_ROW2_DRIVER_IS_LOCKED, Bool, Actuator, ""),
    entry(DOOR_ROW2_PASSENGER_IS_LOCKED, Bool, Actuator, ""),
    entry(DOOR_ROW1_DRIVER_IS_OPEN, Bool, ReadOnly, ""),
    entry(DOOR_ROW1_PASSENGER_IS_OPEN, Bool, ReadOnly, ""),
    entry(DOOR_ROW2_DRIVER_IS_OPEN, Bool, ReadOnly, ""),
    entry(DOOR_ROW2_PASSENGER_IS_OPEN, Bool, ReadOnly, ""),
    entry(WINDOW_ROW1_DRIVER_POSITION, Int, Actuator, "percent"),
    entry(WINDOW_ROW1_PASSENGER_POSITION, Int, Actuator, "percent"),
    entry(WINDOW_ROW2_DRIVER_POSITION, Int, Actuator, "percent"),
    entry(WINDOW_ROW2_PASSENGER_POSITION, Int, Actuator, "percent"),
    entry(BATTERY_STATE_OF_CHARGE, Double, ReadOnly, "percent"),
    entry(RANGE, Int, ReadOnly, "m"),
    entry(CABIN_TEMPERATURE, Double, ReadOnly, "celsius"),
    entry(EXTERIOR_TEMPERATURE, Double, ReadOnly, "celsius"),
    entry(HVAC_IS_ACTIVE, Bool, Actuator, ""),
    entry(HVAC_TARGET_TEMPERATURE, Double, Actuator, "celsius"),
    entry(TIRE_ROW1_LEFT_PRESSURE, Int, ReadOnly, "kPa"),
    entry(TIRE_ROW1_RIGHT_PRESSURE, Int, ReadOnly, "kPa"),
    entry(TIRE_ROW2_LEFT_PRESSURE, Int, ReadOnly, "kPa"),
    entry(TIRE_ROW2_RIGHT_PRESSURE, Int, ReadOnly, "kPa"),
    Signal {
        path: LOCATION,
        value_type: ValueType::Location,
        access: ReadOnly,
        sensitivity: Sensitivity::Personal,
        unit: "degrees",
    },
    entry(ODOMETER, Double, ReadOnly, "km"),
    entry(SPEED, Double, ReadOnly, "km/h"),
    entry(IS_MOVING, Bool, ReadOnly, ""),
    entry(SELECTED_GEAR, Int, ReadOnly, ""),
];

/// The catalogue entry for `path`, if Tether knows it.
pub fn lookup(path: &str) -> Option<&'static Signal> {
    CATALOGUE.iter().find(|s| s.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_paths_are_unique_vss_paths() {
        for (i, s) in CATALOGUE.iter().enumerate() {
            assert!(s.path.starts_with("Vehicle."), "{}", s.path);
            assert!(
                s.path
                    .split('.')
                    .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric())),
                "{}",
                s.path
            );
            assert!(
                CATALOGUE[i + 1..].iter().all(|o| o.path != s.path),
                "duplicate {}",
                s.path
            );
        }
    }

    #[test]
    fn per_position_arrays_are_all_in_the_catalogue() {
        for path in DOOR_IS_LOCKED
            .iter()
            .chain(&DOOR_IS_OPEN)
            .chain(&WINDOW_POSITION)
            .chain(&TIRE_PRESSURE)
        {
            assert!(lookup(path).is_some(), "{path}");
        }
        assert_eq!(
            DOOR_IS_LOCKED[Door::Row2DriverSide.index()],
            DOOR_ROW2_DRIVER_IS_LOCKED
        );
    }

    #[test]
    fn only_location_is_personal() {
        let personal: Vec<_> = CATALOGUE
            .iter()
            .filter(|s| s.sensitivity == Sensitivity::Personal)
            .map(|s| s.path)
            .collect();
        assert_eq!(personal, [LOCATION]);
    }
}
