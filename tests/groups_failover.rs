//! Consumer groups when things go wrong: a poison message that crashes its
//! consumer every time ends up in the dead-letter topic once (or is
//! skipped without one) and the group moves on; group positions reach a
//! slave and a promoted slave continues from them.

mod common;

use common::groups::{batch, one_group, wait_slave_groups};
use common::{Opts, Server, stat, tempdir};
use smss::client::{SubEvent, SubOptions};

/// A consumer that crashes (drops its connection, no STOP) on every batch
/// that holds `poison`, and processes and ACKs every other one; a new
/// connection each time, as a restarted process would, until it has
/// processed `last`. Returns what it processed and every batch it got.
fn consume_crashing_on(
    s: &Server,
    topic: &str,
    opts: &SubOptions,
    poison: u64,
    last: u64,
) -> (Vec<u64>, Vec<Vec<u64>>) {
    let mut processed = Vec::new();
    let mut deliveries = Vec::new();
    for _ in 0..20 {
        let mut c = s.client();
        c.subscribe(topic, "-", opts).expect("SUB");
        for _ in 0..20 {
            let ids = batch(&mut c);
            deliveries.push(ids.clone());
            if ids.contains(&poison) {
                break; // the crash: `c` is dropped unanswered
            }
            processed.extend(&ids);
            c.ack().expect("ACK");
            if processed.contains(&last) {
                c.stop().expect("STOP");
                return (processed, deliveries);
            }
        }
    }
    panic!("never got past the poison message: {deliveries:?}");
}

#[test]
fn a_poison_message_lands_in_the_dlq_once_with_its_headers_and_the_group_moves_on() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    c.create("dead", 0).expect("CREATE");
    let m0 = c.publish("t", b"m0").expect("PUB");
    let m1 = c.publish("t", b"m1").expect("PUB");
    let m2 = c
        .publish_with_headers("t", &[("kind", "poison")], b"m2")
        .expect("PUB");
    let m3 = c.publish("t", b"m3").expect("PUB");
    let m4 = c.publish("t", b"m4").expect("PUB");
    let opts = SubOptions {
        batch: Some(10),
        group: Some("g".into()),
        max_deliver: Some(3),
        dlq: Some("dead".into()),
        ..SubOptions::default()
    };
    let (processed, deliveries) = consume_crashing_on(&s, "t", &opts, m2, m4);
    assert_eq!(processed, vec![m0, m1, m3, m4]);
    // The failed batch comes again one message at a time; the poison one
    // alone three times (its own failures), then never again.
    assert_eq!(
        deliveries,
        vec![
            vec![m0, m1, m2, m3, m4],
            vec![m0],
            vec![m1],
            vec![m2],
            vec![m2],
            vec![m2],
            vec![m3],
            vec![m4]
        ]
    );
    assert_eq!(
        c.info("dead").expect("INFO").messages,
        1,
        "dead-lettered once"
    );
    let mut d = s.client();
    d.subscribe("dead", "0", &SubOptions::default())
        .expect("SUB");
    let SubEvent::Batch(msgs) = d.next_event().expect("batch") else {
        panic!("no batch");
    };
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, b"m2");
    let h: Vec<(&str, &str)> = msgs[0]
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let id = m2.to_string();
    assert_eq!(
        h,
        vec![
            ("kind", "poison"),
            ("dlq.topic", "t"),
            ("dlq.id", id.as_str()),
            ("dlq.group", "g"),
            ("dlq.deliveries", "3")
        ]
    );
    let g = one_group(&mut c, "t");
    assert_eq!((g.committed_id, g.lag), (m4, 0));
    assert_eq!(stat(&mut c, "dead_lettered"), 1);
}

