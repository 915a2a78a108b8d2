//! Error handling over the wire (PROTOCOL.md, "Replies"): every malformed
//! input gets its `ERR <CODE>`, writes nothing, and other clients keep being
//! served. Framing errors close the connection right after the `ERR`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{Opts, Raw, Server, WAIT, stat};
use smss::client::{Client, SubEvent, SubOptions};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Asserts that `line` is `ERR <code>` or `ERR <code> <text…>`.
fn assert_err(line: &str, code: &str, what: &str) {
    let want = format!("ERR {code}");
    assert!(
        line == want || line.starts_with(&format!("{want} ")),
        "{what}: expected {want}, got {line:?}"
    );
}

fn expect_err(raw: &mut Raw, code: &str, what: &str) {
    let line = raw.line();
    assert_err(&line, code, what);
}

fn expect_line(raw: &mut Raw, want: &str, what: &str) {
    let line = raw.line();
    assert_eq!(line, want, "{what}");
}

/// Reads a `STATS` reply from a raw connection.
fn raw_stats(raw: &mut Raw) -> Vec<(String, String)> {
    let head = raw.line();
    let n: usize = head
        .strip_prefix("STATS ")
        .unwrap_or_else(|| panic!("expected STATS <n>, got {head:?}"))
        .parse()
        .expect("STATS count");
    (0..n)
        .map(|_| {
            let l = raw.line();
            let mut parts = l.splitn(3, ' ');
            assert_eq!(parts.next(), Some("STAT"), "{l:?}");
            let k = parts.next().expect("stat name").to_string();
            let v = parts.next().expect("stat value").to_string();
            (k, v)
        })
        .collect()
}

/// What a test asserts "nothing was written" against.
#[derive(Debug, PartialEq, Eq)]
struct Written {
    last_event_id: u64,
    messages_published: u64,
    topics: Vec<(String, u64)>,
}

fn written(c: &mut Client) -> Written {
    let topics = c
        .list()
        .expect("LIST")
        .into_iter()
        .map(|t| (t.name, t.messages))
        .collect();
    Written {
        last_event_id: stat(c, "last_event_id"),
        messages_published: stat(c, "messages_published"),
        topics,
    }
}

/// Polls `STATS` (one round trip per poll, bounded by [`WAIT`]) until `cond`
/// holds for the named stat; returns whether it did.
fn wait_stat(c: &mut Client, name: &str, cond: impl Fn(u64) -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond(stat(c, name)) {
            return true;
        }
    }
    false
}

/// A tiny deterministic PRNG (xorshift64*), so garbage is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn headers(n: usize) -> String {
    (0..n)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fast() -> Opts {
    Opts::new().store("fsync: never")
}

// ---------------------------------------------------------------------------
// 1 + 2: a table of bad requests on one connection; nothing written
// ---------------------------------------------------------------------------

