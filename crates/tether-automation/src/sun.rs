//! Sunrise and sunset, computed here from a place's latitude and longitude
//! and the date, with NOAA's solar calculator equations (after Jean Meeus,
//! *Astronomical Algorithms*; the NOAA Global Monitoring Laboratory's
//! "General Solar Position Calculations" and its spreadsheet).
//!
//! The sun is up when its centre is 0.833° below the horizon (zenith
//! 90.833°: its radius plus standard atmospheric refraction). Each event is
//! computed twice: once with the sun's position at local solar noon, then
//! again with its position at the first estimate, which brings the result
//! within about a minute of NOAA's tables at latitudes up to ±66°. At
//! higher latitudes a day may have no sunrise or no sunset (polar day or
//! night): the result is `None`.

use crate::civil::{DAY_MS, Date};
use crate::model::SunEvent;

/// NOAA's zenith for sunrise and sunset, degrees.
pub const SUNRISE_ZENITH_DEG: f64 = 90.833;

/// When `event` happens on `date` (a UTC calendar date) at `lat`, `lon`
/// (degrees, east positive), as Unix milliseconds; `None` when the sun does
/// not cross the horizon that day (polar day or night).
///
/// The event is the one of the solar day centred on that date's local
/// solar noon, which at longitudes far from Greenwich can fall on the
/// neighbouring UTC date.
pub fn sun_event_utc_ms(date: Date, lat: f64, lon: f64, event: SunEvent) -> Option<i64> {
    let midnight = date.midnight_utc_ms();
    // First pass: the sun's position at local solar noon (approximately
    // 12:00 minus the longitude's share of the day).
    let noon_guess_min = 720.0 - 4.0 * lon;
    let first = event_minutes(midnight, noon_guess_min, lat, lon, event)?;
    // Second pass: the sun's position at the first estimate.
    let second = event_minutes(midnight, first, lat, lon, event)?;
    Some(midnight + (second * 60_000.0).round() as i64)
}

/// Minutes after `midnight` (UTC) of `event`, with the sun's position taken
/// at `at_min` minutes after that midnight.
fn event_minutes(
    midnight_ms: i64,
    at_min: f64,
    lat: f64,
    lon: f64,
    event: SunEvent,
) -> Option<f64> {
    let julian_day = 2_440_587.5 + (midnight_ms as f64) / (DAY_MS as f64) + at_min / 1440.0;
    let t = (julian_day - 2_451_545.0) / 36_525.0;
    let (declination, equation_of_time) = sun_position(t);
    let hour_angle = sunrise_hour_angle_deg(lat, declination)?;
    let solar_noon = 720.0 - 4.0 * lon - equation_of_time;
    Some(match event {
        SunEvent::Sunrise => solar_noon - 4.0 * hour_angle,
        SunEvent::Sunset => solar_noon + 4.0 * hour_angle,
    })
}

/// The sun's declination (degrees) and the equation of time (minutes) at
/// Julian century `t` (since J2000.0).
fn sun_position(t: f64) -> (f64, f64) {
    let mean_longitude = (280.466_46 + t * (36_000.769_83 + t * 0.000_303_2)).rem_euclid(360.0);
    let mean_anomaly = 357.529_11 + t * (35_999.050_29 - 0.000_153_7 * t);
    let eccentricity = 0.016_708_634 - t * (0.000_042_037 + 0.000_000_126_7 * t);
    let m = mean_anomaly.to_radians();
    let centre = m.sin() * (1.914_602 - t * (0.004_817 + 0.000_014 * t))
        + (2.0 * m).sin() * (0.019_993 - 0.000_101 * t)
        + (3.0 * m).sin() * 0.000_289;
    let true_longitude = mean_longitude + centre;
    let omega = (125.04 - 1_934.136 * t).to_radians();
    let apparent_longitude = true_longitude - 0.005_69 - 0.004_78 * omega.sin();
    let seconds = 21.448 - t * (46.815 + t * (0.000_59 - t * 0.001_813));
    let mean_obliquity = 23.0 + (26.0 + seconds / 60.0) / 60.0;
    let obliquity = (mean_obliquity + 0.002_56 * omega.cos()).to_radians();
    let declination = (obliquity.sin() * apparent_longitude.to_radians().sin())
        .asin()
        .to_degrees();

    let y = (obliquity / 2.0).tan().powi(2);
    let l0 = mean_longitude.to_radians();
    let e = eccentricity;
    let equation_of_time = 4.0
        * (y * (2.0 * l0).sin() - 2.0 * e * m.sin() + 4.0 * e * y * m.sin() * (2.0 * l0).cos()
            - 0.5 * y * y * (4.0 * l0).sin()
            - 1.25 * e * e * (2.0 * m).sin())
        .to_degrees();
    (declination, equation_of_time)
}

