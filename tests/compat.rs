//! The original smss's command lines and config.yaml against the real
//! binary: `smss -role master` and `smss -role slave -host H -port P -event 0`
//! run in a directory holding `config/config.yaml`, as the original was
//! deployed; that file's keys this design does not need are logged once each
//! and ignored, while any other unknown key still stops the server.
//!
//! The slave's replication itself is tested elsewhere; here only that the
//! flags make it a slave of the master they name (STATS `role`, `master`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The five legacy keys with plausible values, and the value each is logged with.
const LEGACY: [(&str, &str); 5] = [
    ("store.waitDelLockTimeoutMs", "3000"),
    ("worker.waitMsgTimeout", "10000"),
    ("worker.waitMsgTimeoutLogSample", "10"),
    ("background.life.defaultScanSec", "60"),
    ("background.delay.firstExec", "5"),
];

/// A config.yaml as the original smss's deployments have it, under
/// `dir/config/`, with relative paths (they resolve against `dir`, the
/// server's working directory) and an OS-chosen port.
fn seed_config(dir: &Path) -> std::path::PathBuf {
    let yaml = "\
port: 0
log:
  path: smss.log
  sample: 1000
store:
  path: data
  maxLogSize: 1073741824
  maxDays: 7
  clearInterval: 7200
  waitDelLockTimeoutMs: 3000
worker:
  buffSize: 1000
  waitMsgTimeout: 10000
  waitMsgTimeoutLogSample: 10
timeout:
  net:
    write: 1000
  server:
    alive: 30000
background:
  life:
    defaultScanSec: 60
  delay:
    firstExec: 5
";
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).expect("mkdir config");
    let path = config_dir.join("config.yaml");
    std::fs::write(&path, yaml).expect("write config.yaml");
    path
}

/// A text STATS value; panics naming the stat when it is missing.
fn text_stat(s: &Server, name: &str) -> String {
    let stats = s.client().stats().expect("STATS");
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("STATS has no {name}: {stats:?}"))
}

#[test]
fn seed_command_lines_start_a_master_and_its_slave() {
    let mdir = tempdir();
    seed_config(mdir.path());
    let master = Server::start_in(mdir.path(), &["-role", "master"]);
    assert_eq!(text_stat(&master, "role"), "master");
    assert!(
        mdir.path().join("data").join("log").is_dir(),
        "the master uses store.path of config/config.yaml under its working directory"
    );
    let (_, mport) = master.addr.rsplit_once(':').expect("READY host:port");

    let sdir = tempdir();
    seed_config(sdir.path());
    let slave = Server::start_in(
        sdir.path(),
        &[
            "-role",
            "slave",
            "-host",
            "127.0.0.1",
            "-port",
            mport,
            "-event",
            "0",
        ],
    );
    assert_eq!(text_stat(&slave, "role"), "slave");
    // -host and -port named the master; -port is not where the slave listens.
    assert_eq!(text_stat(&slave, "master"), format!("127.0.0.1:{mport}"));
    assert_ne!(slave.addr, master.addr);
}

#[test]
fn seed_port_flag_without_host_is_refused() {
    let dir = tempdir();
    seed_config(dir.path());
    let mut child = Command::new(bin())
        .current_dir(dir.path())
        .args(["-role", "slave", "-port", "12301"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn smss");
    let status = wait_timeout(&mut child, WAIT).expect("smss exits by itself");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).expect("read stderr");
    }
    assert_eq!(
        status.code(),
        Some(2),
        "a command-line error; stderr: {err}"
    );
    assert!(
        err.contains("--port is the master's port and needs --host"),
        "{err}"
    );
}

#[test]
fn seed_config_yaml_is_accepted_and_each_ignored_key_logged_once() {
    let dir = tempdir();
    seed_config(dir.path());
    let s = Server::start_in(dir.path(), &[]);
    s.client().ping().expect("PING");
    // Logged before READY, so the log already has them.
    let log = s.log_text();
    for (key, value) in LEGACY {
        let line = format!("config key {key} ({value}) has no effect here and is ignored: ");
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(&line)).collect();
        assert_eq!(hits.len(), 1, "{key}: want one line {line:?}; log:\n{log}");
        assert!(hits[0].contains("[WARN]"), "{}", hits[0]);
    }
    assert!(log.contains("the writer thread owns every file"), "{log}");
    assert!(log.contains("woken by each commit"), "{log}");
    assert!(log.contains("min-heap timer"), "{log}");
}

#[test]
fn an_unknown_key_in_a_seed_config_still_stops_the_server() {
    let dir = tempdir();
    let seed = seed_config(dir.path());
    // A key the original read from some versions' configs, but not one of the five.
    let yaml = std::fs::read_to_string(&seed).expect("read config");
    let yaml = yaml.replace(
        "  waitDelLockTimeoutMs: 3000\n",
        "  waitDelLockTimeoutMs: 3000\n  noCache: true\n",
    );
    // start_failing reads dir/config.yaml.
    std::fs::write(dir.path().join("config.yaml"), yaml).expect("write config");
    let (status, err) = Server::start_failing(dir.path());
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("config.yaml"), "names the file: {err}");
    assert!(
        err.contains("store: unknown field `noCache`"),
        "names the key: {err}"
    );
    assert!(err.contains("line 11"), "names the line: {err}");
}
