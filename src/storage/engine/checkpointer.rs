//! Writing checkpoints: the writer's derived state (topics, pending
//! delayed messages, groups, epochs, undone id ranges) at one log position,
//! after making the log and the index files durable, so a restart replays
//! only what came after.
//!
//! Runs on the writer thread, as part of [`Writer`]: after each batch
//! when enough log was written or a segment rolled, on an idle tick, and at
//! shutdown. The file format is [`crate::storage::checkpoint`]'s.

use std::time::{Duration, Instant};

use log::warn;

use super::writer::Writer;
use crate::storage::StoreError;
use crate::storage::checkpoint::{Checkpoint, DelayedMeta, GroupMeta, TopicMeta};
use crate::storage::log::record::FORMAT_VERSION;
use crate::storage::sync_dir;

/// A checkpoint that failed for want of a resource is tried again after this.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

impl Writer {
    pub(super) fn checkpoint_due(&self) -> bool {
        self.poisoned.is_none()
            && (self.state.want_checkpoint
                || self.state.since_checkpoint >= self.tuning.checkpoint_bytes)
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
        let mut topics = Vec::with_capacity(self.state.topics.len());
        for t in self.state.topics.values_mut() {
            if t.unsynced {
                // Any descriptor of the file will do: fsync flushes the file.
                let files = &self.broker.index_files;
                files
                    .get(&t.shared.name, t.shared.create_id)?
                    .sync_data()
                    .map_err(|e| {
                        let path = files.path(&t.shared.name, t.shared.create_id);
                        StoreError::io("fsync index", &path, e)
                    })?;
                t.unsynced = false;
            }
            topics.push(TopicMeta {
                name: t.shared.name.clone(),
                create_id: t.shared.create_id,
                created_ms: t.shared.created_ms,
                expires_ms: t.shared.expires_ms,
                entries: t.state.entries,
                first_entry: t.state.first_entry,
                first_id: t.state.first_id,
                last_id: t.state.last_id,
            });
        }
        sync_dir(&self.index_dir)?;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut delayed: Vec<DelayedMeta> = self
            .state
            .pending
            .iter()
            .map(|(&id, p)| DelayedMeta {
                id,
                due_ms: p.due_ms,
                pos: p.pos,
                len: p.len,
                topic: p.topic.clone(),
            })
            .collect();
        delayed.sort_by_key(|d| d.id);
        let mut groups = Vec::new();
        for (name, t) in &self.state.topics {
            for (g, st) in &t.groups {
                groups.push(GroupMeta {
                    topic: name.clone(),
                    name: g.clone(),
                    committed: st.committed,
                    failed_at: st.failed_at,
                    failures: st.failures,
                    set_id: st.set_id,
                    alone: st.alone,
                });
            }
        }
        groups.sort_by(|a, b| (&a.topic, &a.name).cmp(&(&b.topic, &b.name)));
        Checkpoint {
            format: FORMAT_VERSION,
            log_pos: self.next_pos(),
            last_event_id: self.state.last_id,
            history: self.state.history,
            epochs: self.state.epochs.clone(),
            topics,
            delayed,
            groups,
            gaps: self.quorum.gaps.to_vec(),
        }
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
