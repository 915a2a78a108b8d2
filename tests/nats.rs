//! The NATS client (src/nats/) against real nats-server processes started
//! here (Debian's v2.9.10 is the reference): connect and request, stream
//! create and info, chained pipelined publishes, dedup, headers read back,
//! TooBig, auth, reconnect to the next server, TLS, and a 3-node cluster
//! whose stream leader is killed mid-publish, twice. Each test prints a
//! SKIP line and passes when nats-server is not installed. Every server
//! listens on 127.0.0.1 only, on a port found free just before.

mod nats_util;

use std::time::{Duration, Instant};

use nats_util::{NatsServer, bin_or_skip, cluster, free_port};
use smss::nats::{
    Conn, ERR_WRONG_LAST_MSG_ID, JetStream, NatsError, Options, PubAck, PubMsg, StreamConfig,
};

const T: Duration = Duration::from_secs(5);

fn opts(addrs: &[&str]) -> Options {
    let mut o = Options::new(addrs);
    o.timeout = T;
    o.name = Some("smss-test".into());
    o
}

fn js(addr: &str) -> JetStream {
    JetStream::new(Conn::connect(&opts(&[addr])).expect("connect"))
}

fn msg(subject: &str, id: &str, payload: &[u8]) -> PubMsg {
    PubMsg {
        subject: subject.into(),
        msg_id: id.into(),
        headers: vec![],
        payload: payload.to_vec(),
    }
}

fn all_ok(results: Vec<Result<PubAck, NatsError>>) -> Vec<PubAck> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("message {i}: {e}")))
        .collect()
}

#[test]
fn connect_and_request_round_trip() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let s = NatsServer::start(&bin, d.path(), "n1", None);
    let mut c = Conn::connect(&opts(&[&s.addr])).expect("connect");
    assert_eq!(c.server(), s.addr);
    assert_eq!(c.server_name(), "n1");
    assert_eq!(c.max_payload(), 1024 * 1024);
    c.ping(T).expect("ping");
    // The JetStream account info is a request with a JSON reply.
    let m = c.request("$JS.API.INFO", &[], b"", T).expect("request");
    assert_eq!(m.status, None);
    let text = String::from_utf8_lossy(&m.payload);
    assert!(text.contains("account_info_response"), "{text}");
    // Nobody listens here: a 503 status, told apart from a timeout.
    let e = c
        .request("nobody.home", &[], b"x", T)
        .expect_err("no responders");
    assert!(matches!(e, NatsError::NoResponders { .. }), "{e}");
    assert!(e.to_string().contains("nobody.home"), "{e}");
    // And the connection goes on.
    c.request("$JS.API.INFO", &[], b"", T)
        .expect("request after 503");
    // Bad arguments are refused before sending.
    let e = c.request("a b", &[], b"", T).expect_err("bad subject");
    assert!(matches!(e, NatsError::BadArgument(_)), "{e}");
}

#[test]
fn stream_create_and_info() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let s = NatsServer::start(&bin, d.path(), "n1", None);
    let mut js = js(&s.addr);
    assert_eq!(js.stream_info("ORDERS").expect("info"), None);
    let mut cfg = StreamConfig::new("ORDERS", &["orders.>", "more.x"]);
    cfg.duplicate_window = Duration::from_secs(30);
    cfg.max_age = Duration::from_secs(3600);
    let created = js.create_stream(&cfg).expect("create");
    assert_eq!(created.name, "ORDERS");
    let info = js.stream_info("ORDERS").expect("info").expect("exists");
    assert_eq!(info.subjects, vec!["orders.>", "more.x"]);
    assert_eq!(info.num_replicas, 1);
    assert_eq!(info.duplicate_window, Duration::from_secs(30));
    assert_eq!(info.max_age, Duration::from_secs(3600));
    assert_eq!((info.messages, info.first_seq, info.last_seq), (0, 0, 0));
    assert_eq!(info.cluster_leader, None);
    // The same config again is fine; another one is a clear API error.
    js.create_stream(&cfg).expect("create again, same config");
    cfg.subjects = vec!["other".into()];
    let e = js.create_stream(&cfg).expect_err("different config");
    assert!(
        matches!(e, NatsError::Api { .. }) && !e.is_retryable(),
        "{e}"
    );
    assert!(e.to_string().contains("ORDERS"), "{e}");
}

