//! Timer threads: topic lifetimes (`lifetime`), delayed-message firing
//! (`delay`) and log retention (`retention`).
//!
//! None of them touches a file: each asks the persistence thread to do the
//! work through the same bounded channel as the connections, so the log
//! stays the single source of truth and recovery replays what they did.
//!
//! The lifetime and delay threads each keep a [`Schedule`] (a min-heap of
//! due times, a few words per entry — payloads stay on disk) and sleep on
//! their channel until the earliest due time; the writer sends them every
//! new expiry or delayed message after it commits, which wakes them early.
//! The time logic is in pure functions that take `now`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, warn};

use crate::broker::Broker;
use crate::role::Role;
use crate::storage::log::record::DeleteReason;
use crate::storage::now_ms;
use crate::storage::ops::{Expiry, WriteError, WriteOp, WriteResult};
use crate::writer_handle::CallError;

/// Most delayed messages fired by one write request.
const FIRE_BATCH: usize = 1000;
/// How long a timer waits before asking again after a transient failure.
const RETRY_MS: u64 = 1000;

/// Items ordered by due time (Unix ms), earliest first; ties by item.
#[derive(Debug)]
pub struct Schedule<T: Ord> {
    heap: BinaryHeap<Reverse<(u64, T)>>,
}

impl<T: Ord> Default for Schedule<T> {
    fn default() -> Self {
        Schedule {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> Schedule<T> {
    pub fn push(&mut self, due_ms: u64, item: T) {
        self.heap.push(Reverse((due_ms, item)));
    }

    /// Removes and returns up to `max` items due at `now_ms`, in due order.
    pub fn pop_due(&mut self, now_ms: u64, max: usize) -> Vec<T> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.heap.peek() {
                Some(Reverse((due, _))) if *due <= now_ms => {}
                _ => break,
            }
            if let Some(Reverse((_, item))) = self.heap.pop() {
                out.push(item);
            }
        }
        out
    }

    /// How long to sleep at `now_ms` before the next item is due; `None`
    /// when nothing is scheduled.
    pub fn wait(&self, now_ms: u64) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((due, _))| Duration::from_millis(due.saturating_sub(now_ms)))
    }
}

/// Sends one request to the writer and waits for its result. `None` when
/// the writer is gone (shutdown): the timer thread should end.
fn ask_writer(broker: &Broker, op: WriteOp) -> Option<WriteResult> {
    // A timer has all the time in the world; only shutdown ends the wait.
    match broker.writer.call_within(op, Duration::from_secs(3600)) {
        Ok(ok) => Some(Ok(ok)),
        Err(CallError::Write(e)) => Some(Err(e)),
        Err(CallError::Busy | CallError::Gone | CallError::Timeout) => None,
    }
}

/// What a timer's work on its due items came to.
enum Fired<T> {
    Done,
    /// The writer failed for want of a resource (a full disk): try these
    /// again after [`RETRY_MS`]. Firing and expiry are idempotent.
    Retry(Vec<T>),
    /// The writer is gone.
    Stop,
}

