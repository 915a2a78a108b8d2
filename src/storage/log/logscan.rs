//! The offline scan of the whole commit log for `smss --check` and
//! `smss --repair`: every record's length and CRC, ids strictly increasing,
//! MPUB batches whole, the segment chain, and where the log stops being a
//! clean run of records (the point a repair cuts back to).
//!
//! Runs on the main thread of an `smss --check` / `--repair` process, with
//! the data directory locked, never inside a server. Reads only.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::chain::{self, SegInfo};
use super::record::{self, FLAG_BATCH_MORE, ScanEnd};
use super::segment::Segment;
use super::torn::{self, SCAN_LIMIT};
use crate::storage::StoreError;

/// Most scans for a valid record after damage tried in one segment
/// (bounds time and output).
const MAX_SCANS: usize = 10_000;

/// One thing wrong in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub offset: u64,
    pub event_id: Option<u64>,
    pub topic: Option<String>,
    pub what: String,
}

impl Finding {
    pub(crate) fn new(file: &Path, offset: u64, what: impl Into<String>) -> Finding {
        Finding {
            file: file.to_path_buf(),
            offset,
            event_id: None,
            topic: None,
            what: what.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.event_id.map_or("-".to_string(), |i| i.to_string());
        let topic = self.topic.as_deref().unwrap_or("-");
        write!(
            f,
            "{} offset {} event {id} topic {topic}: {}",
            self.file.display(),
            self.offset,
            self.what
        )
    }
}

/// Where a repair cuts the log: segment `seg` is truncated to `offset` and
/// every later segment goes (`seg` itself too when `offset` is 0 and it is
/// not the oldest: nothing of it is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut {
    pub(crate) seg: usize,
    pub(crate) offset: u64,
    /// The global log position of the cut.
    pub(crate) pos: u64,
}

/// What the scan found.
#[derive(Debug, Default)]
pub(crate) struct LogScan {
    pub(crate) segs: Vec<SegInfo>,
    pub(crate) findings: Vec<Finding>,
    /// The first damage, moved back to the start of an MPUB batch it cuts.
    pub(crate) cut: Option<Cut>,
    /// End of the clean run of records (global position).
    pub(crate) keep_end: u64,
    /// Valid records before the cut, and the id of the last of them.
    pub(crate) kept_records: u64,
    pub(crate) kept_last_id: u64,
    /// The id of the first record of the oldest segment, if it has one.
    pub(crate) oldest_first_id: Option<u64>,
    /// Ids of valid records at or after the cut (a repair loses them).
    pub(crate) lost: BTreeSet<u64>,
    pub(crate) records: u64,
    pub(crate) max_id: u64,
    /// The highest id among the records the checkpoint covers.
    pub(crate) max_id_before_cp: u64,
}

struct Scanner<'a> {
    log_dir: &'a Path,
    cp_pos: Option<u64>,
    ceiling: u64,
    prev_id: u64,
    /// An MPUB batch whose last record has not been seen: (segment, offset).
    batch: Option<(usize, u64)>,
    batch_ids: Vec<u64>,
    /// Set while reporting damage that nothing valid follows.
    tail: bool,
    out: LogScan,
}

/// Scans every segment under `log_dir`. `cp_pos` is the checkpoint's
/// position (records must not straddle it); `lease` bounds plausible ids.
pub(crate) fn scan_log(
    log_dir: &Path,
    cp_pos: Option<u64>,
    lease: u64,
) -> Result<LogScan, StoreError> {
    let bases = super::segment::list_segments(log_dir)?;
    let segs = chain::seg_infos(log_dir, &bases)?;
    let mut s = Scanner {
        log_dir,
        cp_pos,
        ceiling: 0,
        prev_id: 0,
        batch: None,
        batch_ids: Vec::new(),
        tail: false,
        out: LogScan {
            keep_end: segs.first().map_or(0, |g| g.base),
            segs: segs.clone(),
            ..LogScan::default()
        },
    };
    for i in 0..segs.len() {
        s.ceiling = torn::id_ceiling(s.prev_id.max(s.out.max_id), lease);
        s.scan_segment(i)?;
        if let Some(&next) = segs.get(i + 1) {
            let pair = [segs[i], next];
            if let Some((file, offset, why)) = chain::first_break(log_dir, &pair, None)? {
                s.out.findings.push(Finding::new(&file, offset, why));
                s.mark_cut(i + 1, 0);
            }
        }
    }
    Ok(s.out)
}

