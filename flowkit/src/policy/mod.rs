//! The policies a run applies, one small type each: retry, cache, timeout and limits.

pub mod cache;
pub mod limits;
pub mod retry;
pub mod timeout;
