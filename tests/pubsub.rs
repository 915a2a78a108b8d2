//! Publish/subscribe integration tests against the real `smss` binary:
//! byte-exact delivery, headers, MPUB, SUB positions, batches and ACK,
//! live delivery, ALIVE, STOP, DELETE ending subscribers, ACK timeout,
//! pipelining, LIST/INFO/STATS, many subscribers, reads across segments.
//!
//! Nothing sleeps to synchronise: tests wait for replies, batches or EOF
//! (every read has the harness timeout). `Raw::silent_for` is used only to
//! check that the server does NOT send something.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Opts, Raw, Server};
use smss::client::{SubEvent, SubOptions};

/// How long "nothing is sent" is observed.
const QUIET: Duration = Duration::from_millis(300);

/// A running server and its data directory; the server is dropped (killed)
/// before the directory is removed.
struct Fix {
    server: Server,
    _dir: tempfile::TempDir,
}

fn start(opts: Opts) -> Fix {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &opts);
    Fix { server, _dir: dir }
}

/// A server that does not fsync (fast).
fn fast() -> Fix {
    start(Opts::new().store("fsync: never"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Asserts `ts` is a plausible "now" timestamp (within a minute).
fn assert_recent(ts: u64, what: &str) {
    let now = now_ms();
    assert!(
        ts + 60_000 >= now && ts <= now + 60_000,
        "{what}: timestamp {ts} is not within a minute of now ({now})"
    );
}

/// Sends one line (CRLF added) and returns the reply line.
fn cmd(r: &mut Raw, line: &str) -> String {
    r.send(format!("{line}\r\n").as_bytes());
    r.line()
}

/// Parses `OK <id>`.
fn ok_id(line: &str) -> u64 {
    let id = line
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("expected OK <id>, got {line:?}"));
    id.parse()
        .unwrap_or_else(|_| panic!("expected OK <id>, got {line:?}"))
}

fn create(r: &mut Raw, topic: &str) -> u64 {
    ok_id(&cmd(r, &format!("CREATE {topic}")))
}

/// The bytes of `PUB topic n [headers]` + payload + CRLF.
fn pub_frame(topic: &str, headers: &str, payload: &[u8]) -> Vec<u8> {
    let mut f = if headers.is_empty() {
        format!("PUB {topic} {}\r\n", payload.len()).into_bytes()
    } else {
        format!("PUB {topic} {} {headers}\r\n", payload.len()).into_bytes()
    };
    f.extend_from_slice(payload);
    f.extend_from_slice(b"\r\n");
    f
}

/// Publishes over a raw socket; returns the event id.
fn publish(r: &mut Raw, topic: &str, headers: &str, payload: &[u8]) -> u64 {
    r.send(&pub_frame(topic, headers, payload));
    ok_id(&r.line())
}

/// One delivered message as seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    id: u64,
    ts: u64,
    /// The header tokens after `<n>`, exactly as sent ("" when none).
    headers: String,
    payload: Vec<u8>,
}

/// Reads one `MSG` line and its payload, checking the line's exact shape.
fn read_msg(r: &mut Raw) -> Msg {
    let line = r.line();
    let toks: Vec<&str> = line.split(' ').collect();
    assert!(
        toks.len() >= 4 && toks[0] == "MSG",
        "expected MSG <id> <ts> <n> [headers], got {line:?}"
    );
    let id: u64 = toks[1].parse().expect("MSG event id");
    let ts: u64 = toks[2].parse().expect("MSG timestamp");
    let n: usize = toks[3].parse().expect("MSG length");
    let headers = toks[4..].join(" ");
    let want = if headers.is_empty() {
        format!("MSG {id} {ts} {n}")
    } else {
        format!("MSG {id} {ts} {n} {headers}")
    };
    assert_eq!(line, want, "MSG line has stray spaces");
    let payload = r.payload(n);
    Msg {
        id,
        ts,
        headers,
        payload,
    }
}

/// Reads a `BATCH <count>` line and its messages.
fn read_batch(r: &mut Raw) -> Vec<Msg> {
    let line = r.line();
    let n: usize = line
        .strip_prefix("BATCH ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected BATCH <count>, got {line:?}"));
    assert!(n >= 1, "a batch holds at least one message: {line:?}");
    (0..n).map(|_| read_msg(r)).collect()
}

