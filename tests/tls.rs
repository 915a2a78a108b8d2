//! TLS against the real server (feature `tls`): every command over TLS,
//! mutual TLS, the wrong-port and wrong-CA errors, bad certificate files at
//! start, `tls.only`, and a certificate reloaded on SIGHUP. The
//! certificates are made here with rcgen, in each test's temp dir.
#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::certs::{Ca, ca, leaf, tls_section};
use common::{Opts, Raw, Server, WAIT, tempdir, write_config};
use smss::client::{Client, SubEvent, SubOptions};

/// A server with a TLS port, its CA and the temp dir.
fn tls_server(extra: &str) -> (Server, Ca, tempfile::TempDir) {
    let d = tempdir();
    let ca = ca(d.path(), "ca");
    let (c, k) = leaf(d.path(), &ca, "server", false);
    let s = Server::start_with(d.path(), &Opts::new().section(&tls_section(&c, &k, extra)));
    (s, ca, d)
}

fn tls_addr(s: &Server) -> String {
    s.tls_addr.clone().expect("a TLS <addr> line before READY")
}

fn group(g: &str) -> SubOptions {
    SubOptions {
        batch: Some(10),
        group: Some(g.into()),
        ..SubOptions::default()
    }
}

fn next_batch(c: &mut Client) -> Vec<u64> {
    loop {
        match c.next_event().expect("event") {
            SubEvent::Batch(b) => return b.iter().map(|m| m.event_id).collect(),
            SubEvent::Alive => {}
            other => panic!("expected a batch, got {other:?}"),
        }
    }
}

#[test]
fn every_command_works_over_tls() {
    let (s, ca, _d) = tls_server("");
    let addr = tls_addr(&s);
    let mut c = Client::connect_tls(&addr, &ca.file).expect("TLS connect");
    c.ping().expect("PING");
    c.create("t", 0).expect("CREATE");
    let a = c.publish("t", b"one").expect("PUB");
    let (m1, m2) = c.mpublish("t", &[b"two", b"three"]).expect("MPUB");
    assert_eq!((m1, m2), (a + 1, a + 2));
    // Pipelined writes through one TLS session keep their order.
    for i in 0..50 {
        c.publish("t", format!("p{i}").as_bytes()).expect("PUB");
    }
    let d = c.dpublish("t", 1, b"later").expect("DPUB");
    assert!(d > a);
    assert_eq!(c.info("t").expect("INFO").name, "t");
    assert!(c.list().expect("LIST").iter().any(|t| t.name == "t"));
    assert!(!c.stats().expect("STATS").is_empty());

    // A plain SUB with ACKs.
    let mut sub = Client::connect_tls(&addr, &ca.file).expect("TLS connect");
    sub.subscribe("t", "0", &SubOptions::default())
        .expect("SUB");
    let mut seen = Vec::new();
    while seen.len() < 54 {
        seen.extend(next_batch(&mut sub));
        sub.ack().expect("ACK");
    }
    assert_eq!(seen[..3], [a, a + 1, a + 2]);
    sub.stop().expect("STOP");
    sub.ping().expect("command mode after STOP");

    // A consumer group, committed by its ACK, visible in GROUPS.
    let mut g = Client::connect_tls(&addr, &ca.file).expect("TLS connect");
    g.subscribe("t", "0", &group("g")).expect("SUB group");
    let first = next_batch(&mut g);
    assert_eq!(first[0], a);
    g.ack().expect("ACK");
    g.stop().expect("STOP");
    assert_eq!(c.groups("t").expect("GROUPS").len(), 1);
    c.delete("t").expect("DELETE");
    // The plain port still works beside it.
    Client::connect(&s.addr)
        .expect("plain")
        .ping()
        .expect("plain PING");
}

