//! Flow runs: listing them with filters, reading one and its logs, cancelling and retrying.

use super::{Client, RunError};
use chrono::{DateTime, SecondsFormat, Utc};
use flowkit_wire::StateType;
use flowkit_wire::api::logs::LogEntry;
use flowkit_wire::api::page::Page;
use flowkit_wire::api::run_actions::CancelRequest;
use flowkit_wire::api::runs::Run;
use reqwest::Method;
use uuid::Uuid;

/// Which page of a list: at most `limit` items (the server's default,
/// [`DEFAULT_PAGE_SIZE`](flowkit_wire::api::page::DEFAULT_PAGE_SIZE), when `None`; at most
/// [`MAX_PAGE_SIZE`](flowkit_wire::api::page::MAX_PAGE_SIZE)), after `cursor` (the
/// `next_cursor` of the page before; `None` for the first page).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items of the page.
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The first page, of at most `limit` items.
    pub fn first(limit: u32) -> PageRequest {
        PageRequest {
            limit: Some(limit),
            cursor: None,
        }
    }

    /// The page after the one whose `next_cursor` is `cursor`, of the same size.
    pub fn after(&self, cursor: impl Into<String>) -> PageRequest {
        PageRequest {
            limit: self.limit,
            cursor: Some(cursor.into()),
        }
    }

    pub(super) fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            query.push(("cursor", cursor.clone()));
        }
        query
    }
}

/// Which flow runs [`Client::runs`] lists: those matching every filter given.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RunFilter {
    /// In one of these states (any state when empty).
    pub states: Vec<StateType>,
    /// Of this flow.
    pub flow_name: Option<String>,
    /// Of this deployment, `flow/name`.
    pub deployment: Option<String>,
    /// With this tag.
    pub tag: Option<String>,
    /// Created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Whose name contains this (case-insensitive).
    pub search: Option<String>,
}

impl RunFilter {
    /// Every flow run.
    pub fn all() -> RunFilter {
        RunFilter::default()
    }

    /// Only runs in `state` (added to the states already asked for).
    pub fn state(mut self, state: StateType) -> RunFilter {
        self.states.push(state);
        self
    }

    /// Only runs of the deployment `flow/name`.
    pub fn deployment(mut self, deployment: impl Into<String>) -> RunFilter {
        self.deployment = Some(deployment.into());
        self
    }

    /// Only runs of the flow `flow`.
    pub fn flow_name(mut self, flow: impl Into<String>) -> RunFilter {
        self.flow_name = Some(flow.into());
        self
    }

    /// Only runs with `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> RunFilter {
        self.tag = Some(tag.into());
        self
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut query = Vec::new();
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            query.push(("state", states.join(",")));
        }
        let texts = [
            ("flow_name", &self.flow_name),
            ("deployment", &self.deployment),
            ("tag", &self.tag),
            ("search", &self.search),
        ];
        for (name, value) in texts {
            if let Some(value) = value {
                query.push((name, value.clone()));
            }
        }
        if let Some(t) = &self.created_after {
            query.push(("created_after", time(t)));
        }
        if let Some(t) = &self.created_before {
            query.push(("created_before", time(t)));
        }
        query
    }
}

impl Client {
    /// One page of the flow runs that match `filter`, newest first (`GET /flow-runs`).
    pub async fn runs(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<Run>, RunError> {
        let mut query = filter.query();
        query.extend(page.query());
        let url = self.route(&["flow-runs"], &query);
        self.call(self.request(Method::GET, url)).await
    }

    /// The flow run `id` as it stands (`GET /flow-runs/{id}`).
    pub async fn flow_run(&self, id: Uuid) -> Result<Run, RunError> {
        let url = self.route(&["flow-runs", &id.to_string()], &[]);
        self.call(self.request(Method::GET, url)).await
    }

    /// One page of the logs of the flow run `id` and its task runs, oldest first
    /// (`GET /flow-runs/{id}/logs`).
    pub async fn logs(&self, id: Uuid, page: &PageRequest) -> Result<Page<LogEntry>, RunError> {
        let url = self.route(&["flow-runs", &id.to_string(), "logs"], &page.query());
        self.call(self.request(Method::GET, url)).await
    }

    /// Cancels the flow run `id` (`POST /flow-runs/{id}/cancel`): a run that has not started
    /// is `Cancelled` at once; a running one is `Cancelling` until its worker stops it. A run
    /// already final is refused ([`RunError::Api`] with the code `conflict`).
    pub async fn cancel(&self, id: Uuid) -> Result<Run, RunError> {
        self.cancel_with_reason(id, None).await
    }

    /// [`cancel`](Client::cancel), saying why (the message of the run's new state).
    pub async fn cancel_with_reason(
        &self,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Run, RunError> {
        let url = self.route(&["flow-runs", &id.to_string(), "cancel"], &[]);
        let request = self
            .request(Method::POST, url)
            .json(&CancelRequest { reason })?;
        self.call(request).await
    }

    /// Runs the flow run `id` again from where it stopped (`POST /flow-runs/{id}/retry`): the
    /// same run, its next attempt, `Scheduled`. Only a deployed run that ended `Failed`,
    /// `Crashed`, `Cancelled` or `TimedOut` can be retried ([`RunError::Api`] with the code
    /// `conflict` otherwise).
    pub async fn retry(&self, id: Uuid) -> Result<Run, RunError> {
        let url = self.route(&["flow-runs", &id.to_string(), "retry"], &[]);
        // An empty JSON object: the server wants a JSON content type on every request that
        // changes something (a web page cannot send one cross-origin).
        let request = self
            .request(Method::POST, url)
            .json(&serde_json::Map::new())?;
        self.call(request).await
    }
}
