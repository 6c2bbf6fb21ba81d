//! `/api/flow-runs`: the runs list with filters and keyset pagination, and one flow run with
//! its task runs (and their state histories, for the timeline), its logs and its task graph.
//!
//! The bodies are `flowkit_wire::api::{runs, logs, graph, page}`, shared with every client.

use crate::AppState;
use crate::api::extract::{
    ApiQuery, RunId, bounded_text, given, non_empty, page_request, page_request_or, parse_time,
    parse_uuid,
};
use crate::error::{ApiError, ErrorBody, StoreFailures};
use crate::store::{Backend, LogFilter, PageRequest, RunFilter, StateRecord};
use axum::Json;
use axum::extract::State;
use flowkit_wire::api::graph::{GRAPH_MAX_GROUPS, GRAPH_MAX_NODES, Graph};
use flowkit_wire::api::logs::LogEntry;
use flowkit_wire::api::page::Page;
use flowkit_wire::api::runs::{
    Run, RunWithStates, StateEntry, TASK_RUNS_DEFAULT_PAGE_SIZE, TaskRuns,
};
use flowkit_wire::event::{LogLevel, RunKind};
use flowkit_wire::state::StateType;
use serde::Deserialize;
use std::collections::HashMap;
use utoipa::IntoParams;
use uuid::Uuid;

/// Longest `search`, `flow_name`, `deployment` or `tag` accepted.
const MAX_FILTER_CHARS: usize = 1000;

fn state_entry(s: StateRecord) -> StateEntry {
    StateEntry {
        event_id: s.event_id,
        state: s.state,
        message: s.message,
        attempt: s.attempt,
        timestamp: s.timestamp,
    }
}

