//! The writer's side of replication: planning how to serve a slave (on the
//! master), and on a slave applying the master's records, keeping its id
//! lease, resetting for a full resync (moving a divergent tail aside
//! first), PROMOTE's new epoch, and the role claim (`data/role`) that
//! PROMOTE, a step-down and `--demote` write.
//!
//! Runs on the writer thread, asked through the channel by the
//! replication threads (`repl-<peer>` senders, the slave's receiver) and by
//! PROMOTE. Replicated records go through the one apply path unchanged:
//! the same bytes, the master's ids and timestamps.

use std::io::Write as _;

use log::{info, warn};

use super::lease::ID_LEASE_BLOCK;
use super::writer::Writer;
use crate::role::Role;
use crate::stats::Stats;
use crate::storage::log::logread;
use crate::storage::log::record::{self, Decoded, FLAG_BATCH_MORE, Kind, Record};
use crate::storage::ops::{ReplMode, ReplPlan, SnapItem, WriteOk};
use crate::storage::role::{ROLE_FILE, RoleClaim, load_claim, store_claim};
use crate::storage::{StoreError, sync_dir};

/// Where moved-aside divergent records go, under the data directory.
pub const DIVERGED_DIR: &str = "diverged";

impl Writer {
    /// How to serve a slave that has the records up to `after_id` of
    /// `history` in `epoch` (`empty`: it has none at all).
    pub(super) fn repl_plan(
        &mut self,
        after_id: u64,
        history: u64,
        epoch: u64,
        empty: bool,
    ) -> Result<WriteOk, StoreError> {
        let refuse = |why: String| {
            Ok(WriteOk::Plan(Box::new(ReplPlan {
                history: self.state.history(),
                epoch: self.epoch(),
                mode: ReplMode::Refused(why),
            })))
        };
        if self.role() != Role::Master {
            return refuse("this server is a slave; replicate from its master".into());
        }
        if !empty && history != 0 && history != self.state.history() {
            return refuse(format!(
                "the slave's data belongs to history {history:016x}, this master's to {:016x}; \
                 start the slave on an empty data directory",
                self.state.history()
            ));
        }
        if epoch > self.epoch() {
            return refuse(format!(
                "the slave has seen epoch {epoch}, this master is in epoch {}: it was \
                 promoted past this one",
                self.epoch()
            ));
        }
        // Records of an older epoch above where this history left it are
        // records this master never had.
        let end_of_epoch = self
            .state
            .epochs()
            .iter()
            .find(|e| e.epoch > epoch)
            .map_or(self.state.last_id(), |e| e.prev_last_id);
        // Ids this master assigned whose records it undid or lost
        // (`replication.minSlaves`, a crash above the lease): a slave that
        // holds one keeps only what lies before them.
        let undone = |id: u64| self.quorum.gaps().keep_for(id);
        let mode = if !empty && after_id > end_of_epoch {
            ReplMode::Diverged {
                keep_id: undone(end_of_epoch).unwrap_or(end_of_epoch),
            }
        } else if let Some(keep_id) = undone(after_id).filter(|_| !empty) {
            ReplMode::Diverged { keep_id }
        } else {
            let first_retained = self.first_retained_id()?;
            if empty || after_id.saturating_add(1) < first_retained {
                let after = after_id.max(first_retained.saturating_sub(1));
                // Never inside a gap: the slave would then hold a last id
                // this master has no record of, and be told it diverged.
                let after = undone(after).unwrap_or(after);
                ReplMode::Full {
                    after_id: after,
                    snapshot: self.snapshot(after),
                }
            } else {
                ReplMode::Stream { after_id }
            }
        };
        Ok(WriteOk::Plan(Box::new(ReplPlan {
            history: self.state.history(),
            epoch: self.epoch(),
            mode,
        })))
    }

    /// The id of the oldest record still in the log (last id + 1 if none).
    fn first_retained_id(&self) -> Result<u64, StoreError> {
        for seg in self.store.segments.all() {
            if let Some(id) = logread::first_id(&seg)? {
                return Ok(id);
            }
        }
        Ok(self.state.next_id())
    }

