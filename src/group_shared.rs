//! A member of a shared consumer group (`SUB … group=<g> mode=shared`):
//! every member is active; it asks the group's
//! [`crate::dispatch::Dispatcher`] for a batch,
//! sends it, and reports the ACK (or its absence) back, so each batch goes
//! to one member while the others get theirs concurrently. The member
//! whose ACK moves the low watermark writes the group's commit; one group
//! write is in flight at a time (the dispatcher hands out that turn), and
//! a commit that finds the watermark moved further writes again.
//!
//! Runs on the member's connection thread, which stays in [`run`] for the
//! whole subscription. It locks the registry slot (through its [`Member`])
//! for each exchange with the dispatcher, never while it does I/O; waits on
//! the topic's condvar for new messages and on the slot's condvar for the
//! other members' answers; reads batches through [`Sub`] (pread); and asks
//! the writer for the commit, failed-delivery and dead-letter writes with
//! a blocking call. A batch this member holds when its connection ends (a
//! hang-up, a missed ACK deadline, a panic) goes back to the dispatcher
//! as a failed delivery when the [`Member`] is dropped.
//!
//! The guarantee is at least once: only the watermark is durable. A
//! batch ACKed above it is delivered again after a restart, a failover,
//! or when an exclusive subscriber takes the group; the dispatcher (and
//! so what was ACKed, and the failure counts) outlives members leaving.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use crate::broker::Broker;
use crate::dispatch::{Claim, Commit, Next};
use crate::groups::Member;
use crate::protocol::{ErrCode, SubArgs, encode_ok};
use crate::stats::Stats;
use crate::storage::index::{self, EntrySource};
use crate::storage::ops::{WriteError, WriteOk, WriteOp};
use crate::storage::view::Topic;
use crate::subscription::{Counted, IDLE_POLL, Queued, Sub, SubInput};
use crate::wire::{Flow, Wire};
use crate::writer_handle::{self, Asked, CallError};

/// Runs a shared member's subscription once its SUB was accepted (the
/// position written, the member joined): `OK`, then batches until it ends.
pub fn run(
    wire: &mut Wire,
    broker: &Broker,
    peer: &str,
    topic: Arc<Topic>,
    member: Member<'_>,
    args: &SubArgs,
) -> io::Result<Flow> {
    encode_ok(&mut wire.out, &[]);
    wire.flush()?;
    let _counted = Counted::new(&broker.stats);
    let name = args.group.clone().unwrap_or_default();
    let mut s = Shared {
        max_deliver: args.max_deliver.unwrap_or(broker.config.sub.max_deliver),
        dlq: args.dlq.clone(),
        sub: Sub::new(wire, broker, peer, topic, args),
        member,
        name,
    };
    s.deliver()
    // Dropping the member gives back a batch it still holds, as failed.
}

struct Shared<'a> {
    sub: Sub<'a>,
    member: Member<'a>,
    name: String,
    max_deliver: u32,
    dlq: Option<String>,
}

/// How one step of the loop ended.
enum Step {
    Go,
    Done(Flow),
}

