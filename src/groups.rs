//! The runtime registry of consumer-group subscribers: for each group of a
//! topic incarnation (topic name, create id, group name) its mode while it
//! has members; for an exclusive group the one active subscriber, a FIFO of
//! standbys and the in-memory hint a subscriber leaves its successor (which
//! messages of a failed batch to send alone); for a shared group its
//! members and their [`Dispatcher`] (what is out to whom, ACKed above the
//! watermark, owed again).
//!
//! Owned by the broker (its `group_subs`); used by the
//! connection threads that run group subscriptions and answer GROUPS and
//! GROUPDEL. It knows nothing of topics or the writer: the durable group
//! state (committed position, failed deliveries of the next message and
//! whether the last one was that message alone) lives in the topic and is
//! changed only through the writer. Failed deliveries are counted per
//! group (for `/metrics`) and in the server's STATS.
//!
//! Locks: the registry's map mutex, then one slot's mutex (always in that
//! order, never the other way); each slot has a condvar its standbys wait on.
//! A [`Member`] is an RAII guard: however its connection ends (an error,
//! a close, a panic unwinding), dropping it leaves the slot, and if it was
//! the active subscriber the longest-waiting standby becomes active at once,
//! under the slot's lock, so takeover follows join order exactly; a shared
//! member's batches go back to its group's dispatcher. A slot goes when its
//! last member leaves, unless it holds a suspect range for the next
//! subscriber (cleared once the group commits past it); a shared group's
//! dispatcher goes with its last member.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::dispatch::Dispatcher;
use crate::protocol::GroupMode;
use crate::stats::Stats;

/// One group of one topic incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub topic: String,
    /// The topic's CREATE id: a topic re-created under the same name is
    /// another topic, with other groups.
    pub create_id: u64,
    pub group: String,
}

#[derive(Debug, Default)]
struct SlotState {
    active: Option<u64>,
    standbys: VecDeque<u64>,
    /// GROUPDEL removed the group: every member ends.
    ended: bool,
    /// The last event id of batches whose delivery failed: up to there the
    /// next subscriber sends one message per batch, to isolate the culprit
    /// (memory only; the durable `failed_at` covers the first message, and
    /// whether it went alone).
    suspect_until: u64,
    /// Messages of the batch sent to the active subscriber, not ACKed yet.
    pending: u64,
    /// The mode of the members now (any mode when there are none).
    mode: GroupMode,
    /// Members of a shared group (all active).
    sharers: usize,
    /// A shared group's work, while it has members.
    dispatch: Option<Dispatcher>,
}

impl SlotState {
    fn has_members(&self) -> bool {
        self.active.is_some() || !self.standbys.is_empty() || self.sharers > 0
    }
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    turn: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every group that has subscribers now.
#[derive(Debug, Default)]
pub struct Registry {
    slots: Mutex<HashMap<GroupKey, Arc<Slot>>>,
    next_token: Mutex<u64>,
    /// Per group, since start (for `/metrics`): kept when its subscribers
    /// leave, dropped with the group (GROUPDEL).
    counters: Mutex<HashMap<GroupKey, GroupCounters>>,
    /// The server's counters: failed deliveries count in STATS too.
    stats: Arc<Stats>,
}

/// What a group's subscribers did since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Batches whose delivery ended without an ACK (to be delivered again).
    pub failed_deliveries: u64,
    /// Messages given up on after `maxDeliver` (dead-lettered or skipped).
    pub dead_lettered: u64,
}

/// What a member's wait for its turn ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This member is the active subscriber.
    Active,
    /// Still a standby (the wait timed out).
    Waiting,
    /// The group was removed (GROUPDEL).
    Ended,
}

/// One subscriber's place in a group; leaves it when dropped.
#[derive(Debug)]
pub struct Member<'a> {
    registry: &'a Registry,
    key: GroupKey,
    slot: Arc<Slot>,
    token: u64,
}

