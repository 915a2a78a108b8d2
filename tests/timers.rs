//! Timers: topic lifetimes, retention of old segments, delayed messages (DPUB).
//!
//! Every test runs the real binary on its own temp data dir. Deliveries and
//! `END` are awaited by reading the subscription (the harness timeout bounds
//! the wait). Only where the server offers no event to wait on — wall-clock
//! time passing, or the effect of the periodic retention timer — a test polls
//! STATS / INFO / the clock with a deadline and a short sleep between polls.
//! Timing is asserted only as safe bounds: never before due, and at most
//! `LATE_MS` after due.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Opts, Raw, Server, stat};
use smss::client::{Client, Delivered, SubEvent, SubOptions};

/// How late after its due time a timer may act on a loaded machine.
const LATE_MS: u64 = 3000;
/// Longest a poll loop waits for a periodic timer's effect.
const DEADLINE: Duration = Duration::from_secs(15);
/// Pause between two polls of STATS / INFO / the clock.
const POLL: Duration = Duration::from_millis(50);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Polls `cond` every `POLL` until it holds or `limit` passed; returns
/// whether it held. Only for effects that have no signal to wait on.
fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // No event exists for "time passed" / "the periodic timer ran".
        std::thread::sleep(POLL);
    }
}

/// Waits (polling the wall clock, bounded) until `now_ms() > ms`.
fn wait_wall_clock_past(ms: u64) {
    let limit = Duration::from_millis(ms.saturating_sub(now_ms())) + Duration::from_secs(5);
    assert!(
        poll_until(limit, || now_ms() > ms),
        "the wall clock did not pass {ms}"
    );
}

/// A write whose OK comes after every earlier commit has fully finished,
/// so STATS read after it reflects them (also work done by timer threads,
/// which may still be in flight when a test looks).
fn fence(c: &mut Client) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    c.create(&format!("fence-{n}"), 0).expect("fence create");
}

fn err_code<T: std::fmt::Debug>(r: smss::client::Result<T>) -> String {
    match r {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("expected a server error, got {e:?}"))
            .to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// The code of the server's `ERR` answer to `request`, sent as raw bytes: the
/// client refuses such arguments itself (see [`refused_locally`]), and these
/// tests are about what the server does with them.
fn raw_err_code(c: &mut Client, request: &[u8]) -> String {
    c.send_raw(request).expect("send");
    let line = c.read_line().expect("reply");
    let code = line
        .strip_prefix("ERR ")
        .unwrap_or_else(|| panic!("expected ERR, got {line:?}"));
    code.split(' ').next().unwrap_or_default().to_string()
}

fn refused_locally<T: std::fmt::Debug>(r: smss::client::Result<T>) -> bool {
    matches!(r, Err(smss::client::ClientError::BadArgument(_)))
}

fn retention_opts() -> Opts {
    Opts::new()
        .store("maxLogSize: 4096")
        .store("maxDays: 0.00001") // 864 ms
        .store("clearInterval: 1")
}

fn sub_opts(batch: usize) -> SubOptions {
    SubOptions {
        batch: Some(batch),
        ack_ms: Some(60_000),
        ..SubOptions::default()
    }
}

/// The next subscription event that is not `ALIVE`.
fn next_non_alive(c: &mut Client) -> SubEvent {
    loop {
        match c.next_event().expect("subscription event") {
            SubEvent::Alive => continue,
            e => return e,
        }
    }
}

/// Reads batches (ACKing each) until at least `n` messages arrived.
fn read_n(c: &mut Client, n: usize) -> Vec<Delivered> {
    let mut got = Vec::new();
    while got.len() < n {
        match next_non_alive(c) {
            SubEvent::Batch(msgs) => {
                got.extend(msgs);
                c.ack().expect("ack");
            }
            other => panic!("unexpected {other:?} after {} messages", got.len()),
        }
    }
    got
}

fn payloads(msgs: &[Delivered]) -> Vec<Vec<u8>> {
    msgs.iter().map(|m| m.payload.clone()).collect()
}

fn assert_ids_increase(msgs: &[Delivered]) {
    assert!(
        msgs.windows(2).all(|w| w[0].event_id < w[1].event_id),
        "event ids must strictly increase: {:?}",
        msgs.iter().map(|m| m.event_id).collect::<Vec<_>>()
    );
}

/// Writes `reqs` from a second thread while reading `n` reply lines, so a
/// long pipeline cannot deadlock on full socket buffers.
fn pipeline(r: &mut Raw, reqs: Vec<u8>, n: usize) -> Vec<String> {
    let mut w = r.stream.try_clone().expect("clone socket");
    let t = std::thread::spawn(move || w.write_all(&reqs).expect("send pipeline"));
    let lines: Vec<String> = (0..n).map(|_| r.line()).collect();
    t.join().expect("pipeline writer");
    lines
}

fn ok_id(line: &str) -> u64 {
    line.strip_prefix("OK ")
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("expected OK <id>, got {line:?}"))
}

