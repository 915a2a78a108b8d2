//! The bridge (`smss::bridge`) against the real `smss` binary, with a test
//! sink defined here: it records messages in memory per subject and can be
//! scripted to fail Transiently, to store and then report a Transient
//! error (an answer lost), or to Refuse a given payload. Every wait is on
//! the sink's condvar or on an smss reply, bounded by [`WAIT`].

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{Opts, Server, WAIT, tempdir};
use smss::bridge::{
    Bridge, BridgeOptions, OutMsg, Sink, SinkError, WriteOutcome, msg_id, parse_msg_id,
};
use smss::client::{Client, SubEvent, SubOptions};

#[derive(Default)]
struct State {
    /// What the sink holds, per subject, in order.
    held: BTreeMap<String, Vec<OutMsg>>,
    /// The msg ids of every write call, in call order.
    writes: Vec<Vec<String>>,
    /// The next N writes fail Transiently, storing nothing.
    fail_transient: u32,
    /// The next N writes store everything, then report Transient.
    store_then_fail: u32,
    /// A payload the sink refuses.
    refuse_payload: Option<Vec<u8>>,
    /// Subjects containing this are refused by check_subject.
    refuse_subject: Option<String>,
    /// topic_ended calls: (subject, why).
    ended: Vec<(String, String)>,
    /// Random failures: a write fails Transiently (20%), after storing a
    /// random prefix of its messages half of the time.
    chaos: Option<common::seed::Rng>,
}

#[derive(Clone, Default)]
struct TestSink(Arc<(Mutex<State>, Condvar)>);

impl TestSink {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Waits (on the condvar) until `cond` holds; panics after WAIT.
    fn wait(&self, what: &str, cond: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + WAIT;
        let mut g = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        while !cond(&g) {
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}");
            g = self
                .0
                .1
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn count(&self, subject: &str) -> usize {
        self.with(|s| s.held.get(subject).map_or(0, Vec::len))
    }

    fn held(&self, subject: &str) -> Vec<OutMsg> {
        self.with(|s| s.held.get(subject).cloned().unwrap_or_default())
    }

    fn wait_count(&self, subject: &str, n: usize) {
        self.wait(&format!("{n} messages on {subject}"), |s| {
            s.held.get(subject).map_or(0, Vec::len) >= n
        });
    }
}

impl Sink for TestSink {
    fn write(&mut self, msgs: &[OutMsg]) -> WriteOutcome {
        let (lock, cv) = &*self.0;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.writes
            .push(msgs.iter().map(|m| m.msg_id.clone()).collect());
        let chaos = s.chaos.as_mut().and_then(|r| {
            r.chance(20).then(|| {
                if r.chance(50) {
                    r.below(msgs.len() as u64 + 1) as usize
                } else {
                    0
                }
            })
        });
        let out = if let Some(n) = chaos {
            for m in &msgs[..n] {
                s.held.entry(m.subject.clone()).or_default().push(m.clone());
            }
            WriteOutcome {
                stored: 0,
                error: Some(SinkError::Transient("chaos".into())),
            }
        } else if s.fail_transient > 0 {
            s.fail_transient -= 1;
            WriteOutcome {
                stored: 0,
                error: Some(SinkError::Transient("scripted outage".into())),
            }
        } else {
            let refused = s
                .refuse_payload
                .as_ref()
                .and_then(|p| msgs.iter().position(|m| &m.payload == p));
            let n = refused.unwrap_or(msgs.len());
            for m in &msgs[..n] {
                s.held.entry(m.subject.clone()).or_default().push(m.clone());
            }
            if let Some(i) = refused {
                WriteOutcome {
                    stored: i,
                    error: Some(SinkError::Refused("scripted: too big".into())),
                }
            } else if s.store_then_fail > 0 {
                s.store_then_fail -= 1;
                WriteOutcome {
                    stored: 0,
                    error: Some(SinkError::Transient(
                        "scripted timeout after storing".into(),
                    )),
                }
            } else {
                WriteOutcome::all(n)
            }
        };
        cv.notify_all();
        out
    }

