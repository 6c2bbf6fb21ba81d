//! `GET /api/stats`: counts of flow runs by state over a window, in buckets, for the
//! dashboard's chart. The window's ends must lie in the years RFC 3339 can write (0000 to
//! 9999, in UTC), else 400; every bucket starts inside the window. Answers are reused for a
//! second ([`crate::stats_cache`]).

use crate::AppState;
use crate::api::extract::{ApiQuery, parse_int, parse_time};
use crate::error::{ApiError, ErrorBody, StoreFailures};
use crate::stats_cache::StatsKey;
use crate::store::Backend;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeZone, Utc};
use flowkit_wire::api::stats::{Stats, StatsBucket};
use flowkit_wire::state::StateType;
use serde::Deserialize;
use std::collections::BTreeMap;
use utoipa::IntoParams;

/// Most buckets of one answer.
pub const MAX_BUCKETS: u32 = 1000;
/// Longest window: about ten years.
const MAX_WINDOW_DAYS: i64 = 3660;

/// The window: `since` and `until` (RFC 3339; default the last 24 hours) and the number of
/// buckets (default 24).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Start of the window (default: `until` minus 24 hours).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// End of the window (default: now).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Number of buckets, 1 to 1000 (default 24). Buckets are whole seconds and each starts
    /// inside the window, so a window shorter than this many seconds gets fewer.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub buckets: Option<String>,
}

/// The earliest instant RFC 3339 can write in UTC: 0000-01-01T00:00:00Z.
fn rfc3339_min() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The latest instant RFC 3339 can write in UTC: 9999-12-31T23:59:59.999999Z (e.g.
/// `9999-12-31T23:00:00-05:00` is after it).
fn rfc3339_max() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .map_or(DateTime::<Utc>::MAX_UTC, |t| {
            t + chrono::Duration::microseconds(999_999)
        })
}

fn by_name(counts: Vec<(StateType, u64)>) -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    for (state, n) in counts {
        *map.entry(state.as_str().to_string()).or_insert(0) += n;
    }
    map
}

/// Counts flow runs by state.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "flow-runs",
    params(StatsQuery),
    responses(
        (status = 200, description = "Counts by state, bucketed", body = Stats),
        (status = 400, description = "A parameter does not parse; the message names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<Stats>, ApiError> {
    let until = parse_time("until", query.until)?;
    let since = parse_time("since", query.since)?;
    let buckets = parse_int("buckets", query.buckets, 1, MAX_BUCKETS)?.unwrap_or(24);
    let key = match (since, until) {
        (None, None) => StatsKey::Recent { buckets },
        (since, until) => {
            let until = until.unwrap_or_else(Utc::now);
            let since = since.unwrap_or(until - chrono::Duration::hours(24));
            StatsKey::Window {
                since: since.timestamp_micros(),
                until: until.timestamp_micros(),
                buckets,
            }
        }
    };
    // Reused for a moment: the dashboard asks about once a second per tab.
    let stats = state
        .stats_cache()
        .get_or_compute(key, || count(&state, since, until, buckets))
        .await?;
    Ok(Json(stats))
}

/// Counts the window (`until` default now, `since` default 24 hours before it).
pub(crate) async fn count(
    state: &AppState,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    buckets: u32,
) -> Result<Stats, ApiError> {
    let until = until.unwrap_or_else(Utc::now);
    let since = since.unwrap_or(until - chrono::Duration::hours(24));
    for (name, value) in [("since", since), ("until", until)] {
        if !(rfc3339_min()..=rfc3339_max()).contains(&value) {
            return Err(ApiError::invalid_parameter(
                name,
                format!(
                    "{} is outside the years 0000 to 9999 (in UTC) that RFC 3339 can write",
                    value.to_rfc3339()
                ),
            ));
        }
    }
    if since >= until {
        return Err(ApiError::invalid_parameter(
            "since",
            "must be earlier than `until`",
        ));
    }
    if until - since > chrono::Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::invalid_parameter(
            "since",
            "the window is longer than ten years",
        ));
    }
    let stats = state.store().stats(since, until, buckets).await?;
    Ok(Stats {
        since: stats.since,
        until: stats.until,
        bucket_seconds: stats.bucket_seconds,
        buckets: stats
            .buckets
            .into_iter()
            .map(|b| StatsBucket {
                start: b.start,
                counts: by_name(b.counts),
            })
            .collect(),
        totals: by_name(stats.totals),
    })
}
