//! The blocking client API: one [`Client`] is one TCP connection to an smss
//! server speaking protocol version 1 (restated in README.md).
//!
//! Owns the socket (a buffered reader and a buffered writer over one
//! `TcpStream`) and its own small reply parser, which shares no code with the
//! server's, so it doubles as an independent check of the reply format. What
//! it does share is the server's rules for arguments: [`check`] applies them
//! before anything is sent. It runs on the caller's thread and touches no
//! channels or locks. Writes are buffered and flushed before every read; every read has a
//! timeout (30 s unless changed with [`Client::set_timeout`]).
//!
//! The replication commands (PROMOTE, SLAVES) are in `client/repl.rs`;
//! keyed publishes in `client/keyed.rs`, and [`Reconnecting`], which
//! retries them on a new connection after a lost one, in `client/retry.rs`.
//!
//! Used by `smss-cli`, by the integration tests, and by Rust programs.
//!
//! ```no_run
//! use smss::client::{Client, SubEvent, SubOptions};
//!
//! # fn main() -> smss::client::Result<()> {
//! let mut c = Client::connect("127.0.0.1:12301")?;
//! c.create("orders", 0)?;
//! let id = c.publish_with_headers("orders", &[("kind", "new")], b"hello")?;
//! println!("published event {id}");
//!
//! c.subscribe("orders", "0", &SubOptions::default())?;
//! if let SubEvent::Batch(msgs) = c.next_event()? {
//!     for m in &msgs {
//!         println!("{} {:?}", m.event_id, m.payload);
//!     }
//! }
//! c.stop()?;
//! c.quit()
//! # }
//! ```
//!
//! Error handling: an argument the server would refuse is
//! [`ClientError::BadArgument`], and nothing was sent. An `ERR <CODE> <msg>`
//! reply becomes [`ClientError::Server`] and leaves the connection usable (unless the server closed it, see the
//! protocol). An I/O error or a [`ClientError::Protocol`] error in the middle
//! of a multi-line reply leaves the framing unknown: drop the client.

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub mod check;
mod keyed;
mod repl;
mod reply;
mod retry;
pub mod stream;

use self::reply::{
    expect_reply, io_err, parse_count, parse_err, parse_group_line, parse_msg_line, parse_num,
    parse_ok, parse_ok_id, parse_topic_line, protocol, push_headers,
};
use self::stream::Io;

pub use keyed::{Keyed, KeyedRange};
pub use repl::SlaveInfo;
pub use retry::Reconnecting;

/// A line, its `\r\n` included, is at most this many bytes.
pub const MAX_LINE_BYTES: usize = 4096;
/// Read/write timeout of [`Client::connect`], also its connect timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that can go wrong talking to a server.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed, timed out or was closed. The message says what
    /// the client was doing and with which peer.
    Io(io::Error),
    /// The server replied `ERR <code> <msg>`.
    Server { code: String, msg: String },
    /// The reply did not follow the protocol; the text includes the
    /// offending line.
    Protocol(String),
    /// An argument breaks the protocol's rules (the text names it and quotes
    /// it); the request was not sent and the connection is untouched.
    BadArgument(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Server { code, msg } if msg.is_empty() => {
                write!(f, "server error {code}")
            }
            ClientError::Server { code, msg } => write!(f, "server error {code}: {msg}"),
            ClientError::Protocol(s) => write!(f, "protocol error: {s}"),
            ClientError::BadArgument(s) => write!(f, "{s}; nothing was sent"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            ClientError::Server { .. } | ClientError::Protocol(_) | ClientError::BadArgument(_) => {
                None
            }
        }
    }
}

impl ClientError {
    /// The server's error code (`NOTOPIC`, `BADREQ`, …), if this is a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// One `TOPIC` line of `INFO` / `LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub created_ms: u64,
    /// 0 for a topic without a lifetime.
    pub expires_ms: u64,
    pub messages: u64,
    /// 0 when the topic holds no messages.
    pub first_id: u64,
    /// 0 when the topic holds no messages.
    pub last_id: u64,
}

/// One `GROUP` line of `GROUPS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    /// The group has consumed every message up to this event id.
    pub committed_id: u64,
    /// A subscriber of the group is delivering now.
    pub active: bool,
    /// Subscribers waiting to take over.
    pub standby_count: u64,
    /// Retained messages after `committed_id`.
    pub lag: u64,
    /// A shared group with members: (members, messages delivered and not
    /// ACKed); `None` for an exclusive group or one without members.
    pub shared: Option<(u64, u64)>,
}

/// One message received in a subscription batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub event_id: u64,
    pub timestamp_ms: u64,
    /// In the order the server sent them; split at the first `=`.
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// What a subscription delivers next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubEvent {
    /// A batch; answer it with [`Client::ack`] or [`Client::stop`].
    Batch(Vec<Delivered>),
    /// Keep-alive: nothing to send right now.
    Alive,
    /// The subscription is over (`"deleted"` or `"expired"`); the connection
    /// is back in command mode.
    End(String),
    /// Another subscriber of the group is active; this one waits.
    Standby,
}

