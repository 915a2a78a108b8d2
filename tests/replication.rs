//! Replication with real binaries: a master and its slaves, each its own
//! process on its own port and data directory.
//!
//! A slave's progress has no signal a client can wait on, so tests poll its
//! STATS `last_event_id` in bounded loops (common::repl); everything else
//! is read from LIST, INFO, SUB and the servers' log files. Promotion,
//! divergence and timers after PROMOTE are in tests/failover.rs.

mod common;

use std::time::{Duration, Instant};

use common::repl::{
    Frozen, accept_one, assert_same_state, assert_strictly_increasing, client_of, free_port, ids,
    last_id, next_batch, poll_until, read_line, role, slave_args, start_slave, state, sub_opts,
    wait_caught_up, wait_for_id, wait_topic,
};
use common::{Opts, Server, WAIT, stat, tempdir};
use smss::client::SubEvent;

fn hv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_slave_copies_every_kind_of_write() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    // Written before the slave exists: it copies them when it first syncs.
    mc.create("plain", 0).expect("CREATE plain");
    mc.create("lived", 3_600_000).expect("CREATE lived");
    let h1 = mc
        .publish_with_headers("plain", &[("kind", "a"), ("user", "42")], b"first")
        .expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);

    // Written while it streams.
    let mut short_sub = m.client();
    mc.create("short", 1000).expect("CREATE short");
    short_sub
        .subscribe("short", "0", &sub_opts())
        .expect("SUB short");
    let (a, b) = mc
        .mpublish("plain", &[b"m1", b"m2", b"m3", b"m4"])
        .expect("MPUB");
    assert_eq!(b, a + 3);
    let (c1, c2) = mc
        .mpublish_with_headers("lived", &[("h", "v")], &[b"l1", b"l2"])
        .expect("MPUB with headers");
    mc.create("doomed", 0).expect("CREATE doomed");
    mc.publish("doomed", b"bye").expect("PUB doomed");
    let later = mc
        .dpublish("plain", 3_600_000, b"later")
        .expect("DPUB later");
    let mut fire_sub = m.client();
    fire_sub
        .subscribe("plain", "$", &sub_opts())
        .expect("SUB plain $");
    let soon = mc
        .dpublish_with_headers("plain", 300, &[("d", "1")], b"soon")
        .expect("DPUB soon");
    let fired = next_batch(&mut fire_sub);
    assert_eq!(fired.len(), 1);
    let fire_id = fired[0].event_id;
    assert!(fire_id > soon, "the FIRE has a new id");
    mc.delete("doomed").expect("DELETE doomed");
    // The lifetime of `short` ends on the master.
    let mut ended = None;
    for _ in 0..100 {
        match short_sub.next_event().expect("short event") {
            SubEvent::End(r) => {
                ended = Some(r);
                break;
            }
            SubEvent::Alive => {}
            other => panic!("unexpected {other:?} on short"),
        }
    }
    assert_eq!(ended.as_deref(), Some("expired"));

    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    assert_eq!(role(&mut sc), "slave");
    let (list, msgs) = assert_same_state(&mut mc, &mut sc);
    let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["lived", "plain"], "doomed deleted, short expired");
    assert!(sc.info("short").is_err() && sc.info("doomed").is_err());
    let lived = list.iter().find(|t| t.name == "lived").expect("lived");
    assert_eq!(lived.expires_ms, lived.created_ms + 3_600_000);

    let plain = &msgs.iter().find(|(n, _)| n == "plain").expect("plain").1;
    assert_eq!(
        plain[0],
        (
            h1,
            plain[0].1,
            hv(&[("kind", "a"), ("user", "42")]),
            b"first".to_vec()
        )
    );
    let batch: Vec<_> = plain.iter().filter(|m| m.0 >= a && m.0 <= b).collect();
    assert_eq!(
        batch.iter().map(|m| (m.0, m.3.clone())).collect::<Vec<_>>(),
        (a..=b)
            .zip([b"m1", b"m2", b"m3", b"m4"])
            .map(|(i, p)| (i, p.to_vec()))
            .collect::<Vec<_>>(),
        "the MPUB arrives whole with consecutive ids"
    );
    let soon_msgs: Vec<_> = plain.iter().filter(|m| m.3 == b"soon").collect();
    assert_eq!(soon_msgs.len(), 1, "delivered once on the slave");
    assert_eq!(soon_msgs[0].0, fire_id, "under the master's FIRE id");
    assert_eq!(soon_msgs[0].2, hv(&[("d", "1")]));
    assert!(!ids(plain).contains(&soon) && !ids(plain).contains(&later));
    let lived_msgs = &msgs.iter().find(|(n, _)| n == "lived").expect("lived").1;
    assert_eq!(ids(lived_msgs), vec![c1, c2]);
    assert!(lived_msgs.iter().all(|m| m.2 == hv(&[("h", "v")])));

    assert_eq!(stat(&mut sc, "delayed_pending"), 1);
    assert_eq!(stat(&mut mc, "delayed_pending"), 1);
    assert_eq!(last_id(&mut sc), last_id(&mut mc));
}

