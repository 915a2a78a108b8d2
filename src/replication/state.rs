//! What the replication threads share with the rest of the server: the
//! master's view of its slaves, a slave's view of its master, and the few
//! numbers the writer publishes for them (history, epoch, id lease).
//!
//! Held by the broker. Senders (`repl-<peer>`) and the receiver update it;
//! STATS, SLAVES and retention read it. Atomics for single numbers, one
//! mutex for each list; never held across I/O.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::quorum::AckQuorum;

/// How a slave's replication is going (`repl_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
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
    pub addr: String,
    /// The last event id it has acknowledged durably.
    pub acked_id: u64,
    /// Log position up to which it has acknowledged (retention keeps it).
    pub acked_pos: u64,
    /// When the newest record it acknowledged was written here (Unix ms).
    pub acked_ts_ms: u64,
    pub state: LinkState,
}

/// A slave's view of its master.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterView {
    pub addr: String,
    pub state: LinkState,
    /// The master's last event id, from its latest heartbeat.
    pub master_event_id: u64,
    /// Timestamp (master clock, Unix ms) of the newest record applied here.
    pub applied_ts_ms: u64,
}

#[derive(Debug, Default)]
pub struct ReplState {
    /// The data directory's history id (0: a slave not synced yet).
    pub history: AtomicU64,
    pub epoch: AtomicU64,
    /// The writer's id lease: a slave keeps it for a PROMOTE.
    pub lease: AtomicU64,
    slaves: Mutex<Vec<SlaveInfo>>,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReplState {
    /// A sender registers its slave; the returned id names it later.
    pub fn add_slave(&self, addr: &str) -> u64 {
        let id = self.next_slave.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.slaves).push(SlaveInfo {
            id,
            addr: addr.to_string(),
            acked_id: 0,
            acked_pos: 0,
            acked_ts_ms: 0,
            state: LinkState::Syncing,
        });
        self.quorum.join(id);
        id
    }

    pub fn update_slave(&self, id: u64, f: impl FnOnce(&mut SlaveInfo)) {
        if let Some(s) = lock(&self.slaves).iter_mut().find(|s| s.id == id) {
            f(s);
        }
    }

    pub fn remove_slave(&self, id: u64) {
        lock(&self.slaves).retain(|s| s.id != id);
        self.quorum.leave(id);
    }

    pub fn slaves(&self) -> Vec<SlaveInfo> {
        lock(&self.slaves).clone()
    }

    /// The lowest log position a connected slave still needs.
    pub fn lowest_acked_pos(&self) -> Option<u64> {
        lock(&self.slaves).iter().map(|s| s.acked_pos).min()
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
            .map(|s| s.acked_id)
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
        let a = r.add_slave("127.0.0.1:1");
        let b = r.add_slave("127.0.0.1:2");
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
mod view_tests {
    use super::*;

    #[test]
    fn read_only_views() {
        let r = ReplState::default();
        assert!(!r.sync_in_force());
        assert_eq!((r.slave_count(), r.highest_acked_id()), (0, 0));
        let a = r.add_slave("127.0.0.1:1");
        let b = r.add_slave("127.0.0.1:2");
        r.update_slave(a, |s| s.acked_id = 7);
        r.update_slave(b, |s| s.acked_id = 9);
        assert_eq!((r.slave_count(), r.highest_acked_id()), (2, 9));
        r.sync_active.store(true, Ordering::Relaxed);
        assert!(r.sync_in_force());
    }
}
