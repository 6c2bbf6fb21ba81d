//! `flowkit-server`: parse the command line, set up logging, serve.
//!
//! Logging follows `RUST_LOG` (default `info`), e.g. `RUST_LOG=flowkit_server=debug,tower_http=debug`.

use clap::Parser;
use flowkit_server::config::Cli;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.into_config() {
        Ok(config) => flowkit_server::serve(config).await,
        Err(err) => Err(err.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("flowkit-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}
