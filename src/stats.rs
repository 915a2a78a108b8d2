//! Server-wide counters shown by STATS. Plain atomics: any thread may bump
//! them without a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub subscribers: AtomicU64,
    pub messages_published: AtomicU64,
    pub commits: AtomicU64,
    pub fsyncs: AtomicU64,
    pub disk_bytes: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub delayed_pending: AtomicU64,
    /// Delayed messages dropped because their topic went away first.
    pub delayed_dropped: AtomicU64,
    pub topics_expired: AtomicU64,
    /// Set when a write or fsync failed: the writer refuses further writes.
    pub writer_poisoned: AtomicBool,
}

impl Stats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Ordering::Relaxed);
    }
}