/// Publishes every payload with pipelined PUBs; returns their event ids.
fn publish_many(s: &Server, topic: &str, payloads: &[Vec<u8>]) -> Vec<u64> {
    let mut reqs = Vec::new();
    for p in payloads {
        reqs.extend_from_slice(format!("PUB {topic} {}\r\n", p.len()).as_bytes());
        reqs.extend_from_slice(p);
        reqs.extend_from_slice(b"\r\n");
    }
    let mut r = s.raw();
    pipeline(&mut r, reqs, payloads.len())
        .iter()
        .map(|l| ok_id(l))
        .collect()
}

/// `count` payloads of exactly 100 bytes, each unique.
fn hundred_byte_payloads(tag: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("{tag}{i:0>width$}", width = 100 - tag.len()).into_bytes())
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn log_files(dir: &Path) -> Vec<String> {
    files_in(&dir.join("data/log"))
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect()
}

fn index_files_of(dir: &Path, topic: &str) -> Vec<String> {
    let prefix = format!("{topic}@");
    files_in(&dir.join("data/index"))
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn threads_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line")
}

// ---------------------------------------------------------------------------
// Lifetimes

#[test]
fn a_topic_life_ends_with_end_expired_and_the_name_is_free_again() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 1000).expect("create");
    let info = c.info("t").expect("info");
    assert_eq!(info.expires_ms, info.created_ms + 1000);

    let mut sc = s.client();
    sc.subscribe("t", "0", &SubOptions::default()).expect("sub");
    let end = next_non_alive(&mut sc);
    let at = now_ms();
    assert_eq!(end, SubEvent::End("expired".into()));
    assert!(
        at >= info.expires_ms,
        "END expired at {at}, before the expiry {}",
        info.expires_ms
    );
    assert!(
        at <= info.expires_ms + LATE_MS,
        "END expired at {at}, more than {LATE_MS} ms after the expiry {}",
        info.expires_ms
    );
    sc.ping().expect("back in command mode after END");

    assert_eq!(err_code(c.info("t")), "NOTOPIC");
    assert!(
        c.list().expect("list").iter().all(|t| t.name != "t"),
        "LIST still shows the expired topic"
    );
    assert!(stat(&mut c, "topics_expired") >= 1);
    assert!(
        index_files_of(dir.path(), "t").is_empty(),
        "the expired topic's index file is reclaimed"
    );

    // The name is free at once, and the new topic does not inherit the old
    // expiry.
    c.create("t", 0).expect("create again");
    let new = c.info("t").expect("info new");
    assert_eq!(new.expires_ms, 0);
    let until = info.expires_ms + 1000;
    // Waiting for wall-clock time: poll INFO, which must keep answering.
    assert!(poll_until(DEADLINE, || {
        let i = c.info("t").expect("new topic must stay");
        assert_eq!(i.created_ms, new.created_ms);
        now_ms() > until
    }));
    assert_eq!(c.info("t").expect("info"), new);
}

#[test]
fn a_recreated_topic_is_not_expired_by_the_old_topics_timer() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 1000).expect("create");
    let old = c.info("t").expect("info");
    c.delete("t").expect("delete before expiry");
    c.create("t", 0).expect("create again");
    let id = c.publish("t", b"keep").expect("pub");
    let until = old.expires_ms + 1000;
    // Waiting for wall-clock time past the old expiry: poll INFO.
    assert!(poll_until(DEADLINE, || {
        let i = c.info("t").expect("recreated topic must not expire");
        assert_eq!(i.expires_ms, 0);
        assert_eq!((i.messages, i.last_id), (1, id));
        now_ms() > until
    }));
    assert_eq!(stat(&mut c, "topics_expired"), 0);
}

