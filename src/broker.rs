//! Shared in-memory state: what storage publishes ([`StoreView`]: the
//! topics readers can see, the log segments, the last published event id,
//! the durable log tail, the open index files), the role, counters, the
//! log of wrong AUTH tokens and their pacing per source address, the
//! registry of connections not yet authenticated, the registry of group
//! subscribers, and the [`WriterHandle`] every thread asks the writer
//! through.
//!
//! Everything here is *published* state: the writer changes it only after a
//! batch is flushed (and fsynced under `fsync: always`), so a reader
//! never sees a record that a crash could take back. Connection threads read
//! it; topics carry a condvar that wakes waiting subscribers.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::auth::{FailureLog, SourcePacer};
use crate::config::Config;
use crate::groups::Registry;
use crate::preauth::PreAuth;
use crate::replication::state::ReplState;
use crate::role::{Role, RoleCell};
use crate::stats::{Gauges, ReplGauges, Stats};
use crate::storage::engine::links::WriterLinks;
use crate::storage::ops::WriteReq;
use crate::storage::view::{StoreView, Topic};
use crate::writer_handle::WriterHandle;

pub struct Broker {
    pub config: Config,
    role: Arc<RoleCell>,
    pub started: Instant,
    pub stats: Arc<Stats>,
    /// Wrong AUTH tokens of all connections, logged at a bounded rate.
    pub auth_failures: FailureLog,
    /// How fast each source address may have AUTH tokens checked.
    pub auth_pacer: SourcePacer,
    /// With `auth.token`: connections not authenticated yet, under their cap.
    pub preauth: PreAuth,
    /// What storage publishes: topics, last event id, segments, durable
    /// tail, open index files.
    pub store: Arc<StoreView>,
    /// Replication: slaves (on a master), the master (on a slave).
    pub repl: Arc<ReplState>,
    /// Who subscribes to which consumer group now (active and standbys).
    pub group_subs: Registry,
    /// The way into the writer (its bounded channel).
    pub writer: WriterHandle,
    shutting_down: AtomicBool,
}

impl Broker {
    /// `index_handles`: how many index files may be open at once.
    pub fn new(
        config: Config,
        role: Role,
        writer: crossbeam_channel::Sender<WriteReq>,
        index_handles: usize,
    ) -> Broker {
        let store = StoreView::new(&config.store.path.join("index"), index_handles);
        let send_wait = Duration::from_millis(config.worker.send_timeout_ms);
        let stats: Arc<Stats> = Arc::default();
        Broker {
            store: Arc::new(store),
            config,
            role: Arc::new(RoleCell::new(role)),
            started: Instant::now(),
            group_subs: Registry::new(Arc::clone(&stats)),
            stats,
            auth_failures: FailureLog::default(),
            auth_pacer: SourcePacer::default(),
            preauth: PreAuth::default(),
            repl: Arc::default(),
            writer: WriterHandle::new(writer, send_wait),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Master or slave; PROMOTE may change it at run time.
    pub fn role(&self) -> Role {
        self.role.get()
    }

    /// What the writer shares with the rest of the server.
    pub fn writer_links(&self) -> WriterLinks {
        WriterLinks {
            store: Arc::clone(&self.store),
            stats: Arc::clone(&self.stats),
            role: Arc::clone(&self.role),
            repl: Arc::clone(&self.repl),
        }
    }

    /// PROMOTE: from now on this server is a master.
    pub fn set_role(&self, role: Role) {
        self.role.set(role);
    }

    // What storage publishes, read through the broker by its many readers.

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.store.topic(name)
    }

    /// Every topic, ordered by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.store.topics()
    }

    /// The open index file of a topic (opened again if it was evicted).
    pub fn index_of(&self, t: &Topic) -> std::io::Result<Arc<File>> {
        self.store.index_of(t)
    }

    pub fn topic_count(&self) -> usize {
        self.store.topic_count()
    }

    pub fn last_event_id(&self) -> u64 {
        self.store.last_event_id()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// The broker-side values STATS (and `/metrics`) show, read now: the
    /// role with its replication values, topics, segments, epoch, groups.
    pub fn gauges(&self) -> Gauges {
        use std::sync::atomic::Ordering::Relaxed;
        let r = &self.repl;
        let last_event_id = self.last_event_id();
        let repl = match self.role() {
            Role::Master => ReplGauges::Master {
                slaves: r.slave_count() as u64,
                sync_in_force: r.sync_in_force(),
                acked_event_id: r.highest_acked_id(),
                sync_fallbacks: r.sync_fallbacks.load(Relaxed),
                full_syncs: r.full_syncs.load(Relaxed),
            },
            Role::Slave => {
                let m = r.master();
                ReplGauges::Slave {
                    lag: m.lag(last_event_id, Instant::now()),
                    master: m.addr,
                    master_event_id: m.master_event_id,
                    state: m.state.as_str(),
                    reconnects: r.reconnects.load(Relaxed),
                    full_syncs: r.full_syncs.load(Relaxed),
                }
            }
        };
        let topics = self.topics();
        Gauges {
            last_event_id,
            topics: topics.len() as u64,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            segments: self.store.segments.count() as u64,
            index_files_open: self.store.index_files.open_count() as u64,
            epoch: r.epoch.load(Relaxed),
            history: r.history(),
            groups: topics.iter().map(|t| t.group_count() as u64).sum(),
            repl,
        }
    }
}
