//! The active log: the segment file being appended to, and nothing else
//! touches it. It owns the bytes of the batch not yet written (the buffer),
//! the zero fill kept ahead of the write position (preallocation), the one
//! positional write per batch (flush), the fdatasync, the roll to a new
//! segment, and the cut-back of a batch that failed (a durable truncate to
//! where the batch started). It also counts the bytes of the sealed
//! segments before it (STATS' disk bytes), which a roll adds to, retention
//! and a slave's reset take from, and a cut-back puts back.
//!
//! Owned by the writer thread ([`super::writer`]), which decides *when* to
//! flush, sync, roll or cut back; this type only knows *how*. What a sync
//! means beyond the file (the fsync counter, unlinking deleted topics'
//! indexes, publishing the durable tail) and the shared segment set stay
//! with the writer.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::log::record::{self, Record};
use crate::storage::log::segment::{Segment, SegmentSet};
use crate::storage::{StoreError, sync_dir};

/// Zero fill kept ahead of the write position of the active segment.
const PREALLOC_CHUNK: u64 = 4 << 20;
/// Extend the zero fill when less than this is left ahead.
const PREALLOC_MARGIN: u64 = 1 << 20;

/// The segment being appended to, with its buffer and sync state.
pub(super) struct ActiveLog {
    /// Where new segments are created.
    log_dir: PathBuf,
    /// `store.maxLogSize`: a segment rolls before it would grow past it.
    max_log_size: u64,
    seg: Arc<Segment>,
    /// Bytes in the segments before `seg` (those retention has not deleted).
    sealed: u64,
    /// Bytes of `seg` already written to the file.
    len: u64,
    /// Bytes of the file that exist (written data plus the zero fill
    /// ahead of it).
    alloc: u64,
    /// Log bytes not yet written; they go at `len`.
    buf: Vec<u8>,
    /// Log bytes written but not fsynced.
    unsynced: bool,
    last_sync: Instant,
    /// Where the open batch started: the segment, its length and the
    /// sealed bytes then.
    mark: Option<(Arc<Segment>, u64, u64)>,
    /// Segments rolled to since the batch started.
    rolled: Vec<Arc<Segment>>,
    /// Log bytes of the batch reached a file (perhaps only part of them).
    touched: bool,
}

impl ActiveLog {
    /// Appending to `seg`, whose file is `len` bytes, after segments
    /// holding `sealed` bytes.
    pub(super) fn new(
        log_dir: PathBuf,
        max_log_size: u64,
        seg: Arc<Segment>,
        len: u64,
        sealed: u64,
    ) -> Self {
        ActiveLog {
            log_dir,
            max_log_size,
            seg,
            sealed,
            len,
            alloc: len,
            buf: Vec::new(),
            unsynced: false,
            last_sync: Instant::now(),
            mark: None,
            rolled: Vec::new(),
            touched: false,
        }
    }

    /// Global log position where the next record goes.
    pub(super) fn next_pos(&self) -> u64 {
        self.seg.base + self.len + self.buf.len() as u64
    }

    /// Global log position up to which bytes are in the file.
    pub(super) fn written_end(&self) -> u64 {
        self.seg.base + self.len
    }

    /// Log bytes in all segment files: the sealed ones and what is written
    /// of the active one (the zero fill ahead not counted).
    pub(super) fn disk_bytes(&self) -> u64 {
        self.sealed + self.len
    }

    /// Retention deleted sealed segments holding `bytes`.
    pub(super) fn forget_sealed(&mut self, bytes: u64) {
        self.sealed = self.sealed.saturating_sub(bytes);
    }

    /// A slave's reset dropped every sealed segment from the log.
    pub(super) fn forget_all_sealed(&mut self) {
        self.sealed = 0;
    }

    /// Bytes appended but not written yet.
    pub(super) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The active segment's file, for messages that name it.
    pub(super) fn path(&self) -> &Path {
        &self.seg.path
    }

    /// Whether `seg` is the segment being appended to.
    pub(super) fn is_active(&self, seg: &Arc<Segment>) -> bool {
        Arc::ptr_eq(seg, &self.seg)
    }

    /// Written bytes wait for an fsync.
    pub(super) fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    /// Time since the last fsync (or since the writer started).
    pub(super) fn since_sync(&self) -> Duration {
        self.last_sync.elapsed()
    }

