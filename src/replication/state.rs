//! What the replication threads share with the rest of the server: the
//! master's view of its slaves, a slave's view of its master, and the few
//! numbers the writer publishes for them (history, epoch, id lease).
//!
//! Held by the broker. Senders (`repl-<peer>`) and the receiver update it;
//! STATS, SLAVES and retention read it. Atomics for single numbers, one
//! mutex for each list; never held across I/O.
//!
//! A slave that names itself (`REPL … node=<id>`) is listed once: a new
//! session of the same node replaces the old entry and ends its sender
//! through the [`Kick`] the sender registered, so a session left behind by
//! a freeze or a partition neither shows twice nor holds retention back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::quorum::AckQuorum;
use crate::stats;
// The lag definition, where replication's users (and tests) find it.
pub use crate::stats::{Lag, lag_events};

/// How a slave's replication is going (`repl_state`; SLAVES' state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// A slave: not replicating yet. A master's entry: the writer has not
    /// yet decided how to serve it (a moment after `REPL`).
    #[default]
    Connecting,
    /// Receiving the state and backlog of a full resync.
    Syncing,
    Streaming,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Syncing => "syncing",
            LinkState::Streaming => "streaming",
        }
    }
}

/// One connected slave, as its sender sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveInfo {
    /// A number unique to this connection.
    pub id: u64,
    /// The slave server's own id from `REPL … node=` (0: not given).
    pub node: u64,
    pub addr: String,
    /// The last event id it has acknowledged durably.
    pub acked_id: u64,
    /// Log position up to which it has acknowledged (retention keeps it):
    /// where the oldest record it lacks starts.
    pub acked_pos: u64,
    pub state: LinkState,
}

/// Ends a sender from outside: a new session of its slave replaced it.
pub type Kick = Box<dyn FnOnce() + Send>;

struct Entry {
    info: SlaveInfo,
    kick: Option<Kick>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("info", &self.info)
            .field("kick", &self.kick.is_some())
            .finish()
    }
}

/// A slave's view of its master, from the frames it has received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterView {
    pub addr: String,
    pub state: LinkState,
    /// The master's last event id, from its latest frame.
    pub master_event_id: u64,
    /// The master's clock when it sent its latest frame (Unix ms).
    pub sent_ms: u64,
    /// When that frame came (this server's monotonic clock).
    pub heard_at: Option<Instant>,
    /// Timestamp (master clock) of the oldest record the master had
    /// durably that this server lacks; 0 when it lacks none of those.
    pub missing_ts_ms: u64,
}

impl MasterView {
    /// A frame told where the master stands.
    pub fn heard(&mut self, last_id: u64, sent_ms: u64, at: Instant) {
        self.master_event_id = last_id;
        self.sent_ms = sent_ms;
        self.heard_at = Some(at);
    }

    /// The lag of a slave whose last event id is `have`, at `now`.
    pub fn lag(&self, have: u64, now: Instant) -> Lag {
        let age = match self.heard_at {
            Some(at) if self.missing_ts_ms > 0 => {
                let elapsed = now.saturating_duration_since(at).as_millis() as u64;
                Some(stats::age_on_slave(
                    self.sent_ms,
                    self.missing_ts_ms,
                    elapsed,
                ))
            }
            _ => None,
        };
        Lag::new(have, self.master_event_id, age)
    }
}

#[derive(Debug, Default)]
pub struct ReplState {
    /// The data directory's history id (0: a slave not synced yet).
    pub history: AtomicU64,
    pub epoch: AtomicU64,
    /// The writer's id lease: a slave keeps it for a PROMOTE.
    pub lease: AtomicU64,
    slaves: Mutex<Vec<Entry>>,
    next_slave: AtomicU64,
    master: Mutex<MasterView>,
    pub reconnects: AtomicU64,
    pub full_syncs: AtomicU64,
    /// Set by PROMOTE: the receiver stops.
    pub promoted: AtomicBool,
    /// Semi-sync is in force (configured, and not fallen back to async).
    pub sync_active: AtomicBool,
    pub sync_fallbacks: AtomicU64,
    /// The highest event id any slave has acknowledged durably; the
    /// semi-sync releaser waits on it.
    acked: Mutex<u64>,
    acked_moved: Condvar,
    /// Each slave connection's acknowledgements, for `replication.minSlaves`.
    pub quorum: AckQuorum,
    /// On a slave: how far its master's log is durable and kept, as its
    /// `DUR` frames say; the writer shows readers nothing above it.
    pub master_durable: DurableBound,
    /// On a slave: the id of the last record in its log, shown to readers
    /// or still held back under `master_durable`. The receiver acknowledges
    /// it and resumes after it.
    pub received: AtomicU64,
}

