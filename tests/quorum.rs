//! The write quorum (`replication.minSlaves`) with real binaries: a master
//! that refuses (`ERR NOSLAVE`) what too few slaves have durably, undoes a
//! write whose slaves did not acknowledge it in time, never reuses its ids,
//! and a slave that moves the undone records aside and resyncs. Every
//! server has its own port and directory and is stopped by PID; a slave's
//! progress is awaited by polling its STATS in bounded loops.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::repl::{
    Frozen, assert_same_state, diverged_files, diverged_messages, messages, poll_until,
    start_slave, wait_caught_up, wait_for_id,
};
use common::{Opts, Server, WAIT, records, segments, stat, tempdir};
use smss::client::{Client, ClientError, SubOptions};

/// How long the master waits for its slave in these tests.
const SYNC_TIMEOUT_MS: u64 = 1000;

fn quorum_opts(min_slaves: u32) -> Opts {
    Opts::new().section(&format!(
        "replication:\n  minSlaves: {min_slaves}\n  syncTimeoutMs: {SYNC_TIMEOUT_MS}"
    ))
}

fn assert_noslave<T: std::fmt::Debug>(r: Result<T, ClientError>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.code(), Some("NOSLAVE"), "{what}: {e}"),
        Ok(v) => panic!("{what} was acknowledged ({v:?}) without a slave"),
    }
}

/// Publishes until the master accepts (its slave connected and caught
/// up); each refusal is answered at once, so the loop is bounded by time.
fn publish_once_ready(m: &Server, c: &mut Client, topic: &str, body: &[u8]) -> u64 {
    let mut id = None;
    let ready = poll_until(WAIT, || match c.publish(topic, body) {
        Ok(i) => {
            id = Some(i);
            true
        }
        Err(e) => {
            assert_eq!(e.code(), Some("NOSLAVE"), "{e}");
            false
        }
    });
    assert!(
        ready,
        "the master never accepted a write; its log:\n{}",
        m.log_text()
    );
    id.unwrap_or(0)
}

/// Event ids of every record in a server directory's log.
fn log_ids(dir: &Path) -> Vec<u64> {
    segments(dir)
        .iter()
        .flat_map(|s| records(s).0.into_iter().map(|(_, id, _)| id))
        .collect()
}

/// Records `id → payload` and fails on an id that names two messages.
fn note_unique(seen: &mut HashMap<u64, Vec<u8>>, id: u64, body: &[u8], where_: &str) {
    if let Some(prev) = seen.insert(id, body.to_vec()) {
        assert_eq!(
            prev, body,
            "event id {id} names two different messages ({where_})"
        );
    }
}

#[test]
fn without_a_slave_every_write_is_refused_and_nothing_is_written() {
    let md = tempdir();
    let m = Server::start(md.path());
    let mut c = m.client();
    c.create("t", 0).expect("CREATE");
    let before = c.publish("t", b"before").expect("PUB");
    c.create("gone", 0).expect("CREATE");
    assert!(m.sigterm().success());
    let log_before = log_ids(md.path());

    let m = Server::start_with(md.path(), &quorum_opts(1));
    let mut c = m.client();
    let started = Instant::now();
    assert_noslave(c.publish("t", b"refused"), "PUB");
    assert!(
        started.elapsed() < Duration::from_millis(SYNC_TIMEOUT_MS),
        "refused at once, not after waiting: {:?}",
        started.elapsed()
    );
    assert_noslave(c.mpublish("t", &[b"a", b"b"]), "MPUB");
    assert_noslave(c.dpublish("t", 1, b"later"), "DPUB");
    assert_noslave(c.create("new", 0), "CREATE");
    assert_noslave(c.delete("gone"), "DELETE");
    let group = SubOptions {
        group: Some("g".into()),
        ..SubOptions::default()
    };
    assert_noslave(
        c.subscribe("t", "-", &group),
        "group SUB (its position write)",
    );
    // Reads go on: the connection is usable and shows only what was there.
    let info = c.info("t").expect("INFO");
    assert_eq!((info.messages, info.last_id), (1, before));
    let names: Vec<String> = c
        .list()
        .expect("LIST")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["gone", "t"]);
    let msgs = messages(&mut c, "t");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].3, b"before");
    assert_eq!(stat(&mut c, "last_event_id"), before + 1);
    assert_eq!(stat(&mut c, "repl_noslave_refusals"), 6);
    assert_eq!(stat(&mut c, "repl_sync"), 1, "never falls back to async");
    assert!(m.sigterm().success());
    assert_eq!(log_ids(md.path()), log_before, "the log holds nothing new");

    // Without the quorum the next id continues where it was.
    let m = Server::start(md.path());
    let mut c = m.client();
    assert_eq!(c.publish("t", b"after").expect("PUB"), before + 2);
}

