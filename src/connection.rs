//! One client's connection: command dispatch. The auth gate, writes
//! submitted to the persistence thread with their replies settled in
//! request order, and the reads (PING, AUTH, INFO, LIST, STATS, SLAVES); SUB hands
//! the connection to [`crate::subscription`] (or, with a group, to
//! [`crate::group_sub`]); GROUPS and GROUPDEL are [`crate::group_admin`]'s;
//! frame I/O is [`Wire`]'s.
//!
//! The auth gate: with `auth.token` set, a connection gets `timeout.auth`
//! to authenticate; wrong tokens are paced and limited per connection and
//! per source address ([`crate::auth`]). Until its AUTH succeeds it holds a
//! pre-auth [`Ticket`] ([`crate::preauth`]): if the acceptor evicts it to
//! make room, the connection answers `ERR BUSY` and closes; the ticket also
//! cuts short any AUTH pause.
//! A write the connection will refuse (`NOAUTH`, or `READONLY` on a slave)
//! is refused when its line arrives; its payload is dropped as it streams
//! in, so such a client cannot make the server buffer it.
//!
//! Runs on its own thread (`conn-<peer>`), blocking sockets with a write
//! timeout (`timeout.net.write`) so a client that stops reading cannot hold
//! the thread forever. Writes go to the persistence thread through the
//! broker's [`crate::writer_handle::WriterHandle`] (at most `MAX_INFLIGHT`
//! in flight) and are answered on the socket by the thread that releases
//! the writer's batches ([`crate::reply_sink`]), so after handing a write
//! over this thread goes straight back to reading: one sleep per request,
//! and a pipelining client gets its writes group-committed together.
//! Replies stay in request order because non-write requests first wait
//! for the writes before them, and this thread's own output goes out
//! before it hands over a write. Reads take the broker's topic map lock
//! (shared) and a topic's state lock only briefly.

use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::auth::{self, Verdict};
use crate::broker::Broker;
use crate::preauth::{self, Ticket};
use crate::protocol::{
    ErrCode, Limits, Parsed, ProtoError, Request, encode_count, encode_err, encode_line, encode_ok,
    encode_role, encode_slave, encode_stat, encode_stat_u64, encode_topic,
};
use crate::replication;
use crate::reply_sink::{Published, SocketReplies};
use crate::role::Role;
use crate::stats::{StatValue, Stats};
use crate::storage::log::record::DeleteReason;
use crate::storage::ops::{Reply, ReplySink, SinkTicket};
use crate::storage::ops::{WriteOk, WriteOp};
use crate::storage::view::Topic;
use crate::stream::{Port, Stream};
use crate::subscription;
use crate::wire::{Flow, Input, Wire};
use crate::writer_handle::{self, Asked, CallError, REPLY_TIMEOUT};
use crate::{group_admin, group_sub};

/// Writes a connection may have queued at the writer at once (bounds the
/// replies its socket may owe it).
const MAX_INFLIGHT: usize = 64;

pub struct Conn {
    wire: Wire,
    peer: String,
    /// The peer's source address, as AUTH pacing counts it.
    source: IpAddr,
    broker: Arc<Broker>,
    authed: bool,
    /// Until AUTH succeeds (with `auth.token`): the pre-auth slot.
    preauth: Option<Ticket>,
    /// Until AUTH succeeds: when the connection is closed for want of it.
    auth_deadline: Option<Instant>,
    /// Wrong AUTHs so far.
    auth_failures: u32,
    /// Its writes in flight, answered on its socket in request order by
    /// the thread that releases the writer's batches.
    replies: Arc<SocketReplies>,
    /// The listener it came in on.
    port: Port,
}

impl Drop for Conn {
    /// Before the socket closes: nothing is written to its fd number after.
    fn drop(&mut self) {
        self.replies.close();
    }
}

/// The connection thread's body. `ticket`: its pre-auth slot, with
/// `auth.token` set.
/// `port`: the listener it came in on (a TLS handshake runs here first).
pub fn serve(stream: TcpStream, broker: Arc<Broker>, mut ticket: Option<Ticket>, port: Port) {
    let addr = stream.peer_addr().ok();
    let peer = addr.map_or_else(|| "?".to_string(), |a| a.to_string());
    let ip = addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let stats_broker = Arc::clone(&broker);
    let opened = port.open(stream, &peer);
    match opened.map(|s| Conn::new(s, peer.clone(), ip, broker, ticket.take(), port)) {
        None => {}
        Some(Ok(mut c)) => {
            match c.run() {
                Ok(()) => debug!("{peer}: closed"),
                Err(e) => debug!("{peer}: closed: {e}"),
            }
            ticket = c.preauth.take();
        }
        Some(Err((e, t))) => {
            warn!("{peer}: could not set up connection: {e}");
            ticket = t;
        }
    }
    let b = &stats_broker;
    // An evicted connection's slot already went to the one that evicted it.
    if ticket.is_none_or(|t| b.preauth.leave(&b.stats, t.id())) {
        Stats::sub(&b.stats.connections, 1);
    }
    // The connection's buffers are freed: have them returned to the OS.
    crate::memory::released();
}

