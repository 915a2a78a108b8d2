//! Consumer groups against the real server: commit per ACK and resume,
//! GROUPS (positions, active, standbys, lag), standbys and takeover, moving
//! a group with SUB N / `$`, GROUPDEL, topic deletion, and what survives a
//! restart. Failures, dead letters and replication are in
//! tests/groups_failover.rs.

mod common;

use common::groups::{batch, one_group, wait_inactive};
use common::{Opts, Server, stat, tempdir};
use smss::client::{Client, GroupInfo, SubEvent, SubOptions};

/// A server whose idle subscribers get ALIVE every 200 ms.
fn quick_alive() -> Opts {
    Opts::new().section("timeout:\n  server:\n    alive: 200")
}

fn group(g: &str, batch: usize) -> SubOptions {
    SubOptions {
        batch: Some(batch),
        group: Some(g.into()),
        ..SubOptions::default()
    }
}

/// `n` messages `m0`.. on `topic`; their ids.
fn publish(c: &mut Client, topic: &str, n: usize) -> Vec<u64> {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let (first, last) = c.mpublish(topic, &refs).expect("MPUB");
    let ids: Vec<u64> = (first..=last).collect();
    assert_eq!(ids.len(), n);
    ids
}

/// The next event that is not ALIVE.
fn not_alive(c: &mut Client) -> SubEvent {
    for _ in 0..200 {
        match c.next_event().expect("event") {
            SubEvent::Alive => {}
            other => return other,
        }
    }
    panic!("only ALIVE");
}

/// After an ACK with nothing more to send: the next event is ALIVE, and
/// it comes only once the ACK's commit is durable.
fn alive_after_ack(c: &mut Client) {
    c.ack().expect("ACK");
    assert_eq!(c.next_event().expect("ALIVE"), SubEvent::Alive);
}

/// Waits (bounded) until the topic's only group is committed at `id`: a
/// commit is published once durable, which the client cannot wait on.
fn committed_becomes(c: &mut Client, topic: &str, id: u64) -> GroupInfo {
    for _ in 0..400 {
        let g = one_group(c, topic);
        if g.committed_id == id {
            return g;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the group of {topic} was never committed at {id}");
}

fn groups(c: &mut Client, topic: &str) -> Vec<GroupInfo> {
    c.groups(topic).expect("GROUPS")
}

#[test]
fn each_ack_commits_and_a_new_subscriber_resumes_with_the_unacknowledged_batch() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 10);

    let mut a = s.client();
    a.subscribe("t", "-", &group("g", 3)).expect("SUB");
    assert_eq!(batch(&mut a), ids[0..3]);
    a.ack().expect("ACK");
    // The second batch goes out while the first one's commit is fsynced;
    // the commit is in GROUPS once durable, with no further ACK.
    assert_eq!(batch(&mut a), ids[3..6]);
    let g = committed_becomes(&mut c, "t", ids[2]);
    assert_eq!((g.active, g.standby_count, g.lag), (true, 0, 7));
    // Gone without an ACK: batch two was not consumed.
    drop(a);

    let mut b = s.client();
    b.subscribe("t", "-", &group("g", 3)).expect("SUB");
    // The batch whose delivery failed comes again, one message at a time.
    let mut got = Vec::new();
    for _ in 0..10 {
        let one = batch(&mut b);
        let done = one.contains(&ids[9]);
        got.push(one);
        b.ack().expect("ACK");
        if done {
            break;
        }
    }
    assert_eq!(
        got,
        vec![
            vec![ids[3]],
            vec![ids[4]],
            vec![ids[5]],
            ids[6..9].to_vec(),
            vec![ids[9]]
        ]
    );
    b.stop().expect("STOP");
    let g = one_group(&mut c, "t");
    assert_eq!((g.committed_id, g.active, g.lag), (ids[9], false, 0));
    // The position stays the group's: a third subscriber has nothing to
    // read until a new message comes.
    b.subscribe("t", "-", &group("g", 3)).expect("SUB");
    let next = c.publish("t", b"new").expect("PUB");
    assert_eq!(batch(&mut b), vec![next]);
}