    /// Recovery cut the file (a torn tail, zero fill): the next record goes
    /// at its end again.
    pub(super) fn resume_at_file_end(&mut self) -> Result<(), StoreError> {
        let len = self
            .seg
            .file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| StoreError::io("stat segment", &self.seg.path, e))?;
        self.len = len;
        self.alloc = len;
        Ok(())
    }

    /// Appends already-encoded records; returns where they start.
    pub(super) fn append_bytes(&mut self, bytes: &[u8]) -> u64 {
        let pos = self.next_pos();
        self.buf.extend_from_slice(bytes);
        pos
    }

    /// Encodes one record at the end of the buffer; returns its length.
    pub(super) fn append_record(&mut self, rec: &Record<'_>) -> usize {
        let start = self.buf.len();
        record::encode(&mut self.buf, rec);
        self.buf.len() - start
    }

    /// Reads log bytes at a global position, from the buffer when they are
    /// not written yet, else from the segment of `segments` that holds them.
    pub(super) fn read(
        &self,
        buf: &mut [u8],
        pos: u64,
        segments: &SegmentSet,
    ) -> Result<(), StoreError> {
        let flushed_end = self.written_end();
        if pos >= flushed_end {
            let at = (pos - flushed_end) as usize;
            let src = self.buf.get(at..at + buf.len()).ok_or_else(|| {
                StoreError::corrupt(&self.seg.path, pos, "read past the end of the log")
            })?;
            buf.copy_from_slice(src);
            return Ok(());
        }
        let seg = segments.find(pos).ok_or_else(|| {
            StoreError::corrupt(&self.log_dir, pos, "no segment holds this position")
        })?;
        seg.read_exact_at(buf, pos)
    }

    /// Writes the buffer with one positional write at the write position.
    pub(super) fn flush(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.preallocate(self.len + self.buf.len() as u64)?;
        // A short write may have reached the file.
        self.touched = true;
        self.seg
            .file
            .write_all_at(&self.buf, self.len)
            .map_err(|e| StoreError::io("write segment", &self.seg.path, e))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Keeps zero-filled space ahead of the write position so that the
    /// fdatasync after each batch overwrites allocated blocks and
    /// needs no file-size or extent change journalled (several times
    /// cheaper on ext4). Recovery reads a zero length field as the end.
    fn preallocate(&mut self, end: u64) -> Result<(), StoreError> {
        if end + PREALLOC_MARGIN <= self.alloc {
            return Ok(());
        }
        let limit = self.max_log_size.max(end);
        let target = (end + PREALLOC_CHUNK).min(limit);
        if target <= self.alloc {
            return Ok(());
        }
        let from = self.alloc.max(self.len);
        let zeros = vec![0u8; (target - from) as usize];
        self.seg
            .file
            .write_all_at(&zeros, from)
            .map_err(|e| StoreError::io("preallocate segment", &self.seg.path, e))?;
        self.alloc = target;
        Ok(())
    }

    /// fdatasyncs what was written; returns how long the fdatasync took, or
    /// `None` when nothing waited for it.
    pub(super) fn sync(&mut self) -> Result<Option<Duration>, StoreError> {
        if !self.unsynced {
            return Ok(None);
        }
        let started = Instant::now();
        self.seg
            .file
            .sync_data()
            .map_err(|e| StoreError::io("fsync segment", &self.seg.path, e))?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(Some(self.last_sync - started))
    }

    /// Whether `bytes` more would overflow the active segment (never while
    /// it is empty: a record larger than a segment gets one of its own).
    pub(super) fn needs_roll(&self, bytes: usize) -> bool {
        let used = self.len + self.buf.len() as u64;
        used != 0 && used + bytes as u64 > self.max_log_size
    }

    /// Whether nothing is written or buffered in the active segment.
    pub(super) fn is_empty(&self) -> bool {
        self.len + self.buf.len() as u64 == 0
    }

    /// The first half of a roll: writes the buffer and trims the zero fill,
    /// since a sealed segment holds exactly its records. With `durable` the
    /// trim waits for the fsync the caller does next.
    pub(super) fn seal(&mut self, durable: bool) -> Result<(), StoreError> {
        self.flush()?;
        self.seg
            .file
            .set_len(self.len)
            .map_err(|e| StoreError::io("trim segment", &self.seg.path, e))?;
        self.alloc = self.len;
        if durable {
            self.unsynced = true;
        }
        Ok(())
    }

    /// The second half of a roll: appends to a new segment at the next
    /// position from now on. Returns it, for the shared segment set.
    pub(super) fn start_next(&mut self) -> Result<Arc<Segment>, StoreError> {
        let base = self.next_pos();
        let seg = Arc::new(Segment::open(&self.log_dir, base, true)?);
        self.rolled.push(Arc::clone(&seg));
        self.sealed += self.len;
        self.seg = Arc::clone(&seg);
        self.len = 0;
        self.alloc = 0;
        Ok(seg)
    }

    /// A batch starts here: what [`ActiveLog::cut_back`] returns to.
    pub(super) fn begin_batch(&mut self) {
        let len = self.len + self.buf.len() as u64;
        self.mark = Some((Arc::clone(&self.seg), len, self.sealed));
        self.rolled.clear();
        self.touched = false;
    }

    /// The batch is committed: nothing to cut back any more.
    pub(super) fn end_batch(&mut self) {
        self.mark = None;
        self.rolled.clear();
        self.touched = false;
    }

    /// Global log position where the open batch started.
    pub(super) fn batch_start(&self) -> Option<u64> {
        self.mark.as_ref().map(|(seg, len, _)| seg.base + len)
    }

    /// Base of the first segment the open batch rolled to, if it rolled:
    /// the shared segment set drops it and what follows before the cut.
    pub(super) fn rolled_from(&self) -> Option<u64> {
        self.rolled.first().map(|s| s.base)
    }

    /// Takes back the open batch's log bytes: the buffer is dropped, the
    /// segments it rolled to are deleted, and the file it started in is
    /// cut back to the batch's start and fsynced, so nothing of it is
    /// replayed at the next start. Nothing to do when no batch is open.
    pub(super) fn cut_back(&mut self) -> Result<(), StoreError> {
        self.buf.clear();
        let Some((seg, len, sealed)) = self.mark.take() else {
            return Ok(());
        };
        let rolled = std::mem::take(&mut self.rolled);
        let touched = std::mem::replace(&mut self.touched, false);
        for s in &rolled {
            let _ = std::fs::remove_file(&s.path);
        }
        self.seg = seg;
        self.len = len;
        self.sealed = sealed;
        if touched || !rolled.is_empty() {
            self.seg
                .file
                .set_len(self.len)
                .and_then(|_| self.seg.file.sync_all())
                .map_err(|e| StoreError::io("fsync cut log", &self.seg.path, e))?;
            self.alloc = self.len;
            self.unsynced = false;
            if !rolled.is_empty() {
                sync_dir(&self.log_dir)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX)
    }

    fn open(dir: &Path, max_log_size: u64) -> ActiveLog {
        let seg = Segment::open(dir, 0, true).expect("create segment");
        ActiveLog::new(dir.to_path_buf(), max_log_size, Arc::new(seg), 0, 0)
    }

    #[test]
    fn a_flush_writes_the_buffer_once_with_zero_fill_ahead() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = open(dir.path(), 1 << 30);
        assert_eq!(log.append_bytes(b"abc"), 0);
        assert_eq!(log.append_bytes(b"de"), 3);
        assert_eq!(
            (log.next_pos(), log.written_end(), log.buffered()),
            (5, 0, 2 + 3)
        );
        let mut got = [0u8; 2];
        log.read(&mut got, 3, &SegmentSet::default())
            .expect("from the buffer");
        assert_eq!(&got, b"de");
        log.flush().expect("flush");
        assert_eq!((log.written_end(), log.buffered()), (5, 0));
        assert!(log.has_unsynced());
        // The zero fill: the file is longer than what was written.
        assert_eq!(
            file_len(&dir.path().join(Segment::file_name(0))),
            5 + PREALLOC_CHUNK
        );
        assert!(log.sync().expect("fsync").is_some());
        assert!(
            log.sync().expect("nothing to sync").is_none(),
            "a second sync has nothing to do"
        );
    }

    #[test]
    fn a_cut_back_takes_the_batch_back_from_the_file_and_the_segments_it_rolled_to() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = open(dir.path(), 8);
        log.append_bytes(b"kept");
        log.flush().expect("flush");
        log.begin_batch();
        assert_eq!(log.batch_start(), Some(4));
        log.append_bytes(b"gone");
        assert!(log.needs_roll(5), "4 + 4 + 5 bytes overflow a segment of 8");
        log.seal(true).expect("seal");
        assert!(log.sync().expect("fsync the sealed segment").is_some());
        let next = log.start_next().expect("roll");
        assert_eq!((next.base, log.disk_bytes()), (8, 8));
        assert_eq!(log.rolled_from(), Some(8));
        log.append_bytes(b"more");
        log.flush().expect("flush");
        log.cut_back().expect("cut back");
        assert_eq!(
            (log.next_pos(), log.written_end(), log.batch_start()),
            (4, 4, None)
        );
        assert_eq!(
            log.disk_bytes(),
            4,
            "the sealed bytes are back as they were"
        );
        assert!(!dir.path().join(Segment::file_name(8)).exists());
        assert_eq!(file_len(&dir.path().join(Segment::file_name(0))), 4);
        assert!(!log.has_unsynced());
        log.cut_back().expect("no batch open: nothing to do");
        assert_eq!(log.next_pos(), 4);
    }
}