    fn last_msg_id(&mut self, subject: &str) -> Result<Option<String>, SinkError> {
        Ok(self.with(|s| {
            s.held
                .get(subject)
                .and_then(|v| v.last())
                .map(|m| m.msg_id.clone())
        }))
    }

    fn topic_ended(&mut self, subject: &str, why: &str) -> Result<(), SinkError> {
        let (lock, cv) = &*self.0;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.ended.push((subject.to_string(), why.to_string()));
        s.held.remove(subject);
        cv.notify_all();
        Ok(())
    }

    fn describe(&self) -> String {
        "the test sink".into()
    }

    fn check_subject(&self, subject: &str) -> Result<(), String> {
        match self.with(|s| s.refuse_subject.clone()) {
            Some(bad) if subject.contains(&bad) => Err(format!("no {bad} here")),
            _ => Ok(()),
        }
    }
}

fn opts(s: &Server) -> BridgeOptions {
    BridgeOptions {
        smss: vec![s.addr.clone()],
        poll_interval: Duration::from_millis(100),
        report_interval: Duration::from_secs(1),
        timeout: WAIT,
        ..BridgeOptions::default()
    }
}

/// A running bridge and its stop flag; stopped (and joined) on drop.
struct Running {
    stop: Arc<AtomicBool>,
    bridge: Option<Bridge>,
}

fn start(o: BridgeOptions, sink: &TestSink) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let bridge = Bridge::start(o, Box::new(sink.clone()), Arc::clone(&stop)).expect("start bridge");
    Running {
        stop,
        bridge: Some(bridge),
    }
}

impl Running {
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(b) = self.bridge.take() {
            b.join().expect("bridge ends cleanly");
        }
    }
    fn bridge(&self) -> &Bridge {
        self.bridge.as_ref().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(b) = self.bridge.take() {
            let _ = b.join();
        }
    }
}

fn history(c: &mut Client) -> String {
    let stats = c.stats().expect("STATS");
    stats
        .into_iter()
        .find(|(k, _)| k == "history")
        .map(|(_, v)| v)
        .expect("STAT history")
}

/// Checks that `msgs` are exactly `want` event ids, in order, each once,
/// with the bridge's ids and headers.
fn assert_exactly(msgs: &[OutMsg], topic: &str, want: &[u64], history: u64) {
    let got: Vec<u64> = msgs.iter().map(|m| m.event_id).collect();
    assert_eq!(got, want, "{topic}: event ids in the sink");
    let ids: BTreeSet<&str> = msgs.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), msgs.len(), "{topic}: a msg id twice");
    for m in msgs {
        assert_eq!(m.msg_id, msg_id(history, m.event_id));
        assert_eq!(parse_msg_id(&m.msg_id), Some((history, m.event_id)));
        assert_eq!(m.subject, format!("smss.{topic}"));
        let h = |k: &str| {
            m.headers
                .iter()
                .find(|(hk, _)| hk == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("Smss-Topic").as_deref(), Some(topic));
        assert_eq!(h("Smss-Id"), Some(m.event_id.to_string()));
        assert_eq!(h("Smss-Timestamp"), Some(m.timestamp_ms.to_string()));
    }
}

