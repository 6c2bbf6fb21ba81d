//! What a notification says, and how it is written: one [`Alert`] and its two renderings, the
//! JSON body of a webhook ([`Alert::webhook_json`]) and the Slack incoming-webhook message
//! ([`Alert::slack_json`]). The runtime's in-process hooks (`flowkit::notify`) and the
//! server's alert rules both build an [`Alert`] and send one of these, so a team receives the
//! same message whichever of them noticed.
//!
//! ```
//! use flowkit_wire::alerts::{Alert, AlertState};
//! use flowkit_wire::StateType;
//! let mut alert = Alert::run(uuid::Uuid::nil(), flowkit_wire::RunKind::Flow, "nightly");
//! alert.state = Some(AlertState { kind: StateType::Failed, message: Some("boom".into()) });
//! alert.deployment = Some("etl/nightly".into());
//! let text = alert.slack_json()["text"].as_str().unwrap().to_string();
//! assert!(text.starts_with(":x: Flow `nightly`: *Failed*"), "{text}");
//! assert!(text.contains("deployment `etl/nightly`"));
//! assert_eq!(alert.webhook_json()["state"]["message"], "boom");
//! ```

use crate::event::RunKind;
use crate::state::StateType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// Longest error message quoted in a Slack message, in characters; longer ones are cut and end
/// with `…`.
pub const MAX_MESSAGE_CHARS: usize = 1500;

/// One notification: a run that entered a state, or workers that have been gone too long.
///
/// Serialized as is, it is the webhook body (`Content-Type: application/json`), e.g.
/// `{"run_id":"0192…","run_kind":"task","name":"download","task_key":"etl::download",
/// "parent_run_id":"0192…","flow_run_id":"0192…","flow_name":"training",
/// "state":{"type":"Failed","message":"connection refused"},"attempt":3,"elapsed_ms":1520,
/// "url":"http://127.0.0.1:4200/runs/0192…"}`.
///
/// The fields a server-side alert adds (`deployment`, `rule`, `at`, `suppressed`,
/// `worker_absence`) are left out when empty, so in-process hooks send exactly the body above.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alert {
    /// The run (absent for a worker absence).
    pub run_id: Option<Uuid>,
    /// Flow or task run (absent for a worker absence).
    pub run_kind: Option<RunKind>,
    /// The run's name (its flow's, for a flow run); the deployment for a worker absence.
    pub name: String,
    /// The task's key (`module::function`); empty when unknown.
    pub task_key: String,
    /// The run that called this one.
    pub parent_run_id: Option<Uuid>,
    /// The nearest enclosing flow run.
    pub flow_run_id: Option<Uuid>,
    /// The flow of a task run.
    pub flow_name: Option<String>,
    /// The state the run entered, and its message (the error of a failed run).
    pub state: Option<AlertState>,
    /// The run's attempt, from 1.
    pub attempt: u32,
    /// How long the run took until this state, in milliseconds.
    pub elapsed_ms: u64,
    /// The run's page on the server's dashboard, when the server's URL is known.
    pub url: Option<String>,
    /// The deployment, as `flow/name`, when the run was created by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The alert rule that sent this (server-side alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// When the server noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Alerts of the same rule and flow held back by its quiet period since the last one sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
    /// Set when the alert is about workers gone, not about a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_absence: Option<WorkerAbsence>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The state of an [`Alert`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertState {
    /// The state.
    #[serde(rename = "type")]
    pub kind: StateType,
    /// Its message: the error of a failed run; `null` when there is none.
    pub message: Option<String>,
}

/// Workers gone: no live worker (of the rule's deployment, or at all) for `absent_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerAbsence {
    /// When the last worker was last seen.
    pub last_seen: DateTime<Utc>,
    /// The rule's `worker_absent_for`, in seconds.
    pub absent_for_secs: u64,
}

impl Alert {
    /// An alert about `run_id` with every optional field empty.
    pub fn run(run_id: Uuid, run_kind: RunKind, name: impl Into<String>) -> Alert {
        Alert {
            run_id: Some(run_id),
            run_kind: Some(run_kind),
            name: name.into(),
            task_key: String::new(),
            parent_run_id: None,
            flow_run_id: None,
            flow_name: None,
            state: None,
            attempt: 1,
            elapsed_ms: 0,
            url: None,
            deployment: None,
            rule: None,
            at: None,
            suppressed: 0,
            worker_absence: None,
        }
    }

    /// An alert saying that the workers of `scope` (a deployment `flow/name`, a flow, or
    /// `"any deployment"`) have all been gone since `last_seen`.
    pub fn workers_gone(scope: impl Into<String>, absence: WorkerAbsence) -> Alert {
        let mut alert = Alert::run(Uuid::nil(), RunKind::Flow, scope);
        alert.run_id = None;
        alert.run_kind = None;
        alert.worker_absence = Some(absence);
        alert
    }

