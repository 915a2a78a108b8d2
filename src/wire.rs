//! Buffered frame I/O of one client socket: the input buffer and the
//! requests parsed from it, the output buffer of encoded replies, and the
//! reads (blocking, with a deadline, or a nonblocking poll) that refill it.
//! A payload request the caller says it will refuse is not buffered: its
//! payload is dropped as it arrives ([`crate::protocol::Skip`]), so however
//! much it declares, the buffer stays at its read size.
//!
//! Knows the protocol's framing but nothing of the broker: what a request
//! means is the caller's business. Runs on the socket's connection thread,
//! which owns it alone; it touches no channel, and no lock but a split TLS
//! session's (see [`crate::stream`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

use crate::stream::Stream;
use std::time::{Duration, Instant};

use crate::protocol::{Limits, MAX_LINE_BYTES, Parsed, ProtoError, Skip, next_request};

/// Flush replies once this much output is pending, even mid-pipeline.
const OUT_FLUSH_BYTES: usize = 64 << 10;
/// Bytes read from the socket at a time: small while the client sends
/// small requests (an idle connection then costs a few KiB), doubling up to
/// the maximum while reads keep filling the buffer.
const MIN_READ: usize = 4 << 10;
const READ_CHUNK: usize = 64 << 10;
/// After a framing error, how long to drain the client's input before
/// closing (closing with unread input makes Linux send RST, losing the ERR).
const FATAL_DRAIN: Duration = Duration::from_millis(200);

/// What the caller should do after handling a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// What a poll or a read with a deadline brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// More bytes are in the input buffer.
    Data,
    /// The client hung up.
    Closed,
    /// Nothing arrived (the poll found nothing, or the deadline passed).
    Nothing,
}

pub struct Wire {
    stream: Stream,
    limits: Limits,
    inbuf: Vec<u8>,
    /// First unconsumed byte of `inbuf`.
    start: usize,
    /// A refused payload request being dropped as it arrives.
    skip: Option<Skip>,
    /// Encoded replies waiting for [`Wire::flush`]; callers append to it
    /// with the `protocol::encode_*` functions.
    pub out: Vec<u8>,
    read_size: usize,
}

impl Wire {
    /// Takes a socket already set up (timeouts, nodelay) by the caller.
    pub fn new(stream: TcpStream, limits: Limits) -> Wire {
        Wire::over(Stream::Plain(stream), limits)
    }

    /// Like [`Wire::new`], over a plain socket or a TLS session.
    pub fn over(stream: Stream, limits: Limits) -> Wire {
        Wire {
            stream,
            limits,
            inbuf: Vec::new(),
            start: 0,
            skip: None,
            out: Vec::new(),
            read_size: MIN_READ,
        }
    }

    /// Parses the next request from the unread input and consumes its bytes.
    /// With `refuse`, a PUB, MPUB or DPUB is not buffered but dropped as it
    /// arrives, and answered with `refuse` (or its own BADREQ when malformed)
    /// as a `Parsed::Error`; meanwhile `NeedMore` consumes what it dropped.
    pub fn next_request(&mut self, refuse: Option<&ProtoError>) -> Parsed {
        let unread = self.inbuf.get(self.start..).unwrap_or_default();
        let (used, parsed) = next_request(&mut self.skip, unread, &self.limits, refuse);
        self.start += used;
        parsed
    }

    /// Takes one whole input line (without its line end), if one has
    /// arrived; `Err` when a line grows past the line limit. For peers that
    /// speak frames rather than requests (a slave's ACKs to its sender).
    pub fn take_line(&mut self) -> Result<Option<String>, String> {
        let unread = &self.inbuf[self.start..];
        let Some(nl) = unread.iter().position(|&b| b == b'\n') else {
            if unread.len() > MAX_LINE_BYTES {
                return Err(format!("a line of over {MAX_LINE_BYTES} bytes"));
            }
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&unread[..nl])
            .trim_end()
            .to_string();
        self.start += nl + 1;
        Ok(Some(line))
    }