#[test]
fn bad_requests_get_their_err_keep_the_connection_and_write_nothing() {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &fast());
    let long_ok = "a".repeat(128);
    let too_long = "a".repeat(129);

    // Written on purpose.
    let mut c = server.client();
    c.create("t", 0).expect("CREATE t");
    c.create(&long_ok, 0).expect("CREATE of a 128-byte name");
    c.publish("t", b"first").expect("PUB t");
    let before = written(&mut c);
    assert_eq!(before.topics, vec![(long_ok.clone(), 0), ("t".into(), 1)]);

    // A payload that would give a distinctive reply if it were parsed as
    // commands instead of being consumed as payload.
    const P: &str = "6\r\nLIST\r\n\r\n";
    let cases: Vec<(String, &str)> = vec![
        // Empty lines, both line ends.
        ("\r\n".into(), "BADREQ"),
        ("\n".into(), "BADREQ"),
        // Unknown command (no prefix matching either).
        ("FOO\r\n".into(), "UNKNOWN"),
        ("PIN\r\n".into(), "UNKNOWN"),
        ("PINGS\r\n".into(), "UNKNOWN"),
        // Wrong argument counts.
        ("PING x\r\n".into(), "BADREQ"),
        ("CREATE\r\n".into(), "BADREQ"),
        ("CREATE a b c\r\n".into(), "BADREQ"),
        ("DELETE\r\n".into(), "BADREQ"),
        ("DELETE t x\r\n".into(), "BADREQ"),
        ("INFO\r\n".into(), "BADREQ"),
        ("INFO a b\r\n".into(), "BADREQ"),
        ("LIST x\r\n".into(), "BADREQ"),
        ("STATS x\r\n".into(), "BADREQ"),
        ("SUB t\r\n".into(), "BADREQ"),
        ("SUB\r\n".into(), "BADREQ"),
        ("AUTH\r\n".into(), "BADREQ"),
        ("QUIT x\r\n".into(), "BADREQ"),
        ("MPUB\r\n".into(), "BADREQ"),
        ("MPUB t\r\n".into(), "BADREQ"),
        ("PUB\r\n".into(), "BADREQ"),
        ("PUB t\r\n".into(), "BADREQ"),
        // Line shape.
        ("PING \r\n".into(), "BADREQ"),
        (" PING\r\n".into(), "BADREQ"),
        ("CREATE x \r\n".into(), "BADREQ"),
        ("CREATE\x01 x\r\n".into(), "BADREQ"),
        // Bad topic names.
        (format!("CREATE {too_long}\r\n"), "BADREQ"),
        (format!("INFO {too_long}\r\n"), "BADREQ"),
        ("CREATE a/b\r\n".into(), "BADREQ"),
        ("CREATE a  b\r\n".into(), "BADREQ"),
        ("CREATE a:b\r\n".into(), "BADREQ"),
        ("CREATE \u{e9}\r\n".into(), "BADREQ"),
        // CREATE lifetimes.
        ("CREATE x 500\r\n".into(), "BADREQ"),
        ("CREATE x 999\r\n".into(), "BADREQ"),
        ("CREATE x abc\r\n".into(), "BADREQ"),
        ("CREATE x -1000\r\n".into(), "BADREQ"),
        ("CREATE x 1e3\r\n".into(), "BADREQ"),
        // PUB errors after the payload arrived: the payload is consumed.
        (format!("PUB nosuch {P}"), "NOTOPIC"),
        (format!("PUB a/b {P}"), "BADREQ"),
        (
            format!("PUB t {}", P.replacen("\r\n", " k!=v\r\n", 1)),
            "BADREQ",
        ),
        (
            format!("PUB t {}", P.replacen("\r\n", " nokey\r\n", 1)),
            "BADREQ",
        ),
        (
            format!("PUB t {}", P.replacen("\r\n", " =v\r\n", 1)),
            "BADREQ",
        ),
        (
            format!(
                "PUB t {}",
                P.replacen("\r\n", &format!(" {}\r\n", headers(33)), 1)
            ),
            "BADREQ",
        ),
        (
            format!(
                "PUB t {}",
                P.replacen("\r\n", &format!(" k={}\r\n", "v".repeat(1025)), 1)
            ),
            "BADREQ",
        ),
        (
            format!(
                "PUB t {}",
                P.replacen("\r\n", &format!(" {}=v\r\n", "k".repeat(65)), 1)
            ),
            "BADREQ",
        ),
        (
            format!("PUB t {}", P.replacen("\r\n", " k=\x01\r\n", 1)),
            "BADREQ",
        ),
        (format!("MPUB nosuch 2\r\n1\r\na\r\n{P}"), "NOTOPIC"),
        (format!("MPUB a/b 2\r\n1\r\na\r\n{P}"), "BADREQ"),
        // Existence.
        ("CREATE t\r\n".into(), "EXISTS"),
        ("create t 5000\r\n".into(), "EXISTS"),
        (format!("CREATE {long_ok}\r\n"), "EXISTS"),
        ("DELETE nosuch\r\n".into(), "NOTOPIC"),
        ("INFO nosuch\r\n".into(), "NOTOPIC"),
        ("SUB nosuch 0\r\n".into(), "NOTOPIC"),
        // SUB options.
        ("SUB t x\r\n".into(), "BADREQ"),
        ("SUB t 0 batch=0\r\n".into(), "BADREQ"),
        ("SUB t 0 batch=1001\r\n".into(), "BADREQ"),
        ("SUB t 0 batch=x\r\n".into(), "BADREQ"),
        ("SUB t 0 ack=0\r\n".into(), "BADREQ"),
        ("SUB t 0 color=red\r\n".into(), "BADREQ"),
        ("SUB t 0 batch\r\n".into(), "BADREQ"),
        ("SUB t 0 batch=1 batch=2\r\n".into(), "BADREQ"),
        ("SUB t 0 group=a/b\r\n".into(), "BADREQ"),
        ("SUB t -\r\n".into(), "BADREQ"),
        ("SUB t - batch=5\r\n".into(), "BADREQ"),
        // ACK / STOP outside a subscription.
        ("ACK\r\n".into(), "BADREQ"),
        ("STOP\r\n".into(), "BADREQ"),
        ("ack\n".into(), "BADREQ"),
    ];

    let mut raw = server.raw();
    for (req, code) in &cases {
        let what = format!("{:?}", req.escape_debug().to_string());
        // The PING is pipelined behind the bad request: its PONG must come
        // next, so the request consumed exactly its own bytes.
        raw.send(req.as_bytes());
        raw.send(b"PING\r\n");
        expect_err(&mut raw, code, &what);
        expect_line(&mut raw, "PONG", &format!("PING after {what}"));
    }

    // Case-insensitive commands, bare `\n` line ends.
    raw.send(b"ping\r\nPing\nPING\n");
    for _ in 0..3 {
        expect_line(&mut raw, "PONG", "lower/mixed case PING, bare LF");
    }
    raw.send(b"info t\n");
    let l = raw.line();
    assert!(l.starts_with("TOPIC t "), "info t: {l:?}");
    raw.send(b"lIsT\n");
    expect_line(&mut raw, "TOPICS 2", "lIsT");
    let first = raw.line();
    assert!(first.starts_with(&format!("TOPIC {long_ok} ")), "{first:?}");
    let second = raw.line();
    assert!(second.starts_with("TOPIC t "), "{second:?}");
    // Several bad requests pipelined in one write: one reply each, in order.
    raw.send(b"FOO\r\n\r\nCREATE t\r\nPUB nosuch 3\r\nabc\r\nINFO nosuch\nPING\r\n");
    for code in ["UNKNOWN", "BADREQ", "EXISTS", "NOTOPIC", "NOTOPIC"] {
        expect_err(&mut raw, code, "pipelined bad requests");
    }
    expect_line(&mut raw, "PONG", "after pipelined bad requests");
    assert!(
        raw.silent_for(Duration::from_millis(100)),
        "no extra reply after the pipelined requests"
    );

    // 2: nothing was written.
    let after = written(&mut c);
    assert_eq!(after, before, "the refused requests changed nothing");
    assert_eq!(c.info("t").expect("INFO t").messages, 1);
}

