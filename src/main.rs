//! `smss`: the server binary. Parses the command line and runs the server;
//! only this function decides the exit code.
//!
//! The architecture (threads, channels, files, durability) is described at
//! the top of the library, `src/lib.rs`. What the process does from here:
//! - loads `--config` (default `config/config.yaml`), opens and recovers the
//!   data directory, then prints `READY <addr>` on stdout once it serves;
//! - runs until SIGTERM or SIGINT, then drains the writer, fsyncs, writes a
//!   checkpoint and exits 0;
//! - exits 1 when start-up fails (bad config, damaged or locked data
//!   directory, port in use) or the persistence thread dies, with the reason
//!   on stderr and in the log; exits 2 on a command-line error.

use std::process::ExitCode;

use smss::cli::{self, Command};
use smss::error::chain;

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
