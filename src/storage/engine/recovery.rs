//! Opening the data directory: lock it, load the checkpoint, replay the log
//! tail through the writer's one apply path, and cut a torn tail.
//!
//! Runs on the main thread before the writer thread starts. Rules:
//! - Records after the checkpoint position are CRC-checked and replayed.
//! - A bad record in the newest segment with nothing valid after it is a torn
//!   tail (a write that never completed): the segment is truncated there,
//!   and an MPUB batch missing its last record is cut as a whole.
//! - A bad record anywhere else, or one followed by a valid record, is
//!   corruption: the server refuses to start, naming the file and offset.
//! - A segment chain with a hole, or a log shorter than the checkpoint
//!   covers ([`crate::storage::log::chain`]), stops the start before anything is written.
//! - The zero fill ahead of the write position (preallocation) is dropped
//!   quietly and reported as zero fill, not as torn bytes.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use super::lease::load_lease;
use super::links::WriterLinks;
use super::writer::Writer;
use crate::config::Config;
use crate::role::Role;
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::index;
use crate::storage::log::chain;
use crate::storage::log::record::{self, Decoded, FLAG_BATCH_MORE};
use crate::storage::log::segment::{Segment, list_segments};
use crate::storage::log::torn;
use crate::storage::ops::TimerSenders;
use crate::storage::{StoreError, sync_dir};

/// Read window for replay.
const WINDOW: usize = 4 << 20;
/// The first storage format whose checkpoints carry a history id.
const HISTORY_FORMAT_VERSION: u32 = 2;

/// What recovery found, for the start-up log line and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub replayed_records: u64,
    /// Bytes of torn or unreadable records cut from the newest segment.
    pub truncated_bytes: u64,
    /// Bytes of zero fill (preallocation) dropped after the last record.
    pub zero_fill_bytes: u64,
}

/// A new history id: 64 bits from the kernel's random source (falling
/// back to the time and process id, which are unique enough for this).
pub(crate) fn new_history_id() -> u64 {
    use std::io::Read as _;
    let mut b = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    let id = match random {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => now_ms_nanos() ^ (u64::from(std::process::id()) << 32),
    };
    id.max(1)
}

fn now_ms_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Takes the data directory's exclusive lock (also for `smss --repair`).
pub(in crate::storage) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io("open lock file", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io("lock", &path, e)),
    }
}

fn mkdir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))
}