#[test]
fn with_a_streaming_slave_writes_are_acknowledged_and_on_the_slave() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start_with(md.path(), &quorum_opts(1));
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    let mut c = m.client();
    let mut sc = s.client();
    // CREATE needs the slave too: retried until it is connected.
    let created = {
        let mut id = 0;
        let ok = poll_until(WAIT, || match c.create("t", 0) {
            Ok(i) => {
                id = i;
                true
            }
            Err(e) => {
                assert_eq!(e.code(), Some("NOSLAVE"), "{e}");
                false
            }
        });
        assert!(ok, "CREATE never accepted; log:\n{}", m.log_text());
        id
    };
    // OK means the slave has it durably (it shows it once the master has
    // said it is committed: the slave's readers follow shortly).
    let acked = |c: &mut Client| stat(c, "repl_acked_event_id");
    assert!(acked(&mut c) >= created, "OK means the slave has it");
    for i in 0..20 {
        let id = c.publish("t", format!("m{i}").as_bytes()).expect("PUB");
        assert!(
            acked(&mut c) >= id,
            "PUB {id} acknowledged before the slave had it"
        );
    }
    let (_, last) = c.mpublish("t", &[b"x", b"y", b"z"]).expect("MPUB");
    assert!(acked(&mut c) >= last);
    wait_for_id(&s, None, last);
    // A timer's write (the delayed message firing) goes through the quorum too.
    let d = c.dpublish("t", 1, b"delayed").expect("DPUB");
    assert!(acked(&mut c) >= d);
    let fired = poll_until(WAIT, || c.info("t").map(|i| i.last_id > d).unwrap_or(false));
    assert!(fired, "the delayed message fired");
    wait_caught_up(&m, &s, None);
    let (_, msgs) = assert_same_state(&mut c, &mut sc);
    assert_eq!(msgs[0].1.len(), 24);
    assert!(
        !m.log_text().contains("undone"),
        "nothing was undone:\n{}",
        m.log_text()
    );
}

/// Starts a master with the quorum and a slave, and a topic `t` with a few
/// messages both have.
fn pair(md: &Path, sd: &Path) -> (Server, Server) {
    let m = Server::start_with(md, &quorum_opts(1));
    let s = start_slave(sd, &Opts::new(), &m.addr);
    let mut c = m.client();
    let ok = poll_until(WAIT, || c.create("t", 0).is_ok());
    assert!(ok, "CREATE never accepted; log:\n{}", m.log_text());
    for i in 0..3 {
        c.publish("t", format!("warm{i}").as_bytes()).expect("PUB");
    }
    (m, s)
}