/// Publishes `n` messages `<tag>-<i>` with a header; their event ids.
fn publish(c: &mut Client, topic: &str, tag: &str, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            c.publish_with_headers(topic, &[("k", "v")], format!("{tag}-{i}").as_bytes())
                .expect("PUB")
        })
        .collect()
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect /metrics");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn every_message_arrives_once_in_order_and_a_restart_writes_nothing_twice() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t1", 0).expect("CREATE");
    c.create("t2", 0).expect("CREATE");
    let mut want1 = publish(&mut c, "t1", "a", 50);
    let mut want2 = publish(&mut c, "t2", "a", 50);
    let sink = TestSink::default();
    let o = BridgeOptions {
        metrics_port: Some(0),
        batch: Some(7),
        ..opts(&s)
    };
    let run = start(o.clone(), &sink);
    // While bridging.
    want1.extend(publish(&mut c, "t1", "b", 50));
    want2.extend(publish(&mut c, "t2", "b", 50));
    sink.wait_count("smss.t1", 100);
    sink.wait_count("smss.t2", 100);
    let addr = run.bridge().metrics_addr().expect("metrics address");
    let text = http_get(addr, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("smss_bridge_messages_total{topic=\"t1\"} 100"),
        "{text}"
    );
    assert!(http_get(addr, "/nope").starts_with("HTTP/1.1 404"));
    run.stop();
    assert_exactly(&sink.held("smss.t1"), "t1", &want1, h);
    assert_exactly(&sink.held("smss.t2"), "t2", &want2, h);
    assert_eq!(sink.held("smss.t1")[0].headers[0], ("k".into(), "v".into()));

    // A new run, same group, same sink: only the new messages are written.
    let writes_before = sink.with(|s| s.writes.len());
    want1.extend(publish(&mut c, "t1", "c", 20));
    let run = start(o, &sink);
    sink.wait_count("smss.t1", 120);
    run.stop();
    assert_exactly(&sink.held("smss.t1"), "t1", &want1, h);
    assert_exactly(&sink.held("smss.t2"), "t2", &want2, h);
    let rewritten: usize = sink.with(|s| s.writes[writes_before..].iter().map(Vec::len).sum());
    assert_eq!(rewritten, 20, "only the 20 new messages were written");
}

#[test]
fn a_lost_group_position_is_made_good_by_the_sinks_last_id() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t", 0).expect("CREATE");
    let mut want = publish(&mut c, "t", "a", 30);
    let sink = TestSink::default();
    let o = opts(&s);
    let run = start(o.clone(), &sink);
    sink.wait_count("smss.t", 30);
    run.stop();
    // The group is gone: the next run starts from the oldest message.
    c.groupdel("t", "bridge.default").expect("GROUPDEL");
    want.extend(publish(&mut c, "t", "b", 5));
    let before = sink.with(|s| s.writes.len());
    let run = start(o, &sink);
    sink.wait_count("smss.t", 35);
    run.stop();
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
    let rewritten: usize = sink.with(|s| s.writes[before..].iter().map(Vec::len).sum());
    assert_eq!(rewritten, 5);
}

#[test]
fn transient_failures_are_retried_with_the_same_ids_and_nothing_is_skipped() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t", 0).expect("CREATE");
    let want = publish(&mut c, "t", "a", 10);
    let sink = TestSink::default();
    sink.with(|s| s.fail_transient = 3);
    let run = start(opts(&s), &sink);
    sink.wait_count("smss.t", 10);
    let m = run.bridge().metrics().topic("t").snapshot(0);
    assert!(m.retries >= 3, "{m:?}");
    assert_eq!(run.bridge().metrics().transient_errors(), 3);
    run.stop();
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
    let writes = sink.with(|s| s.writes.clone());
    // The failed attempts and the one that succeeded carry the same ids.
    assert!(writes.len() >= 4, "{writes:?}");
    for w in &writes[1..4] {
        assert_eq!(w, &writes[0]);
    }
    let first_ids: Vec<String> = want.iter().map(|id| msg_id(h, *id)).collect();
    assert!(first_ids.starts_with(&writes[0]), "{writes:?}");
}

#[test]
fn stored_then_transient_writes_nothing_twice() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t", 0).expect("CREATE");
    let mut want = publish(&mut c, "t", "a", 10);
    let sink = TestSink::default();
    sink.with(|s| s.store_then_fail = 2);
    let run = start(
        BridgeOptions {
            batch: Some(4),
            ..opts(&s)
        },
        &sink,
    );
    want.extend(publish(&mut c, "t", "b", 10));
    sink.wait_count("smss.t", 20);
    // Settled: the writes after the lost answers are done too.
    sink.wait("no scripted failures left", |s| s.store_then_fail == 0);
    run.stop();
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
}

