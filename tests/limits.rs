//! What a client the server refuses, or one that sends too much, can cost it:
//! the payload of a write refused before it is needed (`NOAUTH`, `READONLY`)
//! is dropped as it streams in, never buffered whole; wrong AUTH tokens are
//! answered late, close the connection at the third, and are logged at a
//! bounded rate; a connection that does not authenticate within
//! `timeout.auth` is closed; one MPUB's payloads are bounded by
//! `limits.maxBatchBytes`.
//!
//! Memory is read from the server's `/proc/<pid>/status` (`VmHWM`, the most
//! it was ever resident), so a peak between two looks is not missed.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Opts, Raw, Server, WAIT, stat};

const TOKEN: &str = "s3cret";
/// The default `limits.maxPayload`, the largest payload a client may declare.
const MAX_PAYLOAD: usize = 4 << 20;
/// Server memory growth (KiB) that proves a refused payload was buffered:
/// well under the megabytes the refused payloads of one test add up to.
const GROWTH_LIMIT_KIB: u64 = 8 << 10;

fn with_token() -> Opts {
    Opts::new()
        .store("fsync: never")
        .section(&format!("auth:\n  token: {TOKEN}"))
}

fn expect_err(raw: &mut Raw, code: &str, what: &str) -> String {
    let line = raw.line();
    let want = format!("ERR {code}");
    assert!(
        line == want || line.starts_with(&format!("{want} ")),
        "{what}: expected {want}, got {line:?}"
    );
    line
}

/// Sends one payload request: its lines and `n` payload bytes, all but the
/// last `keep` bytes of the payload, in 64 KiB writes. Returns what is left
/// to send (the kept bytes and the payload's CRLF).
fn send_most(raw: &mut Raw, line: &str, n: usize, keep: usize) -> Vec<u8> {
    raw.send(line.as_bytes());
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0;
    while sent < n - keep {
        let k = chunk.len().min(n - keep - sent);
        raw.send(&chunk[..k]);
        sent += k;
    }
    let mut rest = vec![b'x'; keep];
    rest.extend_from_slice(b"\r\n");
    rest
}

