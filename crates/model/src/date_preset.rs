//! Date presets of the rules language (`{"preset": "lastWeek", "timeZone": "Europe/Paris"}`): named ranges
//! relative to a given instant, in a time zone (IANA names, from the tz database bundled in the binary so
//! every machine answers the same). Pure: the instant is an argument, never the clock.

use jiff::tz::TimeZone;
use jiff::{ToSpan, ZonedDateTime as Zoned};

use crate::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePreset {
    Today,
    Tomorrow,
    Yesterday,
    LastDay,
    LastWeek,
    Last2Weeks,
    LastMonth,
    Last3Months,
    Last6Months,
    Last12Months,
    Last2Years,
    Last3Years,
    NextDay,
    NextWeek,
    Next2Weeks,
    NextMonth,
    Next3Months,
    Next6Months,
    Next12Months,
}

pub const PRESET_NAMES: &str = "today, tomorrow, yesterday, lastDay, lastWeek, last2Weeks, lastMonth, last3Months, \
    last6Months, last12Months, last2Years, last3Years, nextDay, nextWeek, next2Weeks, nextMonth, next3Months, \
    next6Months, next12Months";

impl DatePreset {
    pub fn parse(name: &str) -> Option<DatePreset> {
        use DatePreset::*;
        Some(match name {
            "today" => Today,
            "tomorrow" => Tomorrow,
            "yesterday" => Yesterday,
            "lastDay" => LastDay,
            "lastWeek" => LastWeek,
            "last2Weeks" => Last2Weeks,
            "lastMonth" => LastMonth,
            "last3Months" => Last3Months,
            "last6Months" => Last6Months,
            "last12Months" => Last12Months,
            "last2Years" => Last2Years,
            "last3Years" => Last3Years,
            "nextDay" => NextDay,
            "nextWeek" => NextWeek,
            "next2Weeks" => Next2Weeks,
            "nextMonth" => NextMonth,
            "next3Months" => Next3Months,
            "next6Months" => Next6Months,
            "next12Months" => Next12Months,
            _ => return None,
        })
    }

    /// The range, both ends included, that the preset names at `now` in `time_zone` (an IANA name; `None` if
    /// unknown). `today` / `tomorrow` / `yesterday` are whole calendar days in that zone; `lastX` runs from
    /// `now` minus X to `now`, `nextX` from `now` to `now` plus X (calendar months and years in that zone).
    pub fn range(self, now: Timestamp, time_zone: &str) -> Option<(Timestamp, Timestamp)> {
        use DatePreset::*;
        let tz = TimeZone::get(time_zone).ok()?;
        let now = jiff::Timestamp::from_millisecond(now.millis()).ok()?.to_zoned_datetime(tz);
        let day = |offset: i64| -> Option<(Zoned, Zoned)> {
            let start = now.start_of_day().ok()?.checked_add(offset.days()).ok()?;
            let end = start.checked_add(1.day()).ok()?.checked_sub(1.millisecond()).ok()?;
            Some((start, end))
        };
        let back = |span: jiff::Span| Some((now.checked_sub(span).ok()?, now.clone()));
        let ahead = |span: jiff::Span| Some((now.clone(), now.checked_add(span).ok()?));
        let (from, to) = match self {
            Today => day(0)?,
            Tomorrow => day(1)?,
            Yesterday => day(-1)?,
            LastDay => back(1.day())?,
            LastWeek => back(7.days())?,
            Last2Weeks => back(14.days())?,
            LastMonth => back(1.month())?,
            Last3Months => back(3.months())?,
            Last6Months => back(6.months())?,
            Last12Months => back(12.months())?,
            Last2Years => back(2.years())?,
            Last3Years => back(3.years())?,
            NextDay => ahead(1.day())?,
            NextWeek => ahead(7.days())?,
            Next2Weeks => ahead(14.days())?,
            NextMonth => ahead(1.month())?,
            Next3Months => ahead(3.months())?,
            Next6Months => ahead(6.months())?,
            Next12Months => ahead(12.months())?,
        };
        Some((
            Timestamp::from_millis(from.timestamp().as_millisecond()),
            Timestamp::from_millis(to.timestamp().as_millisecond()),
        ))
    }
}

/// Whether a time zone name is known.
pub fn known_time_zone(name: &str) -> bool {
    TimeZone::get(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).expect("timestamp")
    }

    #[test]
    fn days_follow_the_time_zone() {
        let now = at("2026-03-10T02:30:00Z"); // still 9 March in New York
        let (from, to) = DatePreset::Today.range(now, "America/New_York").expect("range");
        assert_eq!(from, at("2026-03-09T04:00:00Z"));
        assert_eq!(to, at("2026-03-10T03:59:59.999Z"));
        let (from, _) = DatePreset::Today.range(now, "UTC").expect("range");
        assert_eq!(from, at("2026-03-10T00:00:00Z"));
        let (from, to) = DatePreset::Yesterday.range(now, "UTC").expect("range");
        assert_eq!((from, to), (at("2026-03-09T00:00:00Z"), at("2026-03-09T23:59:59.999Z")));
    }

    #[test]
    fn relative_ranges_end_or_start_now() {
        let now = at("2026-03-31T12:00:00Z");
        assert_eq!(DatePreset::LastWeek.range(now, "UTC"), Some((at("2026-03-24T12:00:00Z"), now)));
        assert_eq!(DatePreset::LastMonth.range(now, "UTC"), Some((at("2026-02-28T12:00:00Z"), now)));
        assert_eq!(DatePreset::NextDay.range(now, "UTC"), Some((now, at("2026-04-01T12:00:00Z"))));
        assert_eq!(DatePreset::LastWeek.range(now, "Mars/Olympus"), None);
        assert!(known_time_zone("Europe/Paris") && !known_time_zone("Nowhere/Else"));
    }
}
