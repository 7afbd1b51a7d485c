//! The small parts of a task in their protobuf form: values, tests,
//! enums, ids, times and weekdays, the mode, the missed-time policy and
//! inputs. Each `*_from_proto` refuses what the model cannot hold: an empty
//! oneof, an enum's `UNSPECIFIED` or unknown value, a number out of range,
//! a non-finite real, an over-long id or text.

use tether_proto::v1 as pb;

use super::{MAX_ID_BYTES, WireError};
use crate::civil::{ClockTime, Weekday, Weekdays};
use crate::model::{
    Change, DayTime, DeviceActionId, DeviceId, Input, MissedPolicy, Mode, PlaceId, PropertyId,
    Recipients, SunEvent, Test, Transition, Value, VehicleEvent, VehicleState,
};
use crate::{MAX_MESSAGE_BYTES, MAX_SUN_OFFSET_MIN};

/// The days in bit order: bit 0 is Monday.
const DAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// The protobuf form of `value`.
pub fn value_to_proto(value: &Value) -> pb::Value {
    use pb::value::Kind;
    let kind = match value {
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Int(i) => Kind::IntValue(*i),
        Value::Double(d) => Kind::DoubleValue(*d),
        Value::Text(t) => Kind::TextValue(t.clone()),
    };
    pb::Value { kind: Some(kind) }
}

/// The value `message` holds: a double must be finite, a text at most
/// [`MAX_MESSAGE_BYTES`].
pub fn value_from_proto(message: pb::Value) -> Result<Value, WireError> {
    use pb::value::Kind;
    Ok(
        match message.kind.ok_or(WireError::Missing("Value.kind"))? {
            Kind::BoolValue(b) => Value::Bool(b),
            Kind::IntValue(i) => Value::Int(i),
            Kind::DoubleValue(d) => Value::Double(finite(d, "Value.double_value")?),
            Kind::TextValue(t) => {
                if t.len() > MAX_MESSAGE_BYTES {
                    return Err(WireError::TooLarge("Value.text_value"));
                }
                Value::Text(t)
            }
        },
    )
}

/// The protobuf form of `transition`.
pub fn transition_to_proto(transition: Transition) -> pb::Transition {
    match transition {
        Transition::Enter => pb::Transition::Enter,
        Transition::Leave => pb::Transition::Leave,
    }
}

/// The transition a `tether.v1.Transition` field holds (`UNSPECIFIED` is
/// [`WireError::Missing`]).
pub fn transition_from_proto(value: i32) -> Result<Transition, WireError> {
    match enumeration::<pb::Transition>(value, "Transition")? {
        pb::Transition::Unspecified => Err(WireError::Missing("Transition")),
        pb::Transition::Enter => Ok(Transition::Enter),
        pb::Transition::Leave => Ok(Transition::Leave),
    }
}

/// The protobuf form of `event`.
pub fn vehicle_event_to_proto(event: VehicleEvent) -> pb::VehicleEvent {
    match event {
        VehicleEvent::Parked => pb::VehicleEvent::Parked,
        VehicleEvent::Driving => pb::VehicleEvent::Driving,
        VehicleEvent::Locked => pb::VehicleEvent::Locked,
        VehicleEvent::Unlocked => pb::VehicleEvent::Unlocked,
        VehicleEvent::ChargingStarted => pb::VehicleEvent::ChargingStarted,
        VehicleEvent::ChargingStopped => pb::VehicleEvent::ChargingStopped,
    }
}

/// The event a `tether.v1.VehicleEvent` field holds (`UNSPECIFIED` is
/// [`WireError::Missing`]).
pub fn vehicle_event_from_proto(value: i32) -> Result<VehicleEvent, WireError> {
    Ok(
        match enumeration::<pb::VehicleEvent>(value, "VehicleEvent")? {
            pb::VehicleEvent::Unspecified => return Err(WireError::Missing("VehicleEvent")),
            pb::VehicleEvent::Parked => VehicleEvent::Parked,
            pb::VehicleEvent::Driving => VehicleEvent::Driving,
            pb::VehicleEvent::Locked => VehicleEvent::Locked,
            pb::VehicleEvent::Unlocked => VehicleEvent::Unlocked,
            pb::VehicleEvent::ChargingStarted => VehicleEvent::ChargingStarted,
            pb::VehicleEvent::ChargingStopped => VehicleEvent::ChargingStopped,
        },
    )
}

