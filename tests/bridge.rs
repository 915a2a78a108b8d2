//! `smss-cli bridge` into real NATS JetStream, end to end: the real `smss`
//! binary, real nats-server processes (each on its own loopback port and
//! directory) and the bridge as its own process, stopped by PID in a Drop
//! guard. What the stream holds is read back with smss's NATS client and
//! compared with what smss acknowledged: every message exactly once, in
//! order per topic, with its headers; across a bridge killed -9 at random
//! moments (seeded, `SMSS_BRIDGE_SEED=<n>` replays), an outage longer than
//! the stream's duplicate window, a 3-node cluster whose stream leader is
//! killed -9, and an smss master killed -9 and its slave promoted. Also the
//! dead-letter path for a message NATS refuses, and a topic name that is
//! not a NATS subject. Each test prints a SKIP line and passes when
//! nats-server is not installed.

mod common;
mod nats_util;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::repl::{poll_until, slave_args, wait_for_id};
use common::{Opts, Server, WAIT, tempdir};
use nats_util::{NatsServer, bin_or_skip, cluster};
use smss::nats::{Conn, JetStream, Options, PubMsg, StoredMsg, StreamConfig};

const T: Duration = Duration::from_secs(5);

/// The bridge process; killed (-9) and reaped when dropped.
struct Bridge {
    child: Child,
    log: std::path::PathBuf,
}

