//! What the generated code of `#[task]` and `#[flow]` calls. Not a public API: it changes
//! without notice.

pub use crate::deployment::{
    FlowTypes, Parameter, StartFn, accepts_null, check_parameter, output_json, output_schema,
    subschema,
};
pub use crate::event::RunKind;
pub use crate::policy::cache::hash_inputs;
pub use crate::run::body::{Body, Once, Repeat, once, repeat};
pub use crate::run::deployed::OutputFn;
pub use crate::run::executor::run;
pub use crate::run::handle::{call_with, submit, submit_with};
pub use crate::run::map::map;
pub use crate::run::spec::{CacheMode, CallOptions, CallSite, Codec, Shape, TaskSpec};
pub use schemars;
pub use serde;
pub use serde_json;
pub use std::sync::LazyLock;
pub use std::time::Duration;
pub use tracing;

/// Requires `Clone` (for `retries`), at the span of the argument it is called on.
pub fn assert_clone<T: Clone>(_: &T) {}

/// Requires `Serialize` (for `cache = inputs` and `persist`), at the argument's span.
pub fn assert_serialize<T: serde::Serialize + ?Sized>(_: &T) {}

/// The builder of `my_flow::deployment(name)`.
pub fn deployment(name: &str, spec: &'static TaskSpec, types: FlowTypes<'_>) -> crate::Deployment {
    crate::deployment::new(name, spec, types)
}

/// `T` of `Result<T, E>`: what a fallible flow gives back when its return type is an alias.
pub trait Fallible {
    /// `T`.
    type Ok;
    /// `Some(&T)` for `Ok(T)`, `None` for an `Err`.
    fn ok_ref(&self) -> Option<&Self::Ok>;
}
impl<T, E> Fallible for Result<T, E> {
    type Ok = T;
    fn ok_ref(&self) -> Option<&T> {
        self.as_ref().ok()
    }
}

// What `deployment()` asks of a flow's types. Each bound is written at the argument's (or the
// output's) type in a where clause of `deployment` under a `for<'__flowkit>` binder, which
// defers it to the callers of `deployment`: a flow that is never deployed needs none of them.
// The supertraits give the body of `deployment` what it uses.

/// A flow argument's type, for `deployment()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not `schemars::JsonSchema`, so `deployment()` cannot describe the flow's parameter of this type",
    label = "`deployment()` needs every argument of the flow to implement `schemars::JsonSchema`",
    note = "derive it with `#[derive(schemars::JsonSchema)]`, or take a type that implements it; a flow that is never deployed does not need it"
)]
pub trait ParameterSchema: schemars::JsonSchema {}
impl<T: schemars::JsonSchema> ParameterSchema for T {}

/// A flow argument's type, for `deployment()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not `serde::Deserialize`, so `deployment()` cannot read the flow's parameter of this type from JSON",
    label = "`deployment()` needs every argument of the flow to implement `serde::de::DeserializeOwned`",
    note = "derive it with `#[derive(serde::Deserialize)]`, or take an owned type that implements it; a flow that is never deployed does not need it"
)]
pub trait ParameterDeserialize: serde::de::DeserializeOwned {}
impl<T: serde::de::DeserializeOwned> ParameterDeserialize for T {}

/// A flow's output (`T` of `Result<T, E>`), for `deployment()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not `schemars::JsonSchema`, so `deployment()` cannot describe the flow's output",
    label = "`deployment()` needs the flow's output (`T` of `Result<T, E>`) to implement `schemars::JsonSchema`",
    note = "derive it with `#[derive(schemars::JsonSchema)]`, or return a type that implements it; a flow that is never deployed does not need it"
)]
pub trait OutputSchema: schemars::JsonSchema {}
impl<T: schemars::JsonSchema> OutputSchema for T {}

/// A flow's output (`T` of `Result<T, E>`), for `deployment()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not `serde::Serialize`, so a deployed flow's output cannot be sent as JSON",
    label = "`deployment()` needs the flow's output (`T` of `Result<T, E>`) to implement `serde::Serialize`",
    note = "derive it with `#[derive(serde::Serialize)]`, or return a type that implements it; a flow that is never deployed does not need it"
)]
pub trait OutputSerialize: serde::Serialize {}
impl<T: serde::Serialize> OutputSerialize for T {}

/// Autoref specialization: pick the best available trait impl for a concrete type at the
/// macro's call site. Use as `(&&&Describe(&e)).flowkit_describe()`.
pub mod autoref {
    use serde_json::Value;
    use uuid::Uuid;

    /// Something to describe in a state message.
    pub struct Describe<'a, T: ?Sized>(pub &'a T);
    /// Something to record as a flow parameter.
    pub struct Param<'a, T: ?Sized>(pub &'a T);
    /// An argument that may be a `TaskHandle` (an upstream run).
    pub struct Upstream<'a, T: ?Sized>(pub &'a T);

    /// `Display` description (preferred).
    pub trait DescribeDisplay {
        /// The description.
        fn flowkit_describe(&self) -> String;
    }
    impl<T: std::fmt::Display + ?Sized> DescribeDisplay for &&Describe<'_, T> {
        fn flowkit_describe(&self) -> String {
            // `{:#}` shows anyhow's whole chain of causes.
            format!("{:#}", self.0)
        }
    }
    /// `Debug` description (fallback).
    pub trait DescribeDebug {
        /// The description.
        fn flowkit_describe(&self) -> String;
    }
    impl<T: std::fmt::Debug + ?Sized> DescribeDebug for &Describe<'_, T> {
        fn flowkit_describe(&self) -> String {
            format!("{:?}", self.0)
        }
    }
    /// Type name (last resort).
    pub trait DescribeAny {
        /// The description.
        fn flowkit_describe(&self) -> String;
    }
    impl<T: ?Sized> DescribeAny for Describe<'_, T> {
        fn flowkit_describe(&self) -> String {
            format!("an error of type {}", std::any::type_name::<T>())
        }
    }

    /// The parameter as JSON (preferred).
    pub trait ParamSerialize {
        /// The parameter.
        fn flowkit_param(&self) -> Value;
    }
    impl<T: serde::Serialize + ?Sized> ParamSerialize for &Param<'_, T> {
        fn flowkit_param(&self) -> Value {
            serde_json::to_value(self.0)
                .unwrap_or_else(|e| Value::String(format!("<not serializable: {e}>")))
        }
    }
    /// A placeholder naming the type (fallback).
    pub trait ParamAny {
        /// The parameter.
        fn flowkit_param(&self) -> Value;
    }
    impl<T: ?Sized> ParamAny for Param<'_, T> {
        fn flowkit_param(&self) -> Value {
            Value::String(format!("<{}>", std::any::type_name::<T>()))
        }
    }

    /// The run id of a `TaskHandle` argument.
    pub trait UpstreamHandle {
        /// The upstream run.
        fn flowkit_upstream(&self) -> Option<Uuid>;
    }
    impl<T> UpstreamHandle for &Upstream<'_, crate::TaskHandle<T>> {
        fn flowkit_upstream(&self) -> Option<Uuid> {
            Some(self.0.run_id())
        }
    }
    /// Any other argument.
    pub trait UpstreamNone {
        /// No upstream run.
        fn flowkit_upstream(&self) -> Option<Uuid>;
    }
    impl<T: ?Sized> UpstreamNone for Upstream<'_, T> {
        fn flowkit_upstream(&self) -> Option<Uuid> {
            None
        }
    }
}