impl Shared<'_> {
    fn deliver(&mut self) -> io::Result<Flow> {
        let topic = Arc::clone(&self.sub.topic);
        let token = self.member.token();
        let mut last_sent = Instant::now();
        loop {
            let st = topic.state();
            if let Some(reason) = st.ended {
                self.member.topic_gone();
                return self.end(reason.as_str());
            }
            let Some(g) = topic.group(&self.name) else {
                return self.end("deleted");
            };
            if self.member.ended() {
                return self.end("deleted");
            }
            let max = self.sub.batch as u64;
            let md = self.max_deliver;
            let next = self
                .member
                .dispatch(|d| d.take(g.set_id, st.first_entry, st.entries, max, md, token));
            let Some(next) = next else {
                return self.end("deleted"); // the dispatcher went with the group
            };
            let step = match next {
                Next::Place => self.place(g.committed, g.set_id)?,
                Next::GiveUp { at, failures } => self.give_up(at, failures)?,
                Next::Batch(c) => {
                    let step = self.batch(c)?;
                    last_sent = Instant::now();
                    step
                }
                Next::Wait(fresh) => {
                    if let Some(flow) = self.sub.idle(&mut last_sent)? {
                        return Ok(flow);
                    }
                    let wait = self.sub.alive.saturating_sub(last_sent.elapsed());
                    match fresh {
                        Some(entry) => {
                            let _ = topic.wait_beyond(entry, wait.min(IDLE_POLL));
                        }
                        None => self.member.wait_change(wait.min(IDLE_POLL)),
                    }
                    Step::Go
                }
            };
            if let Step::Done(flow) = step {
                return Ok(flow);
            }
        }
    }

    fn end(&mut self, reason: &str) -> io::Result<Flow> {
        self.sub.end(reason)
    }

    fn fail(&mut self, code: ErrCode, msg: String) -> io::Result<Step> {
        self.sub.fail(code, msg).map(Step::Done)
    }

    /// Tells the dispatcher where the group is: the first entry after the
    /// committed `position`. While no stored message is above a position
    /// set past them, it waits for one (later entries may still be below).
    fn place(&mut self, position: u64, set_id: u64) -> io::Result<Step> {
        let topic = Arc::clone(&self.sub.topic);
        let st = topic.state();
        let found = self
            .sub
            .broker
            .index_of(&topic)
            .and_then(|f| index::search_after(&*f, st.first_entry, st.entries, position));
        let next = match found {
            Ok(n) => n,
            Err(e) if topic.state().ended.is_some() => {
                info!("{}: index of {} gone: {e}", self.sub.peer, topic.name);
                return Ok(Step::Go); // the loop ends it
            }
            Err(e) => {
                let msg = format!("reading the index of {}: {e}", topic.name);
                return self.fail(ErrCode::Internal, msg);
            }
        };
        if next >= st.entries && position > st.last_id {
            let _ = topic.wait_beyond(st.entries, IDLE_POLL);
            return Ok(Step::Go);
        }
        self.member.dispatch(|d| d.place(next, position, set_id));
        Ok(Step::Go)
    }

    /// Sends the claimed entries and waits for the member's answer.
    fn batch(&mut self, c: Claim) -> io::Result<Step> {
        let token = self.member.token();
        let plan = match self.sub.put_batch_of(c.from, c.from + c.n, c.n as usize) {
            Ok(Queued::Batch(plan)) => plan,
            Ok(Queued::Nothing) => {
                self.member.dispatch(|d| d.give_back(token, c.from, false));
                return Ok(Step::Go);
            }
            Err(e) => {
                self.member.dispatch(|d| d.give_back(token, c.from, false));
                warn!(
                    "{}: shared group {} of {} failed: {e}",
                    self.sub.peer, self.name, self.sub.topic.name
                );
                return self.fail(ErrCode::Internal, e);
            }
        };
        let (from, n) = (plan.from, plan.n as u64);
        let ok = self
            .member
            .dispatch(|d| d.sent(c, token, from, n, plan.first_id));
        if ok != Some(true) {
            return Ok(Step::Go); // moved meanwhile: not this member's any more
        }
        if !self.sub.send_batch(&plan)? {
            return Ok(Step::Done(Flow::Close));
        }
        let input = self.sub.sub_input(Some(self.sub.ack_wait))?;
        match input {
            SubInput::Ack => {
                Stats::add(&self.sub.broker.stats.messages_acked, n);
                let due = self.member.dispatch(|d| d.ack(token, from, plan.last_id));
                self.commit(due.flatten())
            }
            SubInput::Stop | SubInput::Quit => {
                // Ended on purpose: the batch goes to the others, not failed.
                self.member.dispatch(|d| d.give_back(token, from, false));
                Ok(Step::Done(
                    self.sub.sub_end(&input).unwrap_or(Flow::Continue),
                ))
            }
            SubInput::Closed => Ok(Step::Done(Flow::Close)),
            SubInput::Nothing => {
                info!(
                    "{}: no ACK within {} ms on {} (shared group {}); closing",
                    self.sub.peer,
                    self.sub.ack_wait.as_millis(),
                    self.sub.topic.name,
                    self.name
                );
                Ok(Step::Done(Flow::Close))
            }
        }
    }

    /// Writes the watermark commits the dispatcher asks of this member,
    /// until the watermark stands still. A group moved or removed
    /// meanwhile is the loop's to notice; a failed write ends the
    /// subscription with its ERR.
    fn commit(&mut self, mut due: Option<Commit>) -> io::Result<Step> {
        while let Some(c) = due {
            let op = WriteOp::GroupCommit {
                topic: self.sub.topic.name.clone(),
                group: self.name.clone(),
                position: c.position,
                expect_set: Some(c.expect_set),
            };
            let res = self.sub.broker.writer.call(op);
            let set_id = match &res {
                Ok(WriteOk::Id(id)) => Some(*id),
                _ => None,
            };
            due = self.member.dispatch(|d| d.committed(c, set_id)).flatten();
            match res {
                Ok(_) | Err(CallError::Write(WriteError::Invalid(_))) => {}
                Err(e) => return self.write_failed(&e),
            }
        }
        Ok(Step::Go)
    }

    fn write_failed(&mut self, e: &CallError) -> io::Result<Step> {
        if self.sub.topic.state().ended.is_some() || self.sub.topic.group(&self.name).is_none() {
            return Ok(Step::Go); // the loop sends END
        }
        warn!(
            "{}: shared group {} of {}: {e}",
            self.sub.peer, self.name, self.sub.topic.name
        );
        let pe = writer_handle::reply(e, Asked::GroupWrite);
        self.fail(pe.code, pe.msg)
    }

    /// The watermark message (entry `at`) failed `failures` deliveries, the
    /// last alone: its count is made durable (a GROUP record per delivery
    /// not yet counted, so `dlq.deliveries` says how many), then it is
    /// moved to the dead-letter topic, or skipped, and the group committed
    /// past it — as an exclusive group does.
    fn give_up(&mut self, at: u64, failures: u32) -> io::Result<Step> {
        let res = self.give_up_writes(at, failures);
        let (id, set_id) = match &res {
            Ok((id, set_id)) => (*id, Some(*set_id)),
            Err(_) => (0, None),
        };
        let due = self
            .member
            .dispatch(|d| d.gave_up(at, id, set_id))
            .flatten();
        match res {
            Ok((id, _)) => {
                self.member.dead_lettered();
                info!(
                    "shared group {} of {}: message {id} failed {failures} deliveries; {}",
                    self.name,
                    self.sub.topic.name,
                    if self.dlq.is_some() {
                        "dead-lettered"
                    } else {
                        "skipped"
                    }
                );
                self.commit(due)
            }
            Err(e) => self.write_failed(&e),
        }
    }

    /// The writes of [`Shared::give_up`]: the message's event id and the
    /// record that set the group last.
    fn give_up_writes(&mut self, at: u64, failures: u32) -> Result<(u64, u64), CallError> {
        let topic = self.sub.topic.name.clone();
        let file = self.sub.broker.index_of(&self.sub.topic).map_err(io_err)?;
        let id = EntrySource::entry(&*file, at).map_err(io_err)?.event_id;
        let counted = |t: &Topic| {
            t.group(&self.name)
                .filter(|g| g.failed_at == id)
                .map_or(0, |g| g.failures)
        };
        let mut set_id = 0;
        for _ in counted(&self.sub.topic)..failures {
            let op = WriteOp::GroupFailed {
                topic: topic.clone(),
                group: self.name.clone(),
                at: id,
                alone: true,
            };
            if let WriteOk::Id(s) = self.sub.broker.writer.call(op)? {
                set_id = s;
            }
        }
        let op = WriteOp::give_up(&topic, &self.name, id, self.dlq.as_deref(), None);
        match self.sub.broker.writer.call(op)? {
            // The group record follows the copy in the same batch.
            WriteOk::Id(copy) if self.dlq.is_some() => Ok((id, copy + 1)),
            WriteOk::Id(s) => {
                Stats::add(&self.sub.broker.stats.dead_lettered, 1);
                Ok((id, s))
            }
            // Committed past it meanwhile: nothing to do.
            _ => Ok((id, set_id)),
        }
    }
}

fn io_err(e: io::Error) -> CallError {
    CallError::Write(WriteError::Storage(format!("reading the index: {e}")))
}
