//! The durable log tail: how far the log is durable under the configured
//! fsync policy, published by the writer after each sync.
//!
//! Under `fsync: always` and `interval` the tail moves when an fsync
//! returns; under `never` it moves at each commit (the OS decides the rest).
//! Readers that must only ever hand out durable records — the replication
//! senders — wait on it ([`DurableTail::wait_beyond`]) and read the log up
//! to `pos`, never past it. One mutex and one condvar; the writer holds the
//! lock only to store two numbers.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A durable point of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailPos {
    /// Global log position up to which every record is durable.
    pub pos: u64,
    /// Event id of the last record before `pos`.
    pub last_id: u64,
}

#[derive(Debug, Default)]
pub struct DurableTail {
    at: Mutex<TailPos>,
    moved: Condvar,
}

impl DurableTail {
    fn lock(&self) -> MutexGuard<'_, TailPos> {
        self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self) -> TailPos {
        *self.lock()
    }

    /// Writer only: the log is durable up to `at`; wakes every waiter.
    pub fn publish(&self, at: TailPos) {
        let mut cur = self.lock();
        if at.pos > cur.pos || at.last_id > cur.last_id {
            *cur = at;
            self.moved.notify_all();
        }
    }

    /// Waits until the tail is past log position `pos` or `timeout` passes;
    /// returns the tail seen last.
    pub fn wait_beyond(&self, pos: u64, timeout: Duration) -> TailPos {
        let deadline = Instant::now() + timeout;
        let mut cur = self.lock();
        loop {
            if cur.pos > pos {
                return *cur;
            }
            let now = Instant::now();
            if now >= deadline {
                return *cur;
            }
            cur = match self.moved.wait_timeout(cur, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_wakes_when_the_tail_moves_past_it() {
        let tail = Arc::new(DurableTail::default());
        let t2 = Arc::clone(&tail);
        let waiter = std::thread::spawn(move || t2.wait_beyond(100, Duration::from_secs(10)));
        tail.publish(TailPos {
            pos: 50,
            last_id: 1,
        });
        tail.publish(TailPos {
            pos: 150,
            last_id: 3,
        });
        let seen = waiter.join().unwrap_or_default();
        assert_eq!(
            seen,
            TailPos {
                pos: 150,
                last_id: 3
            }
        );
    }

    #[test]
    fn the_tail_never_goes_back_and_a_wait_times_out() {
        let tail = DurableTail::default();
        tail.publish(TailPos {
            pos: 10,
            last_id: 2,
        });
        tail.publish(TailPos { pos: 5, last_id: 1 });
        assert_eq!(tail.get().pos, 10);
        assert_eq!(tail.wait_beyond(10, Duration::from_millis(1)).pos, 10);
    }
}
