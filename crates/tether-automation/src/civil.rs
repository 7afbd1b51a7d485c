//! Calendar arithmetic on the proleptic Gregorian calendar, without a time
//! zone database: local time is UTC plus an offset the host passes in (and
//! updates at a daylight-saving change).
//!
//! Day numbers count days since 1970-01-01; the conversions are Howard
//! Hinnant's `days_from_civil` / `civil_from_days`.

use std::fmt;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// A time of day, local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockTime {
    hour: u8,
    minute: u8,
    second: u8,
}

impl ClockTime {
    /// `hour:minute:second`, if it is a time of day (hour < 24, minute and
    /// second < 60).
    pub const fn new(hour: u8, minute: u8, second: u8) -> Option<Self> {
        if hour < 24 && minute < 60 && second < 60 {
            Some(Self {
                hour,
                minute,
                second,
            })
        } else {
            None
        }
    }

    /// `hour:minute`, panicking on an impossible time (for constants).
    pub const fn hm(hour: u8, minute: u8) -> Self {
        match Self::new(hour, minute, 0) {
            Some(t) => t,
            None => panic!("not a time of day"),
        }
    }

    /// Milliseconds since local midnight.
    pub fn ms_of_day(self) -> i64 {
        (i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second)) * 1000
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }
}

/// A day of the week, Monday first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// The weekday of day number `day` (days since 1970-01-01, a Thursday).
    pub fn of_day(day: i64) -> Self {
        Self::ALL[(day + 3).rem_euclid(7) as usize]
    }
}

/// A set of weekdays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

impl Weekdays {
    /// Every day.
    pub const ALL: Weekdays = Weekdays(0x7f);
    /// Monday to Friday.
    pub const WORKDAYS: Weekdays = Weekdays(0x1f);
    /// Saturday and Sunday.
    pub const WEEKEND: Weekdays = Weekdays(0x60);
    /// No day (a trigger with no day never fires; validation refuses it).
    pub const NONE: Weekdays = Weekdays(0);

    /// These days.
    pub fn of(days: &[Weekday]) -> Self {
        Weekdays(days.iter().fold(0, |acc, d| acc | (1 << (*d as u8))))
    }

    /// Whether `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << (day as u8)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 & 0x7f == 0
    }
}

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year (astronomical numbering).
    pub year: i32,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
}

impl Date {
    /// A date (not checked beyond the ranges the fields document).
    pub const fn new(year: i32, month: u8, day: u8) -> Self {
        Self { year, month, day }
    }

    /// Days since 1970-01-01.
    pub fn day_number(self) -> i64 {
        let m = i64::from(self.month);
        let d = i64::from(self.day);
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date of day number `day`.
    pub fn from_day_number(day: i64) -> Self {
        let z = day + 719_468;
        let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        Self {
            year: y as i32,
            month: m as u8,
            day: d as u8,
        }
    }

    /// Unix milliseconds of this date's midnight, UTC.
    pub fn midnight_utc_ms(self) -> i64 {
        self.day_number() * DAY_MS
    }
}

/// Local day number and milliseconds into that day, for `utc_ms` at
/// `offset_min` minutes east of UTC.
pub(crate) fn local_day(utc_ms: i64, offset_min: i32) -> (i64, i64) {
    let local = utc_ms + i64::from(offset_min) * 60_000;
    (local.div_euclid(DAY_MS), local.rem_euclid(DAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip() {
        assert_eq!(Date::new(1970, 1, 1).day_number(), 0);
        assert_eq!(Date::new(2000, 3, 1).day_number(), 11_017);
        assert_eq!(Date::new(2024, 2, 29).day_number(), 19_782);
        for day in -800_000..800_000i64 {
            if day % 997 == 0 {
                assert_eq!(Date::from_day_number(day).day_number(), day);
            }
        }
        assert_eq!(Weekday::of_day(0), Weekday::Thursday);
        assert_eq!(
            Weekday::of_day(Date::new(2026, 11, 29).day_number()),
            Weekday::Sunday
        );
    }
}
