//! The persistence thread: the only code that writes the log, the indexes
//! and the checkpoint.
//!
//! Connection threads and timers send [`WriteReq`]s (see [`crate::storage::ops`])
//! through the bounded crossbeam channel (`worker.buffSize`). The thread runs
//! a **group commit** loop: take one request, drain what else is queued
//! (bounded) into a *batch* (the word "group" is the consumer group's),
//! turn each into records ([`super::execute`]), write the buffer
//! with one positional write, fsync once (per `store.fsync`), publish the new
//! state to the [`StoreView`] and the durable tail, then answer every
//! request. What the writer shares with the rest of the server comes in
//! as [`WriterLinks`] (the view, STATS, the role, replication state). An
//! `OK` therefore means the record is in the log (fsynced under `always`)
//! and visible to INFO and SUB. With `replication.minSlaves` the batch also
//! waits for the slaves between its fsync and its publication, or is undone
//! ([`super::quorum`]).
//!
//! This file owns the loop: commit, publication and poisoning. The file
//! being appended to (buffer, preallocation, flush, fdatasync, segment
//! roll, cut-back of a failed batch) is [`super::active_log`]'s; the writer
//! says when, the active log does it. Checkpoints are written by
//! [`super::checkpointer`]. Live
//! writes, crash-recovery replay ([`super::recovery`]) and replication all
//! change the writer's state through [`WriterState::apply`], the one apply path.
//!
//! A failed write or fsync *poisons* the writer: every later write is refused
//! with `ERR INTERNAL` until restart (STATS shows `writer_poisoned 1`), since
//! after a failed fsync nothing about the file's contents can be trusted.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{error, info, warn};

use super::active_log::ActiveLog;
use super::chains::CommitChains;
use super::checkpoint_gate::CheckpointGate;
use super::lease::store_lease;
use super::quorum_gate::QuorumGate;
use super::state::{Change, WriterState};

use super::links::WriterLinks;
use crate::config::{Config, FsyncPolicy};
use crate::replication::state::ReplState;
use crate::role::{Role, RoleCell};
use crate::stats::Stats;
use crate::storage::log::record::Record;
use crate::storage::log::segment::Segment;
use crate::storage::ops::Reply;
use crate::storage::ops::{TimerSenders, WriteError, WriteOk, WriteOp, WriteReq, WriteResult};
use crate::storage::reply::{HeldReplies, Releaser};
use crate::storage::tail::TailPos;
use crate::storage::view::StoreView;
use crate::storage::{StoreError, sync_dir};

/// Most requests one batch takes from the channel.
const MAX_BATCH_REQUESTS: usize = 4096;
/// A batch stops draining once this many log bytes are buffered.
const MAX_BATCH_BYTES: usize = 8 << 20;

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
    /// Semi-sync or the write quorum: a batch's records go to the slaves'
    /// early streams while it is fsynced (the written tail).
    pub(super) early_streams: bool,
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
            early_streams: cfg.replication.sync || cfg.replication.min_slaves > 0,
        }
    }
}

pub struct Writer {
    /// What readers see of the store; the writer publishes it at commit.
    pub(super) store: Arc<StoreView>,
    pub(super) stats: Arc<Stats>,
    role: Arc<RoleCell>,
    /// Slaves' acknowledgements; the history, epoch and lease published.
    pub(super) repl: Arc<ReplState>,
    pub(super) tuning: Tuning,
    pub(super) dir: PathBuf,
    pub(super) log_dir: PathBuf,
    pub(super) index_dir: PathBuf,
    /// The segment being appended to: buffer, flush, sync, roll, cut-back.
    pub(super) log: ActiveLog,
    /// Topics, pending delays, ids, epochs and the batch's undo log; the
    /// one apply path is its.
    pub(super) state: WriterState,
    /// When the last checkpoint was written, retries, what waits for the next.
    pub(super) checkpoints: CheckpointGate,
    /// Why writes are refused until restart (see [`Writer::poison`]).
    poisoned: Option<String>,
    timers: TimerSenders,
    /// Semi-sync: the answers of each batch go here instead of to clients.
    releaser: Option<Sender<HeldReplies>>,
    /// Index files of deleted topics whose DELETE is not durable yet.
    doomed_indexes: Vec<PathBuf>,
    /// `replication.minSlaves`: the batch's gate and the undone id ranges.
    pub(super) quorum: QuorumGate,
    /// Group commits in flight together ([`super::chains`]).
    pub(super) chains: CommitChains,
    /// A slave: commits not published yet, for their records are above
    /// what the master has said it keeps (`ReplState::master_durable`).
    held: bool,
    /// The batch's written tail went to the early streams before its fsync.
    written_out: bool,
    /// Holds the data directory's lock for the writer's lifetime.
    _lock: File,
}

