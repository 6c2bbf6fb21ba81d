//! `GET /api/v1/stats`: counts of flow runs by latest state over a window, bucketed for a
//! chart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts of flow runs by latest state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
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

/// One bucket of [`Stats`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Flow runs created in the bucket, by latest state type.
    pub counts: BTreeMap<String, u64>,
}
