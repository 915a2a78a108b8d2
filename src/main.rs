//! `smss`: the server binary. Parses the command line and runs the server;
//! only this function decides the exit code.

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
