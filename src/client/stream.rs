//! The client's byte stream: a plain socket, or (feature `tls`) a TLS
//! session over one. The client reads through a `BufReader` and writes
//! through a `BufWriter`, each holding one [`Io`]; for TLS both halves share
//! the one session behind a mutex. The client is used by one thread at a
//! time and never reads and writes at once, so the lock is never contended.

use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(feature = "tls")]
use std::sync::{Arc, Mutex};

pub enum Io {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Arc<Mutex<crate::tls::ClientStream>>),
}

impl Io {
    /// A second handle on the same stream (the writing half).
    pub fn try_clone(&self) -> io::Result<Io> {
        match self {
            Io::Plain(s) => s.try_clone().map(Io::Plain),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Ok(Io::Tls(Arc::clone(s))),
        }
    }

    pub fn read_timeout(&self) -> io::Result<Option<std::time::Duration>> {
        match self {
            Io::Plain(s) => s.read_timeout(),
            #[cfg(feature = "tls")]
            Io::Tls(s) => lock(s).get_ref().read_timeout(),
        }
    }

    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.set_read_timeout(t),
            #[cfg(feature = "tls")]
            Io::Tls(s) => lock(s).get_ref().set_read_timeout(t),
        }
    }
}

#[cfg(feature = "tls")]
fn lock(
    s: &Mutex<crate::tls::ClientStream>,
) -> std::sync::MutexGuard<'_, crate::tls::ClientStream> {
    // A panic while holding it leaves a session at worst mid-record: the
    // next read or write reports that as an error.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => lock(s).read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => lock(s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Io::Tls(s) => lock(s).flush(),
        }
    }
}
