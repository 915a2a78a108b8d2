//! Failover with real binaries: PROMOTE, a slave's timers before and after
//! it, and an old master that comes back as a slave of the promoted one
//! with records the new master never had.
//!
//! As in tests/replication.rs, a slave's progress is awaited by polling its
//! STATS in bounded loops; deliveries are awaited on subscriptions. Timing
//! is asserted only as safe bounds (never early, at most `LATE_MS` late).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::repl::{
    assert_same_state, cli_dump, diverged_files, free_port, id_lease, ids, last_id, messages,
    next_batch, poll_until, role, slave_args, start_slave, sub_opts, wait_caught_up,
};
use common::{Opts, Raw, Server, WAIT, stat, tempdir};
use smss::client::{Client, SubEvent};

/// How late after its due time a timer may act on a loaded machine.
const LATE_MS: u64 = 3000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// The next subscription event that is not ALIVE.
fn next_event(c: &mut Client) -> SubEvent {
    for _ in 0..100 {
        match c.next_event().expect("subscription event") {
            SubEvent::Alive => {}
            e => return e,
        }
    }
    panic!("only ALIVE for 100 events");
}

/// A raw subscription (`SUB <topic> <from>`): lets a test check that
/// nothing more arrives for a while.
fn raw_sub(s: &Server, topic: &str, from: &str) -> Raw {
    let mut r = s.raw();
    r.send(format!("SUB {topic} {from} batch=100 ack=60000\r\n").as_bytes());
    assert_eq!(r.line(), "OK");
    r
}

/// One `BATCH 1` of a raw subscription: (event id, payload); ACKs it.
fn raw_one(r: &mut Raw) -> (u64, Vec<u8>) {
    let mut line = r.line();
    while line == "ALIVE" {
        line = r.line();
    }
    assert_eq!(line, "BATCH 1");
    let msg = r.line();
    let f: Vec<&str> = msg.split(' ').collect();
    assert_eq!(f[0], "MSG", "{msg:?}");
    let id = f[1].parse().expect("event id");
    let n = f[3].parse().expect("length");
    let payload = r.payload(n);
    r.send(b"ACK\r\n");
    (id, payload)
}

#[test]
fn a_slaves_timers_wait_for_the_masters_records() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);
    common::repl::wait_topic(&mut s.client(), "t");

    let mut on_slave = raw_sub(&s, "t", "$");
    let mut on_master = m.client();
    on_master.subscribe("t", "$", &sub_opts()).expect("SUB");
    let mut short_end = s.client();
    mc.create("short", 1000).expect("CREATE short");
    wait_caught_up(&m, &s, None);
    common::repl::wait_topic(&mut short_end, "short");
    short_end
        .subscribe("short", "0", &sub_opts())
        .expect("SUB short on the slave");
    let dpub = mc.dpublish("t", 300, b"soon").expect("DPUB");

    let fired = next_batch(&mut on_master);
    let fire_id = fired[0].event_id;
    assert!(fire_id > dpub);
    assert_eq!(raw_one(&mut on_slave), (fire_id, b"soon".to_vec()));
    match next_event(&mut short_end) {
        SubEvent::End(r) => assert_eq!(r, "expired"),
        other => panic!("expected END expired, got {other:?}"),
    }
    // The slave's own timers retry every second while it is a slave; give
    // them that long to (wrongly) deliver a second copy.
    assert!(
        on_slave.silent_for(Duration::from_millis(1500)),
        "a second delivery on the slave"
    );
    let top = wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    assert_eq!(
        last_id(&mut sc),
        top,
        "the slave wrote no record of its own"
    );
    assert_eq!(
        stat(&mut sc, "topics_expired"),
        0,
        "the slave expired nothing itself"
    );
    assert_eq!(stat(&mut sc, "delayed_pending"), 0);
    let soon: Vec<_> = messages(&mut sc, "t")
        .into_iter()
        .filter(|m| m.3 == b"soon")
        .collect();
    assert_eq!(
        ids(&soon),
        vec![fire_id],
        "delivered once, under the master's id"
    );
    assert_same_state(&mut mc, &mut sc);
}

