//! Alert rules stored on the server (`POST /alert-rules`, `GET /alert-rules…`,
//! `DELETE /alert-rules/{id}`) and their deliveries (`GET /alert-rules/{id}/deliveries`).
//!
//! A rule says *when a flow run of `flow` / `deployment` / `tag` enters one of `states`, or
//! when the workers have all been gone for `worker_absent_for`, send an
//! [`Alert`](crate::alerts::Alert) to `webhook` and/or `slack`*. At most one message per rule
//! and flow (and deployment) is sent per `quiet_period`; the ones held back are counted in the
//! next message.
//!
//! ```
//! use flowkit_wire::api::alerts::AlertRuleSpec;
//! let spec: AlertRuleSpec = serde_json::from_str(
//!     r#"{"name": "etl failures", "flow": "etl", "states": ["Failed", "Crashed"],
//!         "slack": "https://hooks.slack.com/services/T0/B0/XYZ"}"#,
//! ).unwrap();
//! assert!(spec.check().is_empty());
//! assert_eq!(flowkit_wire::api::alerts::mask_url("https://hooks.slack.com/services/T0/B0/XYZ"),
//!            "https://hooks.slack.com/…/XYZ");
//! ```

use super::deployments::FieldError;
use crate::alerts::Alert;
use crate::state::StateType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// The states a rule may list: the ones that need someone's attention.
pub const ALERT_STATES: [StateType; 6] = [
    StateType::Failed,
    StateType::Crashed,
    StateType::TimedOut,
    StateType::Late,
    StateType::Expired,
    StateType::Cancelled,
];

/// The quiet period of a rule that does not say.
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(600);
/// The longest quiet period or `worker_absent_for`: 7 days.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most rules a server keeps; `POST /alert-rules` beyond is refused (409). Also the most
/// `GET /alert-rules` lists (all of them, in one answer).
pub const MAX_RULES: usize = 1000;
/// The longest rule name, flow, deployment or tag, in characters.
pub const MAX_FIELD_CHARS: usize = 200;
/// The longest target URL, in characters.
pub const MAX_URL_CHARS: usize = 2000;
/// Attempts of a delivery before it is `failed`.
pub const MAX_ATTEMPTS: u32 = 10;
/// The attempts of one delivery shown by the API (the latest).
pub const MAX_ATTEMPTS_SHOWN: usize = MAX_ATTEMPTS as usize;

/// A valid rule, shown in every 422 answer about one.
pub const EXAMPLE_RULE: &str = r#"{"name": "etl failures", "deployment": "etl/nightly", "states": ["Failed", "Crashed", "Late"], "webhook": "https://ops.example.com/hooks/flowkit", "quiet_period": "10m"}"#;

/// A rule as sent to `POST /alert-rules`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlertRuleSpec {
    /// What the rule is called (shown in every message).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "\\S")
    )]
    pub name: String,
    /// Only runs of this flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "\\S")
    )]
    pub flow: Option<String>,
    /// Only runs of this deployment, as `flow/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 3, max_length = 200, pattern = "^[^/]+/[^/]+$")
    )]
    pub deployment: Option<String>,
    /// Only runs carrying this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "\\S")
    )]
    pub tag: Option<String>,
    /// The states that fire the rule: `Failed`, `Crashed`, `TimedOut`, `Late`, `Expired`,
    /// `Cancelled`. May be empty when `worker_absent_for` is set.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 6))]
    pub states: Vec<StateType>,
    /// Also fire when the live workers (of `deployment`, of `flow`, or of every deployment)
    /// have all been gone this long, once per absence: `"5m"`, `"1h"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_absent_for: Option<String>,
    /// POST the [`Alert`] as JSON here (`http` or `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 2000, pattern = "^https?://"))]
    pub webhook: Option<String>,
    /// POST a Slack message to this incoming webhook (`http` or `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 2000, pattern = "^https?://"))]
    pub slack: Option<String>,
    /// At most one message per rule and flow/deployment this often (default `"10m"`; `"0s"`
    /// sends every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_period: Option<String>,
    /// Whether the rule fires (default `true`). A disabled rule matches no state change and
    /// notices no worker absence until it is enabled again; the deliveries it made before
    /// are still sent.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// The body of `PATCH /alert-rules/{id}`: any subset of the fields of [`AlertRuleSpec`];
