//! A simulated car with plausible dynamics, for tests, demos and the desktop
//! node. It is not a model of any real vehicle.

use tether_proto::v1::{CommandReason, GeoPoint, signal_value::Value};

use crate::backend::{Actuation, ActuationError, VehicleBackend};
use crate::signals::{self, Door, Signal};

/// Range at 100 % state of charge, metres. Range is proportional to SoC.
pub const FULL_RANGE_M: f64 = 450_000.0;
/// Usable battery energy, kWh.
pub const BATTERY_KWH: f64 = 75.0;
/// Targets the simulated climate control accepts, °C.
pub const HVAC_TARGET_RANGE_CELSIUS: std::ops::RangeInclusive<f32> = 16.0..=30.0;
/// Time constant of the cabin approaching the target with climate on, seconds
/// (63 % of the gap closed after this long).
pub const HVAC_TIME_CONSTANT_S: f64 = 300.0;
/// Time constant of the cabin drifting to the outside temperature with
/// climate off, seconds.
pub const PASSIVE_TIME_CONSTANT_S: f64 = 1_800.0;
/// Climate control draw with the cabin at target, kW.
const HVAC_BASE_KW: f64 = 0.6;
/// Extra climate draw per kelvin between cabin and target, kW/K.
const HVAC_KW_PER_KELVIN: f64 = 0.35;
/// Most climate control draws, kW.
const HVAC_MAX_KW: f64 = 6.0;
/// Driving consumption, kWh per km.
const DRIVE_KWH_PER_KM: f64 = 0.17;
/// Kilometres per degree of latitude.
const KM_PER_DEGREE_LATITUDE: f64 = 111.32;

/// How many times the service asked this car for each actuation, whatever the
/// outcome. Tests use it to prove that a command ran at most once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Executions {
    /// [`Actuation::Lock`].
    pub lock: u32,
    /// [`Actuation::Unlock`].
    pub unlock: u32,
    /// [`Actuation::Climate`].
    pub climate: u32,
    /// [`Actuation::Window`].
    pub window: u32,
    /// [`Actuation::FlashHonk`].
    pub flash_honk: u32,
}

impl Executions {
    /// All actuations together.
    pub fn total(&self) -> u32 {
        self.lock + self.unlock + self.climate + self.window + self.flash_honk
    }
}

/// A simulated car, parked and unlocked on a cool day.
///
/// Dynamics, advanced by [`VehicleBackend::tick`]:
/// - with climate on, cabin temperature approaches the target exponentially
///   ([`HVAC_TIME_CONSTANT_S`]) and the climate draw (more while far from
///   target) drains the battery; with climate off it drifts to the outside
///   temperature ([`PASSIVE_TIME_CONSTANT_S`]);
/// - range is proportional to state of charge ([`FULL_RANGE_M`]);
/// - while driving, odometer and position advance and the battery drains;
///   while parked the odometer stays put;
/// - locking while a door is open or the car moves is rejected `IN_USE`;
///   so is flashing and honking while moving.
///
/// Reported values are quantised like real bus signals (0.1 °C, 0.1 %, 100 m),
/// so a subscriber sees a change only when the value it would display changes.
#[derive(Debug, Clone)]
pub struct SimulatedVehicle {
    locked: bool,
    doors_open: [bool; 4],
    windows_percent: [u8; 4],
    state_of_charge: f64,
    cabin_celsius: f64,
    exterior_celsius: f64,
    hvac_on: bool,
    hvac_target_celsius: f64,
    tyres_kpa: [i64; 4],
    location: GeoPoint,
    odometer_km: f64,
    speed_kmh: f64,
    parked: bool,
    last_tick_ms: Option<u64>,
    executions: Executions,
}

impl Default for SimulatedVehicle {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedVehicle {
    /// Parked, unlocked, doors and windows closed, 80 % charged, 12 °C inside
    /// and out, climate off with a 21 °C target.
    pub fn new() -> Self {
        Self {
            locked: false,
            doors_open: [false; 4],
            windows_percent: [0; 4],
            state_of_charge: 80.0,
            cabin_celsius: 12.0,
            exterior_celsius: 12.0,
            hvac_on: false,
            hvac_target_celsius: 21.0,
            tyres_kpa: [250, 250, 240, 240],
            location: GeoPoint {
                latitude: 52.520_008,
                longitude: 13.404_954,
            },
            odometer_km: 12_345.6,
            speed_kmh: 0.0,
            parked: true,
            last_tick_ms: None,
            executions: Executions::default(),
        }
    }

