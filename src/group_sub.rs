//! A SUB with `group=<name>`: set the group's position, wait as a standby
//! while another subscriber of the group is active, then deliver with one
//! durable commit per ACK, counting deliveries that end without one, and
//! giving up on a message after `maxDeliver` of them (dead letter or skip).
//! GROUPS and GROUPDEL are [`crate::group_admin`]'s; a shared group's
//! delivery loop (`mode=shared`) is [`crate::group_shared`]'s, after the
//! checks and the position write here.
//!
//! Runs on the subscriber's connection thread, which stays in [`run`] for
//! the whole subscription. It takes a place in the broker's group registry
//! ([`crate::groups`], an RAII guard that hands the group to the next
//! standby however the connection ends), waits on the registry slot's
//! condvar while a standby and on the topic's condvar while active, reads
//! batches through [`Sub`] (index and segments by pread), and asks the
//! writer for every group write (commit, failed delivery, dead letter)
//! through the broker's writer handle
//! ([`crate::writer_handle::Pipeline`]): up to [`COMMITS_IN_FLIGHT`] ACK
//! commits at once, any other write alone.
//!
//! The guarantee is at-least-once: the position moves only when the
//! writer has made the commit durable, so a batch the client received
//! without its ACK being committed is delivered again to whoever takes
//! over. The commit of an ACK is fsynced while the next batches are read,
//! sent and worked on by the client: the commit of batch k is settled
//! before the ACK of batch k + [`COMMITS_IN_FLIGHT`] is read (the writer
//! puts commits that queue up meanwhile in one fsync). A crash before it
//! is durable redelivers from the last durable position: the ACKed
//! batches not yet durable and the one sent meanwhile. If a commit fails,
//! the subscription ends with the `ERR` (the batches sent meanwhile count
//! no failed delivery); if another SUB moved the group meanwhile, the
//! ACKs of the batches in flight commit nothing and delivery goes on from
//! where the group was moved.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};

use crate::broker::Broker;
use crate::group_shared;
use crate::groups::{GroupKey, Member, Turn};
use crate::protocol::{
    ErrCode, GroupMode, ProtoError, SubArgs, SubFrom, encode_err, encode_line, encode_ok,
};
use crate::role::Role;
use crate::stats::Stats;
use crate::storage::index::{self, EntrySource};
use crate::storage::ops::{WriteError, WriteOk, WriteOp};
use crate::storage::view::{GroupState, Topic, TopicState};
use crate::subscription::{Counted, IDLE_POLL, Queued, Sub, SubInput};
use crate::wire::{Flow, Wire};
use crate::writer_handle::{self, Asked, CallError, Pipeline};

/// ACK commits one subscriber may have in flight. Each commit of an ACK is
/// fsynced while the next batches go out; with several in flight the
/// writer puts the ones that queue up during an fsync into the next one,
/// so a consumer that ACKs at once is not held to one fsync per batch.
/// The price: a crash may deliver this many batches again (plus the one
/// being sent), not one.
const COMMITS_IN_FLIGHT: usize = 4;