// ---------------------------------------------------------------------------
// 3: framing lost → ERR then close
// ---------------------------------------------------------------------------

#[test]
fn framing_errors_close_the_connection_after_the_err_and_write_nothing() {
    let dir = common::tempdir();
    let opts = fast().section("limits:\n  maxPayload: 1000");
    let server = Server::start_with(dir.path(), &opts);
    let mut c = server.client();
    c.create("t", 0).expect("CREATE t");
    c.publish("t", b"x").expect("PUB t");
    let before = written(&mut c);

    // The longest legal line (4096 bytes with its CRLF) is accepted; AUTH with
    // any token is OK when no token is configured.
    let mut raw = server.raw();
    let mut line = b"AUTH ".to_vec();
    line.resize(4094, b'z');
    line.extend_from_slice(b"\r\n");
    assert_eq!(line.len(), 4096);
    raw.send(&line);
    raw.send(b"PING\r\n");
    expect_line(&mut raw, "OK", "4096-byte line");
    expect_line(&mut raw, "PONG", "after a 4096-byte line");

    let mut over = b"AUTH ".to_vec();
    over.resize(4095, b'z');
    over.extend_from_slice(b"\r\n");
    assert_eq!(over.len(), 4097);
    let mut no_newline = b"PING ".to_vec();
    no_newline.resize(5000, b'y');

    // Headers are on the line: five 1000-byte values are over 4096 bytes.
    let mut fat_headers = b"PUB t 1".to_vec();
    for i in 0..5 {
        fat_headers.extend_from_slice(format!(" k{i}=").as_bytes());
        fat_headers.resize(fat_headers.len() + 1000, b'v');
    }
    fat_headers.extend_from_slice(b"\r\nx\r\n");
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (over, "BADREQ", "line of 4097 bytes"),
        (fat_headers, "BADREQ", "headers past the line limit"),
        (no_newline, "BADREQ", "5000 bytes without a line end"),
        (b"PUB t abc\r\n".to_vec(), "BADREQ", "unparsable byte count"),
        (b"PUB t -1\r\n".to_vec(), "BADREQ", "negative byte count"),
        (
            b"PUB t  3\r\nabc\r\n".to_vec(),
            "BADREQ",
            "byte count moved by a double space",
        ),
        (
            b"PUB t 3\r\nabcXY\r\n".to_vec(),
            "BADREQ",
            "payload not followed by CRLF",
        ),
        (
            b"PUB t 3\r\nabcd\r\n".to_vec(),
            "BADREQ",
            "payload longer than declared",
        ),
        (b"PUB t 1001\r\n".to_vec(), "TOOBIG", "PUB over maxPayload"),
        (
            b"PUB t 99999999999999999999999\r\n".to_vec(),
            "BADREQ",
            "byte count overflowing u64",
        ),
        (
            b"MPUB t 1001\r\n".to_vec(),
            "BADREQ",
            "MPUB count over maxBatch",
        ),
        (b"MPUB t 0\r\n".to_vec(), "BADREQ", "MPUB count 0"),
        (
            b"MPUB t x\r\n".to_vec(),
            "BADREQ",
            "MPUB count not a number",
        ),
        (
            b"MPUB t 2\r\n1\r\na\r\n1001\r\n".to_vec(),
            "TOOBIG",
            "MPUB message over maxPayload",
        ),
        (
            b"MPUB t 2\r\n1\r\na\r\n1\r\nbXY".to_vec(),
            "BADREQ",
            "MPUB payload not followed by CRLF",
        ),
        // A length one too long swallows the \r; one too short leaves a
        // byte; a bare LF after a payload is no CRLF either.
        (
            b"PUB t 4\r\nabc\r\n".to_vec(),
            "BADREQ",
            "PUB length one too long",
        ),
        (
            b"PUB t 3\r\nabc\n".to_vec(),
            "BADREQ",
            "PUB payload then LF",
        ),
        (
            b"DPUB t 50 4\r\nabc\r\n".to_vec(),
            "BADREQ",
            "DPUB length one too long",
        ),
        (
            b"DPUB t 50 3\r\nabc\n".to_vec(),
            "BADREQ",
            "DPUB payload then LF",
        ),
        (
            b"MPUB t 2\r\n1\r\na\r\n2\r\nb\r\n".to_vec(),
            "BADREQ",
            "MPUB length one too long",
        ),
        (
            b"MPUB t 1\r\n1\r\na\n".to_vec(),
            "BADREQ",
            "MPUB payload then LF",
        ),
    ];
    for (req, code, what) in &cases {
        let mut raw = server.raw();
        raw.send(req);
        expect_err(&mut raw, code, what);
        assert!(
            raw.at_eof(),
            "{what}: the connection should close after the ERR"
        );
        // A new connection works.
        let mut fresh = server.raw();
        fresh.send(b"PING\r\n");
        expect_line(&mut fresh, "PONG", &format!("new connection after {what}"));
    }

    // A fatal error mid-pipeline: earlier requests are answered, nothing after.
    let mut raw = server.raw();
    raw.send(b"PING\r\nPUB t zz\r\nPING\r\n");
    expect_line(&mut raw, "PONG", "PING before the framing error");
    expect_err(&mut raw, "BADREQ", "framing error mid-pipeline");
    assert!(raw.at_eof(), "nothing is answered after a framing error");

    assert_eq!(written(&mut c), before, "framing errors wrote nothing");
}