    /// How many times each actuation was requested.
    pub fn executions(&self) -> Executions {
        self.executions
    }

    /// Opens or closes a door (someone at the car).
    pub fn set_door_open(&mut self, door: Door, open: bool) {
        self.doors_open[door.index()] = open;
    }

    /// Puts the car in drive at `speed_kmh` (clamped to 0..=250).
    pub fn drive(&mut self, speed_kmh: f64) {
        self.parked = false;
        self.speed_kmh = speed_kmh.clamp(0.0, 250.0);
    }

    /// Stops and puts the car in park.
    pub fn park(&mut self) {
        self.speed_kmh = 0.0;
        self.parked = true;
    }

    /// Sets the outside temperature, °C.
    pub fn set_exterior_temperature(&mut self, celsius: f64) {
        self.exterior_celsius = celsius;
    }

    /// Sets the state of charge, percent (clamped to 0..=100).
    pub fn set_state_of_charge(&mut self, percent: f64) {
        self.state_of_charge = percent.clamp(0.0, 100.0);
    }

    /// Unquantised cabin temperature, °C, for tests of the dynamics.
    pub fn cabin_temperature(&self) -> f64 {
        self.cabin_celsius
    }

    /// Unquantised state of charge, percent.
    pub fn state_of_charge(&self) -> f64 {
        self.state_of_charge
    }

    fn is_moving(&self) -> bool {
        self.speed_kmh > 0.0
    }

    fn drain_kwh(&mut self, kwh: f64) {
        self.state_of_charge = (self.state_of_charge - kwh / BATTERY_KWH * 100.0).max(0.0);
        if self.state_of_charge == 0.0 {
            // An empty battery cannot run the climate control.
            self.hvac_on = false;
        }
    }
}

fn round_to(value: f64, step: f64) -> f64 {
    (value / step).round() * step
}

impl VehicleBackend for SimulatedVehicle {
    fn read(&self, signal: &Signal) -> Option<Value> {
        let path = signal.path;
        if signals::DOOR_IS_LOCKED.contains(&path) {
            // Central locking: every door reports the same state.
            return Some(Value::BoolValue(self.locked));
        }
        if let Some(i) = signals::DOOR_IS_OPEN.iter().position(|p| *p == path) {
            return Some(Value::BoolValue(self.doors_open[i]));
        }
        if let Some(i) = signals::WINDOW_POSITION.iter().position(|p| *p == path) {
            return Some(Value::IntValue(i64::from(self.windows_percent[i])));
        }
        if let Some(i) = signals::TIRE_PRESSURE.iter().position(|p| *p == path) {
            return Some(Value::IntValue(self.tyres_kpa[i]));
        }
        Some(match path {
            signals::BATTERY_STATE_OF_CHARGE => {
                Value::DoubleValue(round_to(self.state_of_charge, 0.1))
            }
            signals::RANGE => {
                let metres = self.state_of_charge / 100.0 * FULL_RANGE_M;
                Value::IntValue(round_to(metres, 100.0) as i64)
            }
            signals::CABIN_TEMPERATURE => Value::DoubleValue(round_to(self.cabin_celsius, 0.1)),
            signals::EXTERIOR_TEMPERATURE => {
                Value::DoubleValue(round_to(self.exterior_celsius, 0.1))
            }
            signals::HVAC_IS_ACTIVE => Value::BoolValue(self.hvac_on),
            signals::HVAC_TARGET_TEMPERATURE => Value::DoubleValue(self.hvac_target_celsius),
            signals::LOCATION => Value::Location(GeoPoint {
                latitude: round_to(self.location.latitude, 1e-6),
                longitude: round_to(self.location.longitude, 1e-6),
            }),
            signals::ODOMETER => Value::DoubleValue(round_to(self.odometer_km, 0.1)),
            signals::SPEED => Value::DoubleValue(round_to(self.speed_kmh, 0.1)),
            signals::IS_MOVING => Value::BoolValue(self.is_moving()),
            signals::SELECTED_GEAR => Value::IntValue(if self.parked {
                signals::GEAR_PARK
            } else {
                signals::GEAR_DRIVE
            }),
            _ => return None,
        })
    }

