//! The master's side of replication: a connection that sent `REPL` becomes
//! the sender of one slave, on its own connection thread.
//!
//! It asks the writer how to serve the slave (stream, full resync with a
//! snapshot of the state, divergence, refusal), then streams the log with
//! pread at its own pace, never past the writer's durable tail, so a slow
//! or frozen slave only ever slows itself; to an async slave in bursts of
//! up to 2 ms ([`BURST_WAIT`]). Its `repl-ack-<peer>` thread
//! reads the slave's `ACK <id>` lines as they come and publishes what the
//! slave has (SLAVES, STATS, the retention hold) in the broker's
//! replication state. The sender sends the master's id lease when it
//! moves, a heartbeat every second when idle, and with every `RECS` frame
//! (to a slave that names itself) where the master stands, so the slave
//! knows its lag under load too.
//!
//! One setting, `replication.slaveTimeoutMs`, drops a slave: one that
//! sends nothing for that long, and one that takes nothing for that long
//! (the socket's write timeout, instead of `timeout.net.write`, so a frozen
//! slave whose buffers are full is not dropped sooner). A new session of
//! the same slave (`node=`) ends this one. [`slave_lag`] is the master's
//! side of the lag definition (`stats::Lag`). Frames are the codec's in
//! `protocol::repl` and documented in README (Replication).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::broker::Broker;
use crate::protocol::repl::{
    Answer, Frame, MasterPos, ReplOk, encode_frame, encode_recs, encode_repl_ok, parse_ack,
};
use crate::protocol::{ErrCode, MAX_LINE_BYTES, ProtoError, ReplArgs, encode_err};
use crate::replication::error::ReplError;
use crate::replication::state::{Kick, LinkState, SlaveInfo};
use crate::stats::Lag;
use crate::storage::log::logread::{self, CHUNK_BYTES};
use crate::storage::log::record;
use crate::storage::now_ms;
use crate::storage::ops::{ReplMode, SnapItem, WriteOk, WriteOp};
use crate::wire::{Flow, Wire};
use crate::writer_handle::{self, Asked, CallError};

/// A heartbeat goes out when nothing else did for this long.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the writer may take to plan.
const PLAN_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for new durable records before checking the heartbeat.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// To an async slave records go in bursts: a sender that finds fewer new
/// durable bytes than this waits [`BURST_WAIT`] once for more (Kafka's
/// `fetch.min.bytes` and `fetch.max.wait.ms`), so the sender, the slave's
/// receiver and the slave's writer (with its fsync) run once per burst, not
/// once per master commit. Not under semi-sync or `minSlaves`, where a
/// publisher waits for the slave.
const BURST_BYTES: u64 = 64 << 10;
/// The most a record waits for others to share its burst.
const BURST_WAIT: Duration = Duration::from_millis(2);
/// The ACK reader only parses short lines.
const ACK_STACK_BYTES: usize = 64 << 10;

/// Unregisters the slave however the sender ends.
struct Registered<'a> {
    broker: &'a Broker,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.broker.repl.remove_slave(self.id);
    }
}

