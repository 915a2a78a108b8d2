//! Tests of early streams in the writer: a semi-sync master publishes each
//! batch's written tail before its fsync and takes it back when the fsync
//! fails; a slave holds back what its master has not said is durable.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;

use super::fault::{self, Step};
use super::test_writer::{self, batch, create, one, publish};
use super::writer::Writer;
use crate::role::Role;
use crate::storage::log::record::{self, Kind, Record};
use crate::storage::ops::{WriteOk, WriteOp};

fn semi_sync(dir: &std::path::Path) -> Writer {
    test_writer::open(dir, 4, |c| c.replication.sync = true)
}

#[test]
fn a_failed_fsync_takes_back_the_written_tail_the_senders_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = semi_sync(dir.path());
    assert!(one(&mut w, create("t")).is_ok());
    assert!(one(&mut w, publish("t", "kept")).is_ok());
    let tail = &w.store.durable;
    let (durable, cuts) = tail.get_with_cuts();
    assert_eq!(tail.written_with_cuts(), (durable, cuts), "all durable");
    fault::arm(Step::Fsync, 1, ErrorKind::Other);
    let res = batch(&mut w, vec![publish("t", "lost")]);
    fault::disarm();
    assert!(res[0].is_err(), "{res:?}");
    let tail = &w.store.durable;
    // The batch was written (and could have been sent) before its fsync
    // failed: the cut tells every sender, and both tails are back.
    assert_eq!(tail.get_with_cuts(), (durable, cuts + 1));
    assert_eq!(tail.written_with_cuts(), (durable, cuts + 1));
    assert!(!tail.kept_since(cuts, durable.pos + 1));
    assert!(w.poisoned().is_some(), "a failed fsync poisons");
}

#[test]
fn without_semi_sync_nothing_is_written_out_before_the_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = test_writer::open(dir.path(), 4, |_| {});
    assert!(one(&mut w, create("t")).is_ok());
    let cuts = w.store.durable.cuts();
    fault::arm(Step::Fsync, 1, ErrorKind::Other);
    let res = batch(&mut w, vec![publish("t", "lost")]);
    fault::disarm();
    assert!(res[0].is_err(), "{res:?}");
    assert_eq!(w.store.durable.cuts(), cuts, "no sender could have read it");
}

/// The master's records for a slave: a CREATE of `t` (id 1), then one
/// message per id of `ids`.
fn records(ids: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let life = 0u64.to_le_bytes();
    let mut add = |event_id, kind, body: &[u8]| {
        let rec = Record {
            event_id,
            timestamp_ms: 1_700_000_000_000 + event_id,
            kind,
            flags: 0,
            topic: "t",
            headers: b"",
            body,
        };
        record::encode(&mut out, &rec);
    };
    if ids.first() == Some(&1) {
        add(1, Kind::Create, &life);
    }
    for &id in ids.iter().filter(|&&id| id > 1) {
        add(id, Kind::Pub, b"payload");
    }
    out
}

fn visible_last_id(w: &Writer) -> Option<u64> {
    w.store.topic("t").map(|t| t.state().last_id)
}