impl Scanner<'_> {
    fn path(&self, i: usize) -> PathBuf {
        self.log_dir.join(Segment::file_name(self.out.segs[i].base))
    }

    /// Records the first damage, at the start of an open MPUB batch if any.
    fn mark_cut(&mut self, seg: usize, offset: u64) {
        if self.out.cut.is_some() {
            return;
        }
        let (seg, offset) = self.batch.take().unwrap_or((seg, offset));
        self.out.lost.extend(self.batch_ids.drain(..));
        self.out.cut = Some(Cut {
            seg,
            offset,
            pos: self.out.segs[seg].base + offset,
        });
    }

    fn damage(&mut self, i: usize, offset: u64, what: String) {
        let mut what = what;
        let pos = self.out.segs[i].base + offset;
        match self.cp_pos {
            Some(p) if pos < p => what.push_str(&format!(
                " (before the checkpoint position {p}: not re-read at start; a reader that \
                 reaches it gets ERR INTERNAL)"
            )),
            _ if i + 1 == self.out.segs.len() && self.tail => {
                what.push_str(" (after the checkpoint, in the newest segment: the server cuts this tail at start)")
            }
            _ => {}
        }
        self.out
            .findings
            .push(Finding::new(&self.path(i), offset, what));
        self.mark_cut(i, offset);
    }

    fn visit(&mut self, i: usize, off: u64, rec: &record::Record<'_>) {
        let base = self.out.segs[i].base;
        let len = record::encoded_len(rec.topic.len(), rec.headers.len(), rec.body.len()) as u64;
        let (start, end) = (base + off, base + off + len);
        self.out.records += 1;
        self.out.max_id = self.out.max_id.max(rec.event_id);
        if i == 0 && self.out.oldest_first_id.is_none() {
            self.out.oldest_first_id = Some(rec.event_id);
        }
        if let Some(p) = self.cp_pos {
            if start < p && end > p {
                let mut f = Finding::new(
                    &self.path(i),
                    off,
                    format!("the checkpoint position {p} falls inside this record"),
                );
                f.event_id = Some(rec.event_id);
                f.topic = Some(rec.topic.to_string());
                self.out.findings.push(f);
            } else if end <= p {
                self.out.max_id_before_cp = self.out.max_id_before_cp.max(rec.event_id);
            }
        }
        if rec.event_id <= self.prev_id {
            let what = format!(
                "event id {} does not increase (previous {})",
                rec.event_id, self.prev_id
            );
            self.damage(i, off, what);
            if let Some(f) = self.out.findings.last_mut() {
                f.event_id = Some(rec.event_id);
                f.topic = Some(rec.topic.to_string());
            }
            return;
        }
        self.prev_id = rec.event_id;
        if self.out.cut.is_some() {
            self.out.lost.insert(rec.event_id);
            return;
        }
        if rec.flags & FLAG_BATCH_MORE != 0 {
            self.batch.get_or_insert((i, off));
            self.batch_ids.push(rec.event_id);
            return;
        }
        self.batch = None;
        self.batch_ids.clear();
        self.out.keep_end = end;
        self.out.kept_records = self.out.records;
        self.out.kept_last_id = rec.event_id;
    }

    fn scan_segment(&mut self, i: usize) -> Result<(), StoreError> {
        let path = self.path(i);
        let info = self.out.segs[i];
        let newest = i + 1 == self.out.segs.len();
        // Where the records of a sealed segment must end: the next base.
        let chain_end = self.out.segs.get(i + 1).map(|n| n.base - info.base);
        let mut file = File::open(&path).map_err(|e| StoreError::io("open segment", &path, e))?;
        if self.out.cut.is_none() {
            self.out.keep_end = info.base;
        }
        let mut from = 0u64;
        for _ in 0..MAX_SCANS {
            file.seek(SeekFrom::Start(from))
                .map_err(|e| StoreError::io("seek segment", &path, e))?;
            let reader = BufReader::with_capacity(1 << 20, &file);
            let end = record::scan(reader, |off, rec| self.visit(i, from + off, rec))
                .map_err(|e| StoreError::io("read segment", &path, e))?;
            let (bad_at, reason) = match end {
                ScanEnd::Clean { offset } => {
                    let offset = from + offset;
                    if offset >= info.len || chain::zeros_from(&path, offset, info.len)? {
                        let short = chain_end.is_some_and(|c| offset < c.min(info.len));
                        if short {
                            self.damage(
                                i,
                                offset,
                                "the records stop here (zero bytes follow), but the next \
                                 segment starts later: records are missing"
                                    .to_string(),
                            );
                        }
                        break;
                    }
                    (
                        offset,
                        "a zero length field, but non-zero bytes follow".to_string(),
                    )
                }
                ScanEnd::Torn { offset } => {
                    let offset = from + offset;
                    let what = format!(
                        "the file ends inside a record ({} bytes): a torn write",
                        info.len - offset
                    );
                    self.tail = true;
                    self.damage(i, offset, what);
                    self.tail = false;
                    break;
                }
                ScanEnd::Corrupt { offset, reason } => (from + offset, reason),
            };
            let after = self.prev_id;
            let next = torn::find_valid_after(&file, &path, bad_at, info.len, after, self.ceiling)?;
            let what = match next {
                Some(v) => format!("{reason}; a valid record follows at offset {v}"),
                None if info.len - bad_at > SCAN_LIMIT => {
                    format!("{reason}; no valid record in the 64 MiB after it")
                }
                None if newest => format!(
                    "{reason}; no valid record follows: a damaged tail of {} bytes",
                    info.len - bad_at
                ),
                None => format!("{reason}; no valid record follows in this segment"),
            };
            self.tail = next.is_none();
            self.damage(i, bad_at, what);
            self.tail = false;
            match next {
                Some(v) => from = v,
                None => break,
            }
        }
        if let Some((bs, bo)) = self.batch
            && bs == i
        {
            let what = "an MPUB batch starts here but its last record is missing".to_string();
            self.damage(i, bo, what);
        }
        Ok(())
    }
}
