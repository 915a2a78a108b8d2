//! The dispatcher of a shared consumer group: which messages (index
//! entries of the topic) are handed out to which member, which came back
//! ACKed above the low watermark, which go out again, and where the
//! watermark — the group's committed position — stands.
//!
//! Pure state, no I/O, no locks, no clock: one lives in a shared group's
//! registry slot ([`crate::groups`], under the slot's mutex) while the group
//! has members, and the members' connection threads ([`crate::group_shared`])
//! ask it for work and tell it what became of it. It works in index entries
//! (absolute, stable under retention), and carries the event ids it needs
//! for the commit.
//!
//! Bounds: everything it keeps lies between the watermark and the next
//! fresh entry, which [`Dispatcher::take`] keeps within `max_pending`
//! entries; members wait beyond it. Delivery counts are per message and in
//! memory only (a restart forgets them, see README's Consumer groups).

use std::collections::BTreeMap;

/// Member tokens, as the registry hands them out.
pub type Token = u64;

/// A range of entries handed to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub from: u64,
    pub n: u64,
}

impl Claim {
    fn end(&self) -> u64 {
        self.from + self.n
    }
}

/// What a member is to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The dispatcher does not know where the group is (new, or another
    /// SUB moved it): find the entry after the committed position and
    /// [`Dispatcher::place`] it.
    Place,
    /// Send these entries (prepare them, then [`Dispatcher::sent`]).
    Batch(Claim),
    /// The watermark message failed `maxDeliver` deliveries, the last one
    /// alone: dead-letter (or skip) it, then [`Dispatcher::gave_up`]. This
    /// member holds the group's one write meanwhile.
    GiveUp { at: u64, failures: u32 },
    /// Nothing to hand out. `Some(entry)`: new messages would come at that
    /// entry (wait on the topic); `None`: wait for other members' ACKs.
    Wait(Option<u64>),
}

/// A write of the watermark to do: commit `position` if the group is
/// still set by record `expect_set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub position: u64,
    pub expect_set: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fail {
    count: u32,
    /// The last failed delivery was this message alone.
    alone: bool,
}

/// One shared group's work in memory (see the module docs).
#[derive(Debug)]
pub struct Dispatcher {
    placed: bool,
    /// Every entry below it is ACKed (or gone to retention).
    base: u64,
    /// The event id the watermark stands for (the position to commit).
    base_id: u64,
    /// The position last committed durably, and the record that set it.
    committed_id: u64,
    set_id: u64,
    /// A member is writing for the group (commit or dead letter): one at
    /// a time, so commits go in order.
    writing: bool,
    /// The next entry never handed out.
    next: u64,
    /// Handed out, not answered: first entry → (count, member).
    out: BTreeMap<u64, (u64, Token)>,
    /// ACKed above the watermark: first entry → (count, last event id; 0
    /// for entries retention removed).
    acked: BTreeMap<u64, (u64, u64)>,
    /// To hand out again: first entry → count.
    again: BTreeMap<u64, u64>,
    fails: BTreeMap<u64, Fail>,
    max_pending: u64,
}

impl Dispatcher {
    pub fn new(max_pending: u64) -> Dispatcher {
        Dispatcher {
            placed: false,
            base: 0,
            base_id: 0,
            committed_id: 0,
            set_id: 0,
            writing: false,
            next: 0,
            out: BTreeMap::new(),
            acked: BTreeMap::new(),
            again: BTreeMap::new(),
            fails: BTreeMap::new(),
            max_pending: max_pending.max(1),
        }
    }

    /// Starts over at entry `next`, the first after the committed
    /// `position` set by record `set_id`. Batches out are forgotten: their
    /// ACKs commit nothing (the group was moved under them).
    pub fn place(&mut self, next: u64, position: u64, set_id: u64) {
        *self = Dispatcher::new(self.max_pending);
        self.placed = true;
        self.base = next;
        self.next = next;
        self.base_id = position;
        self.committed_id = position;
        self.set_id = set_id;
    }

    /// Messages handed out and not answered (GROUPS `pending`).
    pub fn pending(&self) -> u64 {
        self.out.values().map(|&(n, _)| n).sum()
    }

