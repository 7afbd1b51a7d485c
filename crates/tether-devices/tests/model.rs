//! The typed device model (R14): the built-in products are coherent, and
//! writes, action calls and reports are checked against format, range and
//! access with typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::{bool_value, float_value, uint_value};
use tether_devices::validate::{check_action, check_event, check_report, check_write};
use tether_devices::{
    ACCESS_READ, CAMERA_PRODUCT_MODEL, Catalogue, DeviceError, LAMP_PRODUCT_MODEL, camera_model,
    check_model, lamp_model,
};
use tether_proto::v1::{DeviceValue, PropertyFormat, device_value};

fn string_value(s: &str) -> Option<DeviceValue> {
    Some(DeviceValue {
        kind: Some(device_value::Kind::StringValue(s.into())),
    })
}

fn int_value(v: i32) -> Option<DeviceValue> {
    Some(DeviceValue {
        kind: Some(device_value::Kind::IntValue(v)),
    })
}

#[test]
fn builtin_catalogue_holds_the_lamp_and_the_camera_r14() {
    let catalogue = Catalogue::builtin();
    assert_eq!(
        catalogue.product_models().collect::<Vec<_>>(),
        [LAMP_PRODUCT_MODEL, CAMERA_PRODUCT_MODEL]
    );
    // The lamp of `tether pair` and the demo.
    assert_eq!(LAMP_PRODUCT_MODEL, 0x1a2b);
    for model in [lamp_model(), camera_model()] {
        check_model(&model).unwrap();
        // No model exposes a hardware identifier (R2, R12).
        for service in &model.services {
            for property in &service.properties {
                for banned in ["serial", "mac", "ssid", "device-id"] {
                    assert!(
                        !property.r#type.contains(banned),
                        "{} exposes {banned}",
                        property.r#type
                    );
                }
            }
        }
    }
}

#[test]
fn lamp_model_has_the_promised_shape_r14() {
    let lamp = lamp_model();
    let light = lamp.services.iter().find(|s| s.iid == 2).unwrap();
    let on = &light.properties[0];
    assert_eq!(on.format, PropertyFormat::Bool as i32);
    assert_eq!(on.access, 0b111, "on is read, write, notify");
    let brightness = &light.properties[1];
    assert_eq!(brightness.format, PropertyFormat::Uint8 as i32);
    let range = brightness.range.as_ref().unwrap();
    assert_eq!((range.min, range.max, range.step), (1.0, 100.0, 1.0));
    assert_eq!(brightness.unit, "percentage");
    assert!(
        light.properties[2].range.is_some(),
        "colour temperature range"
    );
    assert_eq!(light.actions.len(), 1, "toggle");
    assert_eq!(light.events.len(), 1, "overheated");
}

#[test]
fn writes_are_checked_against_access_format_and_range_r14() {
    let lamp = lamp_model();
    // Accepted.
    check_write(&lamp, 2, 1, bool_value(true).as_ref()).unwrap();
    check_write(&lamp, 2, 2, uint_value(1).as_ref()).unwrap();
    check_write(&lamp, 2, 2, uint_value(100).as_ref()).unwrap();
    check_write(&lamp, 2, 3, uint_value(4000).as_ref()).unwrap();
    check_write(&lamp, 2, 4, uint_value(2).as_ref()).unwrap();

    // Unknown property iid, unknown service.
    assert!(matches!(
        check_write(&lamp, 2, 99, bool_value(true).as_ref()),
        Err(DeviceError::UnknownProperty { siid: 2, piid: 99 })
    ));
    assert!(matches!(
        check_write(&lamp, 9, 1, bool_value(true).as_ref()),
        Err(DeviceError::UnknownProperty { siid: 9, piid: 1 })
    ));
    // Read-only: firmware revision, lamp temperature.
    assert!(matches!(
        check_write(&lamp, 1, 3, string_value("9.9").as_ref()),
        Err(DeviceError::ReadOnly { siid: 1, piid: 3 })
    ));
    assert!(matches!(
        check_write(&lamp, 2, 5, float_value(20.0).as_ref()),
        Err(DeviceError::ReadOnly { siid: 2, piid: 5 })
    ));
    // Out of range: below, above, past the uint8 width, off the value list.
    for (piid, value) in [(2, 0), (2, 101), (2, 300), (3, 2699), (3, 6501), (4, 3)] {
        assert!(
            matches!(
                check_write(&lamp, 2, piid, uint_value(value).as_ref()),
                Err(DeviceError::OutOfRange { siid: 2, .. })
            ),
            "2.{piid} = {value}"
        );
    }
    // Wrong format: a number for a bool, a bool for a number, a signed value
    // for an unsigned property, no value at all.
    for (piid, value) in [
        (1, uint_value(1)),
        (2, bool_value(true)),
        (2, int_value(50)),
        (2, None),
        (2, Some(DeviceValue { kind: None })),
    ] {
        assert!(
            matches!(
                check_write(&lamp, 2, piid, value.as_ref()),
                Err(DeviceError::WrongFormat { siid: 2, .. })
            ),
            "2.{piid} = {value:?}"
        );
    }
}

