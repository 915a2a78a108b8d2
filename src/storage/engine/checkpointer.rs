//! Writing checkpoints: the writer's derived state (topics, pending
//! delayed messages, groups, epochs, undone id ranges) at one log position,
//! after making the log and the index files durable, so a restart replays
//! only what came after.
//!
//! Runs on the writer thread, as part of [`Writer`]: after each batch
//! when enough log was written or a segment rolled, on an idle tick, and at
//! shutdown. What goes into it is `state/checkpoint.rs`'s; the file format
//! is [`crate::storage::checkpoint`]'s; when the last one was written, when
//! to retry a failed one and which segment files wait for the next one are
//! [`super::checkpoint_gate`]'s.

use log::warn;

use super::checkpoint_gate::CHECKPOINT_RETRY;
use super::writer::Writer;
use crate::storage::StoreError;
use crate::storage::sync_dir;

impl Writer {
    pub(super) fn checkpoint_due(&self) -> bool {
        self.poisoned().is_none()
            && self.state.checkpoint_wanted(self.tuning.checkpoint_bytes)
            && self.checkpoints.may_try()
    }

    /// A checkpoint only shortens the next replay: one that fails for want
    /// of a resource (a full disk) is retried later; a failed fsync poisons.
    pub(super) fn try_checkpoint(&mut self) {
        match self.checkpoint() {
            Ok(()) => self.checkpoints.succeeded(),
            Err(e) if e.is_sync_failure() => self.poison(&e),
            Err(e) => {
                warn!(
                    "checkpoint failed, retrying in {}s: {e}",
                    CHECKPOINT_RETRY.as_secs()
                );
                self.checkpoints.failed();
            }
        }
    }

    /// Makes the index files and the log durable, then writes a checkpoint
    /// at the current position. Call only after a successful commit.
    pub(super) fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.sync_log()?;
        self.publish_durable();
        self.state.sync_indexes(&self.store.index_files)?;
        sync_dir(&self.index_dir)?;
        self.state
            .checkpoint(self.next_pos(), self.quorum.gaps().to_vec())
            .store(&self.dir)?;
        self.state.checkpointed();
        let waited = self.checkpoints.written();
        if !waited.is_empty() {
            for seg in waited {
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    warn!("could not remove segment {}: {e}", seg.path.display());
                }
            }
            sync_dir(&self.log_dir)?;
        }
        Ok(())
    }
}
