//! Shared setup of the end-to-end tests.

use std::sync::Once;

/// Points this test process's `FLOWKIT_HOME` at a fresh temporary directory (once per
/// process), so cached results of earlier test runs cannot leak into this one.
pub fn isolated_home() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let dir = tempfile::Builder::new()
            .prefix("flowkit-test-home")
            .tempdir()
            .expect("create a temporary FLOWKIT_HOME")
            .keep();
        let mut config = flowkit::config::Config::from_env();
        config.home = dir;
        config.summary = false;
        // Another test of this process may have started a run first: then the config from
        // the environment is in force, which is also a per-process temporary home only if
        // every test calls this first. They all do.
        let _ = flowkit::config::init(config);
    });
}