/// The reply line to `req` sent raw on `r`.
fn ask(r: &mut common::Raw, req: &[u8]) -> String {
    r.send(req);
    r.line()
}

#[test]
fn every_write_on_a_slave_is_refused_readonly_and_changes_nothing() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    mc.publish("t", b"one").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    let before = assert_same_state(&mut mc, &mut sc);
    let before_id = last_id(&mut sc);

    let mut r = s.raw();
    let writes: [&[u8]; 9] = [
        b"CREATE new\r\n",
        b"CREATE new 5000\r\n",
        b"DELETE t\r\n",
        b"PUB t 5\r\nhello\r\n",
        b"PUB t 5 k=v\r\nhello\r\n",
        b"PUB nosuch 2\r\nhi\r\n",
        b"MPUB t 2\r\n1\r\na\r\n1 k=v\r\nb\r\n",
        b"DPUB t 1000 3\r\nabc\r\n",
        b"dpub t 10 0\r\n\r\n",
    ];
    for w in writes {
        let reply = ask(&mut r, w);
        assert!(
            reply.starts_with("ERR READONLY"),
            "{:?} got {reply:?}",
            String::from_utf8_lossy(w)
        );
    }
    // Group subscriptions need the master too; the connection stays usable.
    let reply = ask(&mut r, b"SUB t 0 group=g\r\n");
    assert!(reply.starts_with("ERR READONLY"), "{reply:?}");
    assert_eq!(ask(&mut r, b"PING\r\n"), "PONG");

    assert_eq!(last_id(&mut sc), before_id);
    assert_eq!(state(&mut sc), before, "nothing changed on the slave");
    assert_eq!(stat(&mut sc, "delayed_pending"), 0);
    // It still replicates.
    let id = mc.publish("t", b"two").expect("PUB on the master");
    wait_for_id(&s, None, id);
    assert_same_state(&mut mc, &mut sc);
}

#[test]
fn a_subscriber_on_the_slave_gets_master_writes_live() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("live", 0).expect("CREATE");
    mc.publish("live", b"old").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);

    let mut sub = s.client();
    wait_topic(&mut sub, "live");
    sub.subscribe("live", "$", &sub_opts())
        .expect("SUB $ on the slave");
    let id = mc
        .publish_with_headers("live", &[("k", "v")], b"new")
        .expect("PUB");
    let got = next_batch(&mut sub);
    assert_eq!(got.len(), 1, "only the new message: {got:?}");
    assert_eq!(
        (
            got[0].event_id,
            got[0].headers.clone(),
            got[0].payload.clone()
        ),
        (id, hv(&[("k", "v")]), b"new".to_vec())
    );
    sub.ack().expect("ACK");
    let (a, b) = mc.mpublish("live", &[b"x", b"y"]).expect("MPUB");
    let mut got = Vec::new();
    while got.len() < 2 {
        let batch = next_batch(&mut sub);
        got.extend(batch.into_iter().map(|d| (d.event_id, d.payload)));
        sub.ack().expect("ACK");
    }
    assert_eq!(got, vec![(a, b"x".to_vec()), (b, b"y".to_vec())]);
    // A DELETE on the master ends the slave's subscription.
    mc.delete("live").expect("DELETE");
    match sub.next_event().expect("END") {
        SubEvent::End(r) => assert_eq!(r, "deleted"),
        other => panic!("expected END deleted, got {other:?}"),
    }
}

