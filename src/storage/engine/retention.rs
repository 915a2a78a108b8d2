//! Retention: deleting the oldest sealed segments once they are older than
//! `store.maxDays`, unless something still needs them.
//!
//! Runs on the writer thread, asked by the `retention` timer thread. What
//! must be kept is a list of *holds*: log positions at or after which no
//! segment may go: the oldest pending delayed message, and what a
//! connected slave has not acknowledged yet. Topics' first entries move past
//! the deleted segments at the same commit.

use std::fs::File;
use std::sync::Arc;

use log::info;

use super::writer::Writer;
use crate::storage::StoreError;
use crate::storage::index::{self, ENTRY_LEN, Entry};

impl Writer {
    /// Log positions retention must keep: no segment holding bytes at or
    /// after the lowest of them is deleted.
    fn retention_holds(&self) -> Vec<u64> {
        let oldest_delayed = self.state.pending().values().map(|p| p.pos()).min();
        // What a connected slave has not acknowledged yet.
        let slaves = self.repl.lowest_acked_pos();
        oldest_delayed.into_iter().chain(slaves).collect()
    }

    /// Deletes the oldest sealed segments whose last write is older than
    /// `store.maxDays`, never the active one and never one holding bytes at
    /// or after a hold.
    pub(super) fn retention(&mut self, now_ms: u64) -> Result<(), StoreError> {
        let cutoff = now_ms.saturating_sub(self.tuning.max_age_ms);
        let hold = self.retention_holds().into_iter().min();
        let segs = self.store.segments.all();
        let mut doomed = Vec::new();
        let mut doomed_bytes = 0;
        for pair in segs.windows(2) {
            let (seg, next) = (&pair[0], &pair[1]);
            if hold.is_some_and(|p| p < next.base) {
                break;
            }
            let meta = seg
                .file
                .metadata()
                .map_err(|e| StoreError::io("stat segment", &seg.path, e))?;
            let mtime_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(u64::MAX, |d| d.as_millis() as u64);
            if mtime_ms >= cutoff {
                break;
            }
            doomed_bytes += meta.len();
            doomed.push(Arc::clone(seg));
        }
        if doomed.is_empty() {
            return Ok(());
        }
        let keep_from = segs[doomed.len()].base;
        // Read every topic's new first entry before changing anything, so
        // a failed read leaves the writer as it was.
        let mut moved = Vec::new();
        let files = &self.store.index_files;
        for (name, t) in self.state.topics() {
            let hi = t.flushed_entries();
            let read_err =
                |e| StoreError::io("read index", &files.path(name, t.shared().create_id), e);
            let file = files.get(name, t.shared().create_id)?;
            let first =
                search_pos(&file, t.counters().first_entry, hi, keep_from).map_err(read_err)?;
            if first == t.counters().first_entry {
                continue;
            }
            let first_id = if first >= t.counters().entries {
                t.counters().first_id
            } else if first < hi {
                index::EntrySource::entry(&*file, first)
                    .map_err(read_err)?
                    .event_id
            } else {
                // The first retained entry is still in the buffer.
                t.unflushed()
                    .get(((first - hi) as usize) * ENTRY_LEN..)
                    .and_then(Entry::decode)
                    .map_or(t.counters().last_id, |e| e.event_id)
            };
            moved.push((name.clone(), first, first_id));
        }
        info!(
            "retention: deleting {} segment(s) before log position {keep_from}",
            doomed.len()
        );
        self.log.forget_sealed(doomed_bytes);
        self.state.drop_segments(moved, doomed);
        Ok(())
    }
}

/// The first entry in `lo..hi` whose log position is at or after `pos`
/// (positions increase with entry numbers, like event ids).
fn search_pos(file: &File, mut lo: u64, mut hi: u64, pos: u64) -> std::io::Result<u64> {
    use index::EntrySource;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if file.entry(mid)?.pos < pos {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