/// A known value of a protobuf enum.
pub(super) fn enumeration<E: TryFrom<i32>>(
    value: i32,
    field: &'static str,
) -> Result<E, WireError> {
    E::try_from(value).map_err(|_| WireError::UnknownEnum { field, value })
}

/// `x`, if finite (the engine compares and orders these numbers; a NaN
/// would also break the exact round trip).
pub(super) fn finite(x: f64, field: &'static str) -> Result<f64, WireError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(WireError::NotFinite(field))
    }
}

/// `text`, if at most [`MAX_ID_BYTES`] long.
pub(super) fn bounded_id(text: String, field: &'static str) -> Result<String, WireError> {
    if text.len() > MAX_ID_BYTES {
        Err(WireError::TooLarge(field))
    } else {
        Ok(text)
    }
}

pub(super) fn place_id(text: String, field: &'static str) -> Result<PlaceId, WireError> {
    bounded_id(text, field).map(PlaceId)
}

pub(super) fn device_id(text: String, field: &'static str) -> Result<DeviceId, WireError> {
    bounded_id(text, field).map(DeviceId)
}

pub(super) fn property_to_proto(property: PropertyId) -> pb::PropertyId {
    pb::PropertyId {
        siid: property.siid,
        piid: property.piid,
    }
}

pub(super) fn property_from_proto(
    message: Option<pb::PropertyId>,
    field: &'static str,
) -> Result<PropertyId, WireError> {
    let p = message.ok_or(WireError::Missing(field))?;
    Ok(PropertyId::new(p.siid, p.piid))
}

pub(super) fn device_action_to_proto(action: DeviceActionId) -> pb::DeviceActionId {
    pb::DeviceActionId {
        siid: action.siid,
        aiid: action.aiid,
    }
}

pub(super) fn device_action_from_proto(
    message: Option<pb::DeviceActionId>,
    field: &'static str,
) -> Result<DeviceActionId, WireError> {
    let a = message.ok_or(WireError::Missing(field))?;
    Ok(DeviceActionId {
        siid: a.siid,
        aiid: a.aiid,
    })
}

pub(super) fn weekdays_to_proto(days: Weekdays) -> u32 {
    DAYS.iter()
        .enumerate()
        .filter(|(_, d)| days.contains(**d))
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

pub(super) fn weekdays_from_proto(bits: u32, field: &'static str) -> Result<Weekdays, WireError> {
    if bits & !0x7f != 0 {
        return Err(WireError::OutOfRange(field));
    }
    let days: Vec<Weekday> = DAYS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, d)| *d)
        .collect();
    Ok(Weekdays::of(&days))
}

pub(super) fn clock_to_proto(time: ClockTime) -> pb::ClockTime {
    // 0..86_400 seconds: every part fits.
    let seconds = time.ms_of_day() / 1000;
    pb::ClockTime {
        hour: (seconds / 3600) as u32,
        minute: (seconds / 60 % 60) as u32,
        second: (seconds % 60) as u32,
    }
}

pub(super) fn clock_from_proto(message: Option<pb::ClockTime>) -> Result<ClockTime, WireError> {
    let c = message.ok_or(WireError::Missing("ClockTime"))?;
    let part = |x: u32| u8::try_from(x).map_err(|_| WireError::OutOfRange("ClockTime"));
    ClockTime::new(part(c.hour)?, part(c.minute)?, part(c.second)?)
        .ok_or(WireError::OutOfRange("ClockTime"))
}

pub(super) fn sun_to_proto(event: SunEvent) -> i32 {
    match event {
        SunEvent::Sunrise => pb::SunEvent::Sunrise,
        SunEvent::Sunset => pb::SunEvent::Sunset,
    }
    .into()
}

pub(super) fn sun_from_proto(value: i32) -> Result<SunEvent, WireError> {
    match enumeration::<pb::SunEvent>(value, "SunEvent")? {
        pb::SunEvent::Unspecified => Err(WireError::Missing("SunEvent")),
        pb::SunEvent::Sunrise => Ok(SunEvent::Sunrise),
        pb::SunEvent::Sunset => Ok(SunEvent::Sunset),
    }
}