#[test]
fn a_frozen_slave_makes_writes_fail_undone_and_its_copy_moves_aside() {
    let (md, sd) = (tempdir(), tempdir());
    let (m, s) = pair(md.path(), sd.path());
    let mut c = m.client();
    let before = c.info("t").expect("INFO");
    let last_before = stat(&mut c, "last_event_id");
    let refusals = stat(&mut c, "repl_noslave_refusals");

    let frozen = Frozen::new(&s);
    let started = Instant::now();
    assert_noslave(c.publish("t", b"undone"), "PUB to a frozen slave");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(SYNC_TIMEOUT_MS - 100),
        "waited for the slave first: {waited:?}"
    );
    assert!(
        waited < WAIT,
        "answered within about syncTimeoutMs: {waited:?}"
    );
    // Nothing of it is visible.
    assert_eq!(c.info("t").expect("INFO"), before);
    assert_eq!(stat(&mut c, "last_event_id"), last_before);
    let seen = messages(&mut c, "t");
    assert!(seen.iter().all(|m| m.3 != b"undone"), "{seen:?}");
    // The slave is behind now: the next write is refused at once.
    let started = Instant::now();
    assert_noslave(c.publish("t", b"refused"), "PUB while the slave is behind");
    assert!(
        started.elapsed() < Duration::from_millis(SYNC_TIMEOUT_MS),
        "refused without waiting: {:?}",
        started.elapsed()
    );
    assert_eq!(stat(&mut c, "repl_noslave_refusals"), refusals + 2);
    assert!(m.log_text().contains("undone"), "{}", m.log_text());

    // The slave had the undone record; continued, it moves it aside and resyncs.
    drop(frozen);
    let moved = poll_until(WAIT, || !diverged_files(sd.path()).is_empty());
    assert!(
        moved,
        "the slave moved nothing aside; its log:\n{}\nmaster's:\n{}",
        s.log_text(),
        m.log_text()
    );
    let files = diverged_files(sd.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let aside = diverged_messages(&files[0]);
    assert_eq!(aside.len(), 1, "{aside:?}");
    let (undone_id, ref body) = aside[0];
    assert_eq!(body, b"undone");
    assert!(undone_id > last_before);
    // The undone id has no record: STATS' last event id is the last record's,
    // so an idle, caught-up slave shows no lag.
    assert_eq!(stat(&mut c, "last_event_id"), last_before);
    let mut sc = s.client();
    let caught_up = poll_until(WAIT, || {
        stat(&mut sc, "replication_lag_events") == 0
            && stat(&mut sc, "last_event_id") == last_before
    });
    assert!(caught_up, "{}", s.log_text());
    drop(sc);

    let next = publish_once_ready(&m, &mut c, "t", b"after");
    assert!(
        next > undone_id,
        "id {next} reused or below the undone {undone_id}"
    );
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    let (_, msgs) = assert_same_state(&mut c, &mut sc);
    let mut ids: HashMap<u64, Vec<u8>> = HashMap::new();
    for (_, topic_msgs) in &msgs {
        for (id, _, _, body) in topic_msgs {
            note_unique(&mut ids, *id, body, "the two servers");
        }
    }
    for (id, body) in &aside {
        note_unique(&mut ids, *id, body, "the diverged file");
    }
    assert!(!msgs[0].1.iter().any(|m| m.0 == undone_id));

    // The cut is durable and the id stays used across a restart.
    drop(sc);
    drop(s);
    assert!(m.sigterm().success());
    assert!(!log_ids(md.path()).contains(&undone_id));
    let cp = std::fs::read_to_string(md.path().join("data/checkpoint")).expect("checkpoint");
    assert!(
        cp.contains(&format!("gap {undone_id} ")),
        "the undone ids are kept in the checkpoint:\n{cp}"
    );
    let m = Server::start(md.path());
    let mut c = m.client();
    assert!(c.publish("t", b"restarted").expect("PUB") > next);
}

/// Writes a publisher had acknowledged: (event id, payload).
type Acked = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

