//! One client's connection: parse requests, answer them in order, run
//! subscriptions.
//!
//! Runs on its own thread (`conn-<peer>`), blocking sockets with a write
//! timeout (`timeout.net.write`) so a client that stops reading cannot hold
//! the thread forever. Writes go to the persistence thread through the
//! bounded channel; every write request that is already in the input buffer
//! is submitted before the first reply is awaited, so a pipelining client
//! gets its writes group-committed together. Replies stay in request order
//! because non-write requests first wait for the writes before them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use log::{debug, info, warn};

use crate::broker::{Broker, Topic};
use crate::cli::Role;
use crate::protocol::{
    self, ErrCode, Limits, Parsed, ProtoError, Request, SubArgs, SubFrom, encode_count, encode_end,
    encode_err, encode_line, encode_msg, encode_ok, encode_stat, encode_stat_u64, encode_topic,
    parse_request,
};
use crate::stats::{Gauges, StatValue, Stats};
use crate::storage::index::{self, Entry};
use crate::storage::reader::{ReadErrorKind, Reader};
use crate::storage::record::DeleteReason;
use crate::storage::writer::{WriteOk, WriteOp, WriteReq, WriteResult};

/// Writes a connection may have queued at the writer at once; also the
/// capacity of its reply channel, so the writer never blocks on a reply.
const MAX_INFLIGHT: usize = 64;
/// Flush replies once this much output is pending, even mid-pipeline.
const OUT_FLUSH_BYTES: usize = 64 << 10;
/// Bytes read from the socket at a time: small while the client sends
/// small requests (an idle connection then costs a few KiB), doubling up to
/// the maximum while reads keep filling the buffer.
const MIN_READ: usize = 4 << 10;
const READ_CHUNK: usize = 64 << 10;
/// A batch stops growing past this many record bytes (at least one message).
const MAX_BATCH_BYTES: u64 = 1 << 20;
/// How often an idle subscriber checks its socket for STOP or a hang-up.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long the writer may take to answer before the connection gives up.
const WRITER_REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// After a framing error, how long to drain the client's input before
/// closing (closing with unread input makes Linux send RST, losing the ERR).
const FATAL_DRAIN: Duration = Duration::from_millis(200);

/// What the caller should do after handling a request.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Input during a subscription.
enum SubInput {
    Ack,
    Stop,
    Quit,
    /// Nothing arrived (idle poll) or the wait timed out.
    Nothing,
    /// The client hung up, or the framing is lost (ERR already queued).
    Closed,
}

pub struct Conn {
    stream: TcpStream,
    peer: String,
    broker: Arc<Broker>,
    limits: Limits,
    inbuf: Vec<u8>,
    /// First unconsumed byte of `inbuf`.
    start: usize,
    out: Vec<u8>,
    authed: bool,
    reply_tx: Sender<WriteResult>,
    reply_rx: Receiver<WriteResult>,
    inflight: usize,
    entries: Vec<Entry>,
    reader: Reader,
    read_size: usize,
}

/// The connection thread's body.
pub fn serve(stream: TcpStream, broker: Arc<Broker>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".to_string());
    let stats_broker = Arc::clone(&broker);
    match Conn::new(stream, peer.clone(), broker) {
        Ok(mut c) => match c.run() {
            Ok(()) => debug!("{peer}: closed"),
            Err(e) => debug!("{peer}: closed: {e}"),
        },
        Err(e) => warn!("{peer}: could not set up connection: {e}"),
    }
    Stats::sub(&stats_broker.stats.connections, 1);
}