    /// The state the records after `after_id` depend on, as records with
    /// ids up to `after_id`, in id order: a CREATE for each live topic, a
    /// copy of each pending DPUB, an EPOCH for each epoch.
    fn snapshot(&self, after_id: u64) -> Vec<SnapItem> {
        let mut items = Vec::new();
        for t in self.state.topics().values() {
            let s = t.shared();
            if s.create_id > after_id {
                continue; // its CREATE is streamed
            }
            let life_ms = if s.expires_ms == 0 {
                0
            } else {
                s.expires_ms.saturating_sub(s.created_ms).max(1)
            };
            let mut bytes = Vec::new();
            record::encode(
                &mut bytes,
                &Record {
                    event_id: s.create_id,
                    timestamp_ms: s.created_ms,
                    kind: Kind::Create,
                    flags: 0,
                    topic: &s.name,
                    headers: b"",
                    body: &life_ms.to_le_bytes(),
                },
            );
            items.push(SnapItem::Built {
                id: s.create_id,
                bytes,
            });
        }
        for (name, t) in self.state.topics() {
            if t.shared().create_id > after_id {
                continue;
            }
            for (g, st) in t.groups().iter().filter(|(_, st)| st.set_id <= after_id) {
                let body = record::GroupOp::Set {
                    group: g,
                    committed: st.committed,
                    failed_at: st.failed_at,
                    failures: st.failures,
                    alone: st.alone,
                }
                .encode();
                let mut bytes = Vec::new();
                record::encode(
                    &mut bytes,
                    &Record {
                        event_id: st.set_id,
                        timestamp_ms: 0,
                        kind: Kind::Group,
                        flags: 0,
                        topic: name,
                        headers: b"",
                        body: &body,
                    },
                );
                items.push(SnapItem::Built {
                    id: st.set_id,
                    bytes,
                });
            }
        }
        for (&id, p) in self.state.pending() {
            if id <= after_id {
                items.push(SnapItem::Logged {
                    id,
                    pos: p.pos(),
                    len: p.record_len(),
                });
            }
        }
        for e in self
            .state
            .epochs()
            .iter()
            .filter(|e| e.start_id <= after_id)
        {
            items.push(SnapItem::Built {
                id: e.start_id,
                bytes: super::epochs::epoch_record(
                    e.start_id,
                    0,
                    e.epoch,
                    e.prev_last_id,
                    self.state.history(),
                ),
            });
        }
        items.sort_by_key(SnapItem::id);
        items
    }

    /// Slave: appends the master's records (whole MPUB batches) and applies
    /// them; records it has already are skipped.
    pub(super) fn replicate(&mut self, bytes: &[u8]) -> Result<WriteOk, StoreError> {
        let mut at = 0;
        while at < bytes.len() {
            // One record, or a whole MPUB batch: they never span segments.
            let mut end = at;
            let last_id = loop {
                let Decoded::Record { rec, len } = record::decode(&bytes[end..]) else {
                    return Err(StoreError::corrupt(
                        std::path::Path::new("(from the master)"),
                        end as u64,
                        "not a whole record",
                    ));
                };
                end += len;
                if rec.flags & FLAG_BATCH_MORE == 0 || end >= bytes.len() {
                    break rec.event_id;
                }
            };
            let batch = &bytes[at..end];
            at = end;
            if last_id <= self.state.last_id() {
                continue; // had it already (a resumed stream)
            }
            self.reserve_replicated(last_id, batch.len())?;
            let mut off = 0;
            while off < batch.len() {
                let Decoded::Record { rec, len } = record::decode(&batch[off..]) else {
                    break; // decoded above
                };
                if rec.event_id > self.state.last_id() {
                    let pos = self.log.append_bytes(&batch[off..off + len]);
                    self.apply(&rec, pos, len)?;
                    if rec.is_message() {
                        self.state.count_published(1);
                    }
                }
                off += len;
            }
        }
        Ok(WriteOk::Id(self.state.last_id()))
    }

    /// A slave keeps the master's lease: ids up to it may exist there.
    pub(super) fn repl_lease(&mut self, lease: u64) -> Result<WriteOk, StoreError> {
        if lease > self.state.id_lease() {
            super::lease::store_lease(&self.dir, lease)?;
            self.state.leased_to(lease);
        }
        self.repl
            .lease
            .store(self.state.id_lease(), std::sync::atomic::Ordering::Relaxed);
        Ok(WriteOk::Done)
    }

    /// Slave: forgets every topic and record, ready for a full resync from
    /// a master of `history`. With `diverged_after`, the records after that
    /// id are first copied into a file under `diverged/`.
    pub(super) fn repl_reset(
        &mut self,
        history: u64,
        diverged_after: Option<u64>,
    ) -> Result<WriteOk, StoreError> {
        self.repl
            .full_syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(keep) = diverged_after {
            self.move_aside(keep)?;
        }
        self.flush_log()?;
        self.roll()?;
        // Every segment but the (new, empty) active one.
        let mut old = self.store.segments.all();
        old.retain(|s| !self.log.is_active(s));
        self.state.discard_all(old);
        self.log.forget_all_sealed();
        self.quorum.clear_gaps();
        // Durable before anything of the new history arrives: a restart
        // must never replay the old records in front of the new ones.
        self.commit()?;
        self.checkpoint()?;
        self.begin_batch();
        info!("replication: local data discarded for a full resync of history {history:016x}");
        Ok(WriteOk::Done)
    }