    /// What member `token` is to do, with at most `max` messages; the group
    /// is set by record `set_id` as the caller read it, and the topic has
    /// entries `first_entry..entries`.
    pub fn take(
        &mut self,
        set_id: u64,
        first_entry: u64,
        entries: u64,
        max: u64,
        max_deliver: u32,
        token: Token,
    ) -> Next {
        // A stale read has a smaller set id; a larger one is another SUB's.
        if !self.placed || (set_id > self.set_id && !self.writing) {
            return Next::Place;
        }
        self.skip_retained(first_entry);
        if max_deliver > 0 && !self.writing && self.again.contains_key(&self.base) {
            let f = self.fails.get(&self.base).copied().unwrap_or_default();
            if f.alone && f.count >= max_deliver {
                let at = self.base;
                self.cut_again(at, 1);
                self.writing = true;
                return Next::GiveUp {
                    at,
                    failures: f.count,
                };
            }
        }
        if let Some(c) = self.take_again(max.max(1), max_deliver) {
            self.out.insert(c.from, (c.n, token));
            return Next::Batch(c);
        }
        let span = self.next - self.base;
        if span >= self.max_pending {
            return Next::Wait(None);
        }
        if self.next >= entries {
            return Next::Wait(Some(self.next));
        }
        let n = max
            .max(1)
            .min(entries - self.next)
            .min(self.max_pending - span);
        let c = Claim { from: self.next, n };
        self.next += n;
        self.out.insert(c.from, (c.n, token));
        Next::Batch(c)
    }

    /// Entries retention removed count as done.
    fn skip_retained(&mut self, first_entry: u64) {
        if self.next < first_entry {
            self.acked.insert(self.next, (first_entry - self.next, 0));
            self.next = first_entry;
        }
        while let Some((&from, &n)) = self.again.first_key_value() {
            if from >= first_entry {
                break;
            }
            self.again.remove(&from);
            let gone = n.min(first_entry - from);
            self.acked.insert(from, (gone, 0));
            if gone < n {
                self.again.insert(first_entry, n - gone);
            }
        }
        self.advance();
    }

    /// The first redelivery to hand out: a message that failed before goes
    /// alone (to isolate a poison message), others in runs of up to `max`;
    /// messages waiting to be given up on stay until they are the
    /// watermark.
    fn take_again(&mut self, max: u64, max_deliver: u32) -> Option<Claim> {
        let parked = |f: &Fail| max_deliver > 0 && f.alone && f.count >= max_deliver;
        let mut found = None;
        for (&from, &n) in &self.again {
            let end = from + n;
            let mut at = from;
            let mut claim = None;
            for (&e, f) in self.fails.range(from..end) {
                if e > at {
                    break; // a run of messages that never failed comes first
                }
                if parked(f) {
                    at = e + 1;
                    continue;
                }
                claim = Some(Claim { from: e, n: 1 });
                break;
            }
            if claim.is_none() && at < end {
                let stop = self.fails.range(at..end).next().map_or(end, |(&e, _)| e);
                claim = Some(Claim {
                    from: at,
                    n: (stop - at).min(max),
                });
            }
            if let Some(c) = claim.filter(|c| c.n > 0) {
                found = Some(c);
                break;
            }
        }
        let c = found?;
        self.cut_again(c.from, c.n);
        Some(c)
    }

    /// Removes `from..from + n` from the redelivery ranges (it lies in one).
    fn cut_again(&mut self, from: u64, n: u64) {
        let Some((&start, &len)) = self.again.range(..=from).next_back() else {
            return;
        };
        self.again.remove(&start);
        if from > start {
            self.again.insert(start, from - start);
        }
        let end = start + len;
        if from + n < end {
            self.again.insert(from + n, end - from - n);
        }
    }

    /// Member `token` prepared `n` messages from entry `from` (the first
    /// with event id `first_id`) for its claim `c`: retention may have
    /// moved the start, and a batch may come out shorter than asked. False
    /// when the claim is no longer this member's (the group was moved, or
    /// retention went past it): the batch must not go out.
    pub fn sent(&mut self, c: Claim, token: Token, from: u64, n: u64, first_id: u64) -> bool {
        if self.out.get(&c.from) != Some(&(c.n, token)) {
            return false;
        }
        self.out.remove(&c.from);
        if from < c.from || from >= c.end() || n == 0 {
            // Nothing of the claim is readable any more: done with it.
            self.acked.insert(c.from, (c.n, 0));
            self.advance();
            return false;
        }
        if from > c.from {
            self.acked
                .insert(c.from, (from - c.from, first_id.saturating_sub(1)));
        }
        let n = n.min(c.end() - from);
        if from + n < c.end() {
            self.again.insert(from + n, c.end() - from - n);
        }
        self.out.insert(from, (n, token));
        self.advance();
        true
    }

