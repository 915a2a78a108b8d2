//! How this server reaches the other one of its pair: the slave's link to
//! its master and a master's look at its peer. Plain TCP, or with
//! `replication.tls` a TLS session that verifies the master's certificate
//! against `replication.tlsCa` (for the host part of its address) and,
//! with `replication.tlsCert`/`tlsKey`, presents this server's own.
//!
//! Owns [`Dialer`], made once at start (so a missing or unreadable file
//! stops the start with its name, not every reconnect) and shared by the
//! `repl-receiver` thread and the start-up look at the peer.

#[cfg(feature = "tls")]
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::client::stream::Io;
use crate::config::ReplicationConfig;

/// Connects to the master or peer; see the module docs.
pub struct Dialer {
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Dialer {
    /// Reads the TLS files the section names. `Err` names the file or the
    /// missing feature.
    pub fn from_config(c: &ReplicationConfig) -> Result<Dialer, String> {
        #[cfg(feature = "tls")]
        {
            let tls = match (&c.tls, &c.tls_ca) {
                (true, Some(ca)) => {
                    let identity = c.tls_cert.as_deref().zip(c.tls_key.as_deref());
                    Some(crate::tls::client_config(ca, identity)?)
                }
                // The config's own check refuses tls without tlsCa.
                (true, None) => return Err("replication.tls needs replication.tlsCa".into()),
                (false, _) => None,
            };
            Ok(Dialer { tls })
        }
        #[cfg(not(feature = "tls"))]
        {
            if c.tls {
                return Err(
                    "this smss was built without TLS (cargo feature `tls`): remove \
                            replication.tls from the config, or build with the default features"
                        .into(),
                );
            }
            Ok(Dialer {})
        }
    }

    /// True when links are TLS sessions.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Connects to `addr` within `connect`, with `io` as the socket's read
    /// and write timeouts, and runs the TLS handshake when configured.
    /// Returns the stream and the socket under it (for a non-blocking
    /// look). `Err` says which step failed.
    pub fn connect(
        &self,
        addr: &str,
        connect: Duration,
        io: Duration,
    ) -> Result<(Io, TcpStream), String> {
        let a: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|e| format!("resolving {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} resolves to no address"))?;
        let s = TcpStream::connect_timeout(&a, connect)
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let tcp = s
            .set_read_timeout(Some(io))
            .and_then(|_| s.set_write_timeout(Some(io)))
            .and_then(|_| s.set_nodelay(true))
            .and_then(|_| s.try_clone())
            .map_err(|e| format!("setting up the socket to {addr}: {e}"))?;
        Ok((self.open(addr, s)?, tcp))
    }

    #[cfg(feature = "tls")]
    fn open(&self, addr: &str, s: TcpStream) -> Result<Io, String> {
        let Some(cfg) = &self.tls else {
            return Ok(Io::Plain(s));
        };
        let host = crate::tls::host_of(addr);
        let tls = crate::tls::connect(std::sync::Arc::clone(cfg), host, s)
            .map_err(|e| tls_error(addr, &e))?;
        Ok(Io::Tls(std::sync::Arc::new(std::sync::Mutex::new(tls))))
    }

    #[cfg(not(feature = "tls"))]
    fn open(&self, _addr: &str, s: TcpStream) -> Result<Io, String> {
        Ok(Io::Plain(s))
    }
}

/// A failed handshake in words an operator can act on.
#[cfg(feature = "tls")]
fn tls_error(addr: &str, e: &io::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("InvalidContentType") || text.contains("corrupt message") {
        " (is that the master's plain port? replication.tls needs its TLS port)"
    } else if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        " (replication.tlsCa must be the CA that signed the master's certificate, for the host \
         in its address)"
    } else {
        ""
    };
    format!("TLS handshake with {addr}: {text}{hint}")
}
