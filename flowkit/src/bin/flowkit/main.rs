//! `flowkit`: run deployed flows on a flowkit server and read their runs, from a shell or a CI
//! job. Built on `flowkit::Client`; `flowkit --help` lists the commands and the exit codes.
//!
//! | file | what it holds |
//! |---|---|
//! | `args.rs` | the command line and the help text |
//! | `commands/` | one file per command |
//! | `params.rs` | `-p NAME=VALUE` read with the deployment's parameter schema |
//! | `print.rs` | what goes to stdout and stderr |

mod args;
mod commands;
mod params;
mod print;

use clap::Parser;
use clap::error::ErrorKind;
use flowkit::client::exit_code;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap exits 2 on a usage error, which is `crashed` here.
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => exit_code::COMPLETED,
                _ => exit_code::USAGE,
            };
            let _ = e.print();
            return exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            print::err(&format!("cannot start: {e}"));
            return exit(exit_code::ERROR);
        }
    };
    exit(runtime.block_on(commands::run(cli)))
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