impl Bridge {
    fn start(dir: &Path, smss: &[&str], nats: &[&str], extra: &[&str]) -> Bridge {
        let log = dir.join(format!("bridge-{}.log", nonce()));
        let err = std::fs::File::create(&log).expect("bridge log");
        let child = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
            .arg("bridge")
            .arg("--smss")
            .arg(smss.join(","))
            .arg("--nats")
            .arg(nats.join(","))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start smss-cli bridge");
        Bridge { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and its exit status.
    fn term(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        common::wait_timeout(&mut self.child, WAIT).expect("the bridge ends on SIGTERM")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn js(addrs: &[&str]) -> JetStream {
    let mut o = Options::new(addrs);
    o.timeout = T;
    JetStream::new(Conn::connect(&o).expect("connect to NATS"))
}

/// Every message of the stream, by sequence (a new connection per try:
/// under a cluster's election a read can fail).
fn stream_messages(addrs: &[&str], stream: &str) -> Vec<StoredMsg> {
    let mut j = js(addrs);
    let info = j.stream_info(stream).expect("info").expect("stream");
    (info.first_seq..=info.last_seq)
        .filter_map(|seq| j.get_by_seq(stream, seq).expect("get"))
        .collect()
}

/// Polls until the stream holds `n` messages (or fails the test).
fn wait_stream_count(addrs: &[&str], stream: &str, n: u64, bridge: &Bridge) {
    let ok = poll_until(Duration::from_secs(60), || {
        let mut o = Options::new(addrs);
        o.timeout = Duration::from_secs(2);
        let Ok(c) = Conn::connect(&o) else {
            return false;
        };
        let mut j = JetStream::new(c);
        matches!(j.stream_info(stream), Ok(Some(i)) if i.messages >= n)
    });
    assert!(
        ok,
        "the stream never held {n} messages; bridge log:\n{}",
        bridge.log_text()
    );
}

/// The stream's messages of `subject` as smss event ids, in stream order;
/// asserts each one's msg id and Smss-* headers agree.
fn ids_of(msgs: &[StoredMsg], subject: &str) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.subject == subject)
        .map(|m| {
            let id: u64 = m.header("Smss-Id").expect("Smss-Id").parse().expect("id");
            let msg_id = m.header("Nats-Msg-Id").expect("Nats-Msg-Id");
            assert!(msg_id.ends_with(&format!("-{id}")), "{msg_id} vs {id}");
            assert_eq!(
                Some(subject.trim_start_matches("smss.")),
                m.header("Smss-Topic")
            );
            id
        })
        .collect()
}

/// Exactly the ids acknowledged, once each, in increasing order.
fn assert_exactly(got: &[u64], acked: &[u64], what: &str) {
    let mut dup = HashMap::new();
    for id in got {
        *dup.entry(id).or_insert(0) += 1;
    }
    let twice: Vec<_> = dup.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: written twice: {twice:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{what}: out of order");
    for id in acked {
        assert!(dup.contains_key(id), "{what}: acknowledged id {id} missing");
    }
}

/// A thread publishing `total` messages to each of `topics` in MPUBs of
/// `chunk`, as fast as smss takes them; returns the acknowledged ids per
/// topic when done.
fn publisher(
    addr: String,
    topics: Vec<&'static str>,
    total: usize,
    chunk: usize,
) -> std::thread::JoinHandle<HashMap<&'static str, Vec<u64>>> {
    std::thread::spawn(move || {
        let mut c = smss::client::Client::connect(&addr).expect("connect");
        c.set_timeout(Some(WAIT)).expect("timeout");
        let mut acked: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut sent = 0;
        while sent < total {
            let n = chunk.min(total - sent);
            let payloads: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("m{}", sent + i).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            for t in &topics {
                let (first, last) = c.mpublish(t, &refs).expect("MPUB");
                acked.entry(t).or_default().extend(first..=last);
            }
            sent += n;
        }
        acked
    })
}

fn smss_server(dir: &Path) -> Server {
    let data = dir.join("smss");
    std::fs::create_dir_all(&data).expect("smss dir");
    Server::start(&data)
}

#[test]
fn every_message_once_in_order_with_headers_dead_letters_and_ends() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempdir();
    // A small max_payload: the 20 KB message below is one NATS refuses.
    let nats = NatsServer::start(&bin, d.path(), "n1", Some("max_payload: 8192\n"));
    let s = smss_server(d.path());
    let mut c = s.client();
    for t in ["orders", "audit", "dead", "bad..name"] {
        c.create(t, 0).expect("CREATE");
    }
    let mut orders = Vec::new();
    for i in 0..300 {
        let id = c
            .publish_with_headers("orders", &[("kind", "early"), ("n", &i.to_string())], b"o")
            .expect("PUB");
        orders.push(id);
    }
    let mut audit = Vec::new();
    for _ in 0..200 {
        audit.push(c.publish("audit", b"a").expect("PUB"));
    }
    c.publish("bad..name", b"never bridged").expect("PUB");
    // A delayed message reaches the stream when it is due, like any
    // subscriber sees it.
    let delayed = c.dpublish("audit", 300, b"later").expect("DPUB");
    let bridge = Bridge::start(
        d.path(),
        &[&s.addr],
        &[&nats.addr],
        &["--create-stream", "--max-deliver", "2", "--dlq", "dead"],
    );
    let mut big = 0;
    for i in 0..200 {
        if i == 100 {
            big = c.publish("orders", &vec![b'x'; 20_000]).expect("PUB big");
        }
        let id = c
            .publish_with_headers("orders", &[("kind", "late")], b"o")
            .expect("PUB");
        orders.push(id);
    }
    wait_stream_count(&[&nats.addr], "SMSS", 701, &bridge);
    let msgs = stream_messages(&[&nats.addr], "SMSS");
    let fired: Vec<&StoredMsg> = msgs
        .iter()
        .filter(|m| m.subject == "smss.audit" && m.payload == b"later")
        .collect();
    assert_eq!(fired.len(), 1, "the delayed message, once");
    let fired_id: u64 = fired[0]
        .header("Smss-Id")
        .expect("id")
        .parse()
        .expect("num");
    assert!(fired_id > delayed, "delivered when due, as a later event");
    audit.push(fired_id);
    assert_exactly(&ids_of(&msgs, "smss.orders"), &orders, "orders");
    assert_eq!(ids_of(&msgs, "smss.orders").len(), 500);
    assert_exactly(&ids_of(&msgs, "smss.audit"), &audit, "audit");
    assert!(msgs.iter().all(|m| !m.subject.contains("bad")));
    // Headers: the message's own, then smss's.
    let first = msgs
        .iter()
        .find(|m| m.subject == "smss.orders")
        .expect("one");
    assert_eq!(first.header("kind"), Some("early"));
    assert_eq!(first.header("n"), Some("0"));
    assert!(
        first
            .header("Smss-Timestamp")
            .is_some_and(|t| t.len() >= 13)
    );
    assert_eq!(first.payload, b"o");
    // The refused message went to smss's dead-letter topic, named.
    assert!(
        poll_until(WAIT, || c.info("dead").expect("INFO").messages == 1),
        "no dead letter; bridge log:\n{}",
        bridge.log_text()
    );
    let dead = common::repl::messages(&mut c, "dead");
    let want = big.to_string();
    assert!(
        dead[0].2.iter().any(|(k, v)| k == "dlq.id" && *v == want),
        "{:?}",
        dead[0].2
    );
    let log = bridge.log_text();
    assert!(log.contains("bad..name"), "{log}");
    // A deleted topic's subject is purged from the stream.
    c.delete("audit").expect("DELETE");
    assert!(
        poll_until(WAIT, || {
            js(&[&nats.addr])
                .last_by_subject("SMSS", "smss.audit")
                .expect("get")
                .is_none()
        }),
        "smss.audit not purged; bridge log:\n{}",
        bridge.log_text()
    );
    assert!(bridge.term().success());
}

#[test]
fn a_bridge_killed_at_random_moments_writes_nothing_twice() {
    let Some(bin) = bin_or_skip() else { return };
    let seed = common::seed::env_u64("SMSS_BRIDGE_SEED").unwrap_or_else(common::seed::time_seed);
    println!("seed {seed:#x} (SMSS_BRIDGE_SEED={seed:#x} replays it)");
    let mut rng = common::seed::Rng(seed);
    let d = tempdir();
    let nats = NatsServer::start(&bin, d.path(), "n1", None);
    let s = smss_server(d.path());
    let mut c = s.client();
    c.create("t1", 0).expect("CREATE");
    c.create("t2", 0).expect("CREATE");
    let pubs = publisher(s.addr.clone(), vec!["t1", "t2"], 6000, 50);
    for round in 0..6 {
        let b = Bridge::start(
            d.path(),
            &[&s.addr],
            &[&nats.addr],
            &["--create-stream", "--batch", "64"],
        );
        // The moment of the kill is the point: random, from the seed.
        let wait = rng.range((20, 400));
        std::thread::sleep(Duration::from_millis(wait));
        println!("round {round}: kill -9 after {wait} ms");
        b.kill9();
    }
    let acked = pubs.join().expect("publisher");
    let b = Bridge::start(d.path(), &[&s.addr], &[&nats.addr], &[]);
    wait_stream_count(&[&nats.addr], "SMSS", 12_000, &b);
    let msgs = stream_messages(&[&nats.addr], "SMSS");
    assert_eq!(msgs.len(), 12_000, "seed {seed:#x}");
    for t in ["t1", "t2"] {
        assert_exactly(
            &ids_of(&msgs, &format!("smss.{t}")),
            &acked[t],
            &format!("{t}, seed {seed:#x}"),
        );
    }
}

#[test]
fn an_outage_longer_than_the_duplicate_window_duplicates_nothing() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempdir();
    let nats = NatsServer::start(&bin, d.path(), "n1", None);
    // The stream remembers msg ids for 2 s only.
    let mut cfg = StreamConfig::new("SMSS", &["smss.>"]);
    cfg.duplicate_window = Duration::from_secs(2);
    let mut j = js(&[&nats.addr]);
    j.create_stream(&cfg).expect("create");
    let s = smss_server(d.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let payloads: Vec<Vec<u8>> = (0..2000).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let mut acked: Vec<u64> = Vec::new();
    for chunk in refs.chunks(500) {
        let (first, last) = c.mpublish("t", chunk).expect("MPUB");
        acked.extend(first..=last);
    }
    // An earlier bridge stored the first 700 and died before its ACK
    // reached smss: the stream holds them, the group has no position.
    let stats = c.stats().expect("STATS");
    let (_, hex) = stats.iter().find(|(k, _)| k == "history").expect("history");
    let history = u64::from_str_radix(hex, 16).expect("hex");
    let stored: Vec<PubMsg> = acked[..700]
        .iter()
        .map(|&id| PubMsg {
            subject: "smss.t".into(),
            msg_id: smss::bridge::msg_id(history, id),
            headers: vec![
                ("Smss-Topic".into(), "t".into()),
                ("Smss-Id".into(), id.to_string()),
            ],
            payload: b"earlier run".to_vec(),
        })
        .collect();
    for r in j.publish_chain(&stored, T) {
        r.expect("stored by the earlier run");
    }
    // Longer than the window: the stream forgot those ids.
    std::thread::sleep(Duration::from_millis(2500));
    let b = Bridge::start(d.path(), &[&s.addr], &[&nats.addr], &["--batch", "100"]);
    // Killed again mid-stream, and down longer than the window again.
    wait_stream_count(&[&nats.addr], "SMSS", 1200, &b);
    b.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    let b = Bridge::start(d.path(), &[&s.addr], &[&nats.addr], &[]);
    wait_stream_count(&[&nats.addr], "SMSS", 2000, &b);
    let msgs = stream_messages(&[&nats.addr], "SMSS");
    assert_eq!(msgs.len(), 2000, "bridge log:\n{}", b.log_text());
    assert_exactly(&ids_of(&msgs, "smss.t"), &acked, "t");
    // The first 700 are the earlier run's, not written again.
    assert!(msgs[..700].iter().all(|m| m.payload == b"earlier run"));
    assert_eq!(msgs[700].payload, b"m700");
}

#[test]
fn the_stream_leader_killed_in_a_cluster_loses_and_repeats_nothing() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempdir();
    let mut nodes = cluster(&bin, d.path());
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let s = smss_server(d.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    // The cluster may still be electing its meta leader: the bridge
    // retries creating the stream by exiting; start it when it can.
    let mut cfg = StreamConfig::new("SMSS", &["smss.>"]);
    cfg.replicas = 3;
    assert!(
        poll_until(Duration::from_secs(30), || {
            let mut o = Options::new(&addrs);
            o.timeout = Duration::from_secs(2);
            Conn::connect(&o)
                .map(JetStream::new)
                .is_ok_and(|mut j| j.create_stream(&cfg).is_ok())
        }),
        "the cluster never took the stream"
    );
    let pubs = publisher(s.addr.clone(), vec!["t"], 4000, 50);
    let b = Bridge::start(d.path(), &[&s.addr], &addrs, &["--ack-timeout-ms", "2000"]);
    wait_stream_count(&addrs, "SMSS", 1000, &b);
    let leader = js(&addrs)
        .stream_info("SMSS")
        .expect("info")
        .and_then(|i| i.cluster_leader)
        .expect("a stream leader");
    let victim = nodes
        .iter_mut()
        .find(|n| n.name == leader)
        .expect("leader node");
    victim.kill();
    let live: Vec<&str> = addrs
        .iter()
        .copied()
        .filter(|a| *a != victim.addr)
        .collect();
    let acked = pubs.join().expect("publisher");
    wait_stream_count(&live, "SMSS", 4000, &b);
    let msgs = stream_messages(&live, "SMSS");
    assert_eq!(msgs.len(), 4000, "bridge log:\n{}", b.log_text());
    assert_exactly(&ids_of(&msgs, "smss.t"), &acked["t"], "t");
}

#[test]
fn an_smss_master_killed_and_its_slave_promoted_while_bridging() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempdir();
    let nats = NatsServer::start(&bin, d.path(), "n1", None);
    let mdir = d.path().join("master");
    let sdir = d.path().join("slave");
    std::fs::create_dir_all(&mdir).expect("dir");
    std::fs::create_dir_all(&sdir).expect("dir");
    // Semi-sync: every acknowledged write is on the slave too.
    let repl = "replication:\n  sync: true\n  syncTimeoutMs: 10000\n";
    let master = Server::start_with(&mdir, &Opts::new().section(repl));
    let slave = Server::start_with_args(&sdir, &Opts::new(), &slave_args(&master.addr, &[]));
    let mut m = master.client();
    m.create("t", 0).expect("CREATE");
    let mut acked = Vec::new();
    for _ in 0..300 {
        acked.push(m.publish("t", b"before").expect("PUB"));
    }
    wait_for_id(&slave, None, *acked.last().expect("ids"));
    let b = Bridge::start(
        d.path(),
        &[&master.addr, &slave.addr],
        &[&nats.addr],
        &["--create-stream"],
    );
    wait_stream_count(&[&nats.addr], "SMSS", 300, &b);
    master.kill9();
    let mut sc = slave.client();
    sc.promote().expect("PROMOTE");
    for _ in 0..200 {
        acked.push(sc.publish("t", b"after").expect("PUB on the new master"));
    }
    wait_stream_count(&[&nats.addr], "SMSS", 500, &b);
    let msgs = stream_messages(&[&nats.addr], "SMSS");
    assert_eq!(msgs.len(), 500, "bridge log:\n{}", b.log_text());
    assert_exactly(&ids_of(&msgs, "smss.t"), &acked, "t");
}

