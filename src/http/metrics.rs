//! `/metrics`: the Prometheus text exposition format 0.0.4, written by
//! hand. Every family gets one `# HELP` and one `# TYPE` line, then its
//! samples; names carry the `smss_` prefix and their unit (`_seconds`,
//! `_bytes`), counters end in `_total`, and what varies (topic, group,
//! slave, role) is a label, never part of a name.
//!
//! The values are the ones STATS shows (the same [`crate::stats::Stats`]
//! counters and [`crate::stats::Gauges`]), plus per-topic, per-group and
//! per-slave values read into a [`View`]. Runs on the `http` thread;
//! reads only.

use std::fmt::{Display, Write};
use std::sync::atomic::Ordering::Relaxed;

use super::view::{GroupView, TopicView, View};
use crate::broker::Broker;
use crate::histogram::{BOUNDS_SECONDS, Snapshot};
use crate::stats::{ReplGauges, Stats};

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out<'a>(&'a mut String);

impl Out<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"");
                escape_label(self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Snapshot) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, c) in h.buckets.iter().enumerate() {
            cumulative += c;
            let le = match BOUNDS_SECONDS.get(i) {
                Some(b) => b.to_string(),
                None => "+Inf".to_string(),
            };
            self.sample(&bucket, &[("le", &le)], cumulative);
        }
        self.sample(&format!("{name}_sum"), &[], h.sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), &[], cumulative);
    }
}