impl Writer {
    /// Opens (or initialises) the store under `config.store.path`, to
    /// publish through `links`. `timers` receive every lifetime and pending
    /// delayed message found.
    pub fn open(
        config: &Config,
        links: WriterLinks,
        timers: TimerSenders,
    ) -> Result<(Writer, RecoveryReport), StoreError> {
        let started = Instant::now();
        let cfg = config.store.clone();
        let dir = cfg.path.clone();
        mkdir(&dir)?;
        let lock = lock_dir(&dir)?;
        let log_dir = dir.join("log");
        let index_dir = dir.join("index");
        mkdir(&log_dir)?;
        mkdir(&index_dir)?;

        let cp = Checkpoint::load(&dir)?;
        let mut bases = list_segments(&log_dir)?;
        let start_pos = cp.as_ref().map_or(0, |c| c.log_pos);
        let cp_path = dir.join(checkpoint::FILE_NAME);
        let infos = chain::seg_infos(&log_dir, &bases)?;
        let cp_at = cp.as_ref().map(|c| (cp_path.as_path(), c.log_pos));
        if let Some((path, offset, why)) = chain::first_break(&log_dir, &infos, cp_at)? {
            return Err(StoreError::corrupt(&path, offset, why));
        }
        if bases.is_empty() {
            Segment::open(&log_dir, start_pos, true)?;
            sync_dir(&log_dir)?;
            bases.push(start_pos);
        }
        let mut segs = Vec::with_capacity(bases.len());
        for &b in &bases {
            segs.push(Arc::new(Segment::open(&log_dir, b, false)?));
        }
        let first_base = bases[0];
        if start_pos < first_base {
            let what = if cp.is_some() {
                "the checkpoint's position"
            } else {
                "the start of the log (there is no checkpoint)"
            };
            return Err(StoreError::corrupt(
                &log_dir.join(Segment::file_name(first_base)),
                0,
                format!(
                    "{what} {start_pos} is before the oldest segment; log segments are missing"
                ),
            ));
        }
        let newest = Arc::clone(&segs[segs.len() - 1]);
        let mut sealed_bytes = 0;
        for s in &segs[..segs.len() - 1] {
            sealed_bytes += file_len(s)?;
        }
        for s in &segs {
            links.store.segments.push(Arc::clone(s));
        }

        let active_len = file_len(&newest)?;
        let mut w = Writer::new(
            config,
            links,
            lock,
            newest,
            active_len,
            sealed_bytes,
            timers,
        );

        let missing = match &cp {
            Some(cp) => {
                for &(first, last) in &cp.gaps {
                    w.quorum.add_gap(first, last);
                }
                w.state.load_checkpoint(cp, &w.index_dir)?
            }
            None => Vec::new(),
        };
        w.remove_stray_indexes()?;
        let mut report = RecoveryReport::default();
        // Segments that hold bytes at or after the start position.
        let to_replay: Vec<&Arc<Segment>> = segs
            .iter()
            .zip(bases.iter().skip(1).map(|&b| Some(b)).chain([None]))
            .filter(|(_, next)| next.is_none_or(|n| n > start_pos))
            .map(|(s, _)| s)
            .collect();
        for seg in to_replay {
            let is_newest = w.log.is_active(seg);
            let from = start_pos.saturating_sub(seg.base);
            w.replay_segment(seg, from, is_newest, &mut report)?;
        }
        // A missing index is fine only for a topic the replayed log deletes
        // (a DELETE is durable before its index file goes).
        for (name, create_id) in missing {
            if w.state
                .topic(&name)
                .is_some_and(|t| t.shared().create_id == create_id)
            {
                let path = w.index_dir.join(index::file_name(&name, create_id));
                return Err(StoreError::corrupt(
                    &path,
                    0,
                    "the checkpoint names this index file but it is missing, and the log \
                     does not delete its topic",
                ));
            }
        }
        w.log.resume_at_file_end()?;
        let lease = load_lease(&dir)?;
        let is_master = w.role() == Role::Master;
        if lease > w.state.last_id() && is_master {
            // Ids up to the lease may have been seen before a crash.
            info!(
                "resuming event ids after the lease {lease} (last record {})",
                w.state.last_id()
            );
            // None of them has a record here: a slave holding some has
            // records this master lost.
            w.quorum.add_gap(w.state.next_id(), lease);
            w.state.checkpoint_soon();
            w.state.use_ids_to(lease);
        }
        // A slave assigns no ids: it resumes from the last record it has,
        // and keeps the lease (its master's) for a PROMOTE.
        w.state.leased_to(w.state.last_id().max(lease));
        // A slave's checkpoint of a format with histories but no history
        // was written by a reset for a full resync that did not finish: its
        // records are part of a snapshot, and a new history would get it
        // refused by every master. Left at 0, it asks for the resync again.
        let resync_unfinished = !is_master
            && cp
                .as_ref()
                .is_some_and(|c| c.format >= HISTORY_FORMAT_VERSION);
        if w.state.history() == 0 && (is_master || (w.state.last_id() > 0 && !resync_unfinished)) {
            // A new data directory (or one from before histories) starts one.
            w.state.start_history(new_history_id());
            w.state.checkpoint_soon();
        }
        // A directory of an older format says so in a new checkpoint before
        // anything of this format is written, so an older build never reads
        // records it would misread (it refuses the directory instead).
        if cp
            .as_ref()
            .is_some_and(|c| c.format < record::FORMAT_VERSION)
        {
            w.state.checkpoint_soon();
        }
        // Lifetimes that ended while the server was down end now, before
        // it serves anything or its timers fire a delayed message for them.
        if is_master {
            w.expire_ended(crate::storage::now_ms());
        }
        w.commit()?;
        // What survived the crash is the durable log now.
        w.publish_durable();
        if report.replayed_records > 0
            || report.truncated_bytes > 0
            || cp.is_none()
            || w.state.checkpoint_asked()
        {
            w.checkpoint()?;
        }
        w.state.count_from_here();
        let mut cuts = String::new();
        if report.truncated_bytes > 0 {
            cuts.push_str(&format!(", cut {} torn bytes", report.truncated_bytes));
        }
        if report.zero_fill_bytes > 0 {
            cuts.push_str(&format!(
                ", dropped {} bytes of zero fill (preallocated, never written)",
                report.zero_fill_bytes
            ));
        }
        info!(
            "recovered {} topics, last event id {}, replayed {} records{cuts} in {:?}",
            w.state.topics().len(),
            w.state.last_id(),
            report.replayed_records,
            started.elapsed()
        );
        Ok((w, report))
    }

