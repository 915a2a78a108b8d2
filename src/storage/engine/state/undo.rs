//! The undo log of the batch being built: what to put back when its commit
//! fails, so a request answered `ERR` changed nothing.
//!
//! Owned by the writer thread. A batch starts at a [`Mark`] (the writer's
//! counters when it started); every change the batch makes to topics and
//! pending delayed messages is recorded as it happens. [`UndoLog::revert`]
//! replays the record backwards; the writer then has the active log cut
//! its file back to where the batch started ([`super::super::active_log`]).
//! Recovery replays without a batch, so nothing is recorded then.

use std::collections::HashMap;

use super::topic::{Pending, WriterTopic};
use crate::storage::checkpoint::EpochMeta;
use crate::storage::view::{GroupState, TopicState};

/// Where the batch started: everything before it is committed.
pub(super) struct Mark {
    pub(super) last_id: u64,
    pub(super) since_checkpoint: u64,
    pub(super) index_bytes: u64,
    pub(super) history: u64,
    /// A few entries at most (one per failover).
    pub(super) epochs: Vec<EpochMeta>,
}

/// One change to take back.
pub(super) enum Undo {
    /// A topic created in this batch: remove it and its new index file.
    Created(String),
    /// A topic removed in this batch: put it back.
    Removed(Box<WriterTopic>),
    /// A topic's counters before this batch first changed them.
    Touched {
        name: String,
        state: TopicState,
        flushed_entries: u64,
    },
    PendingAdded(u64),
    PendingRemoved(u64, Pending),
    /// A consumer group of `topic` before this batch first changed it.
    Group {
        topic: String,
        group: String,
        before: Option<GroupState>,
    },
}

#[derive(Default)]
pub(super) struct UndoLog {
    mark: Option<Mark>,
    ops: Vec<Undo>,
}

impl UndoLog {
    pub(super) fn begin(&mut self, mark: Mark) {
        self.mark = Some(mark);
        self.ops.clear();
    }

    /// The batch is committed: nothing to take back any more.
    pub(super) fn end(&mut self) {
        self.mark = None;
        self.ops.clear();
    }

    /// Records a change, while a batch is open.
    pub(super) fn push(&mut self, u: Undo) {
        if self.mark.is_some() {
            self.ops.push(u);
        }
    }

    pub(super) fn active(&self) -> bool {
        self.mark.is_some()
    }

    /// The last event id before the open batch.
    pub(super) fn mark_last_id(&self) -> Option<u64> {
        self.mark.as_ref().map(|m| m.last_id)
    }

    /// Takes back every recorded change to `topics` and `pending`, newest
    /// first. Returns the batch's mark and the index files of topics it
    /// created, (name, create id), to unlink; `None` when no batch is open.
    pub(super) fn revert(
        &mut self,
        topics: &mut HashMap<String, WriterTopic>,
        pending: &mut HashMap<u64, Pending>,
    ) -> Option<(Mark, Vec<(String, u64)>)> {
        let mark = self.mark.take()?;
        let mut unlink = Vec::new();
        for u in self.ops.drain(..).rev() {
            match u {
                Undo::Created(name) => {
                    if let Some(t) = topics.remove(&name) {
                        unlink.push((name, t.shared.create_id));
                    }
                }
                Undo::Removed(t) => {
                    topics.insert(t.shared.name.clone(), *t);
                }
                Undo::Touched {
                    name,
                    state,
                    flushed_entries,
                } => {
                    if let Some(t) = topics.get_mut(&name) {
                        t.state = state;
                        t.flushed_entries = flushed_entries;
                    }
                }
                Undo::PendingAdded(id) => {
                    pending.remove(&id);
                }
                Undo::PendingRemoved(id, p) => {
                    pending.insert(id, p);
                }
                Undo::Group {
                    topic,
                    group,
                    before,
                } => {
                    if let Some(t) = topics.get_mut(&topic) {
                        match before {
                            Some(g) => t.groups.insert(group, g),
                            None => t.groups.remove(&group),
                        };
                    }
                }
            }
        }
        // Nothing of the batch is buffered any more.
        for t in topics.values_mut() {
            t.buf.clear();
            t.dirty = false;
            t.groups_dirty = false;
        }
        Some((mark, unlink))
    }
}
