//! A client connection's write replies, written to its socket by the thread
//! that releases the writer's batches ([`crate::storage::reply`]), so the
//! connection thread goes back to `read` right after handing a write over
//! instead of sleeping until its answer comes back.
//!
//! Order is kept by two rules: the releasing thread writes to the socket
//! only while the connection has writes in flight or replies the socket did
//! not take yet, and the connection writes to it only when it has neither
//! ([`SocketReplies::settle`] waits for that, and takes the leftovers into
//! the connection's own output, in front of what follows). The connection
//! sends its own output before it hands over a write
//! (`crate::connection`), so a read answered before a write goes out before
//! the write's `OK`.
//!
//! The socket is the connection's: [`SocketReplies::close`] is called before
//! it closes, and nothing is sent after that, so a reused fd number is never
//! written to. Sends never wait (`MSG_DONTWAIT`).
//!
//! Through TLS the releasing thread encrypts the replies with the
//! connection's session ([`crate::tls::Sealer`]: the session is split, the
//! connection thread reads through its other half) and sends the records;
//! records the socket did not take stay in `cipher`, and a connection that
//! settles sends them raw, before anything it encrypts itself. The same two
//! rules keep the records in the order they were encrypted.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::protocol::{encode_dup, encode_err, encode_ok};
use crate::stats::Stats;
use crate::storage::ops::ReplySink;
use crate::storage::ops::{WriteOk, WriteResult};
use crate::storage::view::Topic;
use crate::writer_handle::{self, Asked, CallError};

/// A write that publishes: its payload bytes and topic, for the byte
/// counters of `/metrics`.
pub struct Published {
    pub bytes: u64,
    pub topic: Option<Arc<Topic>>,
}

/// A write handed to the writer and not answered yet.
struct InFlight {
    /// When it was handed over (the publish-latency histogram).
    at: Instant,
    published: Option<Published>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first: answers come in request order.
    inflight: VecDeque<InFlight>,
    /// Encoded replies not sent yet, in order (plaintext).
    unsent: Vec<u8>,
    /// TLS records of replies, encrypted but not sent yet: they go before
    /// anything in `unsent`.
    cipher: Vec<u8>,
    /// A releaser holds this sink to flush (this batch, or again later
    /// because the socket would not take everything).
    queued: bool,
    /// The connection waits in [`SocketReplies::settle`].
    waiting: bool,
    /// The connection closes its socket: send nothing more.
    closed: bool,
    /// A releaser is sending taken-out bytes without the lock (which the
    /// connection thread needs meanwhile to hand over its next write).
    sending: bool,
}

/// One connection's replies; shared by the connection thread and the thread
/// that releases the writer's answers.
pub struct SocketReplies {
    /// `None` for a TLS session this thread cannot encrypt for (one not
    /// split, see [`crate::stream::Stream::split`]; connections split
    /// theirs): the replies then wait in `unsent` until
    /// [`SocketReplies::settle`] takes them.
    fd: Option<RawFd>,
    /// For a TLS connection: encrypts what is sent on `fd`.
    #[cfg(feature = "tls")]
    sealer: Option<crate::tls::Sealer>,
    broker: Arc<Broker>,
    inner: Mutex<Inner>,
    answered: Condvar,
}

impl SocketReplies {
    /// `fd`: the connection's socket, which stays open until
    /// [`SocketReplies::close`]; `None`: the connection sends the replies
    /// itself, after [`SocketReplies::settle`] (a TLS session that is not
    /// split).
    pub fn new(fd: Option<RawFd>, broker: Arc<Broker>) -> SocketReplies {
        SocketReplies {
            fd,
            #[cfg(feature = "tls")]
            sealer: None,
            broker,
            inner: Mutex::new(Inner::default()),
            answered: Condvar::new(),
        }
    }

    /// A TLS connection's sink: replies are encrypted with `sealer` before
    /// they are sent on the socket.
    #[cfg(feature = "tls")]
    pub fn sealed(mut self, sealer: Option<crate::tls::Sealer>) -> SocketReplies {
        self.sealer = sealer;
        self
    }