#[test]
fn a_promoted_slave_fires_pending_messages_and_ends_lifetimes_on_time() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    let created = now_ms();
    mc.create("short", 4000).expect("CREATE short");
    let sent = now_ms();
    mc.dpublish("t", 3000, b"later").expect("DPUB later");
    // Due while no master runs: fires right after PROMOTE.
    let overdue_sent = now_ms();
    mc.dpublish("t", 500, b"overdue").expect("DPUB overdue");
    wait_caught_up(&m, &s, None);
    m.kill9();

    let mut sc = s.client();
    common::repl::wait_topic(&mut sc, "short");
    assert_eq!(stat(&mut sc, "delayed_pending"), 2);
    let mut sub = s.client();
    sub.subscribe("t", "$", &sub_opts()).expect("SUB");
    let mut short_end = s.client();
    short_end.subscribe("short", "0", &sub_opts()).expect("SUB");
    // Let `overdue` pass its due time with no master to fire it.
    assert!(poll_until(WAIT, || now_ms() > overdue_sent + 800));
    assert_eq!(stat(&mut sc, "delayed_pending"), 2, "the slave waits");
    let promoted_at = now_ms();
    let epoch_id = sc.promote().expect("PROMOTE");
    assert_eq!(role(&mut sc), "master");

    let mut got = Vec::new();
    while got.len() < 2 {
        for d in next_batch(&mut sub) {
            got.push((d.event_id, d.timestamp_ms, d.payload));
        }
        sub.ack().expect("ACK");
    }
    assert_eq!(got[0].2, b"overdue");
    assert!(got[0].0 > epoch_id && got[0].1 <= promoted_at + LATE_MS);
    assert_eq!(got[1].2, b"later");
    assert!(got[1].0 > got[0].0);
    assert!(
        got[1].1 >= sent + 3000 && got[1].1 <= now_ms() && got[1].1 <= sent + 3000 + LATE_MS,
        "fired at {} for a due time of about {}",
        got[1].1,
        sent + 3000
    );
    match next_event(&mut short_end) {
        SubEvent::End(r) => assert_eq!(r, "expired"),
        other => panic!("expected END expired, got {other:?}"),
    }
    let ended = now_ms();
    assert!(ended >= created + 4000, "expired early");
    assert!(sc.info("short").is_err());
    assert_eq!(stat(&mut sc, "topics_expired"), 1);
    assert_eq!(stat(&mut sc, "delayed_pending"), 0);
}

#[test]
fn promote_starts_above_the_old_masters_ids_and_lease() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    for i in 0..10 {
        mc.publish("t", format!("m{i}").as_bytes()).expect("PUB");
    }
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    let top = wait_caught_up(&m, &s, None);
    let lease = id_lease(md.path());
    assert!(lease > top, "the master leased ids ahead: {lease} vs {top}");

    let mut r = m.raw();
    r.send(b"PROMOTE\r\n");
    let reply = r.line();
    assert!(reply.starts_with("ERR "), "PROMOTE on a master: {reply:?}");
    r.send(b"PING\r\n");
    assert_eq!(r.line(), "PONG");
    assert_eq!(last_id(&mut mc), top, "nothing written");

    m.kill9();
    let mut sc = s.client();
    let epoch_id = sc.promote().expect("PROMOTE");
    assert!(
        epoch_id > top && epoch_id > lease,
        "PROMOTE's id {epoch_id}, the old master's last id {top} and lease {lease}"
    );
    assert_eq!(role(&mut sc), "master");
    let id = sc.publish("t", b"on the new master").expect("PUB");
    assert!(id > epoch_id);
    let created = sc.create("fresh", 0).expect("CREATE");
    assert!(created > id);
    let msgs = messages(&mut sc, "t");
    assert_eq!(msgs.len(), 11);
    assert_eq!(msgs.last().map(|m| m.0), Some(id));
    let again = sc.promote();
    assert!(again.is_err(), "PROMOTE on what is now a master: {again:?}");
    assert!(s.log_text().contains("promoted"), "{}", s.log_text());
}

#[test]
fn an_old_master_rejoining_moves_its_divergent_records_aside() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    for i in 0..5 {
        mc.publish("t", format!("shared-{i}").as_bytes())
            .expect("PUB");
    }
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);

    // A split: the slave is promoted while the master still takes writes.
    let mut sc = s.client();
    let epoch_id = sc.promote().expect("PROMOTE");
    let mut lost = Vec::new();
    for i in 0..3 {
        lost.push(
            mc.publish("t", format!("m-only-{i}").as_bytes())
                .expect("PUB"),
        );
    }
    mc.create("m-topic", 0).expect("CREATE on the old master");
    lost.push(last_id(&mut mc));
    for i in 0..4 {
        sc.publish("t", format!("s-only-{i}").as_bytes())
            .expect("PUB");
    }
    sc.create("s-topic", 0).expect("CREATE on the new master");
    drop(mc);
    assert!(m.sigterm().success());

    // The old master comes back as a slave of the new one.
    let m = Server::start_with_args(md.path(), &Opts::new(), &slave_args(&s.addr, &[]));
    wait_caught_up(&s, &m, None);
    let mut mc = m.client();
    let (list, msgs) = assert_same_state(&mut sc, &mut mc);
    let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["s-topic", "t"],
        "m-topic was never on the new master"
    );
    let t = &msgs.iter().find(|(n, _)| n == "t").expect("t").1;
    assert_eq!(t.len(), 9, "5 shared + 4 of the new master");
    assert!(t.iter().all(|m| !m.3.starts_with(b"m-only")));
    assert!(
        lost.iter().all(|id| !ids(t).contains(id)),
        "the divergent ids {lost:?} are not served: {:?}",
        ids(t)
    );
    assert!(ids(t).iter().filter(|&&id| id > epoch_id).count() == 4);

    let files = diverged_files(md.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = format!("{:020}-{:020}.log", lost[0], lost[3]);
    assert!(files[0].ends_with(&name), "{files:?} is not named {name}");
    let (ok, out, err) = cli_dump(&files[0]);
    assert!(ok, "smss-cli dump failed: {err}");
    for i in 0..3 {
        assert!(out.contains(&format!("body=m-only-{i}")), "{out}");
    }
    assert!(
        out.contains("kind=CREATE") && out.contains("topic=m-topic"),
        "{out}"
    );
    assert!(out.contains("records=4 end=clean"), "{out}");
    assert!(!out.contains("shared-") && !out.contains("s-only"), "{out}");
    assert!(
        m.log_text().contains("were moved to"),
        "the old master logs the move:\n{}",
        m.log_text()
    );

    // It goes on replicating from the new master.
    let id = sc.publish("t", b"after the rejoin").expect("PUB");
    common::repl::wait_for_id(&m, None, id);
    assert_same_state(&mut sc, &mut mc);
}

