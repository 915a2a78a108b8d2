//! The writer's in-memory state types: its view of each topic, the pending
//! delayed messages, the structural changes a batch publishes at commit, and
//! the batch's counters.
//!
//! Owned by the writer thread (types only; [`super`] holds
//! them). Readers never see these: they see what the commit publishes to
//! the broker.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker::{GroupState, Topic, TopicState};
use crate::storage::log::record::DeleteReason;
use crate::storage::log::segment::Segment;

/// The writer's own view of a topic, ahead of what readers see until commit.
pub(in crate::storage::engine) struct WriterTopic {
    pub(in crate::storage::engine) shared: Arc<Topic>,
    pub(in crate::storage::engine) state: TopicState,
    /// Entries already written to the index file.
    pub(in crate::storage::engine) flushed_entries: u64,
    /// Index bytes not yet written.
    pub(in crate::storage::engine) buf: Vec<u8>,
    /// Changed in the batch being built (listed in the writer's `dirty`).
    pub(in crate::storage::engine) dirty: bool,
    /// Written since the last checkpoint's fsync.
    pub(in crate::storage::engine) unsynced: bool,
    /// Its consumer groups (the writer's copy, ahead of readers until commit).
    pub(in crate::storage::engine) groups: BTreeMap<String, GroupState>,
    /// A consumer group changed in the batch being built.
    pub(in crate::storage::engine) groups_dirty: bool,
}

/// A delayed message waiting in the log for its due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::storage::engine) struct Pending {
    pub(in crate::storage::engine) topic: String,
    pub(in crate::storage::engine) due_ms: u64,
    /// Global log position and length of its DPUB record.
    pub(in crate::storage::engine) pos: u64,
    pub(in crate::storage::engine) len: u32,
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
    pub(in crate::storage::engine) published: u64,
    pub(in crate::storage::engine) topics_expired: u64,
    pub(in crate::storage::engine) delayed_dropped: u64,
    pub(in crate::storage::engine) dead_lettered: u64,
}