#[test]
fn create_life_below_the_minimum_is_refused_and_zero_means_forever() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let before = stat(&mut c, "last_event_id");
    assert_eq!(raw_err_code(&mut c, b"CREATE t 999\r\n"), "BADREQ");
    assert_eq!(raw_err_code(&mut c, b"CREATE t 1\r\n"), "BADREQ");
    assert!(refused_locally(c.create("t", 999)));
    assert_eq!(
        stat(&mut c, "last_event_id"),
        before,
        "a refused CREATE writes nothing"
    );
    assert_eq!(err_code(c.info("t")), "NOTOPIC");

    c.create("t", 0).expect("create 0");
    let i = c.info("t").expect("info");
    assert_eq!(i.expires_ms, 0);
    c.create("u", 1000).expect("the minimum itself is accepted");
    let u = c.info("u").expect("info u");
    assert_eq!(u.expires_ms, u.created_ms + 1000);
}

#[test]
fn a_short_life_created_after_a_long_one_wakes_the_timer_early() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("long", 600_000).expect("create long");
    // A round trip between the two, so the timer is likely asleep on `long`.
    c.info("long").expect("info long");
    c.create("short", 1000).expect("create short");
    let short = c.info("short").expect("info short");

    let mut sc = s.client();
    sc.subscribe("short", "0", &SubOptions::default())
        .expect("sub");
    assert_eq!(next_non_alive(&mut sc), SubEvent::End("expired".into()));
    let at = now_ms();
    assert!(at >= short.expires_ms, "ended at {at}, before its expiry");
    assert!(
        at <= short.expires_ms + LATE_MS,
        "short ended at {at}, {} ms after its expiry: the timer slept on `long`",
        at - short.expires_ms
    );
    let long = c.info("long").expect("long is still there");
    assert_eq!(long.expires_ms, long.created_ms + 600_000);
}

#[test]
fn a_life_that_ended_while_the_server_was_down_ends_right_after_start() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 1000).expect("create");
    c.create("other", 0).expect("create other");
    c.publish("t", b"x").expect("pub");
    let info = c.info("t").expect("info");
    drop(c);
    assert!(s.sigterm().success(), "SIGTERM must exit 0");

    wait_wall_clock_past(info.expires_ms);
    let s = Server::start(dir.path());
    let mut c = s.client();
    // The lifetime timer runs on its own thread: poll INFO, bounded.
    assert!(
        poll_until(Duration::from_millis(LATE_MS), || c.info("t").is_err()),
        "topic t still exists {LATE_MS} ms after a restart past its expiry"
    );
    assert_eq!(err_code(c.info("t")), "NOTOPIC");
    assert!(stat(&mut c, "topics_expired") >= 1);
    c.info("other").expect("the topic without life stays");
    assert!(index_files_of(dir.path(), "t").is_empty());
}

// ---------------------------------------------------------------------------
// Retention

#[test]
fn retention_deletes_old_sealed_segments_but_keeps_the_active_one() {
    let dir = common::tempdir();
    let opts = retention_opts();
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let sent = hundred_byte_payloads("r", 200);
    let ids = publish_many(&s, "t", &sent);
    let before = c.info("t").expect("info");
    let segs_before = stat(&mut c, "segments");
    let disk_before = stat(&mut c, "disk_bytes");
    assert!(
        segs_before >= 2,
        "200 x 100 bytes must span several 4096-byte segments, got {segs_before}"
    );
    assert_eq!(before.last_id, *ids.last().expect("ids"));

    // Retention is a periodic timer (every 1 s): poll STATS, bounded.
    assert!(
        poll_until(DEADLINE, || stat(&mut c, "segments") == 1),
        "retention did not reduce the log to the active segment"
    );
    let after = c.info("t").expect("info after");
    assert!(
        after.first_id > ids[0] && after.first_id >= before.first_id,
        "first_id must move past deleted segments: {before:?} -> {after:?}"
    );
    assert!(after.messages < 200, "{after:?}");
    assert_eq!(after.last_id, *ids.last().expect("ids"));
    // What remains is exactly the suffix starting at first_id.
    let k = ids
        .iter()
        .position(|&id| id == after.first_id)
        .expect("first_id is one of the published ids");
    assert_eq!(after.messages as usize, ids.len() - k);
    assert!(stat(&mut c, "disk_bytes") < disk_before);
    let logs = log_files(dir.path());
    assert_eq!(logs.len(), 1, "only the active segment remains: {logs:?}");
    let active = dir.path().join("data/log").join(&logs[0]);
    assert!(
        std::fs::metadata(&active).expect("active segment").len() > 0,
        "the active segment still holds the newest messages"
    );

    let mut sc = s.client();
    sc.subscribe("t", "0", &sub_opts(1000)).expect("sub 0");
    let got = read_n(&mut sc, after.messages as usize);
    assert_eq!(got[0].event_id, after.first_id, "SUB 0 starts at first_id");
    assert_eq!(got.len(), after.messages as usize);
    assert_eq!(
        got.iter().map(|m| m.event_id).collect::<Vec<_>>(),
        ids[k..].to_vec()
    );
    assert_eq!(payloads(&got), sent[k..].to_vec());
    sc.stop().expect("stop");

    // The topic survives a crash after retention: its CREATE record was in a
    // deleted segment. A write after the retention commit guarantees the
    // checkpoint that followed it is on disk.
    let marker = c.publish("t", b"marker").expect("pub marker");
    drop(c);
    s.kill9();
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    let again = c.info("t").expect("topic survives restart after retention");
    assert_eq!(
        (again.first_id, again.last_id, again.messages),
        (after.first_id, marker, after.messages + 1)
    );
}

