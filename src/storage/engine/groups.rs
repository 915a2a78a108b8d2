//! Consumer groups in the writer: the writes a
//! group subscription asks for — commit a position, count a failed
//! delivery, remove a group, and move a poison message to a dead-letter
//! topic (a copy and the commit past it, in one all-or-nothing batch).
//!
//! Runs on the writer thread. A group's state lives in its topic
//! (`WriterTopic` in [`super::state`]), goes into the checkpoint, and reaches readers
//! (GROUPS, the subscriptions) when the commit publishes it; it is
//! replicated like every record; a GROUP record is applied by
//! [`super::state`]'s apply like every other.

use log::info;

use super::writer::Writer;
use crate::storage::StoreError;
use crate::storage::index;
use crate::storage::log::record::{self, Decoded, FLAG_BATCH_MORE, GroupOp, Kind, Record};
use crate::storage::ops::{WriteError, WriteOk};
use crate::storage::view::GroupState;

/// What a group write can come to: refused (nothing written) or failed.
pub(super) enum GroupErr {
    Refused(WriteError),
    Store(StoreError),
}

impl From<StoreError> for GroupErr {
    fn from(e: StoreError) -> GroupErr {
        GroupErr::Store(e)
    }
}

/// A write for a group that was removed or moved since its subscriber
/// looked: refused, nothing written.
fn changed(topic: &str, group: &str) -> GroupErr {
    GroupErr::Refused(WriteError::Invalid(format!(
        "group {group} of {topic} was removed or moved meanwhile"
    )))
}

impl Writer {
    fn group_of(&self, topic: &str, group: &str) -> Result<Option<GroupState>, GroupErr> {
        let t = self
            .state
            .topic(topic)
            .ok_or_else(|| GroupErr::Refused(WriteError::NoTopic(topic.to_string())))?;
        Ok(t.groups().get(group).copied())
    }

    /// Appends one GROUP record and applies it; returns its id.
    fn append_group(
        &mut self,
        topic: &str,
        op: &GroupOp<'_>,
        flags: u8,
    ) -> Result<u64, StoreError> {
        let id = self.state.next_id();
        let body = op.encode();
        self.append(&Record {
            event_id: id,
            timestamp_ms: crate::storage::now_ms(),
            kind: Kind::Group,
            flags,
            topic,
            headers: b"",
            body: &body,
        })?;
        Ok(id)
    }

    /// The group has consumed everything up to `position` (an ACK, or a
    /// SUB that sets where it starts); failed deliveries are forgotten.
    /// With `expect_set`, only if the group is still as its subscriber last
    /// saw it: an ACK must not bring back a group GROUPDEL removed, nor undo
    /// a SUB that moved it; `Some(0)` creates a group only if it is absent.
    pub(super) fn commit_group_position(
        &mut self,
        topic: &str,
        group: &str,
        position: u64,
        expect_set: Option<u64>,
    ) -> Result<WriteOk, GroupErr> {
        let cur = self.group_of(topic, group)?;
        // A group that does not exist counts as set by record 0.
        let set_id = cur.map_or(0, |g| g.set_id);
        if let Some(want) = expect_set
            && !self.chains.admits(topic, group, set_id, want)
        {
            return Err(changed(topic, group));
        }
        let op = GroupOp::Set {
            group,
            committed: position,
            failed_at: 0,
            failures: 0,
            alone: false,
        };
        let id = self.append_group(topic, &op, 0)?;
        if let Some(want) = expect_set {
            self.chains.committed(topic, group, id, want);
        }
        Ok(WriteOk::Id(id))
    }

    /// A delivery of message `at` ended without an ACK: counted durably, so
    /// a consumer that crashes on it every time is counted across restarts.
    /// `alone` (the batch was that message only) is kept with the count:
    /// whether the failures are surely its own must survive a restart too,
    /// or `maxDeliver` would cost one more delivery after each.
    pub(super) fn group_failed(
        &mut self,
        topic: &str,
        group: &str,
        at: u64,
        alone: bool,
    ) -> Result<WriteOk, GroupErr> {
        // A missing group was removed meanwhile: nothing to count.
        let cur = self
            .group_of(topic, group)?
            .ok_or_else(|| changed(topic, group))?;
        if at <= cur.committed {
            return Ok(WriteOk::Done); // committed meanwhile: nothing failed
        }
        let failures = if cur.failed_at == at {
            cur.failures + 1
        } else {
            1
        };
        let op = GroupOp::Set {
            group,
            committed: cur.committed,
            failed_at: at,
            failures,
            alone,
        };
        Ok(WriteOk::Id(self.append_group(topic, &op, 0)?))
    }