#[test]
fn without_a_dlq_the_poison_message_is_skipped_and_counted() {
    let dir = tempdir();
    // sub.maxDeliver is the default of a group SUB without maxDeliver=.
    let s = Server::start_with(dir.path(), &Opts::new().section("sub:\n  maxDeliver: 1"));
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let m0 = c.publish("t", b"m0").expect("PUB");
    let m1 = c.publish("t", b"poison").expect("PUB");
    let m2 = c.publish("t", b"m2").expect("PUB");
    let topics = c.list().expect("LIST").len();
    let opts = SubOptions {
        batch: Some(10),
        group: Some("g".into()),
        ..SubOptions::default()
    };
    let (processed, deliveries) = consume_crashing_on(&s, "t", &opts, m1, m2);
    assert_eq!(processed, vec![m0, m2]);
    // m0 failed only inside a batch of three: it is tried alone, not
    // given up on; m1 failed alone once, which is maxDeliver.
    assert_eq!(
        deliveries,
        vec![vec![m0, m1, m2], vec![m0], vec![m1], vec![m2]]
    );
    assert_eq!(stat(&mut c, "dead_lettered"), 1);
    assert_eq!(c.list().expect("LIST").len(), topics, "no topic written");
    assert_eq!(one_group(&mut c, "t").committed_id, m2);
}

#[test]
fn a_dlq_that_does_not_exist_is_notopic_at_sub() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let opts = SubOptions {
        group: Some("g".into()),
        dlq: Some("nope".into()),
        ..SubOptions::default()
    };
    let e = c.subscribe("t", "-", &opts).expect_err("no dlq");
    assert_eq!(e.code(), Some("NOTOPIC"));
    assert!(c.groups("t").expect("GROUPS").is_empty(), "no group made");
}

#[test]
fn group_positions_reach_the_slave_and_continue_after_promote() {
    let (md, sd) = (tempdir(), tempdir());
    let master = Server::start(md.path());
    let mut m = master.client();
    m.create("t", 0).expect("CREATE");
    let payloads: Vec<Vec<u8>> = (0..9).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let (first, last) = m.mpublish("t", &refs).expect("MPUB");
    let ids: Vec<u64> = (first..=last).collect();
    let group3 = SubOptions {
        batch: Some(3),
        group: Some("g".into()),
        ..SubOptions::default()
    };
    let mut a = master.client();
    a.subscribe("t", "-", &group3).expect("SUB");
    assert_eq!(batch(&mut a), ids[0..3]);
    a.ack().expect("ACK");
    assert_eq!(batch(&mut a), ids[3..6]);

    let slave = Server::start_with_args(
        sd.path(),
        &Opts::new().section("timeout:\n  server:\n    alive: 200"),
        &["--role", "slave", "--master", &master.addr],
    );
    let mut s = slave.client();
    wait_slave_groups(&mut s, "t", |gs| {
        gs.len() == 1 && gs[0].committed_id == ids[2]
    });
    // Replicated positions; subscribers are the master's own.
    let g = one_group(&mut s, "t");
    assert_eq!((g.active, g.standby_count, g.lag), (false, 0, 6));
    assert!(one_group(&mut m, "t").active);
    let e = s.subscribe("t", "-", &group3).expect_err("slave");
    assert_eq!(e.code(), Some("READONLY"));
    let e = s.groupdel("t", "g").expect_err("slave");
    assert_eq!(e.code(), Some("READONLY"));
    s.subscribe("t", "0", &SubOptions::default())
        .expect("a plain SUB works on a slave");
    assert_eq!(batch(&mut s)[0], ids[0]);
    s.stop().expect("STOP");

    a.ack().expect("ACK");
    assert_eq!(batch(&mut a), ids[6..9]);
    wait_slave_groups(&mut s, "t", |gs| {
        gs.len() == 1 && gs[0].committed_id == ids[5]
    });
    // The master dies with batch three unacknowledged.
    master.kill9();
    s.promote().expect("PROMOTE");
    let mut b = slave.client();
    b.subscribe("t", "-", &group3)
        .expect("SUB on the promoted slave");
    assert_eq!(batch(&mut b), ids[6..9]);
    b.ack().expect("ACK");
    // ALIVE: nothing more to send, and the ACK's commit is durable.
    assert_eq!(b.next_event().expect("ALIVE"), SubEvent::Alive);
    let g = one_group(&mut s, "t");
    assert_eq!((g.committed_id, g.active, g.lag), (ids[8], true, 0));
}
