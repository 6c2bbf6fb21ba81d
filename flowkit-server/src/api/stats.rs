//! `GET /api/stats`: counts of flow runs by state over a window, in buckets, for the
//! dashboard's chart.

use crate::AppState;
use crate::api::extract::{ApiQuery, parse_int, parse_time};
use crate::error::{ApiError, ErrorBody};
use crate::store::Backend;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use flowkit::state::StateType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

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
    /// Number of buckets, 1 to 1000 (default 24).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub buckets: Option<String>,
}

/// Counts of flow runs by latest state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsResponse {
    /// Start of the window.
    pub since: DateTime<Utc>,
    /// End of the window.
    pub until: DateTime<Utc>,
    /// Width of each bucket, in seconds.
    pub bucket_seconds: u64,
    /// The buckets, in time order.
    pub buckets: Vec<StatsBucket>,
    /// Counts by state type over the whole window, e.g. `{"Completed": 12, "Failed": 1}`.
    pub totals: BTreeMap<String, u64>,
}

/// One bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Flow runs created in the bucket, by latest state type.
    pub counts: BTreeMap<String, u64>,
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
    path = "/api/stats",
    tag = "flow-runs",
    params(StatsQuery),
    responses(
        (status = 200, description = "Counts by state, bucketed", body = StatsResponse),
        (status = 400, description = "A parameter does not parse; the message names it", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<StatsResponse>, ApiError> {
    let until = parse_time("until", query.until)?.unwrap_or_else(Utc::now);
    let since = parse_time("since", query.since)?.unwrap_or(until - chrono::Duration::hours(24));
    let buckets = parse_int("buckets", query.buckets, 1, MAX_BUCKETS)?.unwrap_or(24);
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
    Ok(Json(StatsResponse {
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
    }))
}
