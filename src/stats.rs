//! Server-wide counters shown by STATS, and the ordered list of STATS pairs.
//! Plain atomics: any thread may bump them without a lock.
//!
//! The pairs are built here so their names and order live beside the
//! counters; the connection thread that answers STATS only encodes them. What
//! STATS shows besides the counters (role, topics, segments, …) belongs to
//! the broker, which owns this `Stats`, so the caller passes it in as
//! [`Gauges`] rather than this module reading the broker (that would be an
//! import cycle). The replication fields depend on the role: [`ReplGauges`]
//! holds one side's, and [`Lag`] is the one rule for "how far behind", the
//! same for the master's SLAVES and the slave's STATS.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::histogram::Histogram;
use crate::role::Role;
#[cfg(test)]
use crate::storage::ids::EPOCH_ID_BITS;
use crate::storage::ids::range_start;

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
    /// Write requests refused with `NOSLAVE` (`replication.minSlaves`).
    pub repl_noslave_refusals: AtomicU64,
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
    /// Messages sent to subscribers in batches (plain and group SUBs).
    pub messages_delivered: AtomicU64,
    /// Messages of batches a subscriber acknowledged.
    pub messages_acked: AtomicU64,
    /// Group batches (exclusive and shared) whose delivery ended without
    /// an ACK (hang-up, ACK deadline), so delivered again.
    pub group_redeliveries: AtomicU64,
    /// Payload bytes of publishes answered `OK` to a client.
    pub published_bytes: AtomicU64,
    /// Dedup keys the writer holds (a gauge it sets at each commit).
    pub dedup_keys: AtomicU64,
    /// Publishes answered as duplicates of a keyed publish (nothing written).
    pub dedup_duplicates: AtomicU64,
    /// How long each fsync of the commit log took (the writer observes).
    pub fsync_seconds: Histogram,
    /// From a connection handing a write to the writer to its answer,
    /// fsync and semi-sync included.
    pub publish_seconds: Histogram,
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
    /// The data directory's history id (the data lineage a master and its
    /// slaves share, kept across PROMOTE); 0 before a slave's first sync.
    pub history: u64,
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
        lag: Lag,
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

/// How far a slave is behind its master: the one definition both sides
/// use, the master for each slave in SLAVES (`lag_events`, `lag_ms`), the
/// slave for itself in STATS (`replication_lag_events`,
/// `replication_lag_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lag {
    /// See [`lag_events`].
    pub events: u64,
    /// 0 when caught up; else how old, in the master's clock, the oldest
    /// record the slave lacks is, among the records the master has
    /// durably (the only ones it streams). 0 as well when the slave lacks
    /// only records the master has not made durable yet.
    pub ms: u64,
}

impl Lag {
    /// `have`: the slave's last event id; `last`: the master's;
    /// `oldest_missing_age_ms`: the age of the oldest durable record the
    /// slave lacks, `None` when it lacks none.
    pub fn new(have: u64, last: u64, oldest_missing_age_ms: Option<u64>) -> Lag {
        let events = lag_events(have, last);
        let ms = if events == 0 {
            0
        } else {
            oldest_missing_age_ms.unwrap_or(0)
        };
        Lag { events, ms }
    }
}

/// The event ids from `have` (exclusive) up to `last` (inclusive), with an
/// epoch start counted as nothing: when the two ids are in different epoch
/// ranges (`id >> 48`), only the ids from the start of `last`'s range count
/// (at least 1, since the slave lacks `last` itself). 0 when `have` ≥ `last`.
pub fn lag_events(have: u64, last: u64) -> u64 {
    if have >= last {
        return 0;
    }
    let range_start = range_start(last);
    if have >= range_start {
        last - have
    } else {
        (last - range_start).max(1)
    }
}

