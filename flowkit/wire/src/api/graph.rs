//! `GET /api/v1/flow-runs/{id}/graph`: a flow run's task graph.

use crate::api::runs::Run;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The task graph of a flow run: its children and the upstream edges between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Graph {
    /// The flow run's children (task runs and subflow runs), oldest first.
    pub nodes: Vec<Run>,
    /// `from` produced a result that `to` consumed.
    pub edges: Vec<Edge>,
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
    /// The graph of `nodes`, with an edge from each node's `upstream` — only edges between
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
        Graph { nodes, edges }
    }
}