/// Label values: backslash, double quote and newline escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One labelled family drawn from a list of items: (name, type, help,
/// the value of one item; None = no sample for it).
type Series<T> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&T) -> Option<u64>,
);

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The whole exposition.
pub fn render(b: &Broker, v: &View) -> String {
    let mut s = String::with_capacity(8192 + v.topics.len() * 600);
    let mut o = Out(&mut s);
    let st = &b.stats;
    let g = &v.gauges;
    let c = |a: &std::sync::atomic::AtomicU64| Stats::get(a);

    o.family(
        "smss_role",
        "gauge",
        "1 for the role this server has now (master or slave), 0 for the other.",
    );
    let master = matches!(g.repl, ReplGauges::Master { .. });
    o.sample("smss_role", &[("role", "master")], u8::from(master));
    o.sample("smss_role", &[("role", "slave")], u8::from(!master));
    o.one(
        "smss_epoch",
        "gauge",
        "Epoch of the history (PROMOTE increments it).",
        g.epoch,
    );
    o.one(
        "smss_last_event_id",
        "gauge",
        "Event id of the last record in the log.",
        g.last_event_id,
    );
    o.one(
        "smss_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        seconds(g.uptime_ms),
    );
    o.one(
        "smss_writer_poisoned",
        "gauge",
        "1 when a failed write or fsync made the writer refuse all writes.",
        u8::from(v.poisoned),
    );

    o.one(
        "smss_messages_published_total",
        "counter",
        "Messages written to the log (on a slave: replicated).",
        c(&st.messages_published),
    );
    o.one(
        "smss_published_bytes_total",
        "counter",
        "Payload bytes of publishes answered OK to clients of this server.",
        c(&st.published_bytes),
    );
    o.one(
        "smss_messages_delivered_total",
        "counter",
        "Messages sent to subscribers in batches.",
        c(&st.messages_delivered),
    );
    o.one(
        "smss_messages_acked_total",
        "counter",
        "Messages of batches subscribers acknowledged.",
        c(&st.messages_acked),
    );
    o.one(
        "smss_commits_total",
        "counter",
        "Group commits of the writer.",
        c(&st.commits),
    );
    o.one(
        "smss_connections",
        "gauge",
        "Client connections open now.",
        c(&st.connections),
    );
    o.one(
        "smss_connections_max",
        "gauge",
        "The connection cap in force.",
        c(&st.connections_max),
    );
    o.one(
        "smss_connections_unauthenticated",
        "gauge",
        "Connections that have not authenticated yet.",
        c(&st.connections_unauthenticated),
    );
    o.one(
        "smss_connections_rejected_total",
        "counter",
        "Connections refused with ERR BUSY at the cap.",
        c(&st.rejected_busy),
    );
    o.one(
        "smss_unauthenticated_evicted_total",
        "counter",
        "Unauthenticated connections closed to make room.",
        c(&st.unauthenticated_evicted),
    );
    o.one(
        "smss_auth_failures_total",
        "counter",
        "Wrong AUTH tokens.",
        c(&st.auth_failures),
    );
    o.one(
        "smss_auth_throttled_total",
        "counter",
        "AUTHs refused unchecked (source address over its budget).",
        c(&st.auth_throttled),
    );
    o.one(
        "smss_subscribers",
        "gauge",
        "Subscriptions running now.",
        c(&st.subscribers),
    );
    o.one("smss_topics", "gauge", "Topics.", g.topics);
    o.one(
        "smss_groups",
        "gauge",
        "Consumer groups of all topics.",
        g.groups,
    );
    o.one(
        "smss_topics_expired_total",
        "counter",
        "Topics removed at the end of their lifetime.",
        c(&st.topics_expired),
    );
    o.one(
        "smss_delayed_messages",
        "gauge",
        "Delayed messages waiting for their due time.",
        c(&st.delayed_pending),
    );
    o.one(
        "smss_delayed_dropped_total",
        "counter",
        "Delayed messages dropped because their topic went away first.",
        c(&st.delayed_dropped),
    );
    o.one(
        "smss_dead_lettered_total",
        "counter",
        "Messages consumer groups gave up on after maxDeliver failed deliveries.",
        c(&st.dead_lettered),
    );
    o.one(
        "smss_dedup_keys",
        "gauge",
        "Publish dedup keys held (publish.dedupWindowMs, publish.dedupMaxKeys).",
        c(&st.dedup_keys),
    );
    o.one(
        "smss_dedup_duplicates_total",
        "counter",
        "Publishes answered as duplicates of a keyed publish (nothing written).",
        c(&st.dedup_duplicates),
    );
    o.one(
        "smss_segments",
        "gauge",
        "Commit-log segment files.",
        g.segments,
    );
    o.one(
        "smss_index_files_open",
        "gauge",
        "Index files open now.",
        g.index_files_open,
    );
    o.one(
        "smss_disk_used_bytes",
        "gauge",
        "Bytes of the commit log and the indexes.",
        c(&st.disk_bytes),
    );
    if let Some(d) = v.disk {
        o.one(
            "smss_disk_free_bytes",
            "gauge",
            "Free bytes (for unprivileged users) on the data directory's file system.",
            d.free_bytes,
        );
        o.one(
            "smss_disk_size_bytes",
            "gauge",
            "Size of the data directory's file system.",
            d.total_bytes,
        );
    }

    let per_topic: [Series<TopicView>; 3] = [
        (
            "smss_topic_messages",
            "gauge",
            "Retained messages of a topic.",
            |t| Some(t.messages),
        ),
        (
            "smss_topic_appended_messages_total",
            "counter",
            "Messages ever added to a topic (retention does not lower it).",
            |t| Some(t.appended),
        ),
        (
            "smss_topic_published_bytes_total",
            "counter",
            "Payload bytes published to a topic through this server since it started.",
            |t| Some(t.published_bytes),
        ),
    ];
    for (name, kind, help, value) in per_topic {
        o.family(name, kind, help);
        for t in &v.topics {
            if let Some(v) = value(t) {
                o.sample(name, &[("topic", &t.name)], v);
            }
        }
    }
    let groups = || {
        v.topics
            .iter()
            .flat_map(|t| t.groups.iter().map(move |g| (t, g)))
    };
    let per_group: [Series<GroupView>; 6] = [
        (
            "smss_group_lag_messages",
            "gauge",
            "Retained messages after a consumer group's committed position.",
            |g| g.lag,
        ),
        (
            "smss_group_committed_event_id",
            "gauge",
            "Event id up to which a consumer group has consumed.",
            |g| Some(g.committed),
        ),
        (
            "smss_group_failed_deliveries",
            "gauge",
            "Failed deliveries of the message at a group's head (redeliveries owed; maxDeliver dead-letters it).",
            |g| Some(u64::from(g.failures)),
        ),
        (
            "smss_group_pending_messages",
            "gauge",
            "Messages sent to a group's active subscriber (a shared group's members) and not ACKed yet.",
            |g| Some(g.pending),
        ),
        (
            "smss_group_redeliveries_total",
            "counter",
            "Batches of a group delivered without an ACK (hang-up, ACK timeout), so delivered again.",
            |g| Some(g.counters.failed_deliveries),
        ),
        (
            "smss_group_dead_lettered_total",
            "counter",
            "Messages of a group given up on after maxDeliver (dead-lettered or skipped).",
            |g| Some(g.counters.dead_lettered),
        ),
    ];
    for (name, kind, help, value) in per_group {
        o.family(name, kind, help);
        for (t, gr) in groups() {
            if let Some(v) = value(gr) {
                o.sample(name, &[("topic", &t.name), ("group", &gr.name)], v);
            }
        }
    }
    o.family(
        "smss_group_subscribers",
        "gauge",
        "Subscribers of a group: the active one (every member of a shared group) and those on standby.",
    );
    for (t, gr) in groups() {
        let active = gr.members.unwrap_or(usize::from(gr.active)).to_string();
        o.sample(
            "smss_group_subscribers",
            &[("topic", &t.name), ("group", &gr.name), ("state", "active")],
            active,
        );
        o.sample(
            "smss_group_subscribers",
            &[
                ("topic", &t.name),
                ("group", &gr.name),
                ("state", "standby"),
            ],
            gr.standbys,
        );
    }

    replication(&mut o, b, v);
    o.histogram(
        "smss_fsync_duration_seconds",
        "Time of each fsync of the commit log.",
        &v.fsync,
    );
    o.histogram(
        "smss_publish_duration_seconds",
        "From handing a publish to the writer to its answer (fsync and semi-sync included).",
        &v.publish,
    );
    s
}

