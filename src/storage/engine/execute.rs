//! Turning a request into records: validation against the writer's state,
//! event id assignment, and appending to the batch being committed.
//!
//! Runs on the writer thread. A refused request ([`WriteError`]) appends
//! nothing; an accepted one is applied at once through [`super::state`]'s apply so
//! later requests of the same batch see it (a CREATE then a PUB). Every step
//! that can fail for want of a resource — the id lease, a segment roll, a
//! new index file — runs before the request changes anything, so such a
//! failure costs only that request.

use log::info;

use super::lease::{ID_LEASE_BLOCK, store_lease};
use super::state::Repeat;
use super::writer::Writer;
use crate::protocol::Message;
use crate::role::Role;
use crate::stats::Stats;
use crate::storage::StoreError;
use crate::storage::log::record::{self, DeleteReason, FLAG_BATCH_MORE, Kind, Record};
use crate::storage::now_ms;
use crate::storage::ops::{WriteError, WriteOk, WriteOp, WriteResult};

impl Writer {
    /// Validates one request and appends its record(s) to the batch.
    pub(super) fn execute(&mut self, op: WriteOp) -> WriteResult {
        if let Some(why) = self.poisoned() {
            return Err(WriteError::Poisoned(why.to_string()));
        }
        let now = now_ms();
        if self.role() == Role::Master
            && let Err(e) = self.keep_id_room()
        {
            return self.fail(e);
        }
        // A topic past its life does not exist, whether or not the lifetime
        // timer has ended it yet: a write to it is refused without writing
        // anything, and a CREATE of its name ends it first.
        if let Some(topic) = op.topic()
            && self.past_life(topic, now)
        {
            match &op {
                WriteOp::Create { topic, .. } => {
                    if let Err(e) = self.append_delete(topic, DeleteReason::Expired, now) {
                        return self.fail(e);
                    }
                }
                // The lifetime timer's own request.
                WriteOp::Delete {
                    reason: DeleteReason::Expired,
                    ..
                } => {}
                _ => return Err(WriteError::NoTopic(topic.to_string())),
            }
        }
        let res = match op {
            WriteOp::Create { topic, life_ms } => {
                if self.state.has_topic(&topic) {
                    return Err(WriteError::Exists(topic));
                }
                self.create(&topic, life_ms, now)
            }
            WriteOp::Delete {
                topic,
                reason,
                create_id,
            } => {
                let current = self.state.topic(&topic).map(|t| t.shared().create_id);
                if current.is_none() || create_id.is_some_and(|c| Some(c) != current) {
                    return Err(WriteError::NoTopic(topic));
                }
                self.append_delete(&topic, reason, now).map(WriteOk::Id)
            }
            WriteOp::Pub { topic, msg } => {
                if let Some(answer) = self.single_write(&topic, &msg.headers, now)? {
                    return Ok(answer);
                }
                let id = self.state.next_id();
                let r = self.append(&Record {
                    event_id: id,
                    timestamp_ms: now,
                    kind: Kind::Pub,
                    flags: 0,
                    topic: &topic,
                    headers: &msg.headers,
                    body: &msg.payload,
                });
                if r.is_ok() {
                    self.count_published(&topic, id, 1);
                }
                r.map(|_| WriteOk::Id(id))
            }
            WriteOp::MPub { topic, msgs } => {
                if !self.state.has_topic(&topic) {
                    return Err(WriteError::NoTopic(topic));
                }
                if msgs.is_empty() {
                    return Err(WriteError::Invalid("MPUB needs a message".into()));
                }
                let headers: Vec<&[u8]> = msgs.iter().map(|m| m.headers.as_slice()).collect();
                match self.state.dedup_batch(&topic, &headers, now) {
                    Ok(Repeat::New) => {}
                    Ok(Repeat::Dup(first, last)) => {
                        self.state.count_duplicate();
                        return Ok(WriteOk::DupRange(first, last));
                    }
                    Err(why) => return Err(WriteError::Invalid(why)),
                }
                self.mpub(&topic, &msgs, now)
            }
            WriteOp::DPub {
                topic,
                delay_ms,
                msg,
            } => {
                if let Some(answer) = self.single_write(&topic, &msg.headers, now)? {
                    return Ok(answer);
                }
                let id = self.state.next_id();
                let due_ms = now.saturating_add(delay_ms);
                let mut body = Vec::with_capacity(8 + msg.payload.len());
                body.extend_from_slice(&due_ms.to_le_bytes());
                body.extend_from_slice(&msg.payload);
                self.append(&Record {
                    event_id: id,
                    timestamp_ms: now,
                    kind: Kind::DPub,
                    flags: 0,
                    topic: &topic,
                    headers: &msg.headers,
                    body: &body,
                })
                .map(|_| WriteOk::Id(id))
            }
            WriteOp::Fire { ids } => self.fire(&ids, now).map(|_| WriteOk::Done),
            WriteOp::Retention { now_ms } => self.retention(now_ms).map(|_| WriteOk::Done),
            WriteOp::GroupCommit {
                topic,
                group,
                position,
                expect_set,
            } => {
                return self.group_result(|w| {
                    w.commit_group_position(&topic, &group, position, expect_set)
                });
            }
            WriteOp::GroupFailed {
                topic,
                group,
                at,
                alone,
            } => {
                return self.group_result(|w| w.group_failed(&topic, &group, at, alone));
            }
            WriteOp::GroupDel { topic, group } => {
                return self.group_result(|w| w.group_remove(&topic, &group));
            }
            WriteOp::DeadLetter {
                topic,
                group,
                at,
                dlq,
            } => return self.group_result(|w| w.dead_letter(&topic, &group, at, &dlq)),
            WriteOp::ReplPlan {
                after_id,
                history,
                epoch,
                empty,
            } => self.repl_plan(after_id, history, epoch, empty),
            WriteOp::Replicate { records } => {
                if self.role() != Role::Slave {
                    return Err(WriteError::Invalid("this server is not a slave".into()));
                }
                self.replicate(&records)
            }
            WriteOp::ReplLease { lease } => self.repl_lease(lease),
            // Published at the commit (Writer::publish_held).
            WriteOp::ReplDurable => Ok(WriteOk::Done),
            WriteOp::ReplReset {
                history,
                diverged_after,
            } => self.repl_reset(history, diverged_after),
            WriteOp::ReplSynced { history, after_id } => {
                self.state.adopt_history(history, after_id);
                Ok(WriteOk::Done)
            }
            WriteOp::Promote => self.promote(),
            WriteOp::ClaimRole(claim) => self.claim_role(claim),
            WriteOp::Demote => self.demote(),
            WriteOp::Shutdown => Ok(WriteOk::Done),
        };
        match res {
            Ok(ok) => Ok(ok),
            Err(e) => self.fail(e),
        }
    }

