//! The monitoring listener against the real binary: `/metrics` through a
//! strict exposition parser (and against STATS), `/healthz` and its
//! thresholds (a frozen slave, minSlaves), the status page, the limits
//! (oversized, slow, non-GET, unknown path), bearer auth, HTTP off, and a
//! headless Chromium look at the page when Chromium is installed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::repl::{Frozen, poll, poll_until};
use common::{Opts, Server, WAIT};
use smss::client::{Client, SubEvent, SubOptions};

/// One HTTP answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` and reads the answer until the server closes (it always
/// does: `Connection: close`), every read with a timeout.
fn exchange(addr: &str, raw: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect to HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(raw).expect("send request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read answer");
    parse_answer(&buf)
}

fn parse_answer(buf: &[u8]) -> Answer {
    let text = String::from_utf8(buf.to_vec()).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().and_then(|c| c.parse().ok()).expect("status");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let a = Answer {
        status,
        headers,
        body: body.to_string(),
    };
    let len: usize = a
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .expect("Content-Length");
    assert_eq!(len, a.body.len(), "Content-Length matches the body");
    a
}

fn get(addr: &str, path: &str) -> Answer {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

fn get_auth(addr: &str, path: &str, token: &str) -> Answer {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    exchange(addr, req.as_bytes())
}

fn http(s: &Server) -> String {
    s.http_addr().expect("the server prints HTTP <addr>")
}

// ---------------------------------------------------------------------------
// A strict parser of the text exposition format 0.0.4.

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Family {
    kind: String,
    samples: Vec<Sample>,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// The family a sample belongs to: its name, or for histograms its name
/// without `_bucket`, `_sum` or `_count`.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.get(base).is_some_and(|f| f.kind == "histogram")
        {
            return base;
        }
    }
    name
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label=\"");
        assert!(is_name(k), "label name {k:?}");
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("closing quote");
            match c {
                '\\' => match chars.next().expect("escape").1 {
                    '\\' => v.push('\\'),
                    '"' => v.push('"'),
                    'n' => v.push('\n'),
                    e => panic!("bad escape \\{e}"),
                },
                '"' => break i,
                c => v.push(c),
            }
        };
        assert!(out.insert(k.to_string(), v).is_none(), "label {k} twice");
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    assert!(text.ends_with('\n'), "ends with a newline");
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "two HELP lines for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(helped.contains(name), "TYPE of {name} before its HELP");
            assert!(!families.contains_key(name), "two TYPE lines for {name}");
            families.insert(
                name.to_string(),
                Family {
                    kind: kind.to_string(),
                    samples: Vec::new(),
                },
            );
            current = Some(name.to_string());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("closing brace"))),
            None => (series, BTreeMap::new()),
        };
        assert!(is_name(name), "{line}");
        let fam = family_of(name, &families).to_string();
        assert_eq!(
            current.as_deref(),
            Some(fam.as_str()),
            "sample {name} outside its family's block"
        );
        let f = families.get_mut(&fam).expect("family");
        let s = Sample {
            name: name.to_string(),
            labels,
            value,
        };
        assert!(
            !f.samples
                .iter()
                .any(|o| o.name == s.name && o.labels == s.labels),
            "duplicate series {line}"
        );
        f.samples.push(s);
    }
    for (name, f) in &families {
        assert!(name.starts_with("smss_"), "{name}: smss_ prefix");
        match f.kind.as_str() {
            "counter" => {
                assert!(name.ends_with("_total"), "counter {name} ends in _total");
                for s in &f.samples {
                    assert!(s.value >= 0.0 && s.value.is_finite(), "{name}");
                }
            }
            "histogram" => check_histogram(name, f),
            _ => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
        }
    }
    families
}

fn check_histogram(name: &str, f: &Family) {
    assert!(name.ends_with("_seconds"), "{name}: base unit in the name");
    let buckets: Vec<&Sample> = f
        .samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket"))
        .collect();
    assert!(buckets.len() >= 2, "{name}: buckets");
    let mut last_le = f64::NEG_INFINITY;
    let mut last_count = 0.0;
    for b in &buckets {
        let le = match b.labels.get("le").expect("le").as_str() {
            "+Inf" => f64::INFINITY,
            v => v.parse().expect("le number"),
        };
        assert!(le > last_le, "{name}: le increasing");
        assert!(b.value >= last_count, "{name}: buckets cumulative");
        last_le = le;
        last_count = b.value;
    }
    assert_eq!(last_le, f64::INFINITY, "{name}: the last bucket is +Inf");
    let count = f
        .samples
        .iter()
        .find(|s| s.name == format!("{name}_count"))
        .expect("_count");
    assert!(f.samples.iter().any(|s| s.name == format!("{name}_sum")));
    assert_eq!(count.value, last_count, "{name}: +Inf bucket = _count");
}

