//! The master's side of replication: a connection that sent `REPL` becomes
//! the sender of one slave, on its own connection thread.
//!
//! It asks the writer how to serve the slave (stream, full resync with a
//! snapshot of the state, divergence, refusal), then streams the log with
//! pread at its own pace, never past the writer's durable tail, so a slow
//! or frozen slave only ever slows itself. It reads the slave's `ACK <id>`
//! lines between chunks, publishes what the slave has (SLAVES, STATS, the
//! retention hold) in the broker's replication state, sends the master's
//! id lease when it moves and a heartbeat every second when idle, and drops
//! a slave that stays silent. Frames are documented in README (Replication).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::broker::Broker;
use crate::protocol::{
    ErrCode, MAX_LINE_BYTES, ProtoError, ReplArgs, encode_err, encode_line, encode_recs,
};
use crate::replication::state::LinkState;
use crate::storage::logread::{self, CHUNK_BYTES};
use crate::storage::now_ms;
use crate::storage::ops::{ReplMode, SnapItem, WriteOk, WriteOp};
use crate::wire::{Flow, Wire};

/// A heartbeat goes out when nothing else did for this long.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A slave that acknowledges nothing for this long is dropped.
const SLAVE_SILENCE: Duration = Duration::from_secs(10);
/// How long the writer may take to plan.
const PLAN_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for new durable records before checking the heartbeat.
const IDLE_WAIT: Duration = Duration::from_millis(100);
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
    // Registered (holding the whole log from retention) before the writer
    // plans: a retention pass between the plan and the streaming would
    // delete records the plan counts on, and the slave would silently miss
    // them. Refusals unregister when `reg` drops.
    let reg = Registered {
        broker,
        id: broker.repl.add_slave(peer),
    };
    let op = WriteOp::ReplPlan {
        after_id: args.after,
        history: args.history,
        epoch: args.epoch,
        empty: args.empty,
    };
    let plan = match broker.ask_writer(op, PLAN_WAIT) {
        Some(Ok(WriteOk::Plan(p))) => p,
        Some(Err(e)) => {
            encode_err(
                &mut wire.out,
                &ProtoError::new(ErrCode::Internal, e.to_string()),
            );
            return Ok(Flow::Continue);
        }
        _ => {
            let e = ProtoError::new(ErrCode::Internal, "the writer did not answer");
            encode_err(&mut wire.out, &e);
            return Ok(Flow::Continue);
        }
    };
    let head = format!("OK {:016x} {}", plan.history, plan.epoch);
    let (after, snapshot) = match plan.mode {
        ReplMode::Refused(why) => {
            warn!("{peer}: REPL refused: {why}");
            encode_err(&mut wire.out, &ProtoError::new(ErrCode::BadReq, why));
            return Ok(Flow::Continue);
        }
        ReplMode::Diverged { keep_id } => {
            info!("{peer}: slave holds records after event id {keep_id} this history never had");
            encode_line(&mut wire.out, &format!("{head} diverged {keep_id}"));
            wire.flush()?;
            return Ok(Flow::Close);
        }
        ReplMode::Stream { after_id } => {
            encode_line(&mut wire.out, &format!("{head} stream"));
            (after_id, None)
        }
        ReplMode::Full { after_id, snapshot } => {
            info!("{peer}: full resync: the state up to event id {after_id}, then the log");
            broker.repl.full_syncs.fetch_add(1, Ordering::Relaxed);
            encode_line(&mut wire.out, &format!("{head} full"));
            (after_id, Some(snapshot))
        }
    };
    wire.flush()?;
    info!("{peer}: replicating the records after event id {after}");
    let acks = Arc::new(Acks::default());
    let reader = match wire.try_clone_stream() {
        Ok(stream) => {
            let (b, a, p, id) = (
                Arc::clone(broker),
                Arc::clone(&acks),
                peer.to_string(),
                reg.id,
            );
            std::thread::Builder::new()
                .name(format!("repl-ack-{peer}"))
                .stack_size(ACK_STACK_BYTES)
                .spawn(move || read_acks(stream, &b, &a, &p, id))
        }
        Err(e) => Err(e),
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
    /// (last event id, log position after it, when sent) of each chunk not
    /// yet acknowledged.
    sent: Mutex<VecDeque<(u64, u64, u64)>>,
    /// Either side ended: the other stops too.
    done: AtomicBool,
}

struct Sender<'a> {
    wire: &'a mut Wire,
    broker: &'a Broker,
    acks: &'a Acks,
    /// The slave's entry in the broker's replication state.
    id: u64,
}

