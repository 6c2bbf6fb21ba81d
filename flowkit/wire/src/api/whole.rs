//! Integer fields of request bodies that take any JSON number with a whole value: `2` and
//! `2.0` alike. JSON Schema's `integer` (and so the OpenAPI document) counts `2.0` as an
//! integer, so a client whose JSON library writes numbers as floats is not refused; `2.5`,
//! a negative number or one past the field's type still is (422, naming the field).
//!
//! ```
//! #[derive(serde::Deserialize)]
//! struct Body {
//!     #[serde(deserialize_with = "flowkit_wire::api::whole::u32")]
//!     limit: u32,
//! }
//! let body: Body = serde_json::from_str(r#"{"limit": 3.0}"#).unwrap();
//! assert_eq!(body.limit, 3);
//! assert!(serde_json::from_str::<Body>(r#"{"limit": 3.5}"#).is_err());
//! ```

use serde::Deserializer;
use serde::de::{Error, Visitor};
use std::fmt;

/// A whole number from 0 to `max`.
struct Whole {
    max: u64,
}

impl Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", self.max)
    }

    fn visit_u64<E: Error>(self, n: u64) -> Result<u64, E> {
        if n <= self.max {
            Ok(n)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
        }
    }

    fn visit_i64<E: Error>(self, n: i64) -> Result<u64, E> {
        u64::try_from(n)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            .and_then(|n| self.visit_u64(n))
    }

    fn visit_f64<E: Error>(self, n: f64) -> Result<u64, E> {
        // Exactly representable below 2^53; `max` is at most u32::MAX or u64::MAX, and a float
        // past 2^64 is refused by the range check.
        if n.fract() == 0.0 && n >= 0.0 && n <= self.max as f64 && n < 18_446_744_073_709_551_616.0
        {
            Ok(n as u64)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(n), &self))
        }
    }
}

/// A `u32` from a whole JSON number.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = d.deserialize_any(Whole {
        max: u64::from(u32::MAX),
    })?;
    u32::try_from(n).map_err(D::Error::custom)
}

/// An optional `u32` from a whole JSON number, or `null`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number or null")
        }
        fn visit_none<E: Error>(self) -> Result<Option<u32>, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Option<u32>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
            u32(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// A `u64` from a whole JSON number.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole { max: u64::MAX })
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::u32")]
        n: u32,
        #[serde(default, deserialize_with = "super::opt_u32")]
        o: Option<u32>,
        #[serde(default, deserialize_with = "super::u64")]
        t: u64,
    }

    fn parse(text: &str) -> Result<Body, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_any_notation_are_taken() {
        let body = parse(r#"{"n": 6521.0, "o": 2e0, "t": 18446744073709551615}"#).expect("body");
        assert_eq!((body.n, body.o, body.t), (6521, Some(2), u64::MAX));
        let body = parse(r#"{"n": 0, "o": null}"#).expect("body");
        assert_eq!((body.n, body.o, body.t), (0, None, 0));
    }

    #[test]
    fn fractions_negatives_and_overflows_are_refused_saying_what_was_wanted() {
        for bad in [
            r#"{"n": 2.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -0.5}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 4294967296.0}"#,
            r#"{"n": "3"}"#,
            r#"{"n": 1, "o": 1.5}"#,
            r#"{"n": 1, "t": 1e300}"#,
        ] {
            let why = parse(bad).expect_err(bad);
            assert!(why.contains("whole number"), "{bad}: {why}");
        }
    }
}