/// Over TLS the write replies are encrypted and sent by the thread that
/// releases the writer's batches, the other replies by the connection's
/// own thread, through one session: a long pipeline of writes, reads and
/// errors must still be answered in request order, each record decrypting.
#[test]
fn a_tls_pipeline_of_writes_reads_and_errors_is_answered_in_order() {
    let (s, ca, _d) = tls_server("");
    let mut c = Client::connect_tls(&tls_addr(&s), &ca.file).expect("TLS connect");
    c.create("p", 0).expect("CREATE");
    let rounds = 400;
    let mut buf = Vec::new();
    for i in 0..rounds {
        for part in ["a", "b"] {
            let body = format!("{i}{part}");
            buf.extend_from_slice(format!("PUB p {}\r\n{body}\r\n", body.len()).as_bytes());
        }
        buf.extend_from_slice(b"PING\r\nINFO p\r\nNOSUCH\r\n");
    }
    c.send_raw(&buf).expect("send the pipeline");
    let mut last = 0;
    for i in 0..rounds {
        for _ in 0..2 {
            let line = c.read_line().expect("a PUB's reply");
            let id: u64 = line
                .strip_prefix("OK ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("round {i}: expected OK <id>, got {line:?}"));
            assert!(id > last, "round {i}: ids in order");
            last = id;
        }
        assert_eq!(c.read_line().expect("PONG"), "PONG", "round {i}");
        let info = c.read_line().expect("INFO");
        let count: u64 = info
            .split(' ')
            .nth(4)
            .and_then(|n| n.parse().ok())
            .expect("count");
        assert_eq!(
            count,
            2 * (i + 1),
            "round {i}: INFO sees the PUBs before it"
        );
        let err = c.read_line().expect("ERR");
        assert!(err.starts_with("ERR UNKNOWN"), "round {i}: {err}");
    }
    c.ping().expect("still in step");
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let d = tempdir();
    let ca = ca(d.path(), "ca");
    let (c, k) = leaf(d.path(), &ca, "server", false);
    let (cc, ck) = leaf(d.path(), &ca, "client", false);
    let extra = format!("  clientCa: {}\n", ca.file.display());
    let s = Server::start_with(d.path(), &Opts::new().section(&tls_section(&c, &k, &extra)));
    let addr = tls_addr(&s);
    // Without one: the handshake, or the first reply, fails.
    let refused = Client::connect_tls(&addr, &ca.file).and_then(|mut c| c.ping());
    assert!(refused.is_err(), "no client certificate must be refused");
    // With one signed by tls.clientCa: served.
    let cfg = smss::tls::client_config(&ca.file, Some((&cc, &ck))).expect("client config");
    let mut ok = Client::connect_tls_with(&addr, cfg, WAIT).expect("mTLS connect");
    ok.ping().expect("PING with a client certificate");
    // With one of another CA: refused too.
    let other = self::ca(d.path(), "other");
    let (oc, ok_) = leaf(d.path(), &other, "stranger", false);
    let cfg = smss::tls::client_config(&ca.file, Some((&oc, &ok_))).expect("client config");
    let refused = Client::connect_tls_with(&addr, cfg, WAIT).and_then(|mut c| c.ping());
    assert!(
        refused.is_err(),
        "a client certificate of another CA must be refused"
    );
    assert!(s.log_text().contains("TLS handshake failed"));
}

#[test]
fn a_wrong_ca_is_refused_by_the_client() {
    let (s, _ca, d) = tls_server("");
    let other = ca(d.path(), "other");
    let err = Client::connect_tls(&tls_addr(&s), &other.file).expect_err("wrong CA");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
}

#[test]
fn the_wrong_port_gets_a_clear_outcome_both_ways() {
    let (s, ca, _d) = tls_server("");
    let addr = tls_addr(&s);
    let port = addr.rsplit_once(':').expect("port").1.to_string();
    // A TLS ClientHello on the plain port: one plain line naming the TLS port.
    let mut raw = Raw::connect(&s.addr);
    raw.send(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]);
    let line = raw.line();
    assert_eq!(
        line,
        format!("ERR BADREQ this port speaks plain text; use the TLS port {port}")
    );
    // The real TLS client on the plain port fails at its handshake.
    assert!(Client::connect_tls(&s.addr, &ca.file).is_err());
    // A plain client on the TLS port: no reply line, the connection closes,
    // and the server logs one line.
    let mut plain = TcpStream::connect(&addr).expect("connect");
    plain.set_read_timeout(Some(WAIT)).expect("timeout");
    plain.write_all(b"PING\r\n").expect("send");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"PONG"), "{got:?}");
    let deadline = Instant::now() + WAIT;
    while !s.log_text().contains("not a TLS client") {
        assert!(Instant::now() < deadline, "no log line: {}", s.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_certificate_files_stop_the_start_naming_the_file() {
    let d = tempdir();
    let ca = ca(d.path(), "ca");
    let (c, k) = leaf(d.path(), &ca, "server", false);
    let missing = d.path().join("nope.pem");
    let garbage = d.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem\n").expect("write");
    for (cert, key, named) in [
        (&missing, &k, &missing),
        (&c, &garbage, &garbage),
        (&garbage, &k, &garbage),
    ] {
        write_config(d.path(), &Opts::new().section(&tls_section(cert, key, "")));
        let (status, err) = Server::start_failing(d.path());
        assert!(!status.success());
        assert!(err.contains(&named.display().to_string()), "{err}");
    }
    // A key that does not go with the certificate.
    let (_, other_key) = leaf(d.path(), &ca, "other", false);
    write_config(
        d.path(),
        &Opts::new().section(&tls_section(&c, &other_key, "")),
    );
    let (status, err) = Server::start_failing(d.path());
    assert!(
        !status.success() && err.contains("does not go with"),
        "{err}"
    );
}

#[test]
fn an_expired_certificate_is_warned_about_at_start() {
    let d = tempdir();
    let ca = ca(d.path(), "ca");
    let (c, k) = leaf(d.path(), &ca, "old", true);
    let s = Server::start_with(d.path(), &Opts::new().section(&tls_section(&c, &k, "")));
    let log = s.log_text();
    assert!(log.contains("EXPIRED on 2002-01-01"), "{log}");
    assert!(Client::connect_tls(&tls_addr(&s), &ca.file).is_err());
}

#[test]
fn tls_only_has_no_plain_port() {
    let (s, ca, _d) = tls_server("  only: true\n");
    assert_eq!(s.addr, tls_addr(&s), "READY names the TLS port");
    let mut c = Client::connect_tls(&s.addr, &ca.file).expect("TLS connect");
    c.ping().expect("PING");
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let (s, ca1, d) = tls_server("");
    let addr = tls_addr(&s);
    let mut old = Client::connect_tls(&addr, &ca1.file).expect("TLS connect");
    // A bad new file: the old certificate stays, and the log says why.
    let cert = d.path().join("server.pem");
    let good = std::fs::read(&cert).expect("read cert");
    std::fs::write(&cert, "broken\n").expect("break cert");
    hup(&s);
    wait_log(&s, "TLS not reloaded");
    Client::connect_tls(&addr, &ca1.file).expect("still the old certificate");
    std::fs::write(&cert, good).expect("restore");
    // A certificate of a new CA, then SIGHUP: new connections see it.
    let ca2 = ca(d.path(), "ca2");
    let (c2, k2) = leaf(d.path(), &ca2, "new", false);
    std::fs::copy(&c2, &cert).expect("install cert");
    std::fs::copy(&k2, d.path().join("server-key.pem")).expect("install key");
    hup(&s);
    wait_log(&s, "reloaded the TLS certificate");
    Client::connect_tls(&addr, &ca2.file)
        .expect("the new certificate")
        .ping()
        .expect("PING");
    assert!(Client::connect_tls(&addr, &ca1.file).is_err());
    // A connection made before goes on.
    old.ping().expect("the old connection still works");
}

fn hup(s: &Server) {
    let ok = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success());
}

fn wait_log(s: &Server, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !s.log_text().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the log: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn smss_cli_speaks_tls_with_its_ca() {
    let (s, ca, _d) = tls_server("");
    let addr = tls_addr(&s);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_smss-cli"))
            .args(["--host", &addr])
            .args(args)
            .output()
            .expect("run smss-cli")
    };
    let ca_file = ca.file.display().to_string();
    let out = cli(&["--tls", "--ca", &ca_file, "create", "t"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["--tls", "--ca", &ca_file, "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains('t'));
    // --tls without --ca: a usage error, nothing sent.
    let out = cli(&["--tls", "ping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"));
}
