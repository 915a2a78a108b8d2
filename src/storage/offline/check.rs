//! `smss --check`: an offline, read-only verification of a data directory.
//!
//! Checks every record's length and CRC and the segment chain
//! ([`crate::storage::log::logscan`]), every index entry against the log (a record of
//! that topic with that event id and length), the checkpoint (its CRC, its
//! position, its topics against their index files, its delayed messages
//! against their DPUB records) and the id lease. Each finding names the
//! file, the offset, the event id and the topic where known.
//!
//! Runs on the main thread of an `smss --check` process, never inside a
//! server: it takes the data directory's LOCK (so it refuses a directory a
//! running server holds, and no server starts while it reads) and writes
//! nothing. [`super::repair`] reuses [`examine`] to decide what to cut.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::storage::StoreError;
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::engine::lease::load_lease;
use crate::storage::index::{ENTRY_LEN, Entry};
use crate::storage::log::chain::SegInfo;
use crate::storage::log::logscan::{self, Cut, LogScan};
use crate::storage::log::record::{self, Decoded, Kind};
use crate::storage::log::segment::Segment;

pub use crate::storage::log::logscan::Finding;

/// Entries read from an index file per pread.
const ENTRY_CHUNK: usize = 16 << 10;
/// Findings shown per file; the rest are counted.
const SHOWN_PER_FILE: usize = 20;
/// Ranges of lost ids shown; the rest are counted.
const SHOWN_RANGES: usize = 100;

/// Everything [`examine`] found.
#[derive(Debug)]
pub(crate) struct Examined {
    pub(crate) log: LogScan,
    /// The checkpoint, or why it could not be read.
    pub(crate) checkpoint: Result<Option<Checkpoint>, String>,
    pub(crate) lease: Option<u64>,
    pub(crate) index_files: u64,
    pub(crate) index_entries: u64,
    /// Where the readable log ends: the cut, or the end of the last record.
    pub(crate) log_end: u64,
    /// Every id a repair loses (valid records after the cut, messages whose
    /// index entries point at or past it, delayed messages after it).
    pub(crate) lost: BTreeSet<u64>,
    /// True when the record at the cut has an id no index names.
    pub(crate) cut_id_unknown: bool,
}

impl Examined {
    pub(crate) fn findings(&self) -> &[Finding] {
        &self.log.findings
    }
}

/// Reads the whole data directory `dir` and reports what is wrong. The
/// caller holds the lock.
pub(crate) fn examine(dir: &Path) -> Result<Examined, StoreError> {
    let log_dir = dir.join("log");
    let index_dir = dir.join("index");
    for d in [dir, &log_dir] {
        if !d.is_dir() {
            return Err(StoreError::io(
                "open data directory",
                d,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        }
    }
    let cp_path = dir.join(checkpoint::FILE_NAME);
    let checkpoint = Checkpoint::load(dir).map_err(|e| e.to_string());
    let mut extra = Vec::new();
    if let Err(why) = &checkpoint {
        extra.push(Finding::new(&cp_path, 0, why.clone()));
    }
    let lease = match load_lease(dir) {
        Ok(l) => Some(l),
        Err(e) => {
            extra.push(Finding::new(&dir.join("idlease"), 0, e.to_string()));
            None
        }
    };
    let cp = checkpoint.as_ref().ok().and_then(|c| c.as_ref());
    let mut log = logscan::scan_log(&log_dir, cp.map(|c| c.log_pos), lease.unwrap_or(0))?;
    log.findings.extend(extra);
    let log_end = log.cut.map_or(log.keep_end, |c| c.pos);
    let mut ex = Examined {
        lost: log.lost.clone(),
        log,
        checkpoint: checkpoint.clone(),
        lease,
        index_files: 0,
        index_entries: 0,
        log_end,
        cut_id_unknown: false,
    };
    let files = SegFiles::open(&log_dir, &ex.log.segs)?;
    if let Some(cp) = cp {
        check_checkpoint(&mut ex, cp, &cp_path, &index_dir, &files)?;
    }
    if index_dir.is_dir() {
        check_indexes(&mut ex, &index_dir, &files)?;
    }
    Ok(ex)
}

/// Where a record was looked for (file and offset, when a segment holds
/// the position) and its bytes, or why there are none.
type Lookup<'a> = (Option<(&'a Path, u64)>, Result<Vec<u8>, String>);

