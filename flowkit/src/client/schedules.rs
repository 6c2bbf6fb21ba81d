//! Schedules of deployments: listing, creating, pausing, resuming and deleting them, and
//! backfilling a past range.

use super::{Client, RunError};
use flowkit_wire::api::schedules::{BackfillRequest, Backfilled, Schedule, ScheduleSpec};
use reqwest::Method;
use uuid::Uuid;

impl Client {
    /// The schedules of the deployment `flow`/`name` (`GET /deployments/{flow}/{name}/schedules`):
    /// those declared in code, then those created over the API; at most 32 of each.
    pub async fn schedules(&self, flow: &str, name: &str) -> Result<Vec<Schedule>, RunError> {
        let url = self.route(&["deployments", flow, name, "schedules"], &[]);
        self.call(self.request(Method::GET, url)).await
    }

    /// Creates a schedule of the deployment `flow`/`name` over the API
    /// (`POST /deployments/{flow}/{name}/schedules`); it is kept when the deployment registers
    /// again. A bad spec is refused with every problem at its field ([`RunError::Api`]).
    pub async fn create_schedule(
        &self,
        flow: &str,
        name: &str,
        spec: &ScheduleSpec,
    ) -> Result<Schedule, RunError> {
        let url = self.route(&["deployments", flow, name, "schedules"], &[]);
        self.call(self.request(Method::POST, url).json(spec)?).await
    }

    /// Pauses the schedule `id` (`POST /schedules/{id}/pause`); the pause survives the
    /// deployment's next registration.
    pub async fn pause_schedule(&self, id: Uuid) -> Result<Schedule, RunError> {
        self.schedule_action(id, "pause").await
    }

    /// Resumes the schedule `id` from now (`POST /schedules/{id}/resume`): the instants passed
    /// while it was paused get no run.
    pub async fn resume_schedule(&self, id: Uuid) -> Result<Schedule, RunError> {
        self.schedule_action(id, "resume").await
    }

    async fn schedule_action(&self, id: Uuid, action: &str) -> Result<Schedule, RunError> {
        let url = self.route(&["schedules", &id.to_string(), action], &[]);
        // An empty JSON object: the server wants a JSON content type on every request that
        // changes something.
        let request = self
            .request(Method::POST, url)
            .json(&serde_json::Map::new())?;
        self.call(request).await
    }

    /// Deletes the schedule `id`, created over the API (`DELETE /schedules/{id}`); one
    /// declared in code is refused ([`RunError::Api`] with the code `conflict`).
    pub async fn delete_schedule(&self, id: Uuid) -> Result<(), RunError> {
        let url = self.route(&["schedules", &id.to_string()], &[]);
        let request = self
            .request(Method::DELETE, url)
            .json(&serde_json::Map::new())?;
        let answer = self.send(request).await?;
        if !answer.status.is_success() {
            return Err(answer.error());
        }
        Ok(())
    }

    /// Creates the runs of a past range of the deployment's schedules
    /// (`POST /deployments/{flow}/{name}/backfill`), each instant once whoever created its run
    /// before; at most 1000 per call.
    pub async fn backfill(
        &self,
        flow: &str,
        name: &str,
        request: &BackfillRequest,
    ) -> Result<Backfilled, RunError> {
        let url = self.route(&["deployments", flow, name, "backfill"], &[]);
        self.call(self.request(Method::POST, url).json(request)?)
            .await
    }
}
