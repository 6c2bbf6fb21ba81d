//! `GET /api/v1/stream`: server-sent events for live views. Events: `ready` once subscribed;
//! `run` with a [`RunChange`] for every run an ingested batch changed; `lagged` with
//! [`Lagged`] when the client fell behind and should refetch what it shows.

use crate::event::RunKind;
use crate::state::StateType;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A run that changed: it entered a state, or (with `state` null) it logged something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunChange {
    /// The run.
    pub run_id: Uuid,
    /// Its flow run (itself for a flow run), if any.
    pub flow_run_id: Option<Uuid>,
    /// `flow` or `task`.
    pub kind: RunKind,
    /// The run's name.
    pub name: String,
    /// The latest state of the run in this batch; null when the batch only carried its logs.
    pub state: Option<StateType>,
}

/// The data of a `lagged` event: how many changes this client missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lagged {
    /// Changes dropped for this client.
    pub missed: u64,
}