#[test]
fn a_refused_message_goes_to_the_dlq_and_the_following_ones_flow() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t", 0).expect("CREATE");
    c.create("dead", 0).expect("CREATE");
    let mut want = publish(&mut c, "t", "a", 5);
    let poison = c.publish("t", b"poison").expect("PUB");
    want.extend(publish(&mut c, "t", "b", 5));
    let sink = TestSink::default();
    sink.with(|s| s.refuse_payload = Some(b"poison".to_vec()));
    let run = start(
        BridgeOptions {
            topics: vec!["t".into()],
            batch: Some(4),
            max_deliver: 2,
            dlq: Some("dead".into()),
            ..opts(&s)
        },
        &sink,
    );
    sink.wait_count("smss.t", 10);
    want.extend(publish(&mut c, "t", "c", 3));
    sink.wait_count("smss.t", 13);
    let m = run.bridge().metrics().topic("t").snapshot(0);
    assert!(m.refused >= 2, "{m:?}");
    assert_eq!(m.dead_lettered, 1, "{m:?}");
    run.stop();
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
    // The refused message is in the dead-letter topic.
    let mut d = s.client();
    d.subscribe("dead", "0", &SubOptions::default())
        .expect("SUB dead");
    let msgs = loop {
        match d.next_event().expect("event") {
            SubEvent::Batch(m) => break m,
            SubEvent::Alive => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, b"poison");
    assert!(
        msgs[0]
            .headers
            .contains(&("dlq.id".to_string(), poison.to_string())),
        "{:?}",
        msgs[0].headers
    );
}

#[test]
fn without_a_dlq_a_refused_message_blocks_its_topic_only() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    c.create("u", 0).expect("CREATE");
    let before = publish(&mut c, "t", "a", 2);
    c.publish("t", b"poison").expect("PUB");
    publish(&mut c, "t", "b", 2);
    publish(&mut c, "u", "a", 4);
    let sink = TestSink::default();
    sink.with(|s| s.refuse_payload = Some(b"poison".to_vec()));
    let run = start(opts(&s), &sink);
    sink.wait_count("smss.u", 4);
    sink.wait_count("smss.t", 2);
    // Refused at least twice: it is retried, not dropped.
    let metrics = Arc::clone(run.bridge().metrics());
    sink.wait("a second attempt at the refused message", |s| {
        s.writes
            .iter()
            .filter(|w| {
                w.iter()
                    .any(|id| id.ends_with(&format!("-{}", before[1] + 1)))
            })
            .count()
            >= 2
    });
    run.stop();
    let got: Vec<u64> = sink.held("smss.t").iter().map(|m| m.event_id).collect();
    assert_eq!(got, before, "nothing after the refused message");
    assert_eq!(metrics.topic("t").snapshot(0).dead_lettered, 0);
    // Nothing was skipped in smss either: the group is still before it.
    let g = c.groups("t").expect("GROUPS");
    assert!(g.iter().all(|g| g.committed_id < before[1] + 1), "{g:?}");
}

#[test]
fn new_topics_are_picked_up_deleted_and_expired_ones_end_and_refused_subjects_are_counted() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let sink = TestSink::default();
    sink.with(|s| s.refuse_subject = Some("bad".into()));
    let run = start(opts(&s), &sink);
    c.create("late", 0).expect("CREATE");
    c.create("bad.one", 0).expect("CREATE");
    let want = publish(&mut c, "late", "a", 5);
    publish(&mut c, "bad.one", "a", 5);
    sink.wait_count("smss.late", 5);
    assert_eq!(
        sink.held("smss.late")
            .iter()
            .map(|m| m.event_id)
            .collect::<Vec<_>>(),
        want
    );
    c.delete("late").expect("DELETE");
    sink.wait("topic_ended for late", |s| {
        s.ended
            .contains(&("smss.late".to_string(), "deleted".to_string()))
    });
    assert_eq!(run.bridge().metrics().topics_refused(), 1);
    // A topic whose life ends: END expired.
    c.create("short", 1000).expect("CREATE");
    publish(&mut c, "short", "a", 2);
    sink.wait_count("smss.short", 2);
    sink.wait("topic_ended for short", |s| {
        s.ended
            .contains(&("smss.short".to_string(), "expired".to_string()))
    });
    assert!(run.bridge().metrics().topic("short").snapshot(0).ended);
    run.stop();
    assert_eq!(sink.count("smss.bad.one"), 0);
}