    /// The JSON body a webhook receives: the alert as it serializes.
    pub fn webhook_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
    }

    /// The Slack incoming-webhook message: `{"text": …, "blocks": […]}`, where `text` is the
    /// whole message (for notifications and clients that do not show blocks). It names the
    /// flow (and task), the deployment, the state and its message (cut at
    /// [`MAX_MESSAGE_CHARS`]), the attempt and elapsed time, the alerts held back by a quiet
    /// period, and links to the run page when there is one.
    pub fn slack_json(&self) -> serde_json::Value {
        let (main, details) = match &self.worker_absence {
            Some(absence) => self.absence_lines(absence),
            None => self.run_lines(),
        };
        serde_json::json!({
            "text": format!("{main}\n{details}"),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": main}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": details}]},
            ],
        })
    }

    fn run_lines(&self) -> (String, String) {
        let name = slack_escape(&self.name);
        let kind = self.state.as_ref().map(|s| s.kind);
        let mut main = format!("{} ", kind.map_or(":information_source:", state_emoji));
        match (self.run_kind, &self.flow_name) {
            (Some(RunKind::Task), Some(flow)) => {
                main.push_str(&format!("Task `{name}` in flow `{}`", slack_escape(flow)))
            }
            (Some(RunKind::Task), None) => main.push_str(&format!("Task `{name}`")),
            _ => main.push_str(&format!("Flow `{name}`")),
        }
        if let Some(kind) = kind {
            main.push_str(&format!(": *{kind}*"));
        }
        if let Some(deployment) = &self.deployment {
            main.push_str(&format!(" (deployment `{}`)", slack_escape(deployment)));
        }
        let message = self.state.as_ref().and_then(|s| s.message.as_deref());
        if let Some(message) = message.filter(|m| !m.trim().is_empty()) {
            let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
            if cut.len() < message.len() {
                cut.push('…');
            }
            for line in slack_escape(&cut).lines() {
                main.push_str("\n>");
                main.push_str(line);
            }
        }
        let elapsed = humantime::format_duration(Duration::from_millis(self.elapsed_ms));
        let mut details = format!("attempt {} · {elapsed}", self.attempt);
        if !self.task_key.is_empty() {
            details.push_str(&format!(" · `{}`", slack_escape(&self.task_key)));
        }
        if let Some(id) = self.run_id {
            details.push_str(&format!(" · run `{id}`"));
        }
        self.push_common(&mut details);
        if let Some(url) = &self.url {
            details.push_str(&format!(" · <{url}|view run>"));
        }
        (main, details)
    }

    fn absence_lines(&self, absence: &WorkerAbsence) -> (String, String) {
        let gone = humantime::format_duration(Duration::from_secs(absence.absent_for_secs));
        let main = format!(
            ":warning: No live worker for {} for {gone} or more",
            slack_escape(&self.name)
        );
        let mut details = format!("last seen {}", absence.last_seen.to_rfc3339());
        self.push_common(&mut details);
        (main, details)
    }

    fn push_common(&self, details: &mut String) {
        if let Some(rule) = &self.rule {
            details.push_str(&format!(" · rule `{}`", slack_escape(rule)));
        }
        if self.suppressed > 0 {
            details.push_str(&format!(
                " · {} more held back by the quiet period",
                self.suppressed
            ));
        }
    }
}

/// Escapes the three characters Slack's mrkdwn gives a meaning to.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn state_emoji(kind: StateType) -> &'static str {
    match kind {
        StateType::Completed | StateType::Cached => ":white_check_mark:",
        StateType::Failed | StateType::Crashed | StateType::TimedOut => ":x:",
        StateType::Cancelled => ":no_entry_sign:",
        StateType::AwaitingRetry => ":repeat:",
        StateType::Late | StateType::Expired => ":hourglass:",
        _ => ":information_source:",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_fields_are_left_out_when_empty_and_shown_when_set() {
        let mut alert = Alert::run(Uuid::nil(), RunKind::Flow, "etl");
        let body = alert.webhook_json();
        for key in ["deployment", "rule", "at", "suppressed", "worker_absence"] {
            assert!(body.get(key).is_none(), "{key} in {body}");
        }
        assert!(body["url"].is_null() && body["state"].is_null());
        alert.suppressed = 49;
        alert.rule = Some("oncall".into());
        let text = alert.slack_json()["text"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(text.contains("49 more held back"), "{text}");
        assert!(text.contains("rule `oncall`"), "{text}");
        assert_eq!(alert.webhook_json()["suppressed"], 49);
    }

    #[test]
    fn a_worker_absence_says_since_when() {
        let alert = Alert::workers_gone(
            "deployment `etl/nightly`",
            WorkerAbsence {
                last_seen: DateTime::UNIX_EPOCH,
                absent_for_secs: 300,
            },
        );
        let text = alert.slack_json()["text"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            text.contains("No live worker for deployment `etl/nightly` for 5m"),
            "{text}"
        );
        assert!(alert.webhook_json()["run_id"].is_null());
        assert_eq!(
            alert.webhook_json()["worker_absence"]["absent_for_secs"],
            300
        );
    }
}
