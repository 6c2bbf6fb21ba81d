//! Nothing here: the crate exists for `tests/dashboard.rs`, which drives the dashboard in a
//! real headless Chromium.
