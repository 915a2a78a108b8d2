//! The persistence thread: the only code that writes the log, the indexes
//! and the checkpoint.
//!
//! Connection threads and timers send [`WriteReq`]s (see [`super::ops`])
//! through the bounded crossbeam channel (`worker.buffSize`). The thread runs
//! a **group commit** loop: take one request, drain what else is queued
//! (bounded) into a *batch* (the word "group" is the consumer group's),
//! turn each into records ([`super::execute`]), write the buffer
//! with one positional write, fsync once (per `store.fsync`), publish the new
//! state to [`Broker`] and the durable tail, then answer every request. An
//! `OK` therefore means the record is in the log (fsynced under `always`)
//! and visible to INFO and SUB. With `replication.minSlaves` the batch also
//! waits for the slaves between its fsync and its publication, or is undone
//! ([`super::quorum`]).
//!
//! This file owns the loop and the files: commit, flush, sync, segment roll
//! and poisoning; checkpoints are written by [`super::checkpointer`]. Live
//! writes, crash-recovery replay ([`super::recovery`]) and replication all
//! change the writer's state through [`super::apply`], the one apply path.
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

use super::checkpoint::EpochMeta;
use super::index::ENTRY_LEN;
use super::lease::store_lease;
use super::ops::{HeldReplies, TimerSenders, WriteError, WriteOk, WriteOp, WriteReq, WriteResult};
use super::quorum_gate::QuorumGate;
use super::segment::Segment;
use super::state::{BatchCounts, Change, Pending, WriterTopic};
use super::tail::TailPos;
use super::undo::{Mark, UndoLog};
use super::{StoreError, sync_dir};
use crate::broker::Broker;
use crate::config::{Config, FsyncPolicy};
use crate::stats::Stats;

/// Zero fill kept ahead of the write position of the active segment.
const PREALLOC_CHUNK: u64 = 4 << 20;
/// Extend the zero fill when less than this is left ahead.
const PREALLOC_MARGIN: u64 = 1 << 20;
/// Most requests one batch takes from the channel.
const MAX_BATCH_REQUESTS: usize = 4096;
/// A batch stops draining once this many log bytes are buffered.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// With no writes, write a checkpoint this long after the last one if the
/// log moved, so a restart after an idle period replays nothing.
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(10);

/// The writer's settings, taken from the config once.
#[derive(Debug, Clone)]
pub(super) struct Tuning {
    pub(super) policy: FsyncPolicy,
    pub(super) fsync_interval: Duration,
    pub(super) max_log_size: u64,
    /// Write a checkpoint after this many log bytes.
    pub(super) checkpoint_bytes: u64,
    /// Retention: sealed segments older than this go.
    pub(super) max_age_ms: u64,
    /// Log a line every this many published messages (0: never).
    pub(super) log_sample: u64,
}

impl Tuning {
    fn from_config(cfg: &Config) -> Tuning {
        Tuning {
            policy: cfg.store.fsync,
            fsync_interval: Duration::from_millis(cfg.store.fsync_interval_ms),
            max_log_size: cfg.store.max_log_size,
            checkpoint_bytes: cfg.store.checkpoint_bytes,
            max_age_ms: cfg.store.max_age_ms(),
            log_sample: cfg.log.sample,
        }
    }
}