// ---------------------------------------------------------------------------
// 4: a payload of exactly maxPayload is accepted
// ---------------------------------------------------------------------------

#[test]
fn payload_of_exactly_max_payload_is_accepted() {
    let dir = common::tempdir();
    let opts = fast().section("limits:\n  maxPayload: 1000");
    let server = Server::start_with(dir.path(), &opts);
    let mut c = server.client();
    c.create("t", 0).expect("CREATE t");

    let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let mut raw = server.raw();
    raw.send(b"PUB t 1000\r\n");
    raw.send(&payload);
    raw.send(b"\r\nPING\r\n");
    let l = raw.line();
    let id: u64 = l
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("PUB of 1000 bytes: {l:?}"))
        .parse()
        .expect("event id");
    expect_line(&mut raw, "PONG", "after a maximal PUB");

    // And in an MPUB.
    raw.send(b"MPUB t 2\r\n1000\r\n");
    raw.send(&payload);
    raw.send(b"\r\n0\r\n\r\n");
    let l = raw.line();
    assert_eq!(
        l,
        format!("OK {} {}", id + 1, id + 2),
        "MPUB with a maximal message"
    );

    let info = c.info("t").expect("INFO");
    assert_eq!(info.messages, 3);
    c.subscribe("t", "0", &SubOptions::default()).expect("SUB");
    match c.next_event().expect("batch") {
        SubEvent::Batch(msgs) => {
            assert_eq!(msgs.len(), 3);
            assert_eq!(msgs[0].event_id, id);
            assert_eq!(msgs[0].payload, payload);
            assert_eq!(msgs[1].payload, payload);
            assert!(msgs[2].payload.is_empty());
        }
        other => panic!("expected a batch, got {other:?}"),
    }
    c.stop().expect("STOP");
}