/// Reads batches (ACKing each) until `want` messages have arrived.
/// Every batch must hold at most `batch` messages.
fn collect(r: &mut Raw, want: usize, batch: usize) -> Vec<Msg> {
    let mut out = Vec::new();
    // Each batch holds at least one message: at most `want` batches.
    for _ in 0..want {
        if out.len() >= want {
            break;
        }
        let b = read_batch(r);
        assert!(b.len() <= batch, "batch of {} > batch={batch}", b.len());
        out.extend(b);
        r.send(b"ACK\r\n");
    }
    assert_eq!(out.len(), want, "received a different number of messages");
    out
}

/// Subscribes on a raw socket and checks the `OK`.
fn sub(r: &mut Raw, args: &str) {
    assert_eq!(cmd(r, &format!("SUB {args}")), "OK", "SUB {args}");
}

/// Parses a `TOPIC` line: (name, created, expires, messages, first, last).
fn topic_line(line: &str) -> (String, u64, u64, u64, u64, u64) {
    let t: Vec<&str> = line.split(' ').collect();
    assert!(
        t.len() >= 7 && t[0] == "TOPIC",
        "expected a TOPIC line, got {line:?}"
    );
    let n = |i: usize| -> u64 {
        t[i].parse()
            .unwrap_or_else(|_| panic!("field {i} of {line:?}"))
    };
    (t[1].to_string(), n(2), n(3), n(4), n(5), n(6))
}

fn stat(stats: &[(String, String)], name: &str) -> String {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("STATS has no {name}: {stats:?}"))
}

fn stat_u64(stats: &[(String, String)], name: &str) -> u64 {
    let v = stat(stats, name);
    v.parse()
        .unwrap_or_else(|_| panic!("STAT {name} {v} is not a number"))
}

// ---------------------------------------------------------------------------

#[test]
fn round_trip_is_byte_exact() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "bytes");

    let all: Vec<u8> = (0..=255u8).collect();
    let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let payloads: Vec<Vec<u8>> = vec![
        b"line1\r\nline2\r\n".to_vec(),
        b"\0".to_vec(),
        b"a\0b\0\r\n\0".to_vec(),
        all,
        Vec::new(),
        b"\r\n".to_vec(),
        b"MSG 1 2 3\r\nBATCH 9\r\n".to_vec(),
        big,
        b"after-big".to_vec(),
    ];
    let before = now_ms();
    let mut ids = Vec::new();
    for pl in &payloads {
        ids.push(publish(&mut p, "bytes", "", pl));
    }
    let after = now_ms();
    for w in ids.windows(2) {
        assert!(w[0] < w[1], "PUB ids not increasing: {ids:?}");
    }

    let mut s = f.server.raw();
    sub(&mut s, "bytes 0 batch=100");
    let got = collect(&mut s, payloads.len(), 100);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.id, ids[i], "message {i}: event id differs from PUB's");
        assert_eq!(m.headers, "", "message {i}: no headers were sent");
        assert_eq!(
            m.payload.len(),
            payloads[i].len(),
            "message {i}: payload length"
        );
        assert!(
            m.payload == payloads[i],
            "message {i}: payload bytes differ"
        );
        assert!(
            m.ts + 60_000 >= before && m.ts <= after + 60_000,
            "message {i}: timestamp {} not within a minute of [{before}, {after}]",
            m.ts
        );
    }
    // Nothing beyond what was published.
    assert!(s.silent_for(QUIET), "extra data after the last message");
    assert_eq!(cmd(&mut s, "STOP"), "OK");
    assert_eq!(cmd(&mut s, "PING"), "PONG");
}

