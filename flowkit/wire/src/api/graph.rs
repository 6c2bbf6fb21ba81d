//! `GET /api/v1/flow-runs/{id}/graph`: a flow run's task graph, bounded: at most
//! [`GRAPH_MAX_NODES`] nodes; a larger flow is also summed up per task name
//! ([`TaskGroup`], at most [`GRAPH_MAX_GROUPS`]) and marked `truncated`.

use crate::api::runs::Run;
use crate::state::StateType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most nodes of one graph: the oldest children of the flow run, by `(created, id)`. Equal to
/// [`MAX_PAGE_SIZE`](crate::api::page::MAX_PAGE_SIZE), so the nodes are the first page of
/// `GET /flow-runs/{id}/task-runs?limit=500`.
pub const GRAPH_MAX_NODES: u32 = 500;
/// Most [`TaskGroup`]s of a truncated graph: the task names with the most runs; the runs of
/// every other name are summed up in one last group without a name.
pub const GRAPH_MAX_GROUPS: u32 = 100;

/// The task graph of a flow run: its children and the upstream edges between them.
///
/// A flow run with more than [`GRAPH_MAX_NODES`] children has `truncated: true`: `nodes` holds
/// the first [`GRAPH_MAX_NODES`] of them (oldest first), `edges` the edges between those, and
/// `groups` sums up every child (the ones shown included) per task name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Graph {
    /// The flow run's children (task runs and subflow runs), oldest first, at most
    /// [`GRAPH_MAX_NODES`]. Their `parameters` are left out (read them from `task-runs`).
    pub nodes: Vec<Run>,
    /// `from` produced a result that `to` consumed (between nodes only).
    pub edges: Vec<Edge>,
    /// Whether the flow run has more children than `nodes` holds.
    #[serde(default)]
    pub truncated: bool,
    /// How many children the flow run has in all.
    #[serde(default)]
    pub total: u64,
    /// Every child summed up per task name, most runs first (at most [`GRAPH_MAX_GROUPS`]);
    /// empty unless `truncated`.
    #[serde(default)]
    pub groups: Vec<TaskGroup>,
}

/// The children of a flow run that share a task name, summed up (in a truncated [`Graph`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskGroup {
    /// The task name; absent for the last group, which sums up every name beyond
    /// [`GRAPH_MAX_GROUPS`]` - 1`.
    pub name: Option<String>,
    /// How many runs.
    pub count: u64,
    /// How many of them are in each latest state (states with none are left out).
    pub states: Vec<StateCount>,
    /// The earliest start of one of them (absent when none started).
    pub earliest_start: Option<DateTime<Utc>>,
    /// The latest end of one of them (absent when none ended).
    pub latest_end: Option<DateTime<Utc>>,
}

/// How many runs of a [`TaskGroup`] are in one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateCount {
    /// The state type.
    pub state: StateType,
    /// How many runs.
    pub count: u64,
}

/// A dependency between two nodes of a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Edge {
    /// The upstream run.
    pub from: Uuid,
    /// The run that consumed its result.
    pub to: Uuid,
}

impl Graph {
    /// The whole graph of `nodes` (not truncated), with an edge from each node's `upstream` — only edges between
    /// nodes (an upstream run of another flow has no node to point from), each once.
    pub fn of(nodes: Vec<Run>) -> Graph {
        let ids: std::collections::HashSet<Uuid> = nodes.iter().map(|r| r.id).collect();
        let mut seen = std::collections::HashSet::new();
        let edges = nodes
            .iter()
            .flat_map(|run| {
                run.upstream
                    .iter()
                    .map(move |&from| Edge { from, to: run.id })
            })
            .filter(|edge| ids.contains(&edge.from) && seen.insert(*edge))
            .collect();
        Graph {
            total: nodes.len() as u64,
            nodes,
            edges,
            truncated: false,
            groups: Vec::new(),
        }
    }
}
