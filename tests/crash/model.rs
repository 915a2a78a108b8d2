//! What must be in the store, and the check after each restart: a
//! consistent read of every topic (SUB from 0) compared with every
//! acknowledged write, and what the unacknowledged ones turned out to be
//! folded in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use smss::client::{Client, SubEvent, SubOptions};

use crate::common::{Server, WAIT, stat};
use crate::publisher::{Acked, Headers, Op};
use crate::{LONG_DELAY_MS, PERM_TOPICS};

/// Stable snapshots retried when `delayed_pending` disagrees with what the
/// read saw: STATS counters are published a moment before the topics.
const PENDING_TRIES: usize = 5;

#[derive(Clone, Debug, PartialEq)]
struct Msg {
    headers: Headers,
    payload: Vec<u8>,
}

/// What a payload not yet seen may turn out to be.
pub(crate) enum Kind {
    /// An unacknowledged PUB.
    Pub,
    /// Part `part` of unacknowledged MPUB `group`.
    MPub { group: usize, part: usize },
    /// A DPUB's message; `dpub_id` is known when it was acknowledged.
    Fire { dpub_id: Option<u64> },
}

pub(crate) struct Expected {
    pub(crate) topic: String,
    pub(crate) headers: Headers,
    pub(crate) kind: Kind,
}

#[derive(Default)]
pub(crate) struct Model {
    topics: BTreeMap<String, BTreeMap<u64, Msg>>,
    /// Names that must never exist again: deleted, or whose CREATE was in
    /// flight and did not happen.
    gone: BTreeSet<String>,
    maybe_created: BTreeSet<String>,
    maybe_deleted: BTreeSet<String>,
    /// By payload (unique): writes that may still appear.
    pub(crate) expect: HashMap<Vec<u8>, Expected>,
    /// Unacknowledged MPUBs of the last round: (topic, message count).
    mpub_groups: Vec<(String, usize)>,
    /// Every id acknowledged or seen.
    ids: HashSet<u64>,
    /// Every id known so far is at most this; every new one must be above.
    pub(crate) floor: u64,
}

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) pubs: u64,
    pub(crate) mpubs: u64,
    pub(crate) dpubs: u64,
    pub(crate) creates: u64,
    pub(crate) deletes: u64,
}

impl Model {
    pub(crate) fn new_id(&mut self, id: u64, what: &str) {
        assert!(
            id > self.floor,
            "{what}: id {id} is not above {}, the highest id known before",
            self.floor
        );
        assert!(self.ids.insert(id), "{what}: id {id} acknowledged twice");
    }

    fn topic(&mut self, name: &str, what: &str) -> &mut BTreeMap<u64, Msg> {
        self.topics
            .get_mut(name)
            .unwrap_or_else(|| panic!("{what}: acknowledged on {name}, which the model lacks"))
    }

    pub(crate) fn acked(&mut self, op: Op, a: Acked, tally: &mut Tally) {
        let what = format!("{op:?} -> {a:?}");
        match (op, a) {
            (
                Op::Pub {
                    topic,
                    headers,
                    payload,
                },
                Acked::Id(id),
            ) => {
                self.new_id(id, &what);
                self.topic(&topic, &what)
                    .insert(id, Msg { headers, payload });
                tally.pubs += 1;
            }
            (Op::MPub { topic, payloads }, Acked::Range(first, last)) => {
                assert_eq!(
                    last.checked_sub(first).map(|d| d + 1),
                    Some(payloads.len() as u64),
                    "{what}: an MPUB's ids are consecutive, one per message"
                );
                for (k, payload) in payloads.into_iter().enumerate() {
                    let id = first + k as u64;
                    self.new_id(id, &what);
                    let msg = Msg {
                        headers: Vec::new(),
                        payload,
                    };
                    self.topic(&topic, &what).insert(id, msg);
                }
                tally.mpubs += 1;
            }
            (
                Op::DPub {
                    topic,
                    headers,
                    payload,
                    ..
                },
                Acked::Id(id),
            ) => {
                self.new_id(id, &what);
                let kind = Kind::Fire { dpub_id: Some(id) };
                let e = Expected {
                    topic,
                    headers,
                    kind,
                };
                self.expect.insert(payload, e);
                tally.dpubs += 1;
            }
            (Op::Create(t), Acked::Id(id)) => {
                self.new_id(id, &what);
                assert!(self.topics.insert(t, BTreeMap::new()).is_none(), "{what}");
                tally.creates += 1;
            }
            (Op::Delete(t), Acked::Id(id)) => {
                self.new_id(id, &what);
                assert!(self.topics.remove(&t).is_some(), "{what}");
                self.gone.insert(t);
                tally.deletes += 1;
            }
            (op, a) => panic!("reply {a:?} does not fit {op:?}"),
        }
    }

