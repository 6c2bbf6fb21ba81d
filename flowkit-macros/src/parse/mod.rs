//! Reading the attribute: [`options`] parses what was written (with spans, rejecting
//! duplicates), [`validate`] checks it against itself and the function and yields the
//! [`Config`] that code generation reads.

mod options;
mod validate;

pub(crate) use options::RawOptions;
pub(crate) use validate::{Cache, Config, Kind, validate};