// ---------------------------------------------------------------------------
// 5: MPUB with one bad message writes none
// ---------------------------------------------------------------------------

#[test]
fn mpub_with_one_bad_message_writes_none_and_keeps_the_connection() {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &fast());
    let mut c = server.client();
    c.create("t", 0).expect("CREATE t");
    c.publish("t", b"before").expect("PUB");
    let before = written(&mut c);

    let mut raw = server.raw();
    for bad in [
        "k!=v",
        "nokey",
        &headers(33),
        &format!("{}=v", "k".repeat(65)),
    ] {
        let req =
            format!("MPUB t 3\r\n1\r\na\r\n6 {bad}\r\nLIST\r\n\r\n5 k=v\r\nSTATS\r\nPING\r\n");
        raw.send(req.as_bytes());
        expect_err(&mut raw, "BADREQ", &format!("MPUB with bad header {bad:?}"));
        expect_line(&mut raw, "PONG", "PING after the bad MPUB");
    }
    assert_eq!(written(&mut c), before, "a bad MPUB wrote nothing");
    assert_eq!(c.info("t").expect("INFO").messages, 1);

    // The connection still publishes, with consecutive ids.
    raw.send(b"MPUB t 3\r\n1\r\na\r\n1 k=v\r\nb\r\n0\r\n\r\n");
    let l = raw.line();
    let ids: Vec<u64> = l
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("valid MPUB: {l:?}"))
        .split(' ')
        .map(|s| s.parse().expect("id"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], ids[0] + 2, "consecutive ids");
    assert_eq!(
        ids[0],
        before.last_event_id + 1,
        "no id burnt by the bad MPUBs"
    );
    assert_eq!(c.info("t").expect("INFO").messages, 4);
}

// ---------------------------------------------------------------------------
// 6: other clients keep being served
// ---------------------------------------------------------------------------

#[test]
fn a_half_sent_request_does_not_block_other_clients() {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &fast());
    let mut c = server.client();
    c.create("t", 0).expect("CREATE t");

    let mut slow = server.raw();
    let payload = vec![b'p'; 1000];
    slow.send(b"PUB t 1000\r\n");
    slow.send(&payload[..10]);

    // Another connection is served normally meanwhile.
    let mut other = server.client();
    other
        .create("u", 0)
        .expect("CREATE u while another request is half sent");
    let id = other.publish("u", b"hello").expect("PUB u");
    other
        .subscribe("u", "0", &SubOptions::default())
        .expect("SUB u");
    match other.next_event().expect("batch") {
        SubEvent::Batch(msgs) => {
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].event_id, id);
            assert_eq!(msgs[0].payload, b"hello");
        }
        other => panic!("expected a batch, got {other:?}"),
    }
    other.stop().expect("STOP");
    assert_eq!(other.info("t").expect("INFO t").messages, 0);

    // The half request has had no answer, and completes normally.
    assert!(
        slow.silent_for(Duration::from_millis(100)),
        "no reply to a half-sent request"
    );
    slow.send(&payload[10..]);
    slow.send(b"\r\n");
    let l = slow.line();
    assert_eq!(l, format!("OK {}", id + 1), "the completed PUB");
    assert_eq!(c.info("t").expect("INFO t").messages, 1);
}