    /// Member `token` ACKed its batch from entry `from`, whose last event
    /// id is `last_id`. Returns the commit this member is to write, if the
    /// watermark moved and nobody is writing.
    pub fn ack(&mut self, token: Token, from: u64, last_id: u64) -> Option<Commit> {
        let (n, owner) = self.out.get(&from).copied()?;
        if owner != token {
            return None;
        }
        self.out.remove(&from);
        self.acked.insert(from, (n, last_id));
        self.advance();
        self.commit_due()
    }

    /// Member `token`'s batch from `from` ended without an ACK: it goes
    /// out again. `failed` (a hang-up or a missed deadline, not STOP)
    /// counts a delivery against each of its messages. True if it was out.
    pub fn give_back(&mut self, token: Token, from: u64, failed: bool) -> bool {
        let Some(&(n, owner)) = self.out.get(&from) else {
            return false;
        };
        if owner != token {
            return false;
        }
        self.out.remove(&from);
        if failed {
            for e in from..from + n {
                let f = self.fails.entry(e).or_default();
                f.count = f.count.saturating_add(1);
                f.alone = n == 1;
            }
        }
        self.again.insert(from, n);
        true
    }

    /// Every batch member `token` holds goes out again, as failed.
    /// Returns how many there were.
    pub fn leave(&mut self, token: Token) -> u64 {
        let mine: Vec<u64> = (self.out.iter())
            .filter(|(_, (_, t))| *t == token)
            .map(|(&f, _)| f)
            .collect();
        for &from in &mine {
            self.give_back(token, from, true);
        }
        mine.len() as u64
    }

    /// The write [`Dispatcher::ack`] or [`Dispatcher::gave_up`] asked for
    /// ended: `Some(set_id)` when it is durable. Returns the next commit
    /// to write if the watermark moved further meanwhile.
    pub fn committed(&mut self, c: Commit, set_id: Option<u64>) -> Option<Commit> {
        self.writing = false;
        let set_id = set_id?;
        self.committed_id = self.committed_id.max(c.position);
        self.set_id = self.set_id.max(set_id);
        self.commit_due()
    }

    /// The give-up write for the watermark message `at` (event id `id`)
    /// ended: `Some(set_id)` when done (the position is then `id`), else
    /// the message stays to be given up on by the next taker.
    pub fn gave_up(&mut self, at: u64, id: u64, set_id: Option<u64>) -> Option<Commit> {
        self.writing = false;
        let Some(set_id) = set_id else {
            self.again.insert(at, 1);
            return None;
        };
        self.acked.insert(at, (1, id));
        self.advance();
        self.committed_id = self.committed_id.max(id);
        self.set_id = self.set_id.max(set_id);
        self.commit_due()
    }

    /// Moves the watermark over the ACKed ranges that start at it.
    fn advance(&mut self) {
        while let Some((n, last_id)) = self.acked.remove(&self.base) {
            self.base += n;
            self.base_id = self.base_id.max(last_id);
        }
        // Counts of messages below the watermark are no longer needed.
        self.fails = self.fails.split_off(&self.base);
    }