pub struct Writer {
    pub(super) broker: Arc<Broker>,
    pub(super) tuning: Tuning,
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
    pub(super) topics: HashMap<String, WriterTopic>,
    pub(super) changes: Vec<Change>,
    pub(super) dirty: Vec<String>,
    pub(super) last_sync: Instant,
    /// Log bytes written but not fsynced.
    pub(super) log_unsynced: bool,
    pub(super) since_checkpoint: u64,
    pub(super) last_checkpoint: Instant,
    pub(super) want_checkpoint: bool,
    pub(super) poisoned: Option<String>,
    pub(super) pending: HashMap<u64, Pending>,
    pub(super) timers: TimerSenders,
    /// The create id of a live CREATE whose index file exists already
    /// (made before its record was appended); taken by the apply path.
    pub(super) index_created: Option<u64>,
    /// Semi-sync: the answers of each batch go here instead of to clients.
    releaser: Option<Sender<HeldReplies>>,
    /// What to take back if the batch being built fails.
    pub(super) undo: UndoLog,
    pub(super) counts: BatchCounts,
    /// After a checkpoint failed for want of a resource, not before this.
    pub(super) checkpoint_retry_at: Option<Instant>,
    /// Ids up to this may have been handed out (see [`super::lease`]); on
    /// a slave, the master's lease.
    pub(super) id_lease: u64,
    /// The history this data belongs to (0: a slave not synced yet).
    pub(super) history: u64,
    /// Every epoch after the first (PROMOTEs), oldest first.
    pub(super) epochs: Vec<EpochMeta>,
    /// Segments dropped from the log (a slave's reset) whose files go only
    /// after the next checkpoint no longer points into them.
    pub(super) unlink_after_checkpoint: Vec<Arc<Segment>>,
    /// Index files of deleted topics whose DELETE is not durable yet.
    doomed_indexes: Vec<PathBuf>,
    /// `replication.minSlaves`: the batch's gate and the undone id ranges.
    pub(super) quorum: QuorumGate,
    /// Holds the data directory's lock for the writer's lifetime.
    _lock: File,
}

impl Writer {
    /// A writer with no topics over the segments already in the broker's
    /// set, appending to `active` (whose file is `active_len` bytes).
    pub(super) fn new(
        broker: Arc<Broker>,
        lock: File,
        active: Arc<Segment>,
        active_len: u64,
        sealed_bytes: u64,
        timers: TimerSenders,
    ) -> Writer {
        let dir = broker.config.store.path.clone();
        let repl = &broker.config.replication;
        let quorum = QuorumGate::new(repl.min_slaves, repl.sync_timeout_ms);
        Writer {
            tuning: Tuning::from_config(&broker.config),
            broker,
            log_dir: dir.join("log"),
            index_dir: dir.join("index"),
            dir,
            active,
            active_len,
            active_alloc: active_len,
            buf: Vec::new(),
            sealed_bytes,
            index_bytes: 0,
            last_id: 0,
            topics: HashMap::new(),
            changes: Vec::new(),
            dirty: Vec::new(),
            last_sync: Instant::now(),
            log_unsynced: false,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            want_checkpoint: false,
            poisoned: None,
            pending: HashMap::new(),
            timers,
            index_created: None,
            releaser: None,
            undo: UndoLog::default(),
            counts: BatchCounts::default(),
            checkpoint_retry_at: None,
            id_lease: 0,
            history: 0,
            epochs: Vec::new(),
            unlink_after_checkpoint: Vec::new(),
            doomed_indexes: Vec::new(),
            quorum,
            _lock: lock,
        }
    }

    /// Global log position where the next record goes.
    pub fn next_pos(&self) -> u64 {
        self.active.base + self.active_len + self.buf.len() as u64
    }