/// Optional `SUB` arguments; `None` leaves the server's default.
#[derive(Debug, Clone, Default)]
pub struct SubOptions {
    pub batch: Option<usize>,
    pub ack_ms: Option<u64>,
    /// Subscribe as this consumer group.
    pub group: Option<String>,
    /// With a group: failed deliveries of one message before the server
    /// gives up on it (0 = never; default `sub.maxDeliver`).
    pub max_deliver: Option<u32>,
    /// With a group: the topic a message goes to when given up on;
    /// without it, it is skipped.
    pub dlq: Option<String>,
    /// With a group: `mode=shared`, every subscriber of the group gets
    /// batches of its own (a worker pool) instead of one active and the
    /// others on standby.
    pub shared: bool,
}

/// A blocking connection to an smss server.
pub struct Client {
    reader: BufReader<Io>,
    writer: BufWriter<Io>,
    peer: String,
    /// Bytes of a line whose read was interrupted (by a timeout); the next
    /// `read_line` continues it, so a timed-out wait can simply be retried.
    partial: Vec<u8>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("peer", &self.peer).finish()
    }
}

impl Client {
    /// Connects with [`DEFAULT_TIMEOUT`] as connect, read and write timeout.
    /// `addr` is `host:port`.
    pub fn connect(addr: &str) -> Result<Client> {
        Client::connect_timeout(addr, DEFAULT_TIMEOUT)
    }

    /// Connects, trying each address `addr` resolves to, with `timeout` as
    /// connect, read and write timeout.
    pub fn connect_timeout(addr: &str, timeout: Duration) -> Result<Client> {
        let stream = Client::tcp(addr, timeout)?;
        Client::from_stream(stream, addr, timeout, |s| Ok(Io::Plain(s)))
    }

    /// Connects over TLS, verifying the server's certificate against the
    /// CA certificate(s) in the PEM file `ca` for the host part of `addr`
    /// (a name or an IP address the certificate must carry).
    #[cfg(feature = "tls")]
    pub fn connect_tls(addr: &str, ca: &std::path::Path) -> Result<Client> {
        let config = crate::tls::client_config(ca, None).map_err(ClientError::BadArgument)?;
        Client::connect_tls_with(addr, config, DEFAULT_TIMEOUT)
    }

