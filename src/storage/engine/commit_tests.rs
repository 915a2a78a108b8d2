//! Tests of the commit path under injected failures (see [`super::fault`]):
//! every request answered OK is in the log after a restart, and every
//! request answered ERR left nothing behind; only a failed fsync poisons.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::Path;

use super::fault::{self, Step};
use super::test_writer::{self, batch, create};
use super::writer::Writer;
use crate::protocol::Message;
use crate::storage::index;
use crate::storage::ops::{WriteError, WriteOk, WriteOp, WriteResult};

/// Few index handles, so the tests run through evictions too.
fn open(dir: &Path, max_log_size: u64) -> Writer {
    test_writer::open(dir, 2, |c| c.store.max_log_size = max_log_size)
}

fn msg(body: &str) -> Message {
    Message {
        headers: Vec::new(),
        payload: body.as_bytes().to_vec(),
    }
}

fn publish(t: &str) -> WriteOp {
    WriteOp::Pub {
        topic: t.into(),
        msg: msg("a payload of some length to fill segments"),
    }
}

/// A batch touching every kind of write, two topics.
fn mixed() -> Vec<WriteOp> {
    vec![
        create("a"),
        publish("a"),
        publish("a"),
        create("b"),
        publish("b"),
        WriteOp::MPub {
            topic: "a".into(),
            msgs: vec![msg("m1"), msg("m2"), msg("m3")],
        },
        publish("b"),
        WriteOp::DPub {
            topic: "a".into(),
            delay_ms: 3_600_000,
            msg: msg("later"),
        },
        publish("a"),
    ]
}

/// What a store holds: (topic, create id) pairs and every message id.
fn contents(w: &Writer) -> (BTreeSet<(String, u64)>, BTreeSet<u64>) {
    let mut topics = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for t in w.store.topics() {
        topics.insert((t.name.clone(), t.create_id));
        let st = t.state();
        let mut out = Vec::new();
        let n = (st.entries - st.first_entry) as usize;
        let file = match w.store.index_files.get(&t.name, t.create_id) {
            Ok(f) => f,
            Err(e) => panic!("index of {}: {e}", t.name),
        };
        if let Err(e) = index::read_entries(&file, st.first_entry, n, &mut out) {
            panic!("index of {}: {e}", t.name);
        }
        ids.extend(out.iter().map(|e| e.event_id));
    }
    (topics, ids)
}

/// What the answers promise: the topics created and message ids OK'd.
fn promised(ops: &[&str], res: &[WriteResult]) -> (BTreeSet<(String, u64)>, BTreeSet<u64>) {
    let mut topics = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (what, r) in ops.iter().zip(res) {
        match (what.split_once(' '), r) {
            (Some(("create", t)), Ok(WriteOk::Id(id))) => {
                topics.insert((t.to_string(), *id));
            }
            (Some(("pub", _)), Ok(WriteOk::Id(id))) => {
                ids.insert(*id);
            }
            (Some(("mpub", _)), Ok(WriteOk::Range(a, b))) => ids.extend(*a..=*b),
            _ => {}
        }
    }
    (topics, ids)
}

const MIXED: [&str; 9] = [
    "create a", "pub a", "pub a", "create b", "pub b", "mpub a", "pub b", "dpub a", "pub a",
];

/// One committed batch, then `mixed()` with `step` failing on its `nth`
/// call; checks the answers against the store before and after a restart.
fn check(step: Step, nth: u32, kind: ErrorKind, max_log_size: u64, lease_in: Option<u64>) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let ctx = format!("{step:?} call {nth} ({kind:?})");
    let mut w = open(dir.path(), max_log_size);
    let before = batch(&mut w, vec![create("z"), publish("z")]);
    assert!(before.iter().all(|r| r.is_ok()), "{ctx}: setup {before:?}");
    let (mut want_topics, mut want_ids) = contents(&w);
    if let Some(n) = lease_in {
        w.state.leased_to(w.state.last_id() + n); // the lease runs out inside the batch
    }
    fault::arm(step, nth, kind);
    let res = batch(&mut w, mixed());
    fault::disarm();
    assert!(
        res.iter().any(|r| r.is_err()),
        "{ctx}: the fault must fail something: {res:?}"
    );
    let (t, i) = promised(&MIXED, &res);
    want_topics.extend(t);
    want_ids.extend(i);
    assert_eq!(
        contents(&w),
        (want_topics.clone(), want_ids.clone()),
        "{ctx}: live {res:?}"
    );
    let poisoned = step == Step::Fsync;
    assert_eq!(
        w.poisoned().is_some(),
        poisoned,
        "{ctx}: only a failed fsync poisons"
    );
    // Writes work again by themselves, except after a failed fsync.
    let after = batch(&mut w, vec![create("later"), publish("z")]);
    if poisoned {
        assert!(after.iter().all(|r| r.is_err()), "{ctx}: {after:?}");
    } else {
        assert!(
            after.iter().all(|r| r.is_ok()),
            "{ctx}: writes resume: {after:?}"
        );
        let (t, i) = promised(&["create later", "pub z"], &after);
        want_topics.extend(t);
        want_ids.extend(i);
    }
    let last = w.state.last_id();
    drop(w);
    let w = open(dir.path(), max_log_size);
    assert_eq!(
        contents(&w),
        (want_topics, want_ids),
        "{ctx}: after restart {res:?}"
    );
    assert!(w.state.last_id() >= last, "{ctx}: ids never go back");
}