#[test]
fn retention_while_a_subscriber_reads_loses_no_framing_and_ids_increase() {
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &retention_opts());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let sent = hundred_byte_payloads("w", 200);
    let ids = publish_many(&s, "t", &sent);
    let last = *ids.last().expect("ids");
    let segs_before = stat(&mut c, "segments");
    assert!(segs_before >= 2, "several segments, got {segs_before}");

    let mut sc = s.client();
    sc.subscribe("t", "0", &sub_opts(1)).expect("sub 0");
    let first = match next_non_alive(&mut sc) {
        SubEvent::Batch(m) => m,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(first.len(), 1);
    // Not ACKed yet. Retention is periodic: poll STATS from another
    // connection until it removed every sealed segment under the reader
    // (only the active one is left, so nothing moves after this).
    assert!(
        poll_until(DEADLINE, || stat(&mut c, "segments") == 1),
        "retention did not run"
    );
    let info = c.info("t").expect("info");
    assert!(info.first_id > first[0].event_id, "{info:?}");

    // The messages after the first are gone: the subscriber goes on at the
    // oldest retained one, with no ERR.
    sc.ack().expect("ack");
    let next = match next_non_alive(&mut sc) {
        SubEvent::Batch(m) => m,
        other => panic!("after retention: unexpected {other:?}"),
    };
    assert_eq!(
        next[0].event_id, info.first_id,
        "continues at the oldest retained"
    );
    sc.ack().expect("ack");
    let mut got = first;
    got.extend(next);
    while got.last().map(|m| m.event_id) != Some(last) {
        match next_non_alive(&mut sc) {
            SubEvent::Batch(m) => {
                got.extend(m);
                sc.ack().expect("ack");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_ids_increase(&got);
    let by_id: std::collections::HashMap<u64, &Vec<u8>> = ids.iter().copied().zip(&sent).collect();
    for m in &got {
        assert_eq!(
            by_id.get(&m.event_id).copied(),
            Some(&m.payload),
            "message {} has the payload it was published with",
            m.event_id
        );
    }
    assert_eq!(got.last().expect("last").payload, sent[199]);
    sc.stop().expect("stop");
    assert_eq!(stat(&mut c, "writer_poisoned"), 0);
}

#[test]
fn delete_reclaims_the_topics_index_file_at_once() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let create_id = c.create("t", 0).expect("create");
    c.create("keep", 0).expect("create keep");
    for i in 0..20 {
        c.publish("t", format!("m{i}").as_bytes()).expect("pub");
    }
    assert_eq!(
        index_files_of(dir.path(), "t"),
        vec![format!("t@{create_id}.idx")]
    );
    c.delete("t").expect("delete");
    // The OK of DELETE is the signal: the file is gone now.
    assert_eq!(index_files_of(dir.path(), "t"), Vec::<String>::new());
    assert_eq!(index_files_of(dir.path(), "keep").len(), 1);
    let again = c.create("t", 0).expect("create again");
    assert_eq!(
        index_files_of(dir.path(), "t"),
        vec![format!("t@{again}.idx")]
    );
    assert_eq!(c.info("t").expect("info").messages, 0);
}

// ---------------------------------------------------------------------------
// Delayed messages

#[test]
fn dpub_delivers_later_with_a_new_id_headers_and_payload() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let mut sc = s.client();
    sc.subscribe("t", "$", &sub_opts(10)).expect("sub $");

    assert_eq!(stat(&mut c, "delayed_pending"), 0);
    let t0 = now_ms();
    let id = c
        .dpublish_with_headers("t", 1000, &[("h", "1")], b"later")
        .expect("dpub");
    let t1 = now_ms();
    let pending = stat(&mut c, "delayed_pending");
    if now_ms() < t0 + 1000 {
        assert_eq!(pending, 1, "one message pending before it is due");
    }
    assert_eq!(
        c.info("t").expect("info").messages,
        0,
        "a delayed message is not in the topic before due"
    );

    let got = match next_non_alive(&mut sc) {
        SubEvent::Batch(m) => m,
        other => panic!("unexpected {other:?}"),
    };
    let arrived = now_ms();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(m.event_id > id, "fired with a NEW event id > the DPUB's");
    assert_eq!(m.payload, b"later");
    assert_eq!(m.headers, vec![("h".to_string(), "1".to_string())]);
    assert!(
        m.timestamp_ms >= t0 + 1000,
        "timestamp {} before due {}",
        m.timestamp_ms,
        t0 + 1000
    );
    assert!(arrived >= t0 + 1000, "arrived before due");
    assert!(
        arrived <= t1 + 1000 + LATE_MS,
        "arrived {} ms after due",
        arrived - (t1 + 1000)
    );
    sc.ack().expect("ack");
    sc.stop().expect("stop");
    fence(&mut c);
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
    let info = c.info("t").expect("info");
    assert_eq!((info.messages, info.first_id), (1, m.event_id));
}

#[test]
fn bad_dpubs_are_refused_and_write_nothing() {
    let dir = common::tempdir();
    let opts = Opts::new().section("limits:\n  maxDelayMs: 10000");
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let before = stat(&mut c, "last_event_id");
    assert_eq!(raw_err_code(&mut c, b"DPUB t 0 1\r\nx\r\n"), "BADREQ");
    assert!(refused_locally(c.dpublish("t", 0, b"x")));
    assert_eq!(err_code(c.dpublish("t", 10_001, b"x")), "BADREQ");
    assert_eq!(err_code(c.dpublish("nope", 1000, b"x")), "NOTOPIC");
    assert_eq!(stat(&mut c, "last_event_id"), before, "nothing written");
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
    c.ping().expect("connection still usable");
    let id = c
        .dpublish("t", 10_000, b"x")
        .expect("the limit itself is accepted");
    assert_eq!(id, before + 1);
    assert_eq!(stat(&mut c, "delayed_pending"), 1);
}

#[test]
fn pending_dpubs_survive_kill9_and_fire_in_due_order() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let t0 = now_ms();
    let dc = c.dpublish("t", 1500, b"c").expect("dpub c");
    let da = c.dpublish("t", 1000, b"a").expect("dpub a");
    let db = c.dpublish("t", 1200, b"b").expect("dpub b");
    let t1 = now_ms();
    drop(c);
    s.kill9();

    wait_wall_clock_past(t1 + 1500);
    let s = Server::start(dir.path());
    let mut sc = s.client();
    sc.subscribe("t", "0", &sub_opts(100)).expect("sub 0");
    let got = read_n(&mut sc, 3);
    sc.stop().expect("stop");
    assert_eq!(
        payloads(&got),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        "fired in due order, each once"
    );
    assert_ids_increase(&got);
    assert!(got[0].event_id > dc.max(da).max(db));
    for (m, delay) in got.iter().zip([1000, 1200, 1500]) {
        assert!(m.timestamp_ms >= t0 + delay, "{m:?} fired before due");
    }
    // A marker due now is fired after anything overdue: once it is there,
    // a second firing of a, b or c would be visible too.
    let mut c = s.client();
    let marker_dpub = c.dpublish("t", 1, b"marker").expect("dpub marker");
    let mut sc = s.client();
    sc.subscribe("t", &got[2].event_id.to_string(), &sub_opts(100))
        .expect("sub after c");
    let rest = read_n(&mut sc, 1);
    assert_eq!(payloads(&rest), vec![b"marker".to_vec()]);
    assert!(rest[0].event_id > marker_dpub);
    assert_eq!(c.info("t").expect("info").messages, 4);
    fence(&mut c);
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
}