/// The age, on the master's clock, of a record written at `record_ts_ms`,
/// as a slave reckons it: its age when the master sent the frame that told
/// of it (`sent_ms`, master clock), plus the time since that frame came
/// (`elapsed_ms`, slave clock, monotonic). Clock offsets between the two
/// machines cancel out; a record stamped after the frame's time counts 0.
pub fn age_on_slave(sent_ms: u64, record_ts_ms: u64, elapsed_ms: u64) -> u64 {
    sent_ms.saturating_sub(record_ts_ms) + elapsed_ms
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
            lag,
            ..
        } = &g.repl
        {
            pairs.push(("master_event_id", Num(*master_event_id)));
            pairs.push(("replication_lag_ms", Num(lag.ms)));
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
                (
                    "repl_noslave_refusals",
                    Num(Stats::get(&self.repl_noslave_refusals)),
                ),
            ]),
            ReplGauges::Slave {
                master,
                state,
                reconnects,
                full_syncs,
                lag,
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
                ("replication_lag_events", Num(lag.events)),
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
            (
                "group_redeliveries",
                Num(Stats::get(&self.group_redeliveries)),
            ),
            ("dedup_keys", Num(Stats::get(&self.dedup_keys))),
            ("dedup_duplicates", Num(Stats::get(&self.dedup_duplicates))),
            // 16 lowercase hex digits, as in the checkpoint: the bridge
            // names its messages `<history>-<event id>`.
            ("history", Text(format!("{:016x}", g.history).into())),
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

    /// The fields after the role's, in order.
    const AUTH_FIELDS: [&str; 9] = [
        "connections_unauthenticated",
        "connections_unauthenticated_max",
        "unauthenticated_evicted",
        "auth_failures",
        "auth_throttled",
        "group_redeliveries",
        "dedup_keys",
        "dedup_duplicates",
        "history",
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
        Stats::add(&s.repl_noslave_refusals, 11);
        s.writer_poisoned.store(true, Ordering::Relaxed);
        let g = Gauges {
            last_event_id: 9,
            topics: 3,
            uptime_ms: 1234,
            segments: 1,
            index_files_open: 4,
            epoch: 2,
            history: 0x00ab_cdef_0123_4567,
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
            "repl_noslave_refusals",
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
            ("repl_noslave_refusals", 11),
            ("connections_unauthenticated", 11),
            ("auth_throttled", 12),
        ] {
            assert_eq!(num(&pairs, name), StatValue::Num(v), "{name}");
        }

        let slave = s.report(&Gauges {
            repl: ReplGauges::Slave {
                master: "127.0.0.1:12301".into(),
                master_event_id: 12,
                lag: Lag { events: 3, ms: 250 },
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
            "replication_lag_events",
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
        assert_eq!(num(&slave, "replication_lag_events"), StatValue::Num(3));
    }

    #[test]
    fn history_is_sixteen_lowercase_hex_digits() {
        let s = Stats::default();
        let g = Gauges {
            last_event_id: 0,
            topics: 0,
            uptime_ms: 0,
            segments: 0,
            index_files_open: 0,
            epoch: 0,
            history: 0xAB,
            groups: 0,
            repl: ReplGauges::Master {
                slaves: 0,
                sync_in_force: false,
                acked_event_id: 0,
                sync_fallbacks: 0,
                full_syncs: 0,
            },
        };
        let pairs = s.report(&g);
        assert_eq!(
            num(&pairs, "history"),
            StatValue::Text("00000000000000ab".into())
        );
        let g = Gauges {
            history: u64::MAX,
            ..g
        };
        assert_eq!(
            num(&s.report(&g), "history"),
            StatValue::Text("ffffffffffffffff".into())
        );
    }

    #[test]
    fn lag_events_within_an_epoch_is_the_id_difference() {
        assert_eq!(lag_events(10, 10), 0);
        assert_eq!(lag_events(11, 10), 0);
        assert_eq!(lag_events(0, 10), 10);
        assert_eq!(lag_events(7, 10), 3);
        // Epoch 0's ids, with today's jumps at a PROMOTE, are plain ids.
        assert_eq!(lag_events(2, 1_048_579), 1_048_577);
        let e3 = 3 << EPOCH_ID_BITS;
        assert_eq!(lag_events(e3 + 5, e3 + 9), 4);
        assert_eq!(lag_events(u64::MAX - 1, u64::MAX), 1);
    }

    #[test]
    fn lag_events_does_not_count_the_jump_to_a_new_epoch() {
        let e1 = 1 << EPOCH_ID_BITS;
        // Behind by three records of epoch 1: not 2^48 of them.
        assert_eq!(lag_events(1_100_002, e1 + 3), 3);
        // The new epoch's first id (its EPOCH record) alone: still behind.
        assert_eq!(lag_events(1_100_002, e1), 1);
        assert_eq!(lag_events(5, e1 + 1), 1);
        // Epochs skipped: counted from the newest range's start as well.
        assert_eq!(lag_events(e1 + 10, (4 << EPOCH_ID_BITS) + 7), 7);
        // A slave ahead (an old master's tail) lags by nothing.
        assert_eq!(lag_events(e1 + 3, 1_100_002), 0);
    }

    #[test]
    fn lag_ms_is_zero_when_caught_up_else_the_oldest_missing_age() {
        assert_eq!(Lag::new(10, 10, Some(500)), Lag { events: 0, ms: 0 });
        assert_eq!(Lag::new(7, 10, Some(500)), Lag { events: 3, ms: 500 });
        // Lacking only what the master has not made durable: 0 ms.
        assert_eq!(Lag::new(7, 10, None), Lag { events: 3, ms: 0 });
    }

    #[test]
    fn the_slave_reckons_the_age_on_the_masters_clock() {
        // Sent when the record was 300 ms old, 200 ms ago here: 500 ms.
        assert_eq!(age_on_slave(10_300, 10_000, 200), 500);
        // The slave's wall clock plays no part: only elapsed time does.
        assert_eq!(age_on_slave(10_300, 10_000, 0), 300);
        // A record stamped after the frame (a clock step back): from 0.
        assert_eq!(age_on_slave(10_000, 10_300, 40), 40);
        // The master computes the same age as now - ts: at the moment the
        // slave receives the frame and an instant later, the two agree.
        let (ts, sent, now_master) = (50_000, 50_120, 50_170);
        assert_eq!(age_on_slave(sent, ts, now_master - sent), now_master - ts);
    }
}
