//! The write quorum's state on the writer (`replication.minSlaves`): the
//! gate of the batch being built ([`QuorumGate`]) and the event id ranges
//! this master assigned whose records are not in its log ([`Gaps`]).
//!
//! Owned by the writer thread (a field of `Writer`); the steps that use
//! it — refusing, waiting, undoing — are in [`super::quorum`]. Its fields
//! are private: the writer changes it through the methods here.

use std::time::Duration;

/// Event id ranges (first, last) assigned here whose records are not in the
/// log: ascending, disjoint, and adjacent ranges merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Gaps(Vec<(u64, u64)>);

impl Gaps {
    /// Adds `first..=last` (nothing when empty).
    pub(super) fn add(&mut self, first: u64, last: u64) {
        if first == 0 || first > last {
            return;
        }
        self.0.push((first, last));
        self.0.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
        for &(f, l) in &self.0 {
            match merged.last_mut() {
                Some(prev) if f <= prev.1.saturating_add(1) => prev.1 = prev.1.max(l),
                _ => merged.push((f, l)),
            }
        }
        self.0 = merged;
    }

    /// When `id` lies in a gap: the last id before that gap, which is what a
    /// slave holding `id` may keep.
    pub(super) fn keep_for(&self, id: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(f, l)| f <= id && id <= l)
            .map(|&(f, _)| f - 1)
    }

    pub(super) fn to_vec(&self) -> Vec<(u64, u64)> {
        self.0.clone()
    }

    /// A full resync replaces the log: its gaps are the master's.
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// The writer's quorum state.
#[derive(Debug)]
pub(super) struct QuorumGate {
    /// `replication.minSlaves`; 0: off.
    min_slaves: usize,
    timeout: Duration,
    gaps: Gaps,
    /// The batch being built holds requests that need the quorum (a master
    /// with `minSlaves` ≥ 1).
    on: bool,
    /// Enough slaves were caught up when the batch opened.
    ready: bool,
    /// The batch appended records that must wait for the slaves.
    waits: bool,
}

impl QuorumGate {
    pub(super) fn new(min_slaves: u32, timeout_ms: u64) -> QuorumGate {
        QuorumGate {
            min_slaves: min_slaves as usize,
            timeout: Duration::from_millis(timeout_ms),
            gaps: Gaps::default(),
            on: false,
            ready: true,
            waits: false,
        }
    }

    /// `replication.minSlaves` (0: off).
    pub(super) fn min_slaves(&self) -> usize {
        self.min_slaves
    }

    /// `replication.syncTimeoutMs`.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The undone id ranges.
    pub(super) fn gaps(&self) -> &Gaps {
        &self.gaps
    }

    /// The id of the last record in a log whose id counter is at `last_id`:
    /// below the gap `last_id` lies in, if any.
    pub(super) fn last_record(&self, last_id: u64) -> u64 {
        self.gaps.keep_for(last_id).unwrap_or(last_id)
    }

    /// Ids `first..=last` were assigned here and have no record.
    pub(super) fn add_gap(&mut self, first: u64, last: u64) {
        self.gaps.add(first, last);
    }

    /// A full resync replaces the log: its gaps are the master's.
    pub(super) fn clear_gaps(&mut self) {
        self.gaps.clear();
    }

    /// A new batch opens: the quorum is in force on a master with
    /// `minSlaves` ≥ 1, and then `caught_up(min_slaves)` says whether
    /// enough slaves have the last record.
    pub(super) fn open(&mut self, is_master: bool, caught_up: impl FnOnce(usize) -> bool) {
        self.waits = false;
        self.on = self.min_slaves > 0 && is_master;
        if self.on {
            self.ready = caught_up(self.min_slaves);
        }
    }

    /// Whether a request that `needs_quorum` is held to it in this batch.
    pub(super) fn holds(&self, needs_quorum: bool) -> bool {
        self.on && needs_quorum
    }

    /// Enough slaves were caught up when the batch opened.
    pub(super) fn ready(&self) -> bool {
        self.ready
    }

    /// The batch appended a held request: its commit waits for the slaves.
    pub(super) fn must_wait(&mut self) {
        self.waits = true;
    }

    /// Whether the batch must wait for the slaves (and start over for the
    /// next batch).
    pub(super) fn take_wait(&mut self) -> bool {
        std::mem::take(&mut self.waits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_merge_and_say_what_a_slave_may_keep() {
        let mut g = Gaps::default();
        g.add(10, 12);
        g.add(20, 25);
        g.add(13, 15); // adjacent: merged
        g.add(0, 3); // no id 0: ignored
        g.add(9, 8); // empty
        assert_eq!(g.to_vec(), vec![(10, 15), (20, 25)]);
        assert_eq!(g.keep_for(9), None);
        assert_eq!(g.keep_for(10), Some(9));
        assert_eq!(g.keep_for(15), Some(9));
        assert_eq!(g.keep_for(16), None);
        assert_eq!(g.keep_for(22), Some(19));
        g.add(16, 19); // closes the hole
        assert_eq!(g.to_vec(), vec![(10, 25)]);
        assert_eq!(g.keep_for(22), Some(9));
        g.add(11, 30); // overlapping
        assert_eq!(g.to_vec(), vec![(10, 30)]);
        g.clear();
        assert_eq!(g.keep_for(22), None);
    }
}