#[test]
fn the_history_stat_is_stable_across_a_restart() {
    let dir = tempdir();
    let port = common::repl::free_port();
    let s = Server::start_with(dir.path(), &Opts::new().port(port));
    let mut c = s.client();
    let h1 = history(&mut c);
    assert_eq!(h1.len(), 16, "{h1:?}");
    assert!(
        h1.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{h1:?}"
    );
    assert_ne!(h1, "0000000000000000");
    c.create("t", 0).expect("CREATE");
    drop(c);
    assert!(s.sigterm().success());
    let s = Server::start_with(dir.path(), &Opts::new().port(port));
    let mut c = s.client();
    assert_eq!(history(&mut c), h1);
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run smss-cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_parses_bridge_and_says_the_nats_sink_is_missing() {
    let (code, out, _) = cli(&["bridge", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("usage: smss-cli [global options] bridge --nats"),
        "{out}"
    );
    let (code, _, err) = cli(&["bridge"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing --nats"), "{err}");
    let (code, _, err) = cli(&["bridge", "--nats", "127.0.0.1:4222", "--max-deliver", "2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--max-deliver needs --dlq"), "{err}");
    let (code, _, err) = cli(&["bridge", "--nats", "127.0.0.1:4222", "bad topic!"]);
    assert_eq!(code, 2, "{err}");
    // A NATS address where nothing listens: a clear error, exit 1.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let (code, _, err) = cli(&["bridge", "--nats", &closed, "orders"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect to NATS"), "{err}");
    assert!(err.contains(&closed), "{err}");
    let (code, _, err) = cli(&["bridge", "--nats", &closed, "--nats-user", "u"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--nats-password-file go together"), "{err}");
}

#[test]
fn a_long_sink_outage_hands_batches_back_without_a_failed_delivery() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t", 0).expect("CREATE");
    c.create("dead", 0).expect("CREATE");
    let want = publish(&mut c, "t", "a", 6);
    let sink = TestSink::default();
    // 100 + 200 + 400 ms of backoff: past the 500 ms of patience that an
    // ACK deadline of 1 s leaves, so the batch is handed back at least once.
    sink.with(|s| s.fail_transient = 4);
    let run = start(
        BridgeOptions {
            topics: vec!["t".into()],
            ack_ms: 1000,
            max_deliver: 1,
            dlq: Some("dead".into()),
            ..opts(&s)
        },
        &sink,
    );
    sink.wait_count("smss.t", 6);
    let m = run.bridge().metrics().topic("t").snapshot(0);
    assert!(m.handed_back >= 1, "{m:?}");
    run.stop();
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
    // smss never saw a delivery end without an ACK, so nothing was
    // dead-lettered with maxDeliver=1.
    assert_eq!(common::stat(&mut c, "group_redeliveries"), 0);
    assert_eq!(common::stat(&mut c, "dead_lettered"), 0);
    assert_eq!(c.info("dead").expect("INFO").messages, 0);
}

#[test]
fn the_bridge_follows_the_master_through_a_promote() {
    use common::repl::{start_slave, wait_caught_up};
    let (md, sd) = (tempdir(), tempdir());
    let m = Server::start(md.path());
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    let mut want = publish(&mut mc, "t", "a", 20);
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    let mut sc = s.client();
    let h = history(&mut mc);
    wait_caught_up(&m, &s, None);
    assert_eq!(history(&mut sc), h, "a slave shares its master's history");
    let h = u64::from_str_radix(&h, 16).expect("hex history");
    let sink = TestSink::default();
    let run = start(
        BridgeOptions {
            // The slave first: the bridge must pick the master by its role.
            smss: vec![s.addr.clone(), m.addr.clone()],
            batch: Some(3),
            ..opts(&m)
        },
        &sink,
    );
    sink.wait_count("smss.t", 20);
    want.extend(publish(&mut mc, "t", "b", 10));
    sink.wait_count("smss.t", 30);
    wait_caught_up(&m, &s, None);
    m.kill9();
    sc.promote().expect("PROMOTE");
    want.extend(publish(&mut sc, "t", "c", 10));
    sink.wait_count("smss.t", 40);
    run.stop();
    // Whatever group position the slave had, nothing was written twice.
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
}

#[test]
fn removing_the_group_while_bridging_does_not_end_the_topic_in_the_sink() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t", 0).expect("CREATE");
    let mut want = publish(&mut c, "t", "a", 10);
    let sink = TestSink::default();
    let run = start(opts(&s), &sink);
    sink.wait_count("smss.t", 10);
    c.groupdel("t", "bridge.default").expect("GROUPDEL");
    want.extend(publish(&mut c, "t", "b", 10));
    sink.wait_count("smss.t", 20);
    run.stop();
    assert!(sink.with(|s| s.ended.is_empty()), "topic_ended was called");
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
}

#[test]
fn stopping_during_a_sink_outage_loses_nothing_and_the_next_run_writes_once() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t", 0).expect("CREATE");
    let want = publish(&mut c, "t", "a", 8);
    let sink = TestSink::default();
    sink.with(|s| s.fail_transient = u32::MAX);
    let run = start(opts(&s), &sink);
    sink.wait("two failed attempts", |s| s.writes.len() >= 2);
    let stopped_at = Instant::now();
    run.stop();
    // The publisher gives up at its next backoff wake-up (at most 5 s).
    assert!(stopped_at.elapsed() < Duration::from_secs(10));
    assert_eq!(sink.count("smss.t"), 0);
    // Nothing was committed: the group is where it started.
    let g = c.groups("t").expect("GROUPS");
    assert!(g.iter().all(|g| g.committed_id < want[0]), "{g:?}");
    sink.with(|s| s.fail_transient = 0);
    let run = start(opts(&s), &sink);
    sink.wait_count("smss.t", 8);
    run.stop();
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
}

/// A sink whose writes panic.
struct PanicSink;

impl Sink for PanicSink {
    fn write(&mut self, _: &[OutMsg]) -> WriteOutcome {
        panic!("scripted sink panic");
    }
    fn last_msg_id(&mut self, _: &str) -> Result<Option<String>, SinkError> {
        Ok(None)
    }
    fn topic_ended(&mut self, _: &str, _: &str) -> Result<(), SinkError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "a panicking sink".into()
    }
    fn check_subject(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_panicking_sink_stops_the_bridge_with_an_error_and_commits_nothing() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let ids = publish(&mut c, "t", "a", 3);
    let stop = Arc::new(AtomicBool::new(false));
    let bridge = Bridge::start(opts(&s), Box::new(PanicSink), Arc::clone(&stop)).expect("start");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(bridge.join());
    });
    let res = rx.recv_timeout(WAIT).expect("the bridge ends by itself");
    let e = res.expect_err("an error");
    assert!(e.to_string().contains("panic"), "{e}");
    assert!(stop.load(Ordering::Relaxed));
    let g = c.groups("t").expect("GROUPS");
    assert!(g.iter().all(|g| g.committed_id < ids[0]), "{g:?}");
}

#[test]
fn a_refused_last_message_is_counted_as_dead_lettered_from_groups() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    c.create("dead", 0).expect("CREATE");
    publish(&mut c, "t", "a", 2);
    c.publish("t", b"poison").expect("PUB");
    let sink = TestSink::default();
    sink.with(|s| s.refuse_payload = Some(b"poison".to_vec()));
    let run = start(
        BridgeOptions {
            topics: vec!["t".into()],
            max_deliver: 1,
            dlq: Some("dead".into()),
            ..opts(&s)
        },
        &sink,
    );
    sink.wait_count("smss.t", 2);
    // No later batch shows it: the supervisor's GROUPS poll does (there is
    // no event to wait on, so poll the counter).
    let metrics = Arc::clone(run.bridge().metrics());
    common::repl::poll("dead_lettered = 1", || {
        let n = metrics.topic("t").snapshot(0).dead_lettered;
        if n == 1 { Ok(()) } else { Err(n) }
    });
    run.stop();
    assert_eq!(c.info("dead").expect("INFO").messages, 1);
    assert_eq!(sink.count("smss.t"), 2);
}

