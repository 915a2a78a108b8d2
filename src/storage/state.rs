//! The writer's in-memory state types: its view of each topic, the pending
//! delayed messages, the structural changes a group publishes at commit, and
//! the group's counters.
//!
//! Owned by the writer thread (types only; [`super::writer`] holds them).
//! Readers never see these: they see what the commit publishes to the broker.

use std::path::PathBuf;
use std::sync::Arc;

use super::record::DeleteReason;
use super::segment::Segment;
use crate::broker::{Topic, TopicState};

/// The writer's own view of a topic, ahead of what readers see until commit.
pub(super) struct WTopic {
    pub(super) shared: Arc<Topic>,
    pub(super) path: PathBuf,
    pub(super) state: TopicState,
    /// Entries already written to the index file.
    pub(super) flushed_entries: u64,
    /// Index bytes not yet written.
    pub(super) buf: Vec<u8>,
    /// Changed in the group being built (listed in the writer's `dirty`).
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
    /// A topic removed. Publishing it first stores a checkpoint that no
    /// longer names the topic (the last one may), then unlinks its index.
    Deleted {
        name: String,
        create_id: u64,
        reason: DeleteReason,
        index_path: PathBuf,
    },
}

/// STATS counters of the group being built: added at commit, dropped with
/// a group that fails, so STATS never counts what was answered ERR.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct GroupCounts {
    pub(super) published: u64,
    pub(super) topics_expired: u64,
    pub(super) delayed_dropped: u64,
}