/// Serves `REPL` on `wire` until the slave goes away. Returns to command
/// mode only when the request is refused.
pub fn run(wire: &mut Wire, broker: &Arc<Broker>, peer: &str, args: ReplArgs) -> io::Result<Flow> {
    if let Some(why) = format_refusal(args.format) {
        warn!("{peer}: REPL refused: {why}");
        encode_err(&mut wire.out, &ProtoError::new(ErrCode::BadReq, why));
        return Ok(Flow::Continue);
    }
    let silence = Duration::from_millis(broker.config.replication.slave_timeout_ms);
    let acks = Arc::new(Acks::default());
    // A socket this server cannot use is a session that cannot stream: the
    // slave gets no answer and tries again. Over TLS the session is split:
    // the wire keeps sending, the ACK reader has the other half.
    let (ack_half, stream) = wire.reading_half()?;
    let kick: Kick = {
        let (a, s) = (Arc::clone(&acks), stream.try_clone()?);
        Box::new(move || {
            a.replaced.store(true, Ordering::Relaxed);
            // Wakes this session's sender out of a write and its ACK
            // reader out of a read; both end.
            let _ = s.shutdown(Shutdown::Both);
        })
    };
    // Registered (holding the whole log from retention) before the writer
    // plans: a retention pass between the plan and the streaming would
    // delete records the plan counts on, and the slave would silently miss
    // them. Refusals unregister when `reg` drops.
    let reg = Registered {
        broker,
        id: broker.repl.add_slave(peer, args.node, Some(kick)),
    };
    let op = WriteOp::ReplPlan {
        after_id: args.after,
        history: args.history,
        epoch: args.epoch,
        empty: args.empty,
    };
    let plan = match broker.writer.call_within(op, PLAN_WAIT) {
        Ok(WriteOk::Plan(p)) => p,
        res => {
            // Not a plan: as good as no answer.
            let e = res.err().unwrap_or(CallError::Timeout);
            encode_err(&mut wire.out, &writer_handle::reply(&e, Asked::Once));
            return Ok(Flow::Continue);
        }
    };
    // Under semi-sync or the write quorum, a slave that takes them gets
    // each batch while this master fsyncs it, and `DUR` frames saying how
    // far it is durable and kept (past the quorum).
    let repl_cfg = &broker.config.replication;
    let early = args.early && (repl_cfg.sync || repl_cfg.min_slaves > 0);
    let answer = |answer| ReplOk {
        history: plan.history,
        epoch: plan.epoch,
        answer,
        early: early && !matches!(answer, Answer::Diverged { .. }),
    };
    let (after, snapshot) = match plan.mode {
        ReplMode::Refused(why) => {
            warn!("{peer}: REPL refused: {why}");
            encode_err(&mut wire.out, &ProtoError::new(ErrCode::BadReq, why));
            return Ok(Flow::Continue);
        }
        ReplMode::Diverged { keep_id } => {
            info!("{peer}: slave holds records after event id {keep_id} this history never had");
            encode_repl_ok(&mut wire.out, &answer(Answer::Diverged { keep_id }));
            wire.flush()?;
            return Ok(Flow::Close);
        }
        ReplMode::Stream { after_id } => {
            encode_repl_ok(&mut wire.out, &answer(Answer::Stream));
            // The slave has every record up to `after_id` already.
            broker.repl.update_slave(reg.id, |s| {
                s.state = LinkState::Streaming;
                s.acked_id = s.acked_id.max(after_id);
            });
            (after_id, None)
        }
        ReplMode::Full { after_id, snapshot } => {
            info!("{peer}: full resync: the state up to event id {after_id}, then the log");
            broker.repl.full_syncs.fetch_add(1, Ordering::Relaxed);
            encode_repl_ok(&mut wire.out, &answer(Answer::Full));
            broker
                .repl
                .update_slave(reg.id, |s| s.state = LinkState::Syncing);
            (after_id, Some(snapshot))
        }
    };
    // Writes to a frozen slave block once the socket buffers are full: they
    // fail after the replication setting, not after `timeout.net.write`
    // (which a refused REPL, back in command mode, keeps).
    stream.set_write_timeout(Some(silence))?;
    wire.flush()?;
    info!("{peer}: replicating the records after event id {after}");
    // Streaming once the slave acknowledges the resync point (at once for
    // a stream plan, after `SYNCED` for a full resync).
    acks.streaming_from.store(after, Ordering::Relaxed);
    let reader = {
        let (b, a, p, id) = (
            Arc::clone(broker),
            Arc::clone(&acks),
            peer.to_string(),
            reg.id,
        );
        std::thread::Builder::new()
            .name(format!("repl-ack-{peer}"))
            .stack_size(ACK_STACK_BYTES)
            .spawn(move || read_acks(ack_half, stream, &b, &a, &p, id, silence))
    };
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            warn!("{peer}: cannot start the ACK reader: {e}");
            return Ok(Flow::Close);
        }
    };
    let mut s = Sender {
        wire,
        broker,
        acks: &acks,
        id: reg.id,
        long_recs: args.node != 0,
        early,
    };
    let res = s.stream(after, snapshot);
    if let Err(e) = &res {
        info!("{peer}: replication ended: {e}");
    }
    // Wakes the ACK reader out of its read, then waits for it.
    acks.done.store(true, Ordering::Relaxed);
    s.wire.shutdown();
    let _ = reader.join();
    drop(reg);
    Ok(Flow::Close)
}

