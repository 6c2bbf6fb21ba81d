//! `GET /api/v1/deployments/{flow}/{name}/openapi.json`: an OpenAPI 3.1 document for one
//! deployment, so a team in another language can generate a typed client for it: the trigger
//! route with the version's parameter schema as the type of `parameters`, and the result
//! route with the output schema as its 200 body.
//!
//! The flow's schemas come from schemars (JSON Schema 2020-12, the dialect of OpenAPI 3.1).
//! Their `$defs` (or draft-07 `definitions`) move to `components/schemas` as
//! `Parameters.NAME` / `Output.NAME`, and their `$ref`s are rewritten to match, so every
//! reference resolves inside the document. The server's own bodies (`Run`, `ErrorBody`, what
//! they refer to) are copied from the main document ([`super::openapi`]).

use crate::AppState;
use crate::api::deployments::DeploymentPath;
use crate::api::extract::{ApiQuery, non_empty};
use crate::error::{ApiError, ErrorBody, StoreFailures};
use crate::store::Backend;
use axum::Json;
use axum::extract::State;
use flowkit_wire::api::PREFIX;
use flowkit_wire::api::deployments::{
    DeploymentVersion, IDEMPOTENCY_KEY_HEADER, MAX_IDEMPOTENCY_KEY_LEN,
};
use flowkit_wire::api::ingest::{MAX_NAME_CHARS, MAX_TAGS};
use flowkit_wire::api::run_actions::MAX_WAIT_SECONDS;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::IntoParams;

/// The query of the document: which version it describes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DocumentQuery {
    /// The version to describe (default: the one a trigger without `version` runs).
    pub version: Option<String>,
}

/// The OpenAPI 3.1 document of one deployment.
#[utoipa::path(
    get,
    path = "/api/v1/deployments/{flow}/{name}/openapi.json",
    tag = "deployments",
    params(
        ("flow" = String, Path, description = "The flow's name"),
        ("name" = String, Path, description = "The deployment's name"),
        DocumentQuery,
    ),
    responses(
        (status = 200, description = "An OpenAPI 3.1 document: the trigger route of this deployment, whose `parameters` are the version's parameter schema, and the result route, whose 200 body is its output schema", content_type = "application/json", body = Object),
        (status = 400, description = "A parameter does not parse; the message names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such deployment, or no such version of it", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn document(
    State(state): State<AppState>,
    path: DeploymentPath,
    ApiQuery(query): ApiQuery<DocumentQuery>,
) -> Result<Json<Value>, ApiError> {
    let wanted = non_empty(query.version);
    let version = state
        .store()
        .deployment_version(&path.flow, &path.name, wanted.as_deref())
        .await?
        .ok_or_else(|| match &wanted {
            Some(v) => ApiError::not_found(format!(
                "{}/{} has no version {v:?}: see GET {PREFIX}/deployments/{}/{}/versions",
                path.flow, path.name, path.flow, path.name
            )),
            None => ApiError::not_found(format!(
                "no deployment {}/{}: register it first (POST {PREFIX}/deployments)",
                path.flow, path.name
            )),
        })?;
    Ok(Json(deployment_document(
        &version,
        super::openapi::document_json(),
    )))
}

/// The document of `version`; `main` is the server's own OpenAPI document (JSON), where
/// `Run`, `ErrorBody` and what they refer to are taken from.
pub fn deployment_document(version: &DeploymentVersion, main: &str) -> Value {
    let main: Value = serde_json::from_str(main).unwrap_or(Value::Null);
    let server_schemas = main
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut schemas = Map::new();
    for name in ["Run", "ErrorBody"] {
        copy_with_references(name, &server_schemas, &mut schemas);
    }
    let parameters = embed("Parameters", &version.parameter_schema, &mut schemas);
    let output = embed("Output", &version.output_schema, &mut schemas);
    schemas.insert("Parameters".into(), parameters);
    schemas.insert("Output".into(), output);
    schemas.insert("TriggerRequest".into(), trigger_request(version));

    let deployment = format!("{}/{}", version.flow, version.name);
    let trigger_path = format!("{PREFIX}/deployments/{deployment}/runs");
    let result_path = format!("{PREFIX}/flow-runs/{{id}}/result");
    let description = version
        .description
        .clone()
        .unwrap_or_else(|| format!("The deployment {deployment}."));
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": format!("flowkit deployment {deployment}"),
            "version": version.version,
            "description": format!(
                "{description}\n\nTrigger a run of {deployment} (version {:?} of the flow `{}`) \
                 and read its result. Errors are `{{\"error\": {{\"code\", \"message\", …}}}}`.",
                version.version, version.flow_key
            ),
        },
        "paths": {
            trigger_path: {"post": trigger_operation(version)},
            result_path: {"get": result_operation()},
        },
        "components": {
            "schemas": schemas,
            "responses": standard_responses(),
            "securitySchemes": {
                "api_key": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key's secret with the `trigger` scope (to run) and `read` \
                        (to read results; a key limited to this deployment reads the runs it \
                        created). Not needed when the server runs without keys."
                }
            }
        },
        "security": [{"api_key": []}],
    })
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_body(schema: Value, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn error(description: &str) -> Value {
    json_body(schema_ref("ErrorBody"), description)
}

/// The body of a trigger: the wire's `TriggerRequest`, with `parameters` typed by the flow.
fn trigger_request(version: &DeploymentVersion) -> Value {
    let mut defaults = String::new();
    if !version.default_parameters.is_empty() {
        defaults = format!(
            " Defaults of the deployment fill in what is not given: {}.",
            Value::Object(version.default_parameters.clone())
        );
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "parameters": {
                "$ref": "#/components/schemas/Parameters",
                "description": format!(
                    "The flow's arguments by name.{defaults} Validated by the server: 422 \
                     `invalid_parameters` lists every error at its JSON pointer."
                ),
            },
            "idempotency_key": {
                "type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LEN,
                "description": format!(
                    "The same key with the same body gives back the run it created (200); with \
                     another body, 409 `idempotency_key_reused`. Also accepted as the \
                     `{IDEMPOTENCY_KEY_HEADER}` header."
                ),
            },
            "scheduled_for": {"type": "string", "format": "date-time", "description": "Not before this instant."},
            "tags": {
                "type": "array", "maxItems": MAX_TAGS,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
                "description": "Tags added to the deployment's.",
            },
            "version": {"type": "string", "description": format!("Run this version instead of the newest (this document describes {:?}).", version.version)},
        },
    })
}

