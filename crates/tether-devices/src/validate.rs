//! Checking values against a device's model (SPEC §16.2): a write must name
//! a writable property and carry a value of its format within its range or
//! value list; action and event arguments follow the formats of the
//! properties they name.

use tether_proto::v1::device_value::Kind;
use tether_proto::v1::{ActionSpec, DeviceModel, DeviceValue, PropertyFormat, PropertySpec};

use crate::DeviceError;
use crate::catalogue::{ACCESS_NOTIFY, ACCESS_READ, ACCESS_WRITE};

/// Longest string value, in bytes.
pub const MAX_STRING_VALUE_BYTES: usize = 256;

/// The property `siid.piid` of `model`.
pub fn find_property(
    model: &DeviceModel,
    siid: u32,
    piid: u32,
) -> Result<&PropertySpec, DeviceError> {
    model
        .services
        .iter()
        .find(|s| s.iid == siid)
        .and_then(|s| s.properties.iter().find(|p| p.iid == piid))
        .ok_or(DeviceError::UnknownProperty { siid, piid })
}

/// Checks a write of `value` to `siid.piid`: the property exists, is
/// writable, and the value fits its format and range.
pub fn check_write(
    model: &DeviceModel,
    siid: u32,
    piid: u32,
    value: Option<&DeviceValue>,
) -> Result<(), DeviceError> {
    let spec = find_property(model, siid, piid)?;
    if spec.access & ACCESS_WRITE == 0 {
        return Err(DeviceError::ReadOnly { siid, piid });
    }
    check_value(spec, siid, piid, value)
}

/// Checks a value a device reported for `siid.piid`: the property exists,
/// is readable or notifies, and the value fits its format and range.
pub fn check_report(
    model: &DeviceModel,
    siid: u32,
    piid: u32,
    value: Option<&DeviceValue>,
) -> Result<(), DeviceError> {
    let spec = find_property(model, siid, piid)?;
    if spec.access & (ACCESS_READ | ACCESS_NOTIFY) == 0 {
        return Err(DeviceError::UnknownProperty { siid, piid });
    }
    check_value(spec, siid, piid, value)
}

/// Checks an action call: the action exists and `arguments` match its
/// inputs in number, format and range.
pub fn check_action<'m>(
    model: &'m DeviceModel,
    siid: u32,
    aiid: u32,
    arguments: &[DeviceValue],
) -> Result<&'m ActionSpec, DeviceError> {
    let action = model
        .services
        .iter()
        .find(|s| s.iid == siid)
        .and_then(|s| s.actions.iter().find(|a| a.iid == aiid))
        .ok_or(DeviceError::UnknownAction { siid, aiid })?;
    check_arguments(model, siid, &action.inputs, arguments)?;
    Ok(action)
}

/// Checks an event a device reported: it exists and `arguments` match.
pub fn check_event(
    model: &DeviceModel,
    siid: u32,
    eiid: u32,
    arguments: &[DeviceValue],
) -> Result<(), DeviceError> {
    let event = model
        .services
        .iter()
        .find(|s| s.iid == siid)
        .and_then(|s| s.events.iter().find(|e| e.iid == eiid))
        .ok_or(DeviceError::UnknownEvent { siid, eiid })?;
    check_arguments(model, siid, &event.arguments, arguments)
}

fn check_arguments(
    model: &DeviceModel,
    siid: u32,
    piids: &[u32],
    arguments: &[DeviceValue],
) -> Result<(), DeviceError> {
    if piids.len() != arguments.len() {
        return Err(DeviceError::WrongArguments {
            expected: piids.len(),
            got: arguments.len(),
        });
    }
    for (&piid, argument) in piids.iter().zip(arguments) {
        let spec = find_property(model, siid, piid)?;
        check_value(spec, siid, piid, Some(argument))?;
    }
    Ok(())
}

/// Checks that `value` has `spec`'s format and lies within its range or
/// value list.
pub fn check_value(
    spec: &PropertySpec,
    siid: u32,
    piid: u32,
    value: Option<&DeviceValue>,
) -> Result<(), DeviceError> {
    let wrong_format = DeviceError::WrongFormat { siid, piid };
    let out_of_range = DeviceError::OutOfRange { siid, piid };
    let format = PropertyFormat::try_from(spec.format).unwrap_or_default();
    let Some(kind) = value.and_then(|v| v.kind.as_ref()) else {
        return Err(wrong_format);
    };
    // The number to check against the range, if the format is numeric.
    let number: f64 = match (format, kind) {
        (PropertyFormat::Bool, Kind::BoolValue(_)) => return Ok(()),
        (PropertyFormat::String, Kind::StringValue(s)) => {
            return if s.len() <= MAX_STRING_VALUE_BYTES {
                Ok(())
            } else {
                Err(out_of_range)
            };
        }
        (PropertyFormat::Uint8, Kind::UintValue(v)) if *v > u32::from(u8::MAX) => {
            return Err(out_of_range);
        }
        (PropertyFormat::Uint16, Kind::UintValue(v)) if *v > u32::from(u16::MAX) => {
            return Err(out_of_range);
        }
        (
            PropertyFormat::Uint8 | PropertyFormat::Uint16 | PropertyFormat::Uint32,
            Kind::UintValue(v),
        ) => f64::from(*v),
        (PropertyFormat::Int32, Kind::IntValue(v)) => f64::from(*v),
        (PropertyFormat::Float, Kind::FloatValue(v)) if v.is_finite() => f64::from(*v),
        (PropertyFormat::Float, Kind::FloatValue(_)) => return Err(out_of_range),
        _ => return Err(wrong_format),
    };
    if let Some(range) = &spec.range {
        if number < range.min || number > range.max {
            return Err(out_of_range);
        }
        if range.step > 0.0 {
            let steps = ((number - range.min) / range.step).round();
            // A float carried as f32 is never exact: allow a hundredth of a
            // step. Integers are exact in f64, so this tolerance is 0 for them
            // whenever the step is 1 or more.
            let tolerance = if format == PropertyFormat::Float {
                range.step / 100.0
            } else {
                0.0
            };
            if (number - (range.min + steps * range.step)).abs() > tolerance {
                return Err(out_of_range);
            }
        }
    }
    if !spec.value_list.is_empty() && !spec.value_list.iter().any(|e| e.value as f64 == number) {
        return Err(out_of_range);
    }
    Ok(())
}
