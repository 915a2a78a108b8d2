//! The writer's in-memory state types: its view of each topic, the pending
//! delayed messages, the structural changes a batch publishes at commit, and
//! the batch's counters.
//!
//! Owned by the writer thread (types only; [`super`] holds
//! them). Readers never see these: they see what the commit publishes to
//! the store view. Their fields are visible only inside `state/`; the rest of
//! the engine reads them through the accessors here.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::stats::Stats;
use crate::storage::log::record::DeleteReason;
use crate::storage::log::segment::Segment;
use crate::storage::view::{GroupState, Topic, TopicState};

/// The writer's own view of a topic, ahead of what readers see until commit.
pub(in crate::storage::engine) struct WriterTopic {
    pub(super) shared: Arc<Topic>,
    pub(super) state: TopicState,
    /// Entries already written to the index file.
    pub(super) flushed_entries: u64,
    /// Index bytes not yet written.
    pub(super) buf: Vec<u8>,
    /// Changed in the batch being built (listed in the writer's `dirty`).
    pub(super) dirty: bool,
    /// Written since the last checkpoint's fsync.
    pub(super) unsynced: bool,
    /// Its consumer groups (the writer's copy, ahead of readers until commit).
    pub(super) groups: BTreeMap<String, GroupState>,
    /// A consumer group changed in the batch being built.
    pub(super) groups_dirty: bool,
}

impl WriterTopic {
    /// The topic as readers share it (name, create id, lifetime).
    pub(in crate::storage::engine) fn shared(&self) -> &Topic {
        &self.shared
    }

    /// Its counters as the writer has them (ahead of readers until commit).
    pub(in crate::storage::engine) fn counters(&self) -> TopicState {
        self.state
    }

    /// Entries already written to the index file.
    pub(in crate::storage::engine) fn flushed_entries(&self) -> u64 {
        self.flushed_entries
    }

    /// Index entries of the batch not yet written to the file.
    pub(in crate::storage::engine) fn unflushed(&self) -> &[u8] {
        &self.buf
    }

    /// Its consumer groups as the writer has them.
    pub(in crate::storage::engine) fn groups(&self) -> &BTreeMap<String, GroupState> {
        &self.groups
    }
}

/// A delayed message waiting in the log for its due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::storage::engine) struct Pending {
    pub(super) topic: String,
    pub(super) due_ms: u64,
    /// Global log position and length of its DPUB record.
    pub(super) pos: u64,
    pub(super) len: u32,
}

impl Pending {
    /// The topic it is for.
    pub(in crate::storage::engine) fn topic(&self) -> &str {
        &self.topic
    }

    /// Global log position of its DPUB record.
    pub(in crate::storage::engine) fn pos(&self) -> u64 {
        self.pos
    }

    /// Length of its DPUB record.
    pub(in crate::storage::engine) fn record_len(&self) -> u32 {
        self.len
    }
}

/// Structural changes published at commit, in order.
pub(in crate::storage::engine) enum Change {
    Created(Arc<Topic>),
    /// A delayed message to hand to the delay thread.
    Delayed {
        due_ms: u64,
        id: u64,
    },
    /// Segments deleted by retention: dropped from the shared set and
    /// unlinked after the topics' new first entries are published.
    SegmentsRemoved(Vec<Arc<Segment>>),
    /// Segments a slave's reset dropped: out of the shared set at publish,
    /// their files unlinked after the next checkpoint (which no longer
    /// points into them).
    SegmentsDropped(Vec<Arc<Segment>>),
    /// A topic removed. Publishing it drops the topic for readers; its
    /// index file is unlinked after the next checkpoint, which no longer
    /// names it (a batch that fails before can still put it back).
    Deleted {
        name: String,
        create_id: u64,
        reason: DeleteReason,
    },
}

/// STATS counters of the batch being built: added at commit, dropped with
/// a batch that fails, so STATS never counts what was answered ERR.
#[derive(Debug, Default, Clone, Copy)]
pub(in crate::storage::engine) struct BatchCounts {
    pub(super) published: u64,
    pub(super) topics_expired: u64,
    pub(super) delayed_dropped: u64,
    pub(super) dead_lettered: u64,
    /// Publishes answered as duplicates of a keyed one (nothing written).
    pub(super) duplicates: u64,
}

impl BatchCounts {
    /// Adds the batch's counters to STATS (at commit).
    pub(in crate::storage::engine) fn add_to(self, stats: &Stats) {
        Stats::add(&stats.messages_published, self.published);
        Stats::add(&stats.topics_expired, self.topics_expired);
        Stats::add(&stats.delayed_dropped, self.delayed_dropped);
        Stats::add(&stats.dead_lettered, self.dead_lettered);
        Stats::add(&stats.dedup_duplicates, self.duplicates);
    }
}