fn trigger_operation(version: &DeploymentVersion) -> Value {
    let deployment = format!("{}/{}", version.flow, version.name);
    json!({
        "operationId": "trigger",
        "summary": format!("Run {deployment}"),
        "parameters": [
            {"name": IDEMPOTENCY_KEY_HEADER, "in": "header", "required": false,
             "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LEN},
             "description": "Same as `idempotency_key` of the body; both given must agree."},
            {"name": "Prefer", "in": "header", "required": false,
             "schema": {"type": "string", "example": "wait=30"},
             "description": format!("`wait=N` (whole seconds, at most {MAX_WAIT_SECONDS}): answer when the run ends within N s, with its `result` inline if it completed.")},
        ],
        "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("TriggerRequest")}}},
        "responses": {
            "201": {
                "description": "The run was created (or, with `Prefer: wait`, ended within the wait: its final state, and `result` if `Completed`); `Location` is the run",
                "headers": {"Location": {"schema": {"type": "string"}, "description": format!("`{PREFIX}/flow-runs/{{id}}`")}},
                "content": {"application/json": {"schema": schema_ref("Run")}},
            },
            "200": json_body(schema_ref("Run"), "The idempotency key was used before with the same body: the run it created"),
            "202": {
                "description": "`Prefer: wait` and the run did not end within the wait: the run as it stands; `Location` is the run",
                "headers": {"Location": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": schema_ref("Run")}},
            },
            "400": error("Malformed JSON, a bad idempotency key or `Prefer` header"),
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": error("The key lacks the `trigger` scope, or has it for other deployments only"),
            "404": error("No such deployment"),
            "409": error("`idempotency_key_reused`: the key was used with another body; `run_id` is the run it created"),
            "413": error("Body too large"),
            "415": error("Content type is not JSON"),
            "422": error("`invalid_parameters`: the parameters do not fit the schema, every error in `details` at its JSON pointer (e.g. `/learning_rate`); `invalid_body`: an unknown field, a bad tag or an unknown `version`"),
            "500": {"$ref": "#/components/responses/Internal"},
            "503": {"$ref": "#/components/responses/Unavailable"},
        },
    })
}

fn result_operation() -> Value {
    json!({
        "operationId": "result",
        "summary": "The output of a completed run",
        "parameters": [
            {"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}, "description": "The run (`id` of the trigger's answer)"},
            {"name": "wait", "in": "query", "required": false,
             "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
             "description": "Wait up to this many seconds for the run to end."},
        ],
        "responses": {
            "200": json_body(schema_ref("Output"), "The run completed: its output"),
            "202": json_body(schema_ref("Run"), "The run has not ended yet: the run as it stands"),
            "400": error("A parameter does not parse; the message names it"),
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": error("The key may not read this run"),
            "404": error("No such run"),
            "409": error("`run_not_completed`: the run ended otherwise (failed, crashed, cancelled); `state` says how"),
            "500": {"$ref": "#/components/responses/Internal"},
            "503": {"$ref": "#/components/responses/Unavailable"},
        },
    })
}

fn standard_responses() -> Value {
    json!({
        "Unauthorized": error("Missing or unknown API key"),
        "Internal": error("`internal`: the server failed in a way the client cannot fix"),
        "Unavailable": error("`unavailable`: the server is shutting down; retry"),
    })
}

/// Copies the server schema `name` and every schema it refers to, transitively.
fn copy_with_references(name: &str, from: &Map<String, Value>, into: &mut Map<String, Value>) {
    if into.contains_key(name) {
        return;
    }
    let Some(schema) = from.get(name) else {
        return;
    };
    into.insert(name.to_string(), schema.clone());
    let mut refs = Vec::new();
    collect_refs(schema, &mut refs);
    for target in refs {
        if let Some(other) = target.strip_prefix("#/components/schemas/") {
            copy_with_references(other, from, into);
        }
    }
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => refs.push(target.clone()),
                    _ => collect_refs(v, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

/// A flow schema made to live at `components/schemas/{prefix}`: its definitions become
/// `{prefix}.NAME` beside it (added to `schemas`), its references follow them, and `$schema`
/// goes (the document's dialect says it).
fn embed(prefix: &str, schema: &Value, schemas: &mut Map<String, Value>) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("$id");
        for defs in ["$defs", "definitions"] {
            if let Some(Value::Object(found)) = map.remove(defs) {
                for (name, mut def) in found {
                    rewrite_refs(prefix, &mut def);
                    schemas.insert(format!("{prefix}.{}", component_name(&name)), def);
                }
            }
        }
    }
    rewrite_refs(prefix, &mut schema);
    // `true`/`false` schemas stay as they are: OpenAPI 3.1 allows them.
    schema
}

/// A definition's name as a component name (`[A-Za-z0-9._-]`).
fn component_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn rewrite_refs(prefix: &str, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "$ref"
                    && let Value::String(target) = v
                {
                    if target == "#" {
                        *target = format!("#/components/schemas/{prefix}");
                    } else if let Some(name) = target
                        .strip_prefix("#/$defs/")
                        .or_else(|| target.strip_prefix("#/definitions/"))
                    {
                        *target = format!("#/components/schemas/{prefix}.{}", component_name(name));
                    }
                } else {
                    rewrite_refs(prefix, v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(prefix, v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_move_to_components_and_references_follow() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "mode": {"$ref": "#/$defs/Mode"},
                "tree": {"$ref": "#/definitions/Tree Node"},
                "again": {"$ref": "#"},
            },
            "$defs": {"Mode": {"enum": ["fast", "slow"]}},
            "definitions": {"Tree Node": {"type": "array", "items": {"$ref": "#/definitions/Tree Node"}}},
        });
        let mut schemas = Map::new();
        let embedded = embed("Parameters", &schema, &mut schemas);
        assert!(embedded.get("$schema").is_none());
        assert!(embedded.get("$defs").is_none());
        assert_eq!(
            embedded["properties"]["mode"]["$ref"],
            "#/components/schemas/Parameters.Mode"
        );
        assert_eq!(
            embedded["properties"]["again"]["$ref"],
            "#/components/schemas/Parameters"
        );
        assert_eq!(
            schemas["Parameters.Tree_Node"]["items"]["$ref"],
            "#/components/schemas/Parameters.Tree_Node"
        );
        assert_eq!(schemas["Parameters.Mode"]["enum"][0], "fast");
    }
}