    pub(crate) fn in_flight(&mut self, op: Op) {
        let mut expect = |topic: String, headers: Headers, payload: Vec<u8>, kind: Kind| {
            let e = Expected {
                topic,
                headers,
                kind,
            };
            self.expect.insert(payload, e);
        };
        match op {
            Op::Pub {
                topic,
                headers,
                payload,
            } => expect(topic, headers, payload, Kind::Pub),
            Op::MPub { topic, payloads } => {
                let group = self.mpub_groups.len();
                let n = payloads.len();
                for (part, p) in payloads.into_iter().enumerate() {
                    expect(topic.clone(), Vec::new(), p, Kind::MPub { group, part });
                }
                self.mpub_groups.push((topic, n));
            }
            Op::DPub {
                topic,
                headers,
                payload,
                ..
            } => expect(topic, headers, payload, Kind::Fire { dpub_id: None }),
            Op::Create(t) => {
                self.maybe_created.insert(t);
            }
            Op::Delete(t) => {
                self.maybe_deleted.insert(t);
            }
        }
    }

    /// DPUB messages not in `seen`: (acknowledged, unacknowledged).
    fn unfired(&self, seen: &HashSet<&[u8]>) -> (u64, u64) {
        let (mut acked, mut maybe) = (0, 0);
        for (p, e) in &self.expect {
            if let Kind::Fire { dpub_id } = e.kind
                && !seen.contains(p.as_slice())
            {
                if dpub_id.is_some() {
                    acked += 1;
                } else {
                    maybe += 1;
                }
            }
        }
        (acked, maybe)
    }

    pub(crate) fn scratch(&self) -> Vec<String> {
        self.topics
            .keys()
            .filter(|t| !PERM_TOPICS.contains(&t.as_str()))
            .cloned()
            .collect()
    }
}

// ------------------------------------------------------ reading it back

struct Topic {
    messages: u64,
    first_id: u64,
    last_id: u64,
    got: Vec<(u64, Msg)>,
}

struct Snapshot {
    last_id: u64,
    pending: u64,
    topics: BTreeMap<String, Topic>,
}

/// Every message of `topic` from the start, headers included; `total` is
/// the count INFO/LIST gave, so this reads exactly what was there then.
fn read_topic(c: &mut Client, topic: &str, total: usize) -> Vec<(u64, Msg)> {
    let mut got = Vec::with_capacity(total);
    if total == 0 {
        return got;
    }
    let opts = SubOptions {
        batch: Some(1000),
        ..SubOptions::default()
    };
    c.subscribe(topic, "0", &opts).expect("SUB");
    for _ in 0..total * 2 {
        match c.next_event().expect("subscription event") {
            SubEvent::Batch(ms) => {
                got.extend(ms.into_iter().map(|m| {
                    let msg = Msg {
                        headers: m.headers,
                        payload: m.payload,
                    };
                    (m.event_id, msg)
                }));
                if got.len() >= total {
                    break;
                }
                c.ack().expect("ACK");
            }
            SubEvent::Alive => {}
            other => panic!("SUB {topic}: unexpected {other:?}"),
        }
    }
    // STOP answers the last batch: after an ACK the server would first
    // wait out its idle poll before it reads the STOP.
    c.stop().expect("STOP");
    got.truncate(total);
    got
}

fn stats(c: &mut Client) -> (u64, u64) {
    (stat(c, "last_event_id"), stat(c, "delayed_pending"))
}

/// One read of everything; `None` when a write happened during it (a
/// delayed message fired), so the read may mix two states.
fn snapshot_once(c: &mut Client) -> Option<Snapshot> {
    let before = stats(c);
    let mut topics = BTreeMap::new();
    for t in c.list().expect("LIST") {
        let got = read_topic(c, &t.name, t.messages as usize);
        let topic = Topic {
            messages: t.messages,
            first_id: t.first_id,
            last_id: t.last_id,
            got,
        };
        topics.insert(t.name, topic);
    }
    let after = stats(c);
    (before == after).then_some(Snapshot {
        last_id: after.0,
        pending: after.1,
        topics,
    })
}