#[test]
fn a_fired_message_does_not_fire_again_after_kill9() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let mut sc = s.client();
    sc.subscribe("t", "0", &sub_opts(10)).expect("sub");
    c.dpublish("t", 200, b"once").expect("dpub");
    let got = read_n(&mut sc, 1);
    assert_eq!(payloads(&got), vec![b"once".to_vec()]);
    drop((c, sc));
    s.kill9();

    let s = Server::start(dir.path());
    let mut c = s.client();
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
    // A marker due now fires after anything the restart still thinks is
    // overdue; when it arrives, a second firing would already be visible.
    c.dpublish("t", 1, b"marker").expect("dpub marker");
    let mut sc = s.client();
    sc.subscribe("t", "0", &sub_opts(10)).expect("sub 0");
    let all = read_n(&mut sc, 2);
    sc.stop().expect("stop");
    assert_eq!(
        payloads(&all),
        vec![b"once".to_vec(), b"marker".to_vec()],
        "the delayed message exists exactly once"
    );
    assert_eq!(all[0].event_id, got[0].event_id);
    assert_eq!(c.info("t").expect("info").messages, 2);
    fence(&mut c);
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
}

#[test]
fn a_dpub_whose_topic_was_deleted_is_dropped() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    c.dpublish("t", 1000, b"orphan").expect("dpub");
    let t1 = now_ms();
    c.delete("t").expect("delete");
    c.create("t", 0).expect("create again");
    let due = t1 + 1000;
    // Waiting for wall-clock time past due + 1.5 s and the counters: poll.
    assert!(
        poll_until(DEADLINE, || {
            now_ms() > due + 1500
                && stat(&mut c, "delayed_dropped") >= 1
                && stat(&mut c, "delayed_pending") == 0
        }),
        "the orphaned delayed message was not counted as dropped"
    );
    assert_eq!(c.info("t").expect("info").messages, 0);
    // The delay timer fires in due order: once a marker due now arrived,
    // the orphan (due earlier) would have been delivered already.
    c.dpublish("t", 1, b"marker").expect("dpub marker");
    let mut sc = s.client();
    sc.subscribe("t", "0", &sub_opts(10)).expect("sub 0");
    let got = read_n(&mut sc, 1);
    assert_eq!(payloads(&got), vec![b"marker".to_vec()]);
    assert_eq!(c.info("t").expect("info").messages, 1);
}

