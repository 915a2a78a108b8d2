//! The slave's side of replication: the `repl-receiver` thread.
//!
//! It connects to the master (AUTH with `auth.token` when set), sends
//! `REPL <last id> history=… epoch=… empty=…`, and feeds every record it
//! receives to this server's own writer through the same bounded channel,
//! where the one apply path applies it with the master's ids and
//! timestamps. It acknowledges what is durable here (`ACK <id>`) after each
//! commit and in answer to every heartbeat. On any failure it reconnects
//! with a capped backoff and resumes after its own last event id; on
//! PROMOTE it stops. Frames are documented in README (Replication).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::broker::Broker;
use crate::protocol::MAX_LINE_BYTES;
use crate::replication::Role;
use crate::replication::state::LinkState;
use crate::storage::now_ms;
use crate::storage::ops::{WriteOk, WriteOp};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The master heartbeats every second; silence this long means it is gone.
const MASTER_SILENCE: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// How often a promoted server checks whether it is a slave again.
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
pub fn run(broker: Arc<Broker>, master: String, event: Option<u64>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if broker.is_shutting_down() {
            return;
        }
        if broker.role() != Role::Slave {
            // Promoted. A PROMOTE whose EPOCH record could not be written
            // turns the server back into a slave: then replicate again.
            std::thread::sleep(PROMOTED_POLL);
            continue;
        }
        broker.repl.update_master(|m| {
            m.addr = master.clone();
            m.state = LinkState::Connecting;
        });
        let started = Instant::now();
        match session(&broker, &master, event) {
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

struct Link {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Link {
    fn line(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        let n = (&mut self.r)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("reading from the master: {e}"))?;
        if n == 0 {
            return Err("the master closed the connection".into());
        }
        if buf.last() != Some(&b'\n') {
            return Err("a line from the master is too long".into());
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    /// True when the next frame, already arrived, is RECS (never blocks).
    fn more_records_waiting(&mut self) -> bool {
        if self.r.buffer().is_empty() {
            // The clone shares the socket's flags: non-blocking for one look.
            if self.w.set_nonblocking(true).is_err() {
                return false;
            }
            let filled = self.r.fill_buf().is_ok();
            if self.w.set_nonblocking(false).is_err() || !filled {
                return false;
            }
        }
        self.r.buffer().starts_with(b"RECS ")
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| format!("writing to the master: {e}"))
    }

    fn payload(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; n + 2];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| format!("reading records from the master: {e}"))?;
        if &buf[n..] != b"\r\n" {
            return Err("records from the master not followed by CRLF".into());
        }
        buf.truncate(n);
        Ok(buf)
    }
}

fn connect(master: &str) -> Result<Link, String> {
    let addr = master
        .to_socket_addrs()
        .map_err(|e| format!("resolving {master}: {e}"))?
        .next()
        .ok_or_else(|| format!("{master} resolves to no address"))?;
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connecting: {e}"))?;
    let setup = s
        .set_read_timeout(Some(MASTER_SILENCE))
        .and_then(|_| s.set_write_timeout(Some(MASTER_SILENCE)))
        .and_then(|_| s.set_nodelay(true))
        .and_then(|_| s.try_clone());
    let w = setup.map_err(|e| format!("setting up the socket: {e}"))?;
    Ok(Link {
        r: BufReader::with_capacity(1 << 16, s),
        w,
    })
}

/// Asks the writer; an error (or no answer) ends the session.
fn ask(b: &Broker, op: WriteOp) -> Result<WriteOk, String> {
    match b.ask_writer(op, WRITER_WAIT) {
        Some(Ok(ok)) => Ok(ok),
        Some(Err(e)) => Err(format!("applying what the master sent: {e}")),
        None => Err("the writer did not answer".into()),
    }
}

/// One connection to the master, from the handshake until it fails.
fn session(b: &Broker, master: &str, event: Option<u64>) -> Result<End, String> {
    let mut link = connect(master)?;
    let token = &b.config.auth.token;
    if !token.is_empty() {
        link.send(&format!("AUTH {token}"))?;
        let reply = link.line()?;
        if reply != "OK" {
            return Err(format!("AUTH refused: {reply}"));
        }
    }
    let history = b.repl.history.load(Ordering::Relaxed);
    let epoch = b.repl.epoch.load(Ordering::Relaxed);
    // Not synced yet (new, or a resync was cut short): start from scratch.
    let empty = history == 0;
    let after = if empty {
        event.unwrap_or(0)
    } else {
        b.last_event_id()
    };
    link.send(&format!(
        "REPL {after} history={history:016x} epoch={epoch} empty={}",
        u8::from(empty)
    ))?;
    let reply = link.line()?;
    let f: Vec<&str> = reply.split(' ').collect();
    let master_history = match f.as_slice() {
        ["OK", h, _epoch, ..] => {
            u64::from_str_radix(h, 16).map_err(|_| format!("bad REPL answer {reply:?}"))?
        }
        _ => return Err(format!("REPL refused: {reply}")),
    };
    match f.get(3).copied() {
        Some("stream") => {
            info!("replicating from {master} after event id {after}");
            b.repl.update_master(|m| m.state = LinkState::Streaming);
        }
        Some("full") => {
            info!("full resync from {master} (history {master_history:016x})");
            b.repl.update_master(|m| m.state = LinkState::Syncing);
            let op = WriteOp::ReplReset {
                history: master_history,
                diverged_after: None,
            };
            ask(b, op)?;
        }
        Some("diverged") => {
            let keep = f
                .get(4)
                .and_then(|k| k.parse().ok())
                .ok_or_else(|| format!("bad REPL answer {reply:?}"))?;
            warn!("this server holds records after event id {keep} that {master} never had");
            let op = WriteOp::ReplReset {
                history: master_history,
                diverged_after: Some(keep),
            };
            ask(b, op)?;
            return Ok(End::Again);
        }
        _ => return Err(format!("bad REPL answer {reply:?}")),
    }
    frames(b, &mut link, master_history)
}

/// Applies the master's frames until the link fails or PROMOTE.
fn frames(b: &Broker, link: &mut Link, history: u64) -> Result<End, String> {
    loop {
        if stopped(b) {
            return Ok(End::Stop);
        }
        let line = link.line()?;
        let mut f = line.split(' ');
        match (f.next(), f.next(), f.next()) {
            (Some("RECS"), Some(_count), Some(n)) => {
                let n: usize = n
                    .parse()
                    .ok()
                    .filter(|&n| n <= MAX_FRAME)
                    .ok_or_else(|| format!("bad frame {line:?}"))?;
                let mut records = link.payload(n)?;
                // More frames already here go in the same writer request:
                // one fsync for all, so a busy master does not outrun us.
                while records.len() < MAX_APPLY_BYTES && link.more_records_waiting() {
                    let line = link.line()?;
                    let n = line
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|&n| n <= MAX_FRAME)
                        .ok_or_else(|| format!("bad frame {line:?}"))?;
                    records.extend_from_slice(&link.payload(n)?);
                }
                let ts = last_timestamp(&records);
                if stopped(b) {
                    return Ok(End::Stop);
                }
                let applied = match ask(b, WriteOp::Replicate { records })? {
                    WriteOk::Id(id) => id,
                    _ => b.last_event_id(),
                };
                b.repl
                    .update_master(|m| m.applied_ts_ms = ts.max(m.applied_ts_ms));
                link.send(&format!("ACK {applied}"))?;
            }
            (Some("SYNCED"), Some(after), None) => {
                let after_id = after.parse().map_err(|_| format!("bad frame {line:?}"))?;
                ask(b, WriteOp::ReplSynced { history, after_id })?;
                b.repl.update_master(|m| m.state = LinkState::Streaming);
                link.send(&format!("ACK {}", b.last_event_id()))?;
            }
            (Some("LEASE"), Some(lease), None) => {
                let lease = lease.parse().map_err(|_| format!("bad frame {line:?}"))?;
                ask(b, WriteOp::ReplLease { lease })?;
            }
            (Some("HB"), Some(last), Some(_ms)) => {
                let last: u64 = last.parse().map_err(|_| format!("bad frame {line:?}"))?;
                let mine = b.last_event_id();
                b.repl.update_master(|m| {
                    m.master_event_id = last;
                    if mine >= last {
                        m.applied_ts_ms = now_ms(); // caught up
                    }
                });
                link.send(&format!("ACK {mine}"))?;
            }
            _ => return Err(format!("unexpected line from the master: {line:?}")),
        }
    }
}

/// The timestamp of the last record in a RECS payload, by walking the
/// length fields (the writer checks every CRC when it applies them).
fn last_timestamp(records: &[u8]) -> u64 {
    let field = |at: usize, n: usize| records.get(at..at + n);
    let mut at = 0;
    let mut ts = 0;
    while let (Some(len), Some(t)) = (field(at, 4), field(at + 16, 8)) {
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len == 0 {
            break;
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(t);
        ts = u64::from_le_bytes(b);
        at += len;
    }
    ts
}