/// The open segment files, to read records by global position.
struct SegFiles {
    segs: Vec<(SegInfo, PathBuf, File)>,
}

impl SegFiles {
    fn open(log_dir: &Path, segs: &[SegInfo]) -> Result<SegFiles, StoreError> {
        let mut v = Vec::with_capacity(segs.len());
        for &s in segs {
            let p = log_dir.join(Segment::file_name(s.base));
            let f = File::open(&p).map_err(|e| StoreError::io("open segment", &p, e))?;
            v.push((s, p, f));
        }
        Ok(SegFiles { segs: v })
    }

    /// The oldest position still in the log.
    fn first_base(&self) -> u64 {
        self.segs.first().map_or(0, |s| s.0.base)
    }

    /// Reads the record of `len` bytes at global `pos`: its file and offset,
    /// and the record or why there is none.
    fn record_at(&self, pos: u64, len: u32) -> Lookup<'_> {
        let i = self.segs.partition_point(|s| s.0.base <= pos);
        let Some((info, path, file)) = i.checked_sub(1).map(|i| &self.segs[i]) else {
            return (None, Err(format!("no segment holds log position {pos}")));
        };
        let off = pos - info.base;
        let at = Some((path.as_path(), off));
        if off + u64::from(len) > info.len {
            let why = format!(
                "{} ends at offset {}, before the record's end",
                path.display(),
                info.len
            );
            return (at, Err(why));
        }
        let mut buf = vec![0u8; len as usize];
        match file.read_exact_at(&mut buf, off) {
            Ok(()) => (at, Ok(buf)),
            Err(e) => (at, Err(format!("read {}: {e}", path.display()))),
        }
    }

    /// What is wrong with the record at `pos`, expected to be `len` bytes
    /// of `kind`-matching record with `id` on `topic`; `None` when it is right.
    fn mismatch(
        &self,
        pos: u64,
        len: u32,
        id: u64,
        topic: &str,
        want: fn(Kind) -> bool,
    ) -> Option<String> {
        let (at, bytes) = self.record_at(pos, len);
        let place = at.map_or(String::new(), |(p, o)| {
            format!("{} offset {o}: ", p.display())
        });
        let bytes = match bytes {
            Ok(b) => b,
            Err(why) => return Some(format!("{place}{why}")),
        };
        let why = match record::decode(&bytes) {
            Decoded::Record { len: n, .. } if n != bytes.len() => {
                format!("the record there is {n} bytes, not {len}")
            }
            Decoded::Record { rec, .. } if rec.event_id != id => {
                format!("the record there has event id {}", rec.event_id)
            }
            Decoded::Record { rec, .. } if rec.topic != topic => {
                format!("the record there is of topic {}", rec.topic)
            }
            Decoded::Record { rec, .. } if !want(rec.kind) => {
                format!("the record there is a {}", rec.kind.name())
            }
            Decoded::Record { .. } => return None,
            Decoded::Corrupt(reason) => reason,
            Decoded::Incomplete { need } => format!("the record there is {need} bytes, not {len}"),
            Decoded::End => "there are only zero bytes there".to_string(),
        };
        Some(format!("{place}{why}"))
    }
}