#[test]
fn a_subscriber_that_never_reads_does_not_stall_others_and_is_closed() {
    let dir = common::tempdir();
    let opts = fast().section("timeout:\n  net:\n    write: 200");
    let server = Server::start_with(dir.path(), &opts);
    let mut c = server.client();
    c.create("big", 0).expect("CREATE big");
    // 8 MB in 128 messages of 64 KB, far more than the socket buffers hold.
    let msg = vec![b'm'; 64 << 10];
    for _ in 0..8 {
        let batch: Vec<&[u8]> = (0..16).map(|_| msg.as_slice()).collect();
        c.mpublish("big", &batch).expect("MPUB 1 MB");
    }
    assert_eq!(c.info("big").expect("INFO").messages, 128);

    // A subscriber that ACKs blindly (so the server wants to send everything)
    // and never reads.
    let mut stuck = server.raw();
    let mut req = b"SUB big 0 batch=1000 ack=60000\r\n".to_vec();
    for _ in 0..16 {
        req.extend_from_slice(b"ACK\r\n");
    }
    stuck.send(&req);
    assert_eq!(stuck.line(), "OK", "SUB accepted");

    // Others are served while it is stuck.
    let started = Instant::now();
    let mut other = server.client();
    other.create("small", 0).expect("CREATE small");
    let id = other.publish("small", b"hi").expect("PUB small");
    other.publish("big", b"more").expect("PUB big");
    assert_eq!(other.info("big").expect("INFO big").messages, 129);
    other
        .subscribe("small", "0", &SubOptions::default())
        .expect("SUB small");
    match other.next_event().expect("batch") {
        SubEvent::Batch(msgs) => {
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].event_id, id);
        }
        other => panic!("expected a batch, got {other:?}"),
    }
    other.stop().expect("STOP");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "other clients took {:?}",
        started.elapsed()
    );

    // The stuck connection is closed by the write timeout (long before its
    // 60 s ack timeout): only `c` and `other` remain, no subscriber.
    assert!(
        wait_stat(&mut other, "subscribers", |n| n == 0),
        "the stuck subscriber was not closed"
    );
    assert!(
        wait_stat(&mut other, "connections", |n| n == 2),
        "the stuck connection was not closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the stuck connection took {:?} to close",
        started.elapsed()
    );
    c.ping().expect("PING after the stuck subscriber");
    drop(stuck);
}

// ---------------------------------------------------------------------------
// 7: connection limit
// ---------------------------------------------------------------------------

#[test]
fn connection_limit_refuses_with_busy_and_frees_the_slot_on_close() {
    let dir = common::tempdir();
    let opts = fast().section("limits:\n  maxConnections: 3");
    let server = Server::start_with(dir.path(), &opts);

    let mut conns: Vec<Raw> = (0..3)
        .map(|_| {
            let mut r = server.raw();
            r.send(b"PING\r\n");
            expect_line(&mut r, "PONG", "one of the 3 allowed connections");
            r
        })
        .collect();

    // The 4th: ERR BUSY, then EOF. (It sends nothing, so the close is clean.)
    let mut fourth = server.raw();
    expect_err(&mut fourth, "BUSY", "4th connection");
    assert!(fourth.at_eof(), "the refused connection is closed");

    // The refused connection did not take a slot: still 3.
    conns[1].send(b"STATS\r\n");
    let stats = raw_stats(&mut conns[1]);
    let conn_count = stats
        .iter()
        .find(|(k, _)| k == "connections")
        .map(|(_, v)| v.clone());
    assert_eq!(conn_count.as_deref(), Some("3"), "{stats:?}");

    // Close one; the server notices asynchronously, so retry a bounded number
    // of times. Each attempt is either served or refused with BUSY.
    let mut first = conns.remove(0);
    first.send(b"QUIT\r\n");
    expect_line(&mut first, "OK", "QUIT");
    assert!(first.at_eof(), "QUIT closes the connection");

    let mut served = None;
    for attempt in 1..=200 {
        let mut r = server.raw();
        r.send(b"PING\r\n");
        let l = r.line();
        if l == "PONG" {
            served = Some((attempt, r));
            break;
        }
        assert_err(&l, "BUSY", "a connection attempt after the QUIT");
    }
    let (attempts, mut new) = served.expect("a slot frees up after QUIT");
    new.send(b"PING\r\n");
    expect_line(&mut new, "PONG", "the new connection keeps working");

    // Full again: the next one is refused, the others are still served.
    let mut extra = server.raw();
    expect_err(
        &mut extra,
        "BUSY",
        "connection over the limit after the retry",
    );
    assert!(extra.at_eof());
    for r in &mut conns {
        r.send(b"PING\r\n");
        expect_line(r, "PONG", "old connections still served");
    }
    eprintln!("new connection served after {attempts} attempt(s)");
}

