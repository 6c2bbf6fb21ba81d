//! The flowkit server: collects runs from many processes, stores them and shows them.
//!
//! Not built yet: this binary exists so the workspace layout is final. It says so and exits
//! with a non-zero status instead of pretending to serve.

fn main() {
    eprintln!(
        "flowkit-server {}: the server is not implemented yet; runs are recorded locally \
         (terminal summary, FLOWKIT_EVENT_LOG, the result cache under FLOWKIT_HOME).",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