fn check_checkpoint(
    ex: &mut Examined,
    cp: &Checkpoint,
    cp_path: &Path,
    index_dir: &Path,
    files: &SegFiles,
) -> Result<(), StoreError> {
    let text = std::fs::read_to_string(cp_path).unwrap_or_default();
    let line_at = |prefix: &str| text.find(prefix).map_or(0, |o| o as u64);
    let files_end = ex.log.segs.last().map_or(0, |s| s.base + s.len);
    if cp.log_pos > files_end {
        let what = format!(
            "the checkpoint covers the log up to position {}, but the segment files end at \
             position {files_end}: records it counts are missing, and the server refuses to start",
            cp.log_pos
        );
        ex.log
            .findings
            .push(Finding::new(cp_path, line_at("log_pos "), what));
    } else if cp.log_pos > ex.log_end && ex.log.cut.is_none() {
        // (Damage before the checkpoint position is reported where it is.)
        let what = format!(
            "the checkpoint covers the log up to position {}, but the readable log ends at \
             position {}: records it counts are missing or damaged",
            cp.log_pos, ex.log_end
        );
        ex.log
            .findings
            .push(Finding::new(cp_path, line_at("log_pos "), what));
    } else if cp.log_pos < files.first_base() {
        let what = format!(
            "the checkpoint position {} is before the oldest segment (at {}): segments are missing",
            cp.log_pos,
            files.first_base()
        );
        ex.log
            .findings
            .push(Finding::new(cp_path, line_at("log_pos "), what));
    }
    if cp.last_event_id < ex.log.max_id_before_cp {
        let what = format!(
            "last_event_id {} is below event id {}, which the log holds before the checkpoint position",
            cp.last_event_id, ex.log.max_id_before_cp
        );
        ex.log
            .findings
            .push(Finding::new(cp_path, line_at("last_event_id "), what));
    }
    for t in &cp.topics {
        let off = line_at(&format!("topic {} {} ", t.name, t.create_id));
        let mut finding = |what: String| {
            let mut f = Finding::new(cp_path, off, what);
            f.topic = Some(t.name.clone());
            ex.log.findings.push(f);
        };
        let path = index_dir.join(crate::storage::index::file_name(&t.name, t.create_id));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                finding(format!("its index {}: {e}", path.display()));
                continue;
            }
        };
        let have = file.metadata().map_or(0, |m| m.len()) / ENTRY_LEN as u64;
        if have < t.entries || t.first_entry > t.entries {
            finding(format!(
                "{} entries (first {}), but {} holds {have}",
                t.entries,
                t.first_entry,
                path.display()
            ));
            continue;
        }
        if t.entries > t.first_entry {
            let entry = |i: u64| -> Option<Entry> {
                let mut b = [0u8; ENTRY_LEN];
                file.read_exact_at(&mut b, i * ENTRY_LEN as u64).ok()?;
                Entry::decode(&b)
            };
            let (first, last) = (entry(t.first_entry), entry(t.entries - 1));
            if first.map(|e| e.event_id) != Some(t.first_id)
                || last.map(|e| e.event_id) != Some(t.last_id)
            {
                finding(format!(
                    "first_id {} and last_id {} do not match {} (entries {} and {} hold ids {} and {})",
                    t.first_id,
                    t.last_id,
                    path.display(),
                    t.first_entry,
                    t.entries - 1,
                    first.map_or("-".into(), |e| e.event_id.to_string()),
                    last.map_or("-".into(), |e| e.event_id.to_string()),
                ));
            }
        }
    }
    for d in &cp.delayed {
        if d.pos >= ex.log_end {
            ex.lost.insert(d.id);
        }
        let is_dpub = |k: Kind| k == Kind::DPub;
        if let Some(why) = files.mismatch(d.pos, d.len, d.id, &d.topic, is_dpub) {
            let mut f = Finding::new(
                cp_path,
                line_at(&format!("delayed {} ", d.id)),
                format!("the delayed message at log position {}: {why}", d.pos),
            );
            f.event_id = Some(d.id);
            f.topic = Some(d.topic.clone());
            ex.log.findings.push(f);
        }
    }
    Ok(())
}

