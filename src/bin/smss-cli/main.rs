//! `smss-cli`: the command line client.
//!
//! Owns argument parsing (lexopt) and output formatting; every network
//! command goes through [`smss::client::Client`]. `dump` works offline on a
//! segment file with [`smss::storage::record::scan`]. Single-threaded.
//!
//! Exit codes: 0 success, 1 server error / connection failure / corrupt
//! segment (one line `smss-cli: <message>` on stderr), 2 usage error.
//!
//! Modules: [`args`] (the command line), [`commands`] (the network
//! commands), [`dump`] (the offline segment dump), [`error`] (what they
//! fail with) and [`bench`](mod@bench) (`smss-cli bench`). This file only
//! hands the parsed command line to them and maps errors to exit codes.
#![deny(clippy::unwrap_used)]

mod args;
mod bench;
mod commands;
mod dump;
mod error;

use std::io;
use std::process::ExitCode;

use args::{COMMANDS, Command, Invocation};
use error::{CliError, Result};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`smss-cli sub t | head`) is not a failure.
        Err(CliError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e @ CliError::Usage(_)) => {
            eprintln!("smss-cli: {e}");
            eprintln!("try 'smss-cli --help' (commands: {COMMANDS})");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("smss-cli: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<()> {
    match args::parse(lexopt::Parser::from_env())? {
        Invocation::Help => args::print_help(),
        Invocation::Version => {
            println!("smss-cli {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Invocation::Bench(rest) => bench::run(rest).map_err(|e| match e {
            bench::BenchError::Usage(m) => CliError::Usage(format!("bench: {m}")),
            other => CliError::Bench(other.to_string()),
        }),
        Invocation::Run(_, Command::Dump { path }) => dump::dump(&path),
        Invocation::Run(g, cmd) => {
            let mut c = commands::connect(&g)?;
            commands::execute(&mut c, cmd)
        }
    }
}
