//! What storage publishes to readers ([`StoreView`]): the topics, each
//! with its counters ([`TopicState`]) and consumer groups ([`GroupState`])
//! behind a [`Topic`] whose condvar wakes its waiting subscribers; the last
//! event id; the segment set; the durable tail; the open index files.
//!
//! The writer thread publishes here, at commit only (after the batch is
//! flushed, and fsynced under `fsync: always`), so a reader never sees a
//! record a crash could take back; connection threads, replication senders
//! and the HTTP thread read. Each topic's state and groups sit behind their
//! own mutex.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::storage::handles::IndexHandles;
use crate::storage::log::record::DeleteReason;
use crate::storage::log::segment::SegmentSet;
use crate::storage::tail::DurableTail;

/// What the writer publishes and every reader reads (the broker holds it).
pub struct StoreView {
    pub segments: SegmentSet,
    /// The open index files, bounded (readers and the writer share them).
    pub(crate) index_files: IndexHandles,
    /// How far the log is durable; published by the writer after each sync.
    pub durable: DurableTail,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    last_event_id: AtomicU64,
}

impl StoreView {
    /// `index_handles`: how many files of `index_dir` may be open at once.
    pub fn new(index_dir: &Path, index_handles: usize) -> StoreView {
        StoreView {
            segments: SegmentSet::default(),
            index_files: IndexHandles::new(index_dir, index_handles),
            durable: DurableTail::default(),
            topics: RwLock::new(BTreeMap::new()),
            last_event_id: AtomicU64::new(0),
        }
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every topic, ordered by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The open index file of a topic (opened again if it was evicted).
    pub fn index_of(&self, t: &Topic) -> std::io::Result<Arc<File>> {
        self.index_files
            .get(&t.name, t.create_id)
            .map_err(std::io::Error::other)
    }

    pub fn topic_count(&self) -> usize {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Writer only: makes a created topic visible.
    pub fn insert_topic(&self, topic: Arc<Topic>) {
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.name.clone(), topic);
    }

    /// Writer only: removes a topic and tells its subscribers why.
    pub fn remove_topic(&self, name: &str, create_id: u64, reason: DeleteReason) {
        let mut map = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if map.get(name).is_some_and(|t| t.create_id == create_id)
            && let Some(t) = map.remove(name)
        {
            t.end(reason);
        }
    }

    pub fn last_event_id(&self) -> u64 {
        self.last_event_id.load(Ordering::Acquire)
    }

    /// Writer only: the last event id, published at commit.
    pub fn set_last_event_id(&self, id: u64) {
        self.last_event_id.store(id, Ordering::Release);
    }
}

/// A topic's published counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicState {
    /// Index entries readers may read (`first_entry..entries`).
    pub entries: u64,
    /// First entry still retained.
    pub first_entry: u64,
    pub first_id: u64,
    pub last_id: u64,
    /// Set once the topic is deleted or expired.
    pub ended: Option<DeleteReason>,
}

impl TopicState {
    pub fn messages(&self) -> u64 {
        self.entries - self.first_entry
    }
}

/// A consumer group's durable state, as a log record left it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupState {
    /// The group has consumed every message up to this event id.
    pub committed: u64,
    /// The message whose deliveries failed (ended without an ACK), 0 if none.
    pub failed_at: u64,
    /// How many deliveries of `failed_at` failed.
    pub failures: u32,
    /// The last failed delivery of `failed_at` was a batch of that message
    /// alone: its failures are surely its own, so `maxDeliver` may give up
    /// on it. Durable with the count, so a restart or failover costs no
    /// extra delivery.
    pub alone: bool,
    /// Event id of the record that set this state.
    pub set_id: u64,
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub create_id: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
    state: Mutex<TopicState>,
    changed: Condvar,
    /// Its consumer groups, by name; published by the writer at commit.
    groups: Mutex<BTreeMap<String, GroupState>>,
    /// Payload bytes clients published to it through this server since it
    /// started (`/metrics`); bumped by connection threads on each `OK`.
    pub published_bytes: AtomicU64,
}

impl Topic {
    pub fn new(
        name: String,
        create_id: u64,
        created_ms: u64,
        expires_ms: u64,
        state: TopicState,
    ) -> Topic {
        Topic {
            name,
            create_id,
            created_ms,
            expires_ms,
            state: Mutex::new(state),
            changed: Condvar::new(),
            groups: Mutex::new(BTreeMap::new()),
            published_bytes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TopicState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> TopicState {
        *self.lock()
    }

    /// Publishes new counters and wakes every waiting subscriber.
    pub fn publish(&self, state: TopicState) {
        *self.lock() = state;
        self.changed.notify_all();
    }

    /// Writer only: the topic's groups after a commit; wakes subscribers
    /// (a removed group ends its subscriptions).
    pub fn publish_groups(&self, groups: BTreeMap<String, GroupState>) {
        *self.groups.lock().unwrap_or_else(|p| p.into_inner()) = groups;
        let _guard = self.lock();
        self.changed.notify_all();
    }

    /// Every group of the topic, by name.
    pub fn groups(&self) -> BTreeMap<String, GroupState> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many groups the topic has (STATS `groups`), without a copy.
    pub fn group_count(&self) -> usize {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn group(&self, name: &str) -> Option<GroupState> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    pub fn end(&self, reason: DeleteReason) {
        self.lock().ended = Some(reason);
        self.changed.notify_all();
    }

    /// Waits until entry `next` exists, the topic ends, or `timeout` passes;
    /// returns the state seen last.
    pub fn wait_beyond(&self, next: u64, timeout: Duration) -> TopicState {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if st.entries > next || st.ended.is_some() {
                return *st;
            }
            let now = Instant::now();
            if now >= deadline {
                return *st;
            }
            st = match self.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}
