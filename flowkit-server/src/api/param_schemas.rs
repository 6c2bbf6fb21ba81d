//! OpenAPI schemas of query parameters that a plain Rust type does not describe: the log
//! `level` enum and the comma-separated `state` list, so generated clients (and fuzzers) send
//! only what the server accepts.

use flowkit_wire::state::StateType;
use utoipa::Modify;
use utoipa::openapi::path::ParameterStyle;
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};
use utoipa::openapi::{OpenApi, RefOr};

/// The log levels of `?level=`, as the server accepts them: upper or lower case.
pub fn log_level() -> Object {
    let upper = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    let values = upper
        .iter()
        .map(|l| l.to_string())
        .chain(upper.iter().map(|l| l.to_ascii_lowercase()));
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

/// The state types of `?state=` (sent comma-separated, `style: form, explode: false`).
pub fn state_list() -> Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(StateType::ALL.iter().map(|s| s.as_str()))),
        )
        .build()
}

/// Says that the array parameters of [`state_list`] travel comma-separated (`style: form`,
/// `explode: false`: `?state=Failed,Crashed`), which `#[param(schema_with)]` cannot say.
pub struct CommaSeparated;

impl Modify for CommaSeparated {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                for param in op.parameters.iter_mut().flatten() {
                    let RefOr::T(param) = param else { continue };
                    let is_array = matches!(
                        &param.schema,
                        Some(RefOr::T(utoipa::openapi::schema::Schema::Array(_)))
                    );
                    if is_array {
                        param.style = Some(ParameterStyle::Form);
                        param.explode = Some(false);
                    }
                }
            }
        }
    }
}
