//! [`CliError`], everything a command can fail with, and the shorthands
//! that build it.

use std::fmt;
use std::io;

use smss::client::ClientError;

/// The one line `smss-cli bench …` prints: where the bench went.
const BENCH_MOVED: &str = "the bench is its own binary now: run 'smss-bench <mode> [options]' \
     instead of 'smss-cli bench …' (smss-bench --help; make bench, make bench-peers)";

/// Everything `run` can fail with; `main` maps it to an exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad command line: exit 2 with a usage hint.
    Usage(String),
    /// Bad arguments of a known command: exit 2, pointing at its help.
    CommandUsage { cmd: String, msg: String },
    /// The server or the connection failed.
    Client(ClientError),
    /// A local file or stream failed.
    Io { what: String, source: io::Error },
    /// `dump` found a corrupt record.
    Corrupt(String),
    /// `dump` was given a file that is not a segment.
    NotSegment(String),
    /// `smss-cli bench …`: the bench is the `smss-bench` binary now.
    BenchMoved,
    /// `bridge` could not start or stopped on an error.
    Bridge(String),
    /// `--help` after the command: not an error; `run` prints the help.
    HelpRequested,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m)
            | CliError::Corrupt(m)
            | CliError::NotSegment(m)
            | CliError::Bridge(m) => f.write_str(m),
            CliError::CommandUsage { msg, .. } => f.write_str(msg),
            CliError::BenchMoved => f.write_str(BENCH_MOVED),
            CliError::HelpRequested => f.write_str("help requested"),
            CliError::Client(e) => write!(f, "{e}"),
            CliError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Client(e) => Some(e),
            CliError::Io { source, .. } => Some(source),
            CliError::Usage(_)
            | CliError::CommandUsage { .. }
            | CliError::Corrupt(_)
            | CliError::NotSegment(_)
            | CliError::BenchMoved
            | CliError::Bridge(_)
            | CliError::HelpRequested => None,
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(e)
    }
}

impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> Self {
        CliError::Usage(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CliError>;

pub fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

pub fn stdout_err(e: io::Error) -> CliError {
    CliError::Io {
        what: "writing to stdout".to_string(),
        source: e,
    }
}
