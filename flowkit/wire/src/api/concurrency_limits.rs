//! Tag concurrency limits kept by the server (`PUT /concurrency-limits/{tag}`,
//! `GET /concurrency-limits…`, `DELETE /concurrency-limits/{tag}`): at most `limit` deployed
//! runs carrying `tag` are leased to workers at once, across every deployment, worker and
//! server replica. A run holds its slot while its lease lasts, so a killed worker's slot comes
//! back when its lease ends (the reaper decides the run). They complement
//! `flowkit::limits()`, which bounds the runs of one process.
//!
//! ```
//! use flowkit_wire::api::concurrency_limits::{check_tag, SetLimit};
//!
//! let body: SetLimit = serde_json::from_str(r#"{"limit": 2}"#).unwrap();
//! assert_eq!(body.limit, 2);
//! assert!(check_tag("gpu").is_ok());
//! assert!(check_tag(" ").is_err());
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The most limits the server keeps; one more is refused with 409 `conflict`. It bounds
/// `GET /concurrency-limits`.
pub const MAX_LIMITS: usize = 1000;

/// The body of `PUT /concurrency-limits/{tag}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetLimit {
    /// How many runs carrying the tag may be leased at once: 1 or more. Lowering it below the
    /// runs leased now stops none of them; no other is claimed until they are fewer.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    #[serde(deserialize_with = "crate::api::whole::u32")]
    pub limit: u32,
}

/// The largest [`SetLimit::limit`].
pub const MAX_LIMIT: u32 = 1_000_000;

/// A tag's limit, with the runs holding a slot now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConcurrencyLimit {
    /// The tag.
    pub tag: String,
    /// At most this many runs carrying the tag are leased at once.
    pub limit: u32,
    /// Runs carrying the tag leased to a worker now (claimed and not yet finished, released,
    /// or decided by the reaper): the slots taken. It may exceed `limit` after the limit was
    /// lowered.
    pub leased: u64,
    /// When the limit was last set.
    pub updated: DateTime<Utc>,
}

/// Every limit (at most [`MAX_LIMITS`]), by tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConcurrencyLimits {
    /// The limits.
    pub items: Vec<ConcurrencyLimit>,
}

/// Whether `tag` can carry a limit: what a run's tag may be (1 to
/// [`MAX_NAME_CHARS`](super::ingest::MAX_NAME_CHARS) characters, not blank); the reason
/// otherwise.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let chars = tag.chars().count();
    if tag.trim().is_empty() {
        return Err("a tag is not blank: use the tag the runs carry, e.g. `gpu`".to_string());
    }
    if chars > super::ingest::MAX_NAME_CHARS {
        return Err(format!(
            "a tag has at most {} characters, this one has {chars}",
            super::ingest::MAX_NAME_CHARS
        ));
    }
    Ok(())
}

/// Whether `limit` is a valid [`SetLimit::limit`]; the reason otherwise.
pub fn check_limit(limit: u32) -> Result<(), String> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!(
            "from 1 to {MAX_LIMIT}, got {limit}: delete the limit to lift it, e.g. \
             {{\"limit\": 2}}"
        ));
    }
    Ok(())
}