impl Conn {
    /// On error, gives the ticket back so the caller can free its slot.
    fn new(
        stream: Stream,
        peer: String,
        ip: IpAddr,
        broker: Arc<Broker>,
        preauth: Option<Ticket>,
        port: Port,
    ) -> Result<Conn, (io::Error, Option<Ticket>)> {
        let cfg = &broker.config;
        let write_timeout = Some(Duration::from_millis(cfg.timeout.net.write_ms));
        if let Err(e) = stream
            .tcp()
            .set_write_timeout(write_timeout)
            .and_then(|()| stream.tcp().set_nodelay(true))
        {
            return Err((e, preauth));
        }
        let limits = Limits {
            max_payload: cfg.limits.max_payload,
            max_batch: cfg.limits.max_batch,
            max_batch_bytes: cfg.limits.max_batch_bytes,
        };
        let authed = cfg.auth.token.is_empty();
        let auth_deadline =
            (!authed).then(|| Instant::now() + Duration::from_millis(cfg.timeout.auth_ms));
        // A TLS session in two halves: the thread releasing this
        // connection's answers encrypts and sends them, as for plain TCP.
        let stream = match stream.split() {
            Ok(s) => s,
            Err(e) => return Err((e, preauth)),
        };
        let wire = Wire::over(stream, limits);
        let replies = SocketReplies::new(wire.raw_fd(), Arc::clone(&broker));
        #[cfg(feature = "tls")]
        let replies = replies.sealed(wire.sealer());
        let replies = Arc::new(replies);
        Ok(Conn {
            wire,
            peer,
            source: preauth::source_of(ip),
            broker,
            authed,
            preauth,
            auth_deadline,
            auth_failures: 0,
            replies,
            port,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            loop {
                if self.auth_expired() {
                    return self.close_unauthenticated();
                }
                if self.evicted() {
                    return self.close_evicted();
                }
                let refusal = self.payload_refusal();
                match self.wire.next_request(refusal.as_ref()) {
                    Parsed::NeedMore => break,
                    Parsed::Request { req, .. } => {
                        if self.handle(req)? == Flow::Close {
                            self.settle()?;
                            self.wire.flush()?;
                            return Ok(());
                        }
                    }
                    Parsed::Error { err, .. } => self.reply_err(&err)?,
                    Parsed::Fatal { err } => {
                        self.reply_err(&err)?;
                        self.wire.flush()?;
                        self.wire.close_after_fatal();
                        return Ok(());
                    }
                }
                if self.wire.out_full() {
                    self.settle()?;
                    self.wire.flush()?;
                }
            }
            // Writes still in flight are answered on the socket by the
            // thread that releases them (through TLS too, encrypted with
            // this session): no need to wait before reading.
            self.wire.flush()?;
            match self.read_more()? {
                Input::Data if !self.wire.is_tls() && self.wire.looks_like_tls() => {
                    return self.close_tls_client();
                }
                Input::Data => {}
                // An eviction shuts the socket's reading side: say why.
                Input::Closed if self.evicted() => return self.close_evicted(),
                Input::Closed => return Ok(()),
                Input::Nothing => return self.close_unauthenticated(),
            }
        }
    }

    /// Blocks for more input; until AUTH succeeds, no longer than its deadline.
    fn read_more(&mut self) -> io::Result<Input> {
        match self.auth_deadline {
            Some(deadline) if !self.authed => self.wire.read_until(deadline),
            _ => Ok(match self.wire.read()? {
                0 => Input::Closed,
                _ => Input::Data,
            }),
        }
    }

    /// A TLS ClientHello on the plain port: one plain-text line (which the
    /// TLS client reports as a broken handshake; a person with `nc` or a
    /// log reads it), then close.
    fn close_tls_client(&mut self) -> io::Result<()> {
        info!("{}: a TLS client on the plain port; closed", self.peer);
        let why = self.port.tls_hint();
        self.reply_err(&ProtoError::new(ErrCode::BadReq, why))?;
        self.wire.flush()?;
        self.wire.close_after_fatal();
        Ok(())
    }

    fn auth_expired(&self) -> bool {
        !self.authed && self.auth_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// `timeout.auth` passed without a successful AUTH.
    fn close_unauthenticated(&mut self) -> io::Result<()> {
        debug!("{}: not authenticated in time; closing", self.peer);
        self.reply_err(&ProtoError::new(ErrCode::NoAuth, "authentication timeout"))?;
        self.wire.flush()?;
        self.wire.close_after_fatal();
        Ok(())
    }

    /// True once the acceptor closed this unauthenticated connection to
    /// make room for a newer one.
    fn evicted(&self) -> bool {
        !self.authed && self.preauth.as_ref().is_some_and(Ticket::evicted)
    }

    /// Evicted: `ERR BUSY` (what it would have got had it come last), close.
    fn close_evicted(&mut self) -> io::Result<()> {
        debug!("{}: closed to make room for a newer connection", self.peer);
        let why = "closed to make room: too many connections not yet authenticated \
                   (limits.maxUnauthenticated); send AUTH right after connecting";
        self.reply_err(&ProtoError::new(ErrCode::Busy, why))?;
        self.wire.flush()?;
        self.wire.close_after_fatal();
        Ok(())
    }

    /// Waits `d` (pacing, not synchronisation); false if the connection
    /// was evicted meanwhile.
    fn pause(&self, d: Duration) -> bool {
        match &self.preauth {
            Some(t) if !self.authed => t.pause(d),
            _ => {
                std::thread::sleep(d);
                true
            }
        }
    }

    /// What every PUB, MPUB and DPUB would get now whatever its payload,
    /// so the wire need not buffer the payload.
    fn payload_refusal(&self) -> Option<ProtoError> {
        if !self.authed {
            Some(no_auth())
        } else if self.broker.role() == Role::Slave {
            Some(read_only())
        } else {
            None
        }
    }

    /// Waits for every write in flight to be answered; replies its socket
    /// did not take yet go first in the output.
    fn settle(&mut self) -> io::Result<()> {
        self.replies.settle(&mut self.wire.out, REPLY_TIMEOUT)
    }

    fn reply_err(&mut self, err: &ProtoError) -> io::Result<()> {
        self.settle()?;
        encode_err(&mut self.wire.out, err);
        Ok(())
    }

    fn submit(&mut self, op: WriteOp) -> io::Result<()> {
        if self.broker.role() == Role::Slave {
            return self.reply_err(&read_only());
        }
        // Its answer is written to the socket by another thread: what this
        // thread has queued goes out first.
        if !self.wire.out.is_empty() {
            self.wire.flush()?;
        }
        let published = publish_bytes(&op).map(|(topic, bytes)| Published {
            bytes,
            topic: self.broker.topic(topic),
        });
        let in_flight = self.replies.handing(published);
        let sink: Arc<dyn ReplySink> = self.replies.clone();
        match self
            .broker
            .writer
            .submit(op, Reply::Sink(SinkTicket::new(sink)))
        {
            // At the cap: the answers come before more is read.
            Ok(()) if in_flight >= MAX_INFLIGHT => self.settle(),
            Ok(()) => Ok(()),
            Err(e) => {
                self.replies.not_handed();
                self.reply_err(&writer_handle::reply(&e, Asked::Write))
            }
        }
    }

    fn handle(&mut self, req: Request) -> io::Result<Flow> {
        if !self.authed && !matches!(req, Request::Ping | Request::Auth { .. } | Request::Quit) {
            self.reply_err(&no_auth())?;
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
            Request::Ping => encode_line(&mut self.wire.out, "PONG"),
            Request::Auth { token } => return self.auth(&token),
            Request::Quit => {
                encode_ok(&mut self.wire.out, &[]);
                return Ok(Flow::Close);
            }
            Request::Info { topic } => match self.broker.topic(&topic) {
                Some(t) => put_topic(&mut self.wire.out, &t),
                None => encode_err(
                    &mut self.wire.out,
                    &ProtoError::new(ErrCode::NoTopic, format!("no topic {topic}")),
                ),
            },
            Request::List => {
                let topics = self.broker.topics();
                encode_count(&mut self.wire.out, "TOPICS", topics.len() as u64);
                for t in &topics {
                    put_topic(&mut self.wire.out, t);
                }
            }
            Request::Stats => self.put_stats(),
            Request::Sub(args) if args.group.is_some() => {
                return group_sub::run(&mut self.wire, &self.broker, &self.peer, args);
            }
            Request::Sub(args) => {
                return subscription::run(&mut self.wire, &self.broker, &self.peer, args);
            }
            Request::Ack | Request::Stop => encode_err(
                &mut self.wire.out,
                &ProtoError::new(
                    ErrCode::BadReq,
                    "ACK and STOP only answer a subscription batch",
                ),
            ),
            Request::Groups { topic } => {
                group_admin::put_groups(&mut self.wire.out, &self.broker, &topic)
            }
            Request::GroupDel { topic, group } => {
                group_admin::groupdel(&mut self.wire.out, &self.broker, &topic, &group)
            }
            Request::Repl(args) => {
                return replication::sender::run(&mut self.wire, &self.broker, &self.peer, args);
            }
            Request::Promote => self.promote(),
            Request::Slaves => self.put_slaves(),
            Request::Role => {
                let b = &self.broker;
                let (epoch, history) = (b.repl.epoch(), b.repl.history());
                let role = b.role().as_str();
                encode_role(&mut self.wire.out, role, epoch, history, b.last_event_id());
            }
            Request::Create { .. }
            | Request::Delete { .. }
            | Request::Pub { .. }
            | Request::MPub { .. }
            | Request::DPub { .. } => {
                // Routed to `submit` by `handle`; kept total for the compiler.
                encode_err(
                    &mut self.wire.out,
                    &ProtoError::new(ErrCode::Internal, "write routed as a read"),
                );
            }
        }
        Ok(Flow::Continue)
    }

    /// PROMOTE: this slave stops replicating and becomes a master.
    fn promote(&mut self) {
        let b = &self.broker;
        if b.role() != Role::Slave {
            let e = ProtoError::new(ErrCode::BadReq, "this server is a master already");
            encode_err(&mut self.wire.out, &e);
            return;
        }
        // History 0: its first sync or a full resync has not finished, so
        // its data is not its master's; as a master it would start a new
        // history without the rest (and an old master could not rejoin).
        if b.repl.history() == 0 {
            let e = ProtoError::new(
                ErrCode::BadReq,
                "this slave has no complete copy of its master's data yet (its first sync or a \
                 full resync has not finished): promoting it would make a master without that \
                 data; wait for repl_state streaming in STATS, or start it as a master on purpose",
            );
            encode_err(&mut self.wire.out, &e);
            return;
        }
        // First: the receiver stops and the writer takes no more records.
        b.set_role(Role::Master);
        b.repl
            .promoted
            .store(true, std::sync::atomic::Ordering::Relaxed);
        match b.writer.call(WriteOp::Promote) {
            Ok(WriteOk::Id(id)) => {
                info!(
                    "{}: PROMOTE: now a master, epoch starts at event id {id}",
                    self.peer
                );
                // Durable, so a restart with the old unit's --role slave
                // keeps this server the master.
                if let Err(e) = replication::peer::claim(b, Role::Master, b.repl.epoch()) {
                    error!(
                        "{}: PROMOTE done, but data/role could not record it ({e}): a \
                         restart with --role slave would make this server a slave again",
                        self.peer
                    );
                }
                encode_ok(&mut self.wire.out, &[id]);
            }
            Ok(_) => {
                // Not an answer to PROMOTE: as good as none.
                b.set_role(Role::Slave);
                let e = writer_handle::reply(&CallError::Timeout, Asked::Once);
                encode_err(&mut self.wire.out, &e);
            }
            Err(e) => {
                // Still a master: a slave that took no new epoch must not
                // take writes either, so refuse them until restart.
                b.set_role(Role::Slave);
                encode_err(&mut self.wire.out, &writer_handle::reply(&e, Asked::Once));
            }
        }
    }

    /// AUTH: checked when its source address's turn comes (at once unless
    /// it sent wrong tokens lately; see [`crate::auth::SourcePacer`]).
    fn auth(&mut self, token: &str) -> io::Result<Flow> {
        let want = &self.broker.config.auth.token;
        if want.is_empty() {
            encode_ok(&mut self.wire.out, &[]);
            return Ok(Flow::Continue);
        }
        let matches = auth::token_matches(want, token);
        let mut deadline = Instant::now() + auth::MAX_PACE_WAIT;
        if let Some(d) = self.auth_deadline.filter(|_| !self.authed) {
            deadline = deadline.min(d);
        }
        // Each round waits for a turn it was told of; a few suffice.
        for _ in 0..8 {
            match self.broker.auth_pacer.attempt(self.source, matches) {
                Verdict::Accepted => return self.authenticated(),
                Verdict::Wrong => return self.wrong_token(),
                Verdict::Wait(d) if Instant::now() + d <= deadline => {
                    if !self.pause(d) {
                        self.close_evicted()?;
                        return Ok(Flow::Close);
                    }
                }
                Verdict::Wait(_) => break,
            }
        }
        Stats::add(&self.broker.stats.auth_throttled, 1);
        let msg = format!(
            "too many wrong tokens from {}; this one was not checked, try again later",
            self.source
        );
        encode_err(&mut self.wire.out, &ProtoError::new(ErrCode::NoAuth, msg));
        self.wire.flush()?;
        self.wire.close_after_fatal();
        Ok(Flow::Close)
    }

    /// The right token: the pre-auth slot is given up for a full one.
    fn authenticated(&mut self) -> io::Result<Flow> {
        if let Some(t) = &self.preauth {
            if !self.broker.preauth.leave(&self.broker.stats, t.id()) {
                // Evicted a moment ago: its slot is gone.
                self.close_evicted()?;
                return Ok(Flow::Close);
            }
            self.preauth = None;
        }
        self.authed = true;
        encode_ok(&mut self.wire.out, &[]);
        Ok(Flow::Continue)
    }

    /// A wrong AUTH: answered late, and the last one allowed closes.
    fn wrong_token(&mut self) -> io::Result<Flow> {
        self.auth_failures += 1;
        Stats::add(&self.broker.stats.auth_failures, 1);
        if let Some(n) = self.broker.auth_failures.record() {
            warn!(
                "{}: AUTH with a wrong token ({n} wrong token(s) on all connections \
                 since the last such line; at most one line per {} s)",
                self.peer,
                auth::LOG_INTERVAL.as_secs()
            );
        }
        // Pacing, not synchronisation: each guess costs the guesser time.
        if !self.pause(auth::FAIL_DELAY) {
            self.close_evicted()?;
            return Ok(Flow::Close);
        }
        if self.auth_failures < auth::MAX_FAILURES {
            encode_err(
                &mut self.wire.out,
                &ProtoError::new(ErrCode::NoAuth, "wrong token"),
            );
            return Ok(Flow::Continue);
        }
        let msg = format!("wrong token; closing after {} tries", auth::MAX_FAILURES);
        encode_err(&mut self.wire.out, &ProtoError::new(ErrCode::NoAuth, msg));
        self.wire.flush()?;
        // Pipelined input may be unread: drain it so the ERR is not reset away.
        self.wire.close_after_fatal();
        Ok(Flow::Close)
    }

    fn put_stats(&mut self) {
        let b = &self.broker;
        let pairs = b.stats.report(&b.gauges());
        encode_count(&mut self.wire.out, "STATS", pairs.len() as u64);
        for (name, value) in pairs {
            match value {
                StatValue::Text(t) => encode_stat(&mut self.wire.out, name, &t),
                StatValue::Num(n) => encode_stat_u64(&mut self.wire.out, name, n),
            }
        }
    }

    /// SLAVES: the slaves connected to this master; none on a slave.
    fn put_slaves(&mut self) {
        let b = &self.broker;
        let slaves = match b.role() {
            Role::Master => b.repl.slaves(),
            Role::Slave => Vec::new(),
        };
        encode_count(&mut self.wire.out, "SLAVES", slaves.len() as u64);
        for s in &slaves {
            let lag = replication::sender::slave_lag(b, s);
            let out = &mut self.wire.out;
            encode_slave(
                out,
                &s.addr,
                s.acked_id,
                lag.events,
                lag.ms,
                s.state.as_str(),
            );
        }
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

/// The topic and payload bytes of a write that publishes; `None` for
/// writes that do not.
fn publish_bytes(op: &WriteOp) -> Option<(&str, u64)> {
    match op {
        WriteOp::Pub { topic, msg } | WriteOp::DPub { topic, msg, .. } => {
            Some((topic, msg.payload.len() as u64))
        }
        WriteOp::MPub { topic, msgs } => {
            Some((topic, msgs.iter().map(|m| m.payload.len() as u64).sum()))
        }
        _ => None,
    }
}

fn no_auth() -> ProtoError {
    ProtoError::new(ErrCode::NoAuth, "authenticate with AUTH <token> first")
}

fn read_only() -> ProtoError {
    ProtoError::new(
        ErrCode::ReadOnly,
        "this server is a slave; write to the master",
    )
}