    fn execute(&mut self, actuation: &Actuation, _now_ms: u64) -> Result<(), ActuationError> {
        match *actuation {
            Actuation::Lock => {
                self.executions.lock += 1;
                if self.is_moving() || self.doors_open.iter().any(|open| *open) {
                    return Err(ActuationError::Rejected(CommandReason::InUse));
                }
                self.locked = true;
            }
            Actuation::Unlock => {
                self.executions.unlock += 1;
                self.locked = false;
            }
            Actuation::Climate { on, target_celsius } => {
                self.executions.climate += 1;
                if let Some(target) = target_celsius {
                    if !HVAC_TARGET_RANGE_CELSIUS.contains(&target) {
                        return Err(ActuationError::Rejected(CommandReason::InvalidArgument));
                    }
                    // Head units step in half degrees.
                    self.hvac_target_celsius = round_to(f64::from(target), 0.5);
                }
                if on && self.state_of_charge == 0.0 {
                    return Err(ActuationError::Failed(CommandReason::Unspecified));
                }
                self.hvac_on = on;
            }
            Actuation::Window { percent_open } => {
                self.executions.window += 1;
                self.windows_percent = [percent_open.min(100); 4];
            }
            Actuation::FlashHonk { .. } => {
                self.executions.flash_honk += 1;
                if self.is_moving() {
                    return Err(ActuationError::Rejected(CommandReason::InUse));
                }
            }
        }
        Ok(())
    }

