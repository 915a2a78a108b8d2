//! [`Conn`]: one connection to one NATS server of a list, on the caller's
//! thread (blocking socket, no threads of its own).
//!
//! Owns the socket (plain, or a TLS session with feature `tls`), one read
//! buffer that `proto::parse_frame` takes whole frames out of (a
//! read that times out mid-frame loses nothing: the bytes stay for the
//! next read), one write buffer that requests collect in until a flush,
//! and what the server's INFO said (`max_payload`, header support, name).
//!
//! Connecting: read the server's INFO (in plain text, also on a TLS
//! server: NATS starts TLS after INFO), do the TLS handshake when TLS is
//! configured or the server requires it, send CONNECT, SUB to the private
//! reply inbox `_INBOX.<random>.*`, then PING and wait for the PONG: a
//! PONG means the server processed CONNECT and SUB (it handles a
//! connection's input in order), a `-ERR` before it is the refusal.
//!
//! Requests: every request gets its own reply subject `<inbox>.<n>`, so
//! many can be in flight at once ([`Conn::new_reply`], [`Conn::publish`],
//! [`Conn::next_reply`]) and a late reply to an abandoned request is
//! recognised and dropped. A server PING is answered at once whenever we
//! read; `+OK` is ignored; a new INFO updates what we know.
//!
//! After [`NatsError::Disconnected`] or a protocol error the connection is
//! dead: every call returns `Disconnected` until [`Conn::reconnect`].

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::json::quote;
pub use super::options::Options;
use super::proto::{self, Frame, RawMsg};
use super::socket::{self, Io, ServerInfo, random_token};
use super::{NatsError, Result};

/// How many bytes one socket read asks for.
const READ_CHUNK: usize = 64 * 1024;
/// The sid of the reply inbox subscription (the only one we make).
const INBOX_SID: u64 = 1;

/// A message received: a reply to a request, with its status when the
/// server sent one (`503` no responders, `408` request timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    pub status: Option<u16>,
    pub description: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Msg {
    /// The first header named `name` (case-insensitively, as NATS does).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One connection to a NATS server.
pub struct Conn {
    opts: Options,
    /// Index in `opts.servers` of the server we are (or were last) on.
    idx: usize,
    io: Option<Io>,
    info: ServerInfo,
    rbuf: Vec<u8>,
    /// Start of the bytes in `rbuf` not parsed yet.
    rpos: usize,
    wbuf: Vec<u8>,
    /// `_INBOX.<random>`; replies come to `<inbox>.<n>`.
    inbox: String,
    next_token: u64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("server", &self.server())
            .field("connected", &self.io.is_some())
            .finish()
    }
}

impl Conn {
    /// Connects to the first server of `opts.servers` that answers and
    /// accepts us. When all fail: the first error if every one was
    /// permanent (a refused password, a TLS failure), else
    /// [`NatsError::Connect`] listing what each server said.
    pub fn connect(opts: &Options) -> Result<Conn> {
        if opts.servers.is_empty() {
            return Err(NatsError::BadArgument("no NATS server given".into()));
        }
        let mut conn = Conn {
            opts: opts.clone(),
            idx: 0,
            io: None,
            info: ServerInfo {
                max_payload: 0,
                headers: false,
                server_name: String::new(),
                tls_required: false,
                tls_available: false,
            },
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            inbox: format!("_INBOX.{}", random_token()),
            next_token: 0,
        };
        conn.dial_from(0)?;
        Ok(conn)
    }

    /// Drops the current connection and connects to the next server of the
    /// list, going round it once (the current server last).
    pub fn reconnect(&mut self) -> Result<()> {
        let start = (self.idx + 1) % self.opts.servers.len();
        self.dial_from(start)
    }

