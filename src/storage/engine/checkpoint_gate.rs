//! When the writer may write a checkpoint, and what waits for the next one
//! ([`CheckpointGate`]): the time of the last one, the retry time after one
//! that failed for want of a resource, and the segment files that may go
//! only once a checkpoint no longer points into them.
//!
//! Owned by the writer thread (a field of `Writer`, apart from
//! [`super::checkpointer`], which writes the checkpoints, as
//! [`super::quorum_gate`] is apart from [`super::quorum`]). Its fields are
//! private: the writer changes it through the methods here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::log::segment::Segment;

/// A checkpoint that failed for want of a resource is tried again after this.
pub(super) const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);
/// With no writes, write a checkpoint this long after the last one if the
/// log moved, so a restart after an idle period replays nothing.
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(10);

/// The writer's checkpoint bookkeeping.
pub(super) struct CheckpointGate {
    last_at: Instant,
    /// After a checkpoint failed for want of a resource, not before this.
    retry_at: Option<Instant>,
    /// Segments dropped from the log (a slave's reset) whose files go only
    /// after the next checkpoint no longer points into them.
    unlink_after: Vec<Arc<Segment>>,
}

impl CheckpointGate {
    pub(super) fn new() -> CheckpointGate {
        CheckpointGate {
            last_at: Instant::now(),
            retry_at: None,
            unlink_after: Vec::new(),
        }
    }

    /// Not waiting out the delay after a failed checkpoint.
    pub(super) fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// An idle writer has waited long enough since the last checkpoint.
    pub(super) fn idle_due(&self) -> bool {
        self.last_at.elapsed() >= IDLE_CHECKPOINT_AFTER && self.may_try()
    }

    /// `segs` are unlinked once the next checkpoint is written.
    pub(super) fn unlink_after_next(&mut self, segs: Vec<Arc<Segment>>) {
        self.unlink_after.extend(segs);
    }

    /// A checkpoint was written: returns the segments that waited for it.
    pub(super) fn written(&mut self) -> Vec<Arc<Segment>> {
        self.last_at = Instant::now();
        std::mem::take(&mut self.unlink_after)
    }

    /// A checkpoint the writer tried was written: no retry pending.
    pub(super) fn succeeded(&mut self) {
        self.retry_at = None;
    }

    /// A checkpoint failed for want of a resource: retry after
    /// [`CHECKPOINT_RETRY`].
    pub(super) fn failed(&mut self) {
        self.retry_at = Some(Instant::now() + CHECKPOINT_RETRY);
    }
}