    /// The bytes to send: `cipher` (already records) then `unsent`,
    /// encrypted when the connection is TLS. `None` when the session
    /// failed to encrypt: the peer gets nothing more.
    fn take_outgoing(&self, g: &mut Inner) -> Option<Vec<u8>> {
        #[cfg(feature = "tls")]
        if let Some(sealer) = &self.sealer {
            let mut buf = std::mem::take(&mut g.cipher);
            let plain = std::mem::take(&mut g.unsent);
            if !plain.is_empty() && sealer.seal(&plain, &mut buf).is_err() {
                return None;
            }
            return Some(buf);
        }
        Some(std::mem::take(&mut g.unsent))
    }

    /// Keeps what the socket did not take, for the next flush or `settle`.
    fn keep_leftovers(&self, g: &mut Inner, buf: Vec<u8>) {
        #[cfg(feature = "tls")]
        if self.sealer.is_some() {
            g.cipher = buf;
            return;
        }
        g.unsent = buf;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves plain data: go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes handed over and not answered yet.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.lock().inflight.len()
    }

    /// A write is about to be handed to the writer (before it is sent, so
    /// its answer always finds it); returns how many are in flight with it.
    pub fn handing(&self, published: Option<Published>) -> usize {
        let mut g = self.lock();
        g.inflight.push_back(InFlight {
            at: Instant::now(),
            published,
        });
        g.inflight.len()
    }

    /// Waits while a releaser sends without the lock.
    fn wait<'a>(&self, g: MutexGuard<'a, Inner>, until: Instant) -> MutexGuard<'a, Inner> {
        let left = until.saturating_duration_since(Instant::now());
        match self.answered.wait_timeout(g, left) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        }
    }

    /// The write [`SocketReplies::handing`] announced was not sent after all.
    pub fn not_handed(&self) {
        self.lock().inflight.pop_back();
    }

    /// Waits until every write handed over is answered, then moves what the
    /// socket did not take yet into `out` (the connection sends it before
    /// anything else). `TimedOut` when an answer does not come within
    /// `patience`: the connection cannot keep its replies in order any more.
    pub fn settle(&self, out: &mut Vec<u8>, patience: Duration) -> io::Result<()> {
        let deadline = Instant::now() + patience;
        let mut g = self.lock();
        while !g.inflight.is_empty() || g.sending {
            if Instant::now() >= deadline {
                g.waiting = false;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the writer did not answer in time",
                ));
            }
            g.waiting = true;
            g = self.wait(g, deadline);
        }
        g.waiting = false;
        if !g.cipher.is_empty() {
            // TLS records the socket did not take: they go first, as they
            // are, before the plaintext this thread will encrypt.
            let cipher = std::mem::take(&mut g.cipher);
            self.send_blocking(&cipher)?;
        }
        if !g.unsent.is_empty() {
            out.append(&mut g.unsent);
        }
        Ok(())
    }

    /// Sends all of `buf`, waiting as the socket's write timeout allows
    /// (`settle`: this thread is the only sender now).
    fn send_blocking(&self, buf: &[u8]) -> io::Result<()> {
        match self.send_fd(buf, libc::MSG_NOSIGNAL) {
            (_, None) => Ok(()),
            (_, Some(e)) => Err(e),
        }
    }

    /// The connection is about to close its socket: waits out a send in
    /// progress (it never blocks), and no send starts after.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.unsent = Vec::new();
        g.cipher = Vec::new();
        while g.sending {
            g.waiting = true;
            g = self.wait(g, Instant::now() + Duration::from_secs(1));
        }
        g.waiting = false;
    }

    /// Sends `buf` without waiting; returns how much the socket took (all
    /// of it when the peer is gone: nothing more can reach it).
    fn send_now(&self, buf: &[u8]) -> usize {
        match self.send_fd(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            (sent, None) => sent,
            (sent, Some(e)) if e.kind() == io::ErrorKind::WouldBlock => sent,
            // The peer is gone: the connection thread sees it in `read`.
            (_, Some(_)) => buf.len(),
        }
    }

    /// Sends `buf` on the socket with `flags` until all of it went or an
    /// error other than an interruption stopped it: how much went, and that
    /// error. Nothing is sent without a socket.
    fn send_fd(&self, buf: &[u8], flags: libc::c_int) -> (usize, Option<io::Error>) {
        let Some(fd) = self.fd else {
            return (0, None);
        };
        let mut sent = 0;
        while sent < buf.len() {
            let rest = &buf[sent..];
            // SAFETY: `fd` is the connection's open socket: `close`, which
            // comes before the socket is closed, waits until no send is in
            // progress and no send starts after it (a blocking send runs on
            // the connection's own thread, which calls `close`); `rest` is a
            // live buffer of `rest.len()` bytes.
            let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), flags) };
            if n > 0 {
                sent += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return (sent, Some(err));
            }
        }
        (sent, None)
    }

    /// A publish was answered `OK`: the latency histogram and byte counters.
    fn count(&self, done: &InFlight) {
        let stats = &self.broker.stats;
        if let Some(p) = &done.published {
            stats.publish_seconds.observe(done.at.elapsed());
            Stats::add(&stats.published_bytes, p.bytes);
            if let Some(t) = &p.topic {
                Stats::add(&t.published_bytes, p.bytes);
            }
        }
    }
}

