//! OpenAPI links between operations, so that a stateful client (or a fuzzer such as
//! schemathesis) can follow a run: trigger → the run → its result, logs, children, graph,
//! cancel, retry; a deployment's registration → the deployment, its versions, its document,
//! a trigger; an alert rule's creation → the rule, its change, its deletion, its deliveries;
//! a list → its first item.
//!
//! Operations are named by `operationRef` (a JSON pointer to the operation in this document),
//! so the links do not depend on operation ids. [`UniqueOperationIds`] makes those unique too
//! (handlers of several resources share a function name, e.g. `list`).

use utoipa::Modify;
use utoipa::openapi::link::Link;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::{OpenApi, RefOr};

/// The `$ref`-style pointer to the operation `method` of `path`.
fn operation_ref(method: &str, path: &str) -> String {
    format!(
        "#/paths/{}/{method}",
        path.replace('~', "~0").replace('/', "~1")
    )
}

const RUN: &str = "/api/v1/flow-runs/{id}";

/// Where a flow run's id leads: (link name, method, path).
const RUN_TARGETS: [(&str, &str, &str); 7] = [
    ("GetFlowRun", "get", RUN),
    ("GetResult", "get", "/api/v1/flow-runs/{id}/result"),
    ("GetLogs", "get", "/api/v1/flow-runs/{id}/logs"),
    ("GetTaskRuns", "get", "/api/v1/flow-runs/{id}/task-runs"),
    ("GetGraph", "get", "/api/v1/flow-runs/{id}/graph"),
    ("CancelRun", "post", "/api/v1/flow-runs/{id}/cancel"),
    ("RetryRun", "post", "/api/v1/flow-runs/{id}/retry"),
];

/// Where a deployment's `flow` and `name` lead.
const DEPLOYMENT_TARGETS: [(&str, &str, &str); 4] = [
    ("GetDeployment", "get", "/api/v1/deployments/{flow}/{name}"),
    (
        "GetVersions",
        "get",
        "/api/v1/deployments/{flow}/{name}/versions",
    ),
    (
        "GetDeploymentDocument",
        "get",
        "/api/v1/deployments/{flow}/{name}/openapi.json",
    ),
    (
        "TriggerRun",
        "post",
        "/api/v1/deployments/{flow}/{name}/runs",
    ),
];

const RULE: &str = "/api/v1/alert-rules/{id}";

/// Where an alert rule's id leads.
const RULE_TARGETS: [(&str, &str, &str); 4] = [
    ("GetAlertRule", "get", RULE),
    ("UpdateAlertRule", "patch", RULE),
    ("DeleteAlertRule", "delete", RULE),
    (
        "GetAlertDeliveries",
        "get",
        "/api/v1/alert-rules/{id}/deliveries",
    ),
];

/// An operation whose answers lead elsewhere: its method, its path, the statuses whose
/// bodies carry the ids, and the links (name, link).
type Source<'a> = (HttpMethod, &'a str, &'a [&'a str], Vec<(&'a str, Link)>);

/// Adds the links of every (method, path, statuses) source to its responses.
pub struct RunLinks;

impl Modify for RunLinks {
    fn modify(&self, openapi: &mut OpenApi) {
        let run_from = |pointer: &str| {
            RUN_TARGETS
                .iter()
                .map(|&(name, method, path)| {
                    let link = Link::builder()
                        .operation_ref(operation_ref(method, path))
                        .parameter("id", format!("$response.body#{pointer}"))
                        .description(format!("The run's `{name}`"))
                        .build();
                    (name, link)
                })
                .collect::<Vec<_>>()
        };
        let deployment_from = |pointer: &str| {
            DEPLOYMENT_TARGETS
                .iter()
                .map(|&(name, method, path)| {
                    let link = Link::builder()
                        .operation_ref(operation_ref(method, path))
                        .parameter("flow", format!("$response.body#{pointer}/flow"))
                        .parameter("name", format!("$response.body#{pointer}/name"))
                        .description(format!("The deployment's `{name}`"))
                        .build();
                    (name, link)
                })
                .collect::<Vec<_>>()
        };
        let rule_from = |pointer: &str| {
            RULE_TARGETS
                .iter()
                .map(|&(name, method, path)| {
                    let link = Link::builder()
                        .operation_ref(operation_ref(method, path))
                        .parameter("id", format!("$response.body#{pointer}"))
                        .description(format!("The alert rule's `{name}`"))
                        .build();
                    (name, link)
                })
                .collect::<Vec<_>>()
        };
        let sources: [Source; 10] = [
            (
                HttpMethod::Post,
                "/api/v1/alert-rules",
                &["201"],
                rule_from("/id"),
            ),
            (
                HttpMethod::Get,
                "/api/v1/alert-rules",
                &["200"],
                rule_from("/items/0/id"),
            ),
            (
                HttpMethod::Post,
                "/api/v1/deployments/{flow}/{name}/runs",
                &["200", "201", "202"],
                run_from("/id"),
            ),
            (HttpMethod::Get, RUN, &["200"], run_from("/id")),
            (
                HttpMethod::Get,
                "/api/v1/flow-runs",
                &["200"],
                run_from("/items/0/id"),
            ),
            (
                HttpMethod::Post,
                "/api/v1/flow-runs/{id}/cancel",
                &["200"],
                run_from("/id"),
            ),
            (
                HttpMethod::Post,
                "/api/v1/flow-runs/{id}/retry",
                &["200"],
                run_from("/id"),
            ),
            (
                HttpMethod::Post,
                "/api/v1/deployments",
                &["200", "201"],
                deployment_from(""),
            ),
            (
                HttpMethod::Get,
                "/api/v1/deployments",
                &["200"],
                deployment_from("/items/0"),
            ),
            (
                HttpMethod::Get,
                "/api/v1/deployments/{flow}/{name}",
                &["200"],
                deployment_from("/latest"),
            ),
        ];
        for (method, path, statuses, links) in sources {
            let Some(operation) = operation_mut(openapi, &method, path) else {
                continue;
            };
            for status in statuses {
                if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) {
                    for (name, link) in &links {
                        response
                            .links
                            .insert((*name).to_string(), RefOr::T(link.clone()));
                    }
                }
            }
        }
    }
}

/// Renames every operation whose id (its handler's name) another operation shares to
/// `{id}_{path}` (`list_deployments`, `list_flow_runs`, …): OpenAPI wants ids unique.
pub struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut OpenApi) {
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        for item in openapi.paths.paths.values() {
            for op in [&item.get, &item.post, &item.put, &item.delete, &item.patch] {
                if let Some(id) = op.as_ref().and_then(|op| op.operation_id.clone()) {
                    *seen.entry(id).or_default() += 1;
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let suffix: String = path
                .trim_start_matches("/api/v1")
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.trim_matches(|c| c == '{' || c == '}')
                        .replace(['-', '.'], "_")
                })
                .collect::<Vec<_>>()
                .join("_");
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if let Some(id) = &op.operation_id
                    && seen.get(id).is_some_and(|n| *n > 1)
                {
                    op.operation_id = Some(format!("{id}_{suffix}"));
                }
            }
        }
    }
}

fn operation_mut<'a>(
    openapi: &'a mut OpenApi,
    method: &HttpMethod,
    path: &str,
) -> Option<&'a mut Operation> {
    let item = openapi.paths.paths.get_mut(path)?;
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        _ => None,
    }
}
