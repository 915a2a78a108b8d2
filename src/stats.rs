//! Server-wide counters shown by STATS, and the ordered list of STATS pairs.
//! Plain atomics: any thread may bump them without a lock.
//!
//! The pairs are built here so their names and order live beside the
//! counters; the connection thread that answers STATS only encodes them. What
//! STATS shows besides the counters (role, topics, segments, …) belongs to
//! the broker, which owns this `Stats`, so the caller passes it in as
//! [`Gauges`] rather than this module reading the broker (that would be an
//! import cycle). The replication fields depend on the role: [`ReplGauges`]
//! holds one side's, and [`lag_ms`] is the one rule for "how far behind".

use std::borrow::Cow;
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
    /// With `auth.token`: connections that have not authenticated yet.
    pub connections_unauthenticated: AtomicU64,
    /// The pre-auth cap in force (`limits.maxUnauthenticated` or its default).
    pub connections_unauthenticated_max: AtomicU64,
    /// Unauthenticated connections closed (`ERR BUSY`) to make room.
    pub unauthenticated_evicted: AtomicU64,
    /// Wrong AUTH tokens (checked and refused).
    pub auth_failures: AtomicU64,
    /// AUTHs refused unchecked: their source address was over its budget.
    pub auth_throttled: AtomicU64,
}

/// The broker-side values STATS shows, read by the caller.
#[derive(Debug, Clone)]
pub struct Gauges {
    pub last_event_id: u64,
    pub topics: u64,
    pub uptime_ms: u64,
    pub segments: u64,
    /// Index files open now (bounded; see `storage::handles`).
    pub index_files_open: u64,
    pub epoch: u64,
    /// Consumer groups of all topics.
    pub groups: u64,
    /// The role, with that side's replication values.
    pub repl: ReplGauges,
}

/// Replication as one side sees it.
#[derive(Debug, Clone)]
pub enum ReplGauges {
    Master {
        /// Slaves connected now.
        slaves: u64,
        sync_in_force: bool,
        /// The highest id a slave has acknowledged; 0 without slaves.
        acked_event_id: u64,
        sync_fallbacks: u64,
        full_syncs: u64,
    },
    Slave {
        /// The master's address, as given with `--master`.
        master: String,
        master_event_id: u64,
        lag_ms: u64,
        /// connecting, syncing or streaming.
        state: &'static str,
        reconnects: u64,
        full_syncs: u64,
    },
}

impl ReplGauges {
    pub fn role(&self) -> Role {
        match self {
            ReplGauges::Master { .. } => Role::Master,
            ReplGauges::Slave { .. } => Role::Slave,
        }
    }
}

/// How far behind a replica is, in ms: 0 when it is caught up, else the
/// time since `since_ms`, when the newest record it has was written. With
/// no such time yet (`since_ms` 0) it is 0 too, not the age of the epoch;
/// the lag in events still shows it.
pub fn lag_ms(caught_up: bool, now_ms: u64, since_ms: u64) -> u64 {
    if caught_up || since_ms == 0 {
        0
    } else {
        now_ms.saturating_sub(since_ms)
    }
}

