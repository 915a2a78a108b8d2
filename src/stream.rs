//! A connection's byte stream: a plain TCP socket or, with the `tls`
//! feature, a TLS session over one. The wire (the server's
//! side of a client) reads and writes through it; socket options
//! (timeouts, nonblocking, shutdown) always act on the TCP socket below.
//!
//! Owned by one connection thread. A TLS session is split in two halves
//! ([`Stream::split`]) whose rustls state sits behind a mutex shared with
//! the thread that encrypts the connection's replies (a
//! [`crate::tls::Sealer`]) or, on a replication sender, with its ACK
//! reader; a plain socket has no lock.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

pub enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::ServerStream>),
    /// A TLS session in two halves (a client connection's, so that the
    /// thread releasing the writer's answers can encrypt them too).
    #[cfg(feature = "tls")]
    TlsSplit(Box<(crate::tls::SharedWriter, crate::tls::SharedReader)>),
    /// The sending half of a TLS session whose receiving half another
    /// thread holds (a replication sender's ACK reader): write only.
    #[cfg(feature = "tls")]
    TlsSent(Box<crate::tls::SharedWriter>),
}

impl Stream {
    /// The TCP socket under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_ref(),
            #[cfg(feature = "tls")]
            Stream::TlsSplit(s) => s.0.tcp(),
            #[cfg(feature = "tls")]
            Stream::TlsSent(s) => s.tcp(),
        }
    }

    /// A TLS session made into two halves ([`Stream::TlsSplit`]); any
    /// other stream as it is.
    pub fn split(self) -> io::Result<Stream> {
        match self {
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                let read_sock = s.get_ref().try_clone()?;
                let (w, r) = crate::tls::split(*s, read_sock);
                Ok(Stream::TlsSplit(Box::new((w, r))))
            }
            other => Ok(other),
        }
    }

    /// What encrypts this stream's bytes for another thread: `Some` for a
    /// split TLS session.
    #[cfg(feature = "tls")]
    pub fn sealer(&self) -> Option<crate::tls::Sealer> {
        match self {
            Stream::TlsSplit(s) => Some(s.0.sealer()),
            Stream::TlsSent(s) => Some(s.sealer()),
            _ => None,
        }
    }

    /// True for a TLS session: its bytes must go through the session, never
    /// straight to the socket's descriptor.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// Ends the connection both ways. A TLS session first says so
    /// (close_notify, best effort) so the peer can tell an end from a cut.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
        #[cfg(feature = "tls")]
        match self {
            Stream::TlsSent(s) => return s.shutdown(how),
            Stream::TlsSplit(s) => return s.0.shutdown(how),
            _ => {}
        }
        self.tcp().shutdown(how)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::TlsSplit(s) => s.1.read(buf),
            // The other thread reads this session.
            #[cfg(feature = "tls")]
            Stream::TlsSent(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this TLS session is read by another thread",
            )),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::TlsSplit(s) => s.0.write(buf),
            #[cfg(feature = "tls")]
            Stream::TlsSent(s) => s.write(buf),
        }
    }

    /// For TLS, sends what the session still holds: rustls's `write` does
    /// not report a socket error (or a write timeout), `flush` does.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::TlsSplit(s) => s.0.flush(),
            #[cfg(feature = "tls")]
            Stream::TlsSent(s) => s.flush(),
        }
    }
}

/// Which listener a connection came in on.
#[derive(Clone)]
pub enum Port {
    /// The plain port; `tls_port` is the TLS one, if any, named to a TLS
    /// client that came here by mistake.
    Plain { tls_port: Option<u16> },
    /// The TLS port: the connection's thread runs the handshake first.
    #[cfg(feature = "tls")]
    Tls(std::sync::Arc<crate::tls::ServerTls>),
}

impl Port {
    /// The connection's stream, once its TLS handshake (if any) is done;
    /// `None` after logging why it failed (one line: a plain client on
    /// the TLS port, an unknown client certificate, ...).
    pub fn open(&self, tcp: TcpStream, peer: &str) -> Option<Stream> {
        // Named only in the TLS arm's log line.
        let _ = peer;
        match self {
            Port::Plain { .. } => Some(Stream::Plain(tcp)),
            #[cfg(feature = "tls")]
            Port::Tls(tls) => match tls.accept(tcp) {
                Ok(s) => Some(Stream::Tls(Box::new(s))),
                Err(why) => {
                    log::info!("{peer}: TLS handshake failed: {why}; closed");
                    None
                }
            },
        }
    }

    /// What a TLS client on the plain port is told.
    pub fn tls_hint(&self) -> String {
        match self {
            Port::Plain {
                tls_port: Some(port),
            } => format!("this port speaks plain text; use the TLS port {port}"),
            _ => "this port speaks plain text, not TLS".into(),
        }
    }
}