fn check_indexes(ex: &mut Examined, index_dir: &Path, files: &SegFiles) -> Result<(), StoreError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(index_dir)
        .map_err(|e| StoreError::io("list", index_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    names.sort();
    let cut_pos = ex.log.cut.map(|c: Cut| c.pos);
    let mut cut_named = false;
    // Damaged records that an index names: (log position, event id, topic).
    let mut named: Vec<(u64, u64, String)> = Vec::new();
    for path in names {
        ex.index_files += 1;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let Some((topic, _create_id)) = stem
            .rsplit_once('@')
            .filter(|(_, id)| id.parse::<u64>().is_ok())
        else {
            let what = "not named <topic>@<create_id>.idx".to_string();
            ex.log.findings.push(Finding::new(&path, 0, what));
            continue;
        };
        let file = File::open(&path).map_err(|e| StoreError::io("open index", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("stat index", &path, e))?
            .len();
        let n = len / ENTRY_LEN as u64;
        if len % ENTRY_LEN as u64 != 0 {
            let what = format!(
                "{} bytes: a partial entry at the end",
                len % ENTRY_LEN as u64
            );
            ex.log
                .findings
                .push(Finding::new(&path, n * ENTRY_LEN as u64, what));
        }
        let mut prev = 0u64;
        let mut i = 0u64;
        let mut buf = vec![0u8; ENTRY_CHUNK * ENTRY_LEN];
        while i < n {
            let k = (n - i).min(ENTRY_CHUNK as u64) as usize;
            file.read_exact_at(&mut buf[..k * ENTRY_LEN], i * ENTRY_LEN as u64)
                .map_err(|e| StoreError::io("read index", &path, e))?;
            for (j, chunk) in buf[..k * ENTRY_LEN].chunks_exact(ENTRY_LEN).enumerate() {
                let Some(e) = Entry::decode(chunk) else {
                    continue;
                };
                let at = (i + j as u64) * ENTRY_LEN as u64;
                ex.index_entries += 1;
                let mut finding = |what: String| {
                    let mut f = Finding::new(&path, at, what);
                    f.event_id = Some(e.event_id);
                    f.topic = Some(topic.to_string());
                    ex.log.findings.push(f);
                };
                if e.event_id <= prev {
                    finding(format!("event id does not increase (previous {prev})"));
                }
                prev = prev.max(e.event_id);
                if e.pos < files.first_base() {
                    continue; // retention removed its segment
                }
                if e.pos >= ex.log_end {
                    ex.lost.insert(e.event_id);
                    cut_named |= cut_pos == Some(e.pos);
                }
                let is_msg = |k: Kind| matches!(k, Kind::Pub | Kind::Fire);
                if let Some(why) = files.mismatch(e.pos, e.len, e.event_id, topic, is_msg) {
                    finding(format!("entry points at {why}"));
                    named.push((e.pos, e.event_id, topic.to_string()));
                }
            }
            i += k as u64;
        }
    }
    ex.cut_id_unknown = cut_pos.is_some() && !cut_named;
    // A damaged record's own finding gets the id and topic its index gives.
    for f in ex.log.findings.iter_mut().filter(|f| f.event_id.is_none()) {
        let base = f
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(Segment::parse_name);
        if let Some(b) = base
            && let Some((_, id, topic)) = named.iter().find(|n| n.0 == b + f.offset)
        {
            f.event_id = Some(*id);
            f.topic = Some(topic.clone());
        }
    }
    Ok(())
}

/// Sorted ids as ranges: `3, 5-9, 12`, at most [`SHOWN_RANGES`] of them.
pub(crate) fn id_ranges(ids: &BTreeSet<u64>) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &id in ids {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == id => *hi = id,
            _ => ranges.push((id, id)),
        }
    }
    let mut s: Vec<String> = ranges
        .iter()
        .take(SHOWN_RANGES)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if ranges.len() > SHOWN_RANGES {
        s.push(format!("and {} more ranges", ranges.len() - SHOWN_RANGES));
    }
    s.join(", ")
}