/// What the sender and its ACK reader share.
#[derive(Default)]
struct Acks {
    /// (last event id, log position after it) of each chunk not yet
    /// acknowledged.
    sent: Mutex<VecDeque<(u64, u64)>>,
    /// Either side ended: the other stops too.
    done: AtomicBool,
    /// A new session of the same slave replaced this one.
    replaced: AtomicBool,
    /// The slave streams once it acknowledges this id (its resync point).
    streaming_from: AtomicU64,
}

struct Sender<'a> {
    wire: &'a mut Wire,
    broker: &'a Broker,
    acks: &'a Acks,
    /// The slave's entry in the broker's replication state.
    id: u64,
    /// The slave named itself: it reads `RECS` with the master's position.
    long_recs: bool,
    /// An early stream: records up to the written tail, and `DUR` frames.
    early: bool,
}

impl Sender<'_> {
    fn stream(&mut self, after: u64, snapshot: Option<Vec<SnapItem>>) -> Result<(), ReplError> {
        let b = self.broker;
        let io = |e: io::Error| ReplError::Io {
            what: "socket".into(),
            source: e,
        };
        let store = ReplError::Log;
        let streaming = snapshot.is_none();
        let (tail, mut seen_cuts) = self.tail();
        let mut pos = logread::position_after(&b.store.segments, tail.pos, after).map_err(store)?;
        // What this master has said is durable: nothing yet on this stream.
        let mut dur_sent = 0;
        self.say_durable(&mut dur_sent, seen_cuts);
        if let Some(items) = snapshot {
            self.send_snapshot(&items, pos)?;
            encode_frame(&mut self.wire.out, &Frame::Synced { after_id: after });
            self.wire.flush().map_err(io)?;
        }
        // The slave has everything before `pos`: retention may go that far.
        b.repl
            .update_slave(self.id, |s| s.acked_pos = s.acked_pos.max(pos));
        if streaming {
            // It has `after` durably already (a snapshot's is not applied yet).
            b.repl.quorum.ack(self.id, after);
        }
        let mut lease_sent = 0;
        let mut last_out = Instant::now();
        let repl_cfg = &b.config.replication;
        let bursts = !repl_cfg.sync && repl_cfg.min_slaves == 0;
        let mut gathered = false;
        loop {
            if b.is_shutting_down() {
                return Err(ReplError::Ended("server shutting down".into()));
            }
            if self.acks.done.load(Ordering::Relaxed) {
                return Err(ReplError::Ended("the slave stopped acknowledging".into()));
            }
            let lease = b.repl.lease.load(Ordering::Relaxed);
            if lease > lease_sent {
                encode_frame(&mut self.wire.out, &Frame::Lease { lease });
                lease_sent = lease;
            }
            let (tail, cuts) = self.tail();
            if cuts != seen_cuts {
                // The writer undid records (replication.minSlaves): a slave
                // that was sent any must move them aside and resync.
                if !b.store.durable.kept_since(seen_cuts, pos) {
                    return Err(ReplError::Ended(
                        "the master undid records this slave was sent".into(),
                    ));
                }
                seen_cuts = cuts;
            }
            if pos < tail.pos {
                if bursts && !gathered && tail.pos - pos < BURST_BYTES {
                    // A pause, not a wait for a signal: the writer's next
                    // commits are what it lets gather.
                    std::thread::sleep(BURST_WAIT);
                    gathered = true;
                    continue;
                }
                gathered = false;
                // Before the records: the slave may show what is durable.
                self.say_durable(&mut dur_sent, seen_cuts);
                let chunk = logread::read_chunk(&b.store.segments, pos, tail.pos, CHUNK_BYTES);
                if b.store.durable.cuts() != cuts {
                    continue; // read while records were undone: look again
                }
                let chunk = chunk.map_err(store)?;
                if chunk.count > 0 {
                    let at = self.position(chunk.last_id, chunk.next_pos, tail.pos);
                    encode_recs(&mut self.wire.out, chunk.count, &chunk.bytes, at.as_ref());
                    lock(&self.acks.sent).push_back((chunk.last_id, chunk.next_pos));
                } else if chunk.next_pos <= pos {
                    return Err(ReplError::Log(crate::storage::StoreError::Corrupt {
                        path: "(log)".into(),
                        offset: pos,
                        reason: format!("the log does not go on at position {pos}"),
                    }));
                }
                pos = chunk.next_pos;
            } else if self.say_durable(&mut dur_sent, seen_cuts) {
                // Sent below.
            } else if last_out.elapsed() >= HEARTBEAT {
                let hb = Frame::Hb {
                    last_id: b.last_event_id(),
                    now_ms: now_ms(),
                };
                encode_frame(&mut self.wire.out, &hb);
            } else if self.early {
                b.store.durable.wait_early(pos, dur_sent, IDLE_WAIT);
            } else {
                // New durable records wake this at once; ACKs are the
                // reader thread's.
                b.store.durable.wait_beyond(pos, IDLE_WAIT);
            }
            if !self.wire.out.is_empty() {
                self.wire.flush().map_err(io)?;
                last_out = Instant::now();
            }
        }
    }

    /// How far this sender may read: the written tail on an early stream,
    /// the durable one otherwise; with the number of cuts so far.
    fn tail(&self) -> (crate::storage::tail::TailPos, u64) {
        if self.early {
            self.broker.store.durable.written_with_cuts()
        } else {
            self.broker.store.durable.get_with_cuts()
        }
    }

    /// On an early stream, queues `DUR <id>` when the committed id (durable,
    /// and past the write quorum) has moved past what was said (`said`);
    /// true when it did. Says nothing once records were undone since the
    /// sender last checked (`seen_cuts`): the loop first looks at what this
    /// slave was sent.
    fn say_durable(&mut self, said: &mut u64, seen_cuts: u64) -> bool {
        if !self.early {
            return false;
        }
        let (id, cuts) = self.broker.store.durable.committed_with_cuts();
        if id <= *said || cuts != seen_cuts {
            return false;
        }
        encode_frame(&mut self.wire.out, &Frame::Dur { id });
        *said = id;
        true
    }

    /// Where the master stands, for a `RECS` frame whose last record is
    /// `last_id` and whose next one would start at `next_pos`; `None` for a
    /// slave that reads only the short form.
    fn position(&self, last_id: u64, next_pos: u64, durable_end: u64) -> Option<MasterPos> {
        let b = self.broker;
        self.long_recs.then(|| MasterPos {
            // The durable tail may be published before the last id.
            last_id: b.last_event_id().max(last_id),
            now_ms: now_ms(),
            next_ts_ms: record_ts_at(b, next_pos, durable_end).unwrap_or(0),
        })
    }

    /// The snapshot of a full resync, as RECS frames; `pos`: where the log
    /// streamed after it starts.
    fn send_snapshot(&mut self, items: &[SnapItem], pos: u64) -> Result<(), ReplError> {
        // The slave lacks every log record from `pos` on, whatever the
        // state records' own ids are.
        let at = self.position(0, pos, self.broker.store.durable.get().pos);
        let mut bytes = Vec::new();
        let mut count = 0;
        for item in items {
            match item {
                SnapItem::Built { bytes: b, .. } => bytes.extend_from_slice(b),
                SnapItem::Logged { pos, len, id } => {
                    let seg = self.broker.store.segments.find(*pos).ok_or_else(|| {
                        ReplError::Ended(format!("the record of event {id} is gone"))
                    })?;
                    let mut buf = vec![0u8; *len as usize];
                    seg.read_exact_at(&mut buf, *pos).map_err(ReplError::Log)?;
                    bytes.extend_from_slice(&buf);
                }
            }
            count += 1;
            if bytes.len() >= CHUNK_BYTES {
                encode_recs(&mut self.wire.out, count, &bytes, at.as_ref());
                self.wire.flush().map_err(ReplError::io("socket"))?;
                bytes.clear();
                count = 0;
            }
        }
        if count > 0 {
            encode_recs(&mut self.wire.out, count, &bytes, at.as_ref());
        }
        Ok(())
    }
}

