//! The socket under a [`super::Conn`] and what comes with opening one:
//! the TCP connect, the TLS handshake (feature `tls`; NATS starts TLS
//! after the server's plain-text INFO), the INFO fields we keep, and the
//! random part of the reply inbox. Used only by `conn.rs`, on the
//! caller's thread.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::json::{self, Json};
use super::options::Options;
use super::{NatsError, Result};

/// The socket: plain, or a TLS session over it.
pub(crate) enum Io {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::ClientStream>),
}

impl Io {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            #[cfg(feature = "tls")]
            Io::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Io::Tls(s) => s.flush(),
        }
    }
}

/// What the server's INFO told us.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub(crate) max_payload: usize,
    pub(crate) headers: bool,
    pub(crate) server_name: String,
    pub(crate) tls_required: bool,
    pub(crate) tls_available: bool,
}

impl ServerInfo {
    pub(crate) fn parse(text: &str, server: &str) -> Result<ServerInfo> {
        let v = json::parse(text.as_bytes()).map_err(|e| NatsError::Protocol {
            server: server.to_string(),
            reason: format!("INFO: {e}"),
        })?;
        let flag = |k: &str| v.get(k).and_then(Json::as_bool).unwrap_or(false);
        let name = v
            .get("server_name")
            .or_else(|| v.get("server_id"))
            .and_then(Json::as_str)
            .unwrap_or("");
        Ok(ServerInfo {
            // NATS' default when a server does not say.
            max_payload: v
                .get("max_payload")
                .and_then(Json::as_u64)
                .map_or(1024 * 1024, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            headers: flag("headers"),
            server_name: name.to_string(),
            tls_required: flag("tls_required"),
            tls_available: flag("tls_available"),
        })
    }
}

/// 32 hex digits nobody else will pick: std's hasher keys are random per
/// process, mixed with the time and our pid.
pub(crate) fn random_token() -> String {
    let mut out = String::new();
    for i in 0..2u8 {
        let mut h = RandomState::new().build_hasher();
        h.write_u8(i);
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A TCP connection to `server` (`HOST:PORT`, each address it resolves
/// to tried in turn), with Nagle off and a write timeout.
pub(crate) fn tcp_connect(server: &str, timeout: Duration) -> Result<TcpStream> {
    let disconnected = |reason: String| NatsError::Disconnected {
        server: server.to_string(),
        reason,
    };
    let addrs = server
        .to_socket_addrs()
        .map_err(|e| disconnected(format!("cannot resolve: {e}")))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(tcp) => {
                tcp.set_nodelay(true)
                    .and_then(|()| tcp.set_write_timeout(Some(timeout)))
                    .map_err(|e| disconnected(e.to_string()))?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(disconnected(last.to_string()))
}

/// The TLS handshake over `tcp` (after the server's plain-text INFO),
/// verifying the server against `opts.tls_ca`, under the socket's timeouts.
#[cfg(feature = "tls")]
pub(crate) fn start_tls(tcp: TcpStream, opts: &Options, server: &str) -> Result<Io> {
    let tls_err = |reason: String| NatsError::Tls {
        server: server.to_string(),
        reason,
    };
    let Some(ca) = &opts.tls_ca else {
        return Err(tls_err(
            "the server requires TLS: set tls_ca to the CA that signed its certificate".into(),
        ));
    };
    let identity = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => return Err(tls_err("tls_cert and tls_key go together".into())),
    };
    let config = crate::tls::client_config(ca, identity).map_err(&tls_err)?;
    tcp.set_read_timeout(Some(opts.timeout))
        .map_err(|e| tls_err(e.to_string()))?;
    let host = crate::tls::host_of(server);
    let stream = crate::tls::connect(config, host, tcp).map_err(|e| tls_err(e.to_string()))?;
    Ok(Io::Tls(Box::new(stream)))
}

#[cfg(not(feature = "tls"))]
pub(crate) fn start_tls(_tcp: TcpStream, _opts: &Options, server: &str) -> Result<Io> {
    Err(NatsError::Tls {
        server: server.to_string(),
        reason: "TLS needed but smss was built without the `tls` feature".into(),
    })
}
