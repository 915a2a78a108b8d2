//! `smss`: the server binary. Parses the command line and runs the server;
//! only this function decides the exit code.
//!
//! The architecture (threads, channels, files, durability) is described at
//! the top of the library, `src/lib.rs`. What the process does from here:
//! - loads `--config` (default `config/config.yaml`), opens and recovers the
//!   data directory, then prints `READY <addr>` on stdout once it serves;
//! - runs until SIGTERM or SIGINT, then drains the writer, fsyncs, writes a
//!   checkpoint and exits 0;
//! - `--check` / `--repair` load the config, work on its data directory
//!   offline and exit 0 (clean afterwards) or 1 (damage remains, or the
//!   directory is locked by a running server);
//! - exits 1 when start-up fails (bad config, damaged or locked data
//!   directory, port in use) or the persistence thread dies, with the reason
//!   on stderr and in the log; exits 2 on a command-line error.

use std::process::ExitCode;

use std::path::Path;

use smss::cli::{self, Command};
use smss::config::Config;
use smss::error::{Error, chain};
use smss::storage::StoreError;

fn main() -> ExitCode {
    match cli::parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("{}", cli::VERSION_TEXT);
            ExitCode::SUCCESS
        }
        Ok(Command::Check { config }) => offline(&config, |cfg, out| {
            smss::storage::check::run(&cfg.store.path, out)
        }),
        Ok(Command::Repair { config }) => offline(&config, smss::storage::repair::run),
        Ok(Command::Run(args)) => match smss::server::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let msg = chain(&e);
                log::error!("{msg}");
                eprintln!("smss: {msg}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("smss: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}

/// Runs `--check` or `--repair` on the data directory of `config`, with the
/// report on stdout: exit 0 when the directory is clean afterwards.
fn offline(
    config: &Path,
    work: impl FnOnce(&Config, &mut dyn std::io::Write) -> Result<bool, StoreError>,
) -> ExitCode {
    let res = Config::load(config)
        .map_err(Error::from)
        .and_then(|cfg| work(&cfg, &mut std::io::stdout().lock()).map_err(Error::from));
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("smss: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}
