//! The durable log tail: how far the log is durable under the configured
//! fsync policy, published by the writer after each sync.
//!
//! Under `fsync: always` and `interval` the tail moves when an fsync
//! returns; under `never` it moves at each commit (the OS decides the rest).
//! Readers that must only ever hand out durable records — the replication
//! senders — wait on it ([`DurableTail::wait_beyond`]) and read the log up
//! to `pos`, never past it. One mutex and one condvar; the writer holds the
//! lock only to store a few numbers.
//!
//! Beside it the *written* tail: how far the log is written (in the page
//! cache, not yet fsynced). A master in semi-sync publishes it before its
//! fsync, so the senders of early streams ([`DurableTail::wait_early`])
//! send a batch while it is being fsynced; it is never behind the durable
//! tail, and a cut moves both back.
//!
//! Under `replication.minSlaves` the writer publishes a batch's tail before
//! the slaves have acknowledged it, and undoes the batch when they do not
//! ([`DurableTail::cut_back`]): the tail then moves back, and the count of
//! such cuts tells a sender that records it read may be gone
//! ([`DurableTail::kept_since`]).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many recent cuts are remembered; a reader that missed more than
/// this many since it last looked is told its records may be gone.
const CUTS_KEPT: usize = 16;

/// A durable point of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailPos {
    /// Global log position up to which every record is durable.
    pub pos: u64,
    /// Event id of the last record before `pos`.
    pub last_id: u64,
}

#[derive(Debug, Default)]
struct At {
    tail: TailPos,
    /// Written, perhaps not durable yet; never behind `tail`.
    written: TailPos,
    /// The last id the writer will not undo: durable and, under the write
    /// quorum, acknowledged by enough slaves. What an early stream's `DUR`
    /// frames say.
    committed: u64,
    /// Cuts so far.
    cuts: u64,
    /// The position of each recent cut, oldest first: (cut number, position).
    recent: VecDeque<(u64, u64)>,
}

#[derive(Debug, Default)]
pub struct DurableTail {
    at: Mutex<At>,
    moved: Condvar,
}