#[test]
fn publish_chain_of_1000_acks_in_order() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let s = NatsServer::start(&bin, d.path(), "n1", None);
    let mut js = js(&s.addr);
    js.create_stream(&StreamConfig::new("S", &["s.>"]))
        .expect("create");
    let payload = vec![b'x'; 200];
    let msgs: Vec<PubMsg> = (0..1000)
        .map(|i| msg("s.a", &format!("m-{i}"), &payload))
        .collect();
    let acks = all_ok(js.publish_chain(&msgs, Duration::from_secs(10)));
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    assert!(acks.iter().all(|a| a.stream == "S" && !a.duplicate));
    let info = js.stream_info("S").expect("info").expect("exists");
    assert_eq!(
        (info.messages, info.first_seq, info.last_seq),
        (1000, 1, 1000)
    );

    // A rough rate: 20 chains of 1000 (200-byte messages), file storage.
    let start = Instant::now();
    for round in 0..20 {
        let msgs: Vec<PubMsg> = (0..1000)
            .map(|i| msg("s.a", &format!("r{round}-{i}"), &payload))
            .collect();
        all_ok(js.publish_chain(&msgs, Duration::from_secs(10)));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "RATE: 20000 chained pipelined publishes (200 B, chains of 1000) in {secs:.2}s = {:.0} msg/s",
        20000.0 / secs
    );
}

#[test]
fn dedup_same_msg_id_is_stored_once() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let s = NatsServer::start(&bin, d.path(), "n1", None);
    let mut js = js(&s.addr);
    js.create_stream(&StreamConfig::new("D", &["d"]))
        .expect("create");
    let first = js.publish(&msg("d", "id-1", b"one"), T).expect("first");
    let again = js.publish(&msg("d", "id-1", b"one"), T).expect("again");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    // A whole chain sent twice: the second time every ack is a duplicate.
    let chain: Vec<PubMsg> = (2..6).map(|i| msg("d", &format!("id-{i}"), b"x")).collect();
    let a = all_ok(js.publish_chain_after(Some("id-1"), &chain, T));
    let b = all_ok(js.publish_chain_after(Some("id-1"), &chain, T));
    assert!(a.iter().all(|x| !x.duplicate) && b.iter().all(|x| x.duplicate));
    assert_eq!(
        a.iter().map(|x| x.seq).collect::<Vec<_>>(),
        b.iter().map(|x| x.seq).collect::<Vec<_>>()
    );
    let info = js.stream_info("D").expect("info").expect("exists");
    assert_eq!(info.messages, 5);
}

#[test]
fn headers_round_trip_through_last_by_subject() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let s = NatsServer::start(&bin, d.path(), "n1", None);
    let mut js = js(&s.addr);
    js.create_stream(&StreamConfig::new("H", &["h.>"]))
        .expect("create");
    assert_eq!(js.last_by_subject("H", "h.a").expect("empty"), None);
    let payload: Vec<u8> = (0..=255).collect();
    let mut m = msg("h.a", "h-1", &payload);
    m.headers = vec![
        ("smss-event-id".into(), "42".into()),
        ("note".into(), "quotes \" and: colons é".into()),
    ];
    js.publish(&m, T).expect("publish");
    js.publish(&msg("h.b", "h-2", b"other"), T)
        .expect("publish");
    let got = js.last_by_subject("H", "h.a").expect("get").expect("found");
    assert_eq!(got.seq, 1);
    assert_eq!(got.subject, "h.a");
    assert_eq!(got.payload, payload);
    assert_eq!(got.header("Nats-Msg-Id"), Some("h-1"));
    assert_eq!(got.header("smss-event-id"), Some("42"));
    assert_eq!(got.header("note"), Some("quotes \" and: colons é"));
    assert!(got.time.starts_with("20"), "{}", got.time);
    let by_seq = js.get_by_seq("H", 2).expect("get").expect("found");
    assert_eq!(
        (by_seq.subject.as_str(), by_seq.payload.as_slice()),
        ("h.b", &b"other"[..])
    );
    assert_eq!(js.get_by_seq("H", 99).expect("get"), None);
    assert_eq!(js.last_by_subject("H", "h.none").expect("get"), None);
    // Purging one subject leaves the other's messages.
    js.publish(&msg("h.a", "h-3", b"again"), T)
        .expect("publish");
    assert_eq!(js.purge_subject("H", "h.a").expect("purge"), 2);
    assert_eq!(js.last_by_subject("H", "h.a").expect("get"), None);
    let info = js.stream_info("H").expect("info").expect("stream");
    assert_eq!(info.messages, 1);
    assert_eq!(js.purge_subject("H", "h.a").expect("purge again"), 0);
}

