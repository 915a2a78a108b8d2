//! What a master and a slave show about replication, against real
//! servers: SLAVES on both sides, the replication STATS fields of each
//! role, and how they change when the slave is promoted.

mod common;

use std::time::{Duration, Instant};

use common::{Opts, Server, WAIT};
use smss::client::{Client, SlaveInfo};

/// Asks `probe` until it answers `Some`, for at most [`WAIT`]; panics with
/// `what` and the last thing seen. Replication is asynchronous, so there
/// is no reply to wait on: a bounded poll is the only way to see it.
fn poll<T, S: std::fmt::Debug>(what: &str, mut probe: impl FnMut() -> Result<T, S>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {WAIT:?}; last seen {seen:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn stats(c: &mut Client) -> Vec<(String, String)> {
    c.stats().expect("STATS")
}

fn get<'a>(stats: &'a [(String, String)], name: &str) -> &'a str {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("STATS has no {name}: {stats:?}"))
}

fn slave_of(master: &Server, dir: &std::path::Path) -> Server {
    Server::start_with_args(
        dir,
        &Opts::new(),
        &["--role", "slave", "--master", &master.addr],
    )
}

/// Polls the master's SLAVES until one slave streams with everything up to
/// `last` acknowledged.
fn wait_acked(m: &mut Client, last: u64) -> SlaveInfo {
    poll(
        "the slave to stream and acknowledge the master's last id",
        || {
            let slaves = m.slaves().expect("SLAVES");
            match slaves.as_slice() {
                [s] if s.state == "streaming" && s.acked_event_id == last => Ok(s.clone()),
                _ => Err(slaves),
            }
        },
    )
}

#[test]
fn slaves_and_stats_follow_a_slave_from_connect_to_promote() {
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    let master = Server::start(mdir.path());
    let mut m = master.client();
    assert!(m.slaves().expect("SLAVES").is_empty());
    let st = stats(&mut m);
    for (name, want) in [
        ("slaves", "0"),
        ("repl_acked_event_id", "0"),
        ("repl_sync", "0"),
        ("repl_sync_fallbacks", "0"),
        ("groups", "0"),
        ("dead_lettered", "0"),
    ] {
        assert_eq!(get(&st, name), want, "{name}");
    }
    m.create("orders", 0).expect("create");
    m.publish("orders", b"one").expect("pub");

    let slave = slave_of(&master, sdir.path());
    let mut s = slave.client();
    let last = m.info("orders").expect("info").last_id;
    let seen = wait_acked(&mut m, last);
    assert_eq!((seen.lag_events, seen.lag_ms), (0, 0), "{seen:?}");
    assert!(seen.addr.starts_with("127.0.0.1:"), "{seen:?}");

    // A write after the slave caught up reaches it and is acknowledged.
    let id = m.publish("orders", b"two").expect("pub");
    let seen = wait_acked(&mut m, id);
    assert_eq!((seen.lag_events, seen.lag_ms), (0, 0), "{seen:?}");
    let st = stats(&mut m);
    assert_eq!(get(&st, "role"), "master");
    assert_eq!(get(&st, "slaves"), "1");
    assert_eq!(get(&st, "repl_acked_event_id"), id.to_string());
    let master_epoch = get(&st, "epoch").to_string();

    // The slave's side: it learns the master's last id from the record
    // frames (and heartbeats), and shows no lag once it has it all.
    let st = poll("the slave to hear the master's last id", || {
        let st = stats(&mut s);
        if get(&st, "master_event_id") == id.to_string()
            && get(&st, "last_event_id") == id.to_string()
        {
            Ok(st)
        } else {
            Err(st)
        }
    });
    assert_eq!(get(&st, "role"), "slave");
    assert_eq!(get(&st, "master"), master.addr);
    assert_eq!(get(&st, "repl_state"), "streaming");
    assert_eq!(get(&st, "replication_lag_ms"), "0");
    assert_eq!(get(&st, "replication_lag_events"), "0");
    assert_eq!(get(&st, "repl_reconnects"), "0");
    assert_eq!(get(&st, "repl_diverged_records"), "0");
    // It started empty: one full resync.
    assert_eq!(get(&st, "repl_full_syncs"), "1");
    assert_eq!(get(&st, "epoch"), master_epoch);
    assert_eq!((get(&st, "groups"), get(&st, "dead_lettered")), ("0", "0"));
    // The fields kept their old places: right after index_files_open.
    let names: Vec<&str> = st.iter().map(|(k, _)| k.as_str()).collect();
    let at = names
        .iter()
        .position(|n| *n == "index_files_open")
        .expect("index_files_open");
    assert_eq!(
        names[at + 1..at + 3],
        ["master_event_id", "replication_lag_ms"]
    );
    assert!(s.slaves().expect("SLAVES on a slave").is_empty());

    // PROMOTE: the slave becomes a master in a new epoch, above the lease.
    let start = s.promote().expect("PROMOTE");
    assert!(start > id, "the new epoch starts at {start}, after {id}");
    let st = stats(&mut s);
    assert_eq!(get(&st, "role"), "master");
    assert_eq!(get(&st, "last_event_id"), start.to_string());
    let epoch: u64 = get(&st, "epoch").parse().expect("epoch");
    assert_eq!(epoch, master_epoch.parse::<u64>().expect("epoch") + 1);
    assert_eq!(get(&st, "slaves"), "0");
    assert!(s.slaves().expect("SLAVES").is_empty());
    let err = m.promote().expect_err("a master refuses PROMOTE");
    assert_eq!(err.code(), Some("BADREQ"), "{err}");

    // The old master lets go of the slave that left.
    poll("the old master to drop its slave", || {
        let slaves = m.slaves().expect("SLAVES");
        if slaves.is_empty() {
            Ok(())
        } else {
            Err(slaves)
        }
    });
    assert_eq!(get(&stats(&mut m), "slaves"), "0");
}

