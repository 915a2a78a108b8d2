//! The dedup table: per topic, the dedup keys (`msgid=` headers) of the
//! messages published within `publish.dedupWindowMs`, each with the event
//! id it was written as, so a retried publish can be answered with the
//! first one's id instead of being written again.
//!
//! Owned by [`super::WriterState`] and changed only by its one apply path
//! (a PUB, MPUB entry or DPUB record carrying a key), so live writes,
//! crash recovery and a slave applying its master's records all build the
//! same table; after PROMOTE the new master has it already. The keys live
//! in the window at a checkpoint go into the checkpoint (see
//! [`super::checkpoint`]), so a restart knows keys older than the log tail
//! it replays.
//!
//! Memory is bounded by `publish.dedupMaxKeys`: keys are queued in the
//! order they were applied, and the oldest go first — when their window
//! ends, or when the cap is reached. Like the rest of the state, a change
//! made by a batch that fails is taken back (the journal below), so a
//! request answered `ERR` leaves no key behind.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::protocol::rules::dedup_key;

/// Where a key was seen: the message written with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::storage::engine) struct Seen {
    /// The event id of the message (of the DPUB for a delayed one).
    pub(in crate::storage::engine) id: u64,
    /// When it was written (the record's timestamp): the window runs from here.
    pub(in crate::storage::engine) ts_ms: u64,
    /// The first event id of the request it came in (an MPUB's first; its
    /// own id for a PUB or DPUB).
    pub(in crate::storage::engine) first: u64,
    /// It was the last message of that request.
    pub(in crate::storage::engine) last: bool,
}

/// What a publish carrying keys is, against the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::storage::engine) enum Repeat {
    /// Not seen within the window: write it.
    New,
    /// A repeat of the request written as these event ids (first, last).
    Dup(u64, u64),
}

/// One key in the eviction order.
struct Queued {
    topic: Arc<str>,
    key: Arc<[u8]>,
    /// The id it had when queued: a key queued again later (its window had
    /// ended) leaves this entry stale, which eviction then skips.
    id: u64,
}

/// A change of the open batch, to take back if it fails.
enum Step {
    Added {
        topic: Arc<str>,
        key: Arc<[u8]>,
        before: Option<Seen>,
    },
    Evicted {
        queued: Queued,
        seen: Option<Seen>,
    },
    TopicDropped(Arc<str>, HashMap<Arc<[u8]>, Seen>),
}

#[derive(Default)]
pub(in crate::storage::engine) struct Dedup {
    /// 0: dedup is off (nothing is recorded, nothing refused).
    window_ms: u64,
    max_keys: usize,
    topics: HashMap<Arc<str>, HashMap<Arc<[u8]>, Seen>>,
    order: VecDeque<Queued>,
    /// Keys in `topics` (the STATS gauge `dedup_keys`).
    held: usize,
    /// The first id of the MPUB whose records are being applied (its
    /// records before the last carry `FLAG_BATCH_MORE`).
    run_first: Option<u64>,
    /// `Some` while a batch is open.
    journal: Option<Vec<Step>>,
}

impl Dedup {
    /// Sets the window and the cap (from `publish.*`); window 0 turns it off.
    pub(super) fn configure(&mut self, window_ms: u64, max_keys: usize) {
        self.window_ms = window_ms;
        self.max_keys = max_keys.max(1);
    }