#[test]
fn too_big_is_its_own_error_and_the_connection_lives() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let s = NatsServer::start(&bin, d.path(), "n1", Some("max_payload: 2048\n"));
    let mut js = js(&s.addr);
    assert_eq!(js.conn().max_payload(), 2048);
    js.create_stream(&StreamConfig::new("B", &["b"]))
        .expect("create");
    let chain = vec![
        msg("b", "b-1", b"small"),
        msg("b", "b-2", &[b'x'; 4000]),
        msg("b", "b-3", b"after"),
    ];
    let r = js.publish_chain(&chain, T);
    assert!(r[0].is_ok(), "{:?}", r[0]);
    match &r[1] {
        Err(NatsError::TooBig { size, max, .. }) => assert!(*size > 4000 && *max == 2048),
        other => panic!("expected TooBig, got {other:?}"),
    }
    assert!(!r[1].as_ref().expect_err("too big").is_retryable());
    // The chain refuses what came after the missing message.
    match &r[2] {
        Err(NatsError::Api { err_code, .. }) => assert_eq!(*err_code, ERR_WRONG_LAST_MSG_ID),
        other => panic!("expected a chain error, got {other:?}"),
    }
    // The connection is fine; the stream holds the prefix.
    assert!(js.conn().is_connected());
    js.publish(&msg("b", "b-4", b"later"), T)
        .expect("publish after TooBig");
    let info = js.stream_info("B").expect("info").expect("exists");
    assert_eq!(info.messages, 2);
}

#[test]
fn auth_right_and_wrong_password() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let conf = "authorization {\n  user: bridge\n  password: \"s3cret\"\n}\n";
    let s = NatsServer::start(&bin, d.path(), "n1", Some(conf));
    let mut o = opts(&[&s.addr]);
    o.user = Some("bridge".into());
    o.pass = Some("s3cret".into());
    let mut c = Conn::connect(&o).expect("right password");
    c.ping(T).expect("ping");
    o.pass = Some("wrong".into());
    let e = Conn::connect(&o).expect_err("wrong password");
    assert!(matches!(e, NatsError::Auth { .. }), "{e:?}");
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(
        text.contains(&s.addr) && text.contains("Authorization Violation"),
        "{text}"
    );
    let e = Conn::connect(&opts(&[&s.addr])).expect_err("no credentials");
    assert!(matches!(e, NatsError::Auth { .. }), "{e:?}");
}

#[test]
fn connects_and_reconnects_to_the_next_server() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let closed = format!("127.0.0.1:{}", free_port());
    let mut a = NatsServer::start(&bin, d.path(), "a", None);
    let b = NatsServer::start(&bin, d.path(), "b", None);
    // The first server is down: the second one is taken.
    let mut c = Conn::connect(&opts(&[&closed, &a.addr, &b.addr])).expect("connect");
    assert_eq!(c.server(), a.addr);
    // Its server dies: the next request says Disconnected (retryable) ...
    a.kill();
    let e = c
        .request("$JS.API.INFO", &[], b"", T)
        .expect_err("server gone");
    assert!(
        matches!(e, NatsError::Disconnected { .. }) && e.is_retryable(),
        "{e}"
    );
    assert!(!c.is_connected());
    // ... and reconnect goes on to the next one that answers.
    c.reconnect().expect("reconnect");
    assert_eq!(c.server(), b.addr);
    c.request("$JS.API.INFO", &[], b"", T)
        .expect("request on b");
    // No server at all: Connect, naming them.
    let e = Conn::connect(&opts(&[&closed])).expect_err("nothing there");
    assert!(matches!(e, NatsError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&closed), "{e}");
}

