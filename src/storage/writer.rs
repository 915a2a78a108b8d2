//! The persistence thread: the only code that writes the log, the indexes
//! and the checkpoint.
//!
//! Connection threads send [`WriteReq`]s through the bounded crossbeam
//! channel (`worker.buffSize`). The thread runs a **group commit** loop: take
//! one request, drain what else is queued (bounded), append every record to
//! an in-memory buffer, write the buffer with one positional write, fsync once
//! (per `store.fsync`), publish the new state to [`Broker`], then answer every
//! request. An `OK` therefore means the record is in the log (fsynced under
//! `always`) and visible to INFO and SUB.
//!
//! Live writes, crash-recovery replay ([`super::recovery`]) and — later —
//! replication all go through [`Writer::apply`], the one apply path.
//!
//! A failed write or fsync *poisons* the writer: every later write is refused
//! with `ERR INTERNAL` until restart (STATS shows `writer_poisoned 1`), since
//! after a failed fsync nothing about the file's contents can be trusted.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{error, info, warn};

use super::checkpoint::{Checkpoint, DelayedMeta, TopicMeta};
use super::index::{self, ENTRY_LEN, Entry};
use super::record::{self, Decoded, DeleteReason, FLAG_BATCH_MORE, Kind, Record};
use super::segment::Segment;
use super::{StoreError, now_ms, sync_dir};
use crate::broker::{Broker, Topic, TopicState};
use crate::config::FsyncPolicy;
use crate::protocol::{ErrCode, Message, ProtoError};
use crate::stats::Stats;
use crate::timer::TimerSenders;

/// Zero fill kept ahead of the write position of the active segment.
const PREALLOC_CHUNK: u64 = 4 << 20;
/// Extend the zero fill when less than this is left ahead.
const PREALLOC_MARGIN: u64 = 1 << 20;
/// Most requests one group commit takes from the channel.
const MAX_GROUP_REQUESTS: usize = 4096;
/// A group commit stops draining once this many log bytes are buffered.
const MAX_GROUP_BYTES: usize = 8 << 20;
/// With no writes, write a checkpoint this long after the last one if the
/// log moved, so a restart after an idle period replays nothing.
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(10);

/// Holds the highest event id the writer may have assigned, so recovery
/// never reuses an id even if records written after the last fsync are lost.
pub const ID_LEASE_FILE: &str = "idlease";
/// Ids leased per write of [`ID_LEASE_FILE`]: one atomic file write per
/// this many ids. After a crash the sequence resumes above the lease.
const ID_LEASE_BLOCK: u64 = 1 << 20;

/// Writes the lease file atomically (temp, fsync, rename, fsync dir).
pub(super) fn store_lease(dir: &std::path::Path, lease: u64) -> Result<(), StoreError> {
    use std::io::Write as _;
    let tmp = dir.join("idlease.tmp");
    let path = dir.join(ID_LEASE_FILE);
    let mut f = File::create(&tmp).map_err(|e| StoreError::io("create id lease", &tmp, e))?;
    f.write_all(format!("{lease}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io("write id lease", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename id lease", &path, e))?;
    sync_dir(dir)
}