#[test]
fn steps_and_floats_are_checked_r14() {
    let camera = camera_model();
    // Rotation in steps of 90 degrees.
    check_write(&camera, 2, 4, uint_value(180).as_ref()).unwrap();
    assert!(matches!(
        check_write(&camera, 2, 4, uint_value(45).as_ref()),
        Err(DeviceError::OutOfRange { siid: 2, piid: 4 })
    ));
    let lamp = lamp_model();
    // The lamp's temperature report: step 0.1, finite.
    check_report(&lamp, 2, 5, float_value(36.6).as_ref()).unwrap();
    for bad in [f32::NAN, f32::INFINITY, 200.0, 36.65] {
        assert!(
            matches!(
                check_report(&lamp, 2, 5, float_value(bad).as_ref()),
                Err(DeviceError::OutOfRange { siid: 2, piid: 5 })
            ),
            "{bad}"
        );
    }
    // Strings have a length limit.
    check_report(&lamp, 1, 3, string_value("1.2.3").as_ref()).unwrap();
    assert!(matches!(
        check_report(&lamp, 1, 3, string_value(&"x".repeat(257)).as_ref()),
        Err(DeviceError::OutOfRange { siid: 1, piid: 3 })
    ));
}

#[test]
fn actions_and_events_take_their_declared_arguments_r14() {
    let lamp = lamp_model();
    check_action(&lamp, 2, 1, &[]).unwrap();
    assert!(matches!(
        check_action(&lamp, 2, 1, &[DeviceValue::default()]),
        Err(DeviceError::WrongArguments {
            expected: 0,
            got: 1
        })
    ));
    assert!(matches!(
        check_action(&lamp, 2, 7, &[]),
        Err(DeviceError::UnknownAction { siid: 2, aiid: 7 })
    ));
    let hot = float_value(90.0).unwrap();
    check_event(&lamp, 2, 1, std::slice::from_ref(&hot)).unwrap();
    assert!(matches!(
        check_event(&lamp, 2, 1, &[]),
        Err(DeviceError::WrongArguments {
            expected: 1,
            got: 0
        })
    ));
    assert!(matches!(
        check_event(&lamp, 2, 1, &[bool_value(true).unwrap()]),
        Err(DeviceError::WrongFormat { siid: 2, piid: 5 })
    ));
    assert!(matches!(
        check_event(&lamp, 3, 1, &[hot]),
        Err(DeviceError::UnknownEvent { siid: 3, eiid: 1 })
    ));
}

#[test]
fn incoherent_models_are_refused() {
    let mut catalogue = Catalogue::new();
    let mut repeated = lamp_model();
    repeated.services[1].properties[1].iid = 1;
    let mut range_on_bool = lamp_model();
    range_on_bool.services[1].properties[0].range = lamp_model().services[1].properties[1].range;
    let mut no_access = lamp_model();
    no_access.services[1].properties[0].access = 0;
    let mut dangling_action = lamp_model();
    dangling_action.services[1].actions[0].inputs = vec![42];
    let mut wide = lamp_model();
    wide.product_model = 70_000;
    let mut write_only = lamp_model();
    write_only.services[1].properties[0].access = ACCESS_READ << 1;
    check_model(&write_only).unwrap();
    for (what, model) in [
        ("repeated iid", repeated),
        ("range on bool", range_on_bool),
        ("no access", no_access),
        ("dangling action", dangling_action),
        ("wide product model", wide),
    ] {
        assert!(
            matches!(catalogue.insert(model), Err(DeviceError::InvalidModel(_))),
            "{what}"
        );
    }
    assert_eq!(catalogue.product_models().count(), 0);
}
