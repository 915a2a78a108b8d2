//! Commit-log segment files and the shared, ordered set of them.
//!
//! A segment is named by the global log position of its first byte,
//! zero-padded to 20 digits so `ls` sorts them. The writer appends with
//! positional writes; readers pread through the same [`Segment`] handle, so
//! a reader holding an `Arc<Segment>` keeps the file open even if retention
//! unlinks it mid-read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::storage::StoreError;

/// One open segment file.
#[derive(Debug)]
pub struct Segment {
    /// Global log position of the segment's first byte.
    pub base: u64,
    pub path: PathBuf,
    pub file: File,
}

impl Segment {
    pub fn file_name(base: u64) -> String {
        format!("{base:020}.log")
    }

    /// The base position encoded in a segment file name, if it is one.
    pub fn parse_name(name: &str) -> Option<u64> {
        let digits = name.strip_suffix(".log")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// Reads exactly `buf.len()` bytes at global position `pos`.
    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<(), StoreError> {
        let offset = pos.saturating_sub(self.base);
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| StoreError::io("read segment", &self.path, e))
    }

    /// Opens (creating if asked) a segment for reading and positional writing.
    pub fn open(dir: &Path, base: u64, create: bool) -> Result<Segment, StoreError> {
        let path = dir.join(Segment::file_name(base));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io("open segment", &path, e))?;
        Ok(Segment { base, path, file })
    }
}

/// The segments currently in the log, oldest first. Written only by the
/// writer (roll, retention); read by every subscriber.
#[derive(Debug, Default)]
pub struct SegmentSet {
    segs: RwLock<Vec<Arc<Segment>>>,
}

impl SegmentSet {
    /// The segment holding global position `pos`.
    pub fn find(&self, pos: u64) -> Option<Arc<Segment>> {
        let segs = self.segs.read().unwrap_or_else(|p| p.into_inner());
        let i = segs.partition_point(|s| s.base <= pos);
        i.checked_sub(1).map(|i| Arc::clone(&segs[i]))
    }

    /// Where the segment starting at `base` ends: the next segment's base,
    /// `u64::MAX` after the last one.
    pub fn end_of(&self, base: u64) -> u64 {
        let segs = self.segs.read().unwrap_or_else(|p| p.into_inner());
        let i = segs.partition_point(|s| s.base <= base);
        segs.get(i).map_or(u64::MAX, |s| s.base)
    }

    pub fn push(&self, seg: Arc<Segment>) {
        self.segs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(seg);
    }

    /// Drops the `n` oldest segments (retention).
    pub fn remove_prefix(&self, n: usize) {
        let mut segs = self.segs.write().unwrap_or_else(|p| p.into_inner());
        let n = n.min(segs.len().saturating_sub(1)); // never the active one
        segs.drain(..n);
    }

    /// Drops every segment starting at or after `base` (a failed group's
    /// rolls; no reader can be in them, they were never published).
    pub fn remove_from(&self, base: u64) {
        let mut segs = self.segs.write().unwrap_or_else(|p| p.into_inner());
        let keep = segs.partition_point(|s| s.base < base).max(1);
        segs.truncate(keep);
    }

    pub fn all(&self) -> Vec<Arc<Segment>> {
        self.segs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn count(&self) -> usize {
        self.segs.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The segment bases found in `dir`, sorted.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let rd = std::fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))?;
    let mut bases = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| StoreError::io("list", dir, e))?;
        if let Some(base) = ent.file_name().to_str().and_then(Segment::parse_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        let a = Segment::file_name(0);
        let b = Segment::file_name(1_073_741_824);
        assert_eq!(a, "00000000000000000000.log");
        assert!(a < b);
        assert_eq!(Segment::parse_name(&b), Some(1_073_741_824));
        assert_eq!(Segment::parse_name("123.log"), None);
        assert_eq!(Segment::parse_name("0000000000000000000x.log"), None);
        assert_eq!(Segment::parse_name("00000000000000000000.idx"), None);
    }

    #[test]
    fn find_picks_the_containing_segment() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        let set = SegmentSet::default();
        assert!(set.find(0).is_none());
        for base in [0u64, 100, 250] {
            set.push(Arc::new(Segment::open(dir.path(), base, true)?));
        }
        assert_eq!(set.find(0).map(|s| s.base), Some(0));
        assert_eq!(set.find(99).map(|s| s.base), Some(0));
        assert_eq!(set.find(100).map(|s| s.base), Some(100));
        assert_eq!(set.find(1000).map(|s| s.base), Some(250));
        assert_eq!(list_segments(dir.path())?, vec![0, 100, 250]);
        set.remove_from(100);
        assert_eq!(set.find(1000).map(|s| s.base), Some(0), "rolls taken back");
        set.remove_from(0);
        assert_eq!(set.count(), 1, "never the last segment");
        Ok(())
    }
}