/// A consistent read whose `delayed_pending` fits the model: at least the
/// acknowledged DPUBs not yet delivered, at most those plus the ones that
/// were in flight.
fn snapshot(s: &Server, model: &Model) -> Snapshot {
    let mut c = s.client();
    let mut mismatch = 0;
    // Every delayed message is due within the longest delay, so the server
    // is quiet for good by then.
    let deadline = Instant::now() + Duration::from_millis(LONG_DELAY_MS.1) + WAIT;
    for tries in 0..10_000 {
        let Some(snap) = snapshot_once(&mut c) else {
            // Delayed messages are firing; nothing signals when they are
            // done, so look again shortly.
            assert!(
                Instant::now() < deadline,
                "the server did not stop writing for a moment in {tries} reads"
            );
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let seen: HashSet<&[u8]> = snap
            .topics
            .values()
            .flat_map(|t| t.got.iter().map(|(_, m)| m.payload.as_slice()))
            .collect();
        let (acked, maybe) = model.unfired(&seen);
        if (acked..=acked + maybe).contains(&snap.pending) {
            return snap;
        }
        mismatch += 1;
        assert!(
            mismatch < PENDING_TRIES,
            "STATS delayed_pending {} but {acked} acknowledged DPUBs are undelivered \
             and {maybe} more were in flight: an acknowledged DPUB was lost or a phantom is pending",
            snap.pending
        );
    }
    panic!("the server did not stop writing for a moment in 10000 reads")
}

// ---------------------------------------------------------------- checks

/// Checks a restarted server against the model and folds what the
/// unacknowledged writes turned out to be into it. Returns a summary line.
pub(crate) fn check(s: &Server, model: &mut Model, when: &str) -> String {
    let snap = snapshot(s, model);
    let exists: BTreeSet<&String> = snap.topics.keys().collect();
    for g in &model.gone {
        assert!(!exists.contains(g), "{when}: deleted topic {g} is back");
    }
    let names: Vec<String> = model.topics.keys().cloned().collect();
    for name in names {
        if exists.contains(&name) {
            continue;
        }
        assert!(
            model.maybe_deleted.contains(&name),
            "{when}: topic {name} lost"
        );
        model.topics.remove(&name);
        model.gone.insert(name);
    }
    for name in exists {
        if !model.topics.contains_key(name) {
            assert!(
                model.maybe_created.contains(name),
                "{when}: topic {name} appeared from nowhere"
            );
            model.topics.insert(name.clone(), BTreeMap::new());
        }
    }
    for name in std::mem::take(&mut model.maybe_created) {
        if !model.topics.contains_key(&name) {
            model.gone.insert(name); // the CREATE did not happen
        }
    }
    model.maybe_deleted.clear();

    let mut groups: Vec<Vec<(usize, u64)>> = vec![Vec::new(); model.mpub_groups.len()];
    let (mut messages, mut found, mut fired, mut max_seen) = (0, 0, 0, 0);
    for (name, t) in &snap.topics {
        let what = format!("{when}: topic {name}");
        let ids: Vec<u64> = t.got.iter().map(|x| x.0).collect();
        assert_eq!(ids.len() as u64, t.messages, "{what}: SUB from 0 gave all");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{what}: ids strictly increase: {ids:?}"
        );
        assert_eq!(
            (t.first_id, t.last_id),
            (
                ids.first().copied().unwrap_or(0),
                ids.last().copied().unwrap_or(0)
            ),
            "{what}: LIST's first/last id match the messages"
        );
        messages += ids.len();
        max_seen = max_seen.max(t.last_id);
        for (id, msg) in &t.got {
            if let Some(m) = model.topics[name].get(id) {
                assert_eq!(m, msg, "{what}: acknowledged id {id} changed");
                continue;
            }
            let Some(e) = model.expect.remove(&msg.payload) else {
                let head = String::from_utf8_lossy(&msg.payload[..msg.payload.len().min(24)]);
                panic!("{what}: id {id} ({head:?}…) was never written, or is there twice");
            };
            assert_eq!(&e.topic, name, "{what}: id {id} is in the wrong topic");
            assert_eq!(e.headers, msg.headers, "{what}: id {id}'s headers");
            match e.kind {
                Kind::Pub => found += 1,
                Kind::MPub { group, part } => {
                    groups[group].push((part, *id));
                    found += 1;
                }
                Kind::Fire { dpub_id } => {
                    if let Some(d) = dpub_id {
                        assert!(*id > d, "{what}: DPUB {d} fired as {id}, below it");
                    }
                    fired += 1;
                }
            }
            model.new_id(*id, &what);
            model.topic(name, &what).insert(*id, msg.clone());
        }
        let want = model.topics[name].len();
        if want != ids.len() {
            let have: BTreeSet<u64> = ids.iter().copied().collect();
            let lost: Vec<&u64> = model.topics[name]
                .keys()
                .filter(|id| !have.contains(id))
                .collect();
            panic!("{what}: acknowledged ids lost: {lost:?}");
        }
    }
    for (g, (topic, n)) in model.mpub_groups.iter().enumerate() {
        let mut parts = std::mem::take(&mut groups[g]);
        parts.sort_unstable();
        assert!(
            parts.is_empty() || parts.len() == *n,
            "{when}: an unacknowledged MPUB of {n} on {topic} is partly there: {parts:?}"
        );
        for (k, (part, id)) in parts.iter().enumerate() {
            assert_eq!(
                (*part, *id),
                (k, parts[0].1 + k as u64),
                "{when}: MPUB on {topic} has consecutive ids in order: {parts:?}"
            );
        }
    }
    model.mpub_groups.clear();
    // Unacknowledged PUB/MPUB not in the log now never will be; a DPUB may
    // still be pending and fire later.
    model
        .expect
        .retain(|_, e| matches!(e.kind, Kind::Fire { .. }));
    assert!(
        snap.last_id >= max_seen,
        "{when}: STATS last_event_id {} is below id {max_seen} in the log",
        snap.last_id
    );
    model.floor = model.floor.max(snap.last_id).max(max_seen);
    format!(
        "{} topics, {messages} messages ({found} from in-flight writes, {fired} new from DPUBs), \
         {} DPUBs pending, last id {}",
        snap.topics.len(),
        snap.pending,
        snap.last_id
    )
}