    fn tick(&mut self, now_ms: u64) {
        let last = self.last_tick_ms.replace(now_ms).unwrap_or(now_ms);
        let dt_s = now_ms.saturating_sub(last) as f64 / 1000.0;
        if dt_s <= 0.0 {
            return;
        }
        let hours = dt_s / 3600.0;

        // Exponential approach is exact for any step length, so a long gap
        // between ticks gives the same result as many short ones.
        let (goal, tau) = if self.hvac_on {
            (self.hvac_target_celsius, HVAC_TIME_CONSTANT_S)
        } else {
            (self.exterior_celsius, PASSIVE_TIME_CONSTANT_S)
        };
        let gap = goal - self.cabin_celsius;
        self.cabin_celsius += gap * (1.0 - (-dt_s / tau).exp());

        if self.hvac_on {
            let kw = (HVAC_BASE_KW + HVAC_KW_PER_KELVIN * gap.abs()).min(HVAC_MAX_KW);
            self.drain_kwh(kw * hours);
        }

        if self.is_moving() {
            let km = self.speed_kmh * hours;
            self.odometer_km += km;
            self.location.latitude += km / KM_PER_DEGREE_LATITUDE;
            self.drain_kwh(km * DRIVE_KWH_PER_KM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::lookup;

    fn read(car: &SimulatedVehicle, path: &str) -> Value {
        car.read(lookup(path).expect("catalogue path"))
            .expect("simulated car has every signal")
    }

    fn double(car: &SimulatedVehicle, path: &str) -> f64 {
        match read(car, path) {
            Value::DoubleValue(v) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn int(car: &SimulatedVehicle, path: &str) -> i64 {
        match read(car, path) {
            Value::IntValue(v) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn simulated_car_reports_every_catalogue_signal_in_its_declared_type() {
        use crate::signals::{CATALOGUE, ValueType};
        let car = SimulatedVehicle::new();
        for s in CATALOGUE {
            let v = car.read(s).unwrap_or_else(|| panic!("missing {}", s.path));
            let ok = matches!(
                (s.value_type, &v),
                (ValueType::Bool, Value::BoolValue(_))
                    | (ValueType::Double, Value::DoubleValue(_))
                    | (ValueType::Int, Value::IntValue(_))
                    | (ValueType::Location, Value::Location(_))
            );
            assert!(ok, "{}: {v:?}", s.path);
        }
    }

    #[test]
    fn climate_moves_cabin_temperature_toward_target_without_overshoot() {
        let mut car = SimulatedVehicle::new();
        car.tick(0);
        car.execute(
            &Actuation::Climate {
                on: true,
                target_celsius: Some(22.0),
            },
            0,
        )
        .unwrap();
        let mut previous = car.cabin_temperature();
        for minute in 1..=30 {
            car.tick(minute * 60_000);
            let t = car.cabin_temperature();
            assert!(t > previous && t < 22.0, "minute {minute}: {t}");
            previous = t;
        }
        // Six time constants: within 0.1 K of target.
        assert!((22.0 - previous).abs() < 0.1, "{previous}");
        assert_eq!(double(&car, signals::HVAC_TARGET_TEMPERATURE), 22.0);
    }

    #[test]
    fn cabin_drifts_to_outside_temperature_with_climate_off() {
        let mut car = SimulatedVehicle::new();
        car.set_exterior_temperature(30.0);
        car.tick(0);
        car.tick(600_000);
        let after_10_min = car.cabin_temperature();
        assert!(after_10_min > 12.0 && after_10_min < 30.0);
        // Passive drift is slower than climate control.
        let mut cooled = SimulatedVehicle::new();
        cooled.set_exterior_temperature(30.0);
        cooled.tick(0);
        cooled
            .execute(
                &Actuation::Climate {
                    on: true,
                    target_celsius: Some(30.0),
                },
                0,
            )
            .unwrap();
        cooled.tick(600_000);
        assert!(cooled.cabin_temperature() > after_10_min);
    }

    #[test]
    fn climate_drains_charge_and_range_follows_charge() {
        let mut car = SimulatedVehicle::new();
        car.tick(0);
        let range_before = int(&car, signals::RANGE);
        assert_eq!(range_before, 360_000); // 80 % of 450 km
        car.execute(
            &Actuation::Climate {
                on: true,
                target_celsius: None,
            },
            0,
        )
        .unwrap();
        car.tick(3_600_000);
        let soc = car.state_of_charge();
        assert!(soc < 80.0 && soc > 70.0, "one hour of climate: {soc}");
        let range = int(&car, signals::RANGE);
        assert!(range < range_before);
        assert!(((range as f64) - soc / 100.0 * FULL_RANGE_M).abs() <= 100.0);
    }

    #[test]
    fn odometer_stays_put_while_parked_and_advances_while_driving() {
        let mut car = SimulatedVehicle::new();
        car.tick(0);
        let parked = double(&car, signals::ODOMETER);
        car.tick(3_600_000);
        assert_eq!(double(&car, signals::ODOMETER), parked);
        assert_eq!(int(&car, signals::SELECTED_GEAR), signals::GEAR_PARK);
        car.drive(60.0);
        car.tick(3_600_000 + 60_000); // one minute at 60 km/h
        assert!((double(&car, signals::ODOMETER) - parked - 1.0).abs() < 0.051);
        assert_eq!(read(&car, signals::IS_MOVING), Value::BoolValue(true));
    }

    #[test]
    fn windows_clamp_to_fully_open() {
        let mut car = SimulatedVehicle::new();
        car.execute(&Actuation::Window { percent_open: 230 }, 0)
            .unwrap();
        for path in signals::WINDOW_POSITION {
            assert_eq!(int(&car, path), 100);
        }
    }

    #[test]
    fn locking_with_a_door_open_or_while_moving_is_rejected_in_use() {
        let mut car = SimulatedVehicle::new();
        car.set_door_open(Door::Row2PassengerSide, true);
        assert_eq!(
            car.execute(&Actuation::Lock, 0),
            Err(ActuationError::Rejected(CommandReason::InUse))
        );
        car.set_door_open(Door::Row2PassengerSide, false);
        car.drive(5.0);
        assert_eq!(
            car.execute(&Actuation::Lock, 0),
            Err(ActuationError::Rejected(CommandReason::InUse))
        );
        car.park();
        assert_eq!(car.execute(&Actuation::Lock, 0), Ok(()));
        assert_eq!(
            read(&car, signals::DOOR_ROW2_PASSENGER_IS_LOCKED),
            Value::BoolValue(true)
        );
        assert_eq!(car.executions().lock, 3);
    }

    #[test]
    fn climate_target_outside_range_is_rejected_invalid_argument() {
        let mut car = SimulatedVehicle::new();
        assert_eq!(
            car.execute(
                &Actuation::Climate {
                    on: true,
                    target_celsius: Some(45.0)
                },
                0
            ),
            Err(ActuationError::Rejected(CommandReason::InvalidArgument))
        );
        assert_eq!(read(&car, signals::HVAC_IS_ACTIVE), Value::BoolValue(false));
    }
}
