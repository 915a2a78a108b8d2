//! Shared consumer groups (`mode=shared`) against the real server: members
//! split the messages, a batch not ACKed (hang-up, ACK timeout) goes to
//! another member, a poison message is dead-lettered once while the others
//! go on, a kill -9 resumes at the watermark, and modes do not mix.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use common::groups::{batch, one_group, wait_slave_groups};
use common::{Opts, Server, stat, tempdir};
use smss::client::{Client, SubEvent, SubOptions};

/// Idle subscribers get ALIVE every 200 ms, so idle members see the end.
fn quick_alive() -> Opts {
    Opts::new().section("timeout:\n  server:\n    alive: 200")
}

fn shared(batch: usize) -> SubOptions {
    SubOptions {
        batch: Some(batch),
        group: Some("g".into()),
        shared: true,
        ..SubOptions::default()
    }
}

/// `n` messages on `topic` in MPUBs of 500; their ids.
fn publish(c: &mut Client, topic: &str, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let k = (n - i).min(500);
        let payloads: Vec<Vec<u8>> = (i..i + k).map(|j| format!("m{j}").into_bytes()).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let (first, last) = c.mpublish(topic, &refs).expect("MPUB");
        ids.extend(first..=last);
        i += k;
    }
    ids
}

/// The next batch's ids, or `None` on ALIVE.
fn event(c: &mut Client) -> Option<Vec<u64>> {
    match c.next_event().expect("event") {
        SubEvent::Batch(ms) => Some(ms.iter().map(|m| m.event_id).collect()),
        SubEvent::Alive => None,
        other => panic!("unexpected {other:?}"),
    }
}