    fn group_result(
        &mut self,
        f: impl FnOnce(&mut Writer) -> Result<WriteOk, super::groups::GroupErr>,
    ) -> WriteResult {
        if self.role() != Role::Master {
            return Err(WriteError::Invalid("group writes need the master".into()));
        }
        match f(self) {
            Ok(ok) => Ok(ok),
            Err(super::groups::GroupErr::Refused(e)) => Err(e),
            Err(super::groups::GroupErr::Store(e)) => self.fail(e),
        }
    }

    /// What a PUB or DPUB to `topic` checks before it writes: the topic
    /// exists, and the message's key (if any) is not in its window — else
    /// the first write's answer, marked a duplicate (nothing written).
    fn single_write(
        &mut self,
        topic: &str,
        headers: &[u8],
        now: u64,
    ) -> Result<Option<WriteOk>, WriteError> {
        if !self.state.has_topic(topic) {
            return Err(WriteError::NoTopic(topic.to_string()));
        }
        if let Repeat::Dup(first, _) = self.state.dedup_one(topic, headers, now) {
            self.state.count_duplicate();
            return Ok(Some(WriteOk::Dup(first)));
        }
        Ok(None)
    }

    fn create(&mut self, topic: &str, life_ms: u64, now: u64) -> Result<WriteOk, StoreError> {
        let id = self.state.next_id();
        let body = life_ms.to_le_bytes();
        let rec = Record {
            event_id: id,
            timestamp_ms: now,
            kind: Kind::Create,
            flags: 0,
            topic,
            headers: b"",
            body: &body,
        };
        self.reserve(id, record::encoded_len(topic.len(), 0, body.len()))?;
        super::state::create_index(&self.store.index_files, topic, id)?;
        self.state.index_made_for(id);
        self.append_reserved(&rec)?;
        Ok(WriteOk::Id(id))
    }

    /// All `msgs` with consecutive ids in one segment, or none of them.
    fn mpub(&mut self, topic: &str, msgs: &[Message], now: u64) -> Result<WriteOk, StoreError> {
        // A batch never spans segments, so recovery can drop a torn batch
        // by truncating one file.
        let total: usize = msgs
            .iter()
            .map(|m| record::encoded_len(topic.len(), m.headers.len(), m.payload.len()))
            .sum();
        let first = self.state.next_id();
        let n = msgs.len();
        self.reserve(self.state.last_id() + n as u64, total)?;
        for (i, m) in msgs.iter().enumerate() {
            self.append_reserved(&Record {
                event_id: self.state.next_id(),
                timestamp_ms: now,
                kind: Kind::Pub,
                flags: if i + 1 < n { FLAG_BATCH_MORE } else { 0 },
                topic,
                headers: &m.headers,
                body: &m.payload,
            })?;
        }
        self.count_published(topic, self.state.last_id(), n as u64);
        Ok(WriteOk::Range(first, self.state.last_id()))
    }

    pub(super) fn count_published(&mut self, topic: &str, last_id: u64, n: u64) {
        let before = Stats::get(&self.stats.messages_published) + self.state.count_published(n);
        let sample = self.tuning.log_sample;
        if sample > 0 && (before / sample) != ((before + n) / sample) {
            info!(
                "published to {topic}: event id {last_id} ({} messages so far)",
                before + n
            );
        }
    }

    /// Appends one record (rolling the segment first if it would not fit).
    pub(super) fn append(&mut self, rec: &Record<'_>) -> Result<(), StoreError> {
        let len = record::encoded_len(rec.topic.len(), rec.headers.len(), rec.body.len());
        self.reserve(rec.event_id, len)?;
        self.append_reserved(rec)
    }

    /// Makes sure ids up to `last_id` are leased and `bytes` more fit in the
    /// active segment. Changes no state a failure would have to undo.
    fn reserve(&mut self, last_id: u64, bytes: usize) -> Result<(), StoreError> {
        self.check_id_in_range(last_id)?;
        if last_id > self.state.id_lease() {
            // Record durably that ids up to the new lease may be in use
            // before handing any out, so a crash that loses unsynced
            // records (fsync interval/never) can never lead to reuse.
            let lease = last_id.saturating_add(ID_LEASE_BLOCK);
            #[cfg(test)]
            super::fault::hit(super::fault::Step::Lease)?;
            store_lease(&self.dir, lease)?;
            self.state.leased_to(lease);
        }
        self.ensure_room(bytes)
    }

    /// Encodes a reserved record into the batch and applies it.
    fn append_reserved(&mut self, rec: &Record<'_>) -> Result<(), StoreError> {
        let pos = self.next_pos();
        let len = self.log.append_record(rec);
        self.apply(rec, pos, len)
    }
}