/// Reads the lease file; 0 when there is none yet.
pub(super) fn load_lease(dir: &std::path::Path) -> Result<u64, StoreError> {
    let path = dir.join(ID_LEASE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => t
            .trim()
            .parse()
            .map_err(|_| StoreError::corrupt(&path, 0, format!("not a number: {:?}", t.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::io("read id lease", &path, e)),
    }
}

/// One change to apply, sent by a connection (or a timer) to the writer.
#[derive(Debug)]
pub enum WriteOp {
    Create {
        topic: String,
        life_ms: u64,
    },
    /// `create_id` set: delete only that incarnation of the topic (expiry
    /// must not remove a topic re-created under the same name).
    Delete {
        topic: String,
        reason: DeleteReason,
        create_id: Option<u64>,
    },
    Pub {
        topic: String,
        msg: Message,
    },
    MPub {
        topic: String,
        msgs: Vec<Message>,
    },
    DPub {
        topic: String,
        delay_ms: u64,
        msg: Message,
    },
    /// Deliver these pending delayed messages (ids of their DPUB records),
    /// in this order. Ids no longer pending are skipped.
    Fire {
        ids: Vec<u64>,
    },
    /// Delete sealed segments older than `store.maxDays` at `now_ms`.
    Retention {
        now_ms: u64,
    },
    /// Finish what is queued before it, fsync, checkpoint, and stop.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOk {
    /// The event id of the record written.
    Id(u64),
    /// First and last event id of an MPUB.
    Range(u64, u64),
    /// Shutdown finished.
    Done,
}

pub type WriteResult = Result<WriteOk, ProtoError>;

#[derive(Debug)]
pub struct WriteReq {
    pub op: WriteOp,
    /// Where the result goes; the sender must have room for it.
    pub reply: Sender<WriteResult>,
}

/// The writer's own view of a topic, ahead of what readers see until commit.
pub(super) struct WTopic {
    pub(super) shared: Arc<Topic>,
    pub(super) path: PathBuf,
    pub(super) state: TopicState,
    /// Entries already written to the index file.
    pub(super) flushed_entries: u64,
    /// Index bytes not yet written.
    pub(super) buf: Vec<u8>,
    pub(super) dirty: bool,
    /// Written since the last checkpoint's fsync.
    pub(super) unsynced: bool,
}

/// A delayed message waiting in the log for its due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) topic: String,
    pub(super) due_ms: u64,
    /// Global log position and length of its DPUB record.
    pub(super) pos: u64,
    pub(super) len: u32,
}

/// Structural changes published at commit, in order.
pub(super) enum Change {
    Created(Arc<Topic>),
    /// A delayed message to hand to the delay thread.
    Delayed {
        due_ms: u64,
        id: u64,
    },
    /// Segments deleted by retention: dropped from the shared set and
    /// unlinked after the topics' new first entries are published.
    SegmentsRemoved(Vec<Arc<Segment>>),
    Deleted {
        name: String,
        create_id: u64,
        reason: DeleteReason,
    },
}

pub struct Writer {
    pub(super) broker: Arc<Broker>,
    pub(super) dir: PathBuf,
    pub(super) log_dir: PathBuf,
    pub(super) index_dir: PathBuf,
    pub(super) active: Arc<Segment>,
    /// Bytes of the active segment already written to the file.
    pub(super) active_len: u64,
    /// Bytes of the active segment file that exist (written data plus the
    /// zero fill ahead of it).
    pub(super) active_alloc: u64,
    /// Log bytes not yet written; they go at `active_len`.
    pub(super) buf: Vec<u8>,
    /// Bytes in segments other than the active one.
    pub(super) sealed_bytes: u64,
    pub(super) index_bytes: u64,
    pub(super) last_id: u64,
    pub(super) topics: HashMap<String, WTopic>,
    pub(super) changes: Vec<Change>,
    pub(super) dirty: Vec<String>,
    pub(super) policy: FsyncPolicy,
    pub(super) fsync_interval: Duration,
    pub(super) last_sync: Instant,
    /// Log bytes written but not fsynced.
    pub(super) log_unsynced: bool,
    pub(super) max_log_size: u64,
    pub(super) checkpoint_bytes: u64,
    pub(super) since_checkpoint: u64,
    pub(super) last_checkpoint: Instant,
    pub(super) want_checkpoint: bool,
    pub(super) poisoned: Option<String>,
    pub(super) pending: HashMap<u64, Pending>,
    pub(super) timers: TimerSenders,
    pub(super) max_age_ms: u64,
    /// Ids up to this may have been handed out (see [`ID_LEASE_FILE`]).
    pub(super) id_lease: u64,
    /// Holds the data directory's lock for the writer's lifetime.
    pub(super) _lock: File,
    pub(super) log_sample: u64,
}

fn internal(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrCode::Internal, msg)
}

