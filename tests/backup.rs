//! `smss-cli backup DIR` against a running server under load: the copy is
//! a data directory `smss --check` accepts, and a server started on it has
//! every message acknowledged before the backup began, byte for byte.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Opts, Server, tempdir};

const PUBLISHERS: usize = 8;
/// Each publisher stops after this many messages (or when told).
const MAX_EACH: usize = 2_000;

/// Acknowledged writes: (event id, payload).
type Acked = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

#[test]
fn a_hot_backup_holds_everything_acknowledged_before_it_and_checks_clean() {
    let d = tempdir();
    let s = Server::start(d.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    c.dpublish("t", 600_000, b"pending").expect("DPUB");
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for n in 0..PUBLISHERS {
        let (addr, acked, stop) = (s.addr.clone(), acked.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut c = smss::client::Client::connect(&addr).expect("connect");
            for i in 0..MAX_EACH {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = format!("p{n}-{i}").into_bytes();
                let id = c.publish("t", &body).expect("PUB");
                acked.lock().expect("lock").push((id, body));
            }
        }));
    }
    // Some load first, then the backup while it goes on.
    let started = common::repl::poll_until(common::WAIT, || {
        acked.lock().map(|v| v.len() >= 200).unwrap_or(false)
    });
    assert!(started, "publishers started");
    let before: Vec<(u64, Vec<u8>)> = acked.lock().expect("lock").clone();
    let port = s.addr.rsplit(':').next().expect("port");
    let dir = d.path().join("backup");
    let out = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["--port", port, "backup"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run smss-cli backup");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("publisher");
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("checked clean"), "{said}");

    // smss --check on the copy, as an operator would run it.
    let bd = tempdir();
    let cfg = common::write_config(bd.path(), &Opts::new());
    let y = std::fs::read_to_string(&cfg).expect("config");
    let y = y.replace(
        &format!("path: {}", bd.path().join("data").display()),
        &format!("path: {}", dir.display()),
    );
    std::fs::write(&cfg, y).expect("config");
    let check = Command::new(common::bin())
        .args(["--check", "--config"])
        .arg(&cfg)
        .output()
        .expect("smss --check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // A server on the copy has every message acknowledged before it began.
    let r = Server::start_config(bd.path(), &cfg);
    let mut rc = r.client();
    let have: HashMap<u64, Vec<u8>> = common::repl::messages(&mut rc, "t")
        .into_iter()
        .map(|m| (m.0, m.3))
        .collect();
    for (id, body) in &before {
        assert_eq!(
            have.get(id),
            Some(body),
            "event {id} acknowledged before the backup"
        );
    }
    assert_eq!(
        common::stat(&mut rc, "delayed_pending"),
        1,
        "the pending DPUB came along"
    );
}