/// A sun offset within the engine's ±[`MAX_SUN_OFFSET_MIN`]. Checked here
/// too: validation takes its absolute value, which `i32::MIN` has not.
pub(super) fn sun_offset(offset_min: i32) -> Result<i32, WireError> {
    if (-MAX_SUN_OFFSET_MIN..=MAX_SUN_OFFSET_MIN).contains(&offset_min) {
        Ok(offset_min)
    } else {
        Err(WireError::OutOfRange("offset_min"))
    }
}

pub(super) fn day_time_to_proto(time: &DayTime) -> pb::DayTime {
    use pb::day_time::Kind;
    let kind = match time {
        DayTime::Clock(t) => Kind::Clock(clock_to_proto(*t)),
        DayTime::Sun {
            event,
            offset_min,
            place,
        } => Kind::Sun(pb::day_time::Sun {
            event: sun_to_proto(*event),
            offset_min: *offset_min,
            place: place.0.clone(),
        }),
    };
    pb::DayTime { kind: Some(kind) }
}

pub(super) fn day_time_from_proto(message: pb::DayTime) -> Result<DayTime, WireError> {
    use pb::day_time::Kind;
    Ok(
        match message.kind.ok_or(WireError::Missing("DayTime.kind"))? {
            Kind::Clock(c) => DayTime::Clock(clock_from_proto(Some(c))?),
            Kind::Sun(s) => DayTime::Sun {
                event: sun_from_proto(s.event)?,
                offset_min: sun_offset(s.offset_min)?,
                place: place_id(s.place, "DayTime.Sun.place")?,
            },
        },
    )
}

pub(super) fn test_to_proto(test: &Test) -> pb::Test {
    use pb::test::Kind;
    let kind = match test {
        Test::Equals(v) => Kind::Equals(value_to_proto(v)),
        Test::NotEquals(v) => Kind::NotEquals(value_to_proto(v)),
        Test::Above(x) => Kind::Above(*x),
        Test::Below(x) => Kind::Below(*x),
        Test::Between { low, high } => Kind::Between(pb::test::Between {
            low: *low,
            high: *high,
        }),
    };
    pb::Test { kind: Some(kind) }
}

pub(super) fn test_from_proto(
    message: Option<pb::Test>,
    field: &'static str,
) -> Result<Test, WireError> {
    use pb::test::Kind;
    let test = message.ok_or(WireError::Missing(field))?;
    Ok(match test.kind.ok_or(WireError::Missing("Test.kind"))? {
        Kind::Equals(v) => Test::Equals(value_from_proto(v)?),
        Kind::NotEquals(v) => Test::NotEquals(value_from_proto(v)?),
        Kind::Above(x) => Test::Above(finite(x, "Test.above")?),
        Kind::Below(x) => Test::Below(finite(x, "Test.below")?),
        Kind::Between(b) => Test::Between {
            low: finite(b.low, "Test.Between.low")?,
            high: finite(b.high, "Test.Between.high")?,
        },
    })
}

pub(super) fn change_to_proto(change: &Change) -> pb::Change {
    use pb::change::Kind;
    let kind = match change {
        Change::Any => Kind::Any(pb::change::Any {}),
        Change::Becomes(test) => Kind::Becomes(test_to_proto(test)),
    };
    pb::Change { kind: Some(kind) }
}

pub(super) fn change_from_proto(
    message: Option<pb::Change>,
    field: &'static str,
) -> Result<Change, WireError> {
    use pb::change::Kind;
    let change = message.ok_or(WireError::Missing(field))?;
    Ok(
        match change.kind.ok_or(WireError::Missing("Change.kind"))? {
            Kind::Any(_) => Change::Any,
            Kind::Becomes(test) => Change::Becomes(test_from_proto(Some(test), "Change.becomes")?),
        },
    )
}

pub(super) fn recipients_to_proto(recipients: Recipients) -> i32 {
    match recipients {
        Recipients::Owner => pb::Recipients::Owner,
        Recipients::OwnerAndAuthorised => pb::Recipients::OwnerAndAuthorised,
    }
    .into()
}

pub(super) fn recipients_from_proto(value: i32) -> Result<Recipients, WireError> {
    match enumeration::<pb::Recipients>(value, "Recipients")? {
        pb::Recipients::Unspecified => Err(WireError::Missing("Recipients")),
        pb::Recipients::Owner => Ok(Recipients::Owner),
        pb::Recipients::OwnerAndAuthorised => Ok(Recipients::OwnerAndAuthorised),
    }
}