    /// Keys held now.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    pub(super) fn begin(&mut self) {
        self.journal = Some(Vec::new());
    }

    pub(super) fn end(&mut self) {
        self.journal = None;
    }

    /// Takes back the open batch's changes, newest first.
    pub(super) fn revert(&mut self) {
        self.run_first = None;
        let Some(journal) = self.journal.take() else {
            return;
        };
        for step in journal.into_iter().rev() {
            match step {
                Step::Added { topic, key, before } => {
                    self.order.pop_back();
                    let map = self.topics.entry(topic).or_default();
                    match before {
                        Some(seen) => {
                            map.insert(key, seen);
                        }
                        None => {
                            if map.remove(&key).is_some() {
                                self.held -= 1;
                            }
                        }
                    }
                }
                Step::Evicted { queued, seen } => {
                    if let Some(seen) = seen {
                        let map = self.topics.entry(Arc::clone(&queued.topic)).or_default();
                        if map.insert(Arc::clone(&queued.key), seen).is_none() {
                            self.held += 1;
                        }
                    }
                    self.order.push_front(queued);
                }
                Step::TopicDropped(topic, map) => {
                    self.held += map.len();
                    self.topics.insert(topic, map);
                }
            }
        }
    }

    fn record(&mut self, step: Step) {
        if let Some(j) = &mut self.journal {
            j.push(step);
        }
    }

    /// The apply path's part: a PUB or DPUB record `id` of `topic` with
    /// `headers`, written at `ts_ms`; `more` is its `FLAG_BATCH_MORE` (an
    /// MPUB's record before its last). `now_ms` ends windows.
    pub(super) fn note(
        &mut self,
        topic: &str,
        headers: &[u8],
        id: u64,
        ts_ms: u64,
        more: bool,
        now_ms: u64,
    ) {
        let first = self.run_first.unwrap_or(id);
        self.run_first = more.then_some(first);
        if self.window_ms == 0 {
            return;
        }
        if let Some(key) = dedup_key(headers) {
            let seen = Seen {
                id,
                ts_ms,
                first,
                last: !more,
            };
            self.insert(topic, key, seen);
        }
        self.expire(now_ms);
    }

    fn insert(&mut self, topic: &str, key: &[u8], seen: Seen) {
        let (topic, map) = match self.topics.get_key_value(topic) {
            Some((t, _)) => {
                let t = Arc::clone(t);
                let map = self.topics.get_mut(&t);
                (t, map)
            }
            None => {
                let t: Arc<str> = Arc::from(topic);
                self.topics.insert(Arc::clone(&t), HashMap::new());
                let map = self.topics.get_mut(&t);
                (t, map)
            }
        };
        let Some(map) = map else {
            return;
        };
        let key: Arc<[u8]> = match map.get_key_value(key) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(key),
        };
        let before = map.insert(Arc::clone(&key), seen);
        if before.is_none() {
            self.held += 1;
        }
        self.order.push_back(Queued {
            topic: Arc::clone(&topic),
            key: Arc::clone(&key),
            id: seen.id,
        });
        self.record(Step::Added { topic, key, before });
        while self.order.len() > self.max_keys {
            self.evict_front();
        }
    }

    /// Drops the oldest queued key (if it is still the one queued).
    fn evict_front(&mut self) {
        let Some(queued) = self.order.pop_front() else {
            return;
        };
        let mut seen = None;
        if let Some(map) = self.topics.get_mut(&queued.topic)
            && map.get(&queued.key).is_some_and(|s| s.id == queued.id)
        {
            seen = map.remove(&queued.key);
            self.held -= 1;
            if map.is_empty() {
                self.topics.remove(&queued.topic);
            }
        }
        self.record(Step::Evicted { queued, seen });
    }

    /// Drops the oldest keys whose window has ended at `now_ms`. The queue
    /// is in apply order, which is time order but for a clock step back:
    /// a key behind a younger one waits for it (the cap still holds).
    fn expire(&mut self, now_ms: u64) {
        while let Some(front) = self.order.front() {
            let live = self
                .topics
                .get(&front.topic)
                .and_then(|m| m.get(&front.key))
                .filter(|s| s.id == front.id)
                .is_some_and(|s| self.live(s, now_ms));
            if live {
                break;
            }
            self.evict_front();
        }
    }

    fn live(&self, s: &Seen, now_ms: u64) -> bool {
        s.ts_ms.saturating_add(self.window_ms) > now_ms
    }

    /// Where `key` was seen on `topic` within the window, if it was.
    pub(super) fn lookup(&self, topic: &str, key: &[u8], now_ms: u64) -> Option<Seen> {
        if self.window_ms == 0 {
            return None;
        }
        let seen = *self.topics.get(topic)?.get(key)?;
        self.live(&seen, now_ms).then_some(seen)
    }

    /// A publish of one message (PUB, DPUB) with `headers`.
    pub(super) fn check_one(&self, topic: &str, headers: &[u8], now_ms: u64) -> Repeat {
        match dedup_key(headers).and_then(|k| self.lookup(topic, k, now_ms)) {
            Some(s) => Repeat::Dup(s.id, s.id),
            None => Repeat::New,
        }
    }

    /// An MPUB whose messages have `headers`. It is written whole or not
    /// at all, so it is either new (none of its keys seen) or the exact
    /// repeat of one earlier MPUB (every message keyed, the keys those of
    /// that MPUB in order, nothing more or less); anything between is
    /// refused with a text naming the key, and nothing is written.
    pub(super) fn check_batch(
        &self,
        topic: &str,
        headers: &[&[u8]],
        now_ms: u64,
    ) -> Result<Repeat, String> {
        if self.window_ms == 0 {
            return Ok(Repeat::New);
        }
        let keys: Vec<Option<&[u8]>> = headers.iter().map(|h| dedup_key(h)).collect();
        for (i, k) in keys.iter().enumerate() {
            if let Some(k) = k
                && keys[..i].contains(&Some(*k))
            {
                return Err(format!(
                    "dedup key 'msgid={}' appears twice in one MPUB",
                    String::from_utf8_lossy(k)
                ));
            }
        }
        let seen: Vec<Option<Seen>> = keys
            .iter()
            .map(|k| k.and_then(|k| self.lookup(topic, k, now_ms)))
            .collect();
        let Some(at) = seen.iter().position(Option::is_some) else {
            return Ok(Repeat::New);
        };
        let first = seen[0].map(|s| s.first);
        let n = seen.len() as u64;
        let exact = first.is_some_and(|f| {
            seen.iter().enumerate().all(|(i, s)| {
                s.is_some_and(|s| {
                    s.first == f && s.id == f + i as u64 && s.last == (i as u64 + 1 == n)
                })
            })
        });
        match (exact, first) {
            (true, Some(f)) => Ok(Repeat::Dup(f, f + n - 1)),
            _ => {
                let key = keys[at].map(String::from_utf8_lossy).unwrap_or_default();
                let id = seen[at].map_or(0, |s| s.id);
                Err(format!(
                    "dedup key 'msgid={key}' was published as event id {id}, but this MPUB \
                     is not a repeat of that one: an MPUB is written whole, so its keys must \
                     be all new or exactly those of one earlier MPUB, in order"
                ))
            }
        }
    }

    /// A topic is gone: its keys go with it (a new topic of the name
    /// starts with none).
    pub(super) fn drop_topic(&mut self, topic: &str) {
        if let Some((t, map)) = self.topics.remove_entry(topic) {
            self.held -= map.len();
            self.record(Step::TopicDropped(t, map));
        }
    }

    /// A slave's full resync: everything goes (not journalled: the resync
    /// starts over after a failure).
    pub(super) fn clear(&mut self) {
        self.topics.clear();
        self.order.clear();
        self.held = 0;
        self.run_first = None;
    }

    /// The keys still in the window at `now_ms`, oldest first, for a
    /// checkpoint: (topic, key, where seen).
    pub(super) fn live_keys(&self, now_ms: u64) -> Vec<(&str, &[u8], Seen)> {
        self.order
            .iter()
            .filter_map(|q| {
                let s = *self.topics.get(&q.topic)?.get(&q.key)?;
                (s.id == q.id && self.live(&s, now_ms)).then_some((&*q.topic, &*q.key, s))
            })
            .collect()
    }

    /// A key loaded from a checkpoint (oldest first), not journalled.
    pub(super) fn load(&mut self, topic: &str, key: &[u8], seen: Seen, now_ms: u64) {
        if self.window_ms == 0 || !self.live(&seen, now_ms) {
            return;
        }
        self.insert(topic, key, seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(window: u64, cap: usize) -> Dedup {
        let mut d = Dedup::default();
        d.configure(window, cap);
        d
    }

    #[test]
    fn a_key_is_known_within_the_window_only() {
        let mut d = table(100, 10);
        d.note("t", b"a=1 msgid=k1", 5, 1000, false, 1000);
        assert_eq!(d.check_one("t", b"msgid=k1", 1050), Repeat::Dup(5, 5));
        assert_eq!(d.check_one("u", b"msgid=k1", 1050), Repeat::New);
        assert_eq!(d.check_one("t", b"msgid=k1", 1100), Repeat::New);
        d.note("t", b"", 6, 1200, false, 1200);
        assert_eq!(d.held(), 0, "the window's end frees the key");
    }

    #[test]
    fn the_cap_drops_the_oldest() {
        let mut d = table(1000, 2);
        for (i, k) in [b"msgid=a", b"msgid=b", b"msgid=c"].iter().enumerate() {
            d.note("t", *k, i as u64 + 1, 10, false, 10);
        }
        assert_eq!(d.held(), 2);
        assert_eq!(d.check_one("t", b"msgid=a", 10), Repeat::New);
        assert_eq!(d.check_one("t", b"msgid=c", 10), Repeat::Dup(3, 3));
    }

    #[test]
    fn an_mpub_is_new_or_an_exact_repeat() {
        let mut d = table(1000, 10);
        d.note("t", b"msgid=a", 7, 10, true, 10);
        d.note("t", b"msgid=b", 8, 10, false, 10);
        let h = |v: &[&'static [u8]]| v.to_vec();
        assert_eq!(
            d.check_batch("t", &h(&[b"msgid=a", b"msgid=b"]), 10),
            Ok(Repeat::Dup(7, 8))
        );
        assert_eq!(
            d.check_batch("t", &h(&[b"msgid=x", b"msgid=y"]), 10),
            Ok(Repeat::New)
        );
        assert!(d.check_batch("t", &h(&[b"msgid=a"]), 10).is_err());
        assert!(
            d.check_batch("t", &h(&[b"msgid=b", b"msgid=a"]), 10)
                .is_err()
        );
        assert!(
            d.check_batch("t", &h(&[b"msgid=a", b"msgid=b", b"msgid=c"]), 10)
                .is_err()
        );
        assert!(
            d.check_batch("t", &h(&[b"msgid=z", b"msgid=z"]), 10)
                .is_err()
        );
    }

    #[test]
    fn a_failed_batch_takes_its_keys_back() {
        let mut d = table(1000, 1);
        d.note("t", b"msgid=a", 1, 10, false, 10);
        d.begin();
        d.note("t", b"msgid=b", 2, 10, false, 10);
        d.drop_topic("t");
        d.revert();
        assert_eq!(d.held(), 1);
        assert_eq!(d.check_one("t", b"msgid=a", 10), Repeat::Dup(1, 1));
        assert_eq!(d.check_one("t", b"msgid=b", 10), Repeat::New);
    }

    #[test]
    fn off_records_nothing() {
        let mut d = table(0, 10);
        d.note("t", b"msgid=a", 1, 10, false, 10);
        assert_eq!(d.held(), 0);
        assert_eq!(d.check_one("t", b"msgid=a", 10), Repeat::New);
    }
}