/// the ones absent keep their value. `null` removes an optional field (`flow`, `deployment`,
/// `tag`, `worker_absent_for`, `webhook`, `slack`, `quiet_period`: a removed quiet period is
/// the default one). `webhook` and `slack` also keep their stored URL when they are sent
/// back as the API shows them (masked). The rule that results is checked as a new one
/// (it still needs a target, and a state or `worker_absent_for`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlertRulePatch {
    /// A new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "\\S")
    )]
    pub name: Option<String>,
    /// Only runs of this flow; `null`: every flow.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = "\\S")
    )]
    pub flow: Option<Option<String>>,
    /// Only runs of this deployment (`flow/name`); `null`: every deployment.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, min_length = 3, max_length = 200, pattern = "^[^/]+/[^/]+$")
    )]
    pub deployment: Option<Option<String>>,
    /// Only runs carrying this tag; `null`: any tag.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = "\\S")
    )]
    pub tag: Option<Option<String>>,
    /// The states that fire the rule (replaces the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 6))]
    pub states: Option<Vec<StateType>>,
    /// See [`AlertRuleSpec::worker_absent_for`]; `null` removes it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub worker_absent_for: Option<Option<String>>,
    /// A new webhook URL; the masked URL the API shows keeps the stored one; `null` removes it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, max_length = 2000, pattern = "^https?://")
    )]
    pub webhook: Option<Option<String>>,
    /// A new Slack URL; the masked URL the API shows keeps the stored one; `null` removes it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, max_length = 2000, pattern = "^https?://")
    )]
    pub slack: Option<Option<String>>,
    /// See [`AlertRuleSpec::quiet_period`]; `null`: the default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub quiet_period: Option<Option<String>>,
    /// `false` pauses the rule, `true` resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A field that is present (`null` included): `Some(value)`; an absent one stays `None`
/// (`#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The fields of a rule, as named in its JSON: what `PATCH /alert-rules/{id}` may change.
pub const RULE_FIELDS: [&str; 10] = [
    "name",
    "flow",
    "deployment",
    "tag",
    "states",
    "worker_absent_for",
    "webhook",
    "slack",
    "quiet_period",
    "enabled",
];