/// Filters and page of `GET /api/flow-runs`. Empty values are ignored.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Latest state, a comma-separated list of state types, e.g. `Failed,Crashed` (empty: any).
    #[param(style = Form, explode = false, schema_with = crate::api::param_schemas::state_list)]
    pub state: Option<String>,
    /// Exact flow name.
    pub flow_name: Option<String>,
    /// Exact deployment name.
    pub deployment: Option<String>,
    /// A tag the run carries.
    pub tag: Option<String>,
    /// Created at or after (RFC 3339). Also accepted as `started_after`: a flow run is
    /// created as it starts.
    #[param(value_type = Option<String>, format = DateTime)]
    #[serde(alias = "started_after")]
    pub created_after: Option<String>,
    /// Created before (RFC 3339). Also accepted as `started_before`. At or before
    /// `created_after`, the window is empty and the page too.
    #[param(value_type = Option<String>, format = DateTime)]
    #[serde(alias = "started_before")]
    pub created_before: Option<String>,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters and page of `GET /api/flow-runs/{id}/logs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Minimum level: `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR` (or in lower case).
    #[param(schema_with = crate::api::param_schemas::log_level)]
    pub level: Option<String>,
    /// Only lines of this run (the flow run or one of its task runs).
    #[param(value_type = Option<Uuid>)]
    pub run_id: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The store filter these parameters describe.
    pub fn filter(&self) -> Result<RunFilter, ApiError> {
        let states = match non_empty(self.state.clone()) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse_state)
                .collect::<Result<Vec<_>, _>>()?,
        };
        let created_after = parse_time("created_after", self.created_after.clone())?;
        // `created_after` at or after `created_before` is an empty window: it matches nothing.
        let created_before = parse_time("created_before", self.created_before.clone())?;
        Ok(RunFilter {
            states,
            flow_name: bounded_text("flow_name", self.flow_name.clone(), MAX_FILTER_CHARS)?,
            deployment: bounded_text("deployment", self.deployment.clone(), MAX_FILTER_CHARS)?,
            tag: bounded_text("tag", self.tag.clone(), MAX_FILTER_CHARS)?,
            created_after,
            created_before,
            search: bounded_text("search", self.search.clone(), MAX_FILTER_CHARS)?,
        })
    }
}

fn parse_state(name: &str) -> Result<StateType, ApiError> {
    StateType::ALL
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let valid: Vec<&str> = StateType::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid_parameter(
                "state",
                format!(
                    "unknown state {name:?}, expected a comma-separated list of {}",
                    valid.join(", ")
                ),
            )
        })
}

fn parse_level(value: Option<String>) -> Result<Option<LogLevel>, ApiError> {
    let Some(raw) = given("level", value)? else {
        return Ok(None);
    };
    // Exactly the values of the documented enum: upper or lower case.
    let upper = raw.to_ascii_uppercase();
    let listed = raw == upper || raw == raw.to_ascii_lowercase();
    serde_json::from_value(serde_json::Value::String(upper))
        .ok()
        .filter(|_| listed)
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid_parameter(
                "level",
                format!("expected TRACE, DEBUG, INFO, WARN or ERROR, got {raw:?}"),
            )
        })
}

/// The flow run `id`, or 404.
pub(crate) async fn flow_run(state: &AppState, id: Uuid) -> Result<Run, ApiError> {
    match state.store().get_run(id).await? {
        Some(run) if run.kind == RunKind::Flow => Ok(run),
        Some(_) => Err(ApiError::not_found(format!(
            "run {id} is a task run, not a flow run"
        ))),
        None => Err(ApiError::not_found(format!("no flow run {id}"))),
    }
}

/// Lists flow runs, newest first, with filters and keyset pagination.
#[utoipa::path(
    get,
    path = "/api/v1/flow-runs",
    tag = "flow-runs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of flow runs, newest first", body = Page<Run>),
        (status = 400, description = "A parameter does not parse; the message names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 422, description = "`filter_too_broad`: a `search` or `tag` filter ran past the server's time budget (`--search-budget`); narrow it with a state, a flow name or `created_after`", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<Run>>, ApiError> {
    let filter = query.filter()?;
    let page = page_request(query.limit, query.cursor)?;
    Ok(Json(
        crate::api::full_scans::list_flow_runs(&state, &filter, &page).await?,
    ))
}

/// One flow run.
#[utoipa::path(
    get,
    path = "/api/v1/flow-runs/{id}",
    tag = "flow-runs",
    params(("id" = Uuid, Path, description = "The flow run's id")),
    responses(
        (status = 200, description = "The flow run", body = Run),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn get(State(state): State<AppState>, RunId(id): RunId) -> Result<Json<Run>, ApiError> {
    let mut run = flow_run(&state, id).await?;
    let schedule = run
        .created_by
        .as_deref()
        .and_then(|by| by.strip_prefix("schedule:"))
        .and_then(|id| Uuid::parse_str(id).ok());
    if let (Some(schedule), Some(instant)) = (schedule, run.scheduled_for) {
        run.skipped_instants = state.store().slot_skipped(schedule, instant).await?;
    }
    Ok(Json(run))
}

/// A page of `GET /api/flow-runs/{id}/task-runs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskRunsQuery {
    /// Page size, 1 to 500 (default 500).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of the flow run's task runs and subflow runs, oldest first by `(created, id)`, each
/// with its state history (the timeline), and the flow run itself with its states.
#[utoipa::path(
    get,
    path = "/api/v1/flow-runs/{id}/task-runs",
    tag = "flow-runs",
    description = "A page of the flow run's children (task runs and subflow runs), oldest first \
        by `(created, id)`, each with its state history, and the flow run itself with its \
        states (on every page). Keyset-paginated like every list: `limit` 1 to 500 (default \
        500, the largest page); pass `next_cursor` back as `cursor` for the next page; it is \
        absent on the last page. A `limit` outside 1..=500 or a cursor not from a previous \
        page is a 400.",
    params(("id" = Uuid, Path, description = "The flow run's id"), TaskRunsQuery),
    responses(
        (status = 200, description = "The flow run and a page of its children, with their states", body = TaskRuns),
        (status = 400, description = "`id`, `limit` or `cursor` does not parse; the message names it", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn task_runs(
    State(state): State<AppState>,
    RunId(id): RunId,
    ApiQuery(query): ApiQuery<TaskRunsQuery>,
) -> Result<Json<TaskRuns>, ApiError> {
    let page = page_request_or(query.limit, query.cursor, TASK_RUNS_DEFAULT_PAGE_SIZE)?;
    let flow = flow_run(&state, id).await?;
    let store = state.store();
    let children = store.child_runs_page(id, &page).await?;
    let runs: Vec<(Uuid, Option<Uuid>)> = std::iter::once(&flow)
        .chain(&children.items)
        .map(|run| (run.id, run.flow_run_id))
        .collect();
    let mut by_run: HashMap<Uuid, Vec<StateEntry>> = HashMap::new();
    for record in store.states_of(&runs).await? {
        by_run
            .entry(record.run_id)
            .or_default()
            .push(state_entry(record));
    }
    let mut with_states = |run: Run| RunWithStates {
        states: by_run.remove(&run.id).unwrap_or_default(),
        run,
    };
    let flow_run = with_states(flow);
    let items = children.items.into_iter().map(&mut with_states).collect();
    Ok(Json(TaskRuns {
        flow_run,
        items,
        next_cursor: children.next_cursor,
    }))
}

/// The flow run's logs (its own and its task runs'), oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/flow-runs/{id}/logs",
    tag = "flow-runs",
    params(("id" = Uuid, Path, description = "The flow run's id"), LogsQuery),
    responses(
        (status = 200, description = "A page of log lines, oldest first", body = Page<LogEntry>),
        (status = 400, description = "`id` or a parameter does not parse", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn logs(
    State(state): State<AppState>,
    RunId(id): RunId,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Json<Page<LogEntry>>, ApiError> {
    let filter = LogFilter {
        min_level: parse_level(query.level)?,
        run_id: parse_uuid("run_id", query.run_id)?,
    };
    let page = page_request(query.limit, query.cursor)?;
    flow_run(&state, id).await?;
    Ok(Json(state.store().logs(id, &filter, &page).await?))
}

/// The flow run's task graph: its children and the upstream edges between them, bounded.
#[utoipa::path(
    get,
    path = "/api/v1/flow-runs/{id}/graph",
    tag = "flow-runs",
    description = "The flow run's children (task runs and subflow runs) as nodes, oldest first, \
        and the upstream edges between them. Bounded: at most 500 nodes (`GRAPH_MAX_NODES`, \
        without their `parameters`). A flow run with more children answers its first 500 \
        with `truncated: true`, `total` (every child) and `groups`: every child summed up per \
        task name (count per latest state, earliest start, latest end), the 100 names with \
        the most runs (`GRAPH_MAX_GROUPS`), the last group (without `name`) summing up every \
        other name.",
    params(("id" = Uuid, Path, description = "The flow run's id")),
    responses(
        (status = 200, description = "Nodes and edges; per task name beyond 500 nodes", body = Graph),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn graph(
    State(state): State<AppState>,
    RunId(id): RunId,
) -> Result<Json<Graph>, ApiError> {
    flow_run(&state, id).await?;
    let store = state.store();
    let first = PageRequest {
        limit: GRAPH_MAX_NODES,
        cursor: None,
    };
    let children = store.child_runs_page(id, &first).await?;
    let nodes = children
        .items
        .into_iter()
        .map(|run| Run {
            parameters: None,
            ..run
        })
        .collect();
    let mut graph = Graph::of(nodes);
    if children.next_cursor.is_some() {
        graph.groups = store.child_groups(id, GRAPH_MAX_GROUPS).await?;
        graph.total = graph.groups.iter().map(|g| g.count).sum();
        graph.truncated = true;
    }
    Ok(Json(graph))
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::Utc;
    use flowkit_wire::api::graph::Edge;

    fn run(id: Uuid, upstream: Vec<Uuid>) -> Run {
        Run {
            id,
            kind: RunKind::Task,
            name: "t".into(),
            task_key: "k".into(),
            parent_run_id: None,
            flow_run_id: None,
            state: StateType::Completed,
            state_message: None,
            state_timestamp: Utc::now(),
            attempt: 1,
            created: Utc::now(),
            started: None,
            ended: None,
            tags: vec![],
            parameters: None,
            upstream,
            cache_key: None,
            deployment: None,
            version: None,
            worker: None,
            scheduled_for: None,
            created_by: None,
            skipped_instants: None,
            result: None,
        }
    }

    #[test]
    fn graph_edges_come_from_upstream() {
        let (a, b, c, outside) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let graph = Graph::of(vec![
            run(a, vec![]),
            run(b, vec![a, a]),
            run(c, vec![a, b, outside]),
        ]);
        assert_eq!(graph.nodes.len(), 3);
        assert_eq!(
            graph.edges,
            vec![
                Edge { from: a, to: b },
                Edge { from: a, to: c },
                Edge { from: b, to: c }
            ]
        );
    }

    #[test]
    fn filters_parse() {
        let query = ListQuery {
            state: Some("failed, Crashed".into()),
            created_after: Some("2026-01-01T00:00:00Z".into()),
            ..ListQuery::default()
        };
        let filter = query.filter().expect("filter");
        assert_eq!(filter.states, vec![StateType::Failed, StateType::Crashed]);
        let bad = ListQuery {
            state: Some("Exploded".into()),
            ..ListQuery::default()
        };
        let err = bad.filter().expect_err("bad state");
        assert!(err.message().contains("`state`"), "{}", err.message());
        assert_eq!(
            parse_level(Some("warn".into())).ok(),
            Some(Some(LogLevel::Warn))
        );
        assert!(parse_level(Some("loud".into())).is_err());
    }
}