/// Waits (bounded) until the topic's only group is committed at `id`.
fn committed_becomes(c: &mut Client, topic: &str, id: u64) {
    for _ in 0..800 {
        if one_group(c, topic).committed_id == id {
            return;
        }
        // A commit is published once durable: nothing to wait on but GROUPS.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the group of {topic} was never committed at {id}");
}

/// A server with topic `t` holding `n` messages: (its dir, the server, a
/// client, the ids).
fn with_messages(n: usize) -> (tempfile::TempDir, Server, Client, Vec<u64>) {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", n);
    (dir, s, c, ids)
}

/// Takes and ACKs `c`'s batches into `got` until it holds `total` ids
/// (bounded); returns the ids of batches of one message.
fn drain_into(c: &mut Client, got: &mut BTreeSet<u64>, total: usize) -> Vec<u64> {
    let mut alone = Vec::new();
    for _ in 0..1000 {
        if got.len() >= total {
            return alone;
        }
        if let Some(ids) = event(c) {
            if ids.len() == 1 {
                alone.push(ids[0]);
            }
            got.extend(ids);
            c.ack().expect("ACK");
        }
    }
    panic!("drained only {} of {total}", got.len());
}

/// `members` threads drain `total` messages of `t`, each recording what
/// it got; they start ACKing only once all have subscribed.
fn drain(s: &Server, members: usize, total: usize, batch: usize) -> Vec<Vec<u64>> {
    let got = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(Barrier::new(members));
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..members)
            .map(|_| {
                let (got, all_in) = (Arc::clone(&got), Arc::clone(&all_in));
                let mut c = s.client();
                sc.spawn(move || {
                    c.subscribe("t", "-", &shared(batch)).expect("SUB");
                    all_in.wait();
                    let mut mine = Vec::new();
                    for _ in 0..100_000 {
                        if got.load(Ordering::SeqCst) >= total {
                            break;
                        }
                        if let Some(ids) = event(&mut c) {
                            got.fetch_add(ids.len(), Ordering::SeqCst);
                            mine.extend(ids);
                            c.ack().expect("ACK");
                        }
                    }
                    c.stop().expect("STOP");
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("member")).collect()
    })
}

#[test]
fn four_members_split_the_messages_and_none_is_delivered_twice() {
    let (_dir, s, mut c, ids) = with_messages(20_000);
    let per_member = drain(&s, 4, ids.len(), 100);
    let mut seen = BTreeSet::new();
    for (i, mine) in per_member.iter().enumerate() {
        assert!(!mine.is_empty(), "member {i} got nothing");
        for id in mine {
            assert!(seen.insert(*id), "{id} delivered twice");
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ids);
    committed_becomes(&mut c, "t", *ids.last().expect("ids"));
    let g = one_group(&mut c, "t");
    assert_eq!((g.lag, g.shared), (0, None), "{g:?}");
}

#[test]
fn a_member_that_hangs_up_mid_batch_has_its_batch_delivered_to_the_others() {
    let (_dir, s, mut c, ids) = with_messages(100);
    let mut a = s.client();
    a.subscribe("t", "-", &shared(10)).expect("SUB");
    let lost = batch(&mut a);
    assert_eq!(lost, ids[..10]);
    let mut b = s.client();
    b.subscribe("t", "-", &shared(10)).expect("SUB");
    let first = batch(&mut b);
    assert_eq!(first, ids[10..20], "B gets the next batch, not A's");
    let g = one_group(&mut c, "t");
    assert_eq!(g.shared, Some((2, 20)), "{g:?}");
    drop(a);
    let mut got: BTreeSet<u64> = first.into_iter().collect();
    b.ack().expect("ACK");
    let alone = drain_into(&mut b, &mut got, ids.len());
    assert_eq!(got.into_iter().collect::<Vec<_>>(), ids);
    assert_eq!(alone, lost, "the failed batch's messages go alone");
    assert_eq!(stat(&mut c, "group_redeliveries"), 1);
    committed_becomes(&mut c, "t", ids[99]);
}

#[test]
fn a_batch_past_its_ack_deadline_goes_to_another_member() {
    let (_dir, s, _c, ids) = with_messages(30);
    let mut a = s.client();
    let slow = SubOptions {
        ack_ms: Some(300),
        ..shared(10)
    };
    a.subscribe("t", "-", &slow).expect("SUB");
    let held = batch(&mut a);
    let mut b = s.client();
    b.subscribe("t", "-", &shared(10)).expect("SUB");
    let mut got = BTreeSet::new();
    drain_into(&mut b, &mut got, ids.len());
    assert!(held.iter().all(|id| got.contains(id)));
    assert_eq!(got.len(), ids.len());
    // A never ACKed: the server closed it.
    assert!(a.next_event().is_err());
}

#[test]
fn a_poison_message_is_dead_lettered_once_while_the_other_members_go_on() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    c.create("dead", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 300);
    let poison = ids[57];
    let opts = SubOptions {
        max_deliver: Some(3),
        dlq: Some("dead".into()),
        ..shared(10)
    };
    let good = Mutex::new(BTreeSet::new());
    let poison_deliveries = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        for _ in 0..3 {
            sc.spawn(|| {
                // A worker that crashes on the poison message; it restarts.
                for _ in 0..50 {
                    let mut w = s.client();
                    w.subscribe("t", "-", &opts).expect("SUB");
                    let crashed = loop {
                        if done.load(Ordering::SeqCst) {
                            break false;
                        }
                        let Some(ids) = event(&mut w) else { continue };
                        if ids.contains(&poison) {
                            poison_deliveries.fetch_add(1, Ordering::SeqCst);
                            break true;
                        }
                        good.lock().unwrap_or_else(|p| p.into_inner()).extend(ids);
                        w.ack().expect("ACK");
                    };
                    if !crashed {
                        w.stop().expect("STOP");
                        return;
                    }
                }
                panic!("too many restarts");
            });
        }
        // Members stay until the poison message is dead-lettered and the
        // group is past everything (a member gives it up at the watermark).
        let mut c = s.client();
        for _ in 0..2000 {
            let dead = c.info("dead").expect("INFO").messages;
            if dead >= 1 && one_group(&mut c, "t").committed_id == ids[299] {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        done.store(true, Ordering::SeqCst);
    });
    let good = good.into_inner().unwrap_or_else(|p| p.into_inner());
    assert_eq!(good.len(), 299);
    assert!(!good.contains(&poison));
    assert_eq!(poison_deliveries.load(Ordering::SeqCst), 3);
    assert_eq!(one_group(&mut c, "t").committed_id, ids[299]);
    let mut d = s.client();
    d.subscribe("dead", "0", &SubOptions::default())
        .expect("SUB");
    let ms = match d.next_event().expect("batch") {
        SubEvent::Batch(ms) => ms,
        other => panic!("{other:?}"),
    };
    assert_eq!(ms.len(), 1, "dead-lettered once");
    let h: HashMap<_, _> = ms[0].headers.iter().cloned().collect();
    assert_eq!(h.get("dlq.id"), Some(&poison.to_string()));
    assert_eq!(h.get("dlq.deliveries").map(String::as_str), Some("3"));
}

#[test]
fn after_a_kill_9_the_group_resumes_at_its_watermark_and_nothing_is_lost() {
    let (dir, s, _c, ids) = with_messages(3000);
    let mut got = BTreeSet::new();
    {
        let mut a = s.client();
        let mut b = s.client();
        a.subscribe("t", "-", &shared(50)).expect("SUB");
        b.subscribe("t", "-", &shared(50)).expect("SUB");
        // Interleaved, so ACKs land above the watermark too.
        for _ in 0..15 {
            let x = batch(&mut a);
            let y = batch(&mut b);
            got.extend(y);
            b.ack().expect("ACK");
            got.extend(x);
            a.ack().expect("ACK");
        }
        let _held = batch(&mut a); // out, never ACKed
    }
    s.kill9();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    let at = one_group(&mut c, "t").committed_id;
    assert!(at > ids[0] && at <= ids[1499], "watermark {at}");
    let mut a = s.client();
    a.subscribe("t", "-", &shared(100)).expect("SUB");
    let first = batch(&mut a);
    assert_eq!(
        first[0],
        ids.iter().copied().find(|&i| i > at).expect("after")
    );
    got.extend(first);
    a.ack().expect("ACK");
    drain_into(&mut a, &mut got, ids.len());
    assert_eq!(got.into_iter().collect::<Vec<_>>(), ids);
}

#[test]
fn modes_do_not_mix_while_a_group_has_members() {
    let (_dir, s, mut c, ids) = with_messages(5);
    let mut ex = s.client();
    let exclusive = SubOptions {
        batch: Some(1),
        group: Some("g".into()),
        ..SubOptions::default()
    };
    ex.subscribe("t", "-", &exclusive).expect("SUB");
    let mut r = s.raw();
    r.send(b"SUB t 3 group=g mode=shared\r\n");
    let line = r.line();
    assert!(
        line.starts_with("ERR BADREQ") && line.contains("group g is exclusive"),
        "{line}"
    );
    // The refused SUB moved nothing.
    assert_eq!(one_group(&mut c, "t").committed_id, ids[0] - 1);
    assert_eq!(batch(&mut ex), ids[..1]);
    ex.stop().expect("STOP");
    // No members: the mode may change.
    let mut sh = s.client();
    sh.subscribe("t", "-", &shared(2)).expect("SUB");
    r.send(b"SUB t - group=g mode=exclusive\r\n");
    let line = r.line();
    assert!(
        line.starts_with("ERR BADREQ") && line.contains("group g is shared"),
        "{line}"
    );
    r.send(b"SUB t - group=g\r\n");
    assert!(r.line().contains("group g is shared"));
    r.send(b"SUB t - group=g mode=shared batch=2\r\n");
    assert_eq!(r.line(), "OK");
    let g = one_group(&mut c, "t");
    assert_eq!(
        (g.active, g.standby_count, g.shared.map(|s| s.0)),
        (true, 0, Some(2))
    );
}

#[test]
fn a_promoted_slave_continues_the_shared_group_from_its_watermark() {
    let (md, sd) = (tempdir(), tempdir());
    let master = Server::start(md.path());
    let mut m = master.client();
    m.create("t", 0).expect("CREATE");
    let ids = publish(&mut m, "t", 40);
    let slave = Server::start_with_args(
        sd.path(),
        &quick_alive(),
        &["--role", "slave", "--master", &master.addr],
    );
    let mut a = master.client();
    let mut b = master.client();
    a.subscribe("t", "-", &shared(10)).expect("SUB");
    let x = batch(&mut a);
    b.subscribe("t", "-", &shared(10)).expect("SUB");
    let y = batch(&mut b);
    assert_eq!((x.as_slice(), y.as_slice()), (&ids[..10], &ids[10..20]));
    // B's batch is ACKed above the watermark, A's moves it past both.
    b.ack().expect("ACK");
    a.ack().expect("ACK");
    let _third = batch(&mut a); // never ACKed: the master dies
    let mut s = slave.client();
    wait_slave_groups(&mut s, "t", |gs| {
        gs.len() == 1 && gs[0].committed_id == ids[19]
    });
    master.kill9();
    s.promote().expect("PROMOTE");
    let mut c = slave.client();
    c.subscribe("t", "-", &shared(100))
        .expect("SUB on the promoted slave");
    assert_eq!(batch(&mut c), ids[20..]);
    c.ack().expect("ACK");
    committed_becomes(&mut s, "t", ids[39]);
}

/// `sub.maxPending` bounds what a shared group has out unacknowledged:
/// at the bound a member gets no batch (only ALIVE) until an ACK frees room.
#[test]
fn members_wait_while_the_group_is_at_its_pending_bound() {
    let dir = tempdir();
    let opts = quick_alive().section("sub:\n  maxPending: 4");
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 10);
    let member = || {
        let mut m = s.client();
        m.subscribe("t", "-", &shared(2)).expect("SUB shared");
        m
    };
    let first_batch = |m: &mut Client| -> Vec<u64> {
        (0..50)
            .find_map(|_| event(m))
            .expect("a batch within 50 events")
    };
    let mut a = member();
    assert_eq!(first_batch(&mut a), ids[0..2]);
    let mut b = member();
    assert_eq!(first_batch(&mut b), ids[2..4]);
    // Four out, the bound: the third member only hears ALIVE.
    let mut third = member();
    for _ in 0..2 {
        assert_eq!(event(&mut third), None, "a batch past maxPending");
    }
    // A's ACK frees room; A may take the next batch itself before the
    // third member does, so it stops too (giving it back, not failed).
    a.ack().expect("ACK");
    a.stop().expect("STOP");
    assert_eq!(first_batch(&mut third), ids[4..6]);
}
