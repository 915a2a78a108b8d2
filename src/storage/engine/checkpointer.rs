//! Writing checkpoints: the writer's derived state (topics, pending
//! delayed messages, groups, epochs, undone id ranges) at one log position,
//! after making the log and the index files durable, so a restart replays
//! only what came after.
//!
//! Runs on the writer thread, as part of [`Writer`]: after each batch
//! when enough log was written or a segment rolled, on an idle tick, and at
//! shutdown. What goes into it is `state/checkpoint.rs`'s; the file
//! format is [`crate::storage::checkpoint`]'s.

use std::time::{Duration, Instant};

use log::warn;

use super::writer::Writer;
use crate::storage::StoreError;
use crate::storage::sync_dir;

/// A checkpoint that failed for want of a resource is tried again after this.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

impl Writer {
    pub(super) fn checkpoint_due(&self) -> bool {
        self.poisoned.is_none()
            && self.state.checkpoint_wanted(self.tuning.checkpoint_bytes)
            && self.checkpoint_retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// A checkpoint only shortens the next replay: one that fails for want
    /// of a resource (a full disk) is retried later; a failed fsync poisons.
    pub(super) fn try_checkpoint(&mut self) {
        match self.checkpoint() {
            Ok(()) => self.checkpoint_retry_at = None,
            Err(e) if e.is_sync_failure() => self.poison(&e),
            Err(e) => {
                warn!(
                    "checkpoint failed, retrying in {}s: {e}",
                    CHECKPOINT_RETRY.as_secs()
                );
                self.checkpoint_retry_at = Some(Instant::now() + CHECKPOINT_RETRY);
            }
        }
    }

    /// Makes the index files and the log durable, then writes a checkpoint
    /// at the current position. Call only after a successful commit.
    pub(super) fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.sync_log()?;
        self.publish_durable();
        self.state.sync_indexes(&self.broker.index_files)?;
        sync_dir(&self.index_dir)?;
        self.state
            .checkpoint(self.next_pos(), self.quorum.gaps().to_vec())
            .store(&self.dir)?;
        self.state.checkpointed();
        self.last_checkpoint = Instant::now();
        if !self.unlink_after_checkpoint.is_empty() {
            for seg in self.unlink_after_checkpoint.drain(..) {
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    warn!("could not remove segment {}: {e}", seg.path.display());
                }
            }
            sync_dir(&self.log_dir)?;
        }
        Ok(())
    }
}