/// The hour angle of sunrise, degrees; `None` in polar day or night.
fn sunrise_hour_angle_deg(lat: f64, declination: f64) -> Option<f64> {
    let lat = lat.to_radians();
    let decl = declination.to_radians();
    let cos_ha =
        SUNRISE_ZENITH_DEG.to_radians().cos() / (lat.cos() * decl.cos()) - lat.tan() * decl.tan();
    if !(-1.0..=1.0).contains(&cos_ha) {
        return None;
    }
    Some(cos_ha.acos().to_degrees())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minutes after UTC midnight of `date`, rounded.
    fn minutes(date: Date, lat: f64, lon: f64, event: SunEvent) -> Option<i64> {
        sun_event_utc_ms(date, lat, lon, event)
            .map(|ms| ((ms - date.midnight_utc_ms()) as f64 / 60_000.0).round() as i64)
    }

    fn hm(h: i64, m: i64) -> i64 {
        h * 60 + m
    }

    /// Reference values from almanac tables computed with an independent
    /// method (Paul Schlyter's `sunriset`, same 0.833° depression), to the
    /// minute; NOAA's method and Schlyter's agree within a minute or two.
    #[test]
    fn sun_times_match_almanac_values() {
        const TOLERANCE_MIN: i64 = 2;
        let cases = [
            // (date, lat, lon, sunrise UTC, sunset UTC)
            (Date::new(2013, 1, 1), 51.467, 0.0, hm(8, 5), hm(16, 2)), // Greenwich
            (Date::new(2013, 6, 21), 51.467, 0.0, hm(3, 43), hm(20, 21)),
            (Date::new(2013, 3, 21), 51.467, 0.0, hm(6, 0), hm(18, 15)),
            // Quito (UTC-5 in the table): 06:14 and 18:22 local.
            (
                Date::new(2013, 1, 1),
                -0.25,
                -78.583,
                hm(11, 14),
                hm(23, 22),
            ),
            // Reykjavik (UTC-1 in the table): 10:18 and 14:45 local.
            (
                Date::new(2013, 1, 1),
                64.067,
                -21.967,
                hm(11, 18),
                hm(15, 45),
            ),
            // El Hierro (UTC-1 in the table): 07:03 and 17:29 local.
            (Date::new(2013, 1, 1), 27.733, -18.05, hm(8, 3), hm(18, 29)),
        ];
        for (date, lat, lon, rise, set) in cases {
            let got_rise = minutes(date, lat, lon, SunEvent::Sunrise).expect("sunrise");
            let got_set = minutes(date, lat, lon, SunEvent::Sunset).expect("sunset");
            assert!(
                (got_rise - rise).abs() <= TOLERANCE_MIN,
                "{date:?} {lat} {lon}: sunrise {got_rise} vs {rise}"
            );
            assert!(
                (got_set - set).abs() <= TOLERANCE_MIN,
                "{date:?} {lat} {lon}: sunset {got_set} vs {set}"
            );
        }
    }

    #[test]
    fn polar_day_and_night_have_no_sunrise_or_sunset() {
        // Tromsø, 69.65° N.
        let (lat, lon) = (69.65, 18.96);
        assert_eq!(
            sun_event_utc_ms(Date::new(2025, 6, 21), lat, lon, SunEvent::Sunset),
            None
        );
        assert_eq!(
            sun_event_utc_ms(Date::new(2025, 12, 21), lat, lon, SunEvent::Sunrise),
            None
        );
        assert!(sun_event_utc_ms(Date::new(2025, 3, 21), lat, lon, SunEvent::Sunrise).is_some());
    }
}