    /// The thread body: batch after batch until Shutdown or until every
    /// sender is gone.
    pub fn run(mut self, rx: Receiver<WriteReq>) {
        let tick = self.tuning.fsync_interval.min(Duration::from_secs(1));
        let mut batch: Vec<WriteReq> = Vec::with_capacity(64);
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
            batch.push(first);
            while batch.len() < MAX_BATCH_REQUESTS && self.buf.len() < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if self.run_batch(&mut batch) {
                return;
            }
        }
    }

    /// Executes, commits and answers one batch; true after a Shutdown in it.
    pub(super) fn run_batch(&mut self, batch: &mut Vec<WriteReq>) -> bool {
        self.begin_batch();
        self.open_quorum();
        let mut results: Vec<WriteResult> = Vec::with_capacity(batch.len());
        let mut at_once = Vec::with_capacity(batch.len());
        let mut shutdown = None;
        for (i, req) in batch.iter_mut().enumerate() {
            let op = std::mem::replace(&mut req.op, WriteOp::Shutdown);
            at_once.push(op.answers_at_once());
            if let WriteOp::Shutdown = op {
                shutdown = Some((i, req.reply.clone()));
                results.push(Ok(WriteOk::Done));
                // Anything queued after Shutdown is refused below.
                continue;
            }
            if shutdown.is_some() {
                results.push(Err(WriteError::ShuttingDown));
                continue;
            }
            results.push(self.execute_gated(op));
        }
        self.commit_batch(&mut results);
        if self.checkpoint_due() {
            self.try_checkpoint();
        }
        let wrote = results
            .iter()
            .any(|r| matches!(r, Ok(WriteOk::Id(_) | WriteOk::Range(..))));
        let mut replies = Vec::with_capacity(batch.len());
        for (i, (req, res)) in batch.drain(..).zip(results).enumerate() {
            if shutdown.as_ref().is_some_and(|(at, _)| *at == i) {
                continue; // answered after the final checkpoint
            }
            if at_once[i] {
                let _ = req.reply.try_send(res);
                continue;
            }
            replies.push((req.reply, res));
        }
        self.answer(replies, wrote);
        if let Some((_, reply)) = shutdown {
            self.finish();
            let _ = reply.try_send(Ok(WriteOk::Done));
            return true;
        }
        false
    }

    /// Sends a batch's answers, or under semi-sync hands them to the
    /// releaser, which sends them once a slave has the batch durably.
    fn answer(&mut self, replies: Vec<(Sender<WriteResult>, WriteResult)>, wrote: bool) {
        if let Some(releaser) = &self.releaser {
            let held = HeldReplies {
                needs_id: if wrote { self.last_id } else { 0 },
                committed: Instant::now(),
                replies,
            };
            match releaser.send(held) {
                Ok(()) => return,
                // The releaser is gone (shutdown): answer directly.
                Err(e) => {
                    for (reply, res) in e.into_inner().replies {
                        let _ = reply.try_send(res);
                    }
                }
            }
            return;
        }
        for (reply, res) in replies {
            let _ = reply.try_send(res);
        }
    }

    /// Under semi-sync: where the writer hands the answers of each batch.
    pub fn set_releaser(&mut self, releaser: Sender<HeldReplies>) {
        self.releaser = Some(releaser);
    }

    /// Opens the undo log of a new batch at the last committed position.
    pub(super) fn begin_batch(&mut self) {
        self.undo.begin(Mark {
            last_id: self.last_id,
            since_checkpoint: self.since_checkpoint,
            index_bytes: self.index_bytes,
            sealed_bytes: self.sealed_bytes,
            active: Arc::clone(&self.active),
            active_len: self.active_len + self.buf.len() as u64,
            history: self.history,
            epochs: self.epochs.clone(),
        });
    }

    /// Final fsync and checkpoint before the thread ends.
    fn finish(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        // A master's lease shrinks back to the last id: a clean restart
        // leaves no gap. A slave's is its master's: kept for a PROMOTE.
        let lease = if self.broker.role() == crate::role::Role::Master {
            self.last_id
        } else {
            self.id_lease.max(self.last_id)
        };
        let res = self
            .commit()
            .and_then(|_| self.checkpoint())
            .and_then(|_| store_lease(&self.dir, lease));
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
        if self.log_unsynced && self.last_sync.elapsed() >= self.tuning.fsync_interval {
            match self.sync_log() {
                Ok(()) => self.publish_durable(),
                Err(e) => {
                    self.poison(&e);
                    return;
                }
            }
        }
        if self.since_checkpoint > 0
            && self.last_checkpoint.elapsed() >= IDLE_CHECKPOINT_AFTER
            && self.checkpoint_retry_at.is_none_or(|t| Instant::now() >= t)
        {
            self.try_checkpoint();
        }
    }

    /// After a failed fsync nothing about the files can be trusted: refuse
    /// every later write until restart (recovery then checks the log).
    pub(super) fn poison(&mut self, e: &StoreError) {
        if self.poisoned.is_some() {
            return;
        }
        error!("storage failure, refusing all further writes until restart: {e}");
        self.poisoned = Some(e.to_string());
        self.broker
            .stats
            .writer_poisoned
            .store(true, Ordering::Relaxed);
    }

    /// A request's storage step failed. Its own state is untouched (each
    /// step that can fail runs before the request changes anything), so
    /// only this request gets the error — unless an fsync failed.
    pub(super) fn fail(&mut self, e: StoreError) -> WriteResult {
        if e.is_sync_failure() {
            self.poison(&e);
        }
        Err(WriteError::Storage(e.to_string()))
    }

    pub(super) fn flush_log(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.preallocate(self.active_len + self.buf.len() as u64)?;
        self.active
            .file
            .write_all_at(&self.buf, self.active_len)
            .map_err(|e| {
                // A short write may have reached the file.
                self.undo.wrote = true;
                StoreError::io("write segment", &self.active.path, e)
            })?;
        self.active_len += self.buf.len() as u64;
        self.buf.clear();
        self.log_unsynced = true;
        self.undo.wrote = true;
        Ok(())
    }

    /// Keeps zero-filled space ahead of the write position so that the
    /// fdatasync after each batch overwrites allocated blocks and
    /// needs no file-size or extent change journalled (several times
    /// cheaper on ext4). Recovery reads a zero length field as the end.
    fn preallocate(&mut self, end: u64) -> Result<(), StoreError> {
        if end + PREALLOC_MARGIN <= self.active_alloc {
            return Ok(());
        }
        let limit = self.tuning.max_log_size.max(end);
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

    pub(super) fn sync_log(&mut self) -> Result<(), StoreError> {
        if !self.log_unsynced {
            return Ok(());
        }
        let started = Instant::now();
        self.active
            .file
            .sync_data()
            .map_err(|e| StoreError::io("fsync segment", &self.active.path, e))?;
        self.log_unsynced = false;
        self.last_sync = Instant::now();
        Stats::add(&self.broker.stats.fsyncs, 1);
        (self.broker.stats.fsync_seconds).observe(self.last_sync - started);
        self.unlink_doomed_indexes();
        Ok(())
    }

    /// Deleted topics' index files, once their DELETE records are durable.
    /// Failing to unlink only leaks space (recovery removes index files no
    /// checkpoint names).
    fn unlink_doomed_indexes(&mut self) {
        for path in self.doomed_indexes.drain(..) {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!("could not remove index {}: {e}", path.display());
            }
        }
    }

    /// Everything written so far is durable under the policy: tell the
    /// readers that may only see durable records (replication senders).
    /// Inside a batch only for the write quorum, which moves the tail back
    /// ([`super::tail::DurableTail::cut_back`]) before it cuts the batch.
    pub(super) fn publish_durable(&self) {
        self.broker.durable.publish(TailPos {
            pos: self.active.base + self.active_len,
            last_id: self.last_id,
        });
    }

    /// Rolls to a new segment when `bytes` more would overflow the active one.
    pub(super) fn ensure_room(&mut self, bytes: usize) -> Result<(), StoreError> {
        let used = self.active_len + self.buf.len() as u64;
        if used == 0 || used + bytes as u64 <= self.tuning.max_log_size {
            return Ok(());
        }
        self.roll()
    }

    /// Seals the active segment and starts a new one at the next position
    /// (nothing to do while the active one is empty).
    pub(super) fn roll(&mut self) -> Result<(), StoreError> {
        if self.active_len + self.buf.len() as u64 == 0 {
            return Ok(());
        }
        self.flush_log()?;
        // A sealed segment holds exactly its records: drop the zero fill.
        self.active
            .file
            .set_len(self.active_len)
            .map_err(|e| StoreError::io("trim segment", &self.active.path, e))?;
        self.active_alloc = self.active_len;
        if self.tuning.policy != FsyncPolicy::Never {
            self.log_unsynced = true;
            self.sync_log()?;
        }
        let base = self.next_pos();
        #[cfg(test)]
        super::fault::hit(super::fault::Step::Roll)?;
        let seg = Arc::new(Segment::open(&self.log_dir, base, true)?);
        self.undo.new_segments.push(Arc::clone(&seg));
        self.sealed_bytes += self.active_len;
        self.active = Arc::clone(&seg);
        self.active_len = 0;
        self.active_alloc = 0;
        self.broker.segments.push(seg);
        self.want_checkpoint = true;
        sync_dir(&self.log_dir)?;
        info!("rolled to new segment {}", self.active.path.display());
        Ok(())
    }

    /// Writes the batch, fsyncs per policy, then publishes it to readers.
    /// On failure the batch is taken back (memory and log) before the error
    /// is returned; only a failed fsync or a failed cut poisons.
    pub(super) fn commit(&mut self) -> Result<(), StoreError> {
        self.commit_with(|_| Ok(()))
    }

    /// [`Writer::commit`] with a step between writing and publishing (the
    /// write quorum's wait, [`super::quorum`]); its error undoes the batch.
    pub(super) fn commit_with(
        &mut self,
        before_publish: impl FnOnce(&mut Writer) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let res = match &self.poisoned {
            // Poisoned inside this batch (a roll's fsync): none of it stays.
            Some(why) if self.undo.active() => Err(StoreError::Poisoned(why.clone())),
            _ => self.write_batch().and_then(|()| before_publish(self)),
        };
        if let Err(e) = res {
            if e.is_sync_failure() {
                self.poison(&e);
            }
            if let Err(cut) = self.rollback() {
                self.poison(&cut);
            }
            return Err(e);
        }
        self.publish();
        self.undo.end();
        Ok(())
    }

    /// Writes the batch's log bytes and index entries and fsyncs per policy.
    fn write_batch(&mut self) -> Result<(), StoreError> {
        #[cfg(test)]
        super::fault::hit(super::fault::Step::Write)?;
        self.flush_log()?;
        for name in &self.dirty {
            let Some(t) = self.topics.get_mut(name) else {
                continue;
            };
            if t.buf.is_empty() {
                continue;
            }
            let files = &self.broker.index_files;
            files
                .get(&t.shared.name, t.shared.create_id)?
                .write_all_at(&t.buf, t.flushed_entries * ENTRY_LEN as u64)
                .map_err(|e| {
                    let path = files.path(&t.shared.name, t.shared.create_id);
                    StoreError::io("write index", &path, e)
                })?;
            t.flushed_entries += (t.buf.len() / ENTRY_LEN) as u64;
            t.buf.clear();
            t.unsynced = true;
        }
        let sync_now = match self.tuning.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval => self.last_sync.elapsed() >= self.tuning.fsync_interval,
            FsyncPolicy::Never => false,
        };
        if sync_now {
            #[cfg(test)]
            super::fault::hit(super::fault::Step::Fsync)?;
            self.sync_log()?;
        }
        Ok(())
    }

    /// Takes back a batch that failed: the writer's state returns to the
    /// batch's mark and the log is cut back to it, durably, so a request
    /// answered ERR is not replayed at the next start.
    fn rollback(&mut self) -> Result<(), StoreError> {
        let Some((mark, unlink)) = self.undo.revert(&mut self.topics, &mut self.pending) else {
            return Ok(());
        };
        for (name, create_id) in unlink {
            self.broker.index_files.forget(create_id);
            // An index nobody used; failing to unlink only leaks space.
            let _ = std::fs::remove_file(self.broker.index_files.path(&name, create_id));
        }
        self.changes.clear();
        self.dirty.clear();
        self.counts = BatchCounts::default();
        self.buf.clear();
        self.last_id = mark.last_id;
        self.since_checkpoint = mark.since_checkpoint;
        self.index_bytes = mark.index_bytes;
        self.sealed_bytes = mark.sealed_bytes;
        self.history = mark.history;
        self.epochs = mark.epochs;
        let rolled = std::mem::take(&mut self.undo.new_segments);
        let wrote = std::mem::replace(&mut self.undo.wrote, false);
        if !rolled.is_empty() {
            self.broker.segments.remove_from(rolled[0].base);
            for seg in &rolled {
                let _ = std::fs::remove_file(&seg.path);
            }
        }
        self.active = mark.active;
        self.active_len = mark.active_len;
        if wrote || !rolled.is_empty() {
            self.active
                .file
                .set_len(self.active_len)
                .and_then(|_| self.active.file.sync_all())
                .map_err(|e| StoreError::io("fsync cut log", &self.active.path, e))?;
            self.active_alloc = self.active_len;
            self.log_unsynced = false;
            if !rolled.is_empty() {
                sync_dir(&self.log_dir)?;
            }
        }
        warn!(
            "group commit failed: cut the log back to position {} (event id {})",
            self.next_pos(),
            self.last_id
        );
        Ok(())
    }

    /// Makes a written batch visible: counters, structural changes, then
    /// the topics' new states, which wake their subscribers.
    fn publish(&mut self) {
        // Counters first, so STATS never lags what SUB and INFO show.
        self.broker.set_last_event_id(self.last_record_id());
        let repl = &self.broker.repl;
        repl.history.store(self.history, Ordering::Relaxed);
        repl.epoch.store(self.epoch(), Ordering::Relaxed);
        repl.lease.store(self.id_lease, Ordering::Relaxed);
        let stats = &self.broker.stats;
        let counts = std::mem::take(&mut self.counts);
        Stats::add(&stats.messages_published, counts.published);
        Stats::add(&stats.topics_expired, counts.topics_expired);
        Stats::add(&stats.delayed_dropped, counts.delayed_dropped);
        Stats::add(&stats.dead_lettered, counts.dead_lettered);
        stats
            .delayed_pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
        stats.disk_bytes.store(
            self.sealed_bytes + self.active_len + self.index_bytes,
            Ordering::Relaxed,
        );
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
                } => {
                    // Readers holding the handle finish their read, then
                    // see the END. The file goes once the DELETE is durable
                    // (recovery accepts a missing index whose topic the
                    // replayed log deletes).
                    let files = &self.broker.index_files;
                    files.forget(create_id);
                    self.doomed_indexes.push(files.path(&name, create_id));
                    self.broker.remove_topic(&name, create_id, reason)
                }
                Change::Delayed { due_ms, id } => {
                    let _ = self.timers.delay.send((due_ms, id));
                }
                Change::SegmentsRemoved(segs) => removed_segments.extend(segs),
                Change::SegmentsDropped(segs) => {
                    self.broker.segments.remove_prefix(segs.len());
                    self.unlink_after_checkpoint.extend(segs);
                }
            }
        }
        if !self.log_unsynced {
            self.unlink_doomed_indexes();
        }
        for name in self.dirty.drain(..) {
            if let Some(t) = self.topics.get_mut(&name) {
                t.dirty = false;
                if t.groups_dirty {
                    t.groups_dirty = false;
                    t.shared.publish_groups(t.groups.clone());
                }
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
            // The batch is committed already; a directory that cannot be
            // fsynced is a failed fsync all the same.
            if let Err(e) = sync_dir(&self.log_dir) {
                self.poison(&e);
            }
        }
        if !self.log_unsynced || self.tuning.policy == FsyncPolicy::Never {
            self.publish_durable();
        }
        Stats::add(&self.broker.stats.commits, 1);
    }

    /// The epoch this data is in (0 before the first PROMOTE).
    pub(super) fn epoch(&self) -> u64 {
        self.epochs.last().map_or(0, |e| e.epoch)
    }
}