    /// GROUPDEL: the group goes; its subscribers are told `END deleted`.
    pub(super) fn group_remove(&mut self, topic: &str, group: &str) -> Result<WriteOk, GroupErr> {
        if self.group_of(topic, group)?.is_none() {
            return Err(GroupErr::Refused(WriteError::Invalid(format!(
                "topic {topic} has no group {group}"
            ))));
        }
        Ok(WriteOk::Id(self.append_group(
            topic,
            &GroupOp::Remove { group },
            0,
        )?))
    }

    /// Copies message `at` of `topic` to `dlq` with `dlq.*` headers and
    /// commits the group past it, in one batch (all or nothing at a
    /// crash). Returns the copy's event id.
    pub(super) fn dead_letter(
        &mut self,
        topic: &str,
        group: &str,
        at: u64,
        dlq: &str,
    ) -> Result<WriteOk, GroupErr> {
        let cur = self
            .group_of(topic, group)?
            .ok_or_else(|| changed(topic, group))?;
        if !self.state.has_topic(dlq) {
            return Err(GroupErr::Refused(WriteError::NoTopic(dlq.to_string())));
        }
        if at <= cur.committed {
            return Ok(WriteOk::Done);
        }
        let (headers, payload) = self.read_message(topic, at)?;
        let mut h = headers;
        if !h.is_empty() {
            h.push(b' ');
        }
        h.extend_from_slice(
            format!(
                "dlq.topic={topic} dlq.id={at} dlq.group={group} dlq.deliveries={}",
                cur.failures
            )
            .as_bytes(),
        );
        let copy_id = self.state.next_id();
        let set = GroupOp::Set {
            group,
            committed: at,
            failed_at: 0,
            failures: 0,
            alone: false,
        };
        let set_body = set.encode();
        let total = record::encoded_len(dlq.len(), h.len(), payload.len())
            + record::encoded_len(topic.len(), 0, set_body.len());
        // One segment for both, so a torn batch is cut as a whole.
        self.ensure_room(total)?;
        self.append(&Record {
            event_id: copy_id,
            timestamp_ms: crate::storage::now_ms(),
            kind: Kind::Pub,
            flags: FLAG_BATCH_MORE,
            topic: dlq,
            headers: &h,
            body: &payload,
        })?;
        self.count_published(dlq, copy_id, 1);
        self.append_group(topic, &set, 0)?;
        self.state.count_dead_lettered();
        info!(
            "group {group} of {topic}: message {at} failed {} deliveries; moved to {dlq} as {copy_id}",
            cur.failures
        );
        Ok(WriteOk::Id(copy_id))
    }