/// The timestamp of the record that starts at log position `pos`, if it
/// is before `end` (what the writer has made durable); the record is then
/// in the next segment when `pos` is where a sealed one ends.
fn record_ts_at(b: &Broker, pos: u64, end: u64) -> Option<u64> {
    let mut pos = pos;
    // At most one segment boundary to step over.
    for _ in 0..2 {
        if pos >= end {
            return None;
        }
        let seg = b.store.segments.find(pos)?;
        let mut head = [0u8; record::PEEK_LEN];
        if seg.read_exact_at(&mut head, pos).is_ok()
            && let Some(p) = record::peek(&head)
        {
            return Some(p.timestamp_ms);
        }
        pos = b
            .store
            .segments
            .all()
            .iter()
            .map(|s| s.base)
            .find(|&base| base > seg.base)?;
    }
    None
}

/// The master's side of the lag definition (`stats::Lag`) for one slave:
/// its acknowledged id against this master's last id, and the age of the
/// record at `acked_pos` (the oldest one it lacks) when that is durable.
pub fn slave_lag(b: &Broker, s: &SlaveInfo) -> Lag {
    let last = b.last_event_id();
    if s.acked_id >= last {
        return Lag::default(); // no pread when caught up
    }
    let ts = record_ts_at(b, s.acked_pos, b.store.durable.get().pos);
    Lag::new(s.acked_id, last, ts.map(|ts| now_ms().saturating_sub(ts)))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `repl-ack-<peer>` thread: reads the slave's `ACK <id>` lines as they
/// come (a blocking read wakes on each), so semi-sync answers leave as soon
/// as the slave has the records. Ends on `silence`, a bad line or EOF.
/// `half` gives the bytes (the socket, or a TLS session's reading half);
/// `stream` is the socket under it, for the timeout and the shutdown.
fn read_acks(
    half: Box<dyn Read + Send>,
    stream: TcpStream,
    b: &Broker,
    acks: &Acks,
    peer: &str,
    id: u64,
    silence: Duration,
) {
    let end = |why: String| {
        let why = if acks.replaced.load(Ordering::Relaxed) {
            "a new session of this slave replaced this one".to_string()
        } else {
            why
        };
        if !acks.done.swap(true, Ordering::Relaxed) {
            info!("{peer}: {why}");
        }
        let _ = stream.shutdown(Shutdown::Both);
    };
    if let Err(e) = stream.set_read_timeout(Some(silence)) {
        return end(format!("socket: {e}"));
    }
    let mut r = BufReader::new(half);
    let mut line = Vec::new();
    while !acks.done.load(Ordering::Relaxed) {
        line.clear();
        match (&mut r)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return end("the slave closed the connection".into()),
            Ok(_) => {}
            Err(e) => {
                return end(format!(
                    "no ACK for {} ms (replication.slaveTimeoutMs) or socket error ({e}); \
                     dropping the slave",
                    silence.as_millis()
                ));
            }
        }
        let text = String::from_utf8_lossy(&line);
        let Some(acked) = parse_ack(text.trim_end()) else {
            return end(format!(
                "unexpected line from the slave: {:?}",
                text.trim_end()
            ));
        };
        let mut at = None;
        {
            let mut sent = lock(&acks.sent);
            while let Some(&(last, pos)) = sent.front() {
                if last > acked {
                    break;
                }
                at = Some(pos);
                sent.pop_front();
            }
        }
        let streaming = acked >= acks.streaming_from.load(Ordering::Relaxed);
        // SLAVES and STATS first, so a client answered on this ACK sees it.
        b.repl.update_slave(id, |s| {
            s.acked_id = s.acked_id.max(acked);
            if streaming {
                s.state = LinkState::Streaming;
            }
            if let Some(pos) = at {
                s.acked_pos = pos;
            }
        });
        b.repl.note_ack(acked);
        b.repl.quorum.ack(id, acked);
        if b.config.replication.sync && !b.repl.sync_in_force() && acked >= b.last_event_id() {
            b.repl.sync_active.store(true, Ordering::Relaxed);
            info!("{peer}: slave caught up at event id {acked}; semi-sync in force again");
        }
    }
}

/// Why a slave whose smss reads storage formats up to `format` (0: it did
/// not say, an smss from before format 3) cannot follow this master: it
/// would misread records of this master's format. `None` when it can.
fn format_refusal(format: u32) -> Option<String> {
    let ours = crate::storage::log::record::FORMAT_VERSION;
    if format >= ours {
        return None;
    }
    let theirs = if format == 0 {
        "an older one (it does not say which; an smss from before format 3 reads up to 2)"
            .to_string()
    } else {
        format!("{format}")
    };
    Some(format!(
        "this master writes storage format {ours}, the slave's smss reads {theirs}: upgrade \
         the slave's smss first (README: Upgrades)"
    ))
}