fn scrape(addr: &str) -> BTreeMap<String, Family> {
    let a = get(addr, "/metrics");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_exposition(&a.body)
}

fn value(m: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let f = m
        .get(family_of(name, m))
        .unwrap_or_else(|| panic!("no family {name}"));
    f.samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

fn stat(c: &mut Client, name: &str) -> f64 {
    common::stat(c, name) as f64
}

/// Every counter series of `a` is in `b` and not lower.
fn counters_never_decrease(a: &BTreeMap<String, Family>, b: &BTreeMap<String, Family>) {
    for (name, fa) in a {
        if fa.kind == "gauge" {
            continue;
        }
        let fb = b.get(name).expect("family still there");
        for s in &fa.samples {
            if s.name.ends_with("_sum")
                || fa.kind == "counter"
                || s.name.ends_with("_bucket")
                || s.name.ends_with("_count")
            {
                let later = fb
                    .samples
                    .iter()
                    .find(|o| o.name == s.name && o.labels == s.labels)
                    .unwrap_or_else(|| panic!("{} {:?} gone", s.name, s.labels));
                assert!(later.value >= s.value, "{} went down", s.name);
            }
        }
    }
}

fn consume_one_batch(s: &Server, topic: &str, group: &str, batch: usize) {
    let mut c = s.client();
    c.set_timeout(Some(WAIT)).expect("timeout");
    let opts = SubOptions {
        batch: Some(batch),
        group: Some(group.to_string()),
        ..SubOptions::default()
    };
    c.subscribe(topic, "0", &opts).expect("SUB");
    loop {
        match c.next_event().expect("event") {
            SubEvent::Batch(_) => break,
            SubEvent::Alive | SubEvent::Standby => continue,
            SubEvent::End(e) => panic!("ended: {e}"),
        }
    }
    c.ack().expect("ACK");
    c.stop().expect("STOP");
}

#[test]
fn metrics_follow_the_exposition_format_and_match_stats() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let addr = http(&s);
    let mut c = s.client();
    c.create("orders", 0).expect("CREATE");
    c.create("audit \"log\"", 0)
        .expect_err("a topic name with spaces is refused");
    c.create("audit", 0).expect("CREATE");
    for i in 0..30 {
        c.publish("orders", format!("order {i}").as_bytes())
            .expect("PUB");
    }
    c.mpublish("audit", &[b"a", b"bb"]).expect("MPUB");
    c.dpublish("orders", 3_600_000, b"later").expect("DPUB");
    consume_one_batch(&s, "orders", "billing", 10);

    let m1 = scrape(&addr);
    assert_eq!(
        value(&m1, "smss_messages_published_total", &[]),
        stat(&mut c, "messages_published")
    );
    assert_eq!(value(&m1, "smss_messages_published_total", &[]), 32.0);
    assert_eq!(value(&m1, "smss_topics", &[]), stat(&mut c, "topics"));
    assert_eq!(value(&m1, "smss_groups", &[]), 1.0);
    assert_eq!(value(&m1, "smss_delayed_messages", &[]), 1.0);
    assert_eq!(
        value(&m1, "smss_disk_used_bytes", &[]),
        stat(&mut c, "disk_bytes")
    );
    assert_eq!(
        value(&m1, "smss_last_event_id", &[]),
        stat(&mut c, "last_event_id")
    );
    assert_eq!(value(&m1, "smss_role", &[("role", "master")]), 1.0);
    assert_eq!(value(&m1, "smss_writer_poisoned", &[]), 0.0);
    assert_eq!(
        value(&m1, "smss_topic_messages", &[("topic", "orders")]),
        30.0
    );
    assert_eq!(
        value(&m1, "smss_topic_messages", &[("topic", "audit")]),
        2.0
    );
    assert_eq!(
        value(
            &m1,
            "smss_topic_published_bytes_total",
            &[("topic", "audit")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &m1,
            "smss_group_lag_messages",
            &[("topic", "orders"), ("group", "billing")]
        ),
        20.0
    );
    // The batch after the ACK may have gone out before the STOP: delivered,
    // never acknowledged.
    assert!(value(&m1, "smss_messages_delivered_total", &[]) >= 10.0);
    assert_eq!(value(&m1, "smss_messages_acked_total", &[]), 10.0);
    // 30 PUBs, one MPUB, one DPUB: each answered, each observed.
    assert_eq!(value(&m1, "smss_publish_duration_seconds_count", &[]), 32.0);
    assert!(value(&m1, "smss_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(value(&m1, "smss_disk_free_bytes", &[]) > 0.0);

    for i in 0..5 {
        c.publish("audit", format!("more {i}").as_bytes())
            .expect("PUB");
    }
    let m2 = scrape(&addr);
    counters_never_decrease(&m1, &m2);
    assert_eq!(value(&m2, "smss_messages_published_total", &[]), 37.0);
    assert_eq!(
        value(&m2, "smss_messages_published_total", &[]),
        stat(&mut c, "messages_published")
    );
}

#[test]
fn healthz_is_ok_and_honours_the_group_threshold() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let addr = http(&s);
    let a = get(&addr, "/healthz");
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
    let mut c = s.client();
    c.create("jobs", 0).expect("CREATE");
    for i in 0..5 {
        c.publish("jobs", format!("{i}").as_bytes()).expect("PUB");
    }
    consume_one_batch(&s, "jobs", "workers", 2);
    assert_eq!(get(&addr, "/healthz?maxGroupLag=3").status, 200);
    let a = get(&addr, "/healthz?maxGroupLag=2");
    assert_eq!(a.status, 503);
    assert_eq!(a.body.lines().count(), 1, "one line: {}", a.body);
    assert!(
        a.body.contains("workers") && a.body.contains("jobs"),
        "{}",
        a.body
    );
    let a = get(&addr, "/healthz?maxGroupLag=lots");
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(get(&addr, "/healthz?maxSlaveLagSeconds=0.5").status, 200);
}

#[test]
fn healthz_is_503_while_min_slaves_cannot_be_met() {
    let dir = common::tempdir();
    let s = Server::start_with(
        dir.path(),
        &Opts::new().section("replication:\n  minSlaves: 1"),
    );
    let a = get(&http(&s), "/healthz");
    assert_eq!(a.status, 503);
    assert!(a.body.contains("minSlaves"), "{}", a.body);
}

#[test]
fn healthz_follows_a_frozen_slave_past_the_lag_threshold() {
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    // The master must not drop the frozen slave during the test.
    let master = Server::start_with(
        mdir.path(),
        &Opts::new().section("replication:\n  slaveTimeoutMs: 120000"),
    );
    let slave = Server::start_with_args(
        sdir.path(),
        &Opts::new(),
        &["--role", "slave", "--master", &master.addr],
    );
    let (mh, sh) = (http(&master), http(&slave));
    let mut m = master.client();
    m.create("t", 0).expect("CREATE");
    let last = m.publish("t", b"x").expect("PUB");
    poll("the slave to stream and have everything", || {
        let slaves = m.slaves().expect("SLAVES");
        match slaves.as_slice() {
            [s] if s.state == "streaming" && s.acked_event_id == last => Ok(()),
            _ => Err(slaves),
        }
    });
    assert_eq!(
        get(&sh, "/healthz").status,
        200,
        "a streaming slave is healthy"
    );
    assert_eq!(get(&mh, "/healthz?maxSlaveLagSeconds=1").status, 200);
    let page = get(&mh, "/");
    assert!(page.body.contains("streaming"), "the page lists the slave");

    let frozen = Frozen::new(&slave);
    m.publish("t", b"y").expect("PUB (async replication)");
    let started = Instant::now();
    let mut last_body = String::new();
    let turned = poll_until(WAIT, || {
        let a = get(&mh, "/healthz?maxSlaveLagSeconds=1");
        last_body = a.body;
        a.status == 503
    });
    assert!(turned, "no 503 after {:?}: {last_body}", started.elapsed());
    assert!(last_body.contains("lags"), "{last_body}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the threshold"
    );
    // Without the threshold the master itself is fine.
    assert_eq!(get(&mh, "/healthz").status, 200);
    let m1 = scrape(&mh);
    assert!(m1["smss_repl_slave_lag_seconds"].samples[0].value >= 1.0);
    assert_eq!(m1["smss_repl_slave_lag_events"].samples[0].value, 1.0);
    drop(frozen);
    assert!(
        poll_until(WAIT, || get(&mh, "/healthz?maxSlaveLagSeconds=1").status
            == 200),
        "healthy again once the slave catches up"
    );
    let sm = scrape(&sh);
    assert_eq!(value(&sm, "smss_role", &[("role", "slave")]), 1.0);
    assert_eq!(value(&sm, "smss_repl_streaming", &[]), 1.0);
}

#[test]
fn the_status_page_is_one_self_contained_html_document() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("<b>odd</b>", 0).expect_err("not a topic name");
    c.create("events", 0).expect("CREATE");
    c.publish("events", b"e").expect("PUB");
    let a = get(&http(&s), "/");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("Content-Type"), Some("text/html; charset=utf-8"));
    let b = &a.body;
    assert!(b.starts_with("<!DOCTYPE html>"));
    assert!(b.contains("<meta http-equiv=\"refresh\""));
    for id in [
        "role",
        "health",
        "chart",
        "overview",
        "replication",
        "disk",
        "topics",
        "delayed",
    ] {
        assert!(b.contains(&format!("id=\"{id}\"")), "section {id}");
    }
    assert!(b.contains("events") && b.contains("master") && b.contains("epoch"));
    assert!(
        !b.contains("src=") && !b.contains("<link") && !b.contains("<script"),
        "no external assets"
    );
}