/// Answers a group SUB and, once it is accepted, runs the subscription
/// until it ends. Called with no write in flight, so the `OK` is in order.
pub fn run(wire: &mut Wire, broker: &Broker, peer: &str, args: SubArgs) -> io::Result<Flow> {
    let refuse = |wire: &mut Wire, code, msg: String| {
        encode_err(&mut wire.out, &ProtoError::new(code, msg));
        Ok(Flow::Continue)
    };
    let Some(name) = args.group.clone() else {
        return refuse(wire, ErrCode::BadReq, "a group SUB needs group=".into());
    };
    let Some(topic) = broker.topic(&args.topic) else {
        return refuse(wire, ErrCode::NoTopic, format!("no topic {}", args.topic));
    };
    if broker.role() == Role::Slave {
        let msg = "group subscriptions need the master".to_string();
        return refuse(wire, ErrCode::ReadOnly, msg);
    }
    if let Some(d) = &args.dlq
        && broker.topic(d).is_none()
    {
        return refuse(wire, ErrCode::NoTopic, format!("no dlq topic {d}"));
    }
    let key = GroupKey {
        topic: topic.name.clone(),
        create_id: topic.create_id,
        group: name.clone(),
    };
    let mode = args.mode.unwrap_or_default();
    // Joined (the mode checked and taken under the group's lock) before the
    // position is written: a SUB refused for its mode changes nothing, also
    // when one of the other mode joins at the same moment.
    let max_pending = broker.config.sub.max_pending;
    let member = match broker.group_subs.join_as(key, mode, max_pending) {
        Ok(m) => m,
        Err(has) => return refuse(wire, ErrCode::BadReq, mode_conflict(&name, has, mode)),
    };
    if let Err(e) = set_position(broker, &topic, &name, args.from) {
        // Leaving hands the group on as any leaving member does.
        drop(member);
        encode_err(&mut wire.out, &e);
        return Ok(Flow::Continue);
    }
    if mode == GroupMode::Shared {
        return group_shared::run(wire, broker, peer, topic, member, &args);
    }
    encode_ok(&mut wire.out, &[]);
    if !member.is_active() {
        encode_line(&mut wire.out, "STANDBY");
    }
    wire.flush()?;
    let _counted = Counted::new(&broker.stats);
    let mut g = GroupSub {
        max_deliver: args.max_deliver.unwrap_or(broker.config.sub.max_deliver),
        dlq: args.dlq.clone(),
        sub: Sub::new(wire, broker, peer, topic, &args),
        member,
        name,
        writes: Pipeline::new(COMMITS_IN_FLIGHT),
        outstanding: None,
    };
    if let Some(flow) = g.standby()? {
        return Ok(flow);
    }
    debug!("{peer}: active in group {} of {}", g.name, g.sub.topic.name);
    let res = g.active();
    // Commits still in flight are settled first: their answers are not the
    // failed delivery's. Either way their batches were ACKed.
    for _ in 0..COMMITS_IN_FLIGHT {
        if g.writes.settle_one().is_none() {
            break;
        }
    }
    if let Some((first, last)) = g.outstanding.take() {
        g.delivery_failed(first, last);
    }
    // Dropping `g` (its member) hands the group to the next standby.
    res
}

/// The refusal of a SUB whose mode is not the one of the group's members.
fn mode_conflict(name: &str, has: GroupMode, asked: GroupMode) -> String {
    format!(
        "group {name} is {} while it has members (this SUB asked mode={})",
        has.as_str(),
        asked.as_str()
    )
}

/// Writes where a new SUB starts the group, durably, before its `OK`:
/// a number or `$` moves it there; `-` writes only for a new group, which
/// starts just before the topic's oldest retained message.
fn set_position(
    broker: &Broker,
    topic: &Topic,
    name: &str,
    from: SubFrom,
) -> Result<(), ProtoError> {
    let st = topic.state();
    let (position, expect_set) = match from {
        SubFrom::After(n) => (n, None),
        SubFrom::Latest => (st.last_id, None),
        SubFrom::Committed if topic.group(name).is_some() => return Ok(()),
        // Created only if still absent: a SUB `-` racing this one may have
        // created it, and its subscriber may have committed since.
        SubFrom::Committed if st.messages() > 0 => (st.first_id.saturating_sub(1), Some(0)),
        SubFrom::Committed => (st.last_id, Some(0)),
    };
    let op = WriteOp::GroupCommit {
        topic: topic.name.clone(),
        group: name.to_string(),
        position,
        expect_set,
    };
    match broker.writer.call(op) {
        Ok(_) => Ok(()),
        Err(CallError::Write(WriteError::Invalid(_))) if topic.group(name).is_some() => Ok(()),
        Err(e) => Err(writer_handle::reply(&e, Asked::GroupPosition)),
    }
}

/// How waiting for a commit that failed ended.
enum Settled {
    /// END or ERR was sent: the subscription is over.
    Ended(Flow),
    /// Another SUB moved the group: delivery goes on from there.
    Moved,
}

/// The active subscriber's view of its group.
struct Place {
    /// Next index entry to send.
    next: u64,
    /// A position above every id stored when it was set: later entries can
    /// still be at or below it (see the plain SUB's floor).
    floor: Option<u64>,
    committed: u64,
    /// The record that last set the group, as this subscriber knows it; a
    /// different one means someone else moved the group.
    set_id: u64,
}

struct GroupSub<'a> {
    sub: Sub<'a>,
    member: Member<'a>,
    name: String,
    max_deliver: u32,
    dlq: Option<String>,
    /// The group writes in flight (ACK commits, at most
    /// [`COMMITS_IN_FLIGHT`]; any other write alone).
    writes: Pipeline,
    /// First and last id of a batch sent and not yet answered.
    outstanding: Option<(u64, u64)>,
}