    /// Connects over TLS with a client configuration of the caller's (made
    /// with [`crate::tls::client_config`], e.g. with a client certificate
    /// for a server with `tls.clientCa`). The handshake happens here: a
    /// certificate the CA did not sign fails now.
    #[cfg(feature = "tls")]
    pub fn connect_tls_with(
        addr: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Client> {
        let stream = Client::tcp(addr, timeout)?;
        let host = crate::tls::host_of(addr).to_string();
        Client::from_stream(stream, addr, timeout, move |s| {
            let tls = crate::tls::connect(config, &host, s)?;
            Ok(Io::Tls(std::sync::Arc::new(std::sync::Mutex::new(tls))))
        })
    }

    /// A connected socket to the first address of `addr` that answers.
    fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| io_err(e, format_args!("resolving {addr}")))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
        });
        Err(io_err(e, format_args!("connecting to {addr}")))
    }

    /// Sets the socket up, then `open` makes the stream of it (a TLS
    /// handshake, for TLS: within the same timeouts).
    fn from_stream(
        stream: TcpStream,
        addr: &str,
        timeout: Duration,
        open: impl FnOnce(TcpStream) -> io::Result<Io>,
    ) -> Result<Client> {
        let ctx = |e| io_err(e, format_args!("setting up the connection to {addr}"));
        stream.set_read_timeout(Some(timeout)).map_err(ctx)?;
        stream.set_write_timeout(Some(timeout)).map_err(ctx)?;
        // Requests are small and answered one by one; don't let Nagle delay them.
        stream.set_nodelay(true).map_err(ctx)?;
        let stream =
            open(stream).map_err(|e| io_err(e, format_args!("TLS handshake with {addr}")))?;
        let write_half = stream.try_clone().map_err(ctx)?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer: BufWriter::new(write_half),
            peer: addr.to_string(),
            partial: Vec::new(),
        })
    }

    /// The address this client was connected to, as given.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Sets the read timeout; `None` waits forever.
    pub fn set_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.reader
            .get_ref()
            .set_read_timeout(t)
            .map_err(|e| io_err(e, format_args!("setting the read timeout to {t:?}")))
    }

    /// Waits up to `wait` for the next reply to begin arriving, reading
    /// nothing away: `true` once bytes are there (or the connection ended,
    /// which the next read reports), `false` when `wait` passed first. A
    /// subscriber uses it to look at a stop flag between waits without
    /// giving up the framing of a batch (a timed-out read in the middle of
    /// one would lose it). Pending writes are flushed first.
    pub fn poll_readable(&mut self, wait: Duration) -> Result<bool> {
        self.flush()?;
        if !self.partial.is_empty() || !self.reader.buffer().is_empty() {
            return Ok(true);
        }
        let peer = &self.peer;
        let ctx = |e| io_err(e, format_args!("waiting for {peer}"));
        let before = self.reader.get_ref().read_timeout().map_err(ctx)?;
        // A zero timeout means "none" to the socket: wait at least 1 ms.
        let wait = wait.max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(wait))
            .map_err(ctx)?;
        let got = match self.reader.fill_buf() {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            // The next read meets the same error and reports it.
            Err(_) => Ok(true),
        };
        self.reader
            .get_ref()
            .set_read_timeout(before)
            .map_err(ctx)?;
        got
    }

    /// `AUTH <token>` → `OK`.
    pub fn auth(&mut self, token: &str) -> Result<()> {
        check::token(token)?;
        self.send_line(&format!("AUTH {token}"))?;
        let line = self.read_line()?;
        parse_ok(&line)
    }

    /// `PING` → `PONG`.
    pub fn ping(&mut self) -> Result<()> {
        self.send_line("PING")?;
        let line = self.read_line()?;
        expect_reply(&line, "PONG").map(|_| ())
    }

    /// `QUIT` → `OK`; the server then closes the connection.
    pub fn quit(mut self) -> Result<()> {
        self.send_line("QUIT")?;
        let line = self.read_line()?;
        parse_ok(&line)
    }

    /// `CREATE <topic> [<life_ms>]` → event id. `life_ms` 0 sends no lifetime.
    pub fn create(&mut self, topic: &str, life_ms: u64) -> Result<u64> {
        check::topic(topic)?;
        check::life_ms(life_ms)?;
        if life_ms == 0 {
            self.send_line(&format!("CREATE {topic}"))?;
        } else {
            self.send_line(&format!("CREATE {topic} {life_ms}"))?;
        }
        let line = self.read_line()?;
        parse_ok_id(&line)
    }

    /// `DELETE <topic>` → event id.
    pub fn delete(&mut self, topic: &str) -> Result<u64> {
        check::topic(topic)?;
        self.send_line(&format!("DELETE {topic}"))?;
        let line = self.read_line()?;
        parse_ok_id(&line)
    }

    /// `PUB` without headers → event id.
    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<u64> {
        self.publish_with_headers(topic, &[], payload)
    }

    /// `PUB <topic> <n> [k=v …]` + payload → event id.
    pub fn publish_with_headers(
        &mut self,
        topic: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<u64> {
        check::topic(topic)?;
        let mut line = format!("PUB {topic} {}", payload.len());
        push_headers(&mut line, headers)?;
        self.send_frame(&line, payload)?;
        let line = self.read_line()?;
        parse_ok_id(&line)
    }

    /// `MPUB <topic> <count>` + one frame per payload → (first, last) event id.
    pub fn mpublish(&mut self, topic: &str, payloads: &[&[u8]]) -> Result<(u64, u64)> {
        self.mpublish_with_headers(topic, &[], payloads)
    }

    /// `MPUB` with the same headers on every message → (first, last) event id.
    pub fn mpublish_with_headers(
        &mut self,
        topic: &str,
        headers: &[(&str, &str)],
        payloads: &[&[u8]],
    ) -> Result<(u64, u64)> {
        check::topic(topic)?;
        check::mpub_count(payloads.len())?;
        let mut tail = String::new();
        push_headers(&mut tail, headers)?;
        self.write_all(format!("MPUB {topic} {}\r\n", payloads.len()).as_bytes())?;
        for p in payloads {
            self.send_frame(&format!("{}{tail}", p.len()), p)?;
        }
        let line = self.read_line()?;
        let toks = expect_reply(&line, "OK")?;
        let first = parse_num(toks.first(), "first event id", &line)?;
        let last = parse_num(toks.get(1), "last event id", &line)?;
        Ok((first, last))
    }

    /// `DPUB` without headers → event id of the delayed-publish record.
    pub fn dpublish(&mut self, topic: &str, delay_ms: u64, payload: &[u8]) -> Result<u64> {
        self.dpublish_with_headers(topic, delay_ms, &[], payload)
    }

    /// `DPUB <topic> <delay_ms> <n> [k=v …]` + payload → event id.
    pub fn dpublish_with_headers(
        &mut self,
        topic: &str,
        delay_ms: u64,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<u64> {
        check::topic(topic)?;
        check::delay_ms(delay_ms)?;
        let mut line = format!("DPUB {topic} {delay_ms} {}", payload.len());
        push_headers(&mut line, headers)?;
        self.send_frame(&line, payload)?;
        let line = self.read_line()?;
        parse_ok_id(&line)
    }

    /// `INFO <topic>` → its `TOPIC` line.
    pub fn info(&mut self, topic: &str) -> Result<TopicInfo> {
        check::topic(topic)?;
        self.send_line(&format!("INFO {topic}"))?;
        let line = self.read_line()?;
        parse_topic_line(&line)
    }

    /// `LIST` → every topic, ordered by name.
    pub fn list(&mut self) -> Result<Vec<TopicInfo>> {
        self.send_line("LIST")?;
        let line = self.read_line()?;
        let n = parse_count(&line, "TOPICS")?;
        let mut out = Vec::new();
        for _ in 0..n {
            let line = self.read_line()?;
            out.push(parse_topic_line(&line)?);
        }
        Ok(out)
    }

    /// `GROUPS <topic>` → the topic's consumer groups.
    pub fn groups(&mut self, topic: &str) -> Result<Vec<GroupInfo>> {
        check::topic(topic)?;
        self.send_line(&format!("GROUPS {topic}"))?;
        let line = self.read_line()?;
        let n = parse_count(&line, "GROUPS")?;
        let mut out = Vec::new();
        for _ in 0..n {
            let line = self.read_line()?;
            out.push(parse_group_line(&line)?);
        }
        Ok(out)
    }

    /// `GROUPDEL <topic> <group>` → event id. The group's subscribers get
    /// `END deleted`.
    pub fn groupdel(&mut self, topic: &str, group: &str) -> Result<u64> {
        check::topic(topic)?;
        check::group(group)?;
        self.send_line(&format!("GROUPDEL {topic} {group}"))?;
        let line = self.read_line()?;
        parse_ok_id(&line)
    }

    /// `STATS` → (name, value) pairs in the server's order. A value is the
    /// rest of its line, so it may contain spaces.
    pub fn stats(&mut self) -> Result<Vec<(String, String)>> {
        self.send_line("STATS")?;
        let line = self.read_line()?;
        let n = parse_count(&line, "STATS")?;
        let mut out = Vec::new();
        for _ in 0..n {
            let line = self.read_line()?;
            expect_reply(&line, "STAT")?;
            let mut parts = line.splitn(3, ' ').skip(1);
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                return Err(protocol("expected STAT <name> <value>", &line));
            };
            out.push((name.to_string(), value.to_string()));
        }
        Ok(out)
    }

    /// Sends SUB; returns after OK. `from` is the raw `<after>` token: "0", "$", "-", or a number.
    /// With a group, [`Client::next_event`] may first give
    /// [`SubEvent::Standby`]: another subscriber of the group is active.
    pub fn subscribe(&mut self, topic: &str, from: &str, opts: &SubOptions) -> Result<()> {
        check::topic(topic)?;
        check::subscription(from, opts)?;
        let mut line = format!("SUB {topic} {from}");
        if let Some(b) = opts.batch {
            line.push_str(&format!(" batch={b}"));
        }
        if let Some(a) = opts.ack_ms {
            line.push_str(&format!(" ack={a}"));
        }
        if let Some(g) = &opts.group {
            line.push_str(&format!(" group={g}"));
        }
        if let Some(n) = opts.max_deliver {
            line.push_str(&format!(" maxDeliver={n}"));
        }
        if let Some(d) = &opts.dlq {
            line.push_str(&format!(" dlq={d}"));
        }
        if opts.shared {
            line.push_str(" mode=shared");
        }
        self.send_line(&line)?;
        let line = self.read_line()?;
        parse_ok(&line)
    }

    /// Reads the next event of a subscription (BATCH with its messages, ALIVE, END, STANDBY).
    pub fn next_event(&mut self) -> Result<SubEvent> {
        let line = self.read_line()?;
        if let Some(e) = parse_err(&line) {
            return Err(e);
        }
        let mut toks = line.split(' ');
        match toks.next() {
            Some("BATCH") => {
                let n = parse_count(&line, "BATCH")?;
                let mut msgs = Vec::new();
                for _ in 0..n {
                    msgs.push(self.read_msg()?);
                }
                Ok(SubEvent::Batch(msgs))
            }
            Some("ALIVE") => Ok(SubEvent::Alive),
            Some("STANDBY") => Ok(SubEvent::Standby),
            Some("END") => match toks.next() {
                Some(reason) if !reason.is_empty() => Ok(SubEvent::End(reason.to_string())),
                _ => Err(protocol("END without a reason", &line)),
            },
            _ => Err(protocol("expected BATCH, ALIVE, END or STANDBY", &line)),
        }
    }

    /// One `MSG` line and its payload.
    fn read_msg(&mut self) -> Result<Delivered> {
        let line = self.read_line()?;
        let m = parse_msg_line(&line)?;
        let payload = self.read_payload(m.len)?;
        Ok(Delivered {
            event_id: m.event_id,
            timestamp_ms: m.timestamp_ms,
            headers: m.headers,
            payload,
        })
    }

    /// Sends `ACK` for the last batch (there is no reply); flushes.
    pub fn ack(&mut self) -> Result<()> {
        self.send_line("ACK")
    }

    /// Sends `STOP` and reads until its `OK`, consuming a BATCH, ALIVE or
    /// STANDBY already in flight. If the subscription ended (`END`) before
    /// the server saw the STOP, the server answers the STOP in command mode;
    /// that answer (OK or ERR) is read and the call succeeds.
    pub fn stop(&mut self) -> Result<()> {
        self.send_line("STOP")?;
        loop {
            let line = self.read_line()?;
            if line == "OK" || line.starts_with("OK ") {
                return Ok(());
            }
            if let Some(e) = parse_err(&line) {
                return Err(e);
            }
            match line.split(' ').next() {
                Some("BATCH") => {
                    let n = parse_count(&line, "BATCH")?;
                    for _ in 0..n {
                        self.read_msg()?;
                    }
                }
                Some("ALIVE") | Some("STANDBY") => {}
                Some("END") => {
                    // Back in command mode; this is the reply to our STOP.
                    let _ = self.read_line()?;
                    return Ok(());
                }
                _ => return Err(protocol("unexpected reply to STOP", &line)),
            }
        }
    }

    /// Low level: writes `bytes` as they are and flushes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_all(bytes)?;
        self.flush()
    }

    /// Low level: flushes pending writes, then reads one reply line and
    /// returns it without its `\r\n` (a bare `\n` is accepted). `ERR` lines
    /// are returned as they are. A line over [`MAX_LINE_BYTES`] is a
    /// protocol error.
    pub fn read_line(&mut self) -> Result<String> {
        self.flush()?;
        let peer = &self.peer;
        let room = (MAX_LINE_BYTES as u64).saturating_sub(self.partial.len() as u64);
        (&mut self.reader)
            .take(room)
            .read_until(b'\n', &mut self.partial)
            .map_err(|e| io_err(e, format_args!("reading a reply from {peer}")))?;
        if self.partial.last() != Some(&b'\n') {
            let got = std::mem::take(&mut self.partial);
            if got.len() >= MAX_LINE_BYTES {
                let head = String::from_utf8_lossy(&got[..80]);
                return Err(ClientError::Protocol(format!(
                    "reply line longer than {MAX_LINE_BYTES} bytes, starting {head:?}"
                )));
            }
            let what = if got.is_empty() {
                "the server closed the connection".to_string()
            } else {
                format!(
                    "the server closed the connection in the middle of a line {:?}",
                    String::from_utf8_lossy(&got)
                )
            };
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("reading a reply from {peer}: {what}"),
            )));
        }
        let mut bytes = std::mem::take(&mut self.partial);
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8(bytes).map_err(|e| {
            ClientError::Protocol(format!(
                "reply line is not UTF-8: {:?}",
                String::from_utf8_lossy(e.as_bytes())
            ))
        })
    }

    /// Low level: reads exactly `n` payload bytes, then the `\r\n` that must
    /// follow them.
    pub fn read_payload(&mut self, n: usize) -> Result<Vec<u8>> {
        self.flush()?;
        let peer = &self.peer;
        // Don't trust `n` for the allocation; grow as bytes arrive.
        let mut buf = Vec::with_capacity(n.min(1 << 20));
        (&mut self.reader)
            .take(n as u64)
            .read_to_end(&mut buf)
            .map_err(|e| io_err(e, format_args!("reading a {n}-byte payload from {peer}")))?;
        if buf.len() != n {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "reading a {n}-byte payload from {peer}: the server closed the connection after {} bytes",
                    buf.len()
                ),
            )));
        }
        let mut end = [0u8; 2];
        self.reader
            .read_exact(&mut end)
            .map_err(|e| io_err(e, format_args!("reading the end of a payload from {peer}")))?;
        if &end != b"\r\n" {
            return Err(ClientError::Protocol(format!(
                "{n}-byte payload not followed by CRLF but by {:?}",
                String::from_utf8_lossy(&end)
            )));
        }
        Ok(buf)
    }

    /// Queues `line` + CRLF and flushes.
    fn send_line(&mut self, line: &str) -> Result<()> {
        self.write_all(line.as_bytes())?;
        self.write_all(b"\r\n")?;
        self.flush()
    }

    /// Queues `line` CRLF `payload` CRLF (not flushed: the read that follows flushes).
    fn send_frame(&mut self, line: &str, payload: &[u8]) -> Result<()> {
        self.write_all(line.as_bytes())?;
        self.write_all(b"\r\n")?;
        self.write_all(payload)?;
        self.write_all(b"\r\n")
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let peer = &self.peer;
        self.writer
            .write_all(bytes)
            .map_err(|e| io_err(e, format_args!("sending to {peer}")))
    }

    fn flush(&mut self) -> Result<()> {
        let peer = &self.peer;
        self.writer
            .flush()
            .map_err(|e| io_err(e, format_args!("sending to {peer}")))
    }
}

