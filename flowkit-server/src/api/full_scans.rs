//! Listings that may scan every run (`search`, `tag`) are bounded so they cannot starve plain
//! reads: at most [`FULL_SCANS_AT_ONCE`] run at once on a server (SQLite has 4 read
//! connections, PostgreSQL's pool 10: the others stay free for lookups by id, pages without
//! these filters, stats), each within `--search-budget` of database time
//! ([`crate::store::Store::list_flow_runs_within`]; 422 `filter_too_broad` past it). A listing
//! that finds every slot taken waits at most the budget for one, then gets 503 `unavailable`
//! with `Retry-After`.

use crate::AppState;
use crate::error::ApiError;
use crate::store::{Backend, Page, PageRequest, RunFilter, RunRecord};

/// Most `search`/`tag` listings running at once on one server.
pub const FULL_SCANS_AT_ONCE: usize = 2;

/// `Retry-After` of a listing refused because every full-scan slot stayed taken.
pub const FULL_SCANS_RETRY_AFTER_SECS: u64 = 1;

/// Whether `filter` may make the database scan every run.
pub fn may_scan_everything(filter: &RunFilter) -> bool {
    filter.search.is_some() || filter.tag.is_some()
}

/// The page of flow runs `filter` asks for: plain listings as they are, `search`/`tag` ones
/// within a slot and the time budget.
pub async fn list_flow_runs(
    state: &AppState,
    filter: &RunFilter,
    page: &PageRequest,
) -> Result<Page<RunRecord>, ApiError> {
    if !may_scan_everything(filter) {
        return Ok(state.store().list_flow_runs(filter, page).await?);
    }
    let budget = state.settings().search_budget;
    let _slot = match tokio::time::timeout(budget, state.full_scans().acquire()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_closed)) => {
            return Err(ApiError::unavailable("the server is shutting down", 1));
        }
        Err(_waited) => {
            return Err(ApiError::unavailable(
                format!(
                    "{FULL_SCANS_AT_ONCE} `search`/`tag` listings are already running on this \
                     server: retry shortly, or narrow the filter (a `state`, a `flow_name`, a \
                     `created_after`)"
                ),
                FULL_SCANS_RETRY_AFTER_SECS,
            ));
        }
    };
    Ok(state
        .store()
        .list_flow_runs_within(filter, page, budget)
        .await?)
}