#[test]
fn headers_are_delivered_verbatim() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "hdr");
    let id1 = publish(&mut p, "hdr", "a=1 b=x=y c=", b"abc");

    let mut c = f.server.client();
    let id2 = c
        .publish_with_headers(
            "hdr",
            &[("a", "1"), ("b", "x=y"), ("c", "")],
            b"via\r\nclient",
        )
        .expect("publish with headers");
    let id3 = c
        .publish_with_headers(
            "hdr",
            &[("k.e-y_9", "~!\"#$%&'()*+,-./:;<>?@[\\]^_`{|}")],
            b"",
        )
        .expect("publish with punctuation header");
    assert!(id1 < id2 && id2 < id3);

    // Raw: the MSG line carries the header tokens exactly as published.
    let mut s = f.server.raw();
    sub(&mut s, "hdr 0");
    let got = collect(&mut s, 3, 32);
    assert_eq!(got[0].id, id1);
    assert_eq!(got[0].headers, "a=1 b=x=y c=");
    assert_eq!(got[0].payload, b"abc");
    assert_recent(got[0].ts, "raw MSG");
    assert_eq!(got[1].id, id2);
    assert_eq!(got[1].headers, "a=1 b=x=y c=");
    assert_eq!(got[1].payload, b"via\r\nclient");
    assert_eq!(got[2].id, id3);
    assert_eq!(got[2].headers, "k.e-y_9=~!\"#$%&'()*+,-./:;<>?@[\\]^_`{|}");
    assert_eq!(got[2].payload, b"");

    // Client: headers split at the first '='.
    let mut c2 = f.server.client();
    c2.subscribe(
        "hdr",
        "0",
        &SubOptions {
            batch: Some(1),
            ..SubOptions::default()
        },
    )
    .expect("subscribe");
    let ev = c2.next_event().expect("batch");
    let SubEvent::Batch(msgs) = ev else {
        panic!("expected a batch, got {ev:?}")
    };
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].event_id, id1);
    assert_eq!(
        msgs[0].headers,
        vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "x=y".to_string()),
            ("c".to_string(), String::new()),
        ]
    );
    assert_eq!(msgs[0].payload, b"abc");
    c2.stop().expect("stop");
    c2.ping().expect("ping after stop");
}

#[test]
fn mpub_ids_are_consecutive_and_delivered_in_order() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "m");
    p.send(b"MPUB m 3\r\n2 k=1\r\nab\r\n0\r\n\r\n5 k=3 z= u=a=b\r\nhe\r\nl\r\n");
    let line = p.line();
    let toks: Vec<&str> = line.split(' ').collect();
    assert!(
        toks.len() == 3 && toks[0] == "OK",
        "expected OK first last, got {line:?}"
    );
    let first: u64 = toks[1].parse().expect("first");
    let last: u64 = toks[2].parse().expect("last");
    assert_eq!(last - first + 1, 3, "MPUB of 3: {line:?}");

    let mut s = f.server.raw();
    sub(&mut s, "m 0");
    let got = collect(&mut s, 3, 32);
    assert_eq!(
        got.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![first, first + 1, first + 2]
    );
    assert_eq!(
        (got[0].headers.as_str(), &got[0].payload[..]),
        ("k=1", &b"ab"[..])
    );
    assert_eq!(
        (got[1].headers.as_str(), &got[1].payload[..]),
        ("", &b""[..])
    );
    assert_eq!(
        (got[2].headers.as_str(), &got[2].payload[..]),
        ("k=3 z= u=a=b", &b"he\r\nl"[..])
    );
    assert_eq!(cmd(&mut s, "STOP"), "OK");

    // Two connections MPUB to the same topic at once.
    create(&mut p, "mc");
    const THREADS: usize = 2;
    const ROUNDS: usize = 50;
    const EACH: usize = 10;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut c = f.server.client();
            thread::spawn(move || {
                let mut ranges = Vec::new();
                for r in 0..ROUNDS {
                    let payloads: Vec<Vec<u8>> = (0..EACH)
                        .map(|k| format!("t{t}-r{r}-k{k}").into_bytes())
                        .collect();
                    let refs: Vec<&[u8]> = payloads.iter().map(|v| v.as_slice()).collect();
                    let (a, b) = c.mpublish("mc", &refs).expect("mpublish");
                    ranges.push((a, b, t, r));
                }
                ranges
            })
        })
        .collect();
    let mut ranges: Vec<(u64, u64, usize, usize)> = Vec::new();
    for h in handles {
        ranges.extend(h.join().expect("publisher thread"));
    }
    for &(a, b, t, r) in &ranges {
        assert_eq!(
            b - a + 1,
            EACH as u64,
            "MPUB t{t} r{r}: OK {a} {b} is not {EACH} consecutive ids"
        );
    }
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(
            w[0].1 < w[1].0,
            "MPUB ranges overlap: {:?} {:?}",
            w[0],
            w[1]
        );
    }

    let total = THREADS * ROUNDS * EACH;
    sub(&mut s, "mc 0 batch=500");
    let got = collect(&mut s, total, 500);
    let mut i = 0;
    for &(a, _, t, r) in &ranges {
        for k in 0..EACH {
            let m = &got[i];
            assert_eq!(m.id, a + k as u64, "delivery {i}: id");
            assert_eq!(
                m.payload,
                format!("t{t}-r{r}-k{k}").into_bytes(),
                "delivery {i} (id {}): payload",
                m.id
            );
            i += 1;
        }
    }
    assert_eq!(cmd(&mut s, "STOP"), "OK");
}

