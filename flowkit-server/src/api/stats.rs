//! `GET /api/stats`: counts of flow runs by state over a window, in buckets, for the
//! dashboard's chart. The window's ends must lie in the years RFC 3339 can write (0000 to
//! 9999, in UTC), else 400; every bucket starts inside the window. Answers are reused for a
//! second; the default window's closed buckets for 15 s ([`crate::stats_cache`]).

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
    /// Start of the window (default: `until` minus 24 hours). When neither `since` nor
    /// `until` is given, the window is the last `buckets` buckets aligned to their width
    /// (whole hours for 24 buckets), the last one holding now: it starts at the first one's
    /// start, up to one bucket less than 24 hours ago. Its earlier buckets are counted at most
    /// 15 s ago (the current one at most 1 s ago).
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
    let stats = match key {
        StatsKey::Recent { buckets } => {
            state
                .stats_cache()
                .get_or_compute(key, || recent(&state, buckets))
                .await?
        }
        _ => {
            state
                .stats_cache()
                .get_or_compute(key, || count(&state, since, until, buckets))
                .await?
        }
    };
    Ok(Json(stats))
}

/// An instant of `micros` µs since the epoch.
fn instant(micros: i64) -> Result<DateTime<Utc>, ApiError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("instant {micros} out of range")))
}

/// The default window: `buckets` buckets of `86 400 / buckets` seconds (rounded up) aligned to
/// their width, the last one holding now. The closed ones come from
/// [`StatsCache::closed_buckets`](crate::stats_cache::StatsCache::closed_buckets); the current
/// one is counted now.
pub(crate) async fn recent(state: &AppState, buckets: u32) -> Result<Stats, ApiError> {
    let now = Utc::now();
    let n = i64::from(buckets.max(1));
    let width_secs = (86_400 + n - 1) / n;
    let width = width_secs * 1_000_000;
    let now_us = now.timestamp_micros();
    let current = now_us.div_euclid(width) * width;
    let starts: Vec<i64> = (1..n).rev().map(|back| current - back * width).collect();
    let store = state.store();
    let closed = state
        .stats_cache()
        .closed_buckets(width, &starts, |from, to, k| async move {
            let stats = store.stats(instant(from)?, instant(to)?, k).await?;
            Ok::<_, ApiError>(stats.buckets.into_iter().map(|b| b.counts).collect())
        })
        .await?;
    let open = if now_us > current {
        store
            .stats(instant(current)?, now, 1)
            .await?
            .buckets
            .into_iter()
            .next()
            .map(|b| b.counts)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut totals = Vec::new();
    let mut out = Vec::with_capacity(starts.len() + 1);
    for (start, counts) in starts
        .iter()
        .chain(std::iter::once(&current))
        .zip(closed.into_iter().chain(std::iter::once(open)))
    {
        totals.extend(counts.iter().copied());
        out.push(StatsBucket {
            start: instant(*start)?,
            counts: by_name(counts),
        });
    }
    Ok(Stats {
        since: instant(starts.first().copied().unwrap_or(current))?,
        until: instant(now_us)?,
        bucket_seconds: u64::try_from(width_secs).unwrap_or(0),
        buckets: out,
        totals: by_name(totals),
    })
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
