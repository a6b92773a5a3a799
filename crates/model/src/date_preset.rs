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

/// The step of a history's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
    IsoWeek,
    Month,
    Quarter,
}

impl Interval {
    pub fn parse(name: &str) -> Option<Interval> {
        Some(match name {
            "hour" => Interval::Hour,
            "day" => Interval::Day,
            "isoWeek" => Interval::IsoWeek,
            "month" => Interval::Month,
            "quarter" => Interval::Quarter,
            _ => return None,
        })
    }
}

/// The starts of the calendar buckets (hours, days, ISO weeks from Monday, months, quarters in `time_zone`)
/// that overlap `from..=to`, at most `max` of them; `None` for an unknown zone.
pub fn buckets(
    from: Timestamp,
    to: Timestamp,
    interval: Interval,
    time_zone: &str,
    max: usize,
) -> Option<Vec<Timestamp>> {
    let tz = TimeZone::get(time_zone).ok()?;
    let start = jiff::Timestamp::from_millisecond(from.millis()).ok()?.to_zoned_datetime(tz);
    let day = start.start_of_day().ok()?;
    let mut at = match interval {
        Interval::Hour => start.with().minute(0).second(0).subsec_nanosecond(0).build().ok()?,
        Interval::Day => day,
        Interval::IsoWeek => {
            let back = i64::from(day.weekday().to_monday_zero_offset());
            day.checked_sub(back.days()).ok()?
        }
        Interval::Month => day.with().day(1).build().ok()?,
        Interval::Quarter => {
            let month = (day.month() - 1) / 3 * 3 + 1;
            day.with().month(month).day(1).build().ok()?
        }
    };
    let step = match interval {
        Interval::Hour => 1.hour(),
        Interval::Day => 1.day(),
        Interval::IsoWeek => 7.days(),
        Interval::Month => 1.month(),
        Interval::Quarter => 3.months(),
    };
    let mut out = Vec::new();
    while at.timestamp().as_millisecond() <= to.millis() && out.len() < max {
        out.push(Timestamp::from_millis(at.timestamp().as_millisecond()));
        at = at.checked_add(step).ok()?;
    }
    Some(out)
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
    fn buckets_follow_the_calendar() {
        let (from, to) = (at("2026-03-10T15:30:00Z"), at("2026-03-12T01:00:00Z"));
        let days = buckets(from, to, Interval::Day, "UTC", 100).expect("buckets");
        assert_eq!(days, vec![at("2026-03-10T00:00:00Z"), at("2026-03-11T00:00:00Z"), at("2026-03-12T00:00:00Z")]);
        // 10 March 2026 is a Tuesday: its ISO week starts on Monday 9 March.
        let weeks = buckets(from, to, Interval::IsoWeek, "UTC", 100).expect("buckets");
        assert_eq!(weeks, vec![at("2026-03-09T00:00:00Z")]);
        let quarters = buckets(from, at("2026-07-01T00:00:00Z"), Interval::Quarter, "UTC", 100).expect("buckets");
        assert_eq!(quarters, vec![at("2026-01-01T00:00:00Z"), at("2026-04-01T00:00:00Z"), at("2026-07-01T00:00:00Z")]);
        assert_eq!(buckets(from, to, Interval::Hour, "UTC", 3).expect("buckets").len(), 3, "capped");
        assert!(buckets(from, to, Interval::Day, "Nowhere/Else", 10).is_none());
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