#[test]
fn a_crashed_master_rejoins_after_its_slave_was_promoted_alone() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    mc.publish("t", b"shared").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);
    s.kill9();
    // Written on the master only: the slave is down.
    let lost: Vec<u64> = (0..3)
        .map(|i| {
            mc.publish("t", format!("lost-{i}").as_bytes())
                .expect("PUB")
        })
        .collect();
    drop(mc);
    m.kill9();

    // The slave comes back alone (its master's port is closed) and is
    // promoted.
    let closed = format!("127.0.0.1:{}", common::repl::free_port());
    let s = Server::start_with_args(sd.path(), &Opts::new(), &slave_args(&closed, &[]));
    let mut sc = s.client();
    let epoch_id = sc.promote().expect("PROMOTE");
    assert!(
        epoch_id > lost[2],
        "above every id the old master handed out"
    );
    let new_id = sc.publish("t", b"new").expect("PUB");

    let m = Server::start_with_args(md.path(), &Opts::new(), &slave_args(&s.addr, &[]));
    common::repl::wait_for_id(&m, None, new_id);
    let mut mc = m.client();
    let (_, msgs) = assert_same_state(&mut sc, &mut mc);
    let t = &msgs.iter().find(|(n, _)| n == "t").expect("t").1;
    assert_eq!(
        t.iter().map(|m| m.3.clone()).collect::<Vec<_>>(),
        vec![b"shared".to_vec(), b"new".to_vec()]
    );
    let files = diverged_files(md.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let (ok, out, err) = cli_dump(&files[0]);
    assert!(ok, "{err}");
    assert!(out.contains("records=3 end=clean"), "{out}");
    for (i, id) in lost.iter().enumerate() {
        assert!(out.contains(&format!("id={id} ")), "{out}");
        assert!(out.contains(&format!("body=lost-{i}")), "{out}");
    }
}

#[test]
fn an_old_master_with_nothing_divergent_rejoins_by_streaming() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    for i in 0..5 {
        mc.publish("t", format!("m{i}").as_bytes()).expect("PUB");
    }
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);
    drop(mc);
    m.kill9();
    let mut sc = s.client();
    sc.promote().expect("PROMOTE");
    let id = sc.publish("t", b"after").expect("PUB");

    let m = Server::start_with_args(md.path(), &Opts::new(), &slave_args(&s.addr, &[]));
    common::repl::wait_for_id(&m, None, id);
    let mut mc = m.client();
    assert_same_state(&mut sc, &mut mc);
    assert!(diverged_files(md.path()).is_empty());
    let log = m.log_text();
    assert!(
        log.contains("replicating from") && !log.contains("full resync from"),
        "it streams the new epoch, it does not copy everything again:\n{log}"
    );
}

#[test]
fn a_slave_restarted_cleanly_keeps_the_masters_lease_for_promote() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    mc.publish("t", b"one").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    let top = wait_caught_up(&m, &s, None);
    let lease = id_lease(md.path());
    m.kill9();
    // The slave restarts (a reboot) while its master is still down.
    assert!(s.sigterm().success());
    let closed = format!("127.0.0.1:{}", common::repl::free_port());
    let s = Server::start_with_args(sd.path(), &Opts::new(), &slave_args(&closed, &[]));
    let epoch_id = s.client().promote().expect("PROMOTE");
    assert!(
        epoch_id > lease,
        "PROMOTE's id {epoch_id} must be above the old master's lease {lease} (last id {top}): \
         the old master may have handed out ids up to it"
    );
}

/// A slave that never finished a sync (here: its master is a closed port)
/// has none of its master's data: PROMOTE refuses it and it stays a slave,
/// still trying its master.
#[test]
fn promote_refuses_a_slave_that_never_finished_a_sync() {
    let dir = tempdir();
    let closed = format!("127.0.0.1:{}", free_port());
    let slave = start_slave(dir.path(), &Opts::new(), &closed);
    let mut c = slave.client();
    let err = c.promote().expect_err("PROMOTE of an unsynced slave");
    let text = format!("{err:?}");
    assert!(
        text.contains("BADREQ") && text.contains("no complete copy"),
        "{text}"
    );
    assert_eq!(role(&mut c), "slave");
    assert_eq!(stat(&mut c, "last_event_id"), 0);
    // Nothing was written: no role claim, no epoch.
    assert!(!dir.path().join("data/role").exists());
}
