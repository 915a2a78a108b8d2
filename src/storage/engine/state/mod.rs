//! The writer's state ([`WriterState`]): its view of each topic, the
//! pending delayed messages, the last event id, the id lease, the history
//! and epochs, and what the batch being built changed (the structural
//! changes published at commit, the dirty topics, the batch's counters, the
//! undo log). The one apply path ([`apply`]) and the undo of a
//! failed batch are its methods: the replay machine that live writes,
//! recovery and replication all drive.
//!
//! Owned by the writer thread ([`super::writer`] holds it). Readers never
//! see this: they see what the commit publishes to the store view.
//!
//! The fields of `WriterState` and of the types in [`topic`] are private
//! to this folder: only its files (apply, undo, checkpoint) change them.
//! The rest of the engine reads through accessors and changes the state
//! only through the named methods here, so the compiler keeps every write
//! in one place.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

mod apply;
mod checkpoint;
mod dedup;
mod topic;
mod undo;

use crate::storage::StoreError;
use crate::storage::checkpoint::EpochMeta;
use crate::storage::handles::IndexHandles;
use crate::storage::index::ENTRY_LEN;
use crate::storage::log::record::DeleteReason;
use crate::storage::log::segment::Segment;
pub(super) use apply::create_index;
use dedup::Dedup;
pub(super) use dedup::Repeat;
pub(super) use topic::Change;
use topic::{BatchCounts, Pending, WriterTopic};
use undo::{Mark, Undo, UndoLog};

/// The writer's state: what the log's records add up to, ahead of readers
/// until commit, and the batch being built. Its fields are private to
/// `state/`: the rest of the engine reads them through the accessors below
/// and changes them only through named methods.
#[derive(Default)]
pub(super) struct WriterState {
    last_id: u64,
    topics: HashMap<String, WriterTopic>,
    pending: HashMap<u64, Pending>,
    /// Ids up to this may have been handed out (see [`super::lease`]); on
    /// a slave, the master's lease.
    id_lease: u64,
    /// The history this data belongs to (0: a slave not synced yet).
    history: u64,
    /// Every epoch after the first (PROMOTEs), oldest first.
    epochs: Vec<EpochMeta>,
    /// Bytes of all live topics' index entries.
    index_bytes: u64,
    /// Log bytes applied since the last checkpoint.
    since_checkpoint: u64,
    /// The next checkpoint should come soon (a new epoch, a roll, …).
    want_checkpoint: bool,
    /// The create id of a live CREATE whose index file exists already
    /// (made before its record was appended); taken by the apply path.
    index_created: Option<u64>,
    /// Structural changes of the batch, published at commit.
    changes: Vec<Change>,
    /// Topics the batch changed (their `dirty` is set).
    dirty: Vec<String>,
    counts: BatchCounts,
    /// What to take back if the batch being built fails.
    undo: UndoLog,
    /// The dedup keys within the window, per topic (see [`dedup`]).
    dedup: Dedup,
}

impl WriterState {
    /// Opens the undo log of a new batch at the state as it is now.
    pub(super) fn begin_batch(&mut self) {
        self.undo.begin(Mark {
            last_id: self.last_id,
            since_checkpoint: self.since_checkpoint,
            index_bytes: self.index_bytes,
            history: self.history,
            epochs: self.epochs.clone(),
        });
        self.dedup.begin();
    }

    /// The batch is committed: nothing to take back any more.
    pub(super) fn end_batch(&mut self) {
        self.undo.end();
        self.dedup.end();
    }

    /// Takes back the batch being built: every change to topics and pending
    /// delayed messages, newest first, and the counters as they were at
    /// its start. Returns the index files of topics the batch created,
    /// (name, create id), to unlink; `None` when no batch is open.
    pub(super) fn revert(&mut self) -> Option<Vec<(String, u64)>> {
        let (mark, unlink) = self.undo.revert(&mut self.topics, &mut self.pending)?;
        self.dedup.revert();
        self.changes.clear();
        self.dirty.clear();
        self.counts = BatchCounts::default();
        self.last_id = mark.last_id;
        self.since_checkpoint = mark.since_checkpoint;
        self.index_bytes = mark.index_bytes;
        self.history = mark.history;
        self.epochs = mark.epochs;
        Some(unlink)
    }

    /// Drops a pending delayed message whose topic is gone, counted.
    pub(super) fn drop_pending(&mut self, id: u64) {
        if let Some(p) = self.pending.remove(&id) {
            self.undo.push(Undo::PendingRemoved(id, p));
            self.counts.delayed_dropped += 1;
        }
    }