#[test]
fn a_slave_whose_master_is_gone_reports_connecting_and_counts_reconnects() {
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    let master = Server::start(mdir.path());
    let addr = master.addr.clone();
    let slave = slave_of(&master, sdir.path());
    let mut s = slave.client();
    poll("the slave to stream", || {
        let st = stats(&mut s);
        if get(&st, "repl_state") == "streaming" {
            Ok(())
        } else {
            Err(st)
        }
    });
    master.kill9();
    let st = poll("the slave to notice and retry", || {
        let st = stats(&mut s);
        let retried: u64 = get(&st, "repl_reconnects").parse().expect("number");
        if get(&st, "repl_state") == "connecting" && retried >= 1 {
            Ok(st)
        } else {
            Err(st)
        }
    });
    assert_eq!(get(&st, "master"), addr);
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
    let ok = std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

#[test]
fn repl_sync_shows_semi_sync_falling_back_and_coming_back() {
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    let opts = Opts::new().section("replication:\n  sync: true\n  syncTimeoutMs: 300");
    let master = Server::start_with(mdir.path(), &opts);
    let slave = slave_of(&master, sdir.path());
    let mut m = master.client();
    // A write before the slave streams would wait for it in vain.
    wait_acked(&mut m, 0);
    m.create("t", 0).expect("create");
    let id = m.publish("t", b"in sync").expect("pub");
    wait_acked(&mut m, id);
    let st = stats(&mut m);
    assert_eq!(
        (get(&st, "repl_sync"), get(&st, "repl_sync_fallbacks")),
        ("1", "0")
    );

    // A frozen slave acknowledges nothing: the write waits, then semi-sync
    // falls back to async and says so.
    let frozen = Stopped::stop(slave.pid());
    let id = m.publish("t", b"while frozen").expect("pub falls back");
    let st = stats(&mut m);
    assert_eq!(
        (get(&st, "repl_sync"), get(&st, "repl_sync_fallbacks")),
        ("0", "1")
    );
    drop(frozen);
    // Once the slave has caught up, semi-sync is in force again.
    wait_acked(&mut m, id);
    poll("semi-sync to be in force again", || {
        let st = stats(&mut m);
        if get(&st, "repl_sync") == "1" {
            Ok(())
        } else {
            Err(st)
        }
    });
    assert_eq!(get(&stats(&mut m), "repl_sync_fallbacks"), "1");
}
