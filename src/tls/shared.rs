//! A server-side TLS session written by one thread and read by another: a
//! replication sender streams records to its slave while its ACK reader
//! waits for the slave's `ACK` lines. `StreamOwned` cannot be split, and a
//! lock held across a blocking read would stop the sender for as long as
//! the slave is quiet. So the socket is cloned and only the session's
//! state is shared: each side does its blocking socket I/O outside the
//! lock and takes the lock only to encrypt or decrypt what it has.
//!
//! A client connection's session is split the same way, so that the
//! thread releasing the writer's answers can encrypt them ([`Sealer`]) and
//! send them on the socket while the connection thread reads; the order
//! rules of [`crate::reply_sink`] make sure only one of them encrypts and
//! sends at a time.
//!
//! Owns [`split`], its two halves and the [`Sealer`]. One sender at a
//! time and one reader: the sender takes what the session has to send under
//! the lock (its records, and anything the reader's side queued, such as a
//! key update answer) and sends it in that order, so nothing is
//! reordered.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::ServerConnection;

use super::ServerStream;

/// Raw bytes read from the socket at a time by the reader.
const RAW_READ: usize = 16 << 10;

type Session = Arc<Mutex<ServerConnection>>;

fn lock(s: &Mutex<ServerConnection>) -> MutexGuard<'_, ServerConnection> {
    // A panic while holding it leaves the session at worst mid-record: the
    // peer sees a bad record and ends the link, which then reconnects.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending half; see the module docs.
pub struct SharedWriter {
    session: Session,
    tcp: TcpStream,
    /// Encrypted bytes taken from the session, reused between writes.
    tls: Vec<u8>,
}

/// The receiving half; see the module docs.
pub struct SharedReader {
    session: Session,
    tcp: TcpStream,
    raw: Vec<u8>,
    /// `raw[start..end]`: read from the socket, not yet given to the session.
    start: usize,
    end: usize,
}

/// Splits an established session into its two halves; `read_sock` is a
/// clone of its socket (made first, so that nothing here can fail and
/// leave the session half taken apart).
pub fn split(stream: ServerStream, read_sock: TcpStream) -> (SharedWriter, SharedReader) {
    let rustls::StreamOwned { conn, sock } = stream;
    let session = Arc::new(Mutex::new(conn));
    let writer = SharedWriter {
        session: Arc::clone(&session),
        tcp: sock,
        tls: Vec::new(),
    };
    let reader = SharedReader {
        session,
        tcp: read_sock,
        raw: vec![0; RAW_READ],
        start: 0,
        end: 0,
    };
    (writer, reader)
}

/// Encrypts plaintext into the session's records, for a thread that sends
/// them itself (see the module docs).
#[derive(Clone)]
pub struct Sealer(Session);

impl Sealer {
    /// Appends the TLS records carrying `plain` (and anything else the
    /// session has to send first) to `out`.
    pub fn seal(&self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        seal(&self.0, plain, out)
    }
}

/// Encrypts `plain` under the session's lock, appending the records (and
/// whatever the session had to send before them) to `out`. The session
/// takes only so much plaintext at a time (its buffer limit), so it is
/// fed in turns, its records drained into `out` between them.
fn seal(session: &Mutex<ServerConnection>, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut s = lock(session);
    let mut rest = plain;
    loop {
        while s.wants_write() {
            s.write_tls(out)?;
        }
        if rest.is_empty() {
            return Ok(());
        }
        let n = s.writer().write(rest)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the TLS session takes no more plaintext",
            ));
        }
        rest = &rest[n..];
    }
}

impl SharedWriter {
    /// A [`Sealer`] of this session.
    pub fn sealer(&self) -> Sealer {
        Sealer(Arc::clone(&self.session))
    }

    /// The socket under the session (timeouts, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Says goodbye (close_notify, best effort), then ends the socket.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        {
            let mut s = lock(&self.session);
            s.send_close_notify();
            self.tls.clear();
            while s.wants_write() {
                if s.write_tls(&mut self.tls).is_err() {
                    break;
                }
            }
        }
        let _ = self.tcp.write_all(&self.tls);
        self.tcp.shutdown(how)
    }
}

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tls.clear();
        seal(&self.session, buf, &mut self.tls)?;
        // Outside the lock: a slow peer blocks only this thread, up to the
        // socket's write timeout.
        self.tcp.write_all(&self.tls)?;
        Ok(buf.len())
    }

    /// Every `write` has sent its bytes already.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SharedReader {
    /// The socket under the session (read timeout, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl Read for SharedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut s = lock(&self.session);
                match s.reader().read(out) {
                    // Ok(0) is the peer's close_notify: an end like EOF.
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.start < self.end {
                    // Bytes the session did not take last time (its buffer
                    // was full): give them now, then look for plaintext.
                    let mut pending = &self.raw[self.start..self.end];
                    let used = s.read_tls(&mut pending)?;
                    self.start += used;
                    s.process_new_packets().map_err(io::Error::other)?;
                    continue;
                }
            }
            // Outside the lock: waiting for the peer must not stop the writer.
            let n = self.tcp.read(&mut self.raw)?;
            if n == 0 {
                return Ok(0);
            }
            (self.start, self.end) = (0, n);
        }
    }
}