#[test]
fn requests_are_bounded() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let addr = http(&s);
    // Oversized: 431, and the connection closes.
    let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(exchange(&addr, big.as_bytes()).status, 431);
    // A head that never ends is cut at the limit as well.
    let endless = format!("GET / HTTP/1.1\r\nX-Pad: {}", "a".repeat(9000));
    assert_eq!(exchange(&addr, endless.as_bytes()).status, 431);
    // Slow: half a request, then silence; closed after the read timeout.
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.set_read_timeout(Some(WAIT)).expect("timeout");
    slow.write_all(b"GET /metr").expect("send");
    let started = Instant::now();
    let mut buf = Vec::new();
    slow.read_to_end(&mut buf).expect("read until closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert_eq!(parse_answer(&buf).status, 408);
    // Meanwhile the protocol port answered at once.
    let mut c = s.client();
    c.ping().expect("PING");
    // Only GET; unknown paths; garbage.
    let a = exchange(
        &addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(a.status, 405);
    assert_eq!(a.header("Allow"), Some("GET"));
    assert_eq!(exchange(&addr, b"DELETE / HTTP/1.1\r\n\r\n").status, 405);
    assert_eq!(get(&addr, "/admin").status, 404);
    assert_eq!(exchange(&addr, b"hello\r\n\r\n").status, 400);
    // And it still serves.
    assert_eq!(get(&addr, "/healthz").status, 200);
}

#[test]
fn a_token_guards_metrics_and_the_page() {
    let dir = common::tempdir();
    let s = Server::start_with(
        dir.path(),
        &Opts::new().section("auth:\n  token: s3cret-token"),
    );
    let addr = http(&s);
    for path in ["/metrics", "/"] {
        let a = get(&addr, path);
        assert_eq!(a.status, 401, "{path}");
        assert!(
            a.header("WWW-Authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
        assert_eq!(get_auth(&addr, path, "wrong").status, 401, "{path}");
        assert_eq!(get_auth(&addr, path, "s3cret-token").status, 200, "{path}");
    }
    assert_eq!(get(&addr, "/healthz").status, 200, "open by default");
    drop(s);

    let dir = common::tempdir();
    let s = Server::start_with(
        dir.path(),
        &Opts::new()
            .section("auth:\n  token: s3cret-token")
            .section("http:\n  port: 0\n  healthAuth: true"),
    );
    let addr = http(&s);
    assert_eq!(get(&addr, "/healthz").status, 401);
    assert_eq!(get_auth(&addr, "/healthz", "s3cret-token").status, 200);
}

#[test]
fn http_can_be_turned_off() {
    let dir = common::tempdir();
    let s = Server::start_with(dir.path(), &Opts::new().section("http:\n  enabled: false"));
    assert_eq!(s.http_addr(), None);
    s.client().ping().expect("the queue serves");
}

#[test]
fn chromium_renders_the_status_page() {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        println!("SKIP chromium_renders_the_status_page: chromium not installed");
        return;
    };
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("orders", 0).expect("CREATE");
    c.publish("orders", b"o").expect("PUB");
    let shot = dir.path().join("page.png");
    let mut child = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,900")
        .arg(format!("http://{}/", http(&s)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run chromium");
    let status = common::wait_timeout(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium did not finish in 60 s");
    }
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.len() > 10_000,
        "a real picture, not an empty page: {} bytes",
        png.len()
    );
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// A group subscriber that takes one batch of `topic` and leaves without
/// an ACK; returns how many messages the batch held.
fn take_one_batch_without_ack(s: &Server, topic: &str, opts: &SubOptions) -> usize {
    let mut c = s.client();
    c.set_timeout(Some(WAIT)).expect("timeout");
    c.subscribe(topic, "-", opts).expect("SUB");
    loop {
        match c.next_event().expect("event") {
            SubEvent::Batch(m) => return m.len(),
            SubEvent::Alive | SubEvent::Standby => continue,
            SubEvent::End(e) => panic!("ended: {e}"),
        }
    }
}

#[test]
fn group_metrics_count_pending_redeliveries_and_dead_letters() {
    let d = common::tempdir();
    let s = Server::start(d.path());
    let addr = http(&s);
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    for i in 0..5 {
        c.publish("t", format!("m{i}").as_bytes()).expect("PUB");
    }
    let g = [("topic", "t"), ("group", "g")];
    let opts = |batch, max_deliver| SubOptions {
        batch: Some(batch),
        group: Some("g".into()),
        max_deliver,
        ..SubOptions::default()
    };
    // A batch of 3 delivered, not ACKed yet: 3 pending.
    let mut holder = s.client();
    holder.set_timeout(Some(WAIT)).expect("timeout");
    holder.subscribe("t", "-", &opts(3, None)).expect("SUB");
    let n = loop {
        match holder.next_event().expect("event") {
            SubEvent::Batch(m) => break m.len(),
            _ => continue,
        }
    };
    assert_eq!(n, 3);
    assert_eq!(
        value(&scrape(&addr), "smss_group_pending_messages", &g),
        3.0
    );
    // It leaves without an ACK: one redelivery owed, nothing pending.
    drop(holder);
    let counted = common::repl::poll_until(WAIT, || {
        value(&scrape(&addr), "smss_group_redeliveries_total", &g) == 1.0
    });
    assert!(counted, "the failed delivery is counted");
    assert_eq!(
        value(&scrape(&addr), "smss_group_pending_messages", &g),
        0.0
    );
    // The head message fails alone too; with maxDeliver=1 the next
    // subscriber gives up on it.
    assert_eq!(take_one_batch_without_ack(&s, "t", &opts(3, None)), 1);
    let twice = common::repl::poll_until(WAIT, || {
        value(&scrape(&addr), "smss_group_redeliveries_total", &g) == 2.0
    });
    assert!(twice);
    let next = take_one_batch_without_ack(&s, "t", &opts(3, Some(1)));
    assert!(next >= 1);
    let m = scrape(&addr);
    assert_eq!(value(&m, "smss_group_dead_lettered_total", &g), 1.0);
    assert_eq!(stat(&mut c, "dead_lettered"), 1.0);
}

/// A shared group counts every member as an active subscriber, in
/// /metrics and on the status page.
#[test]
fn a_shared_groups_members_show_in_metrics_and_on_the_page() {
    let d = common::tempdir();
    let s = Server::start(d.path());
    let addr = http(&s);
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    for i in 0..4 {
        c.publish("t", format!("m{i}").as_bytes()).expect("PUB");
    }
    let opts = SubOptions {
        batch: Some(1),
        group: Some("pool".into()),
        shared: true,
        ..SubOptions::default()
    };
    // Two members, each holding one batch (the GROUPS line has them).
    let members: Vec<Client> = (0..2)
        .map(|_| {
            let mut m = s.client();
            m.set_timeout(Some(WAIT)).expect("timeout");
            m.subscribe("t", "-", &opts).expect("SUB shared");
            loop {
                match m.next_event().expect("event") {
                    SubEvent::Batch(_) => break m,
                    SubEvent::Alive => continue,
                    other => panic!("{other:?}"),
                }
            }
        })
        .collect();
    let g = [("topic", "t"), ("group", "pool"), ("state", "active")];
    assert_eq!(value(&scrape(&addr), "smss_group_subscribers", &g), 2.0);
    let page = get(&addr, "/");
    assert!(
        page.body.contains("shared, 2 members"),
        "the page shows the members: {}",
        page.body
    );
    drop(members);
}
