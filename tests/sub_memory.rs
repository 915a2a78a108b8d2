//! A subscription's memory does not grow with `batch=` or the message
//! size: subscribers asking for `batch=1000` of 1 KiB messages that never
//! read, or that drained and sit idle, leave the server's RSS small, and
//! the memory comes back after they go idle. A damaged record in the middle
//! of a batch: the intact records before it arrive as a shorter batch, then
//! the ERR. The bounds are generous (a loaded 2-core machine); the exact
//! figures are `smss-bench footprint`'s.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{Opts, Raw, Server, WAIT, records, segments, stat};
use smss::client::{Client, SubOptions};

const MESSAGES: usize = 2000;
const BATCH: usize = 1000;
/// Before streaming, 300 silent subscribers took ~390 MiB.
const SILENT_SUBS: usize = 300;
const SILENT_LIMIT_KIB: u64 = 60 << 10;
/// Before, 100 idle subscribers after a drain kept ~140 MiB, ~34 MiB after
/// they hung up.
const IDLE_SUBS: usize = 100;
const IDLE_LIMIT_KIB: u64 = 30 << 10;
const CLOSED_LIMIT_KIB: u64 = 20 << 10;

fn fill(s: &Server) {
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let payload = vec![b'x'; 1024];
    let batch: Vec<&[u8]> = vec![&payload[..]; 100];
    for _ in 0..MESSAGES / 100 {
        c.mpublish("t", &batch).expect("mpub");
    }
}

/// Waits (bounded) until STATS `subscribers` is `n`.
fn wait_subscribers(c: &mut Client, n: u64) {
    let deadline = Instant::now() + WAIT;
    while stat(c, "subscribers") != n {
        assert!(Instant::now() < deadline, "subscribers never reached {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until VmRSS is under `limit`; returns the last reading.
fn rss_falls_under(s: &Server, limit: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let rss = s.mem_kib("VmRSS");
        if rss < limit || Instant::now() > deadline {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn subscribers_that_never_read_hold_little_memory() {
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &Opts::new().store("fsync: never"));
    fill(&s);
    let mut stats = s.client();
    let sub = format!("SUB t 0 batch={BATCH} ack=60000\r\n");
    let mut silent: Vec<Raw> = (0..SILENT_SUBS)
        .map(|_| {
            let mut r = s.raw();
            r.send(sub.as_bytes());
            r
        })
        .collect();
    wait_subscribers(&mut stats, SILENT_SUBS as u64);
    // Every one of them was sent (part of) a batch of 1000 × 1 KiB.
    for r in &mut silent {
        assert_eq!(r.line(), "OK");
        let batch = r.line();
        let n: usize = batch
            .strip_prefix("BATCH ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected BATCH, got {batch:?}"));
        assert!(n > 900 && n <= BATCH, "{batch}");
    }
    let hwm = s.mem_kib("VmHWM");
    eprintln!("{SILENT_SUBS} silent subscribers: VmHWM {hwm} KiB");
    assert!(
        hwm < SILENT_LIMIT_KIB,
        "peak RSS {hwm} KiB with {SILENT_SUBS} subscribers that never read (limit {SILENT_LIMIT_KIB})"
    );
}

#[test]
fn subscribers_idle_after_a_drain_give_their_memory_back() {
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &Opts::new().store("fsync: never"));
    fill(&s);
    let mut stats = s.client();
    let opts = SubOptions {
        batch: Some(BATCH),
        ack_ms: Some(60_000),
        ..SubOptions::default()
    };
    let mut subs: Vec<(Client, usize)> = (0..IDLE_SUBS)
        .map(|_| {
            let mut c = s.client();
            c.subscribe("t", "0", &opts).expect("sub");
            (c, 0)
        })
        .collect();
    // One batch each per round; every batch holds at least one message.
    for _ in 0..MESSAGES {
        let mut left = false;
        for (c, got) in subs.iter_mut().filter(|(_, got)| *got < MESSAGES) {
            *got += common::repl::next_batch(c).len();
            c.ack().expect("ack");
            left = true;
        }
        if !left {
            break;
        }
    }
    assert!(subs.iter().all(|(_, got)| *got == MESSAGES));
    let idle = rss_falls_under(&s, IDLE_LIMIT_KIB);
    eprintln!(
        "{IDLE_SUBS} idle subscribers: VmRSS {idle} KiB, VmHWM {} KiB",
        s.mem_kib("VmHWM")
    );
    assert!(
        idle < IDLE_LIMIT_KIB,
        "RSS {idle} KiB with {IDLE_SUBS} idle subscribers (limit {IDLE_LIMIT_KIB})"
    );
    drop(subs);
    wait_subscribers(&mut stats, 0);
    let closed = rss_falls_under(&s, CLOSED_LIMIT_KIB);
    eprintln!("after they hung up: VmRSS {closed} KiB");
    assert!(
        closed < CLOSED_LIMIT_KIB,
        "RSS {closed} KiB after the subscribers hung up (limit {CLOSED_LIMIT_KIB})"
    );
}

#[test]
fn a_damaged_record_mid_batch_ends_the_batch_before_it_then_errs() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    for i in 0..40 {
        c.publish("t", format!("message {i}").as_bytes())
            .expect("pub");
    }
    drop(c);
    assert!(s.sigterm().success());
    let seg = segments(dir.path()).pop().expect("a segment");
    let (recs, _) = records(&seg);
    // recs[0] is the CREATE; messages are ids 2..=41.
    let (off, id, len) = recs[21];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.write_all_at(b"X", off + len - 2)
        .expect("damage a payload byte");
    drop(f);

    // Records before the checkpoint are not re-read at start.
    let s = Server::start(dir.path());
    let mut r = s.raw();
    r.send(b"SUB t 0 batch=1000\r\n");
    assert_eq!(r.line(), "OK");
    let intact = id - 2;
    assert_eq!(
        r.line(),
        format!("BATCH {intact}"),
        "the intact records first"
    );
    for want in 2..id {
        let head = r.line();
        let n: usize = head
            .split(' ')
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected MSG, got {head:?}"));
        assert!(head.starts_with(&format!("MSG {want} ")), "{head}");
        let body = r.payload(n);
        assert_eq!(body, format!("message {}", want - 2).as_bytes());
    }
    r.send(b"ACK\r\n");
    let err = r.line();
    assert!(err.starts_with("ERR INTERNAL "), "{err}");
    assert!(
        err.contains(&format!("event {id}")),
        "names the event: {err}"
    );
    assert!(
        err.contains(&format!("offset {off}")),
        "names the offset: {err}"
    );
    assert!(err.contains("CRC"), "says what is wrong: {err}");
    // The connection is back in command mode.
    r.send(b"PING\r\n");
    assert_eq!(r.line(), "PONG");
}