#[test]
fn after_promote_every_write_the_old_master_acknowledged_is_there() {
    let (md, sd) = (tempdir(), tempdir());
    let (m, s) = pair(md.path(), sd.path());
    let acked: Acked = Arc::default();
    let refused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (addr, acked, refused, stop) = (
            m.addr.clone(),
            Arc::clone(&acked),
            Arc::clone(&refused),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            let Ok(mut c) = Client::connect(&addr) else {
                return;
            };
            let _ = c.set_timeout(Some(WAIT));
            // Bounded: at most this many writes, each answered in at most
            // about syncTimeoutMs.
            for i in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let body = format!("p{i}").into_bytes();
                match c.publish("t", &body) {
                    Ok(id) => acked.lock().map(|mut v| v.push((id, body))).unwrap_or(()),
                    Err(e) if e.code() == Some("NOSLAVE") => {
                        refused.store(true, Ordering::Relaxed);
                        // A throttle, not a wait for anything: refusals
                        // are immediate while the slave is behind.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return, // the master is gone
                }
            }
        })
    };
    let count = |acked: &Acked| acked.lock().map(|v| v.len()).unwrap_or(0);
    assert!(poll_until(WAIT, || count(&acked) >= 50), "publishing");
    let frozen = Frozen::new(&s);
    refused.store(false, Ordering::Relaxed);
    assert!(
        poll_until(WAIT, || refused.load(Ordering::Relaxed)),
        "writes are refused while the slave is frozen"
    );
    let during = count(&acked);
    drop(frozen);
    assert!(
        poll_until(WAIT, || count(&acked) >= during + 50),
        "writes are accepted again once the slave resynced; master log:\n{}",
        m.log_text()
    );
    m.kill9();
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.join();
    let acked = acked.lock().map(|v| v.clone()).unwrap_or_default();

    let mut sc = s.client();
    let epoch_id = sc.promote().expect("PROMOTE");
    let max_acked = acked.iter().map(|a| a.0).max().unwrap_or(0);
    assert!(epoch_id > max_acked);
    let have: HashMap<u64, Vec<u8>> = messages(&mut sc, "t")
        .into_iter()
        .map(|m| (m.0, m.3))
        .collect();
    for (id, body) in &acked {
        assert_eq!(
            have.get(id),
            Some(body),
            "event {id} acknowledged by the old master is on the new one"
        );
    }
    // No id names two messages across the new master and the moved-aside records.
    let mut ids: HashMap<u64, Vec<u8>> = have.clone();
    for f in diverged_files(sd.path()) {
        for (id, body) in diverged_messages(&f) {
            note_unique(&mut ids, id, &body, "the diverged file");
        }
    }
    let id = sc
        .publish("t", b"new master")
        .expect("PUB on the promoted slave");
    assert!(id > epoch_id);
}

#[test]
fn timers_due_while_the_slave_is_away_act_once_it_is_back() {
    let (md, sd) = (tempdir(), tempdir());
    let (m, s) = pair(md.path(), sd.path());
    let mut c = m.client();
    c.create("short", 1000).expect("CREATE with a lifetime");
    c.dpublish("t", 1000, b"later").expect("DPUB");
    let refusals = stat(&mut c, "repl_noslave_refusals");
    let frozen = Frozen::new(&s);
    // Both fall due while the slave is frozen: the timers' writes are
    // undone or refused, and neither is forgotten.
    let refused = poll_until(WAIT, || {
        stat(&mut c, "repl_noslave_refusals") >= refusals + 2
    });
    assert!(
        refused,
        "the timers' writes were refused; log:\n{}",
        m.log_text()
    );
    assert!(c.info("short").is_ok(), "the topic is still there");
    assert_eq!(stat(&mut c, "delayed_pending"), 1, "still pending");
    assert!(messages(&mut c, "t").iter().all(|m| m.3 != b"later"));
    drop(frozen);
    let done = poll_until(WAIT, || {
        c.info("short").is_err() && messages(&mut c, "t").iter().any(|m| m.3 == b"later")
    });
    assert!(
        done,
        "expiry and delivery once the slave is back; log:\n{}",
        m.log_text()
    );
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    let (list, msgs) = assert_same_state(&mut c, &mut sc);
    assert!(list.iter().all(|t| t.name != "short"));
    let fired = msgs[0].1.iter().filter(|m| m.3 == b"later").count();
    assert_eq!(fired, 1, "delivered exactly once");
}