impl Writer {
    /// A writer with no topics over the segments already in the store's
    /// set, appending to `active` (whose file is `active_len` bytes).
    pub(super) fn new(
        config: &Config,
        links: WriterLinks,
        lock: File,
        active: Arc<Segment>,
        active_len: u64,
        sealed_bytes: u64,
        timers: TimerSenders,
    ) -> Writer {
        let dir = config.store.path.clone();
        let repl = &config.replication;
        let quorum = QuorumGate::new(repl.min_slaves, repl.sync_timeout_ms);
        let tuning = Tuning::from_config(config);
        let WriterLinks {
            store,
            stats,
            role,
            repl,
        } = links;
        let log = ActiveLog::new(
            dir.join("log"),
            tuning.max_log_size,
            active,
            active_len,
            sealed_bytes,
        );
        let mut state = WriterState::default();
        let publish = &config.publish;
        state.configure_dedup(publish.dedup_window_ms, publish.dedup_max_keys);
        Writer {
            tuning,
            store,
            stats,
            role,
            repl,
            log_dir: dir.join("log"),
            index_dir: dir.join("index"),
            dir,
            log,
            state,
            checkpoints: CheckpointGate::new(),
            poisoned: None,
            timers,
            releaser: None,
            doomed_indexes: Vec::new(),
            quorum,
            chains: CommitChains::default(),
            held: false,
            written_out: false,
            _lock: lock,
        }
    }

    /// Master or slave, now.
    pub(super) fn role(&self) -> Role {
        self.role.get()
    }

    /// What the writer shares, for tests that play its readers.
    #[cfg(test)]
    pub(super) fn links(&self) -> WriterLinks {
        WriterLinks {
            store: Arc::clone(&self.store),
            stats: Arc::clone(&self.stats),
            role: Arc::clone(&self.role),
            repl: Arc::clone(&self.repl),
        }
    }