#[cfg(test)]
mod tests {
    use super::reply::split_header;
    use super::*;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    const T: Duration = Duration::from_secs(5);

    // ---- pure parsing ----

    #[test]
    fn err_lines() {
        match parse_err("ERR NOTOPIC no such topic 'x'") {
            Some(ClientError::Server { code, msg }) => {
                assert_eq!(code, "NOTOPIC");
                assert_eq!(msg, "no such topic 'x'");
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse_err("ERR BUSY") {
            Some(ClientError::Server { code, msg }) => {
                assert_eq!(code, "BUSY");
                assert_eq!(msg, "");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_err("ERRX foo").is_none());
        assert!(parse_err("OK 1").is_none());
        let e = parse_ok_id("ERR EXISTS topic exists").expect_err("an ERR");
        assert_eq!(e.code(), Some("EXISTS"));
        assert_eq!(e.to_string(), "server error EXISTS: topic exists");
    }

    #[test]
    fn ok_lines() {
        assert_eq!(parse_ok_id("OK 17").expect("ok"), 17);
        assert_eq!(
            parse_ok_id("OK 17 extra").expect("trailing fields allowed"),
            17
        );
        assert!(matches!(parse_ok_id("OK"), Err(ClientError::Protocol(_))));
        assert!(matches!(parse_ok_id("OK x"), Err(ClientError::Protocol(_))));
        assert!(matches!(
            parse_ok_id("OK -1"),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(parse_ok_id("PONG"), Err(ClientError::Protocol(_))));
        let e = parse_ok_id("OK 99999999999999999999").expect_err("overflow");
        assert!(e.to_string().contains("99999999999999999999"), "{e}");
        assert!(parse_ok("OK").is_ok());
        assert!(parse_ok("OKAY").is_err());
    }

    #[test]
    fn topic_lines() {
        let t = parse_topic_line("TOPIC orders 1700000000000 0 3 5 9").expect("topic");
        assert_eq!(
            t,
            TopicInfo {
                name: "orders".into(),
                created_ms: 1_700_000_000_000,
                expires_ms: 0,
                messages: 3,
                first_id: 5,
                last_id: 9,
            }
        );
        assert!(parse_topic_line("TOPIC orders 1 0 3 5 9 extra").is_ok());
        assert!(matches!(
            parse_topic_line("TOPIC orders 1 0 3 5"),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            parse_topic_line("ERR NOTOPIC nope"),
            Err(ClientError::Server { .. })
        ));
    }

    #[test]
    fn group_lines() {
        let g = parse_group_line("GROUP workers 42 1 2 7").expect("group");
        assert_eq!(
            g,
            GroupInfo {
                name: "workers".into(),
                committed_id: 42,
                active: true,
                standby_count: 2,
                lag: 7,
                shared: None
            }
        );
        let g = parse_group_line("GROUP workers 42 1 0 7 shared 4 96").expect("group");
        assert_eq!(g.shared, Some((4, 96)));
        assert!(parse_group_line("GROUP workers 42 2 2 0").is_err());
        assert!(parse_group_line("GROUP workers 42 1 2").is_err());
        assert!(parse_group_line("GROUP workers 42 1 2 7 extra").is_ok());
    }

    #[test]
    fn msg_lines_and_headers() {
        let m = parse_msg_line("MSG 7 1700000000000 5 a=b url=x=y empty=").expect("msg");
        assert_eq!(m.event_id, 7);
        assert_eq!(m.timestamp_ms, 1_700_000_000_000);
        assert_eq!(m.len, 5);
        assert_eq!(
            m.headers,
            vec![
                ("a".into(), "b".into()),
                ("url".into(), "x=y".into()),
                ("empty".into(), "".into())
            ]
        );
        assert!(
            parse_msg_line("MSG 7 1 0")
                .expect("no headers")
                .headers
                .is_empty()
        );
        assert!(matches!(
            parse_msg_line("MSG 7 1 5 novalue"),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            parse_msg_line("MSG 7 1"),
            Err(ClientError::Protocol(_))
        ));
        assert_eq!(split_header("k=v=w"), Some(("k".into(), "v=w".into())));
        assert_eq!(split_header("=v"), None);
        assert_eq!(split_header("kv"), None);
    }

    #[test]
    fn header_and_token_checks() {
        assert!(check::header("k", "v").is_ok());
        assert!(check::header("k", "").is_ok());
        assert!(check::header("k k", "v").is_err());
        assert!(check::header("k", "a b").is_err());
        assert!(check::header("k", "a\r\n").is_err());
        assert!(check::header("k=", "v").is_err());
        // The server's name rule, not just framing, is checked now.
        assert!(check::topic("bad name!").is_err());
        assert!(check::topic("a\r\nPING").is_err());
    }

    // ---- end to end against a scripted fake server ----

    enum Step {
        /// Read exactly these bytes from the client and compare.
        Expect(&'static [u8]),
        /// Write these bytes to the client.
        Send(&'static [u8]),
    }
    use Step::{Expect, Send};

    /// Starts a one-connection server that plays `script`; returns its
    /// address and a handle whose join reports any mismatch.
    fn fake_server(script: Vec<Step>) -> (String, JoinHandle<std::result::Result<(), String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(T)).map_err(|e| e.to_string())?;
            for step in script {
                match step {
                    Expect(want) => {
                        let mut got = vec![0u8; want.len()];
                        s.read_exact(&mut got).map_err(|e| {
                            format!("expecting {:?}: {e}", String::from_utf8_lossy(want))
                        })?;
                        if got != want {
                            return Err(format!(
                                "expected {:?}, got {:?}",
                                String::from_utf8_lossy(want),
                                String::from_utf8_lossy(&got)
                            ));
                        }
                    }
                    Send(bytes) => s.write_all(bytes).map_err(|e| e.to_string())?,
                }
            }
            Ok(())
        });
        (addr, handle)
    }

    fn finish(h: JoinHandle<std::result::Result<(), String>>) {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("fake server: {e}"),
            Err(_) => panic!("fake server panicked"),
        }
    }

    #[test]
    fn publish_round_trip() {
        let (addr, h) = fake_server(vec![
            Expect(b"PUB orders 6 k=v\r\na\r\nb\0c\r\n"),
            Send(b"OK 41\r\n"),
            Expect(b"MPUB orders 2\r\n1\r\nx\r\n0\r\n\r\n"),
            Send(b"OK 42 43\r\n"),
            Expect(b"DPUB orders 1500 1\r\nz\r\n"),
            Send(b"OK 44\r\n"),
            Expect(b"CREATE t\r\n"),
            Send(b"OK 45\r\n"),
            Expect(b"CREATE u 5000\r\n"),
            Send(b"OK 46\n"),
        ]);
        let mut c = Client::connect_timeout(&addr, T).expect("connect");
        assert_eq!(
            c.publish_with_headers("orders", &[("k", "v")], b"a\r\nb\0c")
                .expect("pub"),
            41
        );
        assert_eq!(c.mpublish("orders", &[b"x", b""]).expect("mpub"), (42, 43));
        assert_eq!(c.dpublish("orders", 1500, b"z").expect("dpub"), 44);
        assert_eq!(c.create("t", 0).expect("create"), 45);
        assert_eq!(c.create("u", 5000).expect("create"), 46);
        drop(c);
        finish(h);
    }

    #[test]
    fn bad_header_is_refused_before_sending() {
        let (addr, h) = fake_server(vec![Expect(b"PING\r\n"), Send(b"PONG\r\n")]);
        let mut c = Client::connect_timeout(&addr, T).expect("connect");
        let e = c
            .publish_with_headers("t", &[("k", "a b")], b"x")
            .expect_err("refused");
        assert!(matches!(e, ClientError::BadArgument(_)), "{e:?}");
        // A space would shift CREATE's arguments: `CREATE inj 60000`.
        let e = c.create("inj 60000", 0).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("invalid topic name 'inj 60000': 1-128 bytes"),
            "{e}"
        );
        assert!(e.to_string().ends_with("; nothing was sent"), "{e}");
        for e in [
            c.create("t", 999).expect_err("life_ms"),
            c.dpublish("t", 0, b"x").expect_err("delay_ms"),
            c.mpublish("t", &[]).expect_err("count"),
            c.mpublish_with_headers("t", &[("=", "v")], &[b"x"])
                .expect_err("header"),
            c.subscribe("t", "1 2", &SubOptions::default())
                .expect_err("from"),
            c.auth("two words").expect_err("token"),
            c.info("a/b").expect_err("topic"),
        ] {
            assert!(matches!(e, ClientError::BadArgument(_)), "{e:?}");
        }
        // Nothing was sent: the next exchange is the PING.
        c.ping().expect("ping");
        drop(c);
        finish(h);
    }

    #[test]
    fn server_error_keeps_connection() {
        let (addr, h) = fake_server(vec![
            Expect(b"INFO nope\r\n"),
            Send(b"ERR NOTOPIC no such topic\r\n"),
            Expect(b"LIST\r\n"),
            Send(b"TOPICS 2\r\nTOPIC a 1 0 0 0 0\r\nTOPIC b 2 3 1 7 7\r\n"),
            Expect(b"STATS\r\n"),
            Send(b"STATS 2\r\nSTAT role master\r\nSTAT note two words\r\n"),
        ]);
        let mut c = Client::connect_timeout(&addr, T).expect("connect");
        match c.info("nope") {
            Err(ClientError::Server { code, msg }) => {
                assert_eq!(code, "NOTOPIC");
                assert_eq!(msg, "no such topic");
            }
            other => panic!("unexpected {other:?}"),
        }
        let topics = c.list().expect("list");
        assert_eq!(topics.len(), 2);
        assert_eq!(topics[1].name, "b");
        assert_eq!(topics[1].last_id, 7);
        let stats = c.stats().expect("stats");
        assert_eq!(
            stats,
            vec![
                ("role".into(), "master".into()),
                ("note".into(), "two words".into())
            ]
        );
        drop(c);
        finish(h);
    }

    #[test]
    fn subscribe_batch_ack() {
        let (addr, h) = fake_server(vec![
            Expect(b"SUB orders 0 batch=2 ack=500 group=g1 maxDeliver=3 dlq=dead\r\n"),
            Send(b"OK\r\n"),
            Send(b"BATCH 2\r\nMSG 5 1000 4 h=1\r\n\r\n\0x\r\nMSG 9 1001 0\r\n\r\n"),
            Expect(b"ACK\r\n"),
            Send(b"ALIVE\r\nSTANDBY\r\nEND deleted\r\n"),
        ]);
        let mut c = Client::connect_timeout(&addr, T).expect("connect");
        let opts = SubOptions {
            batch: Some(2),
            ack_ms: Some(500),
            group: Some("g1".into()),
            max_deliver: Some(3),
            dlq: Some("dead".into()),
            shared: false,
        };
        c.subscribe("orders", "0", &opts).expect("sub");
        let ev = c.next_event().expect("batch");
        assert_eq!(
            ev,
            SubEvent::Batch(vec![
                Delivered {
                    event_id: 5,
                    timestamp_ms: 1000,
                    headers: vec![("h".into(), "1".into())],
                    payload: b"\r\n\0x".to_vec(),
                },
                Delivered {
                    event_id: 9,
                    timestamp_ms: 1001,
                    headers: vec![],
                    payload: vec![],
                },
            ])
        );
        c.ack().expect("ack");
        assert_eq!(c.next_event().expect("alive"), SubEvent::Alive);
        assert_eq!(c.next_event().expect("standby"), SubEvent::Standby);
        assert_eq!(
            c.next_event().expect("end"),
            SubEvent::End("deleted".into())
        );
        drop(c);
        finish(h);
    }

    #[test]
    fn stop_skips_in_flight_batch() {
        let (addr, h) = fake_server(vec![
            Expect(b"SUB t $\r\n"),
            Send(b"OK\r\n"),
            Send(b"BATCH 1\r\nMSG 3 10 2\r\nab\r\n"),
            Expect(b"ACK\r\n"),
            Expect(b"STOP\r\n"),
            // A batch (payload holding what looks like an OK line) and an
            // ALIVE were in flight before the STOP arrived.
            Send(b"BATCH 1\r\nMSG 4 11 6\r\nOK\r\n\r\n\r\nALIVE\r\nOK\r\n"),
            Expect(b"PING\r\n"),
            Send(b"PONG\r\n"),
        ]);
        let mut c = Client::connect_timeout(&addr, T).expect("connect");
        c.subscribe("t", "$", &SubOptions::default()).expect("sub");
        assert!(matches!(c.next_event().expect("batch"), SubEvent::Batch(m) if m.len() == 1));
        c.ack().expect("ack");
        c.stop().expect("stop");
        c.ping().expect("back in command mode");
        drop(c);
        finish(h);
    }

    #[test]
    fn poll_readable_waits_without_reading() {
        let (addr, h) = fake_server(vec![
            Expect(b"PING\r\n"),
            Send(b"PONG\r\n"),
            Expect(b"PING\r\n"),
            Send(b"PO"),
            Send(b"NG\r\n"),
        ]);
        let mut c = Client::connect_timeout(&addr, T).expect("connect");
        assert!(!c.poll_readable(Duration::from_millis(20)).expect("poll"));
        c.send_raw(b"PING\r\n").expect("send");
        assert!(c.poll_readable(T).expect("poll"));
        // Nothing was read away; the timeout is back to what it was.
        assert_eq!(c.read_line().expect("line"), "PONG");
        c.ping().expect("ping");
        drop(c);
        finish(h);
    }

    #[test]
    fn framing_errors() {
        let (addr, h) = fake_server(vec![
            Expect(b"PING\r\n"),
            Send(b"BATCH 1\r\nMSG 1 1 2\r\nabXY"),
            Expect(b"PING\r\n"),
        ]);
        let mut c = Client::connect_timeout(&addr, T).expect("connect");
        c.send_raw(b"PING\r\n").expect("send");
        assert_eq!(c.read_line().expect("line"), "BATCH 1");
        assert_eq!(c.read_line().expect("line"), "MSG 1 1 2");
        assert!(matches!(c.read_payload(2), Err(ClientError::Protocol(_))));
        c.send_raw(b"PING\r\n").expect("send");
        finish(h);
        // The server is gone: a clean EOF error.
        match c.read_line() {
            Err(ClientError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn long_line_and_timeout() {
        static LONG: [u8; 5000] = [b'A'; 5000];
        let (addr, h) = fake_server(vec![Send(b"PON"), Expect(b"X"), Send(&LONG)]);
        let mut c = Client::connect_timeout(&addr, T).expect("connect");
        c.set_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        match c.read_line() {
            Err(ClientError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}"),
            other => panic!("unexpected {other:?}"),
        }
        c.set_timeout(Some(T)).expect("timeout");
        c.send_raw(b"X").expect("send");
        // The partial "PON" was kept; the line goes on past the limit.
        assert!(matches!(c.read_line(), Err(ClientError::Protocol(_))));
        finish(h);
    }
}
