//! A UTC timestamp with millisecond precision, written as `2024-06-09T09:57:52.931Z`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, utoipa::ToSchema)]
#[schema(value_type = String, format = DateTime, example = "2024-06-09T09:57:52.931Z")]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 date-time (any offset), rounding down to the millisecond.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms).ok().map(Timestamp)
    }

    pub fn to_offset_date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The canonical form: UTC, three fractional digits, `Z`.
    pub fn to_rfc3339(self) -> String {
        self.with_rfc3339(str::to_owned)
    }

    /// The canonical form's 24 ASCII bytes, written digit by digit into a fixed buffer: it is on the hot path
    /// of every write and read, and serializing it allocates nothing.
    fn rfc3339_bytes(self) -> [u8; 24] {
        let t = self.to_offset_date_time();
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, t.year().clamp(0, 9999) as u32);
        put(5, 2, u32::from(u8::from(t.month())));
        put(8, 2, u32::from(t.day()));
        put(11, 2, u32::from(t.hour()));
        put(14, 2, u32::from(t.minute()));
        put(17, 2, u32::from(t.second()));
        put(20, 3, u32::from(t.millisecond()));
        buf
    }

    /// Calls `f` with the canonical form, without allocating.
    fn with_rfc3339<T>(self, f: impl FnOnce(&str) -> T) -> T {
        let buf = self.rfc3339_bytes();
        // Digits and `-T:.Z` only: always UTF-8.
        f(std::str::from_utf8(&buf).unwrap_or("1970-01-01T00:00:00.000Z"))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_rfc3339(|t| f.write_str(t))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_rfc3339(|t| s.serialize_str(t))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 date-time: {s}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Timestamp::parse("2024-06-09T09:57:52.931Z").expect("parses");
        assert_eq!(t.to_rfc3339(), "2024-06-09T09:57:52.931Z");
        let t = Timestamp::parse("2024-06-09T11:57:52+02:00").expect("parses");
        assert_eq!(t.to_rfc3339(), "2024-06-09T09:57:52.000Z");
        assert!(Timestamp::parse("yesterday").is_none());
        assert!(Timestamp::parse("2024-13-09T09:57:52Z").is_none());
        assert_eq!(Timestamp::from_millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from_millis(1_733_000_000_007).to_rfc3339(), "2024-11-30T20:53:20.007Z");
    }

    proptest::proptest! {
        /// Every form (the string, Display, JSON) is the same canonical text, and it parses back, for any
        /// millisecond from year 0 to 9999.
        #[test]
        fn every_form_is_the_canonical_text_and_parses_back(ms in -62_167_219_200_000i64..253_402_300_799_999) {
            let t = Timestamp::from_millis(ms);
            let text = t.to_rfc3339();
            proptest::prop_assert_eq!(text.len(), 24);
            proptest::prop_assert_eq!(format!("{t}"), text.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&t).expect("json"), format!("\"{text}\""));
            proptest::prop_assert_eq!(Timestamp::parse(&text), Some(t));
        }
    }
}