#[test]
fn a_failed_index_create_fails_only_its_create() {
    for nth in 1..=2 {
        check(Step::IndexCreate, nth, ErrorKind::Other, 64 << 20, None);
    }
}

#[test]
fn a_failed_roll_fails_only_the_request_that_needed_it() {
    // Segments of 150 bytes: a roll every two records or so.
    for nth in [1, 2, 3, 4] {
        check(Step::Roll, nth, ErrorKind::Other, 150, None);
    }
}

#[test]
fn a_failed_lease_write_fails_only_the_request_that_needed_it() {
    for lease_in in [1, 3, 6] {
        check(
            Step::Lease,
            1,
            ErrorKind::StorageFull,
            64 << 20,
            Some(lease_in),
        );
    }
}

#[test]
fn a_failed_write_fails_the_whole_batch_and_leaves_nothing() {
    check(Step::Write, 1, ErrorKind::StorageFull, 64 << 20, None);
    // Also when the batch rolled segments before the write failed.
    check(Step::Write, 1, ErrorKind::StorageFull, 300, None);
}

#[test]
fn a_failed_fsync_fails_the_batch_poisons_and_leaves_nothing() {
    check(Step::Fsync, 1, ErrorKind::Other, 64 << 20, None);
    check(Step::Fsync, 1, ErrorKind::Other, 300, None);
}

#[test]
fn a_master_near_the_end_of_its_ids_starts_the_next_but_one_epoch_itself() {
    use crate::storage::ids::{epoch_base, epoch_limit};
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut w = open(dir.path(), 64 << 20);
    let first = batch(&mut w, vec![create("t"), publish("t")]);
    assert!(first.iter().all(|r| r.is_ok()), "{first:?}");
    assert_eq!(w.epoch(), 0);
    // As if 2^48 ids had gone by: a few are left in epoch 0's range.
    w.state.use_ids_to(epoch_limit(0) - 5);
    let res = batch(&mut w, vec![publish("t"), publish("t")]);
    let ids: Vec<u64> = res
        .iter()
        .map(|r| match r {
            Ok(WriteOk::Id(id)) => *id,
            other => panic!("PUB: {other:?}"),
        })
        .collect();
    assert_eq!(w.epoch(), 2, "epoch 1 is left to a slave that missed this");
    assert!(ids[0] > epoch_base(2) && ids[1] == ids[0] + 1, "{ids:?}");
    // An id past the range is refused, never assigned.
    assert!(w.check_id_in_range(epoch_limit(2) + 1).is_err());
    assert!(w.check_id_in_range(epoch_limit(2)).is_ok());
    // Dropped without a clean stop: ids resume after the lease, in epoch 2.
    drop(w);
    let w = open(dir.path(), 64 << 20);
    assert_eq!(w.epoch(), 2, "kept across a restart");
    assert!(
        w.state.last_id() >= ids[1] && w.state.last_id() < epoch_limit(2),
        "{}",
        w.state.last_id()
    );
}

#[test]
fn a_topic_past_its_life_takes_no_write_even_before_the_timer_ends_it() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    // No lifetime timer runs here: only the writer's own check can end it.
    let mut w = open(dir.path(), 64 << 20);
    let short = WriteOp::Create {
        topic: "short".into(),
        life_ms: 1000,
    };
    let first = batch(&mut w, vec![short, publish("short")]);
    assert!(first.iter().all(|r| r.is_ok()), "{first:?}");
    let before = w.state.last_id();
    // Waiting out the lifetime (wall-clock time must pass; nothing to signal).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let res = batch(&mut w, vec![publish("short")]);
    assert!(matches!(res[0], Err(WriteError::NoTopic(_))), "{res:?}");
    assert_eq!(w.state.last_id(), before, "a refused write writes nothing");
    assert!(w.store.topic("short").is_some(), "not ended by a refusal");
    // A CREATE of its name ends the old incarnation first.
    let again = batch(&mut w, vec![create("short"), publish("short")]);
    assert!(again.iter().all(|r| r.is_ok()), "{again:?}");
    assert_eq!(
        w.state.last_id(),
        before + 3,
        "DELETE (expired), CREATE, PUB"
    );
    assert_eq!(
        contents(&w).1.len(),
        1,
        "only the new incarnation's message"
    );
}