impl Registry {
    /// A registry that counts failed deliveries in `stats` as well.
    pub fn new(stats: Arc<Stats>) -> Registry {
        Registry {
            stats,
            ..Registry::default()
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<GroupKey, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins an exclusive group: active if nobody is, else the last standby.
    #[cfg(test)]
    pub fn join(&self, key: GroupKey) -> Member<'_> {
        match self.join_as(key, GroupMode::Exclusive, 0) {
            Ok(m) => m,
            Err(_) => unreachable!("a test joins one mode"),
        }
    }

    /// Joins the group in `mode`: exclusive as [`Registry::join`]; shared
    /// as one more member of the group's dispatcher (made with
    /// `max_pending` by its first member). `Err` with the group's mode
    /// when its members have another.
    pub fn join_as(
        &self,
        key: GroupKey,
        mode: GroupMode,
        max_pending: u64,
    ) -> Result<Member<'_>, GroupMode> {
        let token = {
            let mut n = self.next_token.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let mut map = self.map();
        let slot = Arc::clone(map.entry(key.clone()).or_default());
        {
            let mut st = slot.lock();
            if st.has_members() && st.mode != mode {
                return Err(st.mode);
            }
            st.mode = mode;
            match mode {
                GroupMode::Shared => {
                    st.sharers += 1;
                    if st.dispatch.is_none() {
                        st.dispatch = Some(Dispatcher::new(max_pending));
                    }
                }
                GroupMode::Exclusive => {
                    // The group leaves shared mode: what its members left
                    // unacknowledged is the exclusive subscriber's to deliver.
                    st.dispatch = None;
                    if st.active.is_none() {
                        st.active = Some(token);
                    } else {
                        st.standbys.push_back(token);
                    }
                }
            }
        }
        drop(map);
        Ok(Member {
            registry: self,
            key,
            slot,
            token,
        })
    }

    /// A shared group's members and pending messages, while it has
    /// members (GROUPS adds them to the group's line).
    pub fn shared(&self, key: &GroupKey) -> Option<(usize, u64)> {
        let slot = Arc::clone(self.map().get(key)?);
        let st = slot.lock();
        let d = st.dispatch.as_ref().filter(|_| st.sharers > 0)?;
        Some((st.sharers, d.pending()))
    }

    /// Messages sent to the active subscriber (every member of a shared
    /// group) and not ACKed yet.
    pub fn pending(&self, key: &GroupKey) -> u64 {
        self.map().get(key).map_or(0, |slot| {
            let st = slot.lock();
            st.dispatch.as_ref().map_or(st.pending, Dispatcher::pending)
        })
    }

    /// The group's counters since start.
    pub fn counters(&self, key: &GroupKey) -> GroupCounters {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.get(key).copied().unwrap_or_default()
    }

    fn count(&self, key: &GroupKey, f: impl FnOnce(&mut GroupCounters)) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        f(c.entry(key.clone()).or_default());
    }

    /// (an active subscriber exists — any member of a shared group —,
    /// standbys waiting) for GROUPS.
    pub fn counts(&self, key: &GroupKey) -> (bool, usize) {
        match self.map().get(key) {
            Some(slot) => {
                let st = slot.lock();
                (st.active.is_some() || st.sharers > 0, st.standbys.len())
            }
            None => (false, 0),
        }
    }

    /// GROUPDEL succeeded: every member of the group ends, and a new SUB
    /// of the same name starts a new slot.
    pub fn end_group(&self, key: &GroupKey) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        let Some(slot) = self.map().remove(key) else {
            return;
        };
        slot.lock().ended = true;
        slot.turn.notify_all();
    }
}