impl Conn {
    fn new(stream: TcpStream, peer: String, broker: Arc<Broker>) -> io::Result<Conn> {
        let cfg = &broker.config;
        stream.set_write_timeout(Some(Duration::from_millis(cfg.timeout.net_write_ms)))?;
        stream.set_nodelay(true)?;
        let limits = Limits {
            max_payload: cfg.limits.max_payload,
            max_batch: cfg.limits.max_batch,
        };
        let authed = cfg.auth.token.is_empty();
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(MAX_INFLIGHT);
        Ok(Conn {
            stream,
            peer,
            broker,
            limits,
            inbuf: Vec::new(),
            start: 0,
            out: Vec::new(),
            authed,
            reply_tx,
            reply_rx,
            inflight: 0,
            entries: Vec::new(),
            reader: Reader::new(),
            read_size: MIN_READ,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            loop {
                match parse_request(&self.inbuf[self.start..], &self.limits) {
                    Parsed::NeedMore => break,
                    Parsed::Request { req, consumed } => {
                        self.start += consumed;
                        if self.handle(req)? == Flow::Close {
                            self.settle()?;
                            self.flush()?;
                            return Ok(());
                        }
                    }
                    Parsed::Error { err, consumed } => {
                        self.start += consumed;
                        self.reply_err(&err)?;
                    }
                    Parsed::Fatal { err } => {
                        self.reply_err(&err)?;
                        self.flush()?;
                        self.close_after_fatal();
                        return Ok(());
                    }
                }
                if self.out.len() >= OUT_FLUSH_BYTES {
                    self.settle()?;
                    self.flush()?;
                }
            }
            self.settle()?;
            self.flush()?;
            if self.fill(false)? == 0 {
                return Ok(());
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
            self.stream.set_nonblocking(true)?;
        }
        let res = loop {
            match self.stream.read(&mut self.inbuf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        if nonblocking {
            self.stream.set_nonblocking(false)?;
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

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
            if self.out.capacity() > 4 * OUT_FLUSH_BYTES {
                self.out.shrink_to(OUT_FLUSH_BYTES);
            }
        }
        Ok(())
    }

    /// Sends the ERR, then drains input briefly so the close does not RST it away.
    fn close_after_fatal(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + FATAL_DRAIN;
        let mut sink = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Waits for every write in flight and queues its reply.
    fn settle(&mut self) -> io::Result<()> {
        while self.inflight > 0 {
            let res = match self.reply_rx.recv_timeout(WRITER_REPLY_TIMEOUT) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the writer did not answer in time",
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    Err(ProtoError::new(ErrCode::Internal, "writer stopped"))
                }
            };
            self.inflight -= 1;
            match res {
                Ok(WriteOk::Id(id)) => encode_ok(&mut self.out, &[id]),
                Ok(WriteOk::Range(a, b)) => encode_ok(&mut self.out, &[a, b]),
                Ok(WriteOk::Done) => encode_ok(&mut self.out, &[]),
                Err(e) => encode_err(&mut self.out, &e),
            }
        }
        Ok(())
    }

    fn reply_err(&mut self, err: &ProtoError) -> io::Result<()> {
        self.settle()?;
        encode_err(&mut self.out, err);
        Ok(())
    }

    fn submit(&mut self, op: WriteOp) -> io::Result<()> {
        if self.broker.role == Role::Slave {
            return self.reply_err(&ProtoError::new(
                ErrCode::ReadOnly,
                "this server is a slave; write to the master",
            ));
        }
        if self.inflight >= MAX_INFLIGHT {
            self.settle()?;
        }
        let req = WriteReq {
            op,
            reply: self.reply_tx.clone(),
        };
        let wait = Duration::from_millis(self.broker.config.worker.send_timeout_ms);
        match self.broker.writer.send_timeout(req, wait) {
            Ok(()) => {
                self.inflight += 1;
                Ok(())
            }
            Err(SendTimeoutError::Timeout(_)) => self.reply_err(&ProtoError::new(
                ErrCode::Internal,
                "the writer queue is full; nothing was written, try again",
            )),
            Err(SendTimeoutError::Disconnected(_)) => self.reply_err(&ProtoError::new(
                ErrCode::Internal,
                "the server is shutting down; nothing was written",
            )),
        }
    }

    fn handle(&mut self, req: Request) -> io::Result<Flow> {
        if !self.authed && !matches!(req, Request::Ping | Request::Auth { .. } | Request::Quit) {
            self.reply_err(&ProtoError::new(
                ErrCode::NoAuth,
                "authenticate with AUTH <token> first",
            ))?;
            return Ok(Flow::Continue);
        }
        match req {
            Request::Create { topic, life_ms } => {
                self.submit(WriteOp::Create { topic, life_ms })?
            }
            Request::Delete { topic } => self.submit(WriteOp::Delete {
                topic,
                reason: DeleteReason::Deleted,
                create_id: None,
            })?,
            Request::Pub { topic, msg } => self.submit(WriteOp::Pub { topic, msg })?,
            Request::MPub { topic, msgs } => self.submit(WriteOp::MPub { topic, msgs })?,
            Request::DPub {
                topic,
                delay_ms,
                msg,
            } => {
                let max = self.broker.config.limits.max_delay_ms;
                if delay_ms > max {
                    self.reply_err(&ProtoError::new(
                        ErrCode::BadReq,
                        format!("delay {delay_ms} ms is over limits.maxDelayMs ({max})"),
                    ))?;
                } else {
                    self.submit(WriteOp::DPub {
                        topic,
                        delay_ms,
                        msg,
                    })?;
                }
            }
            other => {
                self.settle()?;
                return self.handle_read(other);
            }
        }
        Ok(Flow::Continue)
    }

    /// Requests that do not write; called with nothing in flight.
    fn handle_read(&mut self, req: Request) -> io::Result<Flow> {
        match req {
            Request::Ping => encode_line(&mut self.out, "PONG"),
            Request::Auth { token } => {
                let want = &self.broker.config.auth.token;
                if want.is_empty() || constant_time_eq(want.as_bytes(), token.as_bytes()) {
                    self.authed = true;
                    encode_ok(&mut self.out, &[]);
                } else {
                    warn!("{}: AUTH with a wrong token", self.peer);
                    encode_err(
                        &mut self.out,
                        &ProtoError::new(ErrCode::NoAuth, "wrong token"),
                    );
                }
            }
            Request::Quit => {
                encode_ok(&mut self.out, &[]);
                return Ok(Flow::Close);
            }
            Request::Info { topic } => match self.broker.topic(&topic) {
                Some(t) => put_topic(&mut self.out, &t),
                None => encode_err(
                    &mut self.out,
                    &ProtoError::new(ErrCode::NoTopic, format!("no topic {topic}")),
                ),
            },
            Request::List => {
                let topics = self.broker.topics();
                encode_count(&mut self.out, "TOPICS", topics.len() as u64);
                for t in &topics {
                    put_topic(&mut self.out, t);
                }
            }
            Request::Stats => self.put_stats(),
            Request::Sub(args) => return self.subscribe(args),
            Request::Ack | Request::Stop => encode_err(
                &mut self.out,
                &ProtoError::new(
                    ErrCode::BadReq,
                    "ACK and STOP only answer a subscription batch",
                ),
            ),
            Request::Groups { .. } => not_yet(&mut self.out, "GROUPS"),
            Request::Repl { .. } => not_yet(&mut self.out, "REPL"),
            Request::Promote => not_yet(&mut self.out, "PROMOTE"),
            Request::Create { .. }
            | Request::Delete { .. }
            | Request::Pub { .. }
            | Request::MPub { .. }
            | Request::DPub { .. } => {
                // Routed to `submit` by `handle`; kept total for the compiler.
                encode_err(
                    &mut self.out,
                    &ProtoError::new(ErrCode::Internal, "write routed as a read"),
                );
            }
        }
        Ok(Flow::Continue)
    }

    fn put_stats(&mut self) {
        let b = &self.broker;
        let pairs = b.stats.report(&Gauges {
            role: b.role,
            last_event_id: b.last_event_id(),
            topics: b.topic_count() as u64,
            uptime_ms: b.started.elapsed().as_millis() as u64,
            segments: b.segments.len() as u64,
        });
        encode_count(&mut self.out, "STATS", pairs.len() as u64);
        for (name, value) in pairs {
            match value {
                StatValue::Text(t) => encode_stat(&mut self.out, name, t),
                StatValue::Num(n) => encode_stat_u64(&mut self.out, name, n),
            }
        }
    }

    // ---- subscriptions -------------------------------------------------

    fn subscribe(&mut self, args: SubArgs) -> io::Result<Flow> {
        let Some(topic) = self.broker.topic(&args.topic) else {
            encode_err(
                &mut self.out,
                &ProtoError::new(ErrCode::NoTopic, format!("no topic {}", args.topic)),
            );
            return Ok(Flow::Continue);
        };
        if args.group.is_some() && self.broker.role == Role::Slave {
            encode_err(
                &mut self.out,
                &ProtoError::new(ErrCode::ReadOnly, "group subscriptions need the master"),
            );
            return Ok(Flow::Continue);
        }
        if args.group.is_some() || args.from == SubFrom::Committed {
            encode_err(
                &mut self.out,
                &ProtoError::new(ErrCode::BadReq, "consumer groups are not supported yet"),
            );
            return Ok(Flow::Continue);
        }
        let cfg = &self.broker.config;
        let batch = args
            .batch
            .unwrap_or(cfg.sub.default_batch)
            .clamp(1, cfg.limits.max_batch);
        let ack_wait = Duration::from_millis(args.ack_ms.unwrap_or(cfg.sub.default_ack_timeout_ms));
        let alive = Duration::from_millis(cfg.timeout.server_alive_ms);
        let st = topic.state();
        let after = match args.from {
            SubFrom::After(n) => n,
            SubFrom::Latest | SubFrom::Committed => st.last_id,
        };
        let mut next = match index::search_after(&topic.index, st.first_entry, st.entries, after) {
            Ok(n) => n,
            Err(e) => {
                encode_err(
                    &mut self.out,
                    &ProtoError::new(
                        ErrCode::Internal,
                        format!("reading the index of {}: {e}", topic.name),
                    ),
                );
                return Ok(Flow::Continue);
            }
        };
        encode_ok(&mut self.out, &[]);
        self.flush()?;
        Stats::add(&self.broker.stats.subscribers, 1);
        // `after` may be above every id stored so far: entries written
        // later can still be <= after, so it stays a floor until passed.
        let floor = (after > st.last_id).then_some(after);
        let res = self.sub_loop(&topic, &mut next, floor, batch, ack_wait, alive);
        Stats::sub(&self.broker.stats.subscribers, 1);
        res
    }

    fn sub_loop(
        &mut self,
        topic: &Topic,
        next: &mut u64,
        mut floor: Option<u64>,
        batch: usize,
        ack_wait: Duration,
        alive: Duration,
    ) -> io::Result<Flow> {
        let mut last_sent = Instant::now();
        loop {
            let until_alive = alive.saturating_sub(last_sent.elapsed());
            let st = topic.wait_beyond(*next, until_alive.min(IDLE_POLL));
            if let Some(reason) = st.ended {
                encode_end(&mut self.out, reason.as_str());
                self.flush()?;
                return Ok(Flow::Continue);
            }
            *next = (*next).max(st.first_entry);
            if let Some(after) = floor
                && st.entries > *next
            {
                match index::search_after(&topic.index, *next, st.entries, after) {
                    Ok(n) => *next = n,
                    Err(e) => {
                        let msg = format!("reading the index of {}: {e}", topic.name);
                        encode_err(&mut self.out, &ProtoError::new(ErrCode::Internal, msg));
                        self.flush()?;
                        return Ok(Flow::Continue);
                    }
                }
                if *next < st.entries {
                    floor = None; // ids only grow from here
                }
            }
            if st.entries > *next {
                let want = batch.min((st.entries - *next) as usize);
                let sent = match self.put_batch(topic, *next, want) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!("{}: subscription to {} failed: {e}", self.peer, topic.name);
                        encode_err(&mut self.out, &ProtoError::new(ErrCode::Internal, e));
                        self.flush()?;
                        return Ok(Flow::Continue);
                    }
                };
                self.flush()?;
                *next += sent as u64;
                last_sent = Instant::now();
                let input = self.sub_input(Some(ack_wait))?;
                if let Some(flow) = self.sub_end(&input) {
                    return Ok(flow);
                }
                match input {
                    SubInput::Ack => continue,
                    _ => {
                        info!(
                            "{}: no ACK within {} ms on {}; closing",
                            self.peer,
                            ack_wait.as_millis(),
                            topic.name
                        );
                        return Ok(Flow::Close);
                    }
                }
            }
            // Idle: STOP, QUIT or a hang-up may arrive; a stray ACK is ignored.
            let input = self.sub_input(None)?;
            if let Some(flow) = self.sub_end(&input) {
                return Ok(flow);
            }
            if last_sent.elapsed() >= alive {
                encode_line(&mut self.out, "ALIVE");
                self.flush()?;
                last_sent = Instant::now();
            }
        }
    }

    /// STOP, QUIT and a hang-up end a subscription the same way wherever
    /// they arrive; `None` for anything else.
    fn sub_end(&mut self, input: &SubInput) -> Option<Flow> {
        match input {
            SubInput::Stop => {
                encode_ok(&mut self.out, &[]);
                Some(Flow::Continue)
            }
            SubInput::Quit => {
                encode_ok(&mut self.out, &[]);
                Some(Flow::Close)
            }
            SubInput::Closed => Some(Flow::Close),
            SubInput::Ack | SubInput::Nothing => None,
        }
    }

    /// Reads what the subscriber sent: blocking up to `wait` (after a batch)
    /// or without blocking (`None`, while idle).
    fn sub_input(&mut self, wait: Option<Duration>) -> io::Result<SubInput> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            match parse_request(&self.inbuf[self.start..], &self.limits) {
                Parsed::Request { req, consumed } => {
                    self.start += consumed;
                    match req {
                        Request::Ack => return Ok(SubInput::Ack),
                        Request::Stop => return Ok(SubInput::Stop),
                        Request::Quit => return Ok(SubInput::Quit),
                        _ => {
                            encode_err(
                                &mut self.out,
                                &ProtoError::new(
                                    ErrCode::BadReq,
                                    "only ACK, STOP or QUIT during a subscription",
                                ),
                            );
                            self.flush()?;
                        }
                    }
                }
                Parsed::Error { err, consumed } => {
                    self.start += consumed;
                    encode_err(&mut self.out, &err);
                    self.flush()?;
                }
                Parsed::Fatal { err } => {
                    encode_err(&mut self.out, &err);
                    self.flush()?;
                    self.close_after_fatal();
                    return Ok(SubInput::Closed);
                }
                Parsed::NeedMore => {
                    let res = match deadline {
                        None => self.fill(true),
                        Some(d) => {
                            let Some(left) = d.checked_duration_since(Instant::now()) else {
                                return Ok(SubInput::Nothing);
                            };
                            if left.is_zero() {
                                return Ok(SubInput::Nothing);
                            }
                            self.stream.set_read_timeout(Some(left))?;
                            let r = self.fill(false);
                            self.stream.set_read_timeout(None)?;
                            r
                        }
                    };
                    match res {
                        Ok(0) => return Ok(SubInput::Closed),
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            if deadline.is_none() {
                                return Ok(SubInput::Nothing);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Queues `BATCH n` and up to `want` messages starting at entry `from`;
    /// returns how many were queued. On error nothing is queued.
    fn put_batch(&mut self, topic: &Topic, from: u64, want: usize) -> Result<usize, String> {
        self.entries.clear();
        index::read_entries(&topic.index, from, want, &mut self.entries)
            .map_err(|e| format!("reading the index of {}: {e}", topic.name))?;
        // Bound the batch by bytes, keeping at least one message.
        let mut bytes = 0u64;
        let mut n = 0;
        for e in &self.entries {
            if n > 0 && bytes + u64::from(e.len) > MAX_BATCH_BYTES {
                break;
            }
            bytes += u64::from(e.len);
            n += 1;
        }
        let mark = self.out.len();
        encode_count(&mut self.out, "BATCH", n as u64);
        let out = &mut self.out;
        let res = self.reader.read(
            &self.broker.segments,
            &topic.name,
            &self.entries[..n],
            |m| encode_msg(out, m.event_id, m.timestamp_ms, m.headers, m.payload),
        );
        if let Err(e) = res {
            // A batch is announced with its count, so a failed one is taken
            // back, except (as before the reader was split out) when no
            // segment held a record: then what was queued stays.
            if !matches!(e.kind, ReadErrorKind::NoSegment) {
                self.out.truncate(mark);
            }
            return Err(e.to_string());
        }
        Ok(n)
    }
}

fn put_topic(out: &mut Vec<u8>, t: &Topic) {
    let st = t.state();
    encode_topic(
        out,
        &t.name,
        t.created_ms,
        t.expires_ms,
        st.messages(),
        if st.messages() > 0 { st.first_id } else { 0 },
        if st.messages() > 0 { st.last_id } else { 0 },
    );
}

fn not_yet(out: &mut Vec<u8>, cmd: &str) {
    protocol::encode_err(
        out,
        &ProtoError::new(
            ErrCode::Unknown,
            format!("{cmd} is not supported by this server version"),
        ),
    );
}

/// Compares secrets without an early exit that leaks the matching prefix length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
