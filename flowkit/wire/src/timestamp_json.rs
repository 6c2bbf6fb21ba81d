//! Event timestamps as RFC 3339 text, written and read without chrono's general formatter on
//! the common path: a UTC instant of the years 0000–9999 is written as chrono writes it
//! (`2026-11-28T12:00:00.123456Z`: no fraction, or 3, 6 or 9 digits, and `Z`) and read from
//! that form directly; anything else (other offsets, a space for `T`, leap seconds, other
//! years) goes through chrono, so what is accepted and what is written do not change.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// A timestamp written as [`Event`](crate::Event) writes its own: RFC 3339 in UTC, exactly as
/// chrono's serde writes it, without chrono's general formatter on the common path. For
/// writers of the wire format that borrow an event's fields.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use flowkit_wire::event::Rfc3339;
/// let ts = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
/// assert_eq!(serde_json::to_string(&Rfc3339(&ts)).unwrap(), r#""2026-11-28T12:00:00Z""#);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339<'a>(pub &'a DateTime<Utc>);

impl serde::Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, serializer)
    }
}

/// Writes `ts` as chrono's serde would.
pub(crate) fn serialize<S: Serializer>(
    ts: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match write(ts, &mut buf) {
        // Only ASCII digits and separators were written.
        Some(len) => serializer.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default()),
        None => serde::Serialize::serialize(ts, serializer),
    }
}

/// `ts` into `buf` in chrono's form; `None` outside the common path.
fn write(ts: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
    let year = ts.year();
    let nanos = ts.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut at = digits(buf, 0, year as u32, 4);
    for (sep, value) in [
        (b'-', ts.month()),
        (b'-', ts.day()),
        (b'T', ts.hour()),
        (b':', ts.minute()),
        (b':', ts.second()),
    ] {
        buf[at] = sep;
        at = digits(buf, at + 1, value, 2);
    }
    let (value, width) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        buf[at] = b'.';
        at = digits(buf, at + 1, value, width);
    }
    buf[at] = b'Z';
    Some(at + 1)
}

/// Writes `value` as `width` decimal digits at `at`; returns the index after them.
fn digits(buf: &mut [u8; 30], at: usize, mut value: u32, width: usize) -> usize {
    for i in (at..at + width).rev() {
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    at + width
}

/// Reads a timestamp as chrono's serde would.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    struct TsVisitor;
    impl Visitor<'_> for TsVisitor {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 date and time")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<DateTime<Utc>, E> {
            match read(v.as_bytes()) {
                Some(ts) => Ok(ts),
                None => v.parse::<DateTime<Utc>>().map_err(E::custom),
            }
        }
    }
    deserializer.deserialize_str(TsVisitor)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, or `None` (another form, or not a valid instant).
fn read(s: &[u8]) -> Option<DateTime<Utc>> {
    if s.len() < 20 || s.last() != Some(&b'Z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        s.get(range)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if s[4] != b'-' || s[7] != b'-' || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let end = s.len() - 1;
    let nanos = match &s[19..end] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(20..end)? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let time =
        chrono::NaiveTime::from_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, nanos)?;
    // A leap second (`:60`) is not a valid `from_hms_nano_opt` second: chrono reads it.
    Some(date.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn chrono_text(ts: &DateTime<Utc>) -> String {
        serde_json::to_value(ts)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn ours(ts: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        serialize(ts, &mut ser).expect("written");
        serde_json::from_slice::<String>(&out).expect("a JSON string")
    }

    fn parsed(text: &str) -> Result<DateTime<Utc>, String> {
        let json = serde_json::to_string(text).expect("json");
        let mut de = serde_json::Deserializer::from_str(&json);
        deserialize(&mut de).map_err(|e| e.to_string())
    }

    proptest! {
        /// Written as chrono writes it, and read back as chrono reads it.
        #[test]
        fn same_text_and_same_instant_as_chrono(
            secs in -62_167_219_200i64..253_402_300_800i64,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000),
                                 (0u32..1_000_000).prop_map(|u| u * 1000), 0u32..1_000_000_000],
        ) {
            let ts = Utc.timestamp_opt(secs, nanos).single().expect("in range");
            let text = chrono_text(&ts);
            prop_assert_eq!(ours(&ts), text.clone());
            prop_assert_eq!(parsed(&text), Ok(ts));
            prop_assert_eq!(text.parse::<DateTime<Utc>>().ok(), Some(ts));
        }
    }

    #[test]
    fn other_forms_are_read_by_chrono_and_bad_ones_refused_as_before() {
        let utc = |t: &str| t.parse::<DateTime<Utc>>().map_err(|e| e.to_string());
        for text in [
            "2026-11-28T12:00:00+02:00",
            "2026-11-28 12:00:00Z",
            "2026-11-28t12:00:00z",
            "2026-11-28T12:00:00.1234567891Z",
            "2016-12-31T23:59:60Z",
            "2026-13-28T12:00:00Z",
            "2026-02-30T12:00:00Z",
            "2026-11-28T12:00Z",
            "2026-11-28T12:00:00.Z",
            "not a date",
            "",
        ] {
            assert_eq!(parsed(text).is_ok(), utc(text).is_ok(), "{text}");
            if let Ok(ts) = utc(text) {
                assert_eq!(parsed(text), Ok(ts), "{text}");
            }
        }
        let year_10000 = Utc
            .with_ymd_and_hms(10000, 1, 1, 0, 0, 0)
            .single()
            .expect("valid");
        assert_eq!(ours(&year_10000), chrono_text(&year_10000));
    }
}