#[test]
fn a_killed_slave_restarted_catches_up_without_duplicates() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    for i in 0..20 {
        mc.publish("t", format!("before-{i}").as_bytes())
            .expect("PUB");
    }
    let args = slave_args(&m.addr, &["--event", "0"]);
    let s = Server::start_with_args(sd.path(), &Opts::new(), &args);
    wait_caught_up(&m, &s, None);
    s.kill9();

    for i in 0..20 {
        mc.publish("t", format!("while-down-{i}").as_bytes())
            .expect("PUB");
    }
    let batch: Vec<Vec<u8>> = (0..10).map(|i| format!("batch-{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = batch.iter().map(|p| p.as_slice()).collect();
    mc.mpublish("t", &refs).expect("MPUB");
    mc.create("t2", 0).expect("CREATE t2");
    mc.publish("t2", b"in t2").expect("PUB t2");

    // The same command line, --event 0 included: it resumes after its own
    // last id, it does not start over.
    let s = Server::start_with_args(sd.path(), &Opts::new(), &args);
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    let (_, msgs) = assert_same_state(&mut mc, &mut sc);
    let t = &msgs.iter().find(|(n, _)| n == "t").expect("t").1;
    assert_eq!(t.len(), 50);
    assert_strictly_increasing(t);
    assert_eq!(
        s.log_text().matches("full resync from").count(),
        1,
        "only the first start copies everything; the restarted slave streams:\n{}",
        s.log_text()
    );
    // And goes on streaming.
    let id = mc.publish("t", b"after").expect("PUB");
    wait_for_id(&s, None, id);
    assert_same_state(&mut mc, &mut sc);
}

#[test]
fn a_restarted_master_is_found_again_by_its_slave() {
    let (md, sd) = (tempdir(), tempdir());
    let opts = Opts::new().port(free_port());
    let m = Server::start_with(md.path(), &opts);
    let addr = m.addr.clone();
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    mc.publish("t", b"one").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &addr);
    wait_caught_up(&m, &s, None);

    drop(mc);
    let status = m.sigterm();
    assert!(status.success(), "clean shutdown: {status:?}");
    let m = Server::start_with(md.path(), &opts);
    assert_eq!(m.addr, addr, "the master is back on the same address");
    let mut mc = m.client();
    let id = mc.publish("t", b"two").expect("PUB after the restart");
    wait_for_id(&s, None, id);
    let mut sc = s.client();
    assert_same_state(&mut mc, &mut sc);
    assert!(
        s.log_text().contains("reconnecting"),
        "the slave logs that it lost its master:\n{}",
        s.log_text()
    );
}

#[test]
fn bad_repl_arguments_are_refused_and_the_connection_stays_usable() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    let before = last_id(&mut mc);
    let mut r = m.raw();
    for req in [
        &b"REPL x\r\n"[..],
        b"REPL 1 history=zz\r\n",
        b"REPL 1 foo=1\r\n",
        b"REPL 1 epoch=x\r\n",
        b"REPL 1 empty=2\r\n",
        b"REPL 1 history\r\n",
        b"REPL\r\n",
    ] {
        let reply = ask(&mut r, req);
        assert!(
            reply.starts_with("ERR BADREQ"),
            "{:?} got {reply:?}",
            String::from_utf8_lossy(req)
        );
        assert_eq!(ask(&mut r, b"PING\r\n"), "PONG", "usable after {req:?}");
    }
    assert_eq!(last_id(&mut mc), before, "nothing written");
    assert_eq!(mc.list().expect("LIST").len(), 1);

    // A slave does not serve REPL (no chains): refused, connection usable.
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);
    let mut r = s.raw();
    let reply = ask(&mut r, b"REPL 0\r\n");
    assert!(reply.starts_with("ERR BADREQ"), "{reply:?}");
    assert_eq!(ask(&mut r, b"PING\r\n"), "PONG");
}

#[test]
fn a_slave_whose_smss_reads_an_older_storage_format_is_refused_naming_both() {
    let d = tempdir();
    let m = Server::start(d.path());
    let mut r = m.raw();
    let fmt = smss::storage::record::FORMAT_VERSION;
    // An smss from before format 3 does not say what it reads.
    let reply = ask(&mut r, b"REPL 0 history=0 epoch=0 empty=1\r\n");
    assert!(reply.starts_with("ERR BADREQ"), "{reply:?}");
    assert!(
        reply.contains(&format!("writes storage format {fmt}"))
            && reply.contains("upgrade the slave's smss first"),
        "{reply:?}"
    );
    let reply = ask(&mut r, b"REPL 0 history=0 epoch=0 empty=1 format=2\r\n");
    assert!(reply.contains("the slave's smss reads 2"), "{reply:?}");
    assert_eq!(
        ask(&mut r, b"PING\r\n"),
        "PONG",
        "the connection stays usable"
    );
    assert!(m.log_text().contains("REPL refused"), "{}", m.log_text());
}

