//! Reading the attribute: [`item`] parses the function's signature (its body stays tokens),
//! [`options`] parses what the attribute says (with spans, rejecting duplicates),
//! [`validate`] checks both against each other and yields the [`Config`] that code generation
//! reads.

mod item;
mod options;
mod validate;

pub(crate) use item::{Body, Func};
pub(crate) use options::RawOptions;
pub(crate) use validate::{Cache, Config, Kind, validate};
