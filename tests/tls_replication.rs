//! The slave's link to its master over TLS (`replication.tls`), against
//! real servers: semi-sync over the link (so the master's ACK reader reads
//! the slave's ACKs through its half of the TLS session while the sender
//! streams through the other), a kill -9 of the master and PROMOTE of the
//! slave, mutual TLS, and the refusals an operator will meet: no client
//! certificate, a CA that did not sign the master's certificate, the
//! plain port named as the master, the start-up checks of the config, and
//! fencing by epoch through the peer's TLS port.
#![cfg(feature = "tls")]

mod common;

use std::path::Path;

use common::certs::{Ca, ca, leaf, tls_section};
use common::repl::{
    assert_stepped_down, free_port, last_id, messages, poll_until, slave_args, wait_for_id,
};
use common::{Opts, Server, WAIT, stat, tempdir, write_config};

/// `replication:` of a slave that dials its master over TLS, trusting
/// `ca`, presenting `(cert, key)` when given; `extra` adds keys.
fn repl_tls(ca: &Path, identity: Option<(&Path, &Path)>, extra: &str) -> String {
    let mut y = format!(
        "replication:\n  tls: true\n  tlsCa: {}\n  slaveTimeoutMs: 3000\n",
        ca.display()
    );
    if let Some((c, k)) = identity {
        y.push_str(&format!(
            "  tlsCert: {}\n  tlsKey: {}\n",
            c.display(),
            k.display()
        ));
    }
    y.push_str(extra);
    y
}

/// A master with a TLS port that requires client certificates from
/// `clients` (mutual TLS), semi-sync on; its server CA and the temp dir.
fn mtls_master(dir: &Path, clients: &Ca) -> (Server, Ca) {
    let server_ca = ca(dir, "server-ca");
    let (c, k) = leaf(dir, &server_ca, "master", false);
    let extra = format!("  clientCa: {}\n", clients.file.display());
    let repl = "replication:\n  sync: true\n  syncTimeoutMs: 5000\n";
    let opts = Opts::new()
        .section(&tls_section(&c, &k, &extra))
        .section(repl);
    let data = dir.join("master");
    std::fs::create_dir_all(&data).expect("master dir");
    (Server::start_with(&data, &opts), server_ca)
}

fn tls_addr(s: &Server) -> String {
    s.tls_addr.clone().expect("a TLS <addr> line before READY")
}

/// Polls the server's log for `text`.
fn log_says(s: &Server, text: &str) -> bool {
    poll_until(WAIT, || s.log_text().contains(text))
}

#[test]
fn slave_replicates_over_tls_and_takes_over_after_kill9() {
    let d = tempdir();
    let clients = ca(d.path(), "client-ca");
    let (master, server_ca) = mtls_master(d.path(), &clients);
    let (sc, sk) = leaf(d.path(), &clients, "slave", false);
    let slave_dir = d.path().join("slave");
    std::fs::create_dir_all(&slave_dir).expect("slave dir");
    let m_tls = tls_addr(&master);
    let slave = Server::start_with_args(
        &slave_dir,
        &Opts::new().section(&repl_tls(&server_ca.file, Some((&sc, &sk)), "")),
        &slave_args(&m_tls, &[]),
    );

    let mut m = master.client();
    m.create("t", 0).expect("CREATE");
    // Semi-sync: each OK waits for the slave's ACK, which comes back
    // through the master's reading half of the TLS session.
    assert!(
        poll_until(WAIT, || stat(&mut m, "repl_sync") == 1),
        "semi-sync never in force over the TLS link: {}",
        master.log_text()
    );
    let mut acked = Vec::new();
    for i in 0..300u32 {
        let payload = format!("tls-{i}").into_bytes();
        acked.push((m.publish("t", &payload).expect("PUB"), payload));
    }
    let batch: Vec<Vec<u8>> = (0..200u32).map(|i| vec![(i % 256) as u8; 3000]).collect();
    let refs: Vec<&[u8]> = batch.iter().map(|p| p.as_slice()).collect();
    let (first, last) = m.mpublish("t", &refs).expect("MPUB");
    acked.extend((first..=last).zip(batch.iter().cloned()));
    assert_eq!(
        stat(&mut m, "repl_sync_fallbacks"),
        0,
        "every write waited for the slave: {}",
        master.log_text()
    );
    let slaves = m.slaves().expect("SLAVES");
    assert_eq!(slaves.len(), 1, "{slaves:?}");
    assert!(slaves[0].acked_event_id >= last, "{slaves:?}");

    // `smss-cli backup` reads the same REPL stream over TLS (with the
    // client certificate this master asks for).
    let port = m_tls.rsplit(':').next().expect("port");
    let backup_dir = d.path().join("backup");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["--port", port, "--tls", "--ca"])
        .arg(&server_ca.file)
        .arg("--cert")
        .arg(&sc)
        .arg("--cert-key")
        .arg(&sk)
        .arg("backup")
        .arg(&backup_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run smss-cli backup");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(&format!("up to event id {last}")), "{said}");

    // The master dies; every acknowledged write is on the slave.
    master.kill9();
    let mut s = slave.client();
    let epoch_first = s.promote().expect("PROMOTE");
    assert!(epoch_first > last);
    let got = messages(&mut s, "t");
    let got: Vec<(u64, Vec<u8>)> = got.into_iter().map(|m| (m.0, m.3)).collect();
    assert_eq!(got.len(), acked.len());
    for ((id, p), (gid, gp)) in acked.iter().zip(&got) {
        assert_eq!((id, p), (gid, gp));
    }
    // The promoted slave takes writes, with ids above the old master's.
    let id = s.publish("t", b"after").expect("PUB on the promoted slave");
    assert!(id > last);
    let log = slave.log_text();
    assert!(log.contains(&format!("from {m_tls} over TLS")), "{log}");
}