const TOKEN: &str = "s3cret-token";

fn with_token(token: &str) -> Opts {
    Opts::new().section(&format!("auth:\n  token: {token}"))
}

#[test]
fn replication_needs_the_masters_token() {
    let (md, good_d, bad_d) = (tempdir(), tempdir(), tempdir());
    let m = Server::start_with(md.path(), &with_token(TOKEN));
    let mut r = m.raw();
    let reply = ask(&mut r, b"REPL 0\r\n");
    assert!(
        reply.starts_with("ERR NOAUTH"),
        "REPL before AUTH: {reply:?}"
    );
    assert_eq!(ask(&mut r, b"PING\r\n"), "PONG");

    let mut mc = client_of(&m, Some(TOKEN));
    mc.create("t", 0).expect("CREATE");
    mc.publish("t", b"secret").expect("PUB");
    let good = start_slave(good_d.path(), &with_token(TOKEN), &m.addr);
    let bad = start_slave(bad_d.path(), &with_token("wrong-token"), &m.addr);
    wait_caught_up(&m, &good, Some(TOKEN));
    let mut gc = client_of(&good, Some(TOKEN));
    assert_same_state(&mut mc, &mut gc);

    assert!(
        poll_until(WAIT, || bad.log_text().contains("AUTH refused")),
        "the slave with the wrong token logs the refusal:\n{}",
        bad.log_text()
    );
    let mut bc = client_of(&bad, Some("wrong-token"));
    assert_eq!(last_id(&mut bc), 0, "it copied nothing");
    assert!(bc.list().expect("LIST").is_empty());
}

#[test]
fn a_frozen_slave_does_not_slow_the_master() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    mc.publish("t", b"warm-up").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);

    let frozen = Frozen::new(&s);
    mc.set_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    // 12.5 MiB in all: more than the socket buffers towards the slave hold.
    let payload = vec![b'x'; 64 << 10];
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let t = Instant::now();
        mc.publish("t", &payload)
            .expect("PUB while the slave is frozen");
        slowest = slowest.max(t.elapsed());
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10) && slowest < Duration::from_secs(2),
        "200 PUBs took {took:?}, the slowest {slowest:?}"
    );
    assert_eq!(mc.info("t").expect("INFO").messages, 201);
    // Its sender gives up on it (the socket write timeout, or no ACK),
    // on its own thread; the master serves on meanwhile.
    assert!(
        poll_until(WAIT, || m.log_text().contains("replication ended")),
        "the master still waits for the frozen slave:\n{}",
        m.log_text()
    );
    mc.publish("t", b"after the drop").expect("PUB");
    drop(frozen);
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    assert_same_state(&mut mc, &mut sc);
}

fn log_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("data/log"))
        .expect("read data/log")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_new_slave_bootstraps_from_a_master_whose_first_segments_are_gone() {
    let (md, sd) = (tempdir(), tempdir());
    let retention = Opts::new()
        .store("maxLogSize: 4096")
        .store("maxDays: 0.00001") // 864 ms
        .store("clearInterval: 1");
    let m = Server::start_with(md.path(), &retention);
    let mut mc = m.client();
    mc.create("old", 0).expect("CREATE old");
    mc.create("lived", 3_600_000).expect("CREATE lived");
    let payload = vec![b'p'; 100];
    let mut first = 0;
    for i in 0..10 {
        let batch: Vec<&[u8]> = (0..10).map(|_| payload.as_slice()).collect();
        let (a, _) = mc.mpublish("old", &batch).expect("MPUB");
        if i == 0 {
            first = a;
        }
    }
    mc.publish("lived", b"kept").expect("PUB lived");
    // Pending: it holds retention from its segment on.
    mc.dpublish("lived", 3_600_000, b"pending").expect("DPUB");
    for _ in 0..5 {
        mc.publish("old", &payload).expect("PUB");
    }
    let first_segment = log_files(md.path())[0].clone();
    assert!(
        poll_until(WAIT, || !log_files(md.path()).contains(&first_segment)),
        "retention did not delete {first_segment}: {:?}",
        log_files(md.path())
    );
    let info = mc.info("old").expect("INFO old");
    assert!(info.first_id > first, "old messages are gone: {info:?}");
    // Nothing more can go: the segments left hold the pending DPUB or
    // come after it, or are the active one.
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    let (list, msgs) = assert_same_state(&mut mc, &mut sc);
    assert_eq!(
        list.len(),
        2,
        "both CREATEs came with the snapshot: {list:?}"
    );
    let old = &msgs.iter().find(|(n, _)| n == "old").expect("old").1;
    assert_eq!(
        old[0].0, info.first_id,
        "the slave starts where retention left off"
    );
    assert_eq!(stat(&mut sc, "delayed_pending"), 1);
    assert_eq!(stat(&mut mc, "delayed_pending"), 1);
}

