//! `smss-cli`: the command line client.
//!
//! Owns argument parsing (lexopt) and output formatting; every network
//! command goes through [`smss::client::Client`]. `dump` works offline on a
//! segment file with [`smss::storage::record::scan`]. Single-threaded, but
//! for `sub`'s watcher of a closed stdout.
//!
//! Exit codes: 0 success, 1 server error / connection failure / corrupt
//! segment or not a segment (one line `smss-cli: <message>` on stderr), 2
//! usage error, including an argument the server's rules refuse (checked
//! before connecting).
//!
//! Modules: [`args`] (the command line), [`commands`] (the network
//! commands), [`bridge`] (the long-running bridge into NATS JetStream),
//! [`dump`] (the offline segment dump), [`error`] (what they
//! fail with). This file only hands the parsed command line to them and
//! maps errors to exit codes.
//!
//! The benchmarks are a binary of their own, `smss-bench`; `smss-cli bench …`
//! (and `smss-cli help bench`) only print a one-line pointer to it and exit 2.
#![deny(clippy::unwrap_used)]

mod args;
mod backup;
mod bridge;
mod commands;
mod dump;
mod error;
mod habits;
mod health;
mod json;

use std::io::{self, Write};
use std::process::ExitCode;

use args::{COMMANDS, Command, Invocation};
use error::{CliError, Result};

fn main() -> ExitCode {
    // `health` has exit statuses of its own (0 ok, 1 warning, 2 critical).
    if let Ok(Invocation::Run(g, Command::Health(t))) = args::parse(lexopt::Parser::from_env()) {
        return health(&g, &t);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`smss-cli sub t | head`) is not a failure.
        Err(CliError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(CliError::BenchMoved) => {
            eprintln!("smss-cli: {}", CliError::BenchMoved);
            ExitCode::from(2)
        }
        Err(CliError::CommandUsage { cmd, msg }) => {
            eprintln!("smss-cli: {msg}");
            eprintln!("try 'smss-cli {cmd} --help'");
            ExitCode::from(2)
        }
        Err(e @ CliError::Usage(_)) => {
            eprintln!("smss-cli: {e}");
            eprintln!("try 'smss-cli help' (commands: {COMMANDS})");
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
        Invocation::Help(name) => {
            let text = args::help_text(name.as_deref())?;
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(error::stdout_err)
        }
        Invocation::Version => {
            println!("smss-cli {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Invocation::Bench => Err(CliError::BenchMoved),
        Invocation::Run(_, Command::Dump { path }) => dump::dump(&path),
        Invocation::Run(g, Command::Bridge(a)) => bridge::run(&g, *a),
        Invocation::Run(g, Command::Backup { dir }) => {
            let mut out = io::stdout().lock();
            backup::backup(&g, std::path::Path::new(&dir), &mut out)
        }
        Invocation::Run(g, cmd) => {
            // Bad arguments are refused before connecting, by the client's own checks.
            commands::check(&g, &cmd)?;
            let mut c = commands::connect(&g)?;
            commands::execute(&mut c, cmd, g.json)
        }
    }
}

/// `smss-cli health`: one line, and the monitoring-plugin exit status.
fn health(g: &args::Global, t: &health::Thresholds) -> ExitCode {
    let stats = commands::connect(g).and_then(|mut c| c.stats().map_err(CliError::from));
    let (level, why) = match stats {
        Ok(stats) => health::judge(&stats, t),
        Err(e) => (health::Level::Critical, vec![format!("no answer: {e}")]),
    };
    println!("{}: {}", level.word(), why.join("; "));
    ExitCode::from(level as u8)
}