impl Member<'_> {
    pub fn is_active(&self) -> bool {
        let st = self.slot.lock();
        st.active == Some(self.token) || st.mode == GroupMode::Shared
    }

    /// This member's token (a shared group's dispatcher knows it by it).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Runs `f` on the shared group's dispatcher (`None` for an exclusive
    /// group) and wakes the members waiting for a change.
    pub fn dispatch<R>(&self, f: impl FnOnce(&mut Dispatcher) -> R) -> Option<R> {
        let r = self.slot.lock().dispatch.as_mut().map(f);
        self.slot.turn.notify_all();
        r
    }

    /// The group's topic is gone: its dispatcher goes too (else an idle
    /// shared group's would stay for a topic that no longer exists).
    pub fn topic_gone(&self) {
        self.slot.lock().dispatch = None;
        self.slot.turn.notify_all();
    }

    /// A shared member waits up to `timeout` for another member's answer
    /// (or GROUPDEL).
    pub fn wait_change(&self, timeout: Duration) {
        let st = self.slot.lock();
        if st.ended {
            return;
        }
        drop(self.slot.turn.wait_timeout(st, timeout));
    }

    /// `n` batches of a shared member were delivered without an ACK.
    pub fn count_failed(&self, n: u64) {
        if n > 0 {
            self.registry.count(&self.key, |c| c.failed_deliveries += n);
            Stats::add(&self.registry.stats.group_redeliveries, n);
        }
    }

    /// True once GROUPDEL removed the group.
    pub fn ended(&self) -> bool {
        self.slot.lock().ended
    }

    /// Waits up to `timeout` to become the active subscriber.
    pub fn wait_turn(&self, timeout: Duration) -> Turn {
        let deadline = Instant::now() + timeout;
        let mut st = self.slot.lock();
        loop {
            if st.ended {
                return Turn::Ended;
            }
            if st.active == Some(self.token) {
                return Turn::Active;
            }
            let now = Instant::now();
            if now >= deadline {
                return Turn::Waiting;
            }
            st = match self.slot.turn.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Up to where the next subscriber sends one message per batch (see
    /// [`Member::failed`]).
    pub fn suspect_until(&self) -> u64 {
        self.slot.lock().suspect_until
    }

    /// The delivery of a batch ending at `last` failed: its messages go
    /// one at a time until the group is past them.
    pub fn failed(&self, last: u64) {
        {
            let mut st = self.slot.lock();
            st.suspect_until = st.suspect_until.max(last);
            st.pending = 0;
        }
        self.registry.count(&self.key, |c| c.failed_deliveries += 1);
        Stats::add(&self.registry.stats.group_redeliveries, 1);
    }

    /// `n` messages were sent to this (active) subscriber, or, with 0, the
    /// batch was ACKed or given back.
    pub fn pending(&self, n: u64) {
        self.slot.lock().pending = n;
    }

    /// A message was given up on after `maxDeliver`.
    pub fn dead_lettered(&self) {
        self.registry.count(&self.key, |c| c.dead_lettered += 1);
    }

    /// The group committed `position`: what lies at or before it is no
    /// longer suspect.
    pub fn passed(&self, position: u64) {
        let mut st = self.slot.lock();
        if st.suspect_until <= position {
            st.suspect_until = 0;
        }
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        let mut map = self.registry.map();
        let mut st = self.slot.lock();
        let mut failed = 0;
        if st.mode == GroupMode::Shared && st.sharers > 0 {
            st.sharers = st.sharers.saturating_sub(1);
            // The dispatcher stays when the last member leaves: the next
            // ones keep its per-message failure counts (maxDeliver holds
            // across member churn) and the ACKs above the watermark.
            failed = st.dispatch.as_mut().map_or(0, |d| d.leave(self.token));
        } else if st.active == Some(self.token) {
            // The longest-waiting standby takes over, now.
            st.active = st.standbys.pop_front();
            st.pending = 0;
        } else {
            st.standbys.retain(|&t| t != self.token);
        }
        // A slot with a suspect range stays for the next subscriber (one
        // small entry per group left with a failed delivery).
        let empty = !st.has_members() && st.suspect_until == 0 && st.dispatch.is_none();
        drop(st);
        self.slot.turn.notify_all();
        if empty
            && map
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            map.remove(&self.key);
        }
        drop(map);
        self.count_failed(failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(g: &str) -> GroupKey {
        GroupKey {
            topic: "t".into(),
            create_id: 1,
            group: g.into(),
        }
    }

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn the_first_is_active_and_standbys_take_over_in_join_order() {
        let r = Registry::default();
        let a = r.join(key("g"));
        let b = r.join(key("g"));
        let c = r.join(key("g"));
        let d = r.join(key("g"));
        assert!(a.is_active() && !b.is_active() && !c.is_active());
        assert_eq!(r.counts(&key("g")), (true, 3));
        assert_eq!(b.wait_turn(NOW), Turn::Waiting);
        // A standby that leaves loses its place; the others keep theirs.
        drop(c);
        assert_eq!(r.counts(&key("g")), (true, 2));
        drop(a);
        assert!(b.is_active() && !d.is_active());
        assert_eq!(b.wait_turn(NOW), Turn::Active);
        drop(b);
        assert!(d.is_active());
        assert_eq!(r.counts(&key("g")), (true, 0));
        drop(d);
        assert_eq!(r.counts(&key("g")), (false, 0));
        assert!(r.map().is_empty(), "an empty slot is removed");
    }

    #[test]
    fn groups_and_topic_incarnations_are_separate() {
        let r = Registry::default();
        let a = r.join(key("g"));
        let other = r.join(key("h"));
        let again = r.join(GroupKey {
            create_id: 2,
            ..key("g")
        });
        assert!(a.is_active() && other.is_active() && again.is_active());
    }

    #[test]
    fn a_waiting_standby_wakes_as_soon_as_the_active_one_leaves() {
        let r = Registry::default();
        let a = r.join(key("g"));
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let r = &r;
            s.spawn(move || {
                let b = r.join(key("g"));
                tx.send(()).ok();
                // Bounded: the test fails rather than hangs.
                let turn = b.wait_turn(Duration::from_secs(20));
                tx.send(()).ok();
                assert_eq!(turn, Turn::Active);
            });
            rx.recv_timeout(Duration::from_secs(20)).expect("joined");
            let left = Instant::now();
            drop(a);
            rx.recv_timeout(Duration::from_secs(20)).expect("woken");
            assert!(left.elapsed() < Duration::from_secs(5));
        });
    }

    #[test]
    fn end_group_ends_every_member_and_a_new_join_starts_afresh() {
        let r = Registry::default();
        let a = r.join(key("g"));
        let b = r.join(key("g"));
        a.failed(9);
        r.end_group(&key("g"));
        assert!(a.ended() && b.ended());
        assert_eq!(b.wait_turn(NOW), Turn::Ended);
        let fresh = r.join(key("g"));
        assert!(fresh.is_active() && !fresh.ended());
        assert_eq!(fresh.suspect_until(), 0);
        drop(a);
        drop(b);
        // The old members leaving does not touch the new slot.
        assert_eq!(r.counts(&key("g")), (true, 0));
    }

    #[test]
    fn a_suspect_range_outlives_the_member_that_left_it() {
        let r = Registry::default();
        let a = r.join(key("g"));
        let b = r.join(key("g"));
        a.failed(7);
        a.failed(5);
        drop(a);
        assert!(b.is_active());
        assert_eq!(b.suspect_until(), 7);
        // Even with nobody left, the next subscriber finds it.
        drop(b);
        let c = r.join(key("g"));
        assert_eq!(c.suspect_until(), 7);
        c.passed(5);
        assert_eq!(c.suspect_until(), 7);
        c.passed(7);
        assert_eq!(c.suspect_until(), 0);
        drop(c);
        assert!(r.map().is_empty());
    }

    #[test]
    fn a_shared_groups_dispatcher_outlives_its_members_until_an_exclusive_one_joins() {
        use crate::dispatch::Next;
        let r = Registry::default();
        let a = r.join_as(key("g"), GroupMode::Shared, 10).expect("shared");
        a.dispatch(|d| d.place(0, 0, 1));
        drop(a);
        assert_eq!(r.shared(&key("g")), None, "no members, no GROUPS tail");
        // The next shared member finds the group where the last one left it.
        let b = r.join_as(key("g"), GroupMode::Shared, 10).expect("shared");
        let next = b.dispatch(|d| d.take(1, 0, 5, 2, 0, b.token()));
        assert!(matches!(next, Some(Next::Batch(_))), "{next:?}");
        assert_eq!(r.shared(&key("g")), Some((1, 2)));
        drop(b);
        // An exclusive subscriber takes the group: the dispatcher goes.
        let c = r
            .join_as(key("g"), GroupMode::Exclusive, 10)
            .expect("exclusive");
        drop(c);
        let d = r.join_as(key("g"), GroupMode::Shared, 10).expect("shared");
        let next = d.dispatch(|x| x.take(1, 0, 5, 2, 0, d.token()));
        assert!(matches!(next, Some(Next::Place)), "{next:?}");
        // The topic went: so does the dispatcher.
        d.topic_gone();
        assert!(d.dispatch(|_| ()).is_none());
    }
}