impl GroupSub<'_> {
    /// Waits for this subscriber's turn, sending ALIVE meanwhile; `None`
    /// once it is active, else how the subscription ended.
    fn standby(&mut self) -> io::Result<Option<Flow>> {
        let mut last_sent = Instant::now();
        loop {
            let until_alive = self.sub.alive.saturating_sub(last_sent.elapsed());
            match self.member.wait_turn(until_alive.min(IDLE_POLL)) {
                Turn::Active => return Ok(None),
                Turn::Ended => return self.end("deleted").map(Some),
                Turn::Waiting => {}
            }
            if let Some(reason) = self.gone(&self.sub.topic.state()) {
                return self.end(reason).map(Some);
            }
            let input = self.sub.sub_input(None)?;
            if let Some(flow) = self.sub.sub_end(&input) {
                return Ok(Some(flow));
            }
            if last_sent.elapsed() >= self.sub.alive {
                encode_line(&mut self.sub.wire.out, "ALIVE");
                self.sub.wire.flush()?;
                last_sent = Instant::now();
            }
        }
    }

    /// Why the subscription is over, if it is: the topic ended, or the
    /// group was removed.
    fn gone(&self, st: &TopicState) -> Option<&'static str> {
        if let Some(reason) = st.ended {
            return Some(reason.as_str());
        }
        if self.member.ended() || self.sub.topic.group(&self.name).is_none() {
            return Some("deleted");
        }
        None
    }

    fn end(&mut self, reason: &str) -> io::Result<Flow> {
        self.sub.end(reason)
    }

    fn fail(&mut self, code: ErrCode, msg: String) -> io::Result<Flow> {
        self.sub.fail(code, msg)
    }

    /// Where delivery goes on: the group's committed position now.
    fn place(&self, g: &GroupState, st: &TopicState) -> io::Result<Place> {
        let file = self.sub.broker.index_of(&self.sub.topic)?;
        let next = index::search_after(&*file, st.first_entry, st.entries, g.committed)?;
        Ok(Place {
            next,
            floor: (g.committed > st.last_id).then_some(g.committed),
            committed: g.committed,
            set_id: g.set_id,
        })
    }

    /// Delivers batches, one durable commit per ACK, until the
    /// subscription ends.
    fn active(&mut self) -> io::Result<Flow> {
        let topic = Arc::clone(&self.sub.topic);
        let st = topic.state();
        // A standby may take over a group its topic or GROUPDEL just ended.
        if let Some(reason) = self.gone(&st) {
            return self.end(reason);
        }
        let g = topic.group(&self.name).unwrap_or_default();
        let mut at = match self.place(&g, &st) {
            Ok(p) => p,
            Err(_) if self.gone(&topic.state()).is_some() => return self.end("deleted"),
            Err(e) => {
                return self.fail(
                    ErrCode::Internal,
                    format!("reading the index of {}: {e}", topic.name),
                );
            }
        };
        let mut last_sent = Instant::now();
        // The positions the commits in flight will set, oldest first.
        let mut inflight: VecDeque<u64> = VecDeque::new();
        // What they expect: the record that set the group when the oldest
        // was sent (the writer takes later ones as the same chain).
        let mut chain = at.set_id;
        loop {
            let st = if !inflight.is_empty() {
                topic.state()
            } else {
                let until_alive = self.sub.alive.saturating_sub(last_sent.elapsed());
                topic.wait_beyond(at.next, until_alive.min(IDLE_POLL))
            };
            let mut max = self.sub.batch;
            if inflight.is_empty() {
                if let Some(reason) = self.gone(&st) {
                    return self.end(reason);
                }
                let g = topic.group(&self.name).unwrap_or_default();
                if g.set_id != at.set_id {
                    // A SUB moved the group: go on from there.
                    at = self.place(&g, &st)?;
                }
                at.next = at.next.max(st.first_entry);
                self.pass_floor(&mut at, &st)?;
                if st.entries > at.next && g.failures > 0 && g.failed_at > at.committed {
                    let id = self.peek(at.next)?;
                    if id == g.failed_at {
                        // Only failures of the message alone are surely its
                        // own: else it goes alone once more first. `alone`
                        // is durable with the count, so a restart or a
                        // failover does not cost it one more delivery.
                        if self.max_deliver > 0 && g.failures >= self.max_deliver && g.alone {
                            match self.give_up(&mut at, id, g.failures) {
                                Ok(()) => continue,
                                Err(e) => match self.write_failed(&e, &mut at)? {
                                    Some(flow) => return Ok(flow),
                                    None => continue,
                                },
                            }
                        }
                        max = 1;
                    }
                }
            } else {
                at.next = at.next.max(st.first_entry);
            }
            let position = inflight.back().copied().unwrap_or(at.committed);
            if st.entries > at.next && self.member.suspect_until() > position {
                let id = self.peek(at.next)?;
                if id <= self.member.suspect_until() {
                    max = 1; // isolate the message a failed delivery held
                }
            }
            let queued = if st.entries > at.next && at.floor.is_none() {
                self.sub.put_batch_of(at.next, st.entries, max)
            } else {
                Ok(Queued::Nothing)
            };
            // With nothing to send, the ACKs' commits are settled now, the
            // oldest first; batches go out first and their commits settle
            // while the client works on them.
            if !matches!(queued, Ok(Queued::Batch(_)))
                && let Some(pos) = inflight.pop_front()
                && let Some(flow) = self.settle_commit(pos, &mut at)?
            {
                match flow {
                    Settled::Ended(flow) => return Ok(flow),
                    Settled::Moved => {
                        self.drop_chain(&mut inflight);
                        continue;
                    }
                }
            }
            match queued {
                Err(e) => {
                    warn!(
                        "{}: group subscription to {} failed: {e}",
                        self.sub.peer, topic.name
                    );
                    return self.fail(ErrCode::Internal, e);
                }
                Ok(Queued::Batch(plan)) => {
                    let (first, last) = (plan.first_id, plan.last_id);
                    self.outstanding = Some((first, last));
                    // Counted before the send: the subscriber may read the
                    // batch (and /metrics) before this thread runs again.
                    // A failed send ends the member, which clears it.
                    self.member.pending(plan.n as u64);
                    if !self.sub.send_batch(&plan)? {
                        return Ok(Flow::Close);
                    }
                    at.next = plan.from + plan.n as u64;
                    last_sent = Instant::now();
                    // Whether this batch's ACK commits: not when the group
                    // was moved while the batch went out.
                    let mut commits = true;
                    if inflight.len() >= COMMITS_IN_FLIGHT
                        && let Some(pos) = inflight.pop_front()
                    {
                        match self.settle_commit(pos, &mut at)? {
                            None => {}
                            Some(Settled::Ended(flow)) => {
                                // Not this batch's failure: nothing counted.
                                self.outstanding = None;
                                self.member.pending(0);
                                return Ok(flow);
                            }
                            Some(Settled::Moved) => {
                                self.drop_chain(&mut inflight);
                                commits = false;
                            }
                        }
                    }
                    let input = self.sub.sub_input(Some(self.sub.ack_wait))?;
                    match input {
                        SubInput::Ack => {
                            Stats::add(&self.sub.broker.stats.messages_acked, plan.n as u64);
                            self.outstanding = None;
                            self.member.pending(0);
                            if !commits {
                                continue;
                            }
                            if inflight.is_empty() {
                                chain = at.set_id;
                            }
                            if let Err(e) = self.submit(WriteOp::GroupCommit {
                                topic: topic.name.clone(),
                                group: self.name.clone(),
                                position: last,
                                expect_set: Some(chain),
                            }) {
                                // Not a failed delivery: it was ACKed.
                                let pe = writer_handle::reply(&e, Asked::GroupWrite);
                                return self.fail(pe.code, pe.msg);
                            }
                            inflight.push_back(last);
                        }
                        SubInput::Stop | SubInput::Quit => {
                            // Ended on purpose: nothing committed, nothing failed.
                            self.outstanding = None;
                            self.member.pending(0);
                            return Ok(self.sub.sub_end(&input).unwrap_or(Flow::Continue));
                        }
                        SubInput::Closed => return Ok(Flow::Close),
                        SubInput::Nothing => {
                            info!(
                                "{}: no ACK within {} ms on {} (group {}); closing",
                                self.sub.peer,
                                self.sub.ack_wait.as_millis(),
                                topic.name,
                                self.name
                            );
                            return Ok(Flow::Close);
                        }
                    }
                }
                Ok(Queued::Nothing) => {
                    if let Some(flow) = self.sub.idle(&mut last_sent)? {
                        return Ok(flow);
                    }
                }
            }
        }
    }

    /// Waits for the commit of an ACK (position `pos`). `None` when it is
    /// durable (the place moves to it); else whether the subscription ended
    /// (END or ERR sent) or goes on from where another SUB moved the group.
    fn settle_commit(&mut self, pos: u64, at: &mut Place) -> io::Result<Option<Settled>> {
        match self.answer() {
            Ok(set_id) => {
                at.committed = pos;
                at.set_id = set_id;
                self.member.passed(pos);
                Ok(None)
            }
            Err(e) => Ok(Some(match self.write_failed(&e, at)? {
                Some(flow) => Settled::Ended(flow),
                None => Settled::Moved,
            })),
        }
    }

    /// A commit of the chain failed because the group moved: the later
    /// ones fail the same way (the writer breaks a chain at any other
    /// write); their answers are read and dropped.
    fn drop_chain(&mut self, inflight: &mut VecDeque<u64>) {
        for _ in inflight.drain(..) {
            let _ = self.answer();
        }
    }

    /// While the position is above every stored id, skips entries at or
    /// below it (as a plain SUB does with its floor).
    fn pass_floor(&self, at: &mut Place, st: &TopicState) -> io::Result<()> {
        let Some(after) = at.floor else {
            return Ok(());
        };
        if st.entries > at.next {
            let file = self.sub.broker.index_of(&self.sub.topic)?;
            at.next = index::search_after(&*file, at.next, st.entries, after)?;
            if at.next < st.entries {
                at.floor = None; // ids only grow from here
            }
        }
        Ok(())
    }

    /// The event id of index entry `i`.
    fn peek(&self, i: u64) -> io::Result<u64> {
        let file = self.sub.broker.index_of(&self.sub.topic)?;
        Ok(EntrySource::entry(&*file, i)?.event_id)
    }

    /// Message `id` failed `failures` deliveries, `maxDeliver` or more:
    /// instead of sending it again, move it to the dead-letter topic (a
    /// copy with `dlq.*` headers and the commit past it, atomically), or
    /// without one skip it (commit past it). Both count in STATS
    /// `dead_lettered`.
    fn give_up(&mut self, at: &mut Place, id: u64, failures: u32) -> Result<(), CallError> {
        let topic = self.sub.topic.name.clone();
        let op = WriteOp::give_up(&topic, &self.name, id, self.dlq.as_deref(), Some(at.set_id));
        self.submit(op)?;
        let set_id = self.answer()?;
        at.set_id = match &self.dlq {
            // The group record follows the copy in the same batch.
            Some(_) => set_id + 1,
            None => {
                Stats::add(&self.sub.broker.stats.dead_lettered, 1);
                info!(
                    "group {} of {topic}: message {id} failed {failures} deliveries; skipped",
                    self.name
                );
                set_id
            }
        };
        at.committed = id;
        at.next += 1;
        self.member.passed(id);
        self.member.dead_lettered();
        Ok(())
    }

    /// A group write was refused or failed. The topic or group being gone
    /// ends the subscription with END; a SUB that moved the group makes it
    /// go on from there (`None`); anything else is an ERR.
    fn write_failed(&mut self, e: &CallError, at: &mut Place) -> io::Result<Option<Flow>> {
        let st = self.sub.topic.state();
        if let Some(reason) = self.gone(&st) {
            return self.end(reason).map(Some);
        }
        if let (CallError::Write(WriteError::Invalid(_)), Some(g)) =
            (e, self.sub.topic.group(&self.name))
            && g.set_id != at.set_id
        {
            *at = self.place(&g, &st)?;
            return Ok(None);
        }
        warn!(
            "{}: group {} of {}: {e}",
            self.sub.peer, self.name, self.sub.topic.name
        );
        let pe = writer_handle::reply(e, Asked::GroupWrite);
        self.fail(pe.code, pe.msg).map(Some)
    }

    fn submit(&mut self, op: WriteOp) -> Result<(), CallError> {
        self.writes.submit(&self.sub.broker.writer, op)
    }

    /// The answer to the write [`GroupSub::submit`] sent: the id of the
    /// record written.
    fn answer(&mut self) -> Result<u64, CallError> {
        match self.writes.settle_one() {
            Some(Ok(WriteOk::Id(id))) => Ok(id),
            Some(Ok(_)) => Err(CallError::Write(WriteError::Invalid(
                "the group was committed past this message meanwhile".into(),
            ))),
            Some(Err(e)) => Err(e),
            // Nothing was sent: as good as no answer.
            None => Err(CallError::Timeout),
        }
    }

    /// The batch `first..=last` was sent and its delivery ended without an
    /// ACK (hang-up, ACK timeout, a failed send): counted durably against
    /// its first message, with whether it went alone, before the next
    /// standby takes over, and the batch is marked for one-message batches.
    fn delivery_failed(&mut self, first: u64, last: u64) {
        self.member.failed(last);
        let op = WriteOp::GroupFailed {
            topic: self.sub.topic.name.clone(),
            group: self.name.clone(),
            at: first,
            alone: first == last,
        };
        let res = self.submit(op).and_then(|()| self.answer());
        match res {
            Ok(_) => info!(
                "group {} of {}: delivery of {first}..={last} ended without ACK",
                self.name, self.sub.topic.name
            ),
            Err(e) => debug!(
                "group {} of {}: failed delivery of {first} not counted: {e}",
                self.name, self.sub.topic.name
            ),
        }
    }
}
