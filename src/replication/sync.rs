//! Semi-sync: the `repl-sync` thread holds each batch's answers
//! until a slave has acknowledged the batch's records durably.
//!
//! The writer does not wait: after a commit it hands the batch's answers
//! here (a second watermark beside its durable log tail) and goes on
//! appending, so one acknowledgement releases every batch it covers. If no
//! slave acknowledges a batch within `replication.syncTimeoutMs`, the
//! server falls back to async (a warning, STATS `repl_sync_fallbacks`) and
//! releases everything held; a sender puts semi-sync back in force once its
//! slave has caught up. Answers leave in the order they came, so each
//! connection gets its replies in request order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::warn;

use crate::broker::Broker;
use crate::storage::reply::{HeldReplies, Releaser};

/// Most time between looks at the queue while a batch waits.
const STEP: Duration = Duration::from_millis(50);

/// The thread body: runs until the writer drops its end of the channel.
pub fn run(rx: Receiver<HeldReplies>, broker: Arc<Broker>) {
    let repl = &broker.repl;
    let timeout = Duration::from_millis(broker.config.replication.sync_timeout_ms);
    let mut queue: VecDeque<HeldReplies> = VecDeque::new();
    let mut releaser = Releaser::default();
    loop {
        releaser.retry_blocked();
        while let Ok(h) = rx.try_recv() {
            queue.push_back(h);
        }
        let Some(front) = queue.front() else {
            match rx.recv_timeout(releaser.patience(Duration::from_secs(1))) {
                Ok(h) => queue.push_back(h),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            continue;
        };
        if front.needs_id == 0 || !repl.sync_in_force() || repl.acked() >= front.needs_id {
            if let Some(h) = queue.pop_front() {
                releaser.release(h.replies);
            }
            continue;
        }
        let deadline = front.committed + timeout;
        let step = (std::time::Instant::now() + releaser.patience(STEP)).min(deadline);
        if repl.wait_acked(front.needs_id, step) {
            continue;
        }
        if std::time::Instant::now() >= deadline {
            repl.sync_active.store(false, Ordering::Relaxed);
            repl.sync_fallbacks.fetch_add(1, Ordering::Relaxed);
            warn!(
                "semi-sync: no slave acknowledged event id {} within {} ms; falling back to \
                 async until a slave has caught up",
                front.needs_id,
                timeout.as_millis()
            );
            for h in queue.drain(..) {
                releaser.release(h.replies);
            }
        }
    }
}
