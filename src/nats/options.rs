//! [`Options`]: how a [`super::Conn`] connects (servers, credentials, TLS
//! files, name, timeout). Apart from the connection so that the socket
//! setup (`socket.rs`) and the connection both read it without needing
//! each other.

use std::path::PathBuf;
use std::time::Duration;

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// `HOST:PORT` of each server; [`super::Conn::connect`] takes the first that
    /// answers, [`super::Conn::reconnect`] the next ones in turn.
    pub servers: Vec<String>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    /// Verify the server against this CA (PEM). Setting it asks for TLS;
    /// a server whose INFO says `tls_required` needs it.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The connection's name, shown by the server's monitoring.
    pub name: Option<String>,
    /// Connect, handshake and write timeout; also how long a JetStream
    /// API call waits for its reply (see [`super::JetStream::new`]).
    pub timeout: Duration,
}

impl Options {
    pub fn new(servers: &[&str]) -> Options {
        Options {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            user: None,
            pass: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            name: None,
            timeout: Duration::from_secs(5),
        }
    }
}