#[test]
fn groups_reports_lag_active_and_standbys_and_a_missing_topic_is_notopic() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    assert!(groups(&mut c, "t").is_empty());
    let ids = publish(&mut c, "t", 5);
    let mut a = s.client();
    a.subscribe("t", &ids[1].to_string(), &group("g", 2))
        .expect("SUB");
    let mut b = s.client();
    b.subscribe("t", "-", &group("g", 2)).expect("SUB");
    assert_eq!(b.next_event().expect("event"), SubEvent::Standby);
    let g = one_group(&mut c, "t");
    assert_eq!(
        (
            g.name.as_str(),
            g.committed_id,
            g.active,
            g.standby_count,
            g.lag
        ),
        ("g", ids[1], true, 1, 3)
    );
    // A second group of the same topic is counted apart.
    let mut d = s.client();
    d.subscribe("t", "$", &group("h", 2)).expect("SUB");
    let gs = groups(&mut c, "t");
    assert_eq!(gs.len(), 2);
    assert_eq!(
        (gs[1].name.as_str(), gs[1].committed_id, gs[1].lag),
        ("h", ids[4], 0)
    );
    assert_eq!(stat(&mut c, "groups"), 2);

    let e = c.groups("nope").expect_err("missing topic");
    assert_eq!(e.code(), Some("NOTOPIC"));
    // GROUPS works beside pipelined writes and in order.
    c.send_raw(b"PUB t 1\r\nx\r\nGROUPS t\r\nPING\r\n")
        .expect("send");
    assert!(c.read_line().expect("OK").starts_with("OK "));
    assert_eq!(c.read_line().expect("GROUPS"), "GROUPS 2");
    assert!(c.read_line().expect("GROUP").starts_with("GROUP g "));
    assert!(c.read_line().expect("GROUP").starts_with("GROUP h "));
    assert_eq!(c.read_line().expect("PONG"), "PONG");
}

/// How the active subscriber goes away in a takeover test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Leave {
    Stop,
    /// The client process dies: its socket closes without STOP.
    Crash,
    /// It stops answering and misses its ACK deadline.
    AckTimeout,
}

/// `a` holds an unacknowledged batch when it leaves `how`; the standby `b`
/// received STANDBY and only ALIVE until then, and takes over from the
/// committed position.
fn takeover(how: Leave) {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 6);
    let mut a = s.client();
    let opts = SubOptions {
        ack_ms: Some(if how == Leave::AckTimeout {
            2000
        } else {
            20_000
        }),
        ..group("g", 2)
    };
    a.subscribe("t", "-", &opts).expect("SUB");
    assert_eq!(batch(&mut a), ids[0..2]);
    a.ack().expect("ACK");
    assert_eq!(batch(&mut a), ids[2..4]);

    let mut b = s.client();
    b.subscribe("t", "-", &group("g", 2)).expect("SUB");
    assert_eq!(b.next_event().expect("STANDBY"), SubEvent::Standby);
    // Two heartbeats and nothing else while it waits.
    for _ in 0..2 {
        assert_eq!(b.next_event().expect("ALIVE"), SubEvent::Alive);
    }
    let g = one_group(&mut c, "t");
    assert_eq!(
        (g.active, g.standby_count, g.committed_id),
        (true, 1, ids[1])
    );
    match how {
        Leave::Stop => a.stop().expect("STOP"),
        Leave::Crash => drop(a),
        Leave::AckTimeout => {
            // The server closes the connection once the deadline passes.
            let e = a.next_event().expect_err("closed");
            assert!(matches!(e, smss::client::ClientError::Io(_)), "{e}");
        }
    }
    let first = batch(&mut b);
    if how == Leave::Stop {
        // STOP is not a failed delivery: a whole batch as usual.
        assert_eq!(first, ids[2..4]);
    } else {
        // The batch whose delivery failed, its messages one at a time.
        assert_eq!(first, vec![ids[2]]);
    }
    let g = one_group(&mut c, "t");
    assert_eq!((g.active, g.standby_count), (true, 0));
}

