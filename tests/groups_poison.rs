//! `maxDeliver=n` means n deliveries of a poison message, also when the
//! server restarts (cleanly or by kill -9) between them, or a slave is
//! promoted after the last one: whether a failed delivery was the message
//! alone is durable with its failure count, so no restart buys it one
//! more delivery before the dead letter.

mod common;

use common::groups::{batch, one_group, wait_inactive};
use common::repl::{cli_dump, messages, start_slave, wait_caught_up};
use common::{Opts, Server, segments, stat, tempdir};
use smss::client::{Client, SubOptions};

const MAX_DELIVER: u32 = 3;

fn poison_opts() -> SubOptions {
    SubOptions {
        batch: Some(10),
        group: Some("g".into()),
        max_deliver: Some(MAX_DELIVER),
        dlq: Some("dead".into()),
        ..SubOptions::default()
    }
}

/// Topic `t` with a poison message and a good one after it, and the
/// dead-letter topic; (poison, good).
fn setup(c: &mut Client) -> (u64, u64) {
    c.create("t", 0).expect("CREATE");
    c.create("dead", 0).expect("CREATE");
    let poison = c.publish("t", b"poison").expect("PUB");
    let good = c.publish("t", b"good").expect("PUB");
    (poison, good)
}

/// One delivery to a consumer that crashes on `poison`: it closes without
/// ACK. Returns once the server has counted the failed delivery durably.
fn crash_on(s: &Server, poison: u64) -> Vec<u64> {
    let mut c = s.client();
    c.subscribe("t", "-", &poison_opts()).expect("SUB");
    let ids = batch(&mut c);
    assert_eq!(ids.first(), Some(&poison), "the group is at the poison");
    drop(c);
    wait_inactive(&mut s.client(), "t");
    ids
}

/// The group has given up on `poison`: the next subscriber gets `good`
/// first, and `dead` holds one copy saying it was delivered
/// `MAX_DELIVER` times.
fn assert_dead_lettered(s: &Server, poison: u64, good: u64) {
    let mut c = s.client();
    c.subscribe("t", "-", &poison_opts()).expect("SUB");
    assert_eq!(batch(&mut c), vec![good], "the poison message is not sent");
    c.ack().expect("ACK");
    c.stop().expect("STOP");
    let mut admin = s.client();
    let dead = messages(&mut admin, "dead");
    assert_eq!(dead.len(), 1, "dead-lettered once: {dead:?}");
    let (_, _, headers, payload) = &dead[0];
    assert_eq!(payload, b"poison");
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(header("dlq.id"), Some(poison.to_string()));
    assert_eq!(header("dlq.deliveries"), Some(MAX_DELIVER.to_string()));
    assert_eq!(stat(&mut admin, "dead_lettered"), 1);
    assert_eq!(one_group(&mut admin, "t").committed_id, good);
}

/// Three failed deliveries, the server stopped by `stop` and started again
/// on the same directory after each, then the dead letter.
fn across_restarts(stop: fn(Server)) {
    let dir = tempdir();
    let mut s = Server::start(dir.path());
    let (poison, good) = setup(&mut s.client());
    let mut deliveries = Vec::new();
    for _ in 0..MAX_DELIVER {
        deliveries.push(crash_on(&s, poison));
        stop(s);
        s = Server::start(dir.path());
    }
    // First with the message after it (not surely its own failure), then
    // alone: three deliveries in all, whatever restarted between them.
    assert_eq!(
        deliveries,
        vec![vec![poison, good], vec![poison], vec![poison]]
    );
    // The log says so: smss-cli dump shows each count with `alone`.
    let mut dumped = String::new();
    for seg in segments(dir.path()) {
        let (ok, out, err) = cli_dump(&seg);
        assert!(ok, "dump {}: {err}", seg.display());
        dumped.push_str(&out);
    }
    for (n, alone) in [(1, 0), (2, 1), (3, 1)] {
        let want = format!("failed_at={poison} failures={n} alone={alone}");
        assert!(dumped.contains(&want), "no {want:?} in\n{dumped}");
    }
    assert_dead_lettered(&s, poison, good);
}

#[test]
fn max_deliver_counts_deliveries_across_clean_restarts() {
    across_restarts(|s| assert!(s.sigterm().success(), "a clean stop"));
}

#[test]
fn max_deliver_counts_deliveries_across_kill_9() {
    across_restarts(Server::kill9);
}

#[test]
fn max_deliver_counts_deliveries_across_a_promote() {
    let (md, sd) = (tempdir(), tempdir());
    let master = Server::start(md.path());
    let slave = start_slave(sd.path(), &Opts::new(), &master.addr);
    let (poison, good) = setup(&mut master.client());
    let mut deliveries = Vec::new();
    for _ in 0..MAX_DELIVER {
        deliveries.push(crash_on(&master, poison));
    }
    assert_eq!(
        deliveries,
        vec![vec![poison, good], vec![poison], vec![poison]]
    );
    // The last failure reached the slave; the master dies before anyone
    // gave up on the message.
    wait_caught_up(&master, &slave, None);
    master.kill9();
    slave.client().promote().expect("PROMOTE");
    assert_dead_lettered(&slave, poison, good);
}