// ---------------------------------------------------------------------------
// 8: auth
// ---------------------------------------------------------------------------

#[test]
fn auth_token_is_required_for_everything_but_ping_auth_and_quit() {
    let dir = common::tempdir();
    let opts = fast().section("auth:\n  token: s3cret");
    let server = Server::start_with(dir.path(), &opts);

    let mut raw = server.raw();
    raw.send(b"PING\r\n");
    expect_line(&mut raw, "PONG", "PING without AUTH");
    let refused: [&[u8]; 11] = [
        b"CREATE x\r\n",
        b"LIST\r\n",
        b"STATS\r\n",
        b"SUB x 0\r\n",
        b"INFO x\r\n",
        b"DELETE x\r\n",
        b"PUB x 6\r\nLIST\r\n\r\n",
        b"MPUB x 2\r\n1\r\na\r\n6\r\nLIST\r\n\r\n",
        b"AUTH wrong\r\n",
        b"AUTH s3cre\r\n",
        b"LIST\r\n",
    ];
    for req in refused {
        let what = String::from_utf8_lossy(req).escape_debug().to_string();
        raw.send(req);
        raw.send(b"PING\r\n");
        expect_err(&mut raw, "NOAUTH", &what);
        expect_line(&mut raw, "PONG", &format!("PING after {what}"));
    }

    // Another connection authenticates, then works; the refusals wrote nothing.
    let mut ok = server.raw();
    ok.send(b"AUTH s3cret\r\n");
    expect_line(&mut ok, "OK", "AUTH with the right token");
    ok.send(b"STATS\r\n");
    let stats = raw_stats(&mut ok);
    let last = stats.iter().find(|(k, _)| k == "last_event_id");
    assert_eq!(
        last.map(|(_, v)| v.as_str()),
        Some("0"),
        "refused commands wrote nothing: {stats:?}"
    );
    ok.send(b"LIST\r\n");
    expect_line(&mut ok, "TOPICS 0", "no topic was created");
    ok.send(b"CREATE x\r\n");
    expect_line(&mut ok, "OK 1", "CREATE after AUTH");
    ok.send(b"PUB x 2\r\nhi\r\nINFO x\r\n");
    expect_line(&mut ok, "OK 2", "PUB after AUTH");
    let l = ok.line();
    assert!(l.starts_with("TOPIC x "), "INFO after AUTH: {l:?}");

    // Authentication is per connection: the first one is still refused...
    raw.send(b"INFO x\r\n");
    expect_err(
        &mut raw,
        "NOAUTH",
        "INFO on a connection that never authenticated",
    );
    // ...until it authenticates itself.
    raw.send(b"AUTH s3cret\r\nINFO x\r\n");
    expect_line(&mut raw, "OK", "AUTH on the first connection");
    let l = raw.line();
    assert!(l.starts_with("TOPIC x 1"), "INFO after AUTH: {l:?}");

    // QUIT works without AUTH.
    let mut q = server.raw();
    q.send(b"QUIT\r\n");
    expect_line(&mut q, "OK", "QUIT without AUTH");
    assert!(q.at_eof(), "QUIT closes the connection");

    // The client library's view.
    let mut c = server.client();
    match c.list() {
        Err(e) => assert_eq!(e.code(), Some("NOAUTH"), "{e}"),
        Ok(l) => panic!("LIST without AUTH answered {l:?}"),
    }
    c.auth("s3cret").expect("AUTH");
    assert_eq!(stat(&mut c, "last_event_id"), 2);
    assert_eq!(c.info("x").expect("INFO").messages, 1);
}

// ---------------------------------------------------------------------------
// 9: random garbage
// ---------------------------------------------------------------------------

/// How many `ERR` replies the server owes for `input` (every line starts with
/// 0x01, so every complete line is one BADREQ), and whether the framing is lost
/// (a line over 4096 bytes).
fn expected_errs(input: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = input;
    loop {
        let window = &rest[..rest.len().min(4096)];
        match window.iter().position(|&b| b == b'\n') {
            Some(end) => {
                n += 1;
                rest = &rest[end + 1..];
            }
            None if rest.len() >= 4096 => return n + 1,
            None => return n,
        }
    }
}