#[test]
fn retention_never_deletes_a_pending_delayed_message() {
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &retention_opts());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    // Old segments before the DPUB (retention may delete them) ...
    let pre = publish_many(&s, "t", &hundred_byte_payloads("p", 100));
    let t0 = now_ms();
    let dpub = c
        .dpublish_with_headers("t", 4000, &[("k", "v")], b"kept-until-due")
        .expect("dpub");
    let due = t0 + 4000;
    // ... and more after it, so the DPUB's segment is sealed and old.
    let post = publish_many(&s, "t", &hundred_byte_payloads("q", 100));
    let segs = stat(&mut c, "segments");
    assert!(segs >= 3, "several segments, got {segs}");

    // Retention is periodic: poll until it removed the segments before the
    // DPUB's (or the DPUB is nearly due).
    let ran = poll_until(
        Duration::from_millis(due.saturating_sub(now_ms() + 300)),
        || c.info("t").expect("info").first_id > pre[0],
    );
    let info = c.info("t").expect("info");
    if now_ms() < due {
        assert!(
            info.first_id <= post[0],
            "retention deleted a segment at/after the pending DPUB: {info:?}, first post id {}",
            post[0]
        );
        assert_eq!(stat(&mut c, "delayed_pending"), 1);
    }
    if !ran {
        println!("note: retention did not run before the DPUB was due");
    }

    let mut sc = s.client();
    sc.subscribe("t", &post[post.len() - 1].to_string(), &sub_opts(10))
        .expect("sub after the last PUB");
    let got = read_n(&mut sc, 1);
    let arrived = now_ms();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"kept-until-due");
    assert_eq!(got[0].headers, vec![("k".to_string(), "v".to_string())]);
    assert!(got[0].event_id > dpub);
    assert!(got[0].timestamp_ms >= due, "fired before due");
    assert!(arrived <= due + LATE_MS + 1000, "fired far too late");
    fence(&mut c);
    assert_eq!(stat(&mut c, "writer_poisoned"), 0);
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
}