/// Retries `f` (reconnecting after a dropped connection) until it works
/// or `limit` passes: a cluster needs a few seconds to elect leaders.
fn retry<R>(
    js: &mut JetStream,
    limit: Duration,
    mut f: impl FnMut(&mut JetStream) -> Result<R, NatsError>,
) -> R {
    let deadline = Instant::now() + limit;
    loop {
        match f(js) {
            Ok(r) => return r,
            Err(e) if Instant::now() < deadline => {
                if !js.conn().is_connected() {
                    let _ = js.reconnect();
                }
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("still failing after {limit:?}: {e}"),
        }
    }
}

/// The bridge's loop against an R3 stream: windows of 200 chained onto
/// each other, retried from the first failed message with the same ids,
/// reconnecting when the connection drops. The stream leader is killed -9
/// twice mid-chain (the first victim restarted in between). In the end
/// the stream holds every message exactly once, in order: the prefix
/// property plus dedup on retry.
#[test]
fn cluster_leader_killed_mid_publish_keeps_every_message_once_in_order() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(&bin, d.path());
    let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    let mut o = opts(&addrs);
    o.timeout = Duration::from_secs(2);
    let mut js = JetStream::new(Conn::connect(&o).expect("connect"));
    let mut cfg = StreamConfig::new("R3", &["r3.>"]);
    cfg.replicas = 3;
    retry(&mut js, Duration::from_secs(20), |js| {
        js.create_stream(&cfg)
    });

    const TOTAL: usize = 3000;
    const WINDOW: usize = 200;
    let all: Vec<PubMsg> = (0..TOTAL)
        .map(|i| msg("r3.x", &format!("m-{i}"), format!("payload {i}").as_bytes()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 0;
    // Two kills: at a third of the way, and at two thirds (after the
    // first victim has been restarted, so two of three nodes remain).
    let mut kill_at = vec![2 * TOTAL / 3, TOTAL / 3];
    let mut killed: Vec<String> = Vec::new();
    let mut killer: Option<std::thread::JoinHandle<NatsServer>> = None;
    let (mut failures, mut duplicates) = (0, 0);
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    while next < TOTAL {
        assert!(
            Instant::now() < deadline,
            "not done in 30 s: {next} of {TOTAL} stored"
        );
        if killer.as_ref().is_some_and(|k| k.is_finished()) {
            // The victim comes back (a follower now) while we go on.
            let mut node = killer
                .take()
                .expect("killer")
                .join()
                .expect("killer thread");
            node.restart();
            nodes.push(node);
        }
        if killer.is_none() && kill_at.last().is_some_and(|&at| next >= at) {
            kill_at.pop();
            // kill -9 the stream's leader from another thread while the
            // next chain is in flight, so some of its messages are in the
            // old leader's hands when it dies.
            let info = retry(&mut js, Duration::from_secs(10), |js| js.stream_info("R3"));
            let leader = info.and_then(|i| i.cluster_leader).expect("a leader");
            let at = nodes
                .iter()
                .position(|n| n.name == leader)
                .expect("leader is ours");
            let mut node = nodes.remove(at);
            killer = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(3));
                node.kill();
                node
            }));
            killed.push(leader);
        }
        let end = (next + WINDOW).min(TOTAL);
        // The window chains on to the message before it.
        let prev = next.checked_sub(1).map(|p| all[p].msg_id.as_str());
        let results = js.publish_chain_after(prev, &all[next..end], Duration::from_secs(2));
        for r in results {
            match r {
                Ok(ack) => {
                    duplicates += usize::from(ack.duplicate);
                    next += 1;
                }
                Err(e) => {
                    assert!(e.is_retryable(), "permanent error at message {next}: {e}");
                    failures += 1;
                    let kind = format!("{e:?}");
                    let kind = kind.split([' ', '{']).next().unwrap_or("").to_string();
                    *kinds.entry(kind).or_insert(0) += 1;
                    if !js.conn().is_connected() {
                        let _ = js.reconnect();
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    break;
                }
            }
        }
    }
    assert_eq!(killed.len(), 2, "both leaders killed");
    if let Some(k) = killer {
        k.join().expect("killer thread");
    }
    println!(
        "killed leaders {killed:?}; {failures} failed windows {kinds:?}, {duplicates} duplicate acks"
    );

    // Every message exactly once, in order.
    // Some server answers for the stream (which one is the leader now is
    // the cluster's business: a restarted victim can be elected again, and
    // a lagging server's view can name the killed one for a while).
    let info =
        retry(&mut js, Duration::from_secs(10), |js| js.stream_info("R3")).expect("stream exists");
    println!("leader after the kills: {:?}", info.cluster_leader);
    assert_eq!(
        (info.messages, info.first_seq, info.last_seq),
        (TOTAL as u64, 1, TOTAL as u64)
    );
    for (i, m) in all.iter().enumerate() {
        let seq = i as u64 + 1;
        let got = retry(&mut js, Duration::from_secs(5), |js| {
            js.get_by_seq("R3", seq)
        })
        .unwrap_or_else(|| panic!("no message at seq {seq}"));
        assert_eq!(
            got.header("Nats-Msg-Id"),
            Some(m.msg_id.as_str()),
            "seq {seq}"
        );
        assert_eq!(got.payload, m.payload, "seq {seq}");
    }
}

