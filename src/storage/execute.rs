//! Turning a request into records: validation against the writer's state,
//! event id assignment, and appending to the group being committed.
//!
//! Runs on the writer thread. A refused request ([`WriteError`]) appends
//! nothing; an accepted one is applied at once through [`super::apply`] so
//! later requests of the same group see it (a CREATE then a PUB).

use std::sync::atomic::Ordering;

use log::info;

use super::StoreError;
use super::lease::{ID_LEASE_BLOCK, store_lease};
use super::now_ms;
use super::ops::{WriteError, WriteOk, WriteOp, WriteResult};
use super::record::{self, DeleteReason, FLAG_BATCH_MORE, Kind, Record};
use super::writer::Writer;
use crate::stats::Stats;

impl Writer {
    /// Validates one request and appends its record(s) to the group.
    pub(super) fn execute(&mut self, op: WriteOp) -> WriteResult {
        if let Some(why) = &self.poisoned {
            return Err(WriteError::Poisoned(why.clone()));
        }
        let now = now_ms();
        let res = match op {
            WriteOp::Create { topic, life_ms } => {
                if self.topics.contains_key(&topic) {
                    return Err(WriteError::Exists(topic));
                }
                let id = self.last_id + 1;
                self.append(&Record {
                    event_id: id,
                    timestamp_ms: now,
                    kind: Kind::Create,
                    flags: 0,
                    topic: &topic,
                    headers: b"",
                    body: &life_ms.to_le_bytes(),
                })
                .map(|_| WriteOk::Id(id))
            }
            WriteOp::Delete {
                topic,
                reason,
                create_id,
            } => {
                let current = self.topics.get(&topic).map(|t| t.shared.create_id);
                if current.is_none() || create_id.is_some_and(|c| Some(c) != current) {
                    return Err(WriteError::NoTopic(topic));
                }
                let id = self.last_id + 1;
                let r = self
                    .append(&Record {
                        event_id: id,
                        timestamp_ms: now,
                        kind: Kind::Delete,
                        flags: 0,
                        topic: &topic,
                        headers: b"",
                        body: &[reason as u8],
                    })
                    .map(|_| WriteOk::Id(id));
                if r.is_ok() && reason == DeleteReason::Expired {
                    info!("topic {topic} expired (event id {id})");
                    Stats::add(&self.broker.stats.topics_expired, 1);
                }
                r
            }
            WriteOp::Pub { topic, msg } => {
                if !self.topics.contains_key(&topic) {
                    return Err(WriteError::NoTopic(topic));
                }
                let id = self.last_id + 1;
                let r = self
                    .append(&Record {
                        event_id: id,
                        timestamp_ms: now,
                        kind: Kind::Pub,
                        flags: 0,
                        topic: &topic,
                        headers: &msg.headers,
                        body: &msg.payload,
                    })
                    .map(|_| WriteOk::Id(id));
                if r.is_ok() {
                    self.count_published(&topic, id, 1);
                }
                r
            }
            WriteOp::MPub { topic, msgs } => {
                if !self.topics.contains_key(&topic) {
                    return Err(WriteError::NoTopic(topic));
                }
                if msgs.is_empty() {
                    return Err(WriteError::Invalid("MPUB needs a message".into()));
                }
                // A batch never spans segments, so recovery can drop a torn
                // batch by truncating one file.
                let total: usize = msgs
                    .iter()
                    .map(|m| record::encoded_len(topic.len(), m.headers.len(), m.payload.len()))
                    .sum();
                if let Err(e) = self.ensure_room(total) {
                    return self.fail(e);
                }
                let first = self.last_id + 1;
                let n = msgs.len();
                for (i, m) in msgs.iter().enumerate() {
                    let rec = Record {
                        event_id: self.last_id + 1,
                        timestamp_ms: now,
                        kind: Kind::Pub,
                        flags: if i + 1 < n { FLAG_BATCH_MORE } else { 0 },
                        topic: &topic,
                        headers: &m.headers,
                        body: &m.payload,
                    };
                    if let Err(e) = self.append_unchecked(&rec) {
                        return self.fail(e);
                    }
                }
                self.count_published(&topic, self.last_id, n as u64);
                Ok(WriteOk::Range(first, self.last_id))
            }
            WriteOp::DPub {
                topic,
                delay_ms,
                msg,
            } => {
                if !self.topics.contains_key(&topic) {
                    return Err(WriteError::NoTopic(topic));
                }
                let id = self.last_id + 1;
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
            WriteOp::Shutdown => Ok(WriteOk::Done),
        };
        match res {
            Ok(ok) => Ok(ok),
            Err(e) => self.fail(e),
        }
    }

    pub(super) fn count_published(&self, topic: &str, last_id: u64, n: u64) {
        let stats = &self.broker.stats;
        let before = stats.messages_published.fetch_add(n, Ordering::Relaxed);
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
        self.ensure_room(record::encoded_len(
            rec.topic.len(),
            rec.headers.len(),
            rec.body.len(),
        ))?;
        self.append_unchecked(rec)
    }

    fn append_unchecked(&mut self, rec: &Record<'_>) -> Result<(), StoreError> {
        if rec.event_id > self.id_lease {
            // Record durably that ids up to the new lease may be in use
            // before handing any out, so a crash that loses unsynced
            // records (fsync interval/never) can never lead to reuse.
            let lease = rec.event_id.saturating_add(ID_LEASE_BLOCK);
            store_lease(&self.dir, lease)?;
            self.id_lease = lease;
        }
        let pos = self.next_pos();
        let start = self.buf.len();
        record::encode(&mut self.buf, rec);
        let len = self.buf.len() - start;
        self.apply(rec, pos, len)
    }
}