#[test]
fn sub_start_positions() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "pa");
    create(&mut p, "pb");
    let a1 = publish(&mut p, "pa", "", b"a1");
    let a2 = publish(&mut p, "pa", "", b"a2");
    let b1 = publish(&mut p, "pb", "", b"b1");
    let a3 = publish(&mut p, "pa", "", b"a3");
    let a4 = publish(&mut p, "pa", "", b"a4");
    assert!(a1 < a2 && a2 < b1 && b1 < a3 && a3 < a4);

    let ids = |ms: &[Msg]| ms.iter().map(|m| m.id).collect::<Vec<_>>();

    // From 0: everything.
    let mut s = f.server.raw();
    sub(&mut s, "pa 0");
    assert_eq!(ids(&collect(&mut s, 4, 32)), vec![a1, a2, a3, a4]);
    assert!(s.silent_for(QUIET), "more than the 4 messages of pa");
    assert_eq!(cmd(&mut s, "STOP"), "OK");

    // From an id of the topic: strictly after it.
    sub(&mut s, &format!("pa {a2}"));
    let got = collect(&mut s, 2, 32);
    assert_eq!(ids(&got), vec![a3, a4]);
    assert_eq!(got[0].payload, b"a3");
    assert!(s.silent_for(QUIET));
    assert_eq!(cmd(&mut s, "STOP"), "OK");

    // From an id that belongs to another topic, in between.
    sub(&mut s, &format!("pa {b1}"));
    assert_eq!(ids(&collect(&mut s, 2, 32)), vec![a3, a4]);
    assert!(s.silent_for(QUIET));
    assert_eq!(cmd(&mut s, "STOP"), "OK");

    // From a1 - 1 (the CREATE of pb, not a message of pa): all of pa.
    sub(&mut s, &format!("pa {}", a1 - 1));
    assert_eq!(ids(&collect(&mut s, 4, 32)), vec![a1, a2, a3, a4]);
    assert_eq!(cmd(&mut s, "STOP"), "OK");

    // From the last id: nothing yet, then only what comes next.
    sub(&mut s, &format!("pa {a4}"));
    assert!(s.silent_for(QUIET), "SUB after the last id sent something");
    let a5 = publish(&mut p, "pa", "", b"a5");
    let got = read_batch(&mut s);
    assert_eq!(ids(&got), vec![a5]);
    assert_eq!(got[0].payload, b"a5");
    assert_eq!(cmd(&mut s, "STOP"), "OK");

    // From `$`: only messages written after the SUB's OK.
    sub(&mut s, "pa $");
    assert!(s.silent_for(QUIET), "SUB $ sent old messages");
    let a6 = publish(&mut p, "pa", "", b"a6");
    let a7 = publish(&mut p, "pa", "h=7", b"a7");
    let got = collect(&mut s, 2, 32);
    assert_eq!(ids(&got), vec![a6, a7]);
    assert_eq!(got[0].payload, b"a6");
    assert_eq!(
        (got[1].headers.as_str(), &got[1].payload[..]),
        ("h=7", &b"a7"[..])
    );
    assert!(s.silent_for(QUIET));
    assert_eq!(cmd(&mut s, "STOP"), "OK");
}

/// `SUB t N` with N beyond the last event id so far: only messages with an
/// id greater than N, even those published after the SUB.
#[test]
fn sub_from_future_id() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "fut");
    let a1 = publish(&mut p, "fut", "", b"a1");
    let mut s = f.server.raw();
    sub(&mut s, &format!("fut {}", a1 + 2));
    assert!(s.silent_for(QUIET), "SUB after a future id sent something");
    let a2 = publish(&mut p, "fut", "", b"a2"); // a1 + 1
    let a3 = publish(&mut p, "fut", "", b"a3"); // a1 + 2
    let a4 = publish(&mut p, "fut", "", b"a4");
    assert_eq!((a2, a3), (a1 + 1, a1 + 2));
    let got = read_batch(&mut s);
    assert_eq!(
        got.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![a4],
        "SUB fut {} delivered messages with ids <= {}",
        a1 + 2,
        a1 + 2
    );
    assert_eq!(got[0].payload, b"a4");
    assert_eq!(cmd(&mut s, "STOP"), "OK");
}