#[test]
fn concurrent_publishers_and_random_partial_failures_still_give_each_message_once() {
    let seed = common::seed::env_u64("SMSS_SEED").unwrap_or_else(common::seed::time_seed);
    eprintln!("SMSS_SEED={seed:#x}");
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    let topics = ["p0", "p1", "p2", "p3"];
    for t in topics {
        c.create(t, 0).expect("CREATE");
    }
    let sink = TestSink::default();
    sink.with(|s| s.chaos = Some(common::seed::Rng(seed)));
    let run = start(
        BridgeOptions {
            batch: Some(50),
            max_write: 120,
            ..opts(&s)
        },
        &sink,
    );
    const N: usize = 600;
    let publishers: Vec<_> = topics
        .iter()
        .map(|t| {
            let addr = s.addr.clone();
            let t = t.to_string();
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr).expect("connect");
                let mut ids = Vec::new();
                for chunk in 0..N / 20 {
                    let payloads: Vec<Vec<u8>> = (0..20)
                        .map(|i| format!("{t}-{chunk}-{i}").into_bytes())
                        .collect();
                    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                    let (first, last) = c.mpublish(&t, &refs).expect("MPUB");
                    ids.extend(first..=last);
                }
                ids
            })
        })
        .collect();
    let want: Vec<Vec<u64>> = publishers
        .into_iter()
        .map(|p| p.join().expect("publisher"))
        .collect();
    for t in topics {
        sink.wait_count(&format!("smss.{t}"), N);
    }
    run.stop();
    for (t, want) in topics.iter().zip(&want) {
        assert_exactly(&sink.held(&format!("smss.{t}")), t, want, h);
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in
/// `dir`: (CA file, certificate file, key file).
#[cfg(feature = "tls")]
fn test_pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).expect("CA cert");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&files.0, ca.pem()).expect("write CA");
    std::fs::write(&files.1, cert.pem()).expect("write cert");
    std::fs::write(&files.2, key.serialize_pem()).expect("write key");
    files
}