impl Sender<'_> {
    fn stream(&mut self, after: u64, snapshot: Option<Vec<SnapItem>>) -> Result<(), String> {
        let b = self.broker;
        let io = |e: io::Error| format!("socket: {e}");
        let store = |e: crate::storage::StoreError| format!("reading the log: {e}");
        let streaming = snapshot.is_none();
        if let Some(items) = snapshot {
            self.send_snapshot(&items)?;
            encode_line(&mut self.wire.out, &format!("SYNCED {after}"));
            self.wire.flush().map_err(io)?;
        }
        let (tail, mut seen_cuts) = b.durable.get_with_cuts();
        let mut pos = logread::position_after(&b.segments, tail.pos, after).map_err(store)?;
        // The slave has everything before `pos`: retention may go that far.
        b.repl.update_slave(self.id, |s| {
            s.acked_id = s.acked_id.max(after);
            s.acked_pos = s.acked_pos.max(pos);
        });
        if streaming {
            // It has `after` durably already (a snapshot's is not applied yet).
            b.repl.quorum.ack(self.id, after);
        }
        let mut lease_sent = 0;
        let mut last_out = Instant::now();
        loop {
            if b.is_shutting_down() {
                return Err("server shutting down".into());
            }
            if self.acks.done.load(Ordering::Relaxed) {
                return Err("the slave stopped acknowledging".into());
            }
            let lease = b.repl.lease.load(Ordering::Relaxed);
            if lease > lease_sent {
                encode_line(&mut self.wire.out, &format!("LEASE {lease}"));
                lease_sent = lease;
            }
            let (tail, cuts) = b.durable.get_with_cuts();
            if cuts != seen_cuts {
                // The writer undid records (replication.minSlaves): a slave
                // that was sent any must move them aside and resync.
                if !b.durable.kept_since(seen_cuts, pos) {
                    return Err("the master undid records this slave was sent".into());
                }
                seen_cuts = cuts;
            }
            if pos < tail.pos {
                let chunk = logread::read_chunk(&b.segments, pos, tail.pos, CHUNK_BYTES);
                if b.durable.cuts() != cuts {
                    continue; // read while records were undone: look again
                }
                let chunk = chunk.map_err(store)?;
                if chunk.count > 0 {
                    encode_recs(&mut self.wire.out, chunk.count, &chunk.bytes);
                    lock(&self.acks.sent).push_back((chunk.last_id, chunk.next_pos, now_ms()));
                } else if chunk.next_pos <= pos {
                    return Err(format!("the log does not go on at position {pos}"));
                }
                pos = chunk.next_pos;
            } else if last_out.elapsed() >= HEARTBEAT {
                let hb = format!("HB {} {}", b.last_event_id(), now_ms());
                encode_line(&mut self.wire.out, &hb);
            } else {
                // New durable records wake this at once; ACKs are the
                // reader thread's.
                b.durable.wait_beyond(pos, IDLE_WAIT);
            }
            if !self.wire.out.is_empty() {
                self.wire.flush().map_err(io)?;
                last_out = Instant::now();
            }
        }
    }

    /// The snapshot of a full resync, as RECS frames.
    fn send_snapshot(&mut self, items: &[SnapItem]) -> Result<(), String> {
        let mut bytes = Vec::new();
        let mut count = 0;
        for item in items {
            match item {
                SnapItem::Built { bytes: b, .. } => bytes.extend_from_slice(b),
                SnapItem::Logged { pos, len, id } => {
                    let seg = self
                        .broker
                        .segments
                        .find(*pos)
                        .ok_or_else(|| format!("the record of event {id} is gone"))?;
                    let mut buf = vec![0u8; *len as usize];
                    seg.read_exact_at(&mut buf, *pos)
                        .map_err(|e| format!("reading event {id}: {e}"))?;
                    bytes.extend_from_slice(&buf);
                }
            }
            count += 1;
            if bytes.len() >= CHUNK_BYTES {
                encode_recs(&mut self.wire.out, count, &bytes);
                self.wire.flush().map_err(|e| format!("socket: {e}"))?;
                bytes.clear();
                count = 0;
            }
        }
        if count > 0 {
            encode_recs(&mut self.wire.out, count, &bytes);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `repl-ack-<peer>` thread: reads the slave's `ACK <id>` lines as they
/// come (a blocking read wakes on each), so semi-sync answers leave as soon
/// as the slave has the records. Ends on silence, a bad line or EOF.
fn read_acks(stream: TcpStream, b: &Broker, acks: &Acks, peer: &str, id: u64) {
    let end = |why: String| {
        if !acks.done.swap(true, Ordering::Relaxed) {
            info!("{peer}: {why}");
        }
        let _ = stream.shutdown(Shutdown::Both);
    };
    if let Err(e) = stream.set_read_timeout(Some(SLAVE_SILENCE)) {
        return end(format!("socket: {e}"));
    }
    let Ok(clone) = stream.try_clone() else {
        return end("socket: cannot clone".into());
    };
    let mut r = BufReader::new(clone);
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
                    "no ACK for {} s or socket error ({e}); dropping the slave",
                    SLAVE_SILENCE.as_secs()
                ));
            }
        }
        let text = String::from_utf8_lossy(&line);
        let Some(acked) = text
            .trim_end()
            .strip_prefix("ACK ")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return end(format!(
                "unexpected line from the slave: {:?}",
                text.trim_end()
            ));
        };
        b.repl.note_ack(acked);
        b.repl.quorum.ack(id, acked);
        if b.config.replication.sync && !b.repl.sync_in_force() && acked >= b.last_event_id() {
            b.repl.sync_active.store(true, Ordering::Relaxed);
            info!("{peer}: slave caught up at event id {acked}; semi-sync in force again");
        }
        let mut at = None;
        {
            let mut sent = lock(&acks.sent);
            while let Some(&(last, pos, sent_ms)) = sent.front() {
                if last > acked {
                    break;
                }
                at = Some((pos, sent_ms));
                sent.pop_front();
            }
        }
        b.repl.update_slave(id, |s| {
            s.acked_id = s.acked_id.max(acked);
            s.state = LinkState::Streaming;
            if let Some((pos, sent_ms)) = at {
                s.acked_pos = pos;
                s.acked_ts_ms = sent_ms;
            }
        });
    }
}
