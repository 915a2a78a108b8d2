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

use super::checkpoint::{Checkpoint, TopicMeta};
use super::index::{self, ENTRY_LEN, Entry};
use super::record::{self, DeleteReason, FLAG_BATCH_MORE, Kind, Record};
use super::segment::Segment;
use super::{StoreError, now_ms, sync_dir};
use crate::broker::{Broker, Topic, TopicState};
use crate::config::FsyncPolicy;
use crate::protocol::{ErrCode, Message, ProtoError};
use crate::stats::Stats;

/// Most requests one group commit takes from the channel.
const MAX_GROUP_REQUESTS: usize = 4096;
/// A group commit stops draining once this many log bytes are buffered.
const MAX_GROUP_BYTES: usize = 8 << 20;
/// With no writes, write a checkpoint this long after the last one if the
/// log moved, so a restart after an idle period replays nothing.
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(10);

/// One change to apply, sent by a connection (or a timer) to the writer.
#[derive(Debug)]
pub enum WriteOp {
    Create {
        topic: String,
        life_ms: u64,
    },
    Delete {
        topic: String,
        reason: DeleteReason,
    },
    Pub {
        topic: String,
        msg: Message,
    },
    MPub {
        topic: String,
        msgs: Vec<Message>,
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

/// Structural changes published at commit, in order.
pub(super) enum Change {
    Created(Arc<Topic>),
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
        if let Err(e) = self.commit().and_then(|_| self.checkpoint()) {
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
            WriteOp::Delete { topic, reason } => {
                if !self.topics.contains_key(&topic) {
                    return Err(no_topic(&topic));
                }
                let id = self.last_id + 1;
                self.append(&Record {
                    event_id: id,
                    timestamp_ms: now,
                    kind: Kind::Delete,
                    flags: 0,
                    topic: &topic,
                    headers: b"",
                    body: &[reason as u8],
                })
                .map(|_| WriteOk::Id(id))
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
        if self.policy != FsyncPolicy::Never {
            self.sync_log()?;
        }
        let base = self.next_pos();
        let seg = Arc::new(Segment::open(&self.log_dir, base, true)?);
        sync_dir(&self.log_dir)?;
        info!("rolled to new segment {}", seg.path.display());
        self.sealed_bytes += self.active_len;
        self.active = Arc::clone(&seg);
        self.active_len = 0;
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
                let shared = Arc::new(Topic::new(
                    rec.topic.to_string(),
                    rec.event_id,
                    rec.timestamp_ms,
                    expires_ms,
                    file,
                    TopicState::default(),
                ));
                self.changes.push(Change::Created(Arc::clone(&shared)));
                self.topics.insert(
                    rec.topic.to_string(),
                    WTopic {
                        shared,
                        path,
                        state: TopicState::default(),
                        flushed_entries: 0,
                        buf: Vec::new(),
                        dirty: false,
                        unsynced: true,
                    },
                );
            }
            Kind::Delete => {
                if let Some(t) = self.topics.remove(rec.topic) {
                    let reason = rec.delete_reason().unwrap_or(DeleteReason::Deleted);
                    self.drop_topic(t, reason);
                }
            }
            Kind::Pub => {
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
        self.active
            .file
            .write_all_at(&self.buf, self.active_len)
            .map_err(|e| StoreError::io("write segment", &self.active.path, e))?;
        self.active_len += self.buf.len() as u64;
        self.buf.clear();
        self.log_unsynced = true;
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
        // Publish: only now may readers see the group.
        for change in self.changes.drain(..) {
            match change {
                Change::Created(t) => self.broker.insert_topic(t),
                Change::Deleted {
                    name,
                    create_id,
                    reason,
                } => self.broker.remove_topic(&name, create_id, reason),
            }
        }
        for name in self.dirty.drain(..) {
            if let Some(t) = self.topics.get_mut(&name) {
                t.dirty = false;
                t.shared.publish(t.state);
            }
        }
        self.broker.set_last_event_id(self.last_id);
        let stats = &self.broker.stats;
        Stats::add(&stats.commits, 1);
        stats.disk_bytes.store(
            self.sealed_bytes + self.active_len + self.index_bytes,
            Ordering::Relaxed,
        );
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
        Checkpoint {
            log_pos: self.next_pos(),
            last_event_id: self.last_id,
            topics,
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