pub(super) fn vehicle_state_to_proto(state: VehicleState) -> i32 {
    match state {
        VehicleState::Parking => pb::VehicleState::Parking,
        VehicleState::Locking => pb::VehicleState::Locking,
        VehicleState::Charging => pb::VehicleState::Charging,
    }
    .into()
}

pub(super) fn vehicle_state_from_proto(value: i32) -> Result<VehicleState, WireError> {
    match enumeration::<pb::VehicleState>(value, "VehicleState")? {
        pb::VehicleState::Unspecified => Err(WireError::Missing("VehicleState")),
        pb::VehicleState::Parking => Ok(VehicleState::Parking),
        pb::VehicleState::Locking => Ok(VehicleState::Locking),
        pb::VehicleState::Charging => Ok(VehicleState::Charging),
    }
}

// ------------------------------------------------------------------ mode, policy, inputs

pub(super) fn mode_to_proto(mode: Mode) -> pb::Mode {
    use pb::mode::Kind;
    let (kind, max) = match mode {
        Mode::Single => (Kind::Single, 0),
        Mode::Restart => (Kind::Restart, 0),
        Mode::Queued { max } => (Kind::Queued, max),
        Mode::Parallel { max } => (Kind::Parallel, max),
    };
    pb::Mode {
        kind: kind.into(),
        max: u32::from(max),
    }
}

pub(super) fn mode_from_proto(message: pb::Mode) -> Result<Mode, WireError> {
    use pb::mode::Kind;
    let max = || u16::try_from(message.max).map_err(|_| WireError::OutOfRange("Mode.max"));
    let none = || {
        if message.max == 0 {
            Ok(())
        } else {
            Err(WireError::OutOfRange("Mode.max"))
        }
    };
    Ok(match enumeration::<Kind>(message.kind, "Mode.kind")? {
        Kind::Unspecified => return Err(WireError::Missing("Mode.kind")),
        Kind::Single => none().map(|()| Mode::Single)?,
        Kind::Restart => none().map(|()| Mode::Restart)?,
        Kind::Queued => Mode::Queued { max: max()? },
        Kind::Parallel => Mode::Parallel { max: max()? },
    })
}

pub(super) fn missed_to_proto(policy: MissedPolicy) -> pb::MissedPolicy {
    use pb::missed_policy::{Kind, RunLate, Skip};
    let kind = match policy {
        MissedPolicy::Skip => Kind::Skip(Skip {}),
        MissedPolicy::RunLate { grace_ms } => Kind::RunLate(RunLate { grace_ms }),
    };
    pb::MissedPolicy { kind: Some(kind) }
}

pub(super) fn missed_from_proto(message: pb::MissedPolicy) -> Result<MissedPolicy, WireError> {
    use pb::missed_policy::Kind;
    Ok(
        match message
            .kind
            .ok_or(WireError::Missing("MissedPolicy.kind"))?
        {
            Kind::Skip(_) => MissedPolicy::Skip,
            Kind::RunLate(r) => MissedPolicy::RunLate {
                grace_ms: r.grace_ms,
            },
        },
    )
}

pub(super) fn input_to_proto(input: &Input) -> pb::Input {
    use pb::input::Kind;
    let kind = match input {
        Input::Place(place) => Kind::Place(place.0.clone()),
        Input::Signal(path) => Kind::Signal(path.clone()),
        Input::Property(device, property) => Kind::Property(pb::input::Property {
            device: device.0.clone(),
            property: Some(property_to_proto(*property)),
        }),
        Input::Vehicle(state) => Kind::Vehicle(vehicle_state_to_proto(*state)),
    };
    pb::Input { kind: Some(kind) }
}

pub(super) fn input_from_proto(message: pb::Input) -> Result<Input, WireError> {
    use pb::input::Kind;
    Ok(
        match message.kind.ok_or(WireError::Missing("Input.kind"))? {
            Kind::Place(place) => Input::Place(place_id(place, "Input.place")?),
            Kind::Signal(path) => Input::Signal(bounded_id(path, "Input.signal")?),
            Kind::Property(p) => Input::Property(
                device_id(p.device, "Input.Property.device")?,
                property_from_proto(p.property, "Input.Property.property")?,
            ),
            Kind::Vehicle(state) => Input::Vehicle(vehicle_state_from_proto(state)?),
        },
    )
}