    /// Index files of topics the checkpoint does not know belong to topics
    /// created after it (replay recreates them) or deleted: remove them.
    fn remove_stray_indexes(&mut self) -> Result<(), StoreError> {
        let keep: HashSet<String> = self
            .state
            .topics()
            .values()
            .map(|t| index::file_name(&t.shared().name, t.shared().create_id))
            .collect();
        let dir = &self.index_dir;
        let rd = std::fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io("list", dir, e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".idx") && !keep.contains(name) {
                let p = ent.path();
                std::fs::remove_file(&p).map_err(|e| StoreError::io("remove index", &p, e))?;
            }
        }
        Ok(())
    }

    /// Replays one segment from byte `from`, truncating a torn tail when it
    /// is the newest segment.
    fn replay_segment(
        &mut self,
        seg: &Segment,
        from: u64,
        is_newest: bool,
        report: &mut RecoveryReport,
    ) -> Result<(), StoreError> {
        let len = file_len(seg)?;
        let mut win: Vec<u8> = Vec::new();
        let mut win_at = from; // file offset of win[0]
        let mut cur = 0usize; // offset within win
        // Records of an MPUB batch whose last record has not been seen yet.
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut batch_start: Option<u64> = None;
        let bad_at: u64;
        let bad_reason: String;
        loop {
            let off = win_at + cur as u64;
            if off >= len {
                bad_at = len;
                bad_reason = String::new();
                break;
            }
            let decoded = record::decode(&win[cur..]);
            match decoded {
                Decoded::Record { rec, len: rlen } => {
                    if rec.event_id <= self.state.last_id() {
                        bad_at = off;
                        bad_reason = format!(
                            "event id {} does not increase (previous {})",
                            rec.event_id,
                            self.state.last_id()
                        );
                        break;
                    }
                    let pos = seg.base + off;
                    if rec.flags & FLAG_BATCH_MORE != 0 || batch_start.is_some() {
                        batch_start.get_or_insert(off);
                        batch.push((pos, win[cur..cur + rlen].to_vec()));
                        if rec.flags & FLAG_BATCH_MORE == 0 {
                            for (p, bytes) in batch.drain(..) {
                                if let Decoded::Record { rec, len } = record::decode(&bytes) {
                                    self.apply(&rec, p, len)?;
                                    report.replayed_records += 1;
                                }
                            }
                            batch_start = None;
                        } else {
                            // Ids inside a pending batch must still increase.
                            self.state.use_ids_to(rec.event_id);
                        }
                    } else {
                        self.apply(&rec, pos, rlen)?;
                        report.replayed_records += 1;
                    }
                    cur += rlen;
                }
                Decoded::Incomplete { need } if off + (need as u64) <= len => {
                    // Refill the window from `off`.
                    let want = need.max(WINDOW).min((len - off) as usize);
                    win.resize(want, 0);
                    seg.file
                        .read_exact_at(&mut win, off)
                        .map_err(|e| StoreError::io("read segment", &seg.path, e))?;
                    win_at = off;
                    cur = 0;
                }
                Decoded::Incomplete { need } => {
                    bad_at = off;
                    bad_reason = format!(
                        "record of {need} bytes runs past the end of the file ({len} bytes)"
                    );
                    break;
                }
                Decoded::End => {
                    bad_at = off;
                    bad_reason = "zero length field".to_string();
                    break;
                }
                Decoded::Corrupt(reason) => {
                    bad_at = off;
                    bad_reason = reason;
                    break;
                }
            }
        }
        // `bad_at == len` with an empty reason: the segment ended cleanly,
        // unless a batch is still open.
        let cut = batch_start.unwrap_or(bad_at);
        if cut == len {
            return Ok(());
        }
        let reason = if bad_reason.is_empty() {
            "MPUB batch without its last record".to_string()
        } else {
            bad_reason
        };
        if !is_newest {
            return Err(StoreError::corrupt(&seg.path, cut, reason));
        }
        let ceiling = torn::id_ceiling(self.state.last_id(), load_lease(&self.dir)?);
        let after = bad_at.max(cut);
        if let Some(valid) = torn::find_valid_after(
            &seg.file,
            &seg.path,
            after,
            len,
            self.state.last_id(),
            ceiling,
        )? {
            return Err(StoreError::corrupt(
                &seg.path,
                cut,
                format!(
                    "{reason}; but a valid record follows at offset {valid}, so this is not a torn tail"
                ),
            ));
        }
        // Zero fill after the last record is preallocation, not damage.
        let zero_from = zero_tail_from(seg, bad_at, len)?;
        if zero_from > cut {
            warn!(
                "cutting torn tail of {} at offset {cut}: {} bytes ({reason})",
                seg.path.display(),
                zero_from - cut
            );
        }
        seg.file
            .set_len(cut)
            .and_then(|_| seg.file.sync_all())
            .map_err(|e| StoreError::io("truncate torn tail", &seg.path, e))?;
        report.truncated_bytes += zero_from - cut;
        report.zero_fill_bytes += len - zero_from;
        if batch_start.is_some() {
            // The pending batch was never applied; its ids are free again
            // only because nobody was told about them (no OK was sent).
            let last = self.state.last_id();
            self.state
                .rewind_ids_to(last.min(batch_last_applied(&batch, last)));
        }
        Ok(())
    }
}

/// The last id applied before a pending batch began.
fn batch_last_applied(batch: &[(u64, Vec<u8>)], last: u64) -> u64 {
    match batch.first().map(|(_, b)| record::decode(b)) {
        Some(Decoded::Record { rec, .. }) => rec.event_id.saturating_sub(1),
        _ => last,
    }
}

fn file_len(s: &Segment) -> Result<u64, StoreError> {
    s.file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| StoreError::io("stat segment", &s.path, e))
}

/// Where the zero bytes at the end of `from..to` begin (`from` when all of
/// it is zero): the zero fill after a torn record is not counted as torn.
fn zero_tail_from(seg: &Segment, from: u64, to: u64) -> Result<u64, StoreError> {
    let mut buf = vec![0u8; 1 << 16];
    let mut end = to;
    while end > from {
        let n = ((end - from) as usize).min(buf.len());
        let at = end - n as u64;
        seg.file
            .read_exact_at(&mut buf[..n], at)
            .map_err(|e| StoreError::io("read segment", &seg.path, e))?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            return Ok(at + i as u64 + 1);
        }
        end = at;
    }
    Ok(from)
}