impl ReplySink for SocketReplies {
    fn answer(&self, res: WriteResult) -> bool {
        let mut g = self.lock();
        let done = g.inflight.pop_front();
        // A duplicate wrote nothing: its bytes are not counted again.
        let written =
            matches!(res, Ok(ref ok) if !matches!(ok, WriteOk::Dup(_) | WriteOk::DupRange(..)));
        if let (Some(done), true) = (&done, written) {
            self.count(done);
        }
        if !g.closed {
            match res {
                Ok(WriteOk::Id(id)) => encode_ok(&mut g.unsent, &[id]),
                Ok(WriteOk::Range(a, b)) => encode_ok(&mut g.unsent, &[a, b]),
                Ok(WriteOk::Dup(id)) => encode_dup(&mut g.unsent, &[id]),
                Ok(WriteOk::DupRange(a, b)) => encode_dup(&mut g.unsent, &[a, b]),
                Ok(WriteOk::Done | WriteOk::Plan(_)) => encode_ok(&mut g.unsent, &[]),
                Err(e) => {
                    let err = writer_handle::reply(&CallError::Write(e), Asked::Write);
                    encode_err(&mut g.unsent, &err);
                }
            }
        }
        if g.inflight.is_empty() && g.waiting {
            self.answered.notify_all();
        }
        let first = !g.queued && !g.unsent.is_empty();
        g.queued |= first;
        first
    }

    fn dropped(&self) {
        {
            let mut g = self.lock();
            g.inflight.pop_front();
            if !g.closed {
                let err = writer_handle::reply(&CallError::Gone, Asked::Write);
                encode_err(&mut g.unsent, &err);
            }
            if g.inflight.is_empty() && g.waiting {
                self.answered.notify_all();
            }
        }
        // No releaser holds this sink for it: send now. What the socket
        // does not take, a waiting connection takes itself.
        self.flush();
    }

