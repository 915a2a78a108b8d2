//! The slave's side of replication: the `repl-receiver` thread.
//!
//! It connects to the master (AUTH with `auth.token` when set), sends
//! `REPL <last id> history=… epoch=… empty=… node=…`, and feeds every
//! record it receives to this server's own writer through the same bounded
//! channel, where the one apply path applies it with the master's ids and
//! timestamps. It acknowledges what is durable here (`ACK <id>`) after each
//! commit and in answer to every heartbeat. On any failure it reconnects
//! with a capped backoff and resumes after its own last event id; on
//! PROMOTE it stops. A master silent for `replication.slaveTimeoutMs` is
//! given up on the same way. While this server is a master (started so
//! with a peer, or promoted) the thread idles, and once a second looks at
//! the peer ([`super::peer::Watch`]): a master of a higher epoch there
//! makes this server step down, and the thread then follows it.
//!
//! `node=` names this server, the same for every session of this process,
//! so the master replaces a session it still holds instead of listing the
//! slave twice. Each `RECS` frame says where the master stands; the thread
//! keeps it in the broker's [`MasterView`](super::state::MasterView), the
//! slave's side of the lag definition (`stats::Lag`). Frames are the
//! codec's in `protocol::repl` and documented in README (Replication).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::broker::Broker;
use crate::client::stream::Io;
use crate::protocol::MAX_LINE_BYTES;
use crate::protocol::repl::{Answer, Frame, MasterPos, encode_ack, parse_frame, parse_repl_ok};
use crate::replication::dial::Dialer;
use crate::replication::error::ReplError;
use crate::replication::peer::Watch;
use crate::replication::state::LinkState;
use crate::role::Role;
use crate::storage::now_ms;
use crate::storage::ops::{WriteOk, WriteOp};
use crate::writer_handle::CallError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// How often a master checks whether it is a slave again (and its peer).
const PROMOTED_POLL: Duration = Duration::from_millis(500);
/// How long the writer may take to apply one frame.
const WRITER_WAIT: Duration = Duration::from_secs(60);
/// Largest RECS frame accepted (a chunk is about 1 MiB, or one record).
const MAX_FRAME: usize = 1 << 30;
/// Frames that have arrived are applied together up to about this much.
const MAX_APPLY_BYTES: usize = 8 << 20;

enum End {
    /// PROMOTE or shutdown: the thread ends.
    Stop,
    /// The master asked for a resync after moving divergent records aside.
    Again,
}

