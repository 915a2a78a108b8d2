//! What can go wrong in the bench, and the one helper that wraps an I/O
//! error with what the bench was doing.

use std::fmt;

/// What can go wrong in the bench.
#[derive(Debug)]
pub enum BenchError {
    /// Bad command line.
    Usage(String),
    /// A socket, file or process operation failed.
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The peer sent something the bench cannot parse, or closed early.
    Protocol(String),
    /// The server answered with an error where the bench needs success.
    Server(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(m) => write!(f, "{m}"),
            BenchError::Io { what, .. } => write!(f, "{what}"),
            BenchError::Protocol(m) => write!(f, "protocol: {m}"),
            BenchError::Server(m) => write!(f, "server said: {m}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}