/// A CA and a 127.0.0.1 certificate it signed (rcgen, as tests/tls.rs):
/// returns (CA file, cert file, key file).
#[cfg(feature = "tls")]
fn certs(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("nats test {name}"));
    let ca = params.self_signed(&ca_key).expect("CA cert");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("sign");
    let files = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&files.0, ca.pem()).expect("write CA");
    std::fs::write(&files.1, leaf.pem()).expect("write cert");
    std::fs::write(&files.2, key.serialize_pem()).expect("write key");
    files
}

#[cfg(feature = "tls")]
#[test]
fn tls_after_plain_info() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certs(d.path(), "server");
    let (other_ca, _, _) = certs(d.path(), "other");
    let conf = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        cert.display(),
        key.display()
    );
    let s = NatsServer::start(&bin, d.path(), "tls", Some(&conf));
    let mut o = opts(&[&s.addr]);
    o.tls_ca = Some(ca.clone());
    let mut js = JetStream::new(Conn::connect(&o).expect("TLS connect"));
    js.create_stream(&StreamConfig::new("T", &["t"]))
        .expect("create over TLS");
    let msgs: Vec<PubMsg> = (0..200)
        .map(|i| msg("t", &format!("t-{i}"), b"x"))
        .collect();
    let acks = all_ok(js.publish_chain(&msgs, T));
    assert_eq!(acks.last().map(|a| a.seq), Some(200));
    let got = js.last_by_subject("T", "t").expect("get").expect("found");
    assert_eq!(got.header("Nats-Msg-Id"), Some("t-199"));

    // The server requires TLS and we have no CA: a clear error.
    let e = Conn::connect(&opts(&[&s.addr])).expect_err("no CA");
    assert!(matches!(e, NatsError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("tls_ca"), "{e}");
    // The wrong CA: the handshake fails.
    o.tls_ca = Some(other_ca);
    let e = Conn::connect(&o).expect_err("wrong CA");
    assert!(matches!(e, NatsError::Tls { .. }), "{e}");
    // A server that verifies clients: our certificate (signed by the CA
    // it trusts) gets us in; without one we are refused.
    let conf = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
        cert.display(),
        key.display(),
        ca.display()
    );
    let m = NatsServer::start(&bin, d.path(), "mtls", Some(&conf));
    let mut o = opts(&[&m.addr]);
    o.tls_ca = Some(ca.clone());
    let e = Conn::connect(&o).expect_err("no client certificate");
    assert!(matches!(e, NatsError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("tls_cert"), "{e}");
    o.tls_cert = Some(cert.clone());
    o.tls_key = Some(key.clone());
    let mut c = Conn::connect(&o).expect("mutual TLS");
    c.ping(T).expect("ping over mutual TLS");
    // TLS asked of a server without it.
    let plain = NatsServer::start(&bin, d.path(), "plain", None);
    let mut o = opts(&[&plain.addr]);
    o.tls_ca = Some(ca);
    let e = Conn::connect(&o).expect_err("no TLS there");
    assert!(e.to_string().contains("does not offer TLS"), "{e}");
}

/// A chained message the stream refused (10070) is not remembered by the
/// dedup window: sent again, it is stored, not acked as a duplicate (in
/// a cluster the leader notes a msg id before proposing the message, so
/// this is worth checking on the server version in use).
#[test]
fn a_refused_chain_message_is_stored_when_sent_again() {
    let Some(bin) = bin_or_skip() else { return };
    let d = tempfile::tempdir().expect("tempdir");
    let single = NatsServer::start(&bin, d.path(), "single", None);
    let nodes = cluster(&bin, d.path());
    let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    for (servers, replicas) in [(vec![single.addr.as_str()], 1), (addrs, 3)] {
        let mut js = JetStream::new(Conn::connect(&opts(&servers)).expect("connect"));
        let mut cfg = StreamConfig::new("C", &["c"]);
        cfg.replicas = replicas;
        retry(&mut js, Duration::from_secs(20), |js| {
            js.create_stream(&cfg)
        });
        retry(&mut js, Duration::from_secs(10), |js| {
            js.publish(&msg("c", "a", b"a"), T)
        });
        let r = js.publish_chain_after(Some("not-the-last"), &[msg("c", "b", b"b")], T);
        match &r[0] {
            Err(NatsError::Api { err_code, .. }) => assert_eq!(*err_code, ERR_WRONG_LAST_MSG_ID),
            other => panic!("R{replicas}: expected a chain error, got {other:?}"),
        }
        let ack = js
            .publish_chain_after(Some("a"), &[msg("c", "b", b"b")], T)
            .remove(0)
            .expect("b again");
        assert_eq!((ack.seq, ack.duplicate), (2, false), "R{replicas}");
    }
}