#[test]
fn a_standby_takes_over_when_the_active_one_stops() {
    takeover(Leave::Stop);
}

#[test]
fn a_standby_takes_over_when_the_active_one_crashes() {
    takeover(Leave::Crash);
}

#[test]
fn a_standby_takes_over_when_the_active_one_misses_its_ack_deadline() {
    takeover(Leave::AckTimeout);
}

#[test]
fn standbys_take_over_in_the_order_they_came() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 3);
    let mut a = s.client();
    a.subscribe("t", "-", &group("g", 1)).expect("SUB");
    assert_eq!(batch(&mut a), vec![ids[0]]);
    a.ack().expect("ACK");
    assert_eq!(batch(&mut a), vec![ids[1]]);
    let mut b = s.client();
    b.subscribe("t", "-", &group("g", 1)).expect("SUB");
    assert_eq!(b.next_event().expect("STANDBY"), SubEvent::Standby);
    let mut d = s.client();
    d.subscribe("t", "-", &group("g", 1)).expect("SUB");
    assert_eq!(d.next_event().expect("STANDBY"), SubEvent::Standby);
    assert_eq!(one_group(&mut c, "t").standby_count, 2);

    a.stop().expect("STOP");
    // b came first: it is active now, d still waits.
    assert_eq!(batch(&mut b), vec![ids[1]]);
    let g = one_group(&mut c, "t");
    assert_eq!((g.active, g.standby_count), (true, 1));
    b.ack().expect("ACK");
    assert_eq!(batch(&mut b), vec![ids[2]]);
    drop(b);
    assert_eq!(batch(&mut d), vec![ids[2]]);
    alive_after_ack(&mut d);
    let g = one_group(&mut c, "t");
    assert_eq!((g.standby_count, g.committed_id), (0, ids[2]));
}

#[test]
fn sub_n_and_dollar_move_the_group_even_under_an_active_subscriber() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 6);
    let mut a = s.client();
    a.subscribe("t", &ids[3].to_string(), &group("g", 10))
        .expect("SUB");
    // Durable before the OK: GROUPS on another connection shows it.
    assert_eq!(one_group(&mut c, "t").committed_id, ids[3]);
    assert_eq!(batch(&mut a), ids[4..6]);
    alive_after_ack(&mut a);
    assert_eq!(one_group(&mut c, "t").committed_id, ids[5]);

    // Another subscriber moves the group back; the active one follows.
    let mut b = s.client();
    b.subscribe("t", &ids[1].to_string(), &group("g", 10))
        .expect("SUB");
    assert_eq!(b.next_event().expect("STANDBY"), SubEvent::Standby);
    assert_eq!(one_group(&mut c, "t").committed_id, ids[1]);
    assert_eq!(batch(&mut a), ids[2..6]);
    a.ack().expect("ACK");
    b.stop().expect("STOP");
    a.stop().expect("STOP");

    // `$`: only what comes after the SUB.
    let before = c.publish("t", b"old").expect("PUB");
    a.subscribe("t", "$", &group("g", 10)).expect("SUB");
    assert_eq!(one_group(&mut c, "t").committed_id, before);
    let new = c.publish("t", b"new").expect("PUB");
    assert_eq!(batch(&mut a), vec![new]);
    a.ack().expect("ACK");
    a.stop().expect("STOP");

    // 0: from the oldest retained message; a number above the last id is
    // a floor, as for a plain SUB.
    a.subscribe("t", "0", &group("g", 100)).expect("SUB");
    assert_eq!(batch(&mut a)[0], ids[0]);
    a.stop().expect("STOP");
    let floor = new + 1000;
    a.subscribe("t", &floor.to_string(), &group("g", 100))
        .expect("SUB");
    let mut p = s.client();
    p.publish("t", b"below the floor").expect("PUB");
    for _ in 0..2 {
        assert_eq!(a.next_event().expect("ALIVE"), SubEvent::Alive);
    }
    a.stop().expect("STOP");
    assert_eq!(one_group(&mut c, "t").committed_id, floor);
}