#[cfg(feature = "tls")]
#[test]
fn the_bridge_reads_over_tls_with_a_token() {
    let dir = tempdir();
    let (ca, cert, key) = test_pki(dir.path());
    let s = Server::start_with(
        dir.path(),
        &Opts::new()
            .section(&format!(
                "tls:\n  port: 0\n  cert: {}\n  key: {}",
                cert.display(),
                key.display()
            ))
            .section("auth:\n  token: bridge-secret-1"),
    );
    let mut c = s.client();
    c.auth("bridge-secret-1").expect("AUTH");
    let h = u64::from_str_radix(&history(&mut c), 16).expect("hex history");
    c.create("t", 0).expect("CREATE");
    let mut want = publish(&mut c, "t", "a", 10);
    let sink = TestSink::default();
    let run = start(
        BridgeOptions {
            smss: vec![s.tls_addr.clone().expect("a TLS port")],
            token: Some("bridge-secret-1".into()),
            tls: Some(smss::tls::client_config(&ca, None).expect("client config")),
            ..opts(&s)
        },
        &sink,
    );
    sink.wait_count("smss.t", 10);
    want.extend(publish(&mut c, "t", "b", 10));
    sink.wait_count("smss.t", 20);
    run.stop();
    assert_exactly(&sink.held("smss.t"), "t", &want, h);
}