/// Opens `n` connections and makes sure each has its thread (a PONG).
fn connections(s: &Server, n: usize) -> Vec<Raw> {
    (0..n)
        .map(|_| {
            let mut r = s.raw();
            r.send(b"PING\r\n");
            assert_eq!(r.line(), "PONG");
            r
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Refused payloads are not buffered

#[test]
fn unauthenticated_payloads_are_dropped_as_they_stream_in() {
    let dir = common::tempdir();
    let opts = with_token().section("timeout:\n  auth: 60000");
    let s = Server::start_with(dir.path(), &opts);
    const CONNS: usize = 8;
    let mut conns = connections(&s, CONNS);
    let rss_before = s.mem_kib("VmRSS");
    let hwm_before = s.mem_kib("VmHWM");

    // Every connection is part way through a 4 MiB PUB at the same time.
    let head = format!("PUB t {MAX_PAYLOAD}\r\n");
    let rests: Vec<Vec<u8>> = conns
        .iter_mut()
        .map(|r| send_most(r, &head, MAX_PAYLOAD, 1024))
        .collect();
    let rss_mid = s.mem_kib("VmRSS");
    for (r, rest) in conns.iter_mut().zip(&rests) {
        r.send(rest);
        r.send(format!("AUTH {TOKEN}\r\nPING\r\n").as_bytes());
    }
    for r in &mut conns {
        expect_err(r, "NOAUTH", "a PUB before AUTH");
        assert_eq!(r.line(), "OK", "AUTH after the refused PUB: framing kept");
        assert_eq!(r.line(), "PONG");
    }
    let grew = s.mem_kib("VmHWM").saturating_sub(hwm_before);
    eprintln!(
        "RSS {rss_before} KiB before, {rss_mid} KiB mid-payload; peak grew {grew} KiB \
         for {CONNS} x {MAX_PAYLOAD} refused bytes"
    );
    assert!(
        grew < GROWTH_LIMIT_KIB,
        "the server's peak memory grew by {grew} KiB while {CONNS} refused 4 MiB payloads \
         streamed in: they were buffered"
    );
    assert!(
        rss_mid < rss_before + GROWTH_LIMIT_KIB,
        "{rss_mid} KiB mid-payload"
    );

    // An MPUB and a DPUB are dropped the same way; nothing was written.
    let mut r = s.raw();
    let half = MAX_PAYLOAD / 2;
    let rest = send_most(&mut r, &format!("MPUB t 2\r\n{half}\r\n"), half, 0);
    r.send(&rest);
    let rest = send_most(&mut r, &format!("{half} k=v\r\n"), half, 0);
    r.send(&rest);
    let rest = send_most(&mut r, &format!("DPUB t 1000 {half}\r\n"), half, 0);
    r.send(&rest);
    r.send(b"PING\r\n");
    expect_err(&mut r, "NOAUTH", "an MPUB before AUTH");
    expect_err(&mut r, "NOAUTH", "a DPUB before AUTH");
    assert_eq!(r.line(), "PONG");
    let grew = s.mem_kib("VmHWM").saturating_sub(hwm_before);
    assert!(grew < GROWTH_LIMIT_KIB, "peak grew by {grew} KiB");
    let mut c = s.client();
    c.auth(TOKEN).expect("AUTH");
    assert_eq!(
        stat(&mut c, "last_event_id"),
        0,
        "the refused writes wrote nothing"
    );
}

#[test]
fn a_malformed_refused_request_still_gets_its_own_badreq() {
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &with_token());
    let mut r = s.raw();
    r.send(b"PUB bad/t 3\r\nabc\r\nMPUB t 2\r\n1\r\na\r\n1 k\r\nb\r\nPUB t 3\r\nabc\r\nPING\r\n");
    let l = expect_err(&mut r, "BADREQ", "a bad topic, before AUTH");
    assert!(l.contains("topic"), "{l}");
    let l = expect_err(&mut r, "BADREQ", "a bad header, before AUTH");
    assert!(l.contains("message 2"), "{l}");
    expect_err(&mut r, "NOAUTH", "a good PUB before AUTH");
    assert_eq!(r.line(), "PONG");
    // A payload not followed by CRLF still loses the framing.
    r.send(b"PUB t 3\r\nabcXY\r\n");
    expect_err(&mut r, "BADREQ", "no CRLF after the payload");
    assert!(r.closed());
}

#[test]
fn a_slave_drops_the_payload_of_a_write_it_refuses() {
    let dir = common::tempdir();
    let args = ["--role", "slave", "--master", "127.0.0.1:9"];
    let s = Server::start_with_args(dir.path(), &Opts::new(), &args);
    const CONNS: usize = 6;
    let mut conns = connections(&s, CONNS);
    let hwm_before = s.mem_kib("VmHWM");
    let head = format!("PUB t {MAX_PAYLOAD}\r\n");
    let rests: Vec<Vec<u8>> = conns
        .iter_mut()
        .map(|r| send_most(r, &head, MAX_PAYLOAD, 1024))
        .collect();
    for (r, rest) in conns.iter_mut().zip(&rests) {
        r.send(rest);
        r.send(b"PING\r\n");
    }
    for r in &mut conns {
        expect_err(r, "READONLY", "a PUB to a slave");
        assert_eq!(r.line(), "PONG");
    }
    let grew = s.mem_kib("VmHWM").saturating_sub(hwm_before);
    assert!(
        grew < GROWTH_LIMIT_KIB,
        "the slave's peak memory grew by {grew} KiB for {CONNS} refused 4 MiB payloads"
    );
}

// ---------------------------------------------------------------------------
// Wrong tokens

#[test]
fn wrong_tokens_are_answered_late_and_the_third_closes_the_connection() {
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &with_token());
    let mut r = s.raw();
    for i in 1..=3 {
        let t0 = Instant::now();
        r.send(b"AUTH wrong\r\n");
        expect_err(&mut r, "NOAUTH", &format!("wrong token {i}"));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "wrong token {i} answered after {took:?}"
        );
    }
    // The fourth finds the connection closed (the write itself may fail).
    let _ = r.stream.write_all(b"AUTH wrong\r\n");
    assert!(r.closed(), "the connection survived a fourth wrong token");

    // A pipelined burst of guesses gets three answers, then the connection
    // is closed: 20,000 guesses would take 6,667 connections.
    let mut r = s.raw();
    let t0 = Instant::now();
    r.send(&b"AUTH wrong\r\n".repeat(20));
    for i in 1..=3 {
        expect_err(&mut r, "NOAUTH", &format!("pipelined wrong token {i}"));
    }
    assert!(r.closed(), "the connection survived three wrong tokens");
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // Fewer than three failures do not stand in the way of the right token.
    let mut r = s.raw();
    r.send(format!("AUTH wrong\r\nAUTH bad\r\nAUTH {TOKEN}\r\nPING\r\nLIST\r\n").as_bytes());
    expect_err(&mut r, "NOAUTH", "first");
    expect_err(&mut r, "NOAUTH", "second");
    assert_eq!(r.line(), "OK");
    assert_eq!(r.line(), "PONG");
    assert_eq!(r.line(), "TOPICS 0");
}