#[test]
fn bad_group_requests_are_refused_and_write_nothing() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    c.publish("t", b"x").expect("PUB");
    let last = stat(&mut c, "last_event_id");
    for line in [
        "SUB t -",
        "SUB t - batch=2",
        "SUB t 0 group=bad/name",
        "SUB t 0 group=",
        "SUB t 0 group=g group=h",
        "SUB t 0 maxDeliver=3",
        "SUB t 0 dlq=t2",
        "SUB t 0 group=g maxDeliver=x",
        "SUB t 0 group=g dlq=t",
        "SUB t 0 group=g dlq=bad/x",
        "GROUPDEL t",
        "GROUPDEL t bad/g",
        "GROUPDEL t nosuchgroup",
    ] {
        c.send_raw(format!("{line}\r\n").as_bytes()).expect("send");
        let reply = c.read_line().expect("reply");
        assert!(reply.starts_with("ERR BADREQ "), "{line}: {reply}");
    }
    for line in [
        "SUB nope - group=g",
        "SUB t - group=g dlq=nope",
        "GROUPDEL nope g",
        "GROUPS nope",
    ] {
        c.send_raw(format!("{line}\r\n").as_bytes()).expect("send");
        let reply = c.read_line().expect("reply");
        assert!(reply.starts_with("ERR NOTOPIC "), "{line}: {reply}");
    }
    assert_eq!(stat(&mut c, "last_event_id"), last, "nothing was written");
    assert!(groups(&mut c, "t").is_empty());
    c.ping().expect("the connection is still usable");
}

#[test]
fn groupdel_ends_the_active_and_the_standby_subscribers() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 2);
    let mut a = s.client();
    a.subscribe("t", "-", &group("g", 10)).expect("SUB");
    assert_eq!(batch(&mut a), ids);
    a.ack().expect("ACK");
    let mut b = s.client();
    b.subscribe("t", "-", &group("g", 10)).expect("SUB");
    assert_eq!(b.next_event().expect("STANDBY"), SubEvent::Standby);
    let mut other = s.client();
    other.subscribe("t", "-", &group("h", 10)).expect("SUB");
    assert_eq!(batch(&mut other), ids);

    let id = c.groupdel("t", "g").expect("GROUPDEL");
    assert!(id > ids[1]);
    assert_eq!(not_alive(&mut a), SubEvent::End("deleted".into()));
    assert_eq!(not_alive(&mut b), SubEvent::End("deleted".into()));
    // Back in command mode.
    a.ping().expect("PING");
    b.ping().expect("PING");
    let gs = groups(&mut c, "t");
    assert_eq!(gs.len(), 1);
    assert_eq!(gs[0].name, "h");
    // Group h's ACK after the removal of g commits as usual.
    alive_after_ack(&mut other);
    assert_eq!(one_group(&mut c, "t").committed_id, ids[1]);
    let e = c.groupdel("t", "g").expect_err("gone");
    assert_eq!(e.code(), Some("BADREQ"));

    // A new group of the same name starts afresh, at the oldest message.
    a.subscribe("t", "-", &group("g", 10)).expect("SUB");
    assert_eq!(batch(&mut a), ids);
}

