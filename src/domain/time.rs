//! Time for the services: a [`Clock`] they are given, so tests and
//! previews can fix "now", and calendar periods (a month, a year) anchored
//! on a start date. All in UTC; timestamps leave the server as RFC 3339.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where services get "now" from.
pub trait Clock {
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that says what it is told: for tests, and for previews "as of"
/// a given instant.
#[derive(Debug)]
pub struct FixedClock(Cell<SystemTime>);

impl FixedClock {
    pub fn at(now: SystemTime) -> Self {
        Self(Cell::new(now))
    }

    pub fn advance(&self, by: Duration) {
        self.0.set(self.0.get() + by);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0.get()
    }
}

/// How often a subscription renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    pub fn parse(text: &str) -> Result<Self, super::Invalid> {
        match text {
            "month" => Ok(Interval::Month),
            "year" => Ok(Interval::Year),
            _ => Err(super::Invalid::new("interval", "must be \"month\" or \"year\"")),
        }
    }
}

/// The calendar year (UTC) of an instant: invoice numbers count per year.
pub fn year_of(time: SystemTime) -> i64 {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    civil_from_days(seconds.div_euclid(86_400)).0
}

/// The end of period `n` (1 for the first) of a subscription that started
/// at `anchor`: `n` months or years later, on the anchor's day of the month
/// clamped to the length of the target month (31 Jan → 28 or 29 Feb → 31
/// Mar: each period is counted from the anchor, not from the period before),
/// at the anchor's time of day. Before 1970 counts as 1970.
pub fn period_end(anchor: SystemTime, interval: Interval, n: u32) -> SystemTime {
    let seconds = anchor.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let nanos = anchor.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let (days, time_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let months = match interval {
        Interval::Month => i64::from(n),
        Interval::Year => 12 * i64::from(n),
    };
    let total = year * 12 + i64::from(month - 1) + months;
    let (year, month) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    let day = day.min(days_in_month(year, month));
    let end = days_from_civil(year, month, day) * 86_400 + time_of_day;
    UNIX_EPOCH + Duration::new(u64::try_from(end).unwrap_or(0), nanos)
}

/// The period after `[start, end)` of a subscription anchored at `anchor`:
/// from `end` to the first of the anchor's period ends after it. Counting
/// from the anchor keeps the day of the month (31 Jan: 28 Feb, then 31
/// Mar). `None` when no period end follows within 10,000 periods (an end
/// far in the future, or an anchor after it).
pub fn next_period_end(anchor: SystemTime, interval: Interval, end: SystemTime) -> Option<SystemTime> {
    (1..=10_000).map(|n| period_end(anchor, interval, n)).find(|&next| next > end)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn show(time: SystemTime) -> String {
        humantime::format_rfc3339(time).to_string()
    }

    #[test]
    fn monthly_periods_are_anchored_and_clamped_to_month_end() {
        let anchor = at("2027-01-31T10:00:00Z");
        let ends: Vec<String> = (1..=4).map(|n| show(period_end(anchor, Interval::Month, n))).collect();
        assert_eq!(
            ends,
            ["2027-02-28T10:00:00Z", "2027-03-31T10:00:00Z", "2027-04-30T10:00:00Z", "2027-05-31T10:00:00Z"]
        );
        // A leap year's February.
        assert_eq!(show(period_end(at("2028-01-31T00:00:00Z"), Interval::Month, 1)), "2028-02-29T00:00:00Z");
        // Across a year end.
        assert_eq!(show(period_end(at("2027-12-15T08:30:00Z"), Interval::Month, 1)), "2028-01-15T08:30:00Z");
    }

    #[test]
    fn the_next_period_counts_from_the_anchor_not_from_the_clamped_end() {
        let anchor = at("2027-01-31T10:00:00Z");
        let feb = at("2027-02-28T10:00:00Z");
        assert_eq!(show(next_period_end(anchor, Interval::Month, feb).unwrap()), "2027-03-31T10:00:00Z");
        let mar = next_period_end(anchor, Interval::Month, feb).unwrap();
        assert_eq!(show(next_period_end(anchor, Interval::Month, mar).unwrap()), "2027-04-30T10:00:00Z");
        let leap = at("2028-02-29T00:00:00Z");
        let end = next_period_end(leap, Interval::Year, at("2031-02-28T00:00:00Z")).unwrap();
        assert_eq!(show(end), "2032-02-29T00:00:00Z");
        assert_eq!(next_period_end(anchor, Interval::Month, at("9999-01-01T00:00:00Z")), None);
    }

    #[test]
    fn yearly_periods_keep_the_anchor_day_when_it_exists() {
        let anchor = at("2028-02-29T12:00:00Z");
        assert_eq!(show(period_end(anchor, Interval::Year, 1)), "2029-02-28T12:00:00Z");
        assert_eq!(show(period_end(anchor, Interval::Year, 4)), "2032-02-29T12:00:00Z");
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1_000_000, -1, 0, 1, 59, 365, 10_957, 20_000, 1_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn a_fixed_clock_says_what_it_is_told() {
        let clock = FixedClock::at(at("2027-01-01T00:00:00Z"));
        clock.advance(Duration::from_secs(90));
        assert_eq!(show(clock.now()), "2027-01-01T00:01:30Z");
        assert!(SystemClock.now() > at("2026-01-01T00:00:00Z"));
    }
}