    /// A slave's full resync: every topic and pending delayed message goes
    /// (undoably, within the batch), and the last id, history and epochs
    /// start over. The segments `old` leave the shared set at publish.
    pub(super) fn discard_all(&mut self, old: Vec<Arc<Segment>>) {
        for name in self.topics.keys().cloned().collect::<Vec<_>>() {
            if let Some(t) = self.topics.remove(&name) {
                self.drop_topic(t, DeleteReason::Deleted);
            }
        }
        for id in self.pending.keys().copied().collect::<Vec<_>>() {
            if let Some(p) = self.pending.remove(&id) {
                self.undo.push(Undo::PendingRemoved(id, p));
            }
        }
        self.dedup.clear();
        self.changes.push(Change::SegmentsDropped(old));
        self.last_id = 0;
        // Adopted once the snapshot is in (ReplSynced): until then a
        // restart starts the resync over.
        self.history = 0;
        self.epochs.clear();
    }

    /// Retention deletes the segments `doomed`: each topic of `moved`,
    /// (name, first entry, first id), now starts past them.
    pub(super) fn drop_segments(
        &mut self,
        moved: Vec<(String, u64, u64)>,
        doomed: Vec<Arc<Segment>>,
    ) {
        for (name, first, first_id) in moved {
            let Some(t) = self.topics.get_mut(&name) else {
                continue;
            };
            if !t.dirty {
                self.undo.push(Undo::Touched {
                    name: name.clone(),
                    state: t.state,
                    flushed_entries: t.flushed_entries,
                });
                t.dirty = true;
                self.dirty.push(name);
            }
            t.state.first_entry = first;
            t.state.first_id = first_id;
        }
        self.changes.push(Change::SegmentsRemoved(doomed));
        self.want_checkpoint = true;
    }

    /// Writes the index entries the batch added, one positional write per
    /// topic it changed.
    pub(super) fn write_indexes(&mut self, files: &IndexHandles) -> Result<(), StoreError> {
        for name in &self.dirty {
            let Some(t) = self.topics.get_mut(name) else {
                continue;
            };
            if t.buf.is_empty() {
                continue;
            }
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
        Ok(())
    }

    /// Counts `n` messages published in the batch; returns how many it had
    /// published before.
    pub(super) fn count_published(&mut self, n: u64) -> u64 {
        let before = self.counts.published;
        self.counts.published += n;
        before
    }

    /// Counts a publish answered as a duplicate (nothing written).
    pub(super) fn count_duplicate(&mut self) {
        self.counts.duplicates += 1;
    }

    /// Sets the dedup window (0: off) and the cap on keys held.
    pub(super) fn configure_dedup(&mut self, window_ms: u64, max_keys: usize) {
        self.dedup.configure(window_ms, max_keys);
    }

    /// A PUB or DPUB of `topic` with `headers`, against the dedup table.
    pub(super) fn dedup_one(&self, topic: &str, headers: &[u8], now_ms: u64) -> Repeat {
        self.dedup.check_one(topic, headers, now_ms)
    }

    /// An MPUB of `topic` whose messages have `headers`, against the dedup
    /// table; `Err` names the key that makes it neither new nor a repeat.
    pub(super) fn dedup_batch(
        &self,
        topic: &str,
        headers: &[&[u8]],
        now_ms: u64,
    ) -> Result<Repeat, String> {
        self.dedup.check_batch(topic, headers, now_ms)
    }

    /// Dedup keys held now (STATS `dedup_keys`).
    pub(super) fn dedup_keys(&self) -> u64 {
        self.dedup.held() as u64
    }

    /// Counts a topic that reached the end of its life in the batch.
    pub(super) fn count_expired(&mut self) {
        self.counts.topics_expired += 1;
    }

    /// Counts a poison message the batch moved to a dead-letter topic.
    pub(super) fn count_dead_lettered(&mut self) {
        self.counts.dead_lettered += 1;
    }

    /// The batch's STATS counters, for the commit to add (and start over).
    pub(super) fn take_counts(&mut self) -> BatchCounts {
        std::mem::take(&mut self.counts)
    }

    /// The batch's structural changes, in order, for the commit to publish.
    pub(super) fn drain_changes(&mut self) -> std::vec::Drain<'_, Change> {
        self.changes.drain(..)
    }

    /// Publishes each topic the batch changed (its counters, and its
    /// consumer groups if they changed), which wakes its subscribers.
    pub(super) fn publish_topics(&mut self) {
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
    }

