//! Alert rules of the server: creating, listing, changing (pausing) and deleting them, and
//! reading their deliveries (`/alert-rules`). Creating, changing and deleting need a key with
//! the `admin` scope.

use super::runs::PageRequest;
use super::{Client, RunError};
use flowkit_wire::api::alerts::{AlertRule, AlertRulePatch, AlertRuleSpec, AlertRules, Delivery};
use flowkit_wire::api::page::Page;
use reqwest::Method;
use uuid::Uuid;

impl Client {
    /// Every alert rule (`GET /alert-rules`, at most
    /// [`MAX_RULES`](flowkit_wire::api::alerts::MAX_RULES)), target URLs masked.
    pub async fn alert_rules(&self) -> Result<AlertRules, RunError> {
        let url = self.route(&["alert-rules"], &[]);
        self.call(self.request(Method::GET, url)).await
    }

    /// Creates an alert rule (`POST /alert-rules`); the answer masks its URLs.
    pub async fn create_alert_rule(&self, spec: &AlertRuleSpec) -> Result<AlertRule, RunError> {
        let url = self.route(&["alert-rules"], &[]);
        self.call(self.request(Method::POST, url).json(spec)?).await
    }

    /// Changes the fields of an alert rule that `patch` sets (`PATCH /alert-rules/{id}`);
    /// `enabled: Some(false)` pauses it. The answer masks its URLs.
    pub async fn update_alert_rule(
        &self,
        id: Uuid,
        patch: &AlertRulePatch,
    ) -> Result<AlertRule, RunError> {
        let url = self.route(&["alert-rules", &id.to_string()], &[]);
        self.call(self.request(Method::PATCH, url).json(patch)?)
            .await
    }

    /// Deletes an alert rule with its deliveries (`DELETE /alert-rules/{id}`).
    pub async fn delete_alert_rule(&self, id: Uuid) -> Result<(), RunError> {
        let url = self.route(&["alert-rules", &id.to_string()], &[]);
        let answer = self
            .send(
                self.request(Method::DELETE, url)
                    .json(&serde_json::json!({}))?,
            )
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(answer.error())
        }
    }

    /// One page of a rule's deliveries, newest first, with their attempts
    /// (`GET /alert-rules/{id}/deliveries`).
    pub async fn alert_deliveries(
        &self,
        id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, RunError> {
        let url = self.route(
            &["alert-rules", &id.to_string(), "deliveries"],
            &page.query(),
        );
        self.call(self.request(Method::GET, url)).await
    }
}
