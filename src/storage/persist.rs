//! The writer's checkpoint: makes the index files and the log durable,
//! gathers the writer's state (topics, pending delayed messages, groups,
//! history and epochs) into a [`Checkpoint`] and stores it atomically, then
//! unlinks the segments that waited for a checkpoint no longer pointing
//! into them.
//!
//! Runs on the writer thread, after a successful commit (and in recovery).

use std::time::Instant;

use log::warn;

use super::checkpoint::{Checkpoint, DelayedMeta, GroupMeta, TopicMeta};
use super::record::FORMAT_VERSION;
use super::writer::Writer;
use super::{StoreError, sync_dir};

impl Writer {
    /// Makes the index files and the log durable, then writes a checkpoint
    /// at the current position. Call only after a successful commit.
    pub(super) fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.sync_log()?;
        self.publish_durable();
        let mut topics = Vec::with_capacity(self.topics.len());
        for t in self.topics.values_mut() {
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
        for (name, t) in &self.topics {
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
            last_event_id: self.last_id,
            history: self.history,
            epochs: self.epochs.clone(),
            topics,
            delayed,
            groups,
        }
        .store(&self.dir)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.want_checkpoint = false;
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