    fn flush(&self) -> bool {
        let mut g = self.lock();
        if self.fd.is_none() {
            // The connection thread takes the replies in `settle`.
            g.queued = false;
            return true;
        }
        let pending = !g.unsent.is_empty() || !g.cipher.is_empty();
        if !g.closed && pending {
            // Sent without the lock: a send on loopback runs the peer's
            // receive path, too long to hold up the connection's next write.
            let Some(mut buf) = self.take_outgoing(&mut g) else {
                // The TLS session is broken: nothing can reach the peer,
                // whose connection thread sees the end in `read`.
                g.queued = false;
                return true;
            };
            g.sending = true;
            drop(g);
            let sent = self.send_now(&buf);
            g = self.lock();
            g.sending = false;
            buf.drain(..sent);
            // Only releasers add to `unsent`, and this is the one: it is
            // still empty, unless `close` emptied it for good.
            if !g.closed {
                self.keep_leftovers(&mut g, buf);
            }
            if g.waiting {
                self.answered.notify_all();
            }
        }
        // While the connection waits it takes the leftovers itself.
        let done = g.closed
            || (g.unsent.is_empty() && g.cipher.is_empty())
            || (g.inflight.is_empty() && g.waiting);
        g.queued = !done;
        done
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::config::Config;
    use crate::role::Role;
    use crate::storage::ops::{Reply, SinkTicket, WriteError};
    use crate::storage::reply::Releaser;

    fn sink(fd: RawFd) -> Arc<SocketReplies> {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let broker = Arc::new(Broker::new(Config::default(), Role::Master, tx, 4));
        Arc::new(SocketReplies::new(Some(fd), broker))
    }

    fn read_all(peer: &mut UnixStream, want: usize) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while got.len() < want {
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
        String::from_utf8(got).expect("utf8")
    }

    #[test]
    fn a_batch_goes_out_in_request_order_in_one_flush() {
        let (ours, mut peer) = UnixStream::pair().expect("pair");
        let s = sink(ours.as_raw_fd());
        for _ in 0..3 {
            s.handing(None);
        }
        let reply = || Reply::Sink(SinkTicket::new(s.clone()));
        let mut r = Releaser::default();
        r.release(vec![
            (reply(), Ok(WriteOk::Id(7))),
            (reply(), Err(WriteError::NoTopic("t".into()))),
            (reply(), Ok(WriteOk::Range(8, 9))),
        ]);
        assert_eq!(s.in_flight(), 0);
        let want = "OK 7\r\nERR NOTOPIC no topic t\r\nOK 8 9\r\n";
        assert_eq!(read_all(&mut peer, want.len()), want);
    }

    #[test]
    fn a_socket_that_takes_nothing_keeps_the_replies_until_it_does() {
        let (ours, mut peer) = UnixStream::pair().expect("pair");
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let s = sink(ours.as_raw_fd());
        let mut r = Releaser::default();
        // Far more than a socket buffer holds; nobody reads meanwhile, and
        // releasing never waits.
        let n = 200_000u64;
        let mut want = String::new();
        for id in 1..=n {
            s.handing(None);
            r.release(vec![(
                Reply::Sink(SinkTicket::new(s.clone())),
                Ok(WriteOk::Id(id)),
            )]);
            want.push_str(&format!("OK {id}\r\n"));
        }
        assert!(!s.lock().unsent.is_empty(), "the socket took everything");
        // The reader drains while the releaser retries: all of it, in order.
        let reader = std::thread::spawn(move || read_all(&mut peer, want.len()) == want);
        for _ in 0..10_000 {
            r.retry_blocked();
            if s.lock().unsent.is_empty() {
                break;
            }
            std::thread::sleep(crate::storage::reply::RETRY_EVERY);
        }
        assert!(reader.join().expect("reader"), "replies lost or reordered");
    }

    #[test]
    fn settle_takes_the_leftovers_and_close_stops_sending() {
        let (ours, peer) = UnixStream::pair().expect("pair");
        let s = sink(ours.as_raw_fd());
        let mut r = Releaser::default();
        let mut i = 0u64;
        while s.lock().unsent.is_empty() {
            i += 1;
            assert!(i < 10_000_000, "the socket never filled");
            s.handing(None);
            r.release(vec![(
                Reply::Sink(SinkTicket::new(s.clone())),
                Ok(WriteOk::Id(i)),
            )]);
        }
        let mut out = Vec::new();
        s.settle(&mut out, Duration::from_secs(1)).expect("settled");
        assert!(out.ends_with(format!("OK {i}\r\n").as_bytes()));
        assert!(s.lock().unsent.is_empty());
        // A write still in flight when the connection closes: its answer is
        // dropped, not sent to a socket that may be closed by now.
        s.handing(None);
        s.close();
        drop(ours);
        r.release(vec![(
            Reply::Sink(SinkTicket::new(s.clone())),
            Ok(WriteOk::Id(0)),
        )]);
        assert_eq!(s.in_flight(), 0);
        assert!(s.lock().unsent.is_empty());
        drop(peer);
    }

    #[test]
    fn a_write_dropped_unanswered_gets_the_writer_gone_error() {
        let (ours, mut peer) = UnixStream::pair().expect("pair");
        let s = sink(ours.as_raw_fd());
        // The writer's queue is gone with the request in it.
        s.handing(None);
        drop(SinkTicket::new(s.clone()));
        assert_eq!(s.in_flight(), 0);
        let want = "ERR INTERNAL the server is shutting down; nothing was written\r\n";
        assert_eq!(read_all(&mut peer, want.len()), want);

        // A request the handle could not send is the caller's to answer:
        // its ticket says nothing.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let w = crate::writer_handle::WriterHandle::new(tx, Duration::from_millis(10));
        let op = || crate::storage::ops::WriteOp::Create {
            topic: "t".into(),
            life_ms: 0,
        };
        s.handing(None);
        let ticket = || Reply::Sink(SinkTicket::new(s.clone()));
        assert_eq!(w.submit(op(), ticket()), Ok(()));
        s.handing(None);
        assert_eq!(w.submit(op(), ticket()), Err(CallError::Busy));
        assert_eq!(
            s.in_flight(),
            2,
            "the refused one was answered by its ticket"
        );
        s.not_handed();
        // The queued one is answered when the writer answers it.
        let req = rx.recv().expect("queued");
        req.reply.send(Ok(WriteOk::Id(5)));
        assert_eq!(s.in_flight(), 0);
        assert_eq!(read_all(&mut peer, 6), "OK 5\r\n");
    }

    #[test]
    fn settle_gives_up_after_its_patience() {
        let (ours, _peer) = UnixStream::pair().expect("pair");
        let s = sink(ours.as_raw_fd());
        s.handing(None);
        let mut out = Vec::new();
        let e = s
            .settle(&mut out, Duration::from_millis(20))
            .expect_err("no answer");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        s.not_handed();
        s.settle(&mut out, Duration::from_millis(20))
            .expect("nothing in flight");
    }

    /// Through TLS: the releaser encrypts and sends while nobody reads; what
    /// the socket did not take stays as records, and `settle` sends them
    /// first, before what the connection then encrypts itself. The client
    /// decrypts every reply, in order, then the connection's own line.
    #[cfg(feature = "tls")]
    #[test]
    fn tls_replies_are_sealed_in_order_and_settle_sends_the_leftover_records() {
        use std::io::{BufRead, BufReader, Write};
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, client) = crate::tls::test_pair(dir.path());
        let tcp = server.get_ref().try_clone().expect("clone");
        tcp.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // Small buffers, so the socket soon takes nothing more.
        for fd in [tcp.as_raw_fd(), client.get_ref().as_raw_fd()] {
            for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
                let size: libc::c_int = 4096;
                // SAFETY: a valid socket and a c_int option of its size.
                let rc = unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        opt,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "setsockopt");
            }
        }
        let (mut w, _r) = crate::tls::split(server, tcp.try_clone().expect("clone"));
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let broker = Arc::new(Broker::new(Config::default(), Role::Master, tx, 4));
        let s =
            Arc::new(SocketReplies::new(Some(tcp.as_raw_fd()), broker).sealed(Some(w.sealer())));
        let mut r = Releaser::default();
        let n = 20_000u64;
        for id in 1..=n {
            s.handing(None);
            r.release(vec![(
                Reply::Sink(SinkTicket::new(s.clone())),
                Ok(WriteOk::Id(id)),
            )]);
        }
        assert!(!s.lock().cipher.is_empty(), "the socket took every record");
        // A sink the socket blocks is retried later: the answers that came
        // meanwhile wait as plaintext, behind the records.
        assert!(!s.lock().unsent.is_empty());
        let reader = std::thread::spawn(move || {
            let mut c = BufReader::new(client);
            let mut line = String::new();
            for id in 1..=n {
                line.clear();
                c.read_line(&mut line).expect("read a reply");
                assert_eq!(line, format!("OK {id}\r\n"));
            }
            line.clear();
            c.read_line(&mut line).expect("read the last line");
            line
        });
        // The connection settles (the leftover records go first, raw; the
        // plaintext comes into its output), then sends its output and its
        // own line through the session.
        let mut out = Vec::new();
        s.settle(&mut out, Duration::from_secs(10)).expect("settle");
        assert!(!out.is_empty());
        assert!(s.lock().cipher.is_empty() && s.lock().unsent.is_empty());
        out.extend_from_slice(b"PONG\r\n");
        w.write_all(&out).expect("write");
        assert_eq!(reader.join().expect("reader"), "PONG\r\n");
    }
}