impl AlertRuleSpec {
    /// Every error of the spec at its JSON pointer, each message showing what is expected;
    /// empty when the rule is valid.
    pub fn check(&self) -> Vec<FieldError> {
        let mut found = Vec::new();
        let mut bad = |pointer: &str, message: String| {
            found.push(FieldError {
                pointer: pointer.to_string(),
                message: format!("{message}; a valid rule: {EXAMPLE_RULE}"),
            })
        };
        check_text(&mut bad, "/name", Some(&self.name));
        check_text(&mut bad, "/flow", self.flow.as_deref());
        check_text(&mut bad, "/tag", self.tag.as_deref());
        check_text(&mut bad, "/deployment", self.deployment.as_deref());
        if let Some(deployment) = &self.deployment {
            let parts: Vec<&str> = deployment.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.trim().is_empty()) {
                bad(
                    "/deployment",
                    format!("{deployment:?} is not `flow/name` (e.g. \"etl/nightly\")"),
                );
            }
        }
        for (i, state) in self.states.iter().enumerate() {
            if !ALERT_STATES.contains(state) {
                bad(
                    &format!("/states/{i}"),
                    format!("{state} cannot fire an alert: use {}", alert_state_names()),
                );
            }
        }
        if self.states.len() > ALERT_STATES.len() {
            bad("/states", format!("at most {} states", ALERT_STATES.len()));
        }
        let absent = match self.worker_absent_for.as_deref() {
            Some(text) => match parse_duration(text) {
                Ok(d) if d.is_zero() => {
                    bad("/worker_absent_for", "must be longer than 0s".into());
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    bad("/worker_absent_for", e);
                    false
                }
            },
            None => false,
        };
        if self.states.is_empty() && !absent && self.worker_absent_for.is_none() {
            bad(
                "/states",
                format!(
                    "a rule needs at least one state ({}) or `worker_absent_for`",
                    alert_state_names()
                ),
            );
        }
        if let Some(text) = self.quiet_period.as_deref()
            && let Err(e) = parse_duration(text)
        {
            bad("/quiet_period", e);
        }
        for (pointer, url) in [("/webhook", &self.webhook), ("/slack", &self.slack)] {
            if let Some(url) = url
                && let Err(e) = check_url(url)
            {
                bad(pointer, e);
            }
        }
        if self.webhook.is_none() && self.slack.is_none() {
            bad(
                "/webhook",
                "a rule needs a target: `webhook` and/or `slack` (an http or https URL)".into(),
            );
        }
        found
    }

    /// The quiet period (`quiet_period`, or [`DEFAULT_QUIET_PERIOD`]); `None` when it does
    /// not parse (see [`AlertRuleSpec::check`]).
    pub fn quiet(&self) -> Option<Duration> {
        match self.quiet_period.as_deref() {
            Some(text) => parse_duration(text).ok(),
            None => Some(DEFAULT_QUIET_PERIOD),
        }
    }

    /// `worker_absent_for` as a duration, when set and valid.
    pub fn absent_for(&self) -> Option<Duration> {
        self.worker_absent_for
            .as_deref()
            .and_then(|text| parse_duration(text).ok())
    }
}

fn check_text(bad: &mut impl FnMut(&str, String), pointer: &str, text: Option<&str>) {
    if let Some(text) = text {
        if text.trim().is_empty() {
            bad(pointer, "must not be blank".into());
        } else if text.chars().count() > MAX_FIELD_CHARS {
            bad(pointer, format!("longer than {MAX_FIELD_CHARS} characters"));
        }
    }
}

fn alert_state_names() -> String {
    ALERT_STATES
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A duration such as `"5m"`, `"1h 30m"`, `"0s"`, at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}): write e.g. \"5m\", \"1h\" or \"30s\"")
    })?;
    if parsed > MAX_DURATION {
        return Err(format!("{text:?} is longer than 7 days"));
    }
    Ok(parsed)
}

/// Checks a target URL: `http` or `https`, with a host, at most [`MAX_URL_CHARS`].
pub fn check_url(url: &str) -> Result<(), String> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(format!("longer than {MAX_URL_CHARS} characters"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("not a URL: write e.g. \"https://hooks.slack.com/services/…\"".into());
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "the scheme is {scheme:?}: only http and https are sent to"
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || url.contains(char::is_whitespace) {
        return Err("the URL has no host, or contains spaces".into());
    }
    Ok(())
}

/// A target URL as the API shows it: scheme and host, then `/…` and the last 4 characters of
/// the rest (a Slack URL is a credential, and so is any query). Never the whole URL.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "…".to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit('@').next().unwrap_or("");
    let last: String = {
        let chars: Vec<char> = tail.chars().collect();
        if chars.len() > 8 {
            chars[chars.len() - 4..].iter().collect()
        } else {
            String::new()
        }
    };
    if tail.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/…{last}")
    }
}

/// A stored rule, as `GET /alert-rules` shows it: target URLs masked ([`mask_url`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertRule {
    /// Its id.
    pub id: Uuid,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// The rule, its `webhook` and `slack` masked.
    #[serde(flatten)]
    pub spec: AlertRuleSpec,
}

impl AlertRule {
    /// The rule as shown: `spec`'s URLs masked.
    pub fn shown(id: Uuid, created: DateTime<Utc>, spec: &AlertRuleSpec) -> AlertRule {
        let mut spec = spec.clone();
        spec.webhook = spec.webhook.as_deref().map(mask_url);
        spec.slack = spec.slack.as_deref().map(mask_url);
        AlertRule { id, created, spec }
    }
}