#[test]
fn batches_wait_for_ack() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "b");
    let ids: Vec<u64> = (0..7)
        .map(|i| publish(&mut p, "b", "", format!("m{i}").as_bytes()))
        .collect();

    let mut s = f.server.raw();
    sub(&mut s, "b 0 batch=3");
    let mut seen = Vec::new();
    for (n, want) in [3usize, 3, 1].into_iter().enumerate() {
        let b = read_batch(&mut s);
        assert_eq!(b.len(), want, "batch {n}");
        seen.extend(b);
        // No next batch (and nothing else) before the ACK.
        assert!(
            s.silent_for(QUIET),
            "server sent more before the ACK of batch {n}"
        );
        s.send(b"ACK\r\n");
    }
    assert_eq!(seen.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    for (i, m) in seen.iter().enumerate() {
        assert_eq!(m.payload, format!("m{i}").into_bytes());
    }
    // All delivered: nothing more; a new message is the next batch.
    assert!(s.silent_for(QUIET));
    let id = publish(&mut p, "b", "", b"late");
    let b = read_batch(&mut s);
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].id, &b[0].payload[..]), (id, &b"late"[..]));
    assert_eq!(cmd(&mut s, "STOP"), "OK");
}

#[test]
fn waiting_subscriber_wakes_on_publish() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "live");
    let mut s = f.server.raw();
    sub(&mut s, "live 0");
    assert!(s.silent_for(QUIET), "an empty topic sent something");
    for round in 0..3u8 {
        // Published by another connection while the subscriber waits.
        let id = publish(&mut p, "live", "", &[b'x', round]);
        let b = read_batch(&mut s);
        assert_eq!(b.len(), 1, "round {round}");
        assert_eq!(b[0].id, id);
        assert_eq!(b[0].payload, vec![b'x', round]);
        assert_recent(b[0].ts, "live MSG");
        s.send(b"ACK\r\n");
    }

    // The same through the client library, from a thread.
    let mut c = f.server.client();
    c.subscribe("live", "$", &SubOptions::default())
        .expect("subscribe");
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let ev = c.next_event().expect("event");
        tx.send(()).expect("send");
        ev
    });
    // The waiter must not see anything before the publish.
    assert!(
        rx.recv_timeout(QUIET).is_err(),
        "subscriber woke with nothing published"
    );
    let id = publish(&mut p, "live", "", b"wake");
    let ev = h.join().expect("subscriber thread");
    let SubEvent::Batch(msgs) = ev else {
        panic!("expected a batch, got {ev:?}")
    };
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].event_id, &msgs[0].payload[..]), (id, &b"wake"[..]));
}

#[test]
fn idle_subscriber_gets_alive() {
    let f = start(
        Opts::new()
            .store("fsync: never")
            .section("timeout:\n  server:\n    alive: 100"),
    );
    let mut s = f.server.raw();
    let mut p = f.server.raw();
    create(&mut p, "al");
    sub(&mut s, "al 0");
    for _ in 0..3 {
        assert_eq!(s.line(), "ALIVE");
    }
    let id = publish(&mut p, "al", "", b"after alive");
    // ALIVE lines may still come before the batch; bounded.
    let mut line = s.line();
    for _ in 0..100 {
        if line != "ALIVE" {
            break;
        }
        line = s.line();
    }
    assert_eq!(line, "BATCH 1");
    let m = read_msg(&mut s);
    assert_eq!((m.id, &m.payload[..]), (id, &b"after alive"[..]));
    s.send(b"ACK\r\n");
    // Idle again: ALIVE resumes.
    assert_eq!(s.line(), "ALIVE");
    assert_eq!(cmd(&mut s, "STOP"), "OK");
    assert_eq!(cmd(&mut s, "PING"), "PONG");
}

