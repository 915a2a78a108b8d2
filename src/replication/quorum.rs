//! The write quorum's view of the slaves (`replication.minSlaves`): which
//! connected slave has acknowledged which event id, and which of them fell
//! behind a write that had to be undone.
//!
//! Owns [`AckQuorum`], held by the broker's replication state. Each
//! sender's connection is one member: it joins when the sender registers
//! its slave and leaves when the sender ends (`repl-<peer>`); the ACK reader
//! (`repl-ack-<peer>`) records every acknowledgement; the writer thread asks
//! whether enough members are caught up before it writes a batch
//! ([`AckQuorum::ready`]) and, once the batch is durable here, waits until
//! enough members acknowledged its last id ([`AckQuorum::wait`]). One mutex
//! and one condvar over a list of a few entries; never held across I/O.
//!
//! Members are connections, not machines: a slave acknowledges only on its
//! one live connection, so an old connection of the same slave can never
//! acknowledge a new write and count twice.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// One slave connection as the quorum sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    /// The sender's slave id (see `ReplState::add_slave`).
    id: u64,
    /// The highest event id it has acknowledged durably; `None` before its
    /// first acknowledgement (an empty slave acknowledges 0).
    acked: Option<u64>,
    /// It did not acknowledge a write in time: it counts as caught up again
    /// only once it acknowledges something new, so a frozen slave makes
    /// the writes after the first one fail at once instead of each waiting.
    behind: bool,
}

#[derive(Debug, Default)]
pub struct AckQuorum {
    members: Mutex<Vec<Member>>,
    moved: Condvar,
}

impl AckQuorum {
    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sender registered slave connection `id`; it has acknowledged nothing.
    pub fn join(&self, id: u64) {
        let mut m = self.lock();
        if !m.iter().any(|s| s.id == id) {
            m.push(Member {
                id,
                acked: None,
                behind: false,
            });
        }
    }

    /// The connection ended.
    pub fn leave(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
        self.moved.notify_all();
    }

    /// Connection `id`'s slave has every record up to `acked` durably.
    pub fn ack(&self, id: u64, acked: u64) {
        let mut m = self.lock();
        if let Some(s) = m.iter_mut().find(|s| s.id == id) {
            s.acked = Some(s.acked.map_or(acked, |a| a.max(acked)));
            s.behind = false;
            self.moved.notify_all();
        }
    }

    /// Whether at least `n` members are caught up: they acknowledged the
    /// master's last record, `last_record`, and did not fall behind since.
    pub fn ready(&self, n: usize, last_record: u64) -> bool {
        self.lock()
            .iter()
            .filter(|s| !s.behind && s.acked.is_some_and(|a| a >= last_record))
            .count()
            >= n
    }

    /// Waits until at least `n` members acknowledged `id` or `deadline`
    /// passes; true when they did.
    pub fn wait(&self, n: usize, id: u64, deadline: Instant) -> bool {
        let mut m = self.lock();
        loop {
            if m.iter()
                .filter(|s| s.acked.is_some_and(|a| a >= id))
                .count()
                >= n
            {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            m = match self.moved.wait_timeout(m, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// A write up to `id` ran out of time: every member that has not
    /// acknowledged it is behind until it acknowledges again.
    pub fn fell_behind(&self, id: u64) {
        for s in self
            .lock()
            .iter_mut()
            .filter(|s| s.acked.is_none_or(|a| a < id))
        {
            s.behind = true;
        }
    }

    /// Connected members (for tests and logs).
    pub fn members(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn a_member_counts_once_it_acknowledged_the_last_record() {
        let q = AckQuorum::default();
        assert!(q.ready(0, 10), "no quorum needed");
        assert!(!q.ready(1, 10), "nobody connected");
        q.join(1);
        assert!(!q.ready(1, 10), "connected but nothing acknowledged");
        assert!(!q.ready(1, 0), "not even on an empty master");
        q.ack(1, 9);
        assert!(!q.ready(1, 10));
        q.ack(1, 10);
        assert!(q.ready(1, 10));
        assert!(!q.ready(2, 10), "one member is not two");
        q.ack(1, 5);
        assert!(q.ready(1, 10), "an older ack never lowers it");
        q.leave(1);
        assert!(!q.ready(1, 10));
        assert_eq!(q.members(), 0);
        q.ack(1, 20);
        assert_eq!(q.members(), 0, "a left member does not come back by acking");
    }

    #[test]
    fn an_empty_slave_counts_once_it_acknowledged_0() {
        let q = AckQuorum::default();
        q.join(1);
        q.ack(1, 0);
        assert!(q.ready(1, 0));
        assert!(!q.ready(1, 1));
    }

    #[test]
    fn the_wait_needs_n_distinct_members() {
        let q = Arc::new(AckQuorum::default());
        q.join(1);
        q.join(2);
        q.join(2); // joined twice: still one member
        q.ack(1, 12);
        q.ack(1, 13);
        assert!(
            !q.wait(2, 12, soon(20)),
            "one member acked twice is not two"
        );
        let q2 = Arc::clone(&q);
        let waiter = std::thread::spawn(move || q2.wait(2, 12, soon(10_000)));
        q.ack(2, 12);
        assert_eq!(waiter.join().ok(), Some(true));
        assert!(q.wait(1, 13, soon(0)), "already there: no wait");
    }

    #[test]
    fn the_wait_runs_out_and_a_member_leaving_wakes_nobody_falsely() {
        let q = Arc::new(AckQuorum::default());
        q.join(1);
        q.ack(1, 4);
        let started = Instant::now();
        let q2 = Arc::clone(&q);
        let waiter = std::thread::spawn(move || q2.wait(1, 5, soon(150)));
        q.leave(1);
        assert_eq!(waiter.join().ok(), Some(false));
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn a_member_that_missed_a_write_is_behind_until_it_acks_again() {
        let q = AckQuorum::default();
        q.join(1);
        q.join(2);
        q.ack(1, 10);
        q.ack(2, 10);
        assert!(q.ready(2, 10));
        // A write of 11..=12 ran out: 1 had acked it, 2 had not.
        q.ack(1, 12);
        q.fell_behind(12);
        // The write was undone: the last record is 10 again.
        assert!(q.ready(1, 10), "member 1 acknowledged in time");
        assert!(!q.ready(2, 10), "member 2 is behind though it has 10");
        q.ack(2, 10);
        assert!(q.ready(2, 10), "any acknowledgement brings it back");
    }
}
