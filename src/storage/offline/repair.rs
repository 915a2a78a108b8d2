//! `smss --repair`: cut a damaged log back to its last good record, rebuild
//! the indexes and the checkpoint from the log, and say exactly which event
//! ids were lost.
//!
//! Runs on the main thread of an `smss --repair` process with the data
//! directory locked, never inside a server; it is the one writer of the
//! files besides the server's writer thread. What it finds comes from
//! [`super::check::examine`]. The bytes it cuts off and the segments it
//! removes are moved to `damaged-<unix ms>/` in the data directory, not
//! deleted. The rebuild itself is the server's own recovery
//! ([`Writer::open`]): repair writes a checkpoint at the start of the
//! oldest segment holding only the topics created before it (from the old
//! checkpoint), removes every index file, and lets recovery replay the
//! whole log through the one apply path.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::check::{self, Examined};
use crate::config::Config;
use crate::storage::checkpoint::{Checkpoint, TopicMeta};
use crate::storage::engine::lease::{ID_LEASE_BLOCK, store_lease};
use crate::storage::engine::links::WriterLinks;
use crate::storage::engine::recovery::lock_dir;
use crate::storage::engine::writer::Writer;
use crate::storage::log::logscan::Cut;
use crate::storage::log::record::FORMAT_VERSION;
use crate::storage::log::segment::Segment;
use crate::storage::{StoreError, now_ms, ops, sync_dir};

/// `smss --repair` on the data directory of `config`, reporting to `out`.
/// `Ok(true)` when the directory checks clean afterwards.
pub fn run(config: &Config, out: &mut dyn Write) -> Result<bool, StoreError> {
    let dir = config.store.path.clone();
    let lock = lock_dir(&dir)?;
    let ex = check::examine(&dir)?;
    let io = |e| StoreError::io("write the report", Path::new("stdout"), e);
    if ex.findings().is_empty() {
        writeln!(
            out,
            "repair: nothing to repair: the data directory checks clean"
        )
        .map_err(io)?;
        return Ok(true);
    }
    check::print_findings(out, ex.findings()).map_err(io)?;
    let carried = carried_topics(&dir, &ex)?;
    if let Some(cut) = ex.log.cut {
        let stash = cut_log(&dir, &ex, cut)?;
        writeln!(
            out,
            "repair: cut {} at offset {} (log position {}); what was cut off is in {}",
            Segment::file_name(ex.log.segs[cut.seg].base),
            cut.offset,
            cut.pos,
            stash.display()
        )
        .map_err(io)?;
    }
    reset_derived(&dir, &ex, &carried)?;
    // Recovery takes the lock itself; a server that starts in between
    // recovers from the same files, with the same result.
    drop(lock);
    let links = WriterLinks::detached(&config.store.path.join("index"), 64);
    let (timers, _timer_rx) = ops::timer_channels();
    let (writer, report) = Writer::open(config, links, timers)?;
    drop(writer);
    writeln!(
        out,
        "repair: rebuilt the indexes and the checkpoint from the log ({} records replayed)",
        report.replayed_records
    )
    .map_err(io)?;
    writeln!(out, "repair: lost {}", check::lost_text(&ex)).map_err(io)?;
    let _lock = lock_dir(&dir)?;
    let after = check::examine(&dir)?;
    if after.findings().is_empty() {
        writeln!(out, "repair: done: the data directory checks clean").map_err(io)?;
        return Ok(true);
    }
    check::print_findings(out, after.findings()).map_err(io)?;
    writeln!(out, "repair: {} findings remain", after.findings().len()).map_err(io)?;
    Ok(false)
}

/// Topics created before the oldest segment (retention removed their
/// CREATE records) can only come from the old checkpoint.
fn carried_topics(dir: &Path, ex: &Examined) -> Result<Vec<TopicMeta>, StoreError> {
    let oldest = ex.log.segs.first().map_or(0, |s| s.base);
    if oldest == 0 {
        return Ok(Vec::new());
    }
    let first_id = ex
        .log
        .oldest_first_id
        .or(ex.lost.first().copied())
        .unwrap_or(u64::MAX);
    match &ex.checkpoint {
        Ok(Some(cp)) => Ok(cp
            .topics
            .iter()
            .filter(|t| t.create_id < first_id)
            .map(|t| TopicMeta {
                entries: 0,
                first_entry: 0,
                first_id: 0,
                last_id: 0,
                ..t.clone()
            })
            .collect()),
        _ => Err(StoreError::corrupt(
            &dir.join(crate::storage::checkpoint::FILE_NAME),
            0,
            format!(
                "the checkpoint is missing or unreadable and the log starts at position \
                 {oldest}, not 0 (retention deleted older segments): the topics created before \
                 it cannot be rebuilt from the log; restore the checkpoint from a backup. \
                 Nothing was changed"
            ),
        )),
    }
}