#[test]
fn wrong_tokens_are_logged_at_a_bounded_rate() {
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &with_token());
    const CONNS: usize = 12;
    let threads: Vec<_> = (0..CONNS)
        .map(|_| {
            let mut r = s.raw();
            std::thread::spawn(move || {
                r.send(&b"AUTH wrong\r\n".repeat(3));
                // Three wrong tokens close the connection; so does one
                // refused unchecked, past the address's budget (36 guesses
                // from one address: see tests/preauth.rs).
                for _ in 0..3 {
                    if r.closed() {
                        break;
                    }
                    expect_err(&mut r, "NOAUTH", "a wrong token");
                }
                assert!(r.closed());
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let log = s.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("AUTH with a wrong token"))
        .collect();
    // One line when the first failed, one more only if the run took over
    // the 10 s interval.
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "{} wrong tokens gave {} log lines: {lines:?}",
        CONNS * 3,
        lines.len()
    );
    assert!(
        lines[0].contains("wrong token(s) on all connections"),
        "{}",
        lines[0]
    );
}

// ---------------------------------------------------------------------------
// timeout.auth

#[test]
fn a_connection_that_does_not_authenticate_in_time_is_closed() {
    let dir = common::tempdir();
    let opts = with_token().section("timeout:\n  auth: 300");
    let s = Server::start_with(dir.path(), &opts);
    let t0 = Instant::now();
    let mut idle = s.raw();
    let mut authed = s.raw();
    authed.send(format!("AUTH {TOKEN}\r\n").as_bytes());
    assert_eq!(authed.line(), "OK");

    // Busy is no excuse: PINGs (allowed before AUTH) do not keep it open.
    let mut busy = s.raw();
    let mut last = String::new();
    for _ in 0..100_000 {
        busy.send(b"PING\r\n");
        last = busy.line();
        if last != "PONG" || t0.elapsed() > WAIT {
            break;
        }
    }
    assert_eq!(last, "ERR NOAUTH authentication timeout");
    assert!(busy.closed());

    assert_eq!(idle.line(), "ERR NOAUTH authentication timeout");
    assert!(t0.elapsed() >= Duration::from_millis(300), "closed early");
    assert!(idle.closed());

    // The authenticated one is not closed (checked past its deadline).
    // At least a moment: a zero read timeout is not allowed.
    let past = Duration::from_millis(600)
        .saturating_sub(t0.elapsed())
        .max(Duration::from_millis(50));
    assert!(
        authed.silent_for(past),
        "the authenticated connection got a line"
    );
    authed.send(b"PING\r\n");
    assert_eq!(authed.line(), "PONG");

    // Without a token there is nothing to wait for.
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &Opts::new().section("timeout:\n  auth: 50"));
    let mut r = s.raw();
    assert!(r.silent_for(Duration::from_millis(300)));
    r.send(b"PING\r\n");
    assert_eq!(r.line(), "PONG");
}

// ---------------------------------------------------------------------------
// limits.maxBatchBytes

#[test]
fn an_mpub_over_max_batch_bytes_is_toobig_before_its_payload_arrives() {
    let dir = common::tempdir();
    let opts = Opts::new()
        .store("fsync: never")
        .section("limits:\n  maxBatchBytes: 1000");
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("create");

    // Exactly the limit is fine.
    let mut r = s.raw();
    let p500 = "a".repeat(500);
    r.send(format!("MPUB t 2\r\n500\r\n{p500}\r\n500 k=v\r\n{p500}\r\n").as_bytes());
    let ok = r.line();
    assert!(ok.starts_with("OK "), "{ok}");

    // One byte over, known from the third message's line: the ERR comes
    // without its payload, and the connection is closed (framing is lost).
    let mut r = s.raw();
    r.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let p400 = "b".repeat(400);
    r.send(format!("MPUB t 3\r\n400\r\n{p400}\r\n400\r\n{p400}\r\n201\r\n").as_bytes());
    let l = expect_err(&mut r, "TOOBIG", "an MPUB of 1001 bytes");
    assert!(l.contains("1000"), "{l}");
    assert!(r.closed(), "TOOBIG closes the connection");

    // Nothing of it was written; a PUB is bounded by maxPayload alone.
    assert_eq!(c.info("t").expect("info").messages, 2);
    c.publish("t", &[b'c'; 2000]).expect("a 2000-byte PUB");
}