    /// Global log position where the next record goes.
    pub fn next_pos(&self) -> u64 {
        self.log.next_pos()
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
            while batch.len() < MAX_BATCH_REQUESTS && self.log.buffered() < MAX_BATCH_BYTES {
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
        self.publish_held();
        self.begin_batch();
        self.open_quorum();
        let mut results: Vec<WriteResult> = Vec::with_capacity(batch.len());
        let mut at_once = Vec::with_capacity(batch.len());
        let mut shutdown = None;
        for (i, req) in batch.iter_mut().enumerate() {
            let op = std::mem::replace(&mut req.op, WriteOp::Shutdown);
            at_once.push(op.answers_at_once());
            if let WriteOp::Shutdown = op {
                shutdown = Some(i);
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
        let mut shutdown_reply = None;
        for (i, (req, res)) in batch.drain(..).zip(results).enumerate() {
            if shutdown == Some(i) {
                shutdown_reply = Some(req.reply); // answered after the final checkpoint
                continue;
            }
            if at_once[i] {
                req.reply.send(res);
                continue;
            }
            replies.push((req.reply, res));
        }
        self.answer(replies, wrote);
        if let Some(reply) = shutdown_reply {
            self.finish();
            reply.send(Ok(WriteOk::Done));
            return true;
        }
        false
    }

    /// Hands a committed batch's answers to the releasing thread (the
    /// `replier`; under semi-sync `repl-sync`, which first waits for a
    /// slave to have the batch durably), so the writer goes on to the next
    /// batch while they are sent; without one (unit tests, or the thread
    /// gone at shutdown) answers them here.
    fn answer(&mut self, replies: Vec<(Reply, WriteResult)>, wrote: bool) {
        if replies.is_empty() {
            // Nothing to send (a slave's batches, answered at once): no
            // wake-up of the releasing thread for it.
            return;
        }
        if let Some(releaser) = &self.releaser {
            let held = HeldReplies {
                needs_id: if wrote { self.state.last_id() } else { 0 },
                committed: Instant::now(),
                replies,
            };
            // The releaser is gone (shutdown): answer directly.
            if let Err(e) = releaser.send(held) {
                Releaser::default().release(e.into_inner().replies);
            }
            return;
        }
        Releaser::default().release(replies);
    }

    /// Where the writer hands the answers of each batch.
    pub fn set_releaser(&mut self, releaser: Sender<HeldReplies>) {
        self.releaser = Some(releaser);
    }

    /// Opens the undo log of a new batch at the last committed position.
    pub(super) fn begin_batch(&mut self) {
        self.log.begin_batch();
        self.state.begin_batch();
    }

    /// Final fsync and checkpoint before the thread ends.
    fn finish(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        // A master's lease shrinks back to the last id: a clean restart
        // leaves no gap. A slave's is its master's: kept for a PROMOTE.
        let lease = if self.role() == Role::Master {
            self.state.last_id()
        } else {
            self.state.id_lease().max(self.state.last_id())
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
                self.state.last_id(),
                self.next_pos()
            );
        }
    }

    fn idle_tick(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if self.log.has_unsynced() && self.log.since_sync() >= self.tuning.fsync_interval {
            match self.sync_log() {
                Ok(()) => self.publish_durable(),
                Err(e) => {
                    self.poison(&e);
                    return;
                }
            }
        }
        if self.state.applied_since_checkpoint() && self.checkpoints.idle_due() {
            self.try_checkpoint();
        }
    }

    /// Why every write is refused, once the writer is poisoned.
    pub(super) fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// After a failed fsync nothing about the files can be trusted: refuse
    /// every later write until restart (recovery then checks the log).
    pub(super) fn poison(&mut self, e: &StoreError) {
        if self.poisoned.is_some() {
            return;
        }
        error!("storage failure, refusing all further writes until restart: {e}");
        self.poisoned = Some(e.to_string());
        self.stats.writer_poisoned.store(true, Ordering::Relaxed);
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

    /// Writes the batch's log bytes to the active segment.
    pub(super) fn flush_log(&mut self) -> Result<(), StoreError> {
        self.log.flush()
    }

    /// fdatasyncs the active segment if it has unsynced bytes, then lets
    /// go of what waited for that (deleted topics' index files).
    pub(super) fn sync_log(&mut self) -> Result<(), StoreError> {
        let Some(took) = self.log.sync()? else {
            return Ok(());
        };
        Stats::add(&self.stats.fsyncs, 1);
        (self.stats.fsync_seconds).observe(took);
        self.unlink_doomed_indexes();
        Ok(())
    }

    /// Deleted topics' index files, once their DELETE records are durable.
    /// Failing to unlink only leaks space (recovery removes index files no
    /// checkpoint names).
    fn unlink_doomed_indexes(&mut self) {
        for path in self.doomed_indexes.drain(..) {
            unlink_index(&path);
        }
    }

    /// Everything written so far is durable under the policy and stays:
    /// tell the readers that may only see durable records (replication
    /// senders), and the slaves of early streams what they may show.
    pub(super) fn publish_durable(&self) {
        // The last record: ids the write quorum undid stay used, and a
        // slave holding one must not be told it may show it.
        self.publish_tail(Some(self.last_record_id()));
    }

    /// [`Writer::publish_durable`] inside a batch, for the write quorum: the
    /// slaves may take the batch, not show it yet; the quorum moves the tail
    /// back ([`crate::storage::tail::DurableTail::cut_back`]) before it cuts
    /// the batch.
    pub(super) fn publish_durable_uncommitted(&self) {
        self.publish_tail(None);
    }

    fn publish_tail(&self, committed: Option<u64>) {
        let at = TailPos {
            pos: self.log.written_end(),
            last_id: self.state.last_id(),
        };
        self.store.durable.publish_and_commit(at, committed);
    }

    /// Rolls to a new segment when `bytes` more would overflow the active one.
    pub(super) fn ensure_room(&mut self, bytes: usize) -> Result<(), StoreError> {
        if !self.log.needs_roll(bytes) {
            return Ok(());
        }
        self.roll()
    }

    /// Seals the active segment and starts a new one at the next position
    /// (nothing to do while the active one is empty).
    pub(super) fn roll(&mut self) -> Result<(), StoreError> {
        if self.log.is_empty() {
            return Ok(());
        }
        let durable = self.tuning.policy != FsyncPolicy::Never;
        self.log.seal(durable)?;
        if durable {
            self.sync_log()?;
        }
        #[cfg(test)]
        super::fault::hit(super::fault::Step::Roll)?;
        let seg = self.log.start_next()?;
        self.store.segments.push(seg);
        self.state.checkpoint_soon();
        sync_dir(&self.log_dir)?;
        info!("rolled to new segment {}", self.log.path().display());
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
            Some(why) if self.state.batch_open() => Err(StoreError::Poisoned(why.clone())),
            _ => self.write_batch().and_then(|()| before_publish(self)),
        };
        if let Err(e) = res {
            if e.is_sync_failure() {
                self.poison(&e);
            }
            let quorum_cut = matches!(e, StoreError::NoQuorum(_));
            if std::mem::take(&mut self.written_out) && !quorum_cut {
                // Before the file changes: a sender that sent part of the
                // batch ends its session (the slave moves it aside).
                let pos = self.log.batch_start().unwrap_or(self.next_pos());
                let last_id = self.state.batch_start_id().unwrap_or(self.state.last_id());
                self.store.durable.cut_back(TailPos { pos, last_id });
            }
            if let Err(cut) = self.rollback() {
                self.poison(&cut);
            }
            return Err(e);
        }
        self.written_out = false;
        self.repl
            .received
            .store(self.last_record_id(), Ordering::Relaxed);
        self.held = true;
        self.publish_held();
        self.log.end_batch();
        self.state.end_batch();
        Ok(())
    }

    /// Publishes what was committed unless this is a slave whose master
    /// has not said it keeps all of it (an early stream): a record the
    /// master could still lose or undo is never shown to this slave's
    /// readers.
    /// Held commits go out with a later batch once the bound has moved.
    fn publish_held(&mut self) {
        if self.held
            && (self.role() != Role::Slave
                || self.last_record_id() <= self.repl.master_durable.get())
        {
            self.held = false;
            self.publish();
        }
    }

    /// Writes the batch's log bytes and index entries and fsyncs per policy.
    fn write_batch(&mut self) -> Result<(), StoreError> {
        #[cfg(test)]
        super::fault::hit(super::fault::Step::Write)?;
        self.flush_log()?;
        self.state.write_indexes(&self.store.index_files)?;
        if self.tuning.early_streams
            && self.tuning.policy != FsyncPolicy::Never
            && self.role() == Role::Master
        {
            // Semi-sync or the quorum: the slaves take the batch while it
            // is fsynced here.
            self.store.durable.publish_written(TailPos {
                pos: self.log.written_end(),
                last_id: self.state.last_id(),
            });
            self.written_out = true;
        }
        let sync_now = match self.tuning.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval => self.log.since_sync() >= self.tuning.fsync_interval,
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
        let Some(unlink) = self.state.revert() else {
            return Ok(());
        };
        for (name, create_id) in unlink {
            self.store.index_files.forget(create_id);
            // An index nobody used; failing to unlink only leaks space.
            let _ = std::fs::remove_file(self.store.index_files.path(&name, create_id));
        }
        if let Some(base) = self.log.rolled_from() {
            self.store.segments.remove_from(base);
        }
        self.log.cut_back()?;
        warn!(
            "group commit failed: cut the log back to position {} (event id {})",
            self.next_pos(),
            self.state.last_id()
        );
        Ok(())
    }

    /// Makes a written batch visible: counters, structural changes, then
    /// the topics' new states, which wake their subscribers.
    fn publish(&mut self) {
        // Counters first, so STATS never lags what SUB and INFO show.
        self.store.set_last_event_id(self.last_record_id());
        let repl = &self.repl;
        repl.history.store(self.state.history(), Ordering::Relaxed);
        repl.epoch.store(self.epoch(), Ordering::Relaxed);
        repl.lease.store(self.state.id_lease(), Ordering::Relaxed);
        let stats = &self.stats;
        self.state.take_counts().add_to(stats);
        stats
            .dedup_keys
            .store(self.state.dedup_keys(), Ordering::Relaxed);
        stats
            .delayed_pending
            .store(self.state.pending().len() as u64, Ordering::Relaxed);
        stats.disk_bytes.store(
            self.log.disk_bytes() + self.state.index_bytes(),
            Ordering::Relaxed,
        );
        let mut removed_segments = Vec::new();
        for change in self.state.drain_changes() {
            match change {
                Change::Created(t) => {
                    if t.expires_ms > 0 {
                        let item = (t.name.clone(), t.create_id);
                        let _ = self.timers.lifetime.send((t.expires_ms, item));
                    }
                    self.store.insert_topic(t);
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
                    let files = &self.store.index_files;
                    files.forget(create_id);
                    let path = files.path(&name, create_id);
                    if self.log.has_unsynced() {
                        self.doomed_indexes.push(path);
                    } else {
                        // Durable already: gone before subscribers hear END,
                        // so one that saw END finds no file left behind.
                        unlink_index(&path);
                    }
                    self.store.remove_topic(&name, create_id, reason)
                }
                Change::Delayed { due_ms, id } => {
                    let _ = self.timers.delay.send((due_ms, id));
                }
                Change::SegmentsRemoved(segs) => removed_segments.extend(segs),
                Change::SegmentsDropped(segs) => {
                    self.store.segments.remove_prefix(segs.len());
                    self.checkpoints.unlink_after_next(segs);
                }
            }
        }
        if !self.log.has_unsynced() {
            self.unlink_doomed_indexes();
        }
        self.state.publish_topics();
        // Readers now start past the removed segments; a reader still
        // holding one keeps its file open until it lets go.
        if !removed_segments.is_empty() {
            self.store.segments.remove_prefix(removed_segments.len());
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
        if !self.log.has_unsynced() || self.tuning.policy == FsyncPolicy::Never {
            self.publish_durable();
        }
        Stats::add(&self.stats.commits, 1);
    }

    /// The epoch this data is in (0 before the first PROMOTE).
    pub(super) fn epoch(&self) -> u64 {
        self.state.epoch()
    }

    /// The one apply path ([`WriterState::apply`]) for a record placed at
    /// log position `pos`.
    pub(super) fn apply(
        &mut self,
        rec: &Record<'_>,
        pos: u64,
        len: usize,
    ) -> Result<(), StoreError> {
        self.state.apply(rec, pos, len, &self.store.index_files)
    }
}

/// Removes a deleted topic's index file; failing only leaks space
/// (recovery removes index files no checkpoint names).
fn unlink_index(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!("could not remove index {}: {e}", path.display());
    }
}
