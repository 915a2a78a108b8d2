//! The one apply path: how a record changes the writer's state
//! ([`WriterState`]: topics, index entries, consumer groups, pending
//! delayed messages, epochs, the last event id). It needs nothing of the
//! writer but the index files a CREATE makes.
//!
//! Runs on the writer thread, for a record already placed in the log at a
//! known position: a live write ([`super::super::execute`]), crash-recovery replay
//! ([`super::super::recovery`]) and a record received from the master
//! ([`super::super::replica`], on a slave). The
//! changes become visible to readers only at the next commit.

use std::sync::Arc;

use log::warn;

use super::WriterState;
use super::topic::{Change, Pending, WriterTopic};
use super::undo::Undo;
use crate::storage::StoreError;
use crate::storage::checkpoint::EpochMeta;
use crate::storage::handles::IndexHandles;
use crate::storage::index::{ENTRY_LEN, Entry};
use crate::storage::log::record::{DeleteReason, FLAG_BATCH_MORE, GroupOp, Kind, Record};
use crate::storage::now_ms;
use crate::storage::view::{GroupState, Topic, TopicState};

impl WriterState {
    /// The one apply path: updates the writer's state for a record already
    /// placed at log position `pos` (live write, recovery or replication).
    pub(in crate::storage::engine) fn apply(
        &mut self,
        rec: &Record<'_>,
        pos: u64,
        len: usize,
        index_files: &IndexHandles,
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
                // A live CREATE opened its index before appending, so that
                // running out of descriptors fails the request, not the batch.
                if self.index_created.take() != Some(rec.event_id) {
                    create_index(index_files, rec.topic, rec.event_id)?;
                }
                let shared = Topic::new(
                    rec.topic.to_string(),
                    rec.event_id,
                    rec.timestamp_ms,
                    expires_ms,
                    TopicState::default(),
                );
                // Empty: the index directory's fsync makes it durable.
                self.register_topic(shared, false);
                self.undo.push(Undo::Created(rec.topic.to_string()));
            }
            Kind::Delete => {
                if let Some(t) = self.topics.remove(rec.topic) {
                    let reason = rec.delete_reason().unwrap_or(DeleteReason::Deleted);
                    self.drop_topic(t, reason);
                }
                // Its pending delayed messages go with it.
                let gone: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.topic == rec.topic)
                    .map(|(&id, _)| id)
                    .collect();
                for id in gone {
                    if let Some(p) = self.pending.remove(&id) {
                        self.undo.push(Undo::PendingRemoved(id, p));
                        self.counts.delayed_dropped += 1;
                    }
                }
            }
            Kind::Epoch => {
                // A repaired directory carries its epochs in the checkpoint
                // and may replay their records again.
                let known = self.epochs.iter().any(|e| e.start_id == rec.event_id);
                if let Some((epoch, prev_last_id, history)) = rec.epoch_fields().filter(|_| !known)
                {
                    self.epochs.push(EpochMeta {
                        epoch,
                        start_id: rec.event_id,
                        prev_last_id,
                    });
                    if self.history == 0 {
                        self.history = history;
                    }
                    self.want_checkpoint = true;
                }
            }
            Kind::Group => self.apply_group(rec),
            Kind::DPub => {
                if self.topics.contains_key(rec.topic) {
                    self.note_key(rec);
                }
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
                self.undo.push(Undo::PendingAdded(rec.event_id));
                self.changes.push(Change::Delayed {
                    due_ms,
                    id: rec.event_id,
                });
            }
            Kind::Pub | Kind::Fire => {
                if rec.kind == Kind::Fire
                    && let Some(dpub) = rec.body_u64()
                    && let Some(p) = self.pending.remove(&dpub)
                {
                    self.undo.push(Undo::PendingRemoved(dpub, p));
                }
                // A fired delayed message repeats its DPUB's headers: the
                // key belongs to the DPUB's id, noted when it was applied.
                if rec.kind == Kind::Pub && self.topics.contains_key(rec.topic) {
                    self.note_key(rec);
                }
                let Some(t) = self.topics.get_mut(rec.topic) else {
                    warn!(
                        "message {} names unknown topic {}; not indexed",
                        rec.event_id, rec.topic
                    );
                    return Ok(());
                };
                if !t.dirty {
                    self.undo.push(Undo::Touched {
                        name: rec.topic.to_string(),
                        state: t.state,
                        flushed_entries: t.flushed_entries,
                    });
                }
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

    /// Makes a topic known to the writer (created live, replayed, or loaded
    /// from the checkpoint); readers see it at the next commit. Its index
    /// file holds exactly the entries of the topic's current state.
    pub(super) fn register_topic(&mut self, shared: Topic, unsynced: bool) {
        let state = shared.state();
        let shared = Arc::new(shared);
        self.changes.push(Change::Created(Arc::clone(&shared)));
        self.topics.insert(
            shared.name.clone(),
            WriterTopic {
                shared,
                state,
                flushed_entries: state.entries,
                buf: Vec::new(),
                dirty: false,
                unsynced,
                groups: Default::default(),
                groups_dirty: false,
            },
        );
    }

    /// The dedup table's part of applying a PUB or DPUB record.
    fn note_key(&mut self, rec: &Record<'_>) {
        let more = rec.flags & FLAG_BATCH_MORE != 0;
        self.dedup.note(
            rec.topic,
            rec.headers,
            rec.event_id,
            rec.timestamp_ms,
            more,
            now_ms(),
        );
    }

    pub(super) fn drop_topic(&mut self, t: WriterTopic, reason: DeleteReason) {
        self.dedup.drop_topic(&t.shared.name);
        self.index_bytes = self
            .index_bytes
            .saturating_sub(t.state.entries * ENTRY_LEN as u64);
        self.changes.push(Change::Deleted {
            name: t.shared.name.clone(),
            create_id: t.shared.create_id,
            reason,
        });
        self.undo.push(Undo::Removed(Box::new(t)));
    }

    /// The one apply path for a GROUP record.
    pub(super) fn apply_group(&mut self, rec: &Record<'_>) {
        let Some(op) = rec.group_op() else {
            warn!(
                "group record {} has a malformed body; ignored",
                rec.event_id
            );
            return;
        };
        let (name, new) = match op {
            GroupOp::Set {
                group,
                committed,
                failed_at,
                failures,
                alone,
            } => (
                group,
                Some(GroupState {
                    committed,
                    failed_at,
                    failures,
                    alone,
                    set_id: rec.event_id,
                }),
            ),
            GroupOp::Remove { group } => (group, None),
        };
        let Some(t) = self.topics.get_mut(rec.topic) else {
            return; // its topic is gone: so are its groups
        };
        let before = t.groups.get(name).copied();
        match new {
            Some(g) => t.groups.insert(name.to_string(), g),
            None => t.groups.remove(name),
        };
        let first_touch = !t.dirty;
        let state = (t.state, t.flushed_entries);
        t.groups_dirty = true;
        t.dirty = true;
        self.undo.push(Undo::Group {
            topic: rec.topic.to_string(),
            group: name.to_string(),
            before,
        });
        if first_touch {
            self.undo.push(Undo::Touched {
                name: rec.topic.to_string(),
                state: state.0,
                flushed_entries: state.1,
            });
            self.dirty.push(rec.topic.to_string());
        }
    }
}

/// Creates (empty) the index file of a topic incarnation.
pub(in crate::storage::engine) fn create_index(
    index_files: &IndexHandles,
    topic: &str,
    create_id: u64,
) -> Result<(), StoreError> {
    #[cfg(test)]
    crate::storage::engine::fault::hit(crate::storage::engine::fault::Step::IndexCreate)?;
    index_files.create(topic, create_id).map(|_| ())
}