/// A TLS session over loopback, both ends handshaken: (server, client).
/// For tests of code that runs over a session.
#[cfg(test)]
pub(crate) fn test_pair(dir: &std::path::Path) -> (ServerStream, super::ClientStream) {
    let (server_cfg, client_cfg) = tests::configs(dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = std::thread::spawn(move || {
        let tcp = TcpStream::connect(addr).expect("connect");
        super::connect(client_cfg, "127.0.0.1", tcp).expect("client handshake")
    });
    let (mut sock, _) = listener.accept().expect("accept");
    let mut conn = ServerConnection::new(server_cfg).expect("session");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("server handshake");
    }
    let client = client.join().expect("client thread");
    (rustls::StreamOwned::new(conn, sock), client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A CA-signed server certificate for 127.0.0.1 and a client config
    /// trusting that CA, written to `dir`.
    pub(super) fn configs(
        dir: &std::path::Path,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("cert");
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let cfg = crate::config::TlsConfig {
            cert: Some(write("cert.pem", cert.pem())),
            key: Some(write("key.pem", key.serialize_pem())),
            ..Default::default()
        };
        let (server, _) = super::super::server_config(&cfg).expect("server config");
        let client = super::super::client_config(&write("ca.pem", ca_cert.pem()), None)
            .expect("client config");
        (Arc::new(server), client)
    }

    /// Both halves used at once from two threads: the writer streams while
    /// the reader waits for, and gets, every line the peer sends.
    #[test]
    fn halves_work_from_two_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server_cfg, client_cfg) = configs(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = std::thread::spawn(move || {
            let tcp = TcpStream::connect(addr).expect("connect");
            let mut c = super::super::connect(client_cfg, "127.0.0.1", tcp).expect("handshake");
            let mut got = vec![0u8; 300_000];
            c.read_exact(&mut got).expect("read the stream");
            for i in 0..100 {
                c.write_all(format!("ACK {i}\n").as_bytes()).expect("ack");
            }
            c.flush().expect("flush");
            got
        });
        let (tcp, _) = listener.accept().expect("accept");
        let mut conn = ServerConnection::new(server_cfg).expect("session");
        let mut sock = tcp;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).expect("handshake");
        }
        let read_sock = sock.try_clone().expect("clone");
        let (mut w, mut r) = split(rustls::StreamOwned::new(conn, sock), read_sock);
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let mut buf = [0u8; 64];
            while !text.ends_with("ACK 99\n") {
                let n = r.read(&mut buf).expect("read");
                assert!(n > 0, "ended early after {text:?}");
                text.push_str(std::str::from_utf8(&buf[..n]).expect("utf8"));
            }
            text
        });
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(10_000) {
            w.write_all(chunk).expect("write");
        }
        assert_eq!(peer.join().expect("peer"), data);
        let text = reader.join().expect("reader");
        assert_eq!(text.lines().count(), 100);
        assert!(text.starts_with("ACK 0\nACK 1\n"));
    }

    /// A plaintext far over the session's buffer limit (a backlog of
    /// replies the releasing thread encrypts at once) is sealed whole.
    #[test]
    fn a_sealer_takes_more_than_the_sessions_buffer_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, client) = test_pair(dir.path());
        let read_sock = server.get_ref().try_clone().expect("clone");
        let (w, _r) = split(server, read_sock);
        let plain: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut records = Vec::new();
        w.sealer().seal(&plain, &mut records).expect("seal");
        let want = plain.clone();
        let reader = std::thread::spawn(move || {
            let mut c = client;
            let mut got = vec![0u8; want.len()];
            c.read_exact(&mut got).expect("read");
            got == want
        });
        let mut tcp = w.tcp().try_clone().expect("clone");
        tcp.write_all(&records).expect("send the records");
        assert!(
            reader.join().expect("reader"),
            "the plaintext came back whole"
        );
    }
}
