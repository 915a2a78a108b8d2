//! [`ReplError`]: how a replication session ends in failure, on either
//! side (the slave's `repl-receiver`, a master's sender), each case naming
//! what it is about. The threads log it and reconnect (receiver) or drop
//! the slave (sender); it never reaches a client.

use std::fmt;
use std::io;

use crate::storage::StoreError;

#[derive(Debug)]
pub enum ReplError {
    /// A socket step failed; `what` says which (connecting to …, reading
    /// records from the master, …).
    Io { what: String, source: io::Error },
    /// No link to the peer: the connection or its TLS handshake failed
    /// (the text names the address and the step).
    Connect(String),
    /// The peer sent something this side cannot follow (a bad frame, a
    /// record not followed by CRLF, a line too long).
    Protocol(String),
    /// The peer refused this side (AUTH, REPL).
    Refused(String),
    /// This server's writer failed to apply or plan, or did not answer.
    Writer(String),
    /// Reading this server's own log failed (a sender).
    Log(StoreError),
    /// The session is over for a reason that is nobody's fault: the peer
    /// closed or went silent, the slave was replaced, records it was sent
    /// were undone, the server is shutting down.
    Ended(String),
}

impl ReplError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ReplError {
        let what = what.into();
        move |source| ReplError::Io { what, source }
    }
}

impl fmt::Display for ReplError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplError::Io { what, source } => write!(f, "{what}: {source}"),
            ReplError::Protocol(m) | ReplError::Writer(m) | ReplError::Ended(m) => f.write_str(m),
            ReplError::Refused(m) | ReplError::Connect(m) => f.write_str(m),
            ReplError::Log(e) => write!(f, "reading the log: {e}"),
        }
    }
}

impl std::error::Error for ReplError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplError::Io { source, .. } => Some(source),
            ReplError::Log(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_case_says_what_it_is_about() {
        let e = ReplError::io("reading from the master")(io::Error::other("boom"));
        assert_eq!(e.to_string(), "reading from the master: boom");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            ReplError::Refused("AUTH refused: ERR NOAUTH".into()).to_string(),
            "AUTH refused: ERR NOAUTH"
        );
    }
}