fn garbage(rng: &mut Rng, round: usize) -> Vec<u8> {
    let len = if round % 50 == 49 {
        4096 + rng.below(3000) as usize
    } else if round % 25 == 24 {
        4000 + rng.below(3000) as usize
    } else {
        1 + rng.below(400) as usize
    };
    let mut g = vec![0x01u8];
    while g.len() < len {
        // Every 50th input has no line end at all: a line over 4096 bytes.
        let b = match rng.below(16) {
            0 | 1 => b'\n',
            2 => b'\r',
            3 | 4 => b' ',
            _ => rng.next() as u8,
        };
        let b = if b == b'\n' && round % 50 == 49 {
            b'x'
        } else {
            b
        };
        g.push(b);
        if b == b'\n' {
            // Every line starts with a byte that no command starts with.
            g.push(0x01);
        }
    }
    g
}

#[test]
fn random_garbage_writes_nothing_and_the_server_survives() {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &fast());
    let mut c = server.client();
    c.create("t", 0).expect("CREATE");
    c.publish("t", b"x").expect("PUB");
    let before = written(&mut c);

    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut total_errs = 0;
    let mut fatal = 0;
    for round in 0..200 {
        let input = garbage(&mut rng, round);
        let mut s = TcpStream::connect(&server.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.set_write_timeout(Some(WAIT)).expect("timeout");
        s.write_all(&input).expect("send garbage");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("round {round}: reading the replies: {e}"));
        let text = String::from_utf8(out).expect("replies are ASCII");
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert!(
            text.is_empty() || text.ends_with("\r\n"),
            "round {round}: {text:?}"
        );
        for l in &lines {
            assert_err(l, "BADREQ", &format!("round {round}"));
        }
        assert_eq!(
            lines.len(),
            expected_errs(&input),
            "round {round}: one ERR per garbage line"
        );
        total_errs += lines.len();
        if round % 50 == 49 {
            fatal += 1;
            assert_eq!(
                lines.len(),
                1,
                "round {round}: one ERR for a line over 4096 bytes"
            );
        }
    }
    assert!(total_errs > 200, "the garbage exercised the error path");
    assert!(fatal > 0, "some garbage lost the framing");

    let mut raw = server.raw();
    raw.send(b"PING\r\n");
    expect_line(&mut raw, "PONG", "PING after the garbage");
    assert_eq!(written(&mut c), before, "garbage wrote nothing");
}

// ---------------------------------------------------------------------------
// Too many arguments say so, before any argument is judged
// ---------------------------------------------------------------------------

#[test]
fn too_many_arguments_are_named_as_such() {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &fast());
    let mut c = server.client();
    c.create("t", 0).expect("CREATE t");
    let before = written(&mut c);
    let mut raw = server.raw();
    for (line, verb) in [
        ("CREATE a b c", "CREATE"),
        ("CREATE bad/name 1 2", "CREATE"),
        ("DELETE t x", "DELETE"),
        ("INFO t x", "INFO"),
        ("PING x", "PING"),
        ("LIST x", "LIST"),
        ("STATS x", "STATS"),
        ("AUTH a b", "AUTH"),
        ("SUB t 0 batch=1 ack=9 group=g maxDeliver=1 dlq=d x", "SUB"),
        ("GROUPS t x", "GROUPS"),
        ("GROUPDEL t g x", "GROUPDEL"),
        (
            "REPL 0 history=0 epoch=0 empty=0 node=1 format=3 early=1 x",
            "REPL",
        ),
        ("PROMOTE x", "PROMOTE"),
    ] {
        raw.send(format!("{line}\r\n").as_bytes());
        let got = raw.line();
        assert!(
            got.starts_with(&format!("ERR BADREQ too many arguments for {verb} ")),
            "{line}: {got}"
        );
        assert!(got.contains(&format!("usage: {verb}")), "{line}: {got}");
    }
    raw.send(b"MPUB t 1 x\r\n1\r\na\r\n");
    let got = raw.line();
    assert!(
        got.starts_with("ERR BADREQ too many arguments for MPUB "),
        "{got}"
    );
    // Still usable, and nothing was written.
    raw.send(b"PING\r\n");
    expect_line(&mut raw, "PONG", "PING after the arity errors");
    assert_eq!(written(&mut c), before, "arity errors wrote nothing");
}