    /// Ids up to `id` count as used though this log has no record of them
    /// (they were undone, or a snapshot covered them).
    pub(super) fn use_ids_to(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    /// This data starts a history of its own (a new data directory, or a
    /// PROMOTE before any history was adopted).
    pub(super) fn start_history(&mut self, history: u64) {
        self.history = history;
    }

    /// The last id goes back to `id`, past which this log has no record (a
    /// master stepping down asks its new master for what follows it;
    /// recovery drops a torn MPUB batch it had counted).
    pub(super) fn rewind_ids_to(&mut self, id: u64) {
        self.last_id = id;
    }

    /// A slave's full resync is in: the master's history is this data's,
    /// and the snapshot covered ids up to `after_id`.
    pub(super) fn adopt_history(&mut self, history: u64, after_id: u64) {
        self.history = history;
        self.use_ids_to(after_id);
        self.checkpoint_soon();
    }

    /// The id lease file now says `lease`.
    pub(super) fn leased_to(&mut self, lease: u64) {
        self.id_lease = lease;
    }

    /// A live CREATE made the index file of `create_id` before its record
    /// was appended: the apply path does not make it again.
    pub(super) fn index_made_for(&mut self, create_id: u64) {
        self.index_created = Some(create_id);
    }

    /// The next checkpoint should not wait for the log to grow (a roll, a
    /// new epoch or history, a format upgrade).
    pub(super) fn checkpoint_soon(&mut self) {
        self.want_checkpoint = true;
    }

    /// A checkpoint holds everything applied so far.
    pub(super) fn checkpointed(&mut self) {
        self.since_checkpoint = 0;
        self.want_checkpoint = false;
    }

    /// The epoch this data is in (0 before the first PROMOTE).
    pub(super) fn epoch(&self) -> u64 {
        self.epochs.last().map_or(0, |e| e.epoch)
    }
    /// The last event id assigned (by this log, a snapshot or an undone
    /// batch).
    pub(super) fn last_id(&self) -> u64 {
        self.last_id
    }

    /// The event id the next record gets.
    pub(super) fn next_id(&self) -> u64 {
        self.last_id + 1
    }

    /// Ids up to this may have been handed out (see [`super::lease`]).
    pub(super) fn id_lease(&self) -> u64 {
        self.id_lease
    }

    /// The history this data belongs to (0: a slave not synced yet).
    pub(super) fn history(&self) -> u64 {
        self.history
    }

    /// Every epoch after the first, oldest first.
    pub(super) fn epochs(&self) -> &[EpochMeta] {
        &self.epochs
    }

    /// The writer's view of every live topic, by name.
    pub(super) fn topics(&self) -> &HashMap<String, WriterTopic> {
        &self.topics
    }

    pub(super) fn topic(&self, name: &str) -> Option<&WriterTopic> {
        self.topics.get(name)
    }

    pub(super) fn has_topic(&self, name: &str) -> bool {
        self.topics.contains_key(name)
    }

    /// The pending delayed messages, by the event id of their DPUB.
    pub(super) fn pending(&self) -> &HashMap<u64, Pending> {
        &self.pending
    }

    /// Bytes of all live topics' index entries.
    pub(super) fn index_bytes(&self) -> u64 {
        self.index_bytes
    }

    /// A checkpoint is asked for, or `bytes` of log were applied since the
    /// last one.
    pub(super) fn checkpoint_wanted(&self, bytes: u64) -> bool {
        self.want_checkpoint || self.since_checkpoint >= bytes
    }

    /// A checkpoint is asked for (a new epoch, a roll, …), however little
    /// log was applied.
    pub(super) fn checkpoint_asked(&self) -> bool {
        self.want_checkpoint
    }

    /// Something was applied since the last checkpoint.
    pub(super) fn applied_since_checkpoint(&self) -> bool {
        self.since_checkpoint > 0
    }

    /// A batch is being built (its changes can still be taken back).
    pub(super) fn batch_open(&self) -> bool {
        self.undo.active()
    }

    /// The last event id before the open batch.
    pub(super) fn batch_start_id(&self) -> Option<u64> {
        self.undo.mark_last_id()
    }

    /// Log bytes count toward the next checkpoint from here on. Recovery
    /// calls it once done: what it replayed is in the log and is replayed
    /// again should the server stop before the next checkpoint.
    pub(super) fn count_from_here(&mut self) {
        self.since_checkpoint = 0;
    }
}
