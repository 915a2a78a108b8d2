//! Lifetimes that end while the server is down (or while a slave waits for
//! its master): after a restart — kill -9 or SIGTERM — or a PROMOTE, a
//! topic past its life does not exist from the first request on, and a
//! delayed message due for it is dropped and counted, never fired, whatever
//! the order of the two deadlines.
//!
//! Lifetimes are wall-clock deadlines, so these tests wait for time to pass
//! (the shortest allowed life, 1 s); nothing else is awaited by sleeping.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::repl::{start_slave, wait_caught_up};
use common::{Opts, Server, segments, stat, tempdir};
use smss::client::Client;
use smss::storage::record::{self, Kind};

/// Kinds of every record in the server's log.
fn kinds(dir: &Path) -> Vec<Kind> {
    let mut out = Vec::new();
    for seg in segments(dir) {
        let f = std::fs::File::open(&seg).expect("open segment");
        record::scan(std::io::BufReader::new(f), |_, r| out.push(r.kind)).expect("scan");
    }
    out
}

/// Sets up `Lk` (life 1 s) with one message and a delayed message due
/// `delay_ms` later; returns when its life will be over, plus a margin.
fn doomed_topic(c: &mut Client, delay_ms: u64) -> Instant {
    let created = Instant::now();
    c.create("Lk", 1000).expect("CREATE Lk 1000");
    c.publish("Lk", b"before").expect("PUB");
    c.dpublish("Lk", delay_ms, b"delayed").expect("DPUB");
    created + Duration::from_millis(1000.max(delay_ms) + 300)
}

/// Waits for wall-clock time to reach `t` (a lifetime must pass).
fn wait_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Right after start: the topic is gone, nothing fired, counted once.
fn assert_ended_without_firing(s: &Server) {
    let mut c = s.client();
    let info = c.info("Lk");
    assert!(info.is_err(), "INFO of an expired topic: {info:?}");
    let err = c
        .publish("Lk", b"late")
        .expect_err("PUB to an expired topic");
    assert!(err.to_string().contains("NOTOPIC"), "{err}");
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
    assert_eq!(stat(&mut c, "delayed_dropped"), 1, "{}", s.log_text());
    assert_eq!(stat(&mut c, "topics_expired"), 1);
    let k = kinds(&s.dir);
    assert!(
        !k.contains(&Kind::Fire),
        "a FIRE for an expired topic: {k:?}"
    );
    assert_eq!(k.iter().filter(|k| **k == Kind::Delete).count(), 1);
}

#[test]
fn a_lifetime_that_ended_during_a_kill_9_is_applied_before_anything_is_served() {
    let d = tempdir();
    let s = Server::start(d.path());
    let over = doomed_topic(&mut s.client(), 1500);
    s.kill9();
    wait_until(over);
    let s = Server::start(d.path());
    assert_ended_without_firing(&s);
}

#[test]
fn a_lifetime_that_ended_during_a_clean_stop_is_applied_before_anything_is_served() {
    let d = tempdir();
    let s = Server::start(d.path());
    let over = doomed_topic(&mut s.client(), 1500);
    assert!(s.sigterm().success());
    wait_until(over);
    let s = Server::start(d.path());
    assert_ended_without_firing(&s);
}

#[test]
fn a_delay_due_before_the_lifetime_ended_while_down_is_dropped_too() {
    let d = tempdir();
    let s = Server::start(d.path());
    // The message falls due (at 0.5 s) before the topic ends (at 1 s):
    // both passed while the server was down, and the topic ends first.
    let over = doomed_topic(&mut s.client(), 500);
    s.kill9();
    wait_until(over);
    let s = Server::start(d.path());
    assert_ended_without_firing(&s);
}

#[test]
fn a_promoted_slave_ends_lifetimes_before_firing_delays() {
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    let over = doomed_topic(&mut m.client(), 1500);
    wait_caught_up(&m, &s, None);
    m.kill9();
    wait_until(over);
    let mut sc = s.client();
    assert!(
        sc.info("Lk").is_ok(),
        "a slave's timers wait for its master"
    );
    sc.promote().expect("PROMOTE");
    assert_ended_without_firing(&s);
}
