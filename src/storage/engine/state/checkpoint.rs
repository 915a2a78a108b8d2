//! The writer's state to and from a checkpoint: what a checkpoint holds of
//! [`WriterState`] (topics with their groups, pending delayed messages,
//! the last id, history and epochs) is gathered and loaded here, in one
//! place; when to write one is [`super::super::checkpointer`]'s, the file format
//! [`crate::storage::checkpoint`]'s.
//!
//! Runs on the writer thread (loading: recovery, on the main thread).

use std::path::Path;

use super::WriterState;
use super::dedup::Seen;
use super::topic::{Change, Pending};
use crate::storage::StoreError;
use crate::storage::checkpoint::{Checkpoint, DedupMeta, DelayedMeta, GroupMeta, TopicMeta};
use crate::storage::handles::IndexHandles;
use crate::storage::index::{self, ENTRY_LEN};
use crate::storage::log::record::FORMAT_VERSION;
use crate::storage::now_ms;
use crate::storage::view::{GroupState, Topic, TopicState};

impl WriterState {
    /// fsyncs the index files written since the last checkpoint.
    pub(in crate::storage::engine) fn sync_indexes(
        &mut self,
        files: &IndexHandles,
    ) -> Result<(), StoreError> {
        for t in self.topics.values_mut() {
            if t.unsynced {
                // Any descriptor of the file will do: fsync flushes the file.
                files
                    .get(&t.shared.name, t.shared.create_id)?
                    .sync_data()
                    .map_err(|e| {
                        let path = files.path(&t.shared.name, t.shared.create_id);
                        StoreError::io("fsync index", &path, e)
                    })?;
                t.unsynced = false;
            }
        }
        Ok(())
    }

    /// The checkpoint of this state at log position `log_pos`, with the
    /// write quorum's undone id ranges `gaps`.
    pub(in crate::storage::engine) fn checkpoint(
        &self,
        log_pos: u64,
        gaps: Vec<(u64, u64)>,
    ) -> Checkpoint {
        let mut topics: Vec<TopicMeta> = self
            .topics
            .values()
            .map(|t| TopicMeta {
                name: t.shared.name.clone(),
                create_id: t.shared.create_id,
                created_ms: t.shared.created_ms,
                expires_ms: t.shared.expires_ms,
                entries: t.state.entries,
                first_entry: t.state.first_entry,
                first_id: t.state.first_id,
                last_id: t.state.last_id,
            })
            .collect();
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
            log_pos,
            last_event_id: self.last_id,
            history: self.history,
            epochs: self.epochs.clone(),
            topics,
            delayed,
            groups,
            gaps,
            dedup: self
                .dedup
                .live_keys(now_ms())
                .into_iter()
                .map(|(topic, key, s)| DedupMeta {
                    topic: topic.to_string(),
                    key: String::from_utf8_lossy(key).into_owned(),
                    id: s.id,
                    ts_ms: s.ts_ms,
                    first: s.first,
                    last: s.last,
                })
                .collect(),
        }
    }

    /// Loads the checkpoint's state (the caller takes its undone id
    /// ranges, which are the write quorum's). Returns the topics whose index file is
    /// missing (its DELETE must be in the log after the checkpoint).
    pub(in crate::storage::engine) fn load_checkpoint(
        &mut self,
        cp: &Checkpoint,
        index_dir: &Path,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut missing = Vec::new();
        self.last_id = cp.last_event_id;
        self.history = cp.history;
        self.epochs = cp.epochs.clone();
        for d in &cp.delayed {
            self.pending.insert(
                d.id,
                Pending {
                    topic: d.topic.clone(),
                    due_ms: d.due_ms,
                    pos: d.pos,
                    len: d.len,
                },
            );
            self.changes.push(Change::Delayed {
                due_ms: d.due_ms,
                id: d.id,
            });
        }
        for tm in &cp.topics {
            let path = index_dir.join(index::file_name(&tm.name, tm.create_id));
            // Only looked at here: kept open later on demand, within the
            // bounded set of index handles.
            let want = tm.entries * ENTRY_LEN as u64;
            let have = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    missing.push((tm.name.clone(), tm.create_id));
                    want
                }
                Err(e) => return Err(StoreError::io("stat index", &path, e)),
            };
            if have < want {
                return Err(StoreError::corrupt(
                    &path,
                    have,
                    format!("index holds {have} bytes, the checkpoint needs {want}"),
                ));
            }
            if have > want {
                // Entries written after the checkpoint; replay rewrites them.
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(want))
                    .map_err(|e| StoreError::io("truncate index", &path, e))?;
            }
            let state = TopicState {
                entries: tm.entries,
                first_entry: tm.first_entry,
                first_id: tm.first_id,
                last_id: tm.last_id,
                ended: None,
            };
            let shared = Topic::new(
                tm.name.clone(),
                tm.create_id,
                tm.created_ms,
                tm.expires_ms,
                state,
            );
            self.index_bytes += want;
            self.register_topic(shared, have > want);
        }
        for g in &cp.groups {
            if let Some(t) = self.topics.get_mut(&g.topic) {
                let st = GroupState {
                    committed: g.committed,
                    failed_at: g.failed_at,
                    failures: g.failures,
                    alone: g.alone,
                    set_id: g.set_id,
                };
                t.groups.insert(g.name.clone(), st);
                if !t.groups_dirty {
                    t.groups_dirty = true;
                    t.dirty = true;
                    self.dirty.push(g.topic.clone());
                }
            }
        }
        // After the topics: a key of a topic the checkpoint does not hold
        // (only a damaged file) is dropped.
        let now = now_ms();
        for d in &cp.dedup {
            if self.topics.contains_key(&d.topic) {
                let seen = Seen {
                    id: d.id,
                    ts_ms: d.ts_ms,
                    first: d.first,
                    last: d.last,
                };
                self.dedup.load(&d.topic, d.key.as_bytes(), seen, now);
            }
        }
        Ok(missing)
    }
}