/// The `history` line of a server directory's checkpoint.
fn history(dir: &std::path::Path) -> String {
    let cp = std::fs::read_to_string(dir.join("data/checkpoint")).expect("read checkpoint");
    cp.lines()
        .find_map(|l| l.strip_prefix("history "))
        .unwrap_or_else(|| panic!("no history line in {cp:?}"))
        .to_string()
}

#[test]
fn a_slave_holding_another_masters_history_is_refused_and_keeps_its_data() {
    let (m1d, m2d, sd) = (tempdir(), tempdir(), tempdir());
    let m1 = Server::start(m1d.path());
    let mut c1 = m1.client();
    c1.create("from-m1", 0).expect("CREATE");
    c1.publish("from-m1", b"m1 data").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m1.addr);
    wait_caught_up(&m1, &s, None);
    let before = assert_same_state(&mut c1, &mut s.client());
    assert!(s.sigterm().success());

    let m2 = Server::start(m2d.path());
    let mut c2 = m2.client();
    c2.create("from-m2", 0).expect("CREATE");
    for i in 0..5 {
        c2.publish("from-m2", format!("m2-{i}").as_bytes())
            .expect("PUB");
    }
    let s = start_slave(sd.path(), &Opts::new(), &m2.addr);
    assert!(
        poll_until(WAIT, || s.log_text().contains("REPL refused")),
        "the slave logs the refusal:\n{}",
        s.log_text()
    );
    let log = s.log_text();
    let refusal = log
        .lines()
        .find(|l| l.contains("REPL refused"))
        .expect("refusal line");
    let (h1, h2) = (history(m1d.path()), history(m2d.path()));
    assert_ne!(h1, h2);
    assert!(
        refusal.contains(&format!("history {h1}")) && refusal.contains(&h2),
        "the refusal names both histories ({h1}, {h2}): {refusal}"
    );
    assert!(
        m2.log_text().contains("REPL refused"),
        "the master logs it too:\n{}",
        m2.log_text()
    );
    let mut sc = s.client();
    assert_eq!(state(&mut sc), before, "the slave kept its data");
    assert!(sc.info("from-m2").is_err());
    drop(m1);
}

#[test]
fn a_slave_killed_in_the_middle_of_a_full_resync_starts_it_over() {
    use smss::storage::record::{self, Kind, Record};
    use std::io::{BufReader, Write};
    let (md, sd) = (tempdir(), tempdir());
    // A scripted master: answers REPL with a full resync and sends part of
    // a snapshot (one CREATE), but never the SYNCED that ends it.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake_addr = fake.local_addr().expect("addr").to_string();
    let s = start_slave(sd.path(), &Opts::new(), &fake_addr);
    let conn = accept_one(&fake);
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    let repl = read_line(&mut r);
    assert!(
        repl.starts_with("REPL 0 ") && repl.contains(" empty=1"),
        "{repl}"
    );
    let mut rec = Vec::new();
    record::encode(
        &mut rec,
        &Record {
            event_id: 7,
            timestamp_ms: 1_700_000_000_000,
            kind: Kind::Create,
            flags: 0,
            topic: "half-synced",
            headers: b"",
            body: &0u64.to_le_bytes(),
        },
    );
    w.write_all(b"OK 00000000000000ab 0 full\r\n")
        .expect("send");
    w.write_all(format!("RECS 1 {}\r\n", rec.len()).as_bytes())
        .expect("send");
    w.write_all(&rec).expect("send");
    w.write_all(b"\r\n").expect("send");
    assert_eq!(read_line(&mut r), "ACK 7", "the slave applied the record");
    s.kill9();

    // Restarted as the slave of a real master, it must resync from scratch
    // (its data is of no history yet), not be refused as a stranger.
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("real", 0).expect("CREATE");
    mc.publish("real", b"data").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    let mut have = 0;
    let synced = poll_until(WAIT, || {
        have = last_id(&mut s.client());
        have == last_id(&mut mc) && s.client().info("real").is_ok()
    });
    assert!(
        synced,
        "the slave is at event id {have}; its log:\n{}",
        s.log_text()
    );
    let mut sc = s.client();
    assert_same_state(&mut mc, &mut sc);
    assert!(sc.info("half-synced").is_err());
}