/// Runs `fire` for due items, sleeping on `rx` (woken by new items) until
/// the next due time. Returns when the channel closes or `fire` says stop.
fn run_schedule<T: Ord>(rx: Receiver<(u64, T)>, mut fire: impl FnMut(Vec<T>) -> Fired<T>) {
    let mut sched = Schedule::default();
    loop {
        let now = now_ms();
        let due = sched.pop_due(now, FIRE_BATCH);
        if !due.is_empty() {
            match fire(due) {
                Fired::Done => {}
                Fired::Retry(items) => {
                    for item in items {
                        sched.push(now + RETRY_MS, item);
                    }
                }
                Fired::Stop => return,
            }
            continue;
        }
        let got = match sched.wait(now) {
            Some(d) => rx.recv_timeout(d),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok((due_ms, item)) => {
                sched.push(due_ms, item);
                // Take everything queued before sleeping again.
                while let Ok((due_ms, item)) = rx.try_recv() {
                    sched.push(due_ms, item);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The `lifetime` thread: deletes topics whose life has ended.
pub fn run_lifetime(rx: Receiver<(u64, Expiry)>, broker: Arc<Broker>) {
    run_schedule(rx, |due| {
        if broker.role() == Role::Slave {
            // The master's DELETE records end topics on a slave; these
            // wait for a PROMOTE.
            return Fired::Retry(due);
        }
        let mut retry = Vec::new();
        for (topic, create_id) in due {
            debug!("topic {topic} (created as event {create_id}) expired");
            let op = WriteOp::Delete {
                topic: topic.clone(),
                reason: DeleteReason::Expired,
                create_id: Some(create_id),
            };
            match ask_writer(&broker, op) {
                None => return Fired::Stop,
                // Not done: a full disk, or too few slaves (minSlaves).
                Some(Err(e @ (WriteError::Storage(_) | WriteError::NoSlave(_)))) => {
                    warn!("expiring topic {topic} failed, retrying: {e}");
                    retry.push((topic, create_id));
                }
                // Deleted already, or done.
                Some(_) => {}
            }
        }
        if retry.is_empty() {
            Fired::Done
        } else {
            Fired::Retry(retry)
        }
    });
}

/// The `delay` thread: fires delayed messages when they fall due.
pub fn run_delay(rx: Receiver<(u64, u64)>, broker: Arc<Broker>) {
    run_schedule(rx, |ids| {
        if broker.role() == Role::Slave {
            return Fired::Retry(ids); // the master's FIRE records do it
        }
        match ask_writer(&broker, WriteOp::Fire { ids: ids.clone() }) {
            // Ids fired before the failure are skipped the next time. Too
            // few slaves (minSlaves) undid the whole request: fired later.
            Some(Err(e @ (WriteError::Storage(_) | WriteError::NoSlave(_)))) => {
                warn!("firing delayed messages failed, retrying: {e}");
                Fired::Retry(ids)
            }
            Some(Err(e)) => {
                warn!("firing delayed messages failed: {e}");
                Fired::Done
            }
            Some(Ok(_)) => Fired::Done,
            None => Fired::Stop,
        }
    });
}

/// The `retention` thread: every `store.clearInterval` seconds asks the
/// writer to delete segments older than `store.maxDays`.
pub fn run_retention(broker: Arc<Broker>) {
    let every = Duration::from_secs(broker.config.store.clear_interval_secs);
    loop {
        // A plain periodic timer: nothing to wait for but time itself.
        std::thread::sleep(every);
        let op = WriteOp::Retention { now_ms: now_ms() };
        match ask_writer(&broker, op) {
            None => return,
            Some(Err(e)) => warn!("retention failed: {e}"),
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_due_order_only_when_due() {
        let mut s = Schedule::default();
        s.push(300, "c");
        s.push(100, "a");
        s.push(200, "b");
        s.push(100, "a2");
        assert_eq!(s.wait(50), Some(Duration::from_millis(50)));
        assert!(s.pop_due(99, 10).is_empty());
        assert_eq!(s.pop_due(200, 10), vec!["a", "a2", "b"]);
        assert_eq!(s.wait(250), Some(Duration::from_millis(50)));
        assert_eq!(s.wait(400), Some(Duration::ZERO), "overdue: no sleep");
        assert_eq!(s.pop_due(400, 10), vec!["c"]);
        assert_eq!(s.wait(400), None);
    }

    #[test]
    fn pop_due_respects_the_batch_bound() {
        let mut s = Schedule::default();
        for i in 0..10u64 {
            s.push(5, i);
        }
        assert_eq!(s.pop_due(5, 4), vec![0, 1, 2, 3]);
        assert_eq!(s.pop_due(5, 10), vec![4, 5, 6, 7, 8, 9], "the rest stays");
    }

    #[test]
    fn an_earlier_item_wakes_the_sleeper_early() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (fired_tx, fired_rx) = crossbeam_channel::unbounded();
        let t = std::thread::spawn(move || {
            run_schedule(rx, |items: Vec<u64>| match fired_tx.send(items) {
                Ok(()) => Fired::Done,
                Err(_) => Fired::Stop,
            })
        });
        let now = now_ms();
        tx.send((now + 3_600_000, 1)).expect("send"); // an hour away
        tx.send((now, 2)).expect("send"); // due now: must not wait an hour
        let got = fired_rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(got.ok(), Some(vec![2]));
        drop(tx);
        t.join().expect("thread ends when the channel closes");
    }
}