/// Prints the findings, at most [`SHOWN_PER_FILE`] per file.
pub(crate) fn print_findings(out: &mut dyn Write, findings: &[Finding]) -> std::io::Result<()> {
    let mut files: Vec<&Path> = Vec::new();
    for f in findings {
        if !files.contains(&f.file.as_path()) {
            files.push(&f.file);
        }
    }
    for file in files {
        let of_file: Vec<&Finding> = findings.iter().filter(|f| f.file == file).collect();
        for f in of_file.iter().take(SHOWN_PER_FILE) {
            writeln!(out, "damage: {f}")?;
        }
        if of_file.len() > SHOWN_PER_FILE {
            let more = of_file.len() - SHOWN_PER_FILE;
            writeln!(out, "damage: {} and {more} more findings", file.display())?;
        }
    }
    Ok(())
}

/// What a repair of `ex` would lose, as one sentence.
pub(crate) fn lost_text(ex: &Examined) -> String {
    let mut s = if ex.lost.is_empty() {
        "no event ids".to_string()
    } else {
        format!(
            "event ids {} ({} in all)",
            id_ranges(&ex.lost),
            ex.lost.len()
        )
    };
    if ex.cut_id_unknown {
        s.push_str(", and the unreadable record at the cut, whose id no index names");
    }
    s
}

/// `smss --check` on the data directory `dir`: prints each finding and a
/// summary to `out`; `Ok(true)` when the directory is clean.
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<bool, StoreError> {
    let _lock = if dir.join("LOCK").exists() {
        Some(crate::storage::engine::recovery::lock_dir(dir)?)
    } else {
        None // no server ever ran here; there is nothing to lock
    };
    let ex = examine(dir)?;
    let io = |e| StoreError::io("write the report", Path::new("stdout"), e);
    print_findings(out, ex.findings()).map_err(io)?;
    let log = &ex.log;
    let span = match log.segs.first() {
        Some(a) if log.cut.is_none() => format!(" (log positions {}..{})", a.base, ex.log_end),
        _ => String::new(),
    };
    let cp = match &ex.checkpoint {
        Ok(Some(c)) => format!("checkpoint at log position {}", c.log_pos),
        Ok(None) => "no checkpoint".to_string(),
        Err(_) => "checkpoint unreadable".to_string(),
    };
    let what = format!(
        "{} segments{span}, {} records, last event id {}, {} index files with {} entries, {cp}",
        log.segs.len(),
        log.records,
        log.max_id,
        ex.index_files,
        ex.index_entries
    );
    if ex.findings().is_empty() {
        writeln!(out, "check: clean: {what}").map_err(io)?;
        return Ok(true);
    }
    writeln!(out, "check: {} findings in {what}", ex.findings().len()).map_err(io)?;
    let plan = match log.cut {
        Some(c) => format!(
            "cut the log at {} offset {} (log position {}) and lose {}",
            Segment::file_name(log.segs[c.seg].base),
            c.offset,
            c.pos,
            lost_text(&ex)
        ),
        None => format!(
            "keep the whole log, rebuild the indexes and the checkpoint from it, and lose {}",
            lost_text(&ex)
        ),
    };
    writeln!(out, "check: smss --repair would {plan}").map_err(io)?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_ranges() {
        let ids: BTreeSet<u64> = [3, 5, 6, 7, 9, 12, 13].into_iter().collect();
        assert_eq!(id_ranges(&ids), "3, 5-7, 9, 12-13");
        assert_eq!(id_ranges(&BTreeSet::new()), "");
        let many: BTreeSet<u64> = (0..500).map(|i| i * 2).collect();
        let text = id_ranges(&many);
        assert!(text.ends_with("and 400 more ranges"), "{text}");
    }

    #[test]
    fn a_finding_names_file_offset_event_and_topic() {
        let mut f = Finding::new(Path::new("data/log/x.log"), 43, "CRC mismatch");
        assert_eq!(
            f.to_string(),
            "data/log/x.log offset 43 event - topic -: CRC mismatch"
        );
        f.event_id = Some(7);
        f.topic = Some("t".into());
        assert_eq!(
            f.to_string(),
            "data/log/x.log offset 43 event 7 topic t: CRC mismatch"
        );
    }
}