/// Moves what lies after `cut` into a new `damaged-<ms>/` directory and
/// truncates the log there, durably. Returns that directory.
fn cut_log(dir: &Path, ex: &Examined, cut: Cut) -> Result<PathBuf, StoreError> {
    let log_dir = dir.join("log");
    let stash = dir.join(format!("damaged-{}", now_ms()));
    std::fs::create_dir_all(&stash).map_err(|e| StoreError::io("create", &stash, e))?;
    let segs = &ex.log.segs;
    // A segment whose first byte is the cut is removed whole (except the
    // oldest, which stays as an empty file to keep the log's start).
    let whole = cut.offset == 0 && cut.seg > 0;
    if !whole {
        let seg = segs[cut.seg];
        let path = log_dir.join(Segment::file_name(seg.base));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io("open segment", &path, e))?;
        let saved = stash.join(format!(
            "{}.from-{}",
            Segment::file_name(seg.base),
            cut.offset
        ));
        copy_tail(&f, &path, cut.offset, seg.len, &saved)?;
        f.set_len(cut.offset)
            .and_then(|_| f.sync_all())
            .map_err(|e| StoreError::io("truncate segment", &path, e))?;
    }
    let first_gone = if whole { cut.seg } else { cut.seg + 1 };
    for s in &segs[first_gone..] {
        let name = Segment::file_name(s.base);
        let (from, to) = (log_dir.join(&name), stash.join(&name));
        std::fs::rename(&from, &to).map_err(|e| StoreError::io("move segment", &from, e))?;
    }
    sync_dir(&stash)?;
    sync_dir(&log_dir)?;
    Ok(stash)
}

/// Copies bytes `from..to` of `f` to a new file `saved`, without the zero
/// fill at the end.
fn copy_tail(f: &File, path: &Path, from: u64, to: u64, saved: &Path) -> Result<(), StoreError> {
    let mut s = File::create(saved).map_err(|e| StoreError::io("create", saved, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut at, mut nonzero_end) = (from, from);
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], at)
            .map_err(|e| StoreError::io("read segment", path, e))?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            nonzero_end = at + i as u64 + 1;
        }
        s.write_all(&buf[..n])
            .map_err(|e| StoreError::io("save the cut bytes", saved, e))?;
        at += n as u64;
    }
    s.set_len(nonzero_end - from)
        .and_then(|_| s.sync_all())
        .map_err(|e| StoreError::io("save the cut bytes", saved, e))
}

/// Removes every index file and writes a checkpoint at the start of the
/// oldest segment holding only `carried` (with empty, new index files), so
/// recovery replays the whole log. Rewrites an unreadable id lease above
/// every id seen, so no id is handed out twice.
fn reset_derived(dir: &Path, ex: &Examined, carried: &[TopicMeta]) -> Result<(), StoreError> {
    let index_dir = dir.join("index");
    std::fs::create_dir_all(&index_dir).map_err(|e| StoreError::io("create", &index_dir, e))?;
    let rd = std::fs::read_dir(&index_dir).map_err(|e| StoreError::io("list", &index_dir, e))?;
    for ent in rd {
        let p = ent
            .map_err(|e| StoreError::io("list", &index_dir, e))?
            .path();
        if p.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(&p).map_err(|e| StoreError::io("remove index", &p, e))?;
        }
    }
    for t in carried {
        let p = index_dir.join(crate::storage::index::file_name(&t.name, t.create_id));
        File::create(&p).map_err(|e| StoreError::io("create index", &p, e))?;
    }
    sync_dir(&index_dir)?;
    // The history, the epochs and the carried topics' groups were set by
    // records retention may have deleted: they come from the old checkpoint
    // (replay re-applies what the log still has).
    let old = match &ex.checkpoint {
        Ok(Some(c)) => Some(c),
        _ => None,
    };
    let carried_group =
        |g: &&crate::storage::checkpoint::GroupMeta| carried.iter().any(|t| t.name == g.topic);
    Checkpoint {
        format: FORMAT_VERSION,
        log_pos: ex.log.segs.first().map_or(0, |s| s.base),
        last_event_id: 0,
        history: old.map_or(0, |c| c.history),
        epochs: old.map_or_else(Vec::new, |c| c.epochs.clone()),
        topics: carried.to_vec(),
        delayed: Vec::new(),
        // Derived again by replay, for the messages it re-applies.
        dedup: Vec::new(),
        groups: old.map_or_else(Vec::new, |c| {
            c.groups.iter().filter(carried_group).cloned().collect()
        }),
        // Ids undone or lost are still not in the log.
        gaps: old.map_or_else(Vec::new, |c| c.gaps.clone()),
    }
    .store(dir)?;
    if ex.lease.is_none() {
        let cp_last = match &ex.checkpoint {
            Ok(Some(c)) => c.last_event_id,
            _ => 0,
        };
        let seen = ex
            .log
            .max_id
            .max(cp_last)
            .max(ex.lost.last().copied().unwrap_or(0));
        store_lease(dir, seen.saturating_add(ID_LEASE_BLOCK))?;
    }
    Ok(())
}