/// Every rule (at most [`MAX_RULES`], oldest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertRules {
    /// The rules.
    pub items: Vec<AlertRule>,
}

/// Where a delivery goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The rule's `webhook`: the alert as JSON.
    Webhook,
    /// The rule's `slack`: a Slack message.
    Slack,
}

impl TargetKind {
    /// `"webhook"` or `"slack"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Webhook => "webhook",
            TargetKind::Slack => "slack",
        }
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not sent yet, or to be tried again at `next_attempt`.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt ([`MAX_ATTEMPTS`]) failed, or the receiver refused it (4xx other than
    /// 408, 425, 429).
    Failed,
}

impl DeliveryStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One try at sending a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryAttempt {
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; absent when there was no answer.
    pub status_code: Option<u16>,
    /// What went wrong (no answer, or a non-2xx answer and its first bytes).
    pub error: Option<String>,
}

/// One message of a rule: what it says, where it goes and how sending it went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Its id.
    pub id: Uuid,
    /// The rule.
    pub rule_id: Uuid,
    /// The run it is about (absent for a worker absence).
    pub run_id: Option<Uuid>,
    /// The state it is about (absent for a worker absence).
    pub state: Option<StateType>,
    /// `webhook` or `slack` (the rule's URL of that name).
    pub target: TargetKind,
    /// Pending, delivered or failed.
    pub status: DeliveryStatus,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// When the next attempt is due (pending only).
    pub next_attempt: Option<DateTime<Utc>>,
    /// When it was delivered.
    pub delivered: Option<DateTime<Utc>>,
    /// Attempts made.
    pub attempt_count: u32,
    /// The latest attempts, oldest first (at most [`MAX_ATTEMPTS_SHOWN`]).
    pub attempts: Vec<DeliveryAttempt>,
    /// What is sent.
    pub alert: Alert,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> AlertRuleSpec {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn the_example_is_valid() {
        assert!(spec(EXAMPLE_RULE).check().is_empty());
    }

    #[test]
    fn every_bad_field_is_named_with_an_example() {
        let errors = spec(
            r#"{"name": " ", "deployment": "nope", "states": ["Completed"],
                "worker_absent_for": "soon", "webhook": "ftp://x/y", "quiet_period": "-1"}"#,
        )
        .check();
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/name",
                "/deployment",
                "/states/0",
                "/worker_absent_for",
                "/quiet_period",
                "/webhook"
            ]
        );
        assert!(errors.iter().all(|e| e.message.contains(EXAMPLE_RULE)));
        let none = spec(r#"{"name": "x", "states": ["Failed"]}"#).check();
        assert_eq!(none[0].pointer, "/webhook");
        let nothing = spec(r#"{"name": "x", "slack": "https://h/x"}"#).check();
        assert_eq!(nothing[0].pointer, "/states");
    }

    #[test]
    fn a_patch_tells_absent_from_null() {
        let patch: AlertRulePatch =
            serde_json::from_str(r#"{"flow": null, "tag": "x", "enabled": false}"#).expect("patch");
        assert_eq!(patch.flow, Some(None));
        assert_eq!(patch.tag, Some(Some("x".to_string())));
        assert_eq!(patch.webhook, None);
        assert_eq!(patch.enabled, Some(false));
        let back = serde_json::to_value(&patch).expect("json");
        assert_eq!(
            back,
            serde_json::json!({"flow": null, "tag": "x", "enabled": false})
        );
        assert!(spec(EXAMPLE_RULE).enabled, "enabled unless said");
    }

    #[test]
    fn urls_are_masked() {
        assert_eq!(
            mask_url("https://hooks.slack.com/services/T0/B0/SECRETXYZ1"),
            "https://hooks.slack.com/…XYZ1"
        );
        assert_eq!(
            mask_url("http://u:pw@127.0.0.1:9/a"),
            "http://127.0.0.1:9/…"
        );
        assert_eq!(mask_url("https://h.example"), "https://h.example");
        assert!(!mask_url("https://h/x?token=SECRET").contains("SECRET"));
    }
}