#[test]
fn deleting_the_topic_ends_its_group_subscribers_and_drops_its_groups() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 2);
    let mut a = s.client();
    a.subscribe("t", "-", &group("g", 10)).expect("SUB");
    assert_eq!(batch(&mut a), ids);
    a.ack().expect("ACK");
    let mut b = s.client();
    b.subscribe("t", "-", &group("g", 10)).expect("SUB");
    assert_eq!(b.next_event().expect("STANDBY"), SubEvent::Standby);
    c.delete("t").expect("DELETE");
    assert_eq!(not_alive(&mut a), SubEvent::End("deleted".into()));
    assert_eq!(not_alive(&mut b), SubEvent::End("deleted".into()));
    assert_eq!(stat(&mut c, "groups"), 0);

    c.create("t", 0).expect("CREATE");
    assert!(
        groups(&mut c, "t").is_empty(),
        "a re-created topic has no groups"
    );
    let fresh = publish(&mut c, "t", 1);
    a.subscribe("t", "-", &group("g", 10)).expect("SUB");
    assert_eq!(batch(&mut a), fresh);
    // The new incarnation's group has no standby left over from the old.
    let g = one_group(&mut c, "t");
    assert_eq!((g.active, g.standby_count), (true, 0));
}

#[test]
fn a_consumer_that_acks_at_once_gets_every_message_once_with_commits_in_flight() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &quick_alive());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let mut ids = publish(&mut c, "t", 1000);
    ids.extend(publish(&mut c, "t", 1000));
    let mut a = s.client();
    a.subscribe("t", "-", &group("g", 10)).expect("SUB");
    // Up to four ACKs' commits are in flight at once, each expecting the
    // group as last settled: none may be taken for a move of the group.
    let mut got = Vec::new();
    while got.len() < ids.len() {
        match not_alive(&mut a) {
            SubEvent::Batch(ms) => got.extend(ms.iter().map(|m| m.event_id)),
            other => panic!("after {} messages: {other:?}", got.len()),
        }
        if got.len() < ids.len() {
            a.ack().expect("ACK");
        }
    }
    assert_eq!(got, ids, "every message once, in order");
    // ALIVE after the last ACK: every commit is durable.
    alive_after_ack(&mut a);
    assert_eq!(one_group(&mut c, "t").committed_id, ids[1999]);
}

#[test]
fn positions_survive_a_restart_and_a_kill_9() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", 9);
    let mut a = s.client();
    a.subscribe("t", "-", &group("g", 3)).expect("SUB");
    assert_eq!(batch(&mut a), ids[0..3]);
    a.ack().expect("ACK");
    assert_eq!(batch(&mut a), ids[3..6]);
    drop(a);
    wait_inactive(&mut c, "t");
    drop(c);
    assert!(s.sigterm().success());

    let s = Server::start(dir.path());
    let mut c = s.client();
    let g = one_group(&mut c, "t");
    assert_eq!((g.committed_id, g.lag), (ids[2], 6));
    let mut a = s.client();
    a.subscribe("t", "-", &group("g", 3)).expect("SUB");
    // The failed delivery was counted durably too: one at a time.
    assert_eq!(batch(&mut a), vec![ids[3]]);
    a.ack().expect("ACK");
    assert_eq!(batch(&mut a), ids[4..7]);
    a.ack().expect("ACK");
    // Batch three goes out while the ACKs' commits are fsynced (up to four
    // are in flight): a kill now may find either, both or neither durable.
    assert_eq!(batch(&mut a), ids[7..9]);
    s.kill9();

    let s = Server::start(dir.path());
    let mut c = s.client();
    let committed = one_group(&mut c, "t").committed_id;
    assert!(
        [ids[2], ids[3], ids[6]].contains(&committed),
        "committed {committed}: not the position before the restart ({}) nor an ACKed \
         batch's end ({} or {})",
        ids[2],
        ids[3],
        ids[6]
    );
    let mut a = s.client();
    a.subscribe("t", "-", &group("g", 3)).expect("SUB");
    // At least once: from the last durable commit on.
    let from = ids.iter().position(|&id| id == committed).expect("an id") + 1;
    let want = if committed == ids[2] {
        // The failed delivery counted before the restart still stands.
        vec![ids[3]]
    } else {
        ids[from..(from + 3).min(9)].to_vec()
    };
    assert_eq!(batch(&mut a), want);
}
