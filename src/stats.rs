//! Server-wide counters shown by STATS, and the ordered list of STATS pairs.
//! Plain atomics: any thread may bump them without a lock.
//!
//! The pairs are built here so their names and order live beside the
//! counters; the connection thread that answers STATS only encodes them. What
//! STATS shows besides the counters (role, topics, segments, …) belongs to
//! the broker, which owns this `Stats`, so the caller passes it in as
//! [`Gauges`] rather than this module reading the broker (that would be an
//! import cycle).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::replication::Role;

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
    /// Set when an fsync failed: the writer refuses further writes.
    pub writer_poisoned: AtomicBool,
    /// The connection cap in force (config and descriptor budget).
    pub connections_max: AtomicU64,
    /// Messages a consumer group gave up on after `maxDeliver` failed
    /// deliveries: moved to a dead-letter topic, or skipped without one.
    pub dead_lettered: AtomicU64,
    /// Records a slave moved aside because its new master never had them.
    pub repl_diverged_records: AtomicU64,
}

/// The broker-side values STATS shows, read by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub role: Role,
    pub last_event_id: u64,
    pub topics: u64,
    pub uptime_ms: u64,
    pub segments: u64,
    /// Index files open now (bounded; see `storage::handles`).
    pub index_files_open: u64,
    /// Consumer groups of all topics.
    pub groups: u64,
}

/// The value of one `STAT <name> <value>` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatValue {
    Text(&'static str),
    Num(u64),
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

    /// The STATS pairs in the order they are sent.
    pub fn report(&self, g: &Gauges) -> Vec<(&'static str, StatValue)> {
        use StatValue::{Num, Text};
        let mut pairs = vec![
            ("role", Text(g.role.as_str())),
            ("last_event_id", Num(g.last_event_id)),
            ("topics", Num(g.topics)),
            ("connections", Num(Stats::get(&self.connections))),
            ("uptime_ms", Num(g.uptime_ms)),
            ("disk_bytes", Num(Stats::get(&self.disk_bytes))),
            (
                "messages_published",
                Num(Stats::get(&self.messages_published)),
            ),
            ("subscribers", Num(Stats::get(&self.subscribers))),
            ("segments", Num(g.segments)),
            ("commits", Num(Stats::get(&self.commits))),
            ("fsyncs", Num(Stats::get(&self.fsyncs))),
            ("rejected_busy", Num(Stats::get(&self.rejected_busy))),
            ("delayed_pending", Num(Stats::get(&self.delayed_pending))),
            ("delayed_dropped", Num(Stats::get(&self.delayed_dropped))),
            ("topics_expired", Num(Stats::get(&self.topics_expired))),
            (
                "writer_poisoned",
                Num(u64::from(self.writer_poisoned.load(Ordering::Relaxed))),
            ),
            ("connections_max", Num(Stats::get(&self.connections_max))),
            ("index_files_open", Num(g.index_files_open)),
            ("groups", Num(g.groups)),
            ("dead_lettered", Num(Stats::get(&self.dead_lettered))),
        ];
        if g.role == Role::Slave {
            // Replication is not implemented yet; the names are part of the protocol.
            pairs.push(("master_event_id", Num(0)));
            pairs.push(("replication_lag_ms", Num(0)));
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_order_and_values() {
        let s = Stats::default();
        Stats::add(&s.connections, 2);
        Stats::add(&s.commits, 5);
        s.writer_poisoned.store(true, Ordering::Relaxed);
        let g = Gauges {
            role: Role::Master,
            last_event_id: 9,
            topics: 3,
            uptime_ms: 1234,
            segments: 1,
            index_files_open: 4,
            groups: 6,
        };
        let pairs = s.report(&g);
        let names: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "role",
                "last_event_id",
                "topics",
                "connections",
                "uptime_ms",
                "disk_bytes",
                "messages_published",
                "subscribers",
                "segments",
                "commits",
                "fsyncs",
                "rejected_busy",
                "delayed_pending",
                "delayed_dropped",
                "topics_expired",
                "writer_poisoned",
                "connections_max",
                "index_files_open",
                "groups",
                "dead_lettered",
            ]
        );
        assert_eq!(pairs[0].1, StatValue::Text("master"));
        assert_eq!(pairs[1].1, StatValue::Num(9));
        assert_eq!(pairs[3].1, StatValue::Num(2));
        assert_eq!(pairs[4].1, StatValue::Num(1234));
        assert_eq!(pairs[9].1, StatValue::Num(5));
        assert_eq!(pairs[15].1, StatValue::Num(1));
        assert_eq!(pairs[17].1, StatValue::Num(4));
        Stats::add(&s.dead_lettered, 3);
        let pairs = s.report(&g);
        assert_eq!(pairs[18], ("groups", StatValue::Num(6)));
        assert_eq!(pairs[19], ("dead_lettered", StatValue::Num(3)));

        let slave = s.report(&Gauges {
            role: Role::Slave,
            ..g
        });
        assert_eq!(slave[0].1, StatValue::Text("slave"));
        assert_eq!(slave.len(), 22);
        assert_eq!(slave[20], ("master_event_id", StatValue::Num(0)));
        assert_eq!(slave[21], ("replication_lag_ms", StatValue::Num(0)));
    }
}