#[test]
fn stop_returns_to_command_mode() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "st");
    let id1 = publish(&mut p, "st", "", b"one");
    publish(&mut p, "st", "", b"two");

    // STOP answering a batch.
    let mut s = f.server.raw();
    sub(&mut s, "st 0 batch=1");
    let b = read_batch(&mut s);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].id, id1);
    assert_eq!(cmd(&mut s, "STOP"), "OK");
    // The second message is not sent: the subscription is over.
    assert_eq!(cmd(&mut s, "PING"), "PONG");
    let (name, _, _, msgs, first, _) = topic_line(&cmd(&mut s, "INFO st"));
    assert_eq!((name.as_str(), msgs, first), ("st", 2, id1));
    assert!(s.silent_for(QUIET));

    // STOP while idle (nothing outstanding, nothing to send).
    sub(&mut s, "st $");
    assert!(s.silent_for(QUIET));
    assert_eq!(cmd(&mut s, "STOP"), "OK");
    assert_eq!(cmd(&mut s, "PING"), "PONG");
    // A publish after the STOP reaches nobody on this connection.
    publish(&mut p, "st", "", b"three");
    assert!(s.silent_for(QUIET), "a stopped subscription still delivers");
    let (_, _, _, msgs, _, _) = topic_line(&cmd(&mut s, "INFO st"));
    assert_eq!(msgs, 3);

    // STOP through the client library.
    let mut c = f.server.client();
    c.subscribe("st", "0", &SubOptions::default())
        .expect("subscribe");
    assert!(matches!(c.next_event().expect("batch"), SubEvent::Batch(m) if m.len() == 3));
    c.stop().expect("stop");
    assert_eq!(c.info("st").expect("info").messages, 3);
}

#[test]
fn delete_ends_subscribers() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "del");
    for i in 0..3 {
        publish(&mut p, "del", "", format!("old{i}").as_bytes());
    }

    // One subscriber idle from `$`, one that has consumed everything.
    let mut s1 = f.server.raw();
    sub(&mut s1, "del $");
    let mut s2 = f.server.raw();
    sub(&mut s2, "del 0 batch=10");
    assert_eq!(collect(&mut s2, 3, 10).len(), 3);
    assert!(s1.silent_for(QUIET));

    let del_id = ok_id(&cmd(&mut p, "DELETE del"));
    assert_eq!(s1.line(), "END deleted");
    assert_eq!(s2.line(), "END deleted");
    // Both are back in command mode.
    assert_eq!(cmd(&mut s1, "PING"), "PONG");
    assert_eq!(cmd(&mut s2, "PING"), "PONG");
    let info = cmd(&mut s1, "INFO del");
    assert!(
        info.starts_with("ERR NOTOPIC"),
        "INFO after DELETE: {info:?}"
    );
    let sub_gone = cmd(&mut s2, "SUB del 0");
    assert!(
        sub_gone.starts_with("ERR NOTOPIC"),
        "SUB after DELETE: {sub_gone:?}"
    );

    // The name is free again at once, and the new topic is empty.
    let create_id = create(&mut p, "del");
    assert!(create_id > del_id);
    let (_, _, _, msgs, first, last) = topic_line(&cmd(&mut p, "INFO del"));
    assert_eq!((msgs, first, last), (0, 0, 0));
    sub(&mut s2, "del 0");
    assert!(s2.silent_for(QUIET), "the new topic delivered old messages");
    let id = publish(&mut p, "del", "", b"new");
    let b = read_batch(&mut s2);
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].id, &b[0].payload[..]), (id, &b"new"[..]));
    assert!(id > create_id);
    assert_eq!(cmd(&mut s2, "STOP"), "OK");
}

#[test]
fn missing_ack_closes_connection() {
    let f = fast();
    let mut p = f.server.raw();
    create(&mut p, "ack");
    let id = publish(&mut p, "ack", "", b"unacked");
    publish(&mut p, "ack", "", b"second");

    let mut s = f.server.raw();
    sub(&mut s, "ack 0 batch=1 ack=200");
    let b = read_batch(&mut s);
    assert_eq!((b.len(), b[0].id), (1, id));
    // No ACK: the server closes the connection (no second batch first).
    assert!(s.at_eof(), "connection not closed after the ACK timeout");

    // The server is fine and the message is still there.
    assert_eq!(cmd(&mut p, "PING"), "PONG");
    let (_, _, _, msgs, first, _) = topic_line(&cmd(&mut p, "INFO ack"));
    assert_eq!((msgs, first), (2, id));
}

