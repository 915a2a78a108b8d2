//! The open index files: a bounded, least-recently-used set of handles, so
//! the number of topics never decides the number of file descriptors.
//!
//! Shared by the writer (appends index entries at commit, fsyncs them at a
//! checkpoint) and the readers (SUB's binary search and batch reads). A miss
//! opens the file (outside the lock); past the capacity the least recently
//! used handle is dropped from the set. A reader that still holds an
//! `Arc<File>` keeps reading through it, so eviction never breaks a read,
//! and a file unlinked by DELETE stays readable for whoever has it open.
//! One mutex; held only for map operations, never across I/O.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;
use super::index;

#[derive(Default)]
struct Lru {
    /// create id → (handle, last use)
    map: HashMap<u64, (Arc<File>, u64)>,
    /// last use → create id, oldest first
    order: BTreeMap<u64, u64>,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, create_id: u64) -> Option<Arc<File>> {
        self.tick += 1;
        let tick = self.tick;
        let (file, used) = self.map.get_mut(&create_id)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, create_id);
        Some(Arc::clone(file))
    }

    fn insert(&mut self, create_id: u64, file: Arc<File>, cap: usize) {
        if self.touch(create_id).is_some() {
            return; // another thread opened it meanwhile
        }
        while self.map.len() >= cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
        self.tick += 1;
        self.order.insert(self.tick, create_id);
        self.map.insert(create_id, (file, self.tick));
    }
}

/// Index files by topic incarnation (its create id, unique for ever).
pub(crate) struct IndexHandles {
    dir: PathBuf,
    cap: usize,
    lru: Mutex<Lru>,
}

impl IndexHandles {
    /// At most `cap` (≥ 1) files are kept open, in `dir`.
    pub(crate) fn new(dir: &Path, cap: usize) -> IndexHandles {
        IndexHandles {
            dir: dir.to_path_buf(),
            cap: cap.max(1),
            lru: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn path(&self, topic: &str, create_id: u64) -> PathBuf {
        self.dir.join(index::file_name(topic, create_id))
    }

    /// The index of a topic incarnation, opened if it is not open.
    pub(crate) fn get(&self, topic: &str, create_id: u64) -> Result<Arc<File>, StoreError> {
        if let Some(f) = self.lock().touch(create_id) {
            return Ok(f);
        }
        let path = self.path(topic, create_id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io("open index", &path, e))?;
        let file = Arc::new(file);
        self.lock().insert(create_id, Arc::clone(&file), self.cap);
        Ok(file)
    }

    /// Creates (empty) the index file of a new topic incarnation and keeps
    /// it open; writer only.
    pub(crate) fn create(&self, topic: &str, create_id: u64) -> Result<Arc<File>, StoreError> {
        let path = self.path(topic, create_id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| StoreError::io("create index", &path, e))?;
        let file = Arc::new(file);
        self.lock().insert(create_id, Arc::clone(&file), self.cap);
        Ok(file)
    }

    /// Drops the handle of a deleted topic incarnation.
    pub(crate) fn forget(&self, create_id: u64) {
        let mut lru = self.lock();
        if let Some((_, used)) = lru.map.remove(&create_id) {
            lru.order.remove(&used);
        }
    }

    /// Handles held open now.
    pub(crate) fn open_count(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn handles_stay_bounded_and_evicted_files_reopen() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        let h = IndexHandles::new(dir.path(), 3);
        for id in 1..=10u64 {
            let f = h.create("t", id)?;
            (&*f)
                .write_all(&id.to_le_bytes())
                .map_err(|e| StoreError::io("write", dir.path(), e))?;
            assert!(h.open_count() <= 3);
        }
        assert_eq!(h.open_count(), 3);
        // Evicted long ago: opened again, same contents.
        let f = h.get("t", 1)?;
        let mut b = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&*f, &mut b, 0)
            .map_err(|e| StoreError::io("read", dir.path(), e))?;
        assert_eq!(u64::from_le_bytes(b), 1);
        assert_eq!(h.open_count(), 3);
        h.forget(1);
        assert_eq!(h.open_count(), 2);
        assert!(h.get("t", 99).is_err(), "no such index file");
        Ok(())
    }

    #[test]
    fn the_least_recently_used_handle_goes_first() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        let h = IndexHandles::new(dir.path(), 2);
        h.create("a", 1)?;
        h.create("b", 2)?;
        h.get("a", 1)?; // a is now the most recent
        h.create("c", 3)?; // evicts b
        let lru = h.lock();
        assert!(lru.map.contains_key(&1) && lru.map.contains_key(&3));
        assert!(!lru.map.contains_key(&2));
        Ok(())
    }
}