/// The highest event id a slave's master has durably, when its master
/// streams records before they are durable (an early stream); no bound
/// otherwise. Written by the receiver, read by the writer at each commit.
#[derive(Debug)]
pub struct DurableBound(AtomicU64);

impl Default for DurableBound {
    fn default() -> Self {
        DurableBound(AtomicU64::new(u64::MAX))
    }
}

impl DurableBound {
    /// The bound; `u64::MAX` when there is none.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// An early stream starts: nothing above `id` until its `DUR` frames.
    pub fn start_at(&self, id: u64) {
        self.0.store(id, Ordering::Release);
    }

    /// A `DUR` frame: the bound moves up to `id` (never down).
    pub fn raise(&self, id: u64) {
        self.0.fetch_max(id, Ordering::AcqRel);
    }

    /// A stream of durable records only (or none, once promoted).
    pub fn clear(&self) {
        self.0.store(u64::MAX, Ordering::Release);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReplState {
    /// A sender registers its slave (`node` 0: one that does not name
    /// itself); the returned id names the entry later. An entry of the same
    /// node, a session the slave has left, is removed and its sender kicked.
    pub fn add_slave(&self, addr: &str, node: u64, kick: Option<Kick>) -> u64 {
        let id = self.next_slave.fetch_add(1, Ordering::Relaxed) + 1;
        let mut stale = Vec::new();
        {
            let mut slaves = lock(&self.slaves);
            if node != 0 {
                let (old, keep) = std::mem::take(&mut *slaves)
                    .into_iter()
                    .partition(|e| e.info.node == node);
                *slaves = keep;
                stale = old;
            }
            slaves.push(Entry {
                info: SlaveInfo {
                    id,
                    node,
                    addr: addr.to_string(),
                    acked_id: 0,
                    acked_pos: 0,
                    state: LinkState::Connecting,
                },
                kick,
            });
        }
        // Outside the lock: a kick shuts a socket down. A left session no
        // longer counts towards the write quorum.
        for e in stale {
            self.quorum.leave(e.info.id);
            if let Some(kick) = e.kick {
                kick();
            }
        }
        self.quorum.join(id);
        id
    }

    pub fn update_slave(&self, id: u64, f: impl FnOnce(&mut SlaveInfo)) {
        if let Some(e) = lock(&self.slaves).iter_mut().find(|e| e.info.id == id) {
            f(&mut e.info);
        }
    }

    pub fn remove_slave(&self, id: u64) {
        lock(&self.slaves).retain(|e| e.info.id != id);
        self.quorum.leave(id);
    }

    pub fn slaves(&self) -> Vec<SlaveInfo> {
        lock(&self.slaves).iter().map(|e| e.info.clone()).collect()
    }

    /// The lowest log position a connected slave still needs.
    pub fn lowest_acked_pos(&self) -> Option<u64> {
        lock(&self.slaves).iter().map(|e| e.info.acked_pos).min()
    }

    /// A slave acknowledged `id`: the watermark moves up (never down).
    pub fn note_ack(&self, id: u64) {
        let mut a = lock(&self.acked);
        if id > *a {
            *a = id;
            self.acked_moved.notify_all();
        }
    }

    pub fn acked(&self) -> u64 {
        *lock(&self.acked)
    }

    /// Waits until some slave has acknowledged `id` or `deadline` passes;
    /// true when it has.
    pub fn wait_acked(&self, id: u64, deadline: Instant) -> bool {
        let mut a = lock(&self.acked);
        loop {
            if *a >= id {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            a = match self.acked_moved.wait_timeout(a, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    pub fn history(&self) -> u64 {
        self.history.load(Ordering::Relaxed)
    }

    pub fn sync_in_force(&self) -> bool {
        self.sync_active.load(Ordering::Relaxed)
    }

    pub fn master(&self) -> MasterView {
        lock(&self.master).clone()
    }

    pub fn update_master(&self, f: impl FnOnce(&mut MasterView)) {
        f(&mut lock(&self.master));
    }
}

// Read-only views for STATS and SLAVES.
impl ReplState {
    pub fn slave_count(&self) -> usize {
        lock(&self.slaves).len()
    }

    /// The highest event id any connected slave has acknowledged; 0 if none.
    pub fn highest_acked_id(&self) -> u64 {
        lock(&self.slaves)
            .iter()
            .map(|e| e.info.acked_id)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaves_come_and_go_and_hold_the_lowest_position() {
        let r = ReplState::default();
        let a = r.add_slave("127.0.0.1:1", 0, None);
        let b = r.add_slave("127.0.0.1:2", 0, None);
        r.update_slave(a, |s| s.acked_pos = 500);
        r.update_slave(b, |s| s.acked_pos = 300);
        assert_eq!(r.lowest_acked_pos(), Some(300));
        r.remove_slave(b);
        assert_eq!(r.lowest_acked_pos(), Some(500));
        assert_eq!(r.slaves().len(), 1);
        r.remove_slave(a);
        assert_eq!(r.lowest_acked_pos(), None);
    }
}

#[cfg(test)]
mod node_tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_new_session_of_a_node_replaces_the_old_one_and_kicks_it() {
        let r = ReplState::default();
        let kicked = Arc::new(AtomicU64::new(0));
        let kick = |n: u64| -> Option<Kick> {
            let k = Arc::clone(&kicked);
            Some(Box::new(move || {
                k.fetch_add(n, Ordering::Relaxed);
            }))
        };
        let old = r.add_slave("127.0.0.1:1", 0xa, kick(1));
        let other = r.add_slave("127.0.0.1:2", 0xb, kick(10));
        let anon = r.add_slave("127.0.0.1:3", 0, kick(100));
        assert_eq!(r.slaves()[0].state, LinkState::Connecting);
        let new = r.add_slave("127.0.0.1:4", 0xa, kick(1000));
        assert_eq!(kicked.load(Ordering::Relaxed), 1, "only the old session");
        let ids: Vec<u64> = r.slaves().iter().map(|s| s.id).collect();
        assert_eq!(ids, [other, anon, new]);
        // The old sender unregisters when it ends: the new entry stays.
        r.remove_slave(old);
        assert_eq!(r.slave_count(), 3);
        // Slaves that do not name themselves are never merged.
        r.add_slave("127.0.0.1:3", 0, None);
        assert_eq!((r.slave_count(), kicked.load(Ordering::Relaxed)), (4, 1));
    }

    #[test]
    fn the_slave_lag_follows_the_frames() {
        let t0 = Instant::now();
        let mut m = MasterView::default();
        assert_eq!(m.lag(0, t0), Lag::default());
        // A frame: the master is at 100, sent when the oldest record this
        // slave lacks was 300 ms old.
        m.heard(100, 10_300, t0);
        m.missing_ts_ms = 10_000;
        let later = t0 + Duration::from_millis(200);
        assert_eq!(
            m.lag(60, later),
            Lag {
                events: 40,
                ms: 500
            }
        );
        // Everything applied: caught up whatever the times say.
        assert_eq!(m.lag(100, later), Lag::default());
        // Lacking only records the master had not made durable: 0 ms.
        m.missing_ts_ms = 0;
        assert_eq!(m.lag(60, later), Lag { events: 40, ms: 0 });
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn read_only_views() {
        let r = ReplState::default();
        assert!(!r.sync_in_force());
        assert_eq!((r.slave_count(), r.highest_acked_id()), (0, 0));
        let a = r.add_slave("127.0.0.1:1", 0, None);
        let b = r.add_slave("127.0.0.1:2", 0, None);
        r.update_slave(a, |s| s.acked_id = 7);
        r.update_slave(b, |s| s.acked_id = 9);
        assert_eq!((r.slave_count(), r.highest_acked_id()), (2, 9));
        r.sync_active.store(true, Ordering::Relaxed);
        assert!(r.sync_in_force());
    }
}
