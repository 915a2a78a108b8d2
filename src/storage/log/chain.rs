//! The segment chain: the log's segment files must follow one another with
//! no gap and no overlap (each segment's base is the previous base plus the
//! previous length), and they must still hold every byte the checkpoint
//! covers (up to its `log_pos`).
//!
//! Checked by recovery on the main thread before anything is replayed or
//! written, and by the offline `smss --check`: a missing segment in the
//! middle, or a segment cut shorter than the checkpoint says, stops the
//! start with a message naming the file and offset, instead of the server
//! appending after the hole and readers failing later in the wrong file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::segment::Segment;
use crate::storage::StoreError;

/// One segment file as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegInfo {
    pub(crate) base: u64,
    /// File length in bytes (the newest may carry zero fill).
    pub(crate) len: u64,
}

/// Why the chain is broken: (file, offset in it, reason).
pub(crate) type Break = (std::path::PathBuf, u64, String);

/// The first break in the chain of `segs` (sorted by base) under `log_dir`,
/// or against the checkpoint position `cp_pos` (the path of the checkpoint
/// file names it in the message). A sealed segment longer than its place in
/// the chain is accepted when every extra byte is zero: the zero fill of a
/// segment whose trim at roll time was lost to a power cut (`fsync: never`).
pub(crate) fn first_break(
    log_dir: &Path,
    segs: &[SegInfo],
    cp: Option<(&Path, u64)>,
) -> Result<Option<Break>, StoreError> {
    let path = |base: u64| log_dir.join(Segment::file_name(base));
    for w in segs.windows(2) {
        let (a, b) = (w[0], w[1]);
        let end = a.base + a.len;
        if end < b.base {
            return Ok(Some((
                path(a.base),
                a.len,
                format!(
                    "the segment ends at log position {end} ({} bytes), but the next one, {}, \
                     starts at {}: log position {end} to {} is missing (segment {} is gone, \
                     or {} was cut short)",
                    a.len,
                    Segment::file_name(b.base),
                    b.base,
                    b.base,
                    Segment::file_name(end),
                    Segment::file_name(a.base)
                ),
            )));
        }
        if end > b.base && !zeros_from(&path(a.base), b.base - a.base, a.len)? {
            return Ok(Some((
                path(a.base),
                b.base - a.base,
                format!(
                    "the segment holds {} bytes, running past log position {}, where the next \
                     one, {}, starts",
                    a.len,
                    b.base,
                    Segment::file_name(b.base)
                ),
            )));
        }
    }
    let Some((cp_path, cp_pos)) = cp else {
        return Ok(None);
    };
    let Some(last) = segs.last() else {
        if cp_pos == 0 {
            return Ok(None);
        }
        return Ok(Some((
            log_dir.to_path_buf(),
            0,
            format!(
                "there are no log segments, but {} covers the log up to position {cp_pos}",
                cp_path.display()
            ),
        )));
    };
    let end = last.base + last.len;
    if cp_pos > end {
        return Ok(Some((
            path(last.base),
            last.len,
            format!(
                "the log ends here, at log position {end}, but {} covers it up to position \
                 {cp_pos} (offset {} of this file): records the checkpoint counts are missing",
                cp_path.display(),
                cp_pos.saturating_sub(last.base)
            ),
        )));
    }
    Ok(None)
}

/// The base and length of every segment in `bases`.
pub(crate) fn seg_infos(log_dir: &Path, bases: &[u64]) -> Result<Vec<SegInfo>, StoreError> {
    let mut v = Vec::with_capacity(bases.len());
    for &base in bases {
        let p = log_dir.join(Segment::file_name(base));
        let len = std::fs::metadata(&p)
            .map_err(|e| StoreError::io("stat segment", &p, e))?
            .len();
        v.push(SegInfo { base, len });
    }
    Ok(v)
}

/// Whether bytes `from..to` of the file at `path` are all zero.
pub(crate) fn zeros_from(path: &Path, from: u64, to: u64) -> Result<bool, StoreError> {
    let f = File::open(path).map_err(|e| StoreError::io("open segment", path, e))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], at)
            .map_err(|e| StoreError::io("read segment", path, e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, len: u64) -> SegInfo {
        SegInfo { base, len }
    }

    #[test]
    fn a_whole_chain_passes_and_each_break_is_named() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        let d = dir.path();
        let cp = Path::new("data/checkpoint");
        let ok = [seg(0, 100), seg(100, 50), seg(150, 4096)];
        assert_eq!(first_break(d, &ok, Some((cp, 200)))?, None);
        assert_eq!(first_break(d, &ok, None)?, None);
        assert_eq!(first_break(d, &[], Some((cp, 0)))?, None);

        // The middle segment is gone.
        let (file, off, why) = first_break(d, &[seg(0, 100), seg(150, 10)], None)?
            .ok_or_else(|| StoreError::corrupt(d, 0, "a missing segment must break the chain"))?;
        assert_eq!(file, d.join(Segment::file_name(0)));
        assert_eq!(off, 100);
        assert!(why.contains(&Segment::file_name(100)), "{why}");

        // The newest segment is shorter than the checkpoint says.
        let (file, off, why) = first_break(d, &[seg(0, 100), seg(100, 37)], Some((cp, 140)))?
            .ok_or_else(|| StoreError::corrupt(d, 0, "a short segment must be found"))?;
        assert_eq!(file, d.join(Segment::file_name(100)));
        assert_eq!(off, 37);
        assert!(why.contains("position 140 (offset 40"), "{why}");

        // No segments at all, but a checkpoint past 0.
        assert!(first_break(d, &[], Some((cp, 10)))?.is_some());
        Ok(())
    }

    #[test]
    fn an_overlap_is_a_break_unless_it_is_zero_fill() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        let d = dir.path();
        let p = d.join(Segment::file_name(0));
        let mut bytes = vec![7u8; 100];
        bytes.extend([0u8; 20]);
        std::fs::write(&p, &bytes).map_err(|e| StoreError::io("write", &p, e))?;
        assert_eq!(first_break(d, &[seg(0, 120), seg(100, 5)], None)?, None);
        bytes[110] = 1;
        std::fs::write(&p, &bytes).map_err(|e| StoreError::io("write", &p, e))?;
        let b = first_break(d, &[seg(0, 120), seg(100, 5)], None)?;
        assert!(matches!(b, Some((_, 100, _))), "{b:?}");
        Ok(())
    }
}