    /// Ends the connection both ways (a replication sender's last step).
    pub fn shutdown(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// A reading handle for a second thread (a replication sender's ACK
    /// reader) while this wire goes on writing, and the socket under both
    /// (read timeout, shutdown). A TLS session is split in two
    /// ([`crate::tls::split`]); the wire then only writes.
    pub fn reading_half(&mut self) -> io::Result<(Box<dyn Read + Send>, TcpStream)> {
        // Every clone first: once a session is taken apart, nothing may fail.
        let tcp = self.stream.tcp().try_clone()?;
        let reader = tcp.try_clone()?;
        let spare = tcp.try_clone()?;
        match std::mem::replace(&mut self.stream, Stream::Plain(spare)) {
            Stream::Plain(s) => {
                self.stream = Stream::Plain(s);
                Ok((Box::new(reader), tcp))
            }
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                let (w, r) = crate::tls::split(*s, reader);
                self.stream = Stream::TlsSent(Box::new(w));
                Ok((Box::new(r), tcp))
            }
            #[cfg(feature = "tls")]
            Stream::TlsSplit(halves) => {
                let (w, r) = *halves;
                self.stream = Stream::TlsSent(Box::new(w));
                Ok((Box::new(r), tcp))
            }
            #[cfg(feature = "tls")]
            sent @ Stream::TlsSent(_) => {
                self.stream = sent;
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this TLS session was split already",
                ))
            }
        }
    }

    /// The socket's descriptor, for a thread that writes replies to it
    /// while this connection lives ([`crate::reply_sink`]); `None` for a
    /// TLS session that is not split ([`Stream::split`]), whose bytes only
    /// this thread can encrypt.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.stream.tcp());
        match &self.stream {
            Stream::Plain(_) => Some(fd),
            #[cfg(feature = "tls")]
            Stream::TlsSplit(_) => Some(fd),
            #[cfg(feature = "tls")]
            _ => None,
        }
    }

    /// What encrypts this connection's bytes for the thread that writes
    /// its replies: `Some` for a split TLS session.
    #[cfg(feature = "tls")]
    pub fn sealer(&self) -> Option<crate::tls::Sealer> {
        self.stream.sealer()
    }

    /// True for a TLS session.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// True when the unread input starts like a TLS ClientHello (a
    /// handshake record, TLS major version 3): a TLS client on the plain port.
    /// No request starts with that control byte; a payload being dropped
    /// (`skip`) may, so it does not count.
    pub fn looks_like_tls(&self) -> bool {
        self.skip.is_none() && self.inbuf.get(self.start..self.start + 2) == Some(&[0x16, 0x03][..])
    }

    /// True once enough replies are queued to flush mid-pipeline.
    pub fn out_full(&self) -> bool {
        self.out.len() >= OUT_FLUSH_BYTES
    }

    /// Blocks for more input. `Ok(0)` means the client hung up.
    pub fn read(&mut self) -> io::Result<usize> {
        self.fill(false)
    }

    /// Reads what has already arrived, without blocking.
    pub fn poll(&mut self) -> io::Result<Input> {
        match self.fill(true) {
            Ok(0) => Ok(Input::Closed),
            Ok(_) => Ok(Input::Data),
            Err(e) if is_timeout(&e) => Ok(Input::Nothing),
            Err(e) => Err(e),
        }
    }

    /// Blocks for more input until `deadline`.
    pub fn read_until(&mut self, deadline: Instant) -> io::Result<Input> {
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(Input::Nothing);
            };
            if left.is_zero() {
                return Ok(Input::Nothing);
            }
            self.stream.tcp().set_read_timeout(Some(left))?;
            let res = self.fill(false);
            self.stream.tcp().set_read_timeout(None)?;
            match res {
                Ok(0) => return Ok(Input::Closed),
                Ok(_) => return Ok(Input::Data),
                // The timeout may fire a little early: wait out the rest.
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads more input. `Ok(0)` means the client hung up.
    fn fill(&mut self, nonblocking: bool) -> io::Result<usize> {
        if self.start == self.inbuf.len() {
            self.inbuf.clear();
            self.start = 0;
            if self.inbuf.capacity() > 4 * READ_CHUNK {
                // Give back the memory of a large payload.
                self.inbuf.shrink_to(READ_CHUNK);
            }
        } else if self.start > 0 && self.start >= self.inbuf.len() / 2 {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
        let old = self.inbuf.len();
        self.inbuf.resize(old + self.read_size, 0);
        if nonblocking {
            self.stream.tcp().set_nonblocking(true)?;
        }
        let res = loop {
            match self.stream.read(&mut self.inbuf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        if nonblocking {
            self.stream.tcp().set_nonblocking(false)?;
        }
        match res {
            Ok(n) => {
                self.inbuf.truncate(old + n);
                self.read_size = if n == self.read_size {
                    (self.read_size * 2).min(READ_CHUNK)
                } else {
                    MIN_READ.max(self.read_size / 2)
                };
                Ok(n)
            }
            Err(e) => {
                self.inbuf.truncate(old);
                Err(e)
            }
        }
    }

    /// Writes every queued reply (bounded by the socket's write timeout).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.stream.flush()?;
            self.out.clear();
            if self.out.capacity() > 4 * OUT_FLUSH_BYTES {
                self.out.shrink_to(OUT_FLUSH_BYTES);
            }
        }
        Ok(())
    }

    /// Writes what is queued, then `bytes` straight from the caller's
    /// buffer (a subscription's batch chunk), bounded by the write timeout.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush()?;
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Gives back the buffers' memory beyond a small read buffer (a
    /// connection going idle in a subscription). Unread input is kept.
    pub fn release_idle(&mut self) {
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        if self.start == self.inbuf.len() {
            self.inbuf = Vec::new();
            self.start = 0;
            self.read_size = MIN_READ;
        }
    }

    /// After the ERR of a framing error is flushed: drains input briefly so
    /// the close does not RST the ERR away.
    pub fn close_after_fatal(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + FATAL_DRAIN;
        let mut sink = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || self.stream.tcp().set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// A nonblocking read found nothing, or a read timeout passed.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::protocol::Request;

    const LIM: Limits = Limits {
        max_payload: 1 << 20,
        max_batch: 100,
        max_batch_bytes: 1 << 30,
    };

    /// A connected (client, server-side Wire) pair on localhost.
    fn pair() -> io::Result<(TcpStream, Wire)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        Ok((client, Wire::new(server, LIM)))
    }

    /// The next request, reading (with a generous deadline) until it is whole.
    fn next(wire: &mut Wire) -> io::Result<Parsed> {
        loop {
            match wire.next_request(None) {
                Parsed::NeedMore => {
                    let got = wire.read_until(Instant::now() + Duration::from_secs(5))?;
                    assert_eq!(got, Input::Data);
                }
                parsed => return Ok(parsed),
            }
        }
    }

    #[test]
    fn requests_poll_deadline_and_hang_up() -> io::Result<()> {
        let (mut client, mut wire) = pair()?;
        assert_eq!(wire.next_request(None), Parsed::NeedMore);
        assert_eq!(wire.poll()?, Input::Nothing);
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(wire.read_until(soon)?, Input::Nothing);
        assert!(Instant::now() >= soon);

        client.write_all(b"PING\r\nFOO\r\nPU")?;
        assert!(matches!(
            next(&mut wire)?,
            Parsed::Request {
                req: Request::Ping,
                consumed: 6
            }
        ));
        assert!(matches!(
            next(&mut wire)?,
            Parsed::Error { consumed: 5, .. }
        ));
        // The PU is kept until the rest of the request arrives.
        assert_eq!(wire.next_request(None), Parsed::NeedMore);
        client.write_all(b"B t 1\r\nx\r\n")?;
        assert!(matches!(
            next(&mut wire)?,
            Parsed::Request {
                req: Request::Pub { .. },
                consumed: 12
            }
        ));

        crate::protocol::encode_line(&mut wire.out, "PONG");
        assert!(!wire.out_full());
        wire.flush()?;
        let mut got = [0u8; 6];
        client.read_exact(&mut got)?;
        assert_eq!(&got, b"PONG\r\n");

        drop(client);
        assert_eq!(
            wire.read_until(Instant::now() + Duration::from_secs(5))?,
            Input::Closed
        );
        Ok(())
    }
}