    fn dial_from(&mut self, start: usize) -> Result<()> {
        self.io = None;
        let n = self.opts.servers.len();
        let mut errors = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            self.idx = idx;
            match self.dial() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.io = None;
                    errors.push(e);
                }
            }
        }
        if errors.iter().all(|e| !e.is_retryable())
            && let Some(first) = errors.first()
        {
            return Err(first.clone());
        }
        Err(NatsError::Connect {
            servers: self.opts.servers.join(","),
            reason: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// Connects to `servers[idx]`: TCP, INFO, TLS, CONNECT + SUB, PING/PONG.
    fn dial(&mut self) -> Result<()> {
        let server = self.server().to_string();
        let timeout = self.opts.timeout;
        let tcp = socket::tcp_connect(&server, timeout)?;
        self.rbuf.clear();
        self.rpos = 0;
        self.wbuf.clear();
        self.io = Some(Io::Plain(tcp));

        let deadline = Instant::now() + timeout;
        let info = match self.read_frame(deadline)? {
            Some(Frame::Info(text)) => ServerInfo::parse(&text, &server)?,
            Some(other) => {
                return Err(self.protocol(format!("expected INFO first, got {other:?}")));
            }
            None => {
                return Err(NatsError::Timeout {
                    server,
                    subject: "INFO".into(),
                });
            }
        };
        let want_tls = self.opts.tls_ca.is_some() || info.tls_required;
        if want_tls && !(info.tls_required || info.tls_available) {
            return Err(NatsError::Tls {
                server,
                reason: "tls_ca is set but the server does not offer TLS".into(),
            });
        }
        self.info = info;
        if want_tls {
            let Some(Io::Plain(tcp)) = self.io.take() else {
                return Err(self.protocol("TLS started twice".into()));
            };
            self.io = Some(socket::start_tls(tcp, &self.opts, &server)?);
        }
        self.send_connect(want_tls);
        self.flush()?;
        self.await_pong(deadline).map_err(|e| match e {
            // With TLS 1.3 a refused client certificate shows here, as
            // an alert on our first read after the handshake.
            NatsError::Disconnected { server, reason } if want_tls && reason.contains("alert") => {
                NatsError::Tls {
                    server,
                    reason: format!(
                        "the server ended the session: {reason} (does it want a client \
                         certificate, tls_cert and tls_key, signed by a CA it trusts?)"
                    ),
                }
            }
            e => e,
        })
    }

    /// Waits for the PONG that ends connecting; a `-ERR` before it is
    /// the server's refusal.
    fn await_pong(&mut self, deadline: Instant) -> Result<()> {
        let server = self.server().to_string();
        loop {
            match self.read_frame(deadline)? {
                Some(Frame::Pong) => return Ok(()),
                Some(Frame::Err(text)) => {
                    self.io = None;
                    let lower = text.to_ascii_lowercase();
                    return Err(
                        if lower.contains("authorization") || lower.contains("authentication") {
                            NatsError::Auth {
                                server,
                                message: text,
                            }
                        } else {
                            NatsError::Server {
                                server,
                                message: text,
                            }
                        },
                    );
                }
                Some(Frame::Ping) => self.pong()?,
                Some(Frame::Info(text)) => self.info = ServerInfo::parse(&text, &server)?,
                Some(Frame::Ok | Frame::Msg(_)) => {}
                None => {
                    return Err(NatsError::Timeout {
                        server,
                        subject: "CONNECT (no PONG)".into(),
                    });
                }
            }
        }
    }

    /// Queues CONNECT, the SUB to our reply inbox, and the PING whose
    /// PONG says both were accepted.
    fn send_connect(&mut self, tls: bool) {
        let o = &self.opts;
        let mut c = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"tls_required\":{tls},\"headers\":true,\
             \"no_responders\":true,\"lang\":\"rust-smss\",\"version\":{},\"protocol\":1",
            quote(env!("CARGO_PKG_VERSION"))
        );
        let fields = [
            ("name", &o.name),
            ("user", &o.user),
            ("pass", &o.pass),
            ("auth_token", &o.token),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                c.push_str(&format!(",\"{k}\":{}", quote(v)));
            }
        }
        c.push_str("}\r\n");
        c.push_str(&format!("SUB {}.* {INBOX_SID}\r\nPING\r\n", self.inbox));
        self.wbuf.extend_from_slice(c.as_bytes());
    }

    /// The `HOST:PORT` we are connected to (or were last).
    pub fn server(&self) -> &str {
        self.opts.servers.get(self.idx).map_or("", String::as_str)
    }

    /// The server's name from its INFO (`server_name`, else its id).
    pub fn server_name(&self) -> &str {
        &self.info.server_name
    }

    /// The largest message (headers + payload) the server takes.
    pub fn max_payload(&self) -> usize {
        self.info.max_payload
    }

    /// The options' timeout (connect, handshake, writes).
    pub fn timeout(&self) -> Duration {
        self.opts.timeout
    }

    /// Bytes queued by [`Conn::publish`] and not flushed yet.
    pub fn buffered(&self) -> usize {
        self.wbuf.len()
    }

    /// False after the connection broke, until [`Conn::reconnect`].
    pub fn is_connected(&self) -> bool {
        self.io.is_some()
    }

    /// Largest message frame we accept from the server. Not `max_payload`:
    /// JetStream API replies are not bound by it, and STREAM.MSG.GET
    /// returns a message base64-encoded (4/3 of its size) inside JSON.
    fn max_incoming(&self) -> usize {
        self.info.max_payload.max(1 << 20).saturating_mul(2) + 64 * 1024
    }

    fn protocol(&mut self, reason: String) -> NatsError {
        self.io = None;
        NatsError::Protocol {
            server: self.server().to_string(),
            reason,
        }
    }

    fn gone(&self, reason: String) -> NatsError {
        NatsError::Disconnected {
            server: self.server().to_string(),
            reason,
        }
    }

    /// A fresh reply subject for one request.
    pub fn new_reply(&mut self) -> String {
        self.next_token += 1;
        format!("{}.{}", self.inbox, self.next_token)
    }

    /// Queues one message (PUB, or HPUB with headers) for the next flush.
    /// Nothing is queued when it fails: [`NatsError::TooBig`] above the
    /// server's `max_payload`, [`NatsError::BadArgument`] for a bad
    /// subject or header.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<()> {
        if self.io.is_none() {
            return Err(self.gone("not connected (reconnect first)".into()));
        }
        proto::check_subject(subject).map_err(NatsError::BadArgument)?;
        if let Some(r) = reply {
            proto::check_subject(r).map_err(NatsError::BadArgument)?;
        }
        let header = proto::encode_headers(headers)
            .map_err(|e| NatsError::BadArgument(format!("message on {subject}: {e}")))?;
        if header.is_some() && !self.info.headers {
            return Err(NatsError::BadArgument(format!(
                "NATS server {} does not support headers",
                self.server()
            )));
        }
        let size = header.as_ref().map_or(0, Vec::len) + payload.len();
        if size > self.info.max_payload {
            return Err(NatsError::TooBig {
                subject: subject.to_string(),
                size,
                max: self.info.max_payload,
            });
        }
        proto::encode_pub(&mut self.wbuf, subject, reply, header.as_deref(), payload);
        Ok(())
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let Some(io) = self.io.as_mut() else {
            return Err(self.gone("not connected (reconnect first)".into()));
        };
        let res = io.write_all(&self.wbuf).and_then(|()| io.flush());
        self.wbuf.clear();
        res.map_err(|e| {
            // How much of the buffer went out is unknown: the framing is lost.
            self.io = None;
            self.gone(format!("writing: {e}"))
        })
    }

    fn pong(&mut self) -> Result<()> {
        self.wbuf.extend_from_slice(b"PONG\r\n");
        self.flush()
    }

    /// The next whole frame, reading as needed until `deadline`
    /// (`Ok(None)` then).
    fn read_frame(&mut self, deadline: Instant) -> Result<Option<Frame>> {
        loop {
            match proto::parse_frame(&self.rbuf[self.rpos..], self.max_incoming()) {
                Ok(Some((frame, n))) => {
                    self.rpos += n;
                    if self.rpos == self.rbuf.len() {
                        self.rbuf.clear();
                        self.rpos = 0;
                    }
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(reason) => return Err(self.protocol(reason)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let Some(io) = self.io.as_mut() else {
                return Err(self.gone("not connected (reconnect first)".into()));
            };
            if let Err(e) = io.tcp().set_read_timeout(Some(deadline - now)) {
                self.io = None;
                return Err(self.gone(e.to_string()));
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + READ_CHUNK, 0);
            let res = io.read(&mut self.rbuf[len..]);
            self.rbuf.truncate(len + *res.as_ref().unwrap_or(&0));
            match res {
                Ok(0) => {
                    self.io = None;
                    return Err(self.gone("closed by the server".into()));
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.io = None;
                    return Err(self.gone(format!("reading: {e}")));
                }
            }
        }
    }

    /// The next message on our reply inbox, or `Ok(None)` at `deadline`.
    /// Flushes what is queued first; answers server PINGs on the way.
    pub fn next_reply(&mut self, deadline: Instant) -> Result<Option<Msg>> {
        self.flush()?;
        loop {
            let Some(frame) = self.read_frame(deadline)? else {
                return Ok(None);
            };
            match frame {
                Frame::Msg(m) if m.sid == INBOX_SID => return self.to_msg(m).map(Some),
                // No other subscriptions: a stray MSG is not ours.
                Frame::Msg(_) | Frame::Ok | Frame::Pong => {}
                Frame::Ping => self.pong()?,
                Frame::Info(text) => {
                    let server = self.server().to_string();
                    self.info = ServerInfo::parse(&text, &server)?;
                }
                Frame::Err(text) => {
                    // A permissions error leaves the connection open;
                    // after any other -ERR the server closes it.
                    if !text
                        .to_ascii_lowercase()
                        .starts_with("permissions violation")
                    {
                        self.io = None;
                    }
                    return Err(NatsError::Server {
                        server: self.server().to_string(),
                        message: text,
                    });
                }
            }
        }
    }

    fn to_msg(&self, m: RawMsg) -> Result<Msg> {
        let h = match &m.header {
            Some(block) => proto::parse_headers(block).map_err(|reason| NatsError::Protocol {
                server: self.server().to_string(),
                reason: format!("message on {}: {reason}", m.subject),
            })?,
            None => proto::Headers::default(),
        };
        Ok(Msg {
            subject: m.subject,
            status: h.status,
            description: h.description,
            headers: h.headers,
            payload: m.payload,
        })
    }

    /// Sends one request and waits up to `timeout` for its reply. A
    /// status-503 reply is [`NatsError::NoResponders`]; replies to earlier,
    /// abandoned requests are dropped.
    pub fn request(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Msg> {
        let reply = self.new_reply();
        self.publish(subject, Some(&reply), headers, payload)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_reply(deadline)? {
                None => {
                    return Err(NatsError::Timeout {
                        server: self.server().to_string(),
                        subject: subject.to_string(),
                    });
                }
                Some(m) if m.subject == reply => {
                    if m.status == Some(503) {
                        return Err(NatsError::NoResponders {
                            server: self.server().to_string(),
                            subject: subject.to_string(),
                        });
                    }
                    return Ok(m);
                }
                Some(_) => {}
            }
        }
    }

    /// A round trip to the server (PING, wait for its PONG). Replies that
    /// arrive meanwhile are dropped: do not ping with requests in flight.
    pub fn ping(&mut self, timeout: Duration) -> Result<()> {
        self.wbuf.extend_from_slice(b"PING\r\n");
        self.flush()?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_frame(deadline)? {
                Some(Frame::Pong) => return Ok(()),
                Some(Frame::Ping) => self.pong()?,
                Some(Frame::Err(text)) => {
                    return Err(NatsError::Server {
                        server: self.server().to_string(),
                        message: text,
                    });
                }
                Some(_) => {}
                None => {
                    return Err(NatsError::Timeout {
                        server: self.server().to_string(),
                        subject: "PING".into(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
