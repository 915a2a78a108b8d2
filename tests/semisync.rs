//! Semi-sync replication (`replication.sync: true`): a write is answered
//! only once a slave has it durably; without an acknowledgement in time the
//! master falls back to async, and returns once the slave has caught up.
//! Every server has its own port and directory and is stopped by PID.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Opts, Server, stat, tempdir};
use smss::client::{Client, SubOptions};

fn sync_opts(timeout_ms: u64) -> Opts {
    Opts::new().section(&format!(
        "replication:\n  sync: true\n  syncTimeoutMs: {timeout_ms}"
    ))
}

fn slave_of(dir: &std::path::Path, master: &Server) -> Server {
    Server::start_with_args(
        dir,
        &Opts::new(),
        &["--role", "slave", "--master", &master.addr],
    )
}

/// Polls the slave (bounded) until it has applied `id`.
fn wait_applied(slave: &mut Client, id: u64) {
    for _ in 0..400 {
        if stat(slave, "last_event_id") >= id {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the slave never reached event id {id}");
}

/// Sends SIGCONT when dropped, so a stopped child is never left behind.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        signal("-STOP", pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

#[test]
fn a_frozen_slave_makes_a_write_wait_the_timeout_then_fall_back() {
    let (md, sd) = (tempdir(), tempdir());
    let master = Server::start_with(md.path(), &sync_opts(600));
    let slave = slave_of(sd.path(), &master);
    let mut m = master.client();
    let mut s = slave.client();
    m.create("t", 0).expect("CREATE");
    let id = m.publish("t", b"warm").expect("PUB");
    wait_applied(&mut s, id);
    // In sync: the OK means the slave has it durably already (its readers
    // see it once the master has said it is durable here too).
    let id = m.publish("t", b"in sync").expect("PUB");
    assert!(
        stat(&mut m, "repl_acked_event_id") >= id,
        "acknowledged before the slave had it"
    );
    wait_applied(&mut s, id);
    let frozen = Stopped::stop(slave.pid());
    let started = Instant::now();
    let id = m
        .publish("t", b"while frozen")
        .expect("PUB falls back, not fails");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "answered after {waited:?}"
    );
    assert!(
        master.log_text().contains("falling back to async"),
        "the fall-back is logged"
    );
    // Async now: the next write does not wait for the frozen slave.
    m.publish("t", b"async").expect("PUB");
    drop(frozen);
    wait_applied(&mut s, id + 1);
    let mut back = false;
    for _ in 0..400 {
        if master.log_text().contains("semi-sync in force again") {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(back, "semi-sync returns once the slave caught up");
    let id = m.publish("t", b"in sync again").expect("PUB");
    assert!(stat(&mut m, "repl_acked_event_id") >= id);
    wait_applied(&mut s, id);
}

#[test]
fn every_write_acknowledged_under_semi_sync_survives_losing_the_master() {
    let (md, sd) = (tempdir(), tempdir());
    let master = Server::start_with(md.path(), &sync_opts(5000));
    let slave = slave_of(sd.path(), &master);
    let mut m = master.client();
    m.create("t", 0).expect("CREATE");
    let id = m.publish("t", b"warm").expect("PUB");
    wait_applied(&mut slave.client(), id);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for p in 0..4 {
        let (addr, acked) = (master.addr.clone(), Arc::clone(&acked));
        threads.push(std::thread::spawn(move || {
            let Ok(mut c) = Client::connect(&addr) else {
                return;
            };
            let _ = c.set_timeout(Some(Duration::from_secs(10)));
            for i in 0..2000 {
                let body = format!("p{p}-{i}");
                match c.publish("t", body.as_bytes()) {
                    Ok(id) => acked.lock().map(|mut v| v.push((id, body))).unwrap_or(()),
                    Err(_) => return, // the master is gone
                }
            }
        }));
    }
    // Let the publishers get going, then lose the master mid-stream.
    for _ in 0..400 {
        if acked.lock().map(|v| v.len()).unwrap_or(0) >= 300 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let old_lease: u64 = std::fs::read_to_string(md.path().join("data").join("idlease"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    master.kill9();
    for t in threads {
        let _ = t.join();
    }
    let acked = acked.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        acked.len() >= 300,
        "publishers were running: {}",
        acked.len()
    );
    let mut s = slave.client();
    let new_id = s.promote().expect("PROMOTE");
    let max_acked = acked.iter().map(|(id, _)| *id).max().unwrap_or(0);
    assert!(new_id > max_acked, "new ids above every acknowledged one");
    assert!(
        new_id > old_lease,
        "and above the old master's lease {old_lease}"
    );
    s.subscribe("t", "0", &SubOptions::default()).expect("SUB");
    let got = common::collect(&mut s, acked.len() + 1);
    let have: std::collections::HashMap<u64, Vec<u8>> = got.into_iter().collect();
    for (id, body) in &acked {
        assert_eq!(
            have.get(id).map(Vec::as_slice),
            Some(body.as_bytes()),
            "acknowledged event {id} is on the promoted slave"
        );
    }
    s.stop().expect("STOP");
    let id = s
        .publish("t", b"new master")
        .expect("PUB on the promoted slave");
    assert!(id > new_id);
}

#[test]
fn a_slave_that_reconnects_while_writes_wait_for_it_is_served_at_once() {
    let (md, sd) = (tempdir(), tempdir());
    let port = common::repl::free_port();
    // A timeout no test waits out: the write below must be answered by the
    // slave's acknowledgement, not by a fall-back.
    let m = Server::start_with(md.path(), &sync_opts(60_000));
    let slave_opts = Opts::new().port(port);
    let slave_args = ["--role", "slave", "--master", m.addr.as_str()];
    let s = Server::start_with_args(sd.path(), &slave_opts, &slave_args);
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    s.kill9();
    // This write waits for a slave; the slave comes back meanwhile. Its
    // REPL must not queue behind the very write that waits for it.
    let addr = m.addr.clone();
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(&addr).expect("connect");
        c.set_timeout(Some(Duration::from_secs(50)))
            .expect("timeout");
        let started = Instant::now();
        (c.publish("t", b"waits for the slave"), started.elapsed())
    });
    let _s = Server::start_with_args(sd.path(), &slave_opts, &slave_args);
    let (res, took) = writer.join().expect("writer thread");
    let id = res.expect("PUB answered once the slave has it");
    assert!(
        took < Duration::from_secs(30),
        "answered only after {took:?}"
    );
    assert_eq!(stat(&mut mc, "repl_sync_fallbacks"), 0, "{}", m.log_text());
    assert_eq!(stat(&mut mc, "repl_sync"), 1);
    assert!(id > 1);
}