    /// Headers and payload of message `id` of `topic`.
    fn read_message(&self, topic: &str, id: u64) -> Result<(Vec<u8>, Vec<u8>), GroupErr> {
        let gone =
            || GroupErr::Refused(WriteError::Invalid(format!("{topic} has no message {id}")));
        let t = self.state.topic(topic).ok_or_else(gone)?;
        let files = &self.store.index_files;
        let file = files.get(topic, t.shared().create_id)?;
        let path = files.path(topic, t.shared().create_id);
        let read = |e| StoreError::io("read index", &path, e);
        let at = index::search_after(
            &*file,
            t.counters().first_entry,
            t.flushed_entries(),
            id - 1,
        )
        .map_err(read)?;
        if at >= t.flushed_entries() {
            return Err(gone());
        }
        let e = index::EntrySource::entry(&*file, at).map_err(read)?;
        if e.event_id != id {
            return Err(gone());
        }
        let mut buf = vec![0u8; e.len as usize];
        self.read_log(&mut buf, e.pos)?;
        match record::decode(&buf) {
            Decoded::Record { rec, .. } if rec.event_id == id && rec.is_message() => {
                Ok((rec.headers.to_vec(), rec.payload().to_vec()))
            }
            _ => Err(GroupErr::Store(StoreError::corrupt(
                self.log.path(),
                e.pos,
                format!("the record of event {id} does not match the index of {topic}"),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_writer::{self, create, one};
    use super::*;
    use crate::protocol::Message;
    use crate::storage::ops::{ReplMode, SnapItem, WriteOp, WriteResult};

    fn open(dir: &Path) -> Writer {
        test_writer::open(dir, 4, |_| {})
    }

    fn commit(position: u64, expect_set: Option<u64>) -> WriteOp {
        WriteOp::GroupCommit {
            topic: "t".into(),
            group: "g".into(),
            position,
            expect_set,
        }
    }

    fn failed(at: u64, alone: bool) -> WriteOp {
        WriteOp::GroupFailed {
            topic: "t".into(),
            group: "g".into(),
            at,
            alone,
        }
    }

    fn published(w: &Writer) -> Option<GroupState> {
        w.store.topic("t").and_then(|t| t.group("g"))
    }

    fn refused(r: WriteResult) -> bool {
        matches!(r, Err(WriteError::Invalid(_)))
    }

    #[test]
    fn commits_honour_expect_set_and_nothing_resurrects_a_removed_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = open(dir.path());
        for t in ["t", "dead"] {
            assert!(one(&mut w, create(t)).is_ok());
        }
        for body in ["m3", "m4", "m5"] {
            let msg = Message {
                headers: b"k=v".to_vec(),
                payload: body.as_bytes().to_vec(),
            };
            let op = WriteOp::Pub {
                topic: "t".into(),
                msg,
            };
            assert!(one(&mut w, op).is_ok());
        }
        // Some(0): create only if absent.
        assert_eq!(one(&mut w, commit(2, Some(0))), Ok(WriteOk::Id(6)));
        assert!(refused(one(&mut w, commit(1, Some(0)))));
        assert_eq!(published(&w).map(|g| (g.committed, g.set_id)), Some((2, 6)));
        // Some(id): only while the group is as last seen.
        assert_eq!(one(&mut w, commit(3, Some(6))), Ok(WriteOk::Id(7)));
        assert!(refused(one(&mut w, commit(4, Some(5)))), "a stale ACK");
        // Failed deliveries count per message, with whether the last one
        // was the message alone, and reset on a commit.
        assert!(one(&mut w, failed(4, false)).is_ok());
        let g = published(&w).expect("group");
        assert_eq!((g.failed_at, g.failures, g.alone), (4, 1, false));
        assert!(one(&mut w, failed(4, true)).is_ok());
        let g = published(&w).expect("group");
        assert_eq!(
            (g.committed, g.failed_at, g.failures, g.alone),
            (3, 4, 2, true)
        );
        assert_eq!(
            one(&mut w, failed(3, true)),
            Ok(WriteOk::Done),
            "committed already"
        );
        // A dead letter copies the message with dlq.* headers and commits past it.
        let dl = WriteOp::DeadLetter {
            topic: "t".into(),
            group: "g".into(),
            at: 4,
            dlq: "dead".into(),
        };
        assert_eq!(one(&mut w, dl), Ok(WriteOk::Id(10)));
        let g = published(&w).expect("group");
        assert_eq!(
            (g.committed, g.failures, g.alone, g.set_id),
            (4, 0, false, 11)
        );
        assert_eq!(w.store.topic("dead").map(|t| t.state().last_id), Some(10));
        // Removed: no ACK, failure or dead letter brings it back.
        let del = WriteOp::GroupDel {
            topic: "t".into(),
            group: "g".into(),
        };
        assert_eq!(one(&mut w, del), Ok(WriteOk::Id(12)));
        assert!(refused(one(&mut w, commit(5, Some(11)))));
        assert!(refused(one(&mut w, failed(5, true))));
        let dl = WriteOp::DeadLetter {
            topic: "t".into(),
            group: "g".into(),
            at: 5,
            dlq: "dead".into(),
        };
        assert!(refused(one(&mut w, dl)));
        assert_eq!(published(&w), None);
        // A SUB (None) creates it again.
        assert_eq!(one(&mut w, commit(0, None)), Ok(WriteOk::Id(13)));
        assert_eq!(published(&w).map(|g| g.committed), Some(0));
    }

    #[test]
    fn commits_in_flight_together_form_a_chain_any_other_write_breaks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = open(dir.path());
        assert!(one(&mut w, create("t")).is_ok());
        // The group is created by record 2; a second SUB `-` is refused.
        assert_eq!(one(&mut w, commit(0, Some(0))), Ok(WriteOk::Id(2)));
        assert!(refused(one(&mut w, commit(0, Some(0)))));
        // Three ACKs' commits in flight, each expecting record 2.
        for (pos, id) in [(10, 3), (20, 4), (30, 5)] {
            assert_eq!(one(&mut w, commit(pos, Some(2))), Ok(WriteOk::Id(id)));
        }
        assert_eq!(
            published(&w).map(|g| (g.committed, g.set_id)),
            Some((30, 5))
        );
        // Settled, the subscriber expects the last one; the chain goes on.
        assert_eq!(one(&mut w, commit(40, Some(5))), Ok(WriteOk::Id(6)));
        assert_eq!(one(&mut w, commit(50, Some(5))), Ok(WriteOk::Id(7)));
        assert!(refused(one(&mut w, commit(60, Some(2)))), "an older chain");
        // A SUB moves the group: commits of the chain are refused.
        assert_eq!(one(&mut w, commit(15, None)), Ok(WriteOk::Id(8)));
        assert!(refused(one(&mut w, commit(60, Some(5)))));
        assert!(refused(one(&mut w, commit(60, Some(7)))));
        assert_eq!(published(&w).map(|g| g.committed), Some(15));
        // A failure count breaks it too.
        assert_eq!(one(&mut w, commit(16, Some(8))), Ok(WriteOk::Id(9)));
        assert!(one(&mut w, failed(17, false)).is_ok());
        assert!(refused(one(&mut w, commit(20, Some(8)))));
        assert!(refused(one(&mut w, commit(20, Some(9)))));
        assert_eq!(one(&mut w, commit(20, Some(10))), Ok(WriteOk::Id(11)));
    }

    /// The group state after `w` is dropped and its directory opened again.
    fn reopened(w: Writer, dir: &Path) -> Option<GroupState> {
        drop(w); // releases the directory lock
        published(&open(dir))
    }

    #[test]
    fn sent_alone_survives_a_reopen_from_the_log_and_from_a_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = open(dir.path());
        assert!(one(&mut w, create("t")).is_ok());
        let msg = Message {
            headers: Vec::new(),
            payload: b"poison".to_vec(),
        };
        let op = WriteOp::Pub {
            topic: "t".into(),
            msg,
        };
        assert_eq!(one(&mut w, op), Ok(WriteOk::Id(2)));
        assert!(one(&mut w, commit(1, None)).is_ok());
        assert!(one(&mut w, failed(2, true)).is_ok());
        let want = published(&w);
        assert_eq!(
            want.map(|g| (g.failed_at, g.failures, g.alone)),
            Some((2, 1, true))
        );
        // Replayed from the log (the GROUP record after the checkpoint).
        drop(w);
        let mut w = open(dir.path());
        assert_eq!(published(&w), want);
        assert!(one(&mut w, failed(2, true)).is_ok());
        let want = published(&w);
        assert_eq!(want.map(|g| (g.failures, g.alone)), Some((2, true)));
        // A full resync's snapshot carries it to a slave.
        let plan = WriteOp::ReplPlan {
            after_id: want.map_or(0, |g| g.set_id),
            history: 0,
            epoch: 0,
            empty: true,
        };
        let snap = match one(&mut w, plan) {
            Ok(WriteOk::Plan(p)) => match p.mode {
                ReplMode::Full { snapshot, .. } => snapshot,
                other => panic!("not a full resync: {other:?}"),
            },
            other => panic!("no plan: {other:?}"),
        };
        let sets: Vec<(u64, u64, u32, bool)> = snap
            .iter()
            .filter_map(|item| match item {
                SnapItem::Built { bytes, .. } => match record::decode(bytes) {
                    Decoded::Record { rec, .. } => match rec.group_op() {
                        Some(GroupOp::Set {
                            committed,
                            failed_at,
                            failures,
                            alone,
                            ..
                        }) => Some((committed, failed_at, failures, alone)),
                        _ => None,
                    },
                    _ => None,
                },
                SnapItem::Logged { .. } => None,
            })
            .collect();
        assert_eq!(sets, vec![(1, 2, 2, true)]);
        // Loaded from a checkpoint that covers it.
        if let Err(e) = w.checkpoint() {
            panic!("checkpoint: {e}");
        }
        assert_eq!(reopened(w, dir.path()), want);
    }

    #[test]
    fn a_directory_of_format_2_gets_a_new_checkpoint_before_any_new_record() {
        use crate::storage::checkpoint::Checkpoint;
        use crate::storage::log::record::FORMAT_VERSION;
        let dir = tempfile::tempdir().expect("tempdir");
        let load = || match Checkpoint::load(dir.path()) {
            Ok(Some(cp)) => cp,
            other => panic!("checkpoint of {}: {other:?}", dir.path().display()),
        };
        let mut w = open(dir.path());
        assert!(one(&mut w, create("t")).is_ok());
        if let Err(e) = w.checkpoint() {
            panic!("checkpoint: {e}");
        }
        drop(w);
        // As a version 2 server left it after a clean stop: nothing to
        // replay, so only the format says a checkpoint is due.
        let mut cp = load();
        cp.format = 2;
        if let Err(e) = cp.store(dir.path()) {
            panic!("store: {e}");
        }
        drop(open(dir.path()));
        // A version 2 server now refuses the directory rather than misread
        // the version 3 GROUP bodies this one may write.
        assert_eq!(load().format, FORMAT_VERSION);
    }
}
