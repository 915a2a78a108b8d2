//! `smss-bench`: the load generator and benchmark harness, a binary of its
//! own so that `smss-cli` is only the user's tool (`make bench` runs
//! `smss-bench matrix`, `make bench-peers` runs `smss-bench peers`).
//!
//! - `smss-bench pub|sub|e2e|delay …` runs one measurement against a running
//!   server (smss, or Redis/beanstalkd with `--protocol resp|beanstalk`) and
//!   prints one `key=value` line.
//! - `smss-bench matrix` starts its own smss (temp dir, `fsync: always`, then
//!   `interval`), runs a fixed matrix, then the replication rows on fresh
//!   master and slave pairs (throughput with and without a slave,
//!   visibility on the slave, catch-up of a `--repl-backlog` backlog), and
//!   prints tables with the replication targets (`make bench`).
//! - `smss-bench peers` does the same publish/drain rows against Redis 7 Streams
//!   and beanstalkd started from PATH, and prints smss ÷ peer ratios
//!   (`make bench-peers`).
//!
//! Threads: `pub` spreads its connections over `--threads T` client threads
//! (default one per connection), each driving its connections in lockstep;
//! the other modes use a few threads; plus an RSS sampler in the matrix.
//! Plain blocking sockets, requests pre-built, one write per pipeline window.
//! Fewer client threads than connections keep the client's own thread
//! switching from eating the CPU the measured server needs (client and
//! server share a small machine). CPU time of the bench and, when its PID is
//! known, of the server is read from `/proc` around the timed part.
//! Servers the bench starts are killed by PID when their guard drops, also on
//! error or panic. Every loop is bounded by its count and by `--max-secs`.
//!
//! Modules from the bottom up, each using only ones before it: [`error`],
//! [`opts`] (the command line), [`wire`] (protocol codecs and the
//! connection), [`report`] (one measurement's figures), [`load`] (one
//! measurement), [`suite`] (`matrix` and `peers`). This file only
//! dispatches and maps errors to exit codes, so none of them needs to reach
//! back up to it.
//!
//! Exit codes: 0 success, 1 a measurement failed (one line
//! `smss-bench: <message>` on stderr), 2 usage error.
#![deny(clippy::unwrap_used)]

mod error;
mod load;
mod opts;
mod report;
mod suite;
mod wire;

use std::ffi::OsString;
use std::process::ExitCode;

use error::BenchError;
use load::run_one;
use opts::{Command, USAGE, parse_args};

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError::Usage(m)) => {
            eprintln!("smss-bench: {m}");
            eprintln!("try 'smss-bench --help'");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("smss-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `smss-bench <args>` (the args after the program name).
fn run(args: Vec<OsString>) -> Result<(), BenchError> {
    match parse_args(args)? {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::One(o) => {
            let r = run_one(&o)?;
            println!("{}", r.line());
            Ok(())
        }
        Command::Matrix(s) => suite::matrix::run(&s),
        Command::Peers(s) => suite::peers::run(&s),
        Command::Footprint(s) => suite::footprint::run(&s),
        Command::Bridge(s) => suite::bridge::run_alone(&s),
    }
}