#[test]
fn tls_link_refusals_name_their_cause() {
    let d = tempdir();
    let clients = ca(d.path(), "client-ca");
    let (master, server_ca) = mtls_master(d.path(), &clients);
    let m_tls = tls_addr(&master);
    let (sc, sk) = leaf(d.path(), &clients, "slave", false);
    let other = ca(d.path(), "other-ca");
    let mut m = master.client();
    m.create("t", 0).expect("CREATE");

    let start = |name: &str, repl: String, master_addr: &str| {
        let dir = d.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        Server::start_with_args(
            &dir,
            &Opts::new().section(&repl),
            &slave_args(master_addr, &[]),
        )
    };
    // No client certificate for a master that asks for one.
    let no_cert = start("no-cert", repl_tls(&server_ca.file, None, ""), &m_tls);
    assert!(
        log_says(&no_cert, "replication from"),
        "{}",
        no_cert.log_text()
    );
    // A CA that did not sign the master's certificate.
    let wrong_ca = start(
        "wrong-ca",
        repl_tls(&other.file, Some((&sc, &sk)), ""),
        &m_tls,
    );
    assert!(
        log_says(&wrong_ca, "replication.tlsCa must be the CA"),
        "{}",
        wrong_ca.log_text()
    );
    // TLS to the plain port.
    let plain = start(
        "plain-port",
        repl_tls(&server_ca.file, Some((&sc, &sk)), ""),
        &master.addr,
    );
    assert!(
        log_says(&plain, "replication.tls needs its TLS port"),
        "{}",
        plain.log_text()
    );
    // None of them replicates: the master lists no slave, and each stays
    // at event id 0 while the master writes.
    let id = m.publish("t", b"x").expect("PUB");
    assert!(m.slaves().expect("SLAVES").is_empty());
    for s in [&no_cert, &wrong_ca, &plain] {
        let mut c = s.client();
        assert_eq!(last_id(&mut c), 0);
        assert!(stat(&mut c, "repl_reconnects") >= 1);
    }
    assert!(id > 0);
    // The master says why it closed the one without a certificate.
    assert!(
        log_says(&master, "TLS handshake failed"),
        "{}",
        master.log_text()
    );

    // The same slave, given its certificate, then follows.
    drop(no_cert);
    let good = start(
        "good",
        repl_tls(&server_ca.file, Some((&sc, &sk)), ""),
        &m_tls,
    );
    wait_for_id(&good, None, id);
}

#[test]
fn config_checks_at_start() {
    let d = tempdir();
    let dir = d.path();
    let fails = |repl: &str| {
        write_config(dir, &Opts::new().section(repl));
        let (status, err) = Server::start_failing(dir);
        assert!(!status.success(), "started with {repl:?}");
        err
    };
    let err = fails("replication:\n  tls: true\n");
    assert!(err.contains("replication.tlsCa"), "{err}");
    let missing = dir.join("nope.pem");
    let err = fails(&format!(
        "replication:\n  tls: true\n  tlsCa: {}\n",
        missing.display()
    ));
    assert!(err.contains("nope.pem"), "{err}");
    let ca = ca(dir, "ca");
    let err = fails(&format!(
        "replication:\n  tls: true\n  tlsCa: {}\n  tlsCert: {}\n",
        ca.file.display(),
        ca.file.display()
    ));
    assert!(err.contains("replication.tlsKey"), "{err}");
}

/// Fencing by epoch over TLS: the old master, restarted with its unit's
/// config after its slave was promoted, looks at its peer through the
/// peer's TLS port (`replication.peer` with `replication.tls`), steps down
/// and follows it over TLS.
#[test]
fn an_old_master_asks_its_peer_over_tls_and_follows_it() {
    let d = tempdir();
    let ca = ca(d.path(), "ca");
    let (cert, key) = leaf(d.path(), &ca, "server", false);
    let (m_tls, s_tls) = (free_port(), free_port());
    let tls = |port: u16| {
        format!(
            "tls:\n  port: {port}\n  cert: {}\n  key: {}\n",
            cert.display(),
            key.display()
        )
    };
    let m_opts = Opts::new().section(&tls(m_tls)).section(&repl_tls(
        &ca.file,
        None,
        &format!("  peer: \"127.0.0.1:{s_tls}\"\n"),
    ));
    let s_opts = Opts::new()
        .section(&tls(s_tls))
        .section(&repl_tls(&ca.file, None, ""));
    let (md, sd) = (d.path().join("m"), d.path().join("s"));
    std::fs::create_dir_all(&md).expect("dir");
    std::fs::create_dir_all(&sd).expect("dir");
    let m = Server::start_with(&md, &m_opts);
    let m_addr = format!("127.0.0.1:{m_tls}");
    let s = Server::start_with_args(&sd, &s_opts, &slave_args(&m_addr, &[]));
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    let before = mc.publish("t", b"before").expect("PUB");
    wait_for_id(&s, None, before);
    m.kill9();
    let mut sc = s.client();
    sc.promote().expect("PROMOTE");
    let during = sc.publish("t", b"during").expect("PUB");

    let m = Server::start_with(&md, &m_opts);
    assert_stepped_down(&m, during);
    let log = m.log_text();
    assert!(
        log.contains(&format!("127.0.0.1:{s_tls} over TLS")),
        "{log}"
    );
}