    /// Copies the records after `keep_id` into `diverged/<first>-<last>.log`
    /// (segment format: `smss-cli dump` reads it), durably.
    fn move_aside(&mut self, keep_id: u64) -> Result<(), StoreError> {
        self.flush_log()?;
        let end = self.log.written_end();
        let segments = &self.store.segments;
        let mut pos = logread::position_after(segments, end, keep_id)?;
        let mut bytes = Vec::new();
        let (mut first, mut last, mut count) = (0, 0, 0usize);
        while pos < end {
            let chunk = logread::read_chunk(segments, pos, end, logread::CHUNK_BYTES)?;
            if chunk.next_pos <= pos {
                break;
            }
            if chunk.count > 0 {
                if first == 0
                    && let Decoded::Record { rec, .. } = record::decode(&chunk.bytes)
                {
                    first = rec.event_id;
                }
                last = chunk.last_id;
                count += chunk.count;
                bytes.extend_from_slice(&chunk.bytes);
            }
            pos = chunk.next_pos;
        }
        if count == 0 {
            return Ok(());
        }
        let dir = self.dir.join(DIVERGED_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let path = dir.join(format!("{first:020}-{last:020}.log"));
        let mut f = std::fs::File::create(&path).map_err(|e| StoreError::io("create", &path, e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| StoreError::io("write diverged records", &path, e))?;
        sync_dir(&dir)?;
        warn!(
            "replication: {count} records (event ids {first}..={last}) the master does not have \
             (a new master never had them, or the master undid them) were moved to {}",
            path.display()
        );
        Stats::add(&self.stats.repl_diverged_records, count as u64);
        Ok(())
    }

    /// PROMOTE: appends the EPOCH record of the next epoch, at the bottom
    /// of its id range: above every id the old master could assign.
    /// Returns its id.
    pub(super) fn promote(&mut self) -> Result<WriteOk, StoreError> {
        let id = self.start_epoch(self.epoch() + 1)?;
        info!("promoted: a master from event id {id} on");
        // The slave's timers waited for the master: lifetimes over by now
        // end before any delayed message fires.
        self.expire_ended(crate::storage::now_ms());
        Ok(WriteOk::Id(id))
    }

    /// Leases ids up to `last_id` and makes room for `bytes` more.
    pub(super) fn reserve_replicated(
        &mut self,
        last_id: u64,
        bytes: usize,
    ) -> Result<(), StoreError> {
        if last_id > self.state.id_lease() {
            let lease = last_id.saturating_add(ID_LEASE_BLOCK);
            super::lease::store_lease(&self.dir, lease)?;
            self.state.leased_to(lease);
        }
        self.ensure_room(bytes)
    }
}

/// The role claim (see [`crate::storage::role`]).
impl Writer {
    /// Writes `claim` once everything written so far is durable: a claim
    /// of epoch E must never outlive a crash that lost E's EPOCH record.
    pub(super) fn claim_role(&mut self, claim: RoleClaim) -> Result<WriteOk, StoreError> {
        self.flush_log()?;
        self.sync_log()?;
        store_claim(&self.dir, claim)?;
        if claim.role == Role::Slave {
            // A slave assigns no ids: it asks its master for what follows its
            // last record, not for what follows ids it leased as a master
            // (after a crash those have no records), which would cost a full
            // resync for nothing. A later PROMOTE jumps to a new epoch anyway.
            let last = self.state.last_id();
            self.state.rewind_ids_to(self.quorum.last_record(last));
        }
        info!(
            "role claim: {} of epoch {} ({})",
            claim.role,
            claim.epoch,
            self.dir.join(ROLE_FILE).display()
        );
        Ok(WriteOk::Done)
    }

    /// `--demote`: the records after the point where this server was
    /// promoted are its own epoch's: they go to `diverged/` (never deleted),
    /// the rest is reset so a full resync from the master follows, and the
    /// claim says slave.
    pub(super) fn demote(&mut self) -> Result<WriteOk, StoreError> {
        let Some(RoleClaim {
            role: Role::Master,
            epoch,
        }) = load_claim(&self.dir)?
        else {
            return Ok(WriteOk::Done);
        };
        // Not found (an epoch from a reset history): keep nothing in place.
        let keep = self
            .state
            .epochs()
            .iter()
            .find(|e| e.epoch == epoch)
            .map_or(0, |e| e.prev_last_id);
        warn!(
            "--demote: this server was the master of epoch {epoch}; the records after event \
             id {keep} are moved aside and its data is copied anew from its master"
        );
        self.repl_reset(0, Some(keep))?;
        store_claim(
            &self.dir,
            RoleClaim {
                role: Role::Slave,
                epoch,
            },
        )?;
        Ok(WriteOk::Done)
    }
}