fn replication(o: &mut Out<'_>, b: &Broker, v: &View) {
    let r = &b.repl;
    let (slaves, sync, acked, master_id, lag, streaming) = match &v.gauges.repl {
        ReplGauges::Master {
            slaves,
            sync_in_force,
            acked_event_id,
            ..
        } => (
            *slaves,
            *sync_in_force,
            *acked_event_id,
            0,
            Default::default(),
            false,
        ),
        ReplGauges::Slave {
            master_event_id,
            lag,
            state,
            ..
        } => (0, false, 0, *master_event_id, *lag, *state == "streaming"),
    };
    o.one(
        "smss_repl_slaves",
        "gauge",
        "Slaves connected to this master.",
        slaves,
    );
    o.one(
        "smss_repl_sync_in_force",
        "gauge",
        "1 while writes wait for a slave (semi-sync or minSlaves).",
        u8::from(sync),
    );
    o.one(
        "smss_repl_acked_event_id",
        "gauge",
        "Highest event id a slave acknowledged.",
        acked,
    );
    o.one(
        "smss_repl_sync_fallbacks_total",
        "counter",
        "Semi-sync fall-backs to async after replication.syncTimeoutMs.",
        r.sync_fallbacks.load(Relaxed),
    );
    o.one(
        "smss_repl_noslave_refusals_total",
        "counter",
        "Writes refused with NOSLAVE (replication.minSlaves).",
        Stats::get(&b.stats.repl_noslave_refusals),
    );
    o.one(
        "smss_repl_full_syncs_total",
        "counter",
        "Full resyncs (served on a master, received on a slave).",
        r.full_syncs.load(Relaxed),
    );
    o.one(
        "smss_repl_reconnects_total",
        "counter",
        "Reconnections of this slave to its master.",
        r.reconnects.load(Relaxed),
    );
    o.one(
        "smss_repl_diverged_records_total",
        "counter",
        "Records this server moved aside because its new master never had them.",
        Stats::get(&b.stats.repl_diverged_records),
    );
    o.one(
        "smss_repl_master_event_id",
        "gauge",
        "On a slave: the master's last event id, as last heard.",
        master_id,
    );
    o.one(
        "smss_repl_streaming",
        "gauge",
        "On a slave: 1 while it streams from its master.",
        u8::from(streaming),
    );
    o.one(
        "smss_repl_lag_events",
        "gauge",
        "On a slave: records it lacks.",
        lag.events,
    );
    o.one(
        "smss_repl_lag_seconds",
        "gauge",
        "On a slave: age of the oldest record it lacks (master's clock).",
        seconds(lag.ms),
    );
    o.family(
        "smss_repl_slave_lag_events",
        "gauge",
        "On a master: records a slave lacks.",
    );
    for s in &v.slaves {
        o.sample(
            "smss_repl_slave_lag_events",
            &[("slave", &s.addr)],
            s.lag.events,
        );
    }
    o.family(
        "smss_repl_slave_lag_seconds",
        "gauge",
        "On a master: age of the oldest record a slave lacks.",
    );
    for s in &v.slaves {
        o.sample(
            "smss_repl_slave_lag_seconds",
            &[("slave", &s.addr)],
            seconds(s.lag.ms),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut s = String::new();
        Out(&mut s).sample("x", &[("topic", "a\"b\\c\nd")], 1);
        assert_eq!(s, "x{topic=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_count() {
        let h = crate::histogram::Histogram::default();
        h.observe(std::time::Duration::from_millis(2));
        h.observe(std::time::Duration::from_secs(5));
        let mut s = String::new();
        Out(&mut s).histogram("h_seconds", "help", &h.snapshot());
        assert!(s.contains("h_seconds_bucket{le=\"0.001\"} 0\n"), "{s}");
        assert!(s.contains("h_seconds_bucket{le=\"0.0025\"} 1\n"), "{s}");
        assert!(s.contains("h_seconds_bucket{le=\"2.5\"} 1\n"), "{s}");
        assert!(s.contains("h_seconds_bucket{le=\"+Inf\"} 2\n"), "{s}");
        assert!(s.contains("h_seconds_count 2\n"), "{s}");
        assert!(s.contains("h_seconds_sum 5.002\n"), "{s}");
    }
}