#[test]
fn thousands_of_pending_dpubs_use_no_extra_threads_and_fire_once_each() {
    const N: usize = 5000;
    const DELAY: u64 = 2000;
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    s.client().create("t", 0).expect("create");
    // All traffic on one raw connection, so the connection count (and with
    // it any per-connection thread) stays the same while counting threads.
    let mut r = s.raw();
    r.send(b"PING\r\n");
    assert_eq!(r.line(), "PONG");
    let threads_before = threads_of(s.pid());

    let mut reqs = Vec::new();
    for i in 0..N {
        let p = i.to_string();
        reqs.extend_from_slice(format!("DPUB t {DELAY} {}\r\n{p}\r\n", p.len()).as_bytes());
    }
    let t0 = now_ms();
    let oks = pipeline(&mut r, reqs, N);
    let ids: Vec<u64> = oks.iter().map(|l| ok_id(l)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    r.send(b"STATS\r\n");
    let head = r.line();
    let n: usize = head
        .strip_prefix("STATS ")
        .and_then(|v| v.parse().ok())
        .expect("STATS n");
    let mut pending = None;
    for _ in 0..n {
        let l = r.line();
        if let Some(v) = l.strip_prefix("STAT delayed_pending ") {
            pending = v.parse::<u64>().ok();
        }
    }
    let pending = pending.expect("delayed_pending stat");
    if now_ms() < t0 + DELAY {
        assert_eq!(pending, N as u64, "all pending right after the OKs");
    }
    let threads_pending = threads_of(s.pid());
    assert!(
        threads_pending <= threads_before + 2,
        "threads grew from {threads_before} to {threads_pending} with {N} pending"
    );

    r.send(b"SUB t 0 batch=1000 ack=60000\r\n");
    assert_eq!(r.line(), "OK");
    let mut got: Vec<(u64, String)> = Vec::new();
    let mut max_threads = threads_pending;
    while got.len() < N {
        let l = r.line();
        if l == "ALIVE" {
            continue;
        }
        let count: usize = l
            .strip_prefix("BATCH ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("expected BATCH, got {l:?}"));
        for _ in 0..count {
            let m = r.line();
            let f: Vec<&str> = m.split(' ').collect();
            assert_eq!(f[0], "MSG", "{m:?}");
            let id: u64 = f[1].parse().expect("id");
            let ts: u64 = f[2].parse().expect("ts");
            assert!(ts >= t0 + DELAY, "message {id} fired before due");
            let len: usize = f[3].parse().expect("len");
            let p = String::from_utf8(r.payload(len)).expect("utf8");
            got.push((id, p));
        }
        max_threads = max_threads.max(threads_of(s.pid()));
        r.send(b"ACK\r\n");
    }
    r.send(b"STOP\r\n");
    let done = now_ms();
    assert!(
        max_threads <= threads_before + 2,
        "threads grew from {threads_before} to {max_threads} while firing"
    );
    assert_eq!(got.len(), N, "no extra deliveries");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");
    assert!(got[0].0 > *ids.last().expect("ids"), "new ids");
    let set: BTreeSet<usize> = got
        .iter()
        .map(|(_, p)| p.parse().expect("index payload"))
        .collect();
    assert_eq!(set.len(), N, "each delivered exactly once");
    assert_eq!(set, (0..N).collect::<BTreeSet<usize>>());
    assert!(
        done <= t0 + DELAY + LATE_MS + 5000,
        "5000 delayed messages took {} ms after due",
        done - t0 - DELAY
    );

    // STOP's OK may follow an in-flight ALIVE; read up to it.
    loop {
        let l = r.line();
        if l == "OK" {
            break;
        }
        assert_eq!(l, "ALIVE", "unexpected {l:?} before the OK of STOP");
    }
    let mut c = s.client();
    fence(&mut c);
    assert_eq!(stat(&mut c, "delayed_pending"), 0);
    assert_eq!(c.info("t").expect("info").messages, N as u64);
}