impl Writer {
    /// Global log position where the next record goes.
    pub fn next_pos(&self) -> u64 {
        self.active.base + self.active_len + self.buf.len() as u64
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// The thread body: group commit until Shutdown or until every sender is gone.
    pub fn run(mut self, rx: Receiver<WriteReq>) {
        let tick = self.fsync_interval.min(Duration::from_secs(1));
        let mut group: Vec<WriteReq> = Vec::with_capacity(64);
        let mut results: Vec<WriteResult> = Vec::with_capacity(64);
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle_tick();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            };
            group.push(first);
            while group.len() < MAX_GROUP_REQUESTS && self.buf.len() < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            let mut shutdown = None;
            for (i, req) in group.iter_mut().enumerate() {
                let op = std::mem::replace(&mut req.op, WriteOp::Shutdown);
                if let WriteOp::Shutdown = op {
                    shutdown = Some((i, req.reply.clone()));
                    results.push(Ok(WriteOk::Done));
                    // Anything queued after Shutdown is refused below.
                    continue;
                }
                if shutdown.is_some() {
                    results.push(Err(internal("server is shutting down")));
                    continue;
                }
                results.push(self.execute(op));
            }
            if let Err(e) = self.commit() {
                self.poison(&e);
                for r in results.iter_mut() {
                    if r.is_ok() {
                        *r = Err(internal(format!("storage failed: {e}")));
                    }
                }
            }
            if self.poisoned.is_none()
                && (self.want_checkpoint || self.since_checkpoint >= self.checkpoint_bytes)
                && let Err(e) = self.checkpoint()
            {
                self.poison(&e);
            }
            for (i, (req, res)) in group.drain(..).zip(results.drain(..)).enumerate() {
                if shutdown.as_ref().is_some_and(|(at, _)| *at == i) {
                    continue; // answered after the final checkpoint
                }
                let _ = req.reply.try_send(res);
            }
            if let Some((_, reply)) = shutdown {
                self.finish();
                let _ = reply.try_send(Ok(WriteOk::Done));
                return;
            }
        }
    }

    /// Final fsync and checkpoint before the thread ends.
    fn finish(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        // The lease shrinks back to the last id: a clean restart leaves no gap.
        let res = self
            .commit()
            .and_then(|_| self.checkpoint())
            .and_then(|_| store_lease(&self.dir, self.last_id));
        if let Err(e) = res {
            error!("final checkpoint failed: {e}");
        } else {
            info!(
                "writer stopped cleanly at event id {} (log position {})",
                self.last_id,
                self.next_pos()
            );
        }
    }

    fn idle_tick(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        let res = if self.log_unsynced && self.last_sync.elapsed() >= self.fsync_interval {
            self.sync_log()
        } else {
            Ok(())
        };
        let res = res.and_then(|_| {
            if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= IDLE_CHECKPOINT_AFTER
            {
                self.checkpoint()
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            self.poison(&e);
        }
    }

    fn poison(&mut self, e: &StoreError) {
        error!("storage failure, refusing all further writes until restart: {e}");
        self.poisoned = Some(e.to_string());
        self.broker
            .stats
            .writer_poisoned
            .store(true, Ordering::Relaxed);
        self.buf.clear();
    }

    /// Validates one request and appends its record(s) to the group.
    fn execute(&mut self, op: WriteOp) -> WriteResult {
        if let Some(why) = &self.poisoned {
            return Err(internal(format!(
                "storage failed earlier, writes refused until restart: {why}"
            )));
        }
        let now = now_ms();
        let res = match op {
            WriteOp::Create { topic, life_ms } => {
                if self.topics.contains_key(&topic) {
                    return Err(ProtoError::new(
                        ErrCode::Exists,
                        format!("topic {topic} exists"),
                    ));
                }
                let id = self.last_id + 1;
                self.append(&Record {
                    event_id: id,
                    timestamp_ms: now,
                    kind: Kind::Create,
                    flags: 0,
                    topic: &topic,
                    headers: b"",
                    body: &life_ms.to_le_bytes(),
                })
                .map(|_| WriteOk::Id(id))
            }
            WriteOp::Delete {
                topic,
                reason,
                create_id,
            } => {
                let current = self.topics.get(&topic).map(|t| t.shared.create_id);
                if current.is_none() || create_id.is_some_and(|c| Some(c) != current) {
                    return Err(no_topic(&topic));
                }
                let id = self.last_id + 1;
                let r = self
                    .append(&Record {
                        event_id: id,
                        timestamp_ms: now,
                        kind: Kind::Delete,
                        flags: 0,
                        topic: &topic,
                        headers: b"",
                        body: &[reason as u8],
                    })
                    .map(|_| WriteOk::Id(id));
                if r.is_ok() && reason == DeleteReason::Expired {
                    info!("topic {topic} expired (event id {id})");
                    Stats::add(&self.broker.stats.topics_expired, 1);
                }
                r
            }
            WriteOp::Pub { topic, msg } => {
                if !self.topics.contains_key(&topic) {
                    return Err(no_topic(&topic));
                }
                let id = self.last_id + 1;
                let r = self
                    .append(&Record {
                        event_id: id,
                        timestamp_ms: now,
                        kind: Kind::Pub,
                        flags: 0,
                        topic: &topic,
                        headers: &msg.headers,
                        body: &msg.payload,
                    })
                    .map(|_| WriteOk::Id(id));
                if r.is_ok() {
                    self.count_published(&topic, id, 1);
                }
                r
            }
            WriteOp::MPub { topic, msgs } => {
                if !self.topics.contains_key(&topic) {
                    return Err(no_topic(&topic));
                }
                if msgs.is_empty() {
                    return Err(ProtoError::new(ErrCode::BadReq, "MPUB needs a message"));
                }
                // A batch never spans segments, so recovery can drop a torn
                // batch by truncating one file.
                let total: usize = msgs
                    .iter()
                    .map(|m| record::encoded_len(topic.len(), m.headers.len(), m.payload.len()))
                    .sum();
                if let Err(e) = self.ensure_room(total) {
                    return self.fail(e);
                }
                let first = self.last_id + 1;
                let n = msgs.len();
                for (i, m) in msgs.iter().enumerate() {
                    let rec = Record {
                        event_id: self.last_id + 1,
                        timestamp_ms: now,
                        kind: Kind::Pub,
                        flags: if i + 1 < n { FLAG_BATCH_MORE } else { 0 },
                        topic: &topic,
                        headers: &m.headers,
                        body: &m.payload,
                    };
                    if let Err(e) = self.append_unchecked(&rec) {
                        return self.fail(e);
                    }
                }
                self.count_published(&topic, self.last_id, n as u64);
                Ok(WriteOk::Range(first, self.last_id))
            }
            WriteOp::DPub {
                topic,
                delay_ms,
                msg,
            } => {
                if !self.topics.contains_key(&topic) {
                    return Err(no_topic(&topic));
                }
                let id = self.last_id + 1;
                let due_ms = now.saturating_add(delay_ms);
                let mut body = Vec::with_capacity(8 + msg.payload.len());
                body.extend_from_slice(&due_ms.to_le_bytes());
                body.extend_from_slice(&msg.payload);
                self.append(&Record {
                    event_id: id,
                    timestamp_ms: now,
                    kind: Kind::DPub,
                    flags: 0,
                    topic: &topic,
                    headers: &msg.headers,
                    body: &body,
                })
                .map(|_| WriteOk::Id(id))
            }
            WriteOp::Fire { ids } => self.fire(&ids, now).map(|_| WriteOk::Done),
            WriteOp::Retention { now_ms } => self.retention(now_ms).map(|_| WriteOk::Done),
            WriteOp::Shutdown => Ok(WriteOk::Done),
        };
        match res {
            Ok(ok) => Ok(ok),
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: StoreError) -> WriteResult {
        self.poison(&e);
        Err(internal(format!("storage failed: {e}")))
    }

    fn count_published(&self, topic: &str, last_id: u64, n: u64) {
        let stats = &self.broker.stats;
        let before = stats.messages_published.fetch_add(n, Ordering::Relaxed);
        let sample = self.log_sample;
        if sample > 0 && (before / sample) != ((before + n) / sample) {
            info!(
                "published to {topic}: event id {last_id} ({} messages so far)",
                before + n
            );
        }
    }

    /// Appends one record (rolling the segment first if it would not fit).
    fn append(&mut self, rec: &Record<'_>) -> Result<(), StoreError> {
        self.ensure_room(record::encoded_len(
            rec.topic.len(),
            rec.headers.len(),
            rec.body.len(),
        ))?;
        self.append_unchecked(rec)
    }

    fn append_unchecked(&mut self, rec: &Record<'_>) -> Result<(), StoreError> {
        if rec.event_id > self.id_lease {
            // Record durably that ids up to the new lease may be in use
            // before handing any out, so a crash that loses unsynced
            // records (fsync interval/never) can never lead to reuse.
            let lease = rec.event_id.saturating_add(ID_LEASE_BLOCK);
            store_lease(&self.dir, lease)?;
            self.id_lease = lease;
        }
        let pos = self.next_pos();
        let start = self.buf.len();
        record::encode(&mut self.buf, rec);
        let len = self.buf.len() - start;
        self.apply(rec, pos, len)
    }

    /// Rolls to a new segment when `bytes` more would overflow the active one.
    fn ensure_room(&mut self, bytes: usize) -> Result<(), StoreError> {
        let used = self.active_len + self.buf.len() as u64;
        if used == 0 || used + bytes as u64 <= self.max_log_size {
            return Ok(());
        }
        self.flush_log()?;
        // A sealed segment holds exactly its records: drop the zero fill.
        self.active
            .file
            .set_len(self.active_len)
            .map_err(|e| StoreError::io("trim segment", &self.active.path, e))?;
        self.active_alloc = self.active_len;
        if self.policy != FsyncPolicy::Never {
            self.log_unsynced = true;
            self.sync_log()?;
        }
        let base = self.next_pos();
        let seg = Arc::new(Segment::open(&self.log_dir, base, true)?);
        sync_dir(&self.log_dir)?;
        info!("rolled to new segment {}", seg.path.display());
        self.sealed_bytes += self.active_len;
        self.active = Arc::clone(&seg);
        self.active_len = 0;
        self.active_alloc = 0;
        self.broker.segments.push(seg);
        self.want_checkpoint = true;
        Ok(())
    }

    /// The one apply path: updates the writer's state for a record already
    /// placed at log position `pos` (live write, recovery or replication).
    pub(super) fn apply(
        &mut self,
        rec: &Record<'_>,
        pos: u64,
        len: usize,
    ) -> Result<(), StoreError> {
        self.last_id = self.last_id.max(rec.event_id);
        self.since_checkpoint += len as u64;
        match rec.kind {
            Kind::Create => {
                if let Some(old) = self.topics.remove(rec.topic) {
                    // Only reachable through a damaged log; keep the newest.
                    warn!(
                        "topic {} created again at event id {}",
                        rec.topic, rec.event_id
                    );
                    self.drop_topic(old, DeleteReason::Deleted);
                }
                let life_ms = rec.life_ms().unwrap_or(0);
                let expires_ms = if life_ms == 0 {
                    0
                } else {
                    rec.timestamp_ms.saturating_add(life_ms)
                };
                let path = self
                    .index_dir
                    .join(index::file_name(rec.topic, rec.event_id));
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|e| StoreError::io("create index", &path, e))?;
                let shared = Topic::new(
                    rec.topic.to_string(),
                    rec.event_id,
                    rec.timestamp_ms,
                    expires_ms,
                    file,
                    TopicState::default(),
                );
                self.register_topic(shared, path, true);
            }
            Kind::Delete => {
                if let Some(t) = self.topics.remove(rec.topic) {
                    let reason = rec.delete_reason().unwrap_or(DeleteReason::Deleted);
                    self.drop_topic(t, reason);
                }
                // Its pending delayed messages go with it.
                let before = self.pending.len();
                self.pending.retain(|_, p| p.topic != rec.topic);
                let dropped = (before - self.pending.len()) as u64;
                Stats::add(&self.broker.stats.delayed_dropped, dropped);
            }
            Kind::DPub => {
                let due_ms = rec.body_u64().unwrap_or(rec.timestamp_ms);
                self.pending.insert(
                    rec.event_id,
                    Pending {
                        topic: rec.topic.to_string(),
                        due_ms,
                        pos,
                        len: len as u32,
                    },
                );
                self.changes.push(Change::Delayed {
                    due_ms,
                    id: rec.event_id,
                });
            }
            Kind::Pub | Kind::Fire => {
                if rec.kind == Kind::Fire
                    && let Some(dpub) = rec.body_u64()
                {
                    self.pending.remove(&dpub);
                }
                let Some(t) = self.topics.get_mut(rec.topic) else {
                    warn!(
                        "message {} names unknown topic {}; not indexed",
                        rec.event_id, rec.topic
                    );
                    return Ok(());
                };
                Entry {
                    event_id: rec.event_id,
                    pos,
                    len: len as u32,
                }
                .encode_into(&mut t.buf);
                if t.state.entries == t.state.first_entry {
                    t.state.first_id = rec.event_id;
                }
                t.state.entries += 1;
                t.state.last_id = rec.event_id;
                self.index_bytes += ENTRY_LEN as u64;
                if !t.dirty {
                    t.dirty = true;
                    self.dirty.push(rec.topic.to_string());
                }
            }
        }
        Ok(())
    }

    /// Appends a Fire record for each id still pending, in the given order.
    fn fire(&mut self, ids: &[u64], now: u64) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for &id in ids {
            let Some(p) = self.pending.get(&id).cloned() else {
                continue; // fired already, or its topic was deleted
            };
            if !self.topics.contains_key(&p.topic) {
                self.pending.remove(&id);
                Stats::add(&self.broker.stats.delayed_dropped, 1);
                continue;
            }
            buf.resize(p.len as usize, 0);
            self.read_log(&mut buf, p.pos)?;
            let (headers, payload) = match record::decode(&buf) {
                Decoded::Record { rec, .. } if rec.event_id == id && rec.kind == Kind::DPub => {
                    (rec.headers.to_vec(), rec.payload().to_vec())
                }
                _ => {
                    return Err(StoreError::corrupt(
                        &self.active.path,
                        p.pos,
                        format!("the DPUB record of event {id} is not where the writer put it"),
                    ));
                }
            };
            let mut body = Vec::with_capacity(8 + payload.len());
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&payload);
            let fired = self.last_id + 1;
            self.append(&Record {
                event_id: fired,
                timestamp_ms: now,
                kind: Kind::Fire,
                flags: 0,
                topic: &p.topic,
                headers: &headers,
                body: &body,
            })?;
            self.count_published(&p.topic, fired, 1);
        }
        Ok(())
    }

    /// Reads log bytes at a global position, from the file or from the
    /// part of the group not yet written.
    fn read_log(&self, buf: &mut [u8], pos: u64) -> Result<(), StoreError> {
        let flushed_end = self.active.base + self.active_len;
        if pos >= flushed_end {
            let at = (pos - flushed_end) as usize;
            let src = self.buf.get(at..at + buf.len()).ok_or_else(|| {
                StoreError::corrupt(&self.active.path, pos, "read past the end of the log")
            })?;
            buf.copy_from_slice(src);
            return Ok(());
        }
        let seg = self.broker.segments.find(pos).ok_or_else(|| {
            StoreError::corrupt(&self.log_dir, pos, "no segment holds this position")
        })?;
        seg.read_exact_at(buf, pos)
    }

    /// Deletes the oldest sealed segments whose last write is older than
    /// `store.maxDays`, never the active one and never one at or after a
    /// pending delayed message's record.
    fn retention(&mut self, now_ms: u64) -> Result<(), StoreError> {
        let cutoff = now_ms.saturating_sub(self.max_age_ms);
        let min_pending = self.pending.values().map(|p| p.pos).min();
        let segs = self.broker.segments.all();
        let mut doomed = Vec::new();
        for pair in segs.windows(2) {
            let (seg, next) = (&pair[0], &pair[1]);
            if min_pending.is_some_and(|p| p < next.base) {
                break;
            }
            let meta = seg
                .file
                .metadata()
                .map_err(|e| StoreError::io("stat segment", &seg.path, e))?;
            let mtime_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(u64::MAX, |d| d.as_millis() as u64);
            if mtime_ms >= cutoff {
                break;
            }
            self.sealed_bytes = self.sealed_bytes.saturating_sub(meta.len());
            doomed.push(Arc::clone(seg));
        }
        if doomed.is_empty() {
            return Ok(());
        }
        let keep_from = segs[doomed.len()].base;
        info!(
            "retention: deleting {} segment(s) before log position {keep_from}",
            doomed.len()
        );
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for name in names {
            let Some(t) = self.topics.get_mut(&name) else {
                continue;
            };
            let hi = t.flushed_entries;
            let first = search_pos(&t.shared.index, t.state.first_entry, hi, keep_from)
                .map_err(|e| StoreError::io("read index", &t.path, e))?;
            if first == t.state.first_entry {
                continue;
            }
            t.state.first_entry = first;
            if first < t.state.entries {
                t.state.first_id = if first < hi {
                    index::EntrySource::entry(&t.shared.index, first)
                        .map_err(|e| StoreError::io("read index", &t.path, e))?
                        .event_id
                } else {
                    // The first retained entry is still in the buffer.
                    t.buf
                        .get(((first - hi) as usize) * ENTRY_LEN..)
                        .and_then(Entry::decode)
                        .map_or(t.state.last_id, |e| e.event_id)
                };
            }
            if !t.dirty {
                t.dirty = true;
                self.dirty.push(name);
            }
        }
        self.changes.push(Change::SegmentsRemoved(doomed));
        self.want_checkpoint = true;
        Ok(())
    }

    /// Makes a topic known to the writer (created live, replayed, or loaded
    /// from the checkpoint); readers see it at the next commit. Its index
    /// file holds exactly the entries of the topic's current state.
    pub(super) fn register_topic(&mut self, shared: Topic, path: PathBuf, unsynced: bool) {
        let state = shared.state();
        let shared = Arc::new(shared);
        self.changes.push(Change::Created(Arc::clone(&shared)));
        self.topics.insert(
            shared.name.clone(),
            WTopic {
                shared,
                path,
                state,
                flushed_entries: state.entries,
                buf: Vec::new(),
                dirty: false,
                unsynced,
            },
        );
    }

    fn drop_topic(&mut self, t: WTopic, reason: DeleteReason) {
        // The file is unlinked now; readers holding the handle finish their
        // read and then see the END. Failing to unlink only leaks space.
        if let Err(e) = std::fs::remove_file(&t.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("could not remove index {}: {e}", t.path.display());
        }
        self.index_bytes = self
            .index_bytes
            .saturating_sub(t.state.entries * ENTRY_LEN as u64);
        self.changes.push(Change::Deleted {
            name: t.shared.name.clone(),
            create_id: t.shared.create_id,
            reason,
        });
    }

    fn flush_log(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.preallocate(self.active_len + self.buf.len() as u64)?;
        self.active
            .file
            .write_all_at(&self.buf, self.active_len)
            .map_err(|e| StoreError::io("write segment", &self.active.path, e))?;
        self.active_len += self.buf.len() as u64;
        self.buf.clear();
        self.log_unsynced = true;
        Ok(())
    }

    /// Keeps zero-filled space ahead of the write position so that the
    /// fdatasync after each group commit overwrites allocated blocks and
    /// needs no file-size or extent change journalled (several times
    /// cheaper on ext4). Recovery reads a zero length field as the end.
    fn preallocate(&mut self, end: u64) -> Result<(), StoreError> {
        if end + PREALLOC_MARGIN <= self.active_alloc {
            return Ok(());
        }
        let limit = self.max_log_size.max(end);
        let target = (end + PREALLOC_CHUNK).min(limit);
        if target <= self.active_alloc {
            return Ok(());
        }
        let from = self.active_alloc.max(self.active_len);
        let zeros = vec![0u8; (target - from) as usize];
        self.active
            .file
            .write_all_at(&zeros, from)
            .map_err(|e| StoreError::io("preallocate segment", &self.active.path, e))?;
        self.active_alloc = target;
        Ok(())
    }

    fn sync_log(&mut self) -> Result<(), StoreError> {
        if !self.log_unsynced {
            return Ok(());
        }
        self.active
            .file
            .sync_data()
            .map_err(|e| StoreError::io("fsync segment", &self.active.path, e))?;
        self.log_unsynced = false;
        self.last_sync = Instant::now();
        Stats::add(&self.broker.stats.fsyncs, 1);
        Ok(())
    }

    /// Writes the group, fsyncs per policy, then publishes it to readers.
    pub(super) fn commit(&mut self) -> Result<(), StoreError> {
        if self.poisoned.is_some() {
            return Ok(());
        }
        self.flush_log()?;
        for name in &self.dirty {
            let Some(t) = self.topics.get_mut(name) else {
                continue;
            };
            if t.buf.is_empty() {
                continue;
            }
            t.shared
                .index
                .write_all_at(&t.buf, t.flushed_entries * ENTRY_LEN as u64)
                .map_err(|e| StoreError::io("write index", &t.path, e))?;
            t.flushed_entries += (t.buf.len() / ENTRY_LEN) as u64;
            t.buf.clear();
            t.unsynced = true;
        }
        let sync_now = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval => self.last_sync.elapsed() >= self.fsync_interval,
            FsyncPolicy::Never => false,
        };
        if sync_now {
            self.sync_log()?;
        }
        // Counters first, so STATS never lags what SUB and INFO show.
        self.broker.set_last_event_id(self.last_id);
        let stats = &self.broker.stats;
        stats
            .delayed_pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
        stats.disk_bytes.store(
            self.sealed_bytes + self.active_len + self.index_bytes,
            Ordering::Relaxed,
        );
        // Publish: only now may readers see the group.
        let mut removed_segments = Vec::new();
        for change in self.changes.drain(..) {
            match change {
                Change::Created(t) => {
                    if t.expires_ms > 0 {
                        let item = (t.name.clone(), t.create_id);
                        let _ = self.timers.lifetime.send((t.expires_ms, item));
                    }
                    self.broker.insert_topic(t);
                }
                Change::Deleted {
                    name,
                    create_id,
                    reason,
                } => self.broker.remove_topic(&name, create_id, reason),
                Change::Delayed { due_ms, id } => {
                    let _ = self.timers.delay.send((due_ms, id));
                }
                Change::SegmentsRemoved(segs) => removed_segments.extend(segs),
            }
        }
        for name in self.dirty.drain(..) {
            if let Some(t) = self.topics.get_mut(&name) {
                t.dirty = false;
                t.shared.publish(t.state);
            }
        }
        // Readers now start past the removed segments; a reader still
        // holding one keeps its file open until it lets go.
        if !removed_segments.is_empty() {
            self.broker.segments.remove_prefix(removed_segments.len());
            for seg in &removed_segments {
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    warn!("could not remove segment {}: {e}", seg.path.display());
                }
            }
            sync_dir(&self.log_dir)?;
        }
        Stats::add(&self.broker.stats.commits, 1);
        Ok(())
    }

    /// Makes the index files and the log durable, then writes a checkpoint
    /// at the current position. Call only after a successful commit.
    pub(super) fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.sync_log()?;
        let mut topics = Vec::with_capacity(self.topics.len());
        for t in self.topics.values_mut() {
            if t.unsynced {
                t.shared
                    .index
                    .sync_data()
                    .map_err(|e| StoreError::io("fsync index", &t.path, e))?;
                t.unsynced = false;
            }
            topics.push(TopicMeta {
                name: t.shared.name.clone(),
                create_id: t.shared.create_id,
                created_ms: t.shared.created_ms,
                expires_ms: t.shared.expires_ms,
                entries: t.state.entries,
                first_entry: t.state.first_entry,
                first_id: t.state.first_id,
                last_id: t.state.last_id,
            });
        }
        sync_dir(&self.index_dir)?;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut delayed: Vec<DelayedMeta> = self
            .pending
            .iter()
            .map(|(&id, p)| DelayedMeta {
                id,
                due_ms: p.due_ms,
                pos: p.pos,
                len: p.len,
                topic: p.topic.clone(),
            })
            .collect();
        delayed.sort_by_key(|d| d.id);
        Checkpoint {
            log_pos: self.next_pos(),
            last_event_id: self.last_id,
            topics,
            delayed,
        }
        .store(&self.dir)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.want_checkpoint = false;
        Ok(())
    }
}

fn no_topic(topic: &str) -> ProtoError {
    ProtoError::new(ErrCode::NoTopic, format!("no topic {topic}"))
}

/// The first entry in `lo..hi` whose log position is at or after `pos`
/// (positions increase with entry numbers, like event ids).
fn search_pos(file: &File, mut lo: u64, mut hi: u64, pos: u64) -> std::io::Result<u64> {
    use index::EntrySource;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if file.entry(mid)?.pos < pos {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