#[test]
fn pipelined_replies_come_in_order() {
    let f = fast();
    let mut r = f.server.raw();
    create(&mut r, "pipe");
    let mut buf = Vec::new();
    for i in 0..100 {
        buf.extend(pub_frame("pipe", "", format!("p{i}").as_bytes()));
    }
    buf.extend_from_slice(b"INFO pipe\r\nPING\r\n");
    r.send(&buf);

    let mut ids = Vec::new();
    for i in 0..100 {
        let line = r.line();
        assert!(line.starts_with("OK "), "reply {i}: {line:?}");
        ids.push(ok_id(&line));
    }
    for w in ids.windows(2) {
        assert!(w[0] < w[1], "pipelined PUB ids not increasing: {ids:?}");
    }
    let (name, _, _, msgs, first, last) = topic_line(&r.line());
    assert_eq!(name, "pipe");
    assert_eq!((msgs, first, last), (100, ids[0], ids[99]));
    assert_eq!(r.line(), "PONG");

    // The messages are in the topic in request order.
    let mut s = f.server.raw();
    sub(&mut s, "pipe 0 batch=1000");
    let got = collect(&mut s, 100, 1000);
    for (i, m) in got.iter().enumerate() {
        assert_eq!((m.id, &m.payload[..]), (ids[i], format!("p{i}").as_bytes()));
    }
}

#[test]
fn list_info_and_stats() {
    let f = fast();
    let mut c = f.server.client();
    let before = now_ms();
    for name in ["zeta", "alpha", "mid.x", "b_1"] {
        c.create(name, 0).expect("create");
    }
    c.create("alpha-2", 5000).expect("create with life");
    let after = now_ms();

    let list = c.list().expect("list");
    let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "alpha-2", "b_1", "mid.x", "zeta"]);
    for t in &list {
        assert!(
            t.created_ms + 60_000 >= before && t.created_ms <= after + 60_000,
            "{}: created_ms {} implausible",
            t.name,
            t.created_ms
        );
        assert_eq!((t.messages, t.first_id, t.last_id), (0, 0, 0), "{t:?}");
        if t.name == "alpha-2" {
            assert_eq!(t.expires_ms, t.created_ms + 5000, "{t:?}");
        } else {
            assert_eq!(t.expires_ms, 0, "{t:?}");
        }
    }
    // INFO agrees with LIST.
    for t in &list {
        assert_eq!(&c.info(&t.name).expect("info"), t);
    }
    let e = c.info("nope").expect_err("no such topic");
    assert_eq!(e.code(), Some("NOTOPIC"));

    let s0 = c.stats().expect("stats");
    for key in [
        "role",
        "last_event_id",
        "topics",
        "connections",
        "uptime_ms",
        "disk_bytes",
        "messages_published",
    ] {
        stat(&s0, key);
    }
    assert_eq!(stat(&s0, "role"), "master");
    assert_eq!(stat_u64(&s0, "topics"), 5);
    assert!(stat_u64(&s0, "connections") >= 1);
    assert!(stat_u64(&s0, "uptime_ms") < 3_600_000);
    assert_eq!(stat_u64(&s0, "messages_published"), 0);
    let last0 = stat_u64(&s0, "last_event_id");
    let disk0 = stat_u64(&s0, "disk_bytes");

    let payload = vec![b'z'; 2000];
    let ids: Vec<u64> = (0..3)
        .map(|_| c.publish("mid.x", &payload).expect("publish"))
        .collect();
    assert!(ids[0] > last0);
    let (first, last) = c.mpublish("zeta", &[b"1", b"2"]).expect("mpublish");

    let t = c.info("mid.x").expect("info");
    assert_eq!((t.messages, t.first_id, t.last_id), (3, ids[0], ids[2]));
    let t = c.info("zeta").expect("info");
    assert_eq!((t.messages, t.first_id, t.last_id), (2, first, last));
    let t = c.info("alpha").expect("info");
    assert_eq!((t.messages, t.first_id, t.last_id), (0, 0, 0));

    let s1 = c.stats().expect("stats");
    assert_eq!(stat_u64(&s1, "messages_published"), 5);
    assert_eq!(stat_u64(&s1, "last_event_id"), last);
    assert!(
        stat_u64(&s1, "disk_bytes") >= disk0 + 3 * 2000,
        "disk_bytes {} -> {} after 6 KB of messages",
        disk0,
        stat_u64(&s1, "disk_bytes")
    );
    // A second connection, surely accepted once it has answered a PING.
    let mut second = f.server.client();
    second.ping().expect("ping");
    let s2 = c.stats().expect("stats");
    assert!(stat_u64(&s2, "connections") >= 2);
    assert!(stat_u64(&s2, "uptime_ms") >= stat_u64(&s0, "uptime_ms"));

    // DELETE takes an event id and removes the topic from LIST and STATS.
    let del = c.delete("b_1").expect("delete");
    assert!(del > last);
    let names: Vec<String> = c
        .list()
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["alpha", "alpha-2", "mid.x", "zeta"]);
    let s3 = c.stats().expect("stats");
    assert_eq!(stat_u64(&s3, "topics"), 4);
    assert_eq!(stat_u64(&s3, "last_event_id"), del);
    assert_eq!(stat_u64(&s3, "messages_published"), 5);
}

