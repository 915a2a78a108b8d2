//! The write quorum (`replication.minSlaves`) on the writer's side: a batch
//! that appends what a client, a consumer group or a timer asked for is
//! answered `OK` only once at least N slaves have its records durably, and
//! is undone otherwise — never acknowledged without the slaves.
//!
//! Runs on the writer thread, as part of [`Writer`]'s batch commit:
//! 1. When a batch opens, [`Writer::open_quorum`] asks the shared
//!    [`crate::replication::quorum::AckQuorum`] whether N slave connections
//!    are caught up. If not, every such request of the batch is refused at
//!    once (`ERR NOSLAVE`) without writing anything: an isolated master
//!    costs nothing per request and acknowledges nothing.
//! 2. Otherwise the batch is written and made durable here (fsynced under
//!    `always` and `interval` alike, since a record goes to slaves only once
//!    durable), then only the durable tail is published, so the senders
//!    stream it while subscribers, INFO and STATS still show none of it.
//! 3. The writer waits up to `syncTimeoutMs` for N connections to
//!    acknowledge the batch's last id ([`Writer::await_slaves`]), then
//!    publishes the batch as any other. On timeout it moves the durable
//!    tail back first (so senders that sent any of it end their session),
//!    undoes the batch in memory and cuts the log durably, exactly like a
//!    failed batch ([`Writer::commit`]), and answers `ERR NOSLAVE`.
//!
//! Ids are never reused after an undo: slaves may hold the undone records
//! and their readers may have seen them. The id counter stays at the undone
//! batch's last id and the range is kept as a gap
//! ([`super::quorum_gate::Gaps`], durable in the checkpoint, written right
//! after the cut), so a slave that comes back with its last id inside it is
//! told to move those records aside and resync (see `Writer::repl_plan`).
//!
//! The trade-off: the writer waits one slave round trip per batch, so a
//! write's latency is the local fsync plus the N-th fastest slave's receipt,
//! apply and fsync; the requests of one batch share that wait as they share
//! the fsync.

use std::time::Instant;

use log::warn;

use super::writer::Writer;
use crate::config::FsyncPolicy;
use crate::role::Role;
use crate::stats::Stats;
use crate::storage::StoreError;
use crate::storage::ops::{WriteError, WriteOp, WriteResult};
use crate::storage::tail::TailPos;

impl Writer {
    /// The id of the last record in the log: the id counter, unless the ids
    /// just below it were assigned and have no record (an undone write, or
    /// ids leased before a crash). What STATS, ROLE, heartbeats and lag call
    /// the last event id: a slave can have it.
    pub(super) fn last_record_id(&self) -> u64 {
        self.quorum.last_record(self.state.last_id())
    }

    /// A new batch opens: is the quorum in force, and are enough slaves
    /// caught up with the last record?
    pub(super) fn open_quorum(&mut self) {
        let last_record = self.last_record_id();
        let acks = &self.repl.quorum;
        let is_master = self.role() == Role::Master;
        self.quorum.open(is_master, |n| acks.ready(n, last_record));
    }

    /// Executes one request of the batch, or refuses it at once when the
    /// quorum is in force and too few slaves are caught up.
    pub(super) fn execute_gated(&mut self, op: WriteOp) -> WriteResult {
        let held = self.quorum.holds(op.needs_quorum());
        if held && !self.quorum.ready() {
            Stats::add(&self.stats.repl_noslave_refusals, 1);
            let n = self.quorum.min_slaves();
            return Err(WriteError::NoSlave(format!(
                "fewer than {n} slave(s) are connected and caught up \
                 (replication.minSlaves {n}); nothing was written"
            )));
        }
        let res = self.execute(op);
        if held && res.is_ok() {
            self.quorum.must_wait();
        }
        res
    }

    /// Commits the batch (waiting for the slaves when it must) and turns
    /// the answers of what was to be `OK` into the error when it failed.
    pub(super) fn commit_batch(&mut self, results: &mut [WriteResult]) {
        let undone_last = self.state.last_id();
        let res = if self.quorum.take_wait() {
            self.commit_with(Writer::await_slaves)
        } else {
            self.commit()
        };
        let err = match res {
            Ok(()) => return,
            Err(StoreError::NoQuorum(why)) => {
                self.after_undo(undone_last);
                let mut refused = 0;
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(WriteError::NoSlave(why.clone()));
                    refused += 1;
                }
                Stats::add(&self.stats.repl_noslave_refusals, refused);
                return;
            }
            Err(e) => WriteError::Storage(e.to_string()),
        };
        // Nothing of the batch stayed, in memory or in the log: every
        // request that was to be OK'd gets the error instead.
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(err.clone());
        }
    }

    /// Between writing the batch and publishing it: makes it durable here,
    /// lets the senders stream it, and waits for the slaves. On timeout the
    /// durable tail moves back before the caller cuts the log.
    fn await_slaves(&mut self) -> Result<(), StoreError> {
        if self.tuning.policy != FsyncPolicy::Never {
            self.sync_log()?;
        }
        self.publish_durable_uncommitted();
        let (n, id) = (self.quorum.min_slaves(), self.state.last_id());
        let deadline = Instant::now() + self.quorum.timeout();
        let quorum = &self.repl.quorum;
        if quorum.wait(n, id, deadline) {
            return Ok(());
        }
        quorum.fell_behind(id);
        let pos = self.log.batch_start().unwrap_or(self.next_pos());
        let last_id = self.state.batch_start_id().unwrap_or(id);
        // Before the file changes: a sender that read past `pos` ends its
        // session, and one reading now drops what it read.
        self.store.durable.cut_back(TailPos { pos, last_id });
        let ms = self.quorum.timeout().as_millis();
        Err(StoreError::NoQuorum(format!(
            "fewer than {n} slave(s) acknowledged event id {id} within {ms} ms \
             (replication.minSlaves {n}); the write was undone"
        )))
    }

    /// After a batch was undone for want of slaves: its ids stay used (the
    /// counter does not go back) and are recorded as a gap, durably, before
    /// anyone is answered.
    fn after_undo(&mut self, undone_last: u64) {
        let first = self.state.next_id();
        warn!(
            "replication.minSlaves: event ids {first}..={undone_last} undone, too few slaves \
             acknowledged them in {} ms; the log is cut back to position {}",
            self.quorum.timeout().as_millis(),
            self.next_pos()
        );
        self.quorum.add_gap(first, undone_last);
        // The lease covers them already: it was raised before they were assigned.
        self.state.use_ids_to(undone_last);
        // A failure here is retried with the next checkpoint; until then a
        // crash leaves the ids below the lease, which recovery skips and
        // records as a gap the same way.
        self.try_checkpoint();
    }
}