/// The value of one `STAT <name> <value>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatValue {
    Text(Cow<'static, str>),
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
            ("role", Text(g.repl.role().as_str().into())),
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
        ];
        // The two slave fields came first and keep their place; every field
        // added later goes after them.
        if let ReplGauges::Slave {
            master_event_id,
            lag_ms,
            ..
        } = &g.repl
        {
            pairs.push(("master_event_id", Num(*master_event_id)));
            pairs.push(("replication_lag_ms", Num(*lag_ms)));
        }
        pairs.extend([
            ("epoch", Num(g.epoch)),
            ("groups", Num(g.groups)),
            ("dead_lettered", Num(Stats::get(&self.dead_lettered))),
        ]);
        match &g.repl {
            ReplGauges::Master {
                slaves,
                sync_in_force,
                acked_event_id,
                sync_fallbacks,
                full_syncs,
            } => pairs.extend([
                ("slaves", Num(*slaves)),
                ("repl_sync", Num(u64::from(*sync_in_force))),
                ("repl_acked_event_id", Num(*acked_event_id)),
                ("repl_sync_fallbacks", Num(*sync_fallbacks)),
                ("repl_full_syncs", Num(*full_syncs)),
            ]),
            ReplGauges::Slave {
                master,
                state,
                reconnects,
                full_syncs,
                ..
            } => pairs.extend([
                ("master", Text(master.clone().into())),
                ("repl_state", Text((*state).into())),
                ("repl_reconnects", Num(*reconnects)),
                (
                    "repl_diverged_records",
                    Num(Stats::get(&self.repl_diverged_records)),
                ),
                ("repl_full_syncs", Num(*full_syncs)),
            ]),
        }
        // Added after the role's fields, so no earlier line moves.
        pairs.extend([
            (
                "connections_unauthenticated",
                Num(Stats::get(&self.connections_unauthenticated)),
            ),
            (
                "connections_unauthenticated_max",
                Num(Stats::get(&self.connections_unauthenticated_max)),
            ),
            (
                "unauthenticated_evicted",
                Num(Stats::get(&self.unauthenticated_evicted)),
            ),
            ("auth_failures", Num(Stats::get(&self.auth_failures))),
            ("auth_throttled", Num(Stats::get(&self.auth_throttled))),
        ]);
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(pairs: &[(&str, StatValue)], name: &str) -> StatValue {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    const AUTH_FIELDS: [&str; 5] = [
        "connections_unauthenticated",
        "connections_unauthenticated_max",
        "unauthenticated_evicted",
        "auth_failures",
        "auth_throttled",
    ];

    #[test]
    fn report_names_order_and_values() {
        let s = Stats::default();
        Stats::add(&s.connections_unauthenticated, 11);
        Stats::add(&s.auth_throttled, 12);
        Stats::add(&s.connections, 2);
        Stats::add(&s.commits, 5);
        Stats::add(&s.repl_diverged_records, 6);
        Stats::add(&s.dead_lettered, 7);
        s.writer_poisoned.store(true, Ordering::Relaxed);
        let g = Gauges {
            last_event_id: 9,
            topics: 3,
            uptime_ms: 1234,
            segments: 1,
            index_files_open: 4,
            epoch: 2,
            groups: 5,
            repl: ReplGauges::Master {
                slaves: 2,
                sync_in_force: true,
                acked_event_id: 8,
                sync_fallbacks: 1,
                full_syncs: 3,
            },
        };
        let common = [
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
        ];
        let pairs = s.report(&g);
        let names: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        let mut want = common.to_vec();
        want.extend([
            "epoch",
            "groups",
            "dead_lettered",
            "slaves",
            "repl_sync",
            "repl_acked_event_id",
            "repl_sync_fallbacks",
            "repl_full_syncs",
        ]);
        want.extend(AUTH_FIELDS);
        assert_eq!(names, want);
        assert_eq!(pairs[0].1, StatValue::Text("master".into()));
        assert_eq!(pairs[1].1, StatValue::Num(9));
        assert_eq!(pairs[3].1, StatValue::Num(2));
        assert_eq!(pairs[4].1, StatValue::Num(1234));
        assert_eq!(pairs[9].1, StatValue::Num(5));
        assert_eq!(pairs[15].1, StatValue::Num(1));
        assert_eq!(pairs[17].1, StatValue::Num(4));
        for (name, v) in [
            ("epoch", 2),
            ("groups", 5),
            ("dead_lettered", 7),
            ("slaves", 2),
            ("repl_sync", 1),
            ("repl_acked_event_id", 8),
            ("repl_sync_fallbacks", 1),
            ("repl_full_syncs", 3),
            ("connections_unauthenticated", 11),
            ("auth_throttled", 12),
        ] {
            assert_eq!(num(&pairs, name), StatValue::Num(v), "{name}");
        }

        let slave = s.report(&Gauges {
            repl: ReplGauges::Slave {
                master: "127.0.0.1:12301".into(),
                master_event_id: 12,
                lag_ms: 250,
                state: "streaming",
                reconnects: 4,
                full_syncs: 1,
            },
            ..g
        });
        let names: Vec<&str> = slave.iter().map(|(k, _)| *k).collect();
        let mut want = common.to_vec();
        // The first two slave fields keep the place they always had.
        want.extend([
            "master_event_id",
            "replication_lag_ms",
            "epoch",
            "groups",
            "dead_lettered",
            "master",
            "repl_state",
            "repl_reconnects",
            "repl_diverged_records",
            "repl_full_syncs",
        ]);
        want.extend(AUTH_FIELDS);
        assert_eq!(names, want);
        assert_eq!(slave[0].1, StatValue::Text("slave".into()));
        assert_eq!(slave[18], ("master_event_id", StatValue::Num(12)));
        assert_eq!(slave[19], ("replication_lag_ms", StatValue::Num(250)));
        assert_eq!(num(&slave, "epoch"), StatValue::Num(2));
        assert_eq!(num(&slave, "groups"), StatValue::Num(5));
        assert_eq!(num(&slave, "dead_lettered"), StatValue::Num(7));
        assert_eq!(
            num(&slave, "master"),
            StatValue::Text("127.0.0.1:12301".into())
        );
        assert_eq!(
            num(&slave, "repl_state"),
            StatValue::Text("streaming".into())
        );
        assert_eq!(num(&slave, "repl_reconnects"), StatValue::Num(4));
        assert_eq!(num(&slave, "repl_diverged_records"), StatValue::Num(6));
        assert_eq!(num(&slave, "repl_full_syncs"), StatValue::Num(1));
    }

    #[test]
    fn lag_is_zero_when_caught_up_else_time_since() {
        assert_eq!(lag_ms(true, 5_000, 1_000), 0);
        assert_eq!(lag_ms(false, 5_000, 1_000), 4_000);
        // A clock that went back never gives a huge lag, nor a time not known yet.
        assert_eq!(lag_ms(false, 1_000, 5_000), 0);
        assert_eq!(lag_ms(false, 5_000, 0), 0);
    }
}