    fn commit_due(&mut self) -> Option<Commit> {
        if self.writing || self.base_id <= self.committed_id {
            return None;
        }
        self.writing = true;
        Some(Commit {
            position: self.base_id,
            expect_set: self.set_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(next: Next) -> Claim {
        match next {
            Next::Batch(c) => c,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// Entry e holds event id e + 100.
    fn placed() -> Dispatcher {
        let mut d = Dispatcher::new(1000);
        assert_eq!(d.take(0, 0, 10, 4, 0, 1), Next::Place);
        d.place(0, 99, 5);
        d
    }

    #[test]
    fn members_get_disjoint_batches_and_the_watermark_follows_the_lowest() {
        let mut d = placed();
        let a = batch(d.take(5, 0, 10, 4, 0, 1));
        let b = batch(d.take(5, 0, 10, 4, 0, 2));
        assert_eq!((a, b), (Claim { from: 0, n: 4 }, Claim { from: 4, n: 4 }));
        assert!(d.sent(a, 1, 0, 4, 100) && d.sent(b, 2, 4, 4, 104));
        assert_eq!(d.pending(), 8);
        // B's ACK is above the watermark: nothing to commit yet.
        assert_eq!(d.ack(2, 4, 107), None);
        let c = d.ack(1, 0, 103).expect("the watermark moved");
        assert_eq!(
            c,
            Commit {
                position: 107,
                expect_set: 5
            }
        );
        assert_eq!(d.committed(c, Some(20)), None);
        assert_eq!(
            d.take(30, 0, 10, 4, 0, 1),
            Next::Place,
            "another SUB's set id"
        );
        assert_eq!(
            d.take(20, 0, 10, 4, 0, 1),
            Next::Batch(Claim { from: 8, n: 2 })
        );
        assert_eq!(d.take(20, 0, 10, 4, 0, 2), Next::Wait(Some(10)));
    }

    #[test]
    fn a_failed_batch_goes_out_again_one_by_one_and_a_poison_message_is_given_up_at_the_watermark()
    {
        let mut d = placed();
        let a = batch(d.take(5, 0, 10, 3, 2, 1));
        assert!(d.sent(a, 1, 0, 3, 100));
        assert_eq!(d.leave(1), 1);
        // Each message that failed goes alone.
        let x = batch(d.take(5, 0, 10, 3, 2, 2));
        assert_eq!(x, Claim { from: 0, n: 1 });
        assert!(d.sent(x, 2, 0, 1, 100));
        assert!(d.ack(2, 0, 100).is_some());
        let y = batch(d.take(5, 0, 10, 3, 2, 2));
        assert_eq!(y, Claim { from: 1, n: 1 });
        assert!(d.sent(y, 2, 1, 1, 101));
        assert!(d.give_back(2, 1, true)); // entry 1 is poison: 2 failures, alone
        // Entry 1 is not yet the watermark: the commit of 100 is in flight.
        assert_eq!(
            d.take(5, 0, 10, 3, 2, 3),
            Next::Batch(Claim { from: 2, n: 1 })
        );
        let c = Commit {
            position: 100,
            expect_set: 5,
        };
        assert_eq!(d.committed(c, Some(6)), None);
        assert_eq!(
            d.take(6, 0, 10, 3, 2, 3),
            Next::GiveUp { at: 1, failures: 2 }
        );
        assert_eq!(d.gave_up(1, 101, Some(8)), None);
        assert_eq!(
            d.take(8, 0, 10, 3, 2, 3),
            Next::Batch(Claim { from: 3, n: 3 })
        );
    }

    #[test]
    fn max_pending_bounds_what_is_out_or_acked_above_the_watermark() {
        let mut d = Dispatcher::new(5);
        d.place(0, 0, 1);
        let a = batch(d.take(1, 0, 100, 4, 0, 1));
        let b = batch(d.take(1, 0, 100, 4, 0, 2));
        assert_eq!(b, Claim { from: 4, n: 1 });
        assert_eq!(d.take(1, 0, 100, 4, 0, 3), Next::Wait(None));
        assert!(d.sent(a, 1, 0, 4, 1) && d.sent(b, 2, 4, 1, 5));
        assert_eq!(d.ack(2, 4, 5), None);
        assert_eq!(d.take(1, 0, 100, 4, 0, 3), Next::Wait(None));
        assert!(d.ack(1, 0, 4).is_some());
        assert_eq!(
            d.take(1, 0, 100, 4, 0, 3),
            Next::Batch(Claim { from: 5, n: 4 })
        );
    }

    #[test]
    fn a_shorter_batch_returns_its_tail_and_stale_answers_change_nothing() {
        let mut d = placed();
        let a = batch(d.take(5, 0, 10, 6, 0, 1));
        assert!(d.sent(a, 1, 0, 2, 100));
        assert_eq!(
            d.take(5, 0, 10, 6, 0, 2),
            Next::Batch(Claim { from: 2, n: 4 })
        );
        assert_eq!(d.ack(2, 0, 101), None, "not member 2's batch");
        assert!(!d.give_back(2, 0, true));
        d.place(0, 99, 9);
        assert_eq!(d.ack(1, 0, 101), None, "forgotten by the move");
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn entries_retention_removed_count_as_done_without_an_id() {
        let mut d = placed();
        let a = batch(d.take(5, 3, 10, 2, 0, 1));
        assert_eq!(a, Claim { from: 3, n: 2 });
        assert!(d.sent(a, 1, 3, 2, 103));
        let c = d.ack(1, 3, 104).expect("moved past the removed entries");
        assert_eq!(c.position, 104);
    }
}