#[test]
fn many_subscribers_get_everything_in_order() {
    const SUBS: usize = 20;
    const PUBS: usize = 4;
    const EACH: usize = 50;
    const TOTAL: usize = PUBS * EACH;
    let f = fast();
    f.server.client().create("fan", 0).expect("create");

    let (ready_tx, ready_rx) = mpsc::channel();
    let subs: Vec<_> = (0..SUBS)
        .map(|i| {
            let mut c = f.server.client();
            let ready = ready_tx.clone();
            thread::spawn(move || {
                let opts = SubOptions {
                    batch: Some(7 + i),
                    ..SubOptions::default()
                };
                c.subscribe("fan", "0", &opts).expect("subscribe");
                ready.send(()).expect("ready");
                common::collect(&mut c, TOTAL)
            })
        })
        .collect();
    drop(ready_tx);
    for _ in 0..SUBS {
        ready_rx
            .recv_timeout(common::WAIT)
            .expect("subscriber ready");
    }

    let pubs: Vec<_> = (0..PUBS)
        .map(|p| {
            let mut c = f.server.client();
            thread::spawn(move || {
                (0..EACH)
                    .map(|k| {
                        let payload = format!("p{p}-{k}").into_bytes();
                        let id = c.publish("fan", &payload).expect("publish");
                        (id, payload)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut published: Vec<(u64, Vec<u8>)> = Vec::new();
    for h in pubs {
        published.extend(h.join().expect("publisher"));
    }
    published.sort();
    assert_eq!(published.len(), TOTAL);

    for (i, h) in subs.into_iter().enumerate() {
        let got = h.join().expect("subscriber thread");
        assert_eq!(got.len(), TOTAL, "subscriber {i}: count");
        for w in got.windows(2) {
            assert!(w[0].0 < w[1].0, "subscriber {i}: ids not increasing");
        }
        assert!(
            got == published,
            "subscriber {i}: messages differ from those published"
        );
    }
}

#[test]
fn reads_across_segments() {
    let f = start(Opts::new().store("fsync: never").store("maxLogSize: 4096"));
    let mut p = f.server.raw();
    create(&mut p, "seg");
    let payload = |i: usize| -> Vec<u8> {
        let mut v = format!("{i:05}:").into_bytes();
        v.extend((0..94).map(|j| ((i * 31 + j * 17) % 256) as u8));
        v
    };
    // Pipelined in chunks for speed; replies in order.
    let mut ids = Vec::new();
    for chunk in 0..3 {
        let mut buf = Vec::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            let pl = payload(i);
            assert_eq!(pl.len(), 100);
            buf.extend(pub_frame("seg", "", &pl));
        }
        p.send(&buf);
        for _ in 0..100 {
            ids.push(ok_id(&p.line()));
        }
    }

    let mut c = f.server.client();
    let stats = c.stats().expect("stats");
    let segments = stat_u64(&stats, "segments");
    assert!(
        segments > 1,
        "300 x 100 bytes with maxLogSize 4096: {segments} segment(s)"
    );
    let t = c.info("seg").expect("info");
    assert_eq!((t.messages, t.first_id, t.last_id), (300, ids[0], ids[299]));

    let mut s = f.server.raw();
    sub(&mut s, "seg 0 batch=1000");
    let got = collect(&mut s, 300, 1000);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.id, ids[i], "message {i}: id");
        assert!(m.payload == payload(i), "message {i}: payload bytes differ");
    }
    // Also from the middle, which starts inside a later segment.
    assert_eq!(cmd(&mut s, "STOP"), "OK");
    sub(&mut s, &format!("seg {} batch=64", ids[199]));
    let got = collect(&mut s, 100, 64);
    for (k, m) in got.iter().enumerate() {
        assert_eq!(m.id, ids[200 + k]);
        assert!(m.payload == payload(200 + k));
    }
}
