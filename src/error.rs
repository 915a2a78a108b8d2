//! The server's top-level error: what `smss` prints before exiting non-zero.
//! Each layer keeps its own error type (config, storage, protocol, client);
//! this one wraps them with the step that failed.

use std::fmt;

use crate::config::ConfigError;
use crate::storage::StoreError;

#[derive(Debug)]
pub enum Error {
    Config(ConfigError),
    Store(StoreError),
    /// A start-up or shutdown step failed; `what` names it.
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The persistence thread ended without being asked to.
    WriterDied,
    /// The server cannot start as configured; the text says why.
    Startup(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "configuration: {e}"),
            Error::Store(e) => write!(f, "storage: {e}"),
            Error::Io { what, .. } => write!(f, "{what}"),
            Error::WriterDied => write!(f, "the persistence thread stopped unexpectedly"),
            Error::Startup(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Store(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            Error::WriterDied | Error::Startup(_) => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}

/// The error and every `source()` below it, joined by ": ", skipping a
/// cause whose text the message already contains.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