#[test]
fn a_large_mpub_reaches_the_slave_whole_and_the_slave_restarts() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("big", 0).expect("CREATE");
    mc.publish("big", b"small one first").expect("PUB");
    // Small segments on the slave: it rolls often while it applies.
    let slave_opts = Opts::new().store("maxLogSize: 65536");
    let s = start_slave(sd.path(), &slave_opts, &m.addr);
    wait_caught_up(&m, &s, None);
    // More than one read chunk of the sender (1 MiB) in one batch.
    let payloads: Vec<Vec<u8>> = (0..600)
        .map(|i| format!("{i:04}").repeat(1000).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    for _ in 0..2 {
        let (a, b) = mc.mpublish("big", &refs).expect("MPUB");
        assert_eq!(b - a, 599);
    }
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    assert_same_state(&mut mc, &mut sc);
    drop(sc);
    // No segment of the slave ends inside the batch: a sealed segment
    // holds whole batches (recovery takes an open one there for damage).
    let files = log_files(sd.path());
    assert!(files.len() >= 3, "the slave rolled: {files:?}");
    for f in &files[..files.len() - 1] {
        let (ok, out, err) = common::repl::cli_dump(&sd.path().join("data/log").join(f));
        assert!(ok, "dump {f}: {err}");
        let last = out.lines().rev().nth(1).unwrap_or_default();
        assert!(
            last.contains(" flags=0 "),
            "sealed segment {f} ends inside an MPUB batch: {}",
            &last[..last.len().min(100)]
        );
    }
    assert!(s.sigterm().success());
    // Recovery without a checkpoint replays every segment.
    std::fs::remove_file(sd.path().join("data/checkpoint")).expect("remove checkpoint");
    // A batch split across two of the slave's segments would be taken for
    // corruption here and the slave would not start.
    let s = start_slave(sd.path(), &slave_opts, &m.addr);
    let mut sc = s.client();
    assert_same_state(&mut mc, &mut sc);
}

#[test]
fn a_slave_left_behind_by_retention_resyncs_in_full() {
    let (md, sd) = (tempdir(), tempdir());
    let retention = Opts::new()
        .store("maxLogSize: 4096")
        .store("maxDays: 0.00001") // 864 ms
        .store("clearInterval: 1");
    let m = Server::start_with(md.path(), &retention);
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    mc.create("gone-meanwhile", 0).expect("CREATE");
    mc.publish("t", b"seen by the slave").expect("PUB");
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    let seen = wait_caught_up(&m, &s, None);
    s.kill9();

    mc.delete("gone-meanwhile").expect("DELETE");
    let payload = vec![b'q'; 100];
    for _ in 0..6 {
        let batch: Vec<&[u8]> = (0..10).map(|_| payload.as_slice()).collect();
        mc.mpublish("t", &batch).expect("MPUB");
    }
    // Until the records right after what the slave has are deleted.
    assert!(
        poll_until(WAIT, || mc.info("t").expect("INFO").first_id > seen + 2),
        "retention did not run: {:?}",
        mc.info("t")
    );
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    let (list, _) = assert_same_state(&mut mc, &mut sc);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        s.log_text().matches("full resync from").count(),
        2,
        "the second start copies everything again:\n{}",
        s.log_text()
    );
    // And streams from there.
    let id = mc.publish("t", b"after").expect("PUB");
    wait_for_id(&s, None, id);
    assert_same_state(&mut mc, &mut sc);
}