/// The command line's NATS options reach the connection and the stream:
/// a user whose password comes from a file (a wrong one is refused by
/// name), and the created stream's replicas and duplicate window.
#[test]
fn nats_credentials_from_a_file_and_the_created_streams_settings() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempdir();
    let conf = "authorization {\n  user: bridge\n  password: \"s3cret\"\n}\n";
    let nats = NatsServer::start(&bin, d.path(), "n1", Some(conf));
    let s = smss_server(d.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let id = c.publish("t", b"x").expect("PUB");
    let wrong = d.path().join("wrong");
    std::fs::write(&wrong, "nope\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args([
            "bridge",
            "--smss",
            &s.addr,
            "--nats",
            &nats.addr,
            "--nats-user",
            "bridge",
        ])
        .arg("--nats-password-file")
        .arg(&wrong)
        .stdin(Stdio::null())
        .output()
        .expect("run smss-cli bridge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Authorization Violation"), "{err}");

    let right = d.path().join("password");
    std::fs::write(&right, "s3cret\n").expect("write");
    let pass = right.display().to_string();
    let b = Bridge::start(
        d.path(),
        &[&s.addr],
        &[&nats.addr],
        &[
            "--nats-user",
            "bridge",
            "--nats-password-file",
            &pass,
            "--create-stream",
            "--replicas",
            "1",
            "--dup-window-ms",
            "30000",
        ],
    );
    let mut o = Options::new(&[&nats.addr]);
    o.user = Some("bridge".into());
    o.pass = Some("s3cret".into());
    let ok = poll_until(WAIT, || {
        Conn::connect(&o)
            .map(JetStream::new)
            .is_ok_and(|mut j| matches!(j.stream_info("SMSS"), Ok(Some(i)) if i.messages == 1))
    });
    assert!(ok, "nothing bridged; log:\n{}", b.log_text());
    let mut j = JetStream::new(Conn::connect(&o).expect("connect"));
    let info = j.stream_info("SMSS").expect("info").expect("stream");
    assert_eq!(info.duplicate_window, Duration::from_secs(30));
    assert_eq!(info.num_replicas, 1);
    assert_eq!(info.subjects, vec!["smss.>".to_string()]);
    let m = j
        .last_by_subject("SMSS", "smss.t")
        .expect("get")
        .expect("one");
    assert_eq!(m.header("Smss-Id"), Some(id.to_string().as_str()));
}