/// The thread body: replicate from `master` until PROMOTE or shutdown.
/// `event`: where an empty slave starts (`--event`).
pub fn run(
    broker: Arc<Broker>,
    dialer: Arc<Dialer>,
    master: String,
    event: Option<u64>,
    peer: String,
) {
    let node = node_id();
    let mut backoff = BACKOFF_MIN;
    let mut watch = Watch::new(peer, Arc::clone(&dialer));
    loop {
        if broker.is_shutting_down() {
            return;
        }
        if broker.role() != Role::Slave {
            // A master (started so, or promoted): it looks at its peer and
            // steps down for a master of a higher epoch; then, or when a
            // PROMOTE whose EPOCH record could not be written turns it back
            // into a slave, it replicates again.
            watch.tick(&broker);
            std::thread::sleep(PROMOTED_POLL);
            continue;
        }
        broker.repl.update_master(|m| {
            m.addr = master.clone();
            m.state = LinkState::Connecting;
        });
        let started = Instant::now();
        match session(&broker, &dialer, &master, event, node) {
            Ok(End::Stop) => {}
            Ok(End::Again) => continue,
            Err(e) => {
                if stopped(&broker) {
                    continue;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = BACKOFF_MIN; // it was working: retry soon
                }
                warn!("replication from {master}: {e}; reconnecting in {backoff:?}");
                broker.repl.reconnects.fetch_add(1, Ordering::Relaxed);
                broker
                    .repl
                    .update_master(|m| m.state = LinkState::Connecting);
                // Sleep in short steps so a PROMOTE is not kept waiting.
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stopped(&broker) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn stopped(b: &Broker) -> bool {
    b.role() != Role::Slave || b.is_shutting_down()
}

/// This process's `node=`: random, never 0 (0 means "not given"). Only
/// the sessions of one process share it; a restarted slave is a new node
/// whose old session the master drops when it sees the old socket close.
fn node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; the pid and the time
    // only add to it.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(now_ms());
    h.finish().max(1)
}

struct Link {
    r: BufReader<Io>,
    /// The same stream, for writing (a TLS session is shared by both).
    w: Io,
    /// The socket under both, for a non-blocking look.
    tcp: TcpStream,
}

impl Link {
    fn line(&mut self) -> Result<String, ReplError> {
        let mut buf = Vec::new();
        let n = (&mut self.r)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(ReplError::io("reading from the master"))?;
        if n == 0 {
            return Err(ReplError::Ended("the master closed the connection".into()));
        }
        if buf.last() != Some(&b'\n') {
            return Err(ReplError::Protocol(
                "a line from the master is too long".into(),
            ));
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    /// True when the next frame, already arrived, is RECS or DUR (never
    /// blocks).
    fn more_frames_waiting(&mut self) -> bool {
        if self.r.buffer().is_empty() {
            // The clone shares the socket's flags: non-blocking for one look.
            if self.tcp.set_nonblocking(true).is_err() {
                return false;
            }
            let filled = self.r.fill_buf().is_ok();
            if self.tcp.set_nonblocking(false).is_err() || !filled {
                return false;
            }
        }
        let next = self.r.buffer();
        next.starts_with(b"RECS ") || next.starts_with(b"DUR ")
    }

    fn send(&mut self, line: &str) -> Result<(), ReplError> {
        self.send_bytes(format!("{line}\r\n").as_bytes())
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ReplError> {
        // A TLS session reports a failed send at flush, not at write.
        self.w
            .write_all(bytes)
            .and_then(|_| self.w.flush())
            .map_err(ReplError::io("writing to the master"))
    }

    fn ack(&mut self, id: u64) -> Result<(), ReplError> {
        let mut out = Vec::with_capacity(32);
        encode_ack(&mut out, id);
        self.send_bytes(&out)
    }

    /// The next frame line, parsed.
    fn frame(&mut self) -> Result<Frame, ReplError> {
        parse_frame(&self.line()?, MAX_FRAME).map_err(ReplError::Protocol)
    }

    fn payload(&mut self, n: usize) -> Result<Vec<u8>, ReplError> {
        let mut buf = vec![0u8; n + 2];
        self.r
            .read_exact(&mut buf)
            .map_err(ReplError::io("reading records from the master"))?;
        if &buf[n..] != b"\r\n" {
            return Err(ReplError::Protocol(
                "records from the master not followed by CRLF".into(),
            ));
        }
        buf.truncate(n);
        Ok(buf)
    }
}

fn connect(dialer: &Dialer, master: &str, silence: Duration) -> Result<Link, ReplError> {
    let (io, tcp) = dialer
        .connect(master, CONNECT_TIMEOUT, silence)
        .map_err(ReplError::Connect)?;
    let w = io
        .try_clone()
        .map_err(ReplError::io("setting up the socket"))?;
    Ok(Link {
        r: BufReader::with_capacity(1 << 16, io),
        w,
        tcp,
    })
}

/// Asks the writer; an error (or no answer) ends the session.
fn ask(b: &Broker, op: WriteOp) -> Result<WriteOk, ReplError> {
    match b.writer.call_within(op, WRITER_WAIT) {
        Ok(ok) => Ok(ok),
        Err(CallError::Write(e)) => Err(ReplError::Writer(format!(
            "applying what the master sent: {e}"
        ))),
        Err(_) => Err(ReplError::Writer("the writer did not answer".into())),
    }
}

/// One connection to the master, from the handshake until it fails.
fn session(
    b: &Broker,
    dialer: &Dialer,
    master: &str,
    event: Option<u64>,
    node: u64,
) -> Result<End, ReplError> {
    // The master heartbeats every second when idle: this much silence
    // means it is gone or frozen.
    let silence = Duration::from_millis(b.config.replication.slave_timeout_ms);
    let mut link = connect(dialer, master, silence)?;
    let token = &b.config.auth.token;
    if !token.is_empty() {
        link.send(&format!("AUTH {token}"))?;
        let reply = link.line()?;
        if reply != "OK" {
            return Err(ReplError::Refused(format!("AUTH refused: {reply}")));
        }
    }
    let history = b.repl.history.load(Ordering::Relaxed);
    let epoch = b.repl.epoch.load(Ordering::Relaxed);
    // Not synced yet (new, or a resync was cut short): start from scratch.
    let empty = history == 0;
    // Its last record, shown to readers or still held back for the master
    // to say it is durable (an early stream).
    let after = if empty {
        event.unwrap_or(0)
    } else {
        received(b)
    };
    let repl = format!(
        "REPL {after} history={history:016x} epoch={epoch} empty={}",
        u8::from(empty)
    );
    let named = format!(
        "{repl} node={node:016x} format={}",
        crate::storage::log::record::FORMAT_VERSION
    );
    link.send(&format!("{named} early=1"))?;
    let mut reply = link.line()?;
    if older_than_early(&reply) {
        // A master from before early streams: durable records only.
        link.send(&named)?;
        reply = link.line()?;
    }
    if older_master(&reply) {
        // A master from before `node=` refuses the argument and stays in
        // command mode: ask again as an older slave (short RECS, no lag
        // under load, listed per connection).
        link.send(&repl)?;
        reply = link.line()?;
    }
    let ok = parse_repl_ok(&reply).map_err(ReplError::Refused)?;
    let master_history = ok.history;
    if ok.early {
        // Nothing received from here on is shown before a `DUR` covers it.
        b.repl.master_durable.start_at(0);
    } else {
        b.repl.master_durable.clear();
    }
    let over = if dialer.is_tls() { " over TLS" } else { "" };
    match ok.answer {
        Answer::Stream => {
            info!("replicating from {master}{over} after event id {after}");
            b.repl.update_master(|m| m.state = LinkState::Streaming);
        }
        Answer::Full => {
            info!("full resync from {master}{over} (history {master_history:016x})");
            b.repl.update_master(|m| m.state = LinkState::Syncing);
            let op = WriteOp::ReplReset {
                history: master_history,
                diverged_after: None,
            };
            ask(b, op)?;
        }
        Answer::Diverged { keep_id: keep } => {
            warn!("this server holds records after event id {keep} that {master} never had");
            let op = WriteOp::ReplReset {
                history: master_history,
                diverged_after: Some(keep),
            };
            ask(b, op)?;
            return Ok(End::Again);
        }
    }
    frames(b, &mut link, master_history)
}

/// Applies the master's frames until the link fails or PROMOTE.
fn frames(b: &Broker, link: &mut Link, history: u64) -> Result<End, ReplError> {
    loop {
        if stopped(b) {
            return Ok(End::Stop);
        }
        match link.frame()? {
            Frame::Recs { len, at, .. } => {
                heard(b, at);
                let mut records = link.payload(len)?;
                // The oldest record this server lacks is the first one here.
                if at.is_some()
                    && let Some(ts) = first_timestamp(&records)
                {
                    b.repl.update_master(|m| m.missing_ts_ms = ts);
                }
                let mut last_at = at;
                // More frames already here go in the same writer request:
                // one fsync for all, so a busy master does not outrun us.
                // A `DUR` among them raises the bound before the writer
                // runs (it publishes what the bound covers first).
                while records.len() < MAX_APPLY_BYTES && link.more_frames_waiting() {
                    match link.frame()? {
                        Frame::Recs { len, at, .. } => {
                            heard(b, at);
                            last_at = at;
                            records.extend_from_slice(&link.payload(len)?);
                        }
                        Frame::Dur { id } => b.repl.master_durable.raise(id),
                        _ => {
                            return Err(ReplError::Protocol(
                                "a frame announced as RECS or DUR is not one".into(),
                            ));
                        }
                    }
                }
                if stopped(b) {
                    return Ok(End::Stop);
                }
                let applied = match ask(b, WriteOp::Replicate { records })? {
                    WriteOk::Id(id) => id,
                    _ => b.last_event_id(),
                };
                if let Some(at) = last_at {
                    b.repl.update_master(|m| m.missing_ts_ms = at.next_ts_ms);
                }
                link.ack(applied)?;
            }
            Frame::Dur { id } => {
                let was = b.repl.master_durable.get();
                b.repl.master_durable.raise(id);
                // Records held back that this frees are published by the
                // writer's next batch: the next RECS's, if one is here,
                // else one asked for now.
                let held = b.repl.received.load(Ordering::Relaxed) > was;
                if held && !link.more_frames_waiting() {
                    // Not waited for: the next request queues behind it.
                    let (tx, _) = crossbeam_channel::bounded(1);
                    let reply = crate::storage::ops::Reply::Chan(tx);
                    if b.writer.submit(WriteOp::ReplDurable, reply).is_err() {
                        return Err(ReplError::Writer(
                            "the writer did not take a request".into(),
                        ));
                    }
                }
            }
            Frame::Synced { after_id } => {
                ask(b, WriteOp::ReplSynced { history, after_id })?;
                b.repl.update_master(|m| m.state = LinkState::Streaming);
                link.ack(received(b))?;
            }
            Frame::Lease { lease } => {
                ask(b, WriteOp::ReplLease { lease })?;
            }
            Frame::Hb { last_id, now_ms } => {
                // The master sends a heartbeat only once it has sent every
                // record it has durably, and they are all applied here.
                b.repl.update_master(|m| {
                    m.heard(last_id, now_ms, Instant::now());
                    m.missing_ts_ms = 0;
                });
                link.ack(received(b))?;
            }
        }
    }
}

/// The last record this server has durably, shown to readers or held back.
fn received(b: &Broker) -> u64 {
    b.last_event_id()
        .max(b.repl.received.load(Ordering::Relaxed))
}

/// The master's refusal of `early=`, as a master from before it words it
/// (it took six arguments at most).
fn older_than_early(reply: &str) -> bool {
    reply.starts_with("ERR BADREQ ")
        && (reply.contains("too many arguments for REPL (at most 6)")
            || reply.contains("unknown REPL option 'early'"))
}

/// The master's refusal of `node=`, as a master from before it words it.
fn older_master(reply: &str) -> bool {
    reply.starts_with("ERR BADREQ ")
        && (reply.contains("too many arguments for REPL")
            || reply.contains("unknown REPL option 'node'"))
}

/// A frame said where the master stands (the long `RECS` form).
fn heard(b: &Broker, at: Option<MasterPos>) {
    if let Some(at) = at {
        b.repl
            .update_master(|m| m.heard(at.last_id, at.now_ms, Instant::now()));
    }
}

/// The timestamp of the first record in a RECS payload (the writer checks
/// its CRC when it applies it).
fn first_timestamp(records: &[u8]) -> Option<u64> {
    crate::storage::log::record::peek(records).map(|p| p.timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_timestamp_is_read_from_the_record_header() {
        let mut rec = vec![0u8; 40];
        rec[..4].copy_from_slice(&40u32.to_le_bytes());
        rec[16..24].copy_from_slice(&1_700_000_000_123u64.to_le_bytes());
        assert_eq!(first_timestamp(&rec), Some(1_700_000_000_123));
        assert_eq!(first_timestamp(&rec[..23]), None);
        assert_eq!(first_timestamp(&[]), None);
    }

    #[test]
    fn an_older_master_is_told_from_other_refusals() {
        assert!(older_master(
            "ERR BADREQ too many arguments for REPL (at most 4): usage: REPL <after_event_id> \
             [history=<hex>] [epoch=<n>] [empty=0|1]"
        ));
        assert!(older_master(
            "ERR BADREQ unknown REPL option 'node' (history, epoch, empty)"
        ));
        assert!(!older_master(
            "ERR BADREQ the slave's data belongs to history 1"
        ));
        assert!(!older_master("ERR NOAUTH too many arguments for REPL"));
        assert!(!older_master("OK 0000000000000001 0 stream"));
    }

    #[test]
    fn a_master_from_before_early_streams_is_told_apart() {
        assert!(older_than_early(
            "ERR BADREQ too many arguments for REPL (at most 6): usage: REPL <after_event_id> \
             [history=<hex>] [epoch=<n>] [empty=0|1] [node=<hex>] [format=<n>]"
        ));
        assert!(older_than_early(
            "ERR BADREQ unknown REPL option 'early' (history, epoch, empty, node, format)"
        ));
        // One from before node= is the older ladder's.
        assert!(!older_than_early(
            "ERR BADREQ too many arguments for REPL (at most 4): usage: REPL <after_event_id>"
        ));
        assert!(!older_than_early("OK 0000000000000001 0 stream early"));
    }

    #[test]
    fn node_ids_are_never_zero_and_differ() {
        let (a, b) = (node_id(), node_id());
        assert!(a != 0 && b != 0);
        assert_ne!(a, b);
    }
}
