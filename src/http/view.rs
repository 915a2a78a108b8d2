//! One read of the published state for an HTTP request: the STATS gauges,
//! the counters, every topic with its groups' lags, the slaves with their
//! lag, disk space. `/metrics`, `/healthz` and the status page all render
//! from a [`View`], so they agree with each other and with STATS.
//!
//! Runs on the `http` thread. Takes the broker's topic map lock (shared),
//! each topic's state and groups locks briefly, the replication state's
//! lock, and preads a few index entries per group (the lag is found by
//! binary search, as GROUPS does). Writes nothing.

use std::sync::atomic::Ordering;

use crate::broker::Broker;
use crate::groups::GroupKey;
use crate::histogram::Snapshot;
use crate::replication;
use crate::role::Role;
use crate::stats::{Gauges, Lag};
use crate::storage::index;

/// A consumer group of a topic.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub name: String,
    pub committed: u64,
    /// Retained messages after the committed position; `None` when the
    /// index could not be read.
    pub lag: Option<u64>,
    /// Failed deliveries of the message at the group's head (redeliveries
    /// owed), 0 when none failed.
    pub failures: u32,
    pub active: bool,
    pub standbys: usize,
    /// A shared group's members while it has any (`None`: exclusive, or
    /// no members).
    pub members: Option<usize>,
    /// Messages sent to the active subscriber, not ACKed yet.
    pub pending: u64,
    /// Since start: batches delivered without an ACK, and messages given
    /// up on after `maxDeliver`.
    pub counters: crate::groups::GroupCounters,
}

#[derive(Debug, Clone)]
pub struct TopicView {
    pub name: String,
    /// Retained messages.
    pub messages: u64,
    /// Messages ever indexed (grows by one per message; counts the ones
    /// retention removed).
    pub appended: u64,
    pub last_id: u64,
    pub published_bytes: u64,
    pub groups: Vec<GroupView>,
}

#[derive(Debug, Clone)]
pub struct SlaveView {
    pub addr: String,
    pub state: &'static str,
    pub acked_id: u64,
    pub lag: Lag,
}

/// Space on the file system that holds the data directory.
#[derive(Debug, Clone, Copy)]
pub struct Disk {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

pub struct View {
    pub gauges: Gauges,
    pub topics: Vec<TopicView>,
    /// On a master: its slaves now; on a slave: empty.
    pub slaves: Vec<SlaveView>,
    pub disk: Option<Disk>,
    pub poisoned: bool,
    pub shutting_down: bool,
    pub fsync: Snapshot,
    pub publish: Snapshot,
}

impl View {
    pub fn read(b: &Broker) -> View {
        let gauges = b.gauges();
        let topics = b.topics().iter().map(|t| topic_view(b, t)).collect();
        let slaves = match b.role() {
            Role::Master => b
                .repl
                .slaves()
                .iter()
                .map(|s| SlaveView {
                    addr: s.addr.clone(),
                    state: s.state.as_str(),
                    acked_id: s.acked_id,
                    lag: replication::sender::slave_lag(b, s),
                })
                .collect(),
            Role::Slave => Vec::new(),
        };
        View {
            gauges,
            topics,
            slaves,
            disk: disk_space(&b.config.store.path),
            poisoned: b.stats.writer_poisoned.load(Ordering::Relaxed),
            shutting_down: b.is_shutting_down(),
            fsync: b.stats.fsync_seconds.snapshot(),
            publish: b.stats.publish_seconds.snapshot(),
        }
    }
}

fn topic_view(b: &Broker, t: &crate::storage::view::Topic) -> TopicView {
    let st = t.state();
    let groups = t.groups();
    let file = if groups.is_empty() {
        None
    } else {
        b.index_of(t).ok()
    };
    let groups = groups
        .into_iter()
        .map(|(name, g)| {
            let lag = file.as_ref().and_then(|f| {
                index::search_after(&**f, st.first_entry, st.entries, g.committed)
                    .ok()
                    .map(|i| st.entries - i)
            });
            let key = GroupKey {
                topic: t.name.clone(),
                create_id: t.create_id,
                group: name.clone(),
            };
            let (active, standbys) = b.group_subs.counts(&key);
            GroupView {
                name,
                committed: g.committed,
                lag,
                failures: g.failures,
                active,
                standbys,
                members: b.group_subs.shared(&key).map(|(members, _)| members),
                pending: b.group_subs.pending(&key),
                counters: b.group_subs.counters(&key),
            }
        })
        .collect();
    TopicView {
        name: t.name.clone(),
        messages: st.messages(),
        appended: st.entries,
        last_id: st.last_id,
        published_bytes: t.published_bytes.load(Ordering::Relaxed),
        groups,
    }
}

/// statvfs of the data directory: free space for an unprivileged user
/// (`f_bavail`, what the writer can actually use) and the total.
pub fn disk_space(path: &std::path::Path) -> Option<Disk> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes the struct we pass; `c` is a valid
    // NUL-terminated path that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some(Disk {
        free_bytes: (st.f_bavail as u64).saturating_mul(frsize),
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
    })
}