impl DurableTail {
    fn lock(&self) -> MutexGuard<'_, At> {
        self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self) -> TailPos {
        self.lock().tail
    }

    /// The tail and the number of cuts so far, read together.
    pub fn get_with_cuts(&self) -> (TailPos, u64) {
        let at = self.lock();
        (at.tail, at.cuts)
    }

    /// The number of cuts so far: a reader that saw another number before
    /// reading the log may have read records that are gone.
    pub fn cuts(&self) -> u64 {
        self.lock().cuts
    }

    /// Writer only, before it cuts the log back: the records from `to.pos`
    /// on are being undone. Called before the file changes, so a reader
    /// that sees the same cut count after its read read the old bytes.
    pub fn cut_back(&self, to: TailPos) {
        let mut at = self.lock();
        at.cuts += 1;
        let n = at.cuts;
        at.recent.push_back((n, to.pos));
        if at.recent.len() > CUTS_KEPT {
            at.recent.pop_front();
        }
        if to.pos < at.tail.pos {
            at.tail = to;
        }
        if to.pos < at.written.pos {
            at.written = to;
        }
        self.moved.notify_all();
    }

    /// Whether a reader that had read the log up to `pos` when it saw
    /// `seen` cuts still holds only records that exist: every cut since
    /// then was at or after `pos` (false when they are not all remembered).
    pub fn kept_since(&self, seen: u64, pos: u64) -> bool {
        let at = self.lock();
        let missed = at.cuts.saturating_sub(seen);
        let known = at.recent.iter().filter(|(n, _)| *n > seen);
        known.clone().count() as u64 == missed && known.into_iter().all(|&(_, p)| p >= pos)
    }

    /// The log is durable up to `at`, nothing said committed (the tests'
    /// shorthand).
    #[cfg(test)]
    pub fn publish(&self, at: TailPos) {
        self.publish_and_commit(at, None);
    }

    /// Writer only: the log is durable up to `at` and the records up to
    /// `committed` will not be undone (`None`: not said yet, the write
    /// quorum's wait); one lock and one wake-up for both.
    pub fn publish_and_commit(&self, at: TailPos, committed: Option<u64>) {
        let mut cur = self.lock();
        let mut moved = false;
        if at.pos > cur.tail.pos || at.last_id > cur.tail.last_id {
            cur.tail = at;
            if at.pos >= cur.written.pos {
                cur.written = at;
            }
            moved = true;
        }
        if let Some(id) = committed.filter(|&id| id > cur.committed) {
            cur.committed = id;
            moved = true;
        }
        if moved {
            self.moved.notify_all();
        }
    }

    /// The last id the writer will not undo ([`DurableTail::publish_and_commit`]) and
    /// the number of cuts so far, read together: a
    /// sender that saw no new cut knows the id is not past records undone
    /// since it last looked.
    pub fn committed_with_cuts(&self) -> (u64, u64) {
        let at = self.lock();
        (at.committed, at.cuts)
    }

    /// Writer only: the log is written (not yet durable) up to `at`; wakes
    /// every waiter.
    pub fn publish_written(&self, at: TailPos) {
        let mut cur = self.lock();
        if at.pos > cur.written.pos {
            cur.written = at;
            self.moved.notify_all();
        }
    }

    /// The written tail and the number of cuts so far, read together.
    pub fn written_with_cuts(&self) -> (TailPos, u64) {
        let at = self.lock();
        (at.written, at.cuts)
    }

    /// Waits until the tail is past log position `pos`, a cut happened, or
    /// `timeout` passes; returns the tail seen last.
    pub fn wait_beyond(&self, pos: u64, timeout: Duration) -> TailPos {
        self.wait_for(timeout, |at| at.tail.pos > pos).tail
    }

    /// For a sender of an early stream that has sent the log up to `pos`
    /// and said it committed up to `said`: waits until there is more to
    /// send or say (the written tail past `pos`, the committed id past
    /// `said`), a cut happened, or `timeout` passes.
    pub fn wait_early(&self, pos: u64, said: u64, timeout: Duration) {
        drop(self.wait_for(timeout, |at| at.written.pos > pos || at.committed > said));
    }

    fn wait_for(&self, timeout: Duration, done: impl Fn(&At) -> bool) -> MutexGuard<'_, At> {
        let deadline = Instant::now() + timeout;
        let mut cur = self.lock();
        let cuts = cur.cuts;
        loop {
            if done(&cur) || cur.cuts != cuts {
                return cur;
            }
            let now = Instant::now();
            if now >= deadline {
                return cur;
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

    #[test]
    fn a_cut_moves_the_tail_back_and_tells_readers_past_it() {
        let tail = DurableTail::default();
        tail.publish(TailPos {
            pos: 300,
            last_id: 9,
        });
        let (_, seen) = tail.get_with_cuts();
        tail.cut_back(TailPos {
            pos: 200,
            last_id: 6,
        });
        assert_eq!(
            tail.get_with_cuts(),
            (
                TailPos {
                    pos: 200,
                    last_id: 6
                },
                seen + 1
            )
        );
        assert!(tail.kept_since(seen, 150), "read only before the cut");
        assert!(tail.kept_since(seen, 200), "read exactly up to it");
        assert!(!tail.kept_since(seen, 250), "read records that are gone");
        assert!(
            tail.kept_since(seen + 1, 250),
            "nothing cut since it looked"
        );
        // Writing goes on from the cut.
        tail.publish(TailPos {
            pos: 260,
            last_id: 10,
        });
        assert_eq!(tail.get().pos, 260);
    }

    #[test]
    fn the_written_tail_runs_ahead_of_the_durable_one_and_a_cut_takes_both_back() {
        let tail = Arc::new(DurableTail::default());
        let at = |pos, last_id| TailPos { pos, last_id };
        tail.publish(at(100, 4));
        assert_eq!(tail.written_with_cuts().0, at(100, 4), "durable is written");
        let t2 = Arc::clone(&tail);
        let waiter = std::thread::spawn(move || {
            t2.wait_early(100, 4, Duration::from_secs(10));
            t2.written_with_cuts().0
        });
        tail.publish_written(at(180, 7));
        assert_eq!(waiter.join().unwrap_or_default(), at(180, 7));
        assert_eq!(tail.get(), at(100, 4), "not durable yet");
        assert_eq!(tail.wait_beyond(100, Duration::from_millis(1)), at(100, 4));
        // A sender that sent everything written wakes when it is committed
        // (durable alone, during a write quorum's wait, is not enough).
        tail.publish(at(180, 7));
        assert_eq!(tail.committed_with_cuts().0, 0);
        let t2 = Arc::clone(&tail);
        let waiter = std::thread::spawn(move || {
            t2.wait_early(180, 4, Duration::from_secs(10));
            t2.committed_with_cuts().0
        });
        tail.publish_and_commit(at(180, 7), Some(7));
        assert_eq!(waiter.join().unwrap_or_default(), 7);
        tail.publish_written(at(300, 9));
        // The next batch's fsync failed: it is cut.
        let (_, seen) = tail.written_with_cuts();
        tail.cut_back(at(180, 7));
        assert_eq!(tail.written_with_cuts(), (at(180, 7), seen + 1));
        assert_eq!(tail.get(), at(180, 7), "the durable tail stays");
        assert!(
            !tail.kept_since(seen, 300),
            "a sender that sent it must stop"
        );
        assert!(tail.kept_since(seen, 180), "one that did not goes on");
        // Durable past the written tail: written follows.
        tail.publish(at(250, 8));
        assert_eq!(tail.written_with_cuts().0, at(250, 8));
    }

    #[test]
    fn a_reader_that_missed_more_cuts_than_are_kept_must_start_over() {
        let tail = DurableTail::default();
        for i in 0..=CUTS_KEPT as u64 {
            tail.cut_back(TailPos {
                pos: 1000 + i,
                last_id: 0,
            });
        }
        assert!(!tail.kept_since(0, 1), "the first cut is forgotten");
        assert!(tail.kept_since(1, 1000), "the later ones are known");
    }

    #[test]
    fn a_waiter_sees_the_tail_after_a_cut() {
        let tail = Arc::new(DurableTail::default());
        tail.publish(TailPos {
            pos: 50,
            last_id: 1,
        });
        let seen = tail.cuts();
        let t2 = Arc::clone(&tail);
        let waiter = std::thread::spawn(move || {
            // Bounded: 1000 waits of at most 10 ms each.
            for _ in 0..1000 {
                t2.wait_beyond(50, Duration::from_millis(10));
                if t2.cuts() != seen {
                    return t2.get().pos;
                }
            }
            u64::MAX
        });
        tail.cut_back(TailPos {
            pos: 40,
            last_id: 0,
        });
        assert_eq!(waiter.join().ok(), Some(40));
    }
}
