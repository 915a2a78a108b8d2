//! Tests of the write quorum on a real writer (no sockets): a thread plays
//! the slave connection by acknowledging what the durable tail shows, the
//! way a sender's ACK reader would.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use super::links::WriterLinks;
use super::test_writer::{self, create, one, publish};
use super::writer::Writer;
use crate::stats::Stats;
use crate::storage::checkpoint::Checkpoint;
use crate::storage::ops::{WriteError, WriteOk, WriteOp, WriteResult};

/// The slave connection the tests play.
const SLAVE: u64 = 7;

fn open(dir: &Path) -> Writer {
    test_writer::open(dir, 8, |c| {
        c.replication.min_slaves = 1;
        c.replication.sync_timeout_ms = 200;
    })
}

/// Acknowledges, as the slave, the next batch the writer streams.
fn slave_acks_next(b: &WriterLinks) -> JoinHandle<()> {
    let b = b.clone();
    let from = b.store.durable.get();
    std::thread::spawn(move || {
        let tail = b
            .store
            .durable
            .wait_beyond(from.pos, Duration::from_secs(10));
        b.repl.quorum.ack(SLAVE, tail.last_id);
    })
}

fn is_noslave(r: &WriteResult) -> bool {
    matches!(r, Err(WriteError::NoSlave(_)))
}

#[test]
fn writes_wait_for_the_slave_are_undone_without_it_and_ids_stay_used() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut w = open(dir.path());
    let b = w.links();

    // No slave: refused at once, nothing written.
    assert!(is_noslave(&one(&mut w, create("t"))));
    assert_eq!(
        (w.next_pos(), w.state.last_id(), b.store.topic_count()),
        (0, 0, 0)
    );

    // A caught-up slave: the write waits for its acknowledgement.
    b.repl.quorum.join(SLAVE);
    b.repl.quorum.ack(SLAVE, 0);
    let acker = slave_acks_next(&b);
    assert_eq!(one(&mut w, create("t")), Ok(WriteOk::Id(1)));
    let _ = acker.join();
    assert!(b.store.topic("t").is_some());

    // The slave does not acknowledge: undone, invisible, its id kept.
    let before = b.store.topic("t").map(|t| t.state());
    let (pos, cuts) = (w.next_pos(), b.store.durable.cuts());
    assert!(is_noslave(&one(&mut w, publish("t", "undone"))));
    assert_eq!(b.store.topic("t").map(|t| t.state()), before);
    assert_eq!(b.store.last_event_id(), 1);
    assert_eq!(w.next_pos(), pos, "the log is cut back");
    assert_eq!(b.store.durable.cuts(), cuts + 1, "senders are told");
    assert_eq!(b.store.durable.get().pos, pos);
    assert_eq!(w.state.last_id(), 2, "id 2 stays used");
    assert_eq!(w.quorum.gaps().to_vec(), vec![(2, 2)]);
    let cp = Checkpoint::load(dir.path()).ok().flatten();
    assert_eq!(cp.map(|c| c.gaps), Some(vec![(2, 2)]), "durable at once");

    // The slave fell behind: refused at once until it acknowledges again.
    assert!(is_noslave(&one(&mut w, publish("t", "refused"))));
    assert_eq!(Stats::get(&b.stats.repl_noslave_refusals), 3);
    b.repl.quorum.ack(SLAVE, 1);
    let acker = slave_acks_next(&b);
    assert_eq!(one(&mut w, publish("t", "kept")), Ok(WriteOk::Id(3)));
    let _ = acker.join();

    // A slave that holds the undone id is told to move it aside.
    match w.repl_plan(2, w.state.history(), 0, false) {
        Ok(WriteOk::Plan(p)) => assert_eq!(
            p.mode,
            crate::storage::ops::ReplMode::Diverged { keep_id: 1 },
            "{p:?}"
        ),
        other => panic!("{other:?}"),
    }

    // After a clean restart the gap is still known and ids go on above it.
    assert_eq!(one(&mut w, WriteOp::Shutdown), Ok(WriteOk::Done));
    drop(w);
    let mut w = open(dir.path());
    assert_eq!(w.quorum.gaps().to_vec(), vec![(2, 2)]);
    assert_eq!(w.state.last_id(), 3);
    let b = w.links();
    b.repl.quorum.join(SLAVE);
    b.repl.quorum.ack(SLAVE, 3);
    let acker = slave_acks_next(&b);
    assert_eq!(one(&mut w, publish("t", "after")), Ok(WriteOk::Id(4)));
    let _ = acker.join();
}

#[test]
fn requests_that_append_nothing_for_a_client_are_not_held() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut w = open(dir.path());
    // Retention appends nothing: answered without slaves.
    assert_eq!(
        one(&mut w, WriteOp::Retention { now_ms: 0 }),
        Ok(WriteOk::Done)
    );
    assert_eq!(Stats::get(&w.stats.repl_noslave_refusals), 0);
}

/// Opens a writer, creates `t` with the slave acknowledging, then has a
/// publish undone: the undone write is the last thing the writer did.
fn undone_last(dir: &Path) -> Writer {
    let mut w = open(dir);
    let b = w.links();
    b.repl.quorum.join(SLAVE);
    b.repl.quorum.ack(SLAVE, 0);
    let acker = slave_acks_next(&b);
    assert_eq!(one(&mut w, create("t")), Ok(WriteOk::Id(1)));
    let _ = acker.join();
    assert!(is_noslave(&one(&mut w, publish("t", "undone"))));
    assert_eq!(w.state.last_id(), 2);
    w
}

#[test]
fn a_clean_restart_after_an_undo_keeps_its_ids_used() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut w = undone_last(dir.path());
    assert_eq!(one(&mut w, WriteOp::Shutdown), Ok(WriteOk::Done));
    drop(w);
    let mut w = open(dir.path());
    assert_eq!(
        w.state.last_id(),
        2,
        "the lease shrank to the undone id, not below"
    );
    assert_eq!(w.quorum.gaps().to_vec(), vec![(2, 2)]);
    let b = w.links();
    b.repl.quorum.join(SLAVE);
    b.repl.quorum.ack(SLAVE, 1);
    let acker = slave_acks_next(&b);
    assert_eq!(one(&mut w, publish("t", "next")), Ok(WriteOk::Id(3)));
    let _ = acker.join();
}

#[test]
fn a_crash_after_an_undo_resumes_above_the_lease_with_one_gap() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let w = undone_last(dir.path());
    drop(w); // no final checkpoint, no lease shrink: a crash
    let mut w = open(dir.path());
    let lease = w.state.last_id();
    assert!(lease > 2, "ids resume above the lease");
    assert_eq!(
        w.quorum.gaps().to_vec(),
        vec![(2, lease)],
        "the undone id and the unused lease are one gap"
    );
    // A slave that kept record 1 is served; one that holds 2 moves it aside.
    for (after, mode) in [
        (1, crate::storage::ops::ReplMode::Stream { after_id: 1 }),
        (2, crate::storage::ops::ReplMode::Diverged { keep_id: 1 }),
        (
            lease,
            crate::storage::ops::ReplMode::Diverged { keep_id: 1 },
        ),
        (
            lease + 5,
            crate::storage::ops::ReplMode::Diverged { keep_id: 1 },
        ),
    ] {
        match w.repl_plan(after, w.state.history(), 0, false) {
            Ok(WriteOk::Plan(p)) => assert_eq!(p.mode, mode, "after {after}"),
            other => panic!("{other:?}"),
        }
    }
}