#[test]
fn a_slave_shows_nothing_above_what_its_master_has_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = test_writer::open(dir.path(), 4, |_| {});
    let links = w.links();
    links.role.set(Role::Slave);
    let repl = &links.repl;
    repl.master_durable.start_at(0);
    let res = one(
        &mut w,
        WriteOp::Replicate {
            records: records(&[1, 2, 3]),
        },
    );
    assert!(matches!(res, Ok(WriteOk::Id(3))), "{res:?}");
    assert_eq!(repl.received.load(Ordering::Relaxed), 3, "durable here");
    assert_eq!(visible_last_id(&w), None, "not even the CREATE is shown");
    assert_eq!(w.store.last_event_id(), 0);
    // Publication is per commit: a bound inside it shows nothing yet.
    repl.master_durable.raise(2);
    assert!(one(&mut w, WriteOp::ReplDurable).is_ok());
    assert_eq!(visible_last_id(&w), None);
    repl.master_durable.raise(3);
    assert!(one(&mut w, WriteOp::ReplDurable).is_ok());
    assert_eq!(visible_last_id(&w), Some(3));
    assert_eq!(w.store.last_event_id(), 3);
    // The next records are held; records that arrive once the bound has
    // moved past the held ones publish those first (at the batch's start).
    assert!(
        one(
            &mut w,
            WriteOp::Replicate {
                records: records(&[4])
            }
        )
        .is_ok()
    );
    assert_eq!(visible_last_id(&w), Some(3));
    repl.master_durable.raise(4);
    assert!(
        one(
            &mut w,
            WriteOp::Replicate {
                records: records(&[5])
            }
        )
        .is_ok()
    );
    assert_eq!(visible_last_id(&w), Some(4), "4 shown, 5 held");
    // Promoted: what it holds is the history now.
    links.role.set(Role::Master);
    assert!(one(&mut w, WriteOp::ReplDurable).is_ok());
    assert_eq!(visible_last_id(&w), Some(5));
    assert_eq!(w.store.last_event_id(), 5);
}

#[test]
fn a_slave_of_a_master_without_early_streams_shows_each_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = test_writer::open(dir.path(), 4, |_| {});
    let links = w.links();
    links.role.set(Role::Slave);
    links.repl.master_durable.clear();
    assert!(
        one(
            &mut w,
            WriteOp::Replicate {
                records: records(&[1, 2])
            }
        )
        .is_ok()
    );
    assert_eq!(visible_last_id(&w), Some(2));
}

#[test]
fn under_the_write_quorum_a_batch_is_said_committed_only_once_the_slaves_have_it() {
    const SLAVE: u64 = 7;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = test_writer::open(dir.path(), 4, |c| {
        c.replication.min_slaves = 1;
        c.replication.sync_timeout_ms = 200;
    });
    let b = w.links();
    b.repl.quorum.join(SLAVE);
    b.repl.quorum.ack(SLAVE, 0);
    // The slave's connection: it sees the batch durable, not committed,
    // and acknowledges it.
    let acker = {
        let b = b.clone();
        std::thread::spawn(move || {
            let tail = b
                .store
                .durable
                .wait_beyond(0, std::time::Duration::from_secs(10));
            let said = b.store.durable.committed_with_cuts().0;
            b.repl.quorum.ack(SLAVE, tail.last_id);
            said
        })
    };
    assert_eq!(one(&mut w, create("t")), Ok(WriteOk::Id(1)));
    assert_eq!(acker.join().ok(), Some(0), "not committed before the ACK");
    assert_eq!(b.store.durable.committed_with_cuts().0, 1);
    // No acknowledgement: undone, never said committed, one cut.
    let cuts = b.store.durable.cuts();
    let res = one(&mut w, publish("t", "undone"));
    assert!(
        matches!(res, Err(crate::storage::ops::WriteError::NoSlave(_))),
        "{res:?}"
    );
    assert_eq!(b.store.durable.committed_with_cuts().0, 1);
    assert_eq!(b.store.durable.cuts(), cuts + 1);
    assert_eq!(b.store.durable.written_with_cuts().0, b.store.durable.get());
}

#[test]
fn a_slaves_batches_wake_no_releasing_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = test_writer::open(dir.path(), 4, |_| {});
    let (tx, rx) = crossbeam_channel::unbounded();
    w.set_releaser(tx);
    let links = w.links();
    links.role.set(Role::Slave);
    links.repl.master_durable.clear();
    // Replication's requests are answered at once: nothing to hand over.
    let res = one(
        &mut w,
        WriteOp::Replicate {
            records: records(&[1, 2]),
        },
    );
    assert!(matches!(res, Ok(WriteOk::Id(2))), "{res:?}");
    assert!(
        rx.try_recv().is_err(),
        "an empty hand-over woke the replier"
    );
    // A client's write is handed over (and answered by the releaser).
    links.role.set(Role::Master);
    let _ = batch(&mut w, vec![publish("t", "m")]);
    let held = rx.try_recv().expect("the batch's answers");
    assert_eq!(held.replies.len(), 1);
}
