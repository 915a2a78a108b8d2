//! Replication lag and slave liveness as both sides report them, against
//! real servers: the slave's STATS (`master_event_id`,
//! `replication_lag_events`, `replication_lag_ms`) while it copies a
//! backlog and under steady load, the master's SLAVES for the same slave,
//! the drop of a frozen slave after `replication.slaveTimeoutMs` (not
//! sooner, not later), and one SLAVES line per slave across reconnects.
//!
//! Progress of replication has no event a test can wait on: every wait
//! here is a bounded poll ([`poll`]) or a read with a timeout. SIGSTOP and
//! SIGCONT (through `kill`) freeze one side at a chosen moment.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::repl::{Frozen, last_id, poll, slave_args};
use common::{Opts, Raw, Server, WAIT};
use smss::client::{Client, SlaveInfo};
use smss::replication::state::lag_events;

/// One STATS reply, with its numbers at hand.
#[derive(Debug)]
struct Stats(Vec<(String, String)>);

impl Stats {
    fn of(c: &mut Client) -> Stats {
        Stats(c.stats().expect("STATS"))
    }

    fn text(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("STATS has no {name}: {:?}", self.0))
    }

    fn num(&self, name: &str) -> u64 {
        let v = self.text(name);
        v.parse()
            .unwrap_or_else(|_| panic!("STATS {name} is not a number: {v}"))
    }

    /// The slave's own lag fields agree with its ids (one definition).
    fn assert_consistent_lag(&self) {
        let (have, master) = (self.num("last_event_id"), self.num("master_event_id"));
        assert_eq!(
            self.num("replication_lag_events"),
            lag_events(have, master),
            "{self:?}"
        );
        if have >= master {
            assert_eq!(self.num("replication_lag_ms"), 0, "{self:?}");
        }
    }
}

/// Held by the tests that write tens of MiB, so they do not write at the
/// same time and stall each other's writers on the shared disk.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy_turn() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn store_fast() -> Opts {
    // The log's durability is not under test: no fsync keeps the big
    // backlogs quick to write on both sides.
    Opts::new().store("fsync: never")
}

/// `count` payloads of `size` bytes to `topic`, as MPUBs of about 1 MiB.
fn publish_backlog(c: &mut Client, topic: &str, count: usize, size: usize) -> u64 {
    let body = vec![b'x'; size];
    let per = ((1 << 20) / size).max(1);
    let mut last = 0;
    let mut left = count;
    while left > 0 {
        let n = left.min(per);
        let batch: Vec<&[u8]> = vec![&body[..]; n];
        last = c.mpublish(topic, &batch).expect("MPUB").1;
        left -= n;
    }
    last
}

/// Polls the master's SLAVES until its one slave streams, caught up at
/// `last`; panics if it ever lists the slave twice, or as syncing unless
/// `resync` (a new slave's first full resync).
fn wait_one_streaming(m: &mut Client, last: u64, resync: bool) -> SlaveInfo {
    poll("the slave listed once, streaming, caught up", || {
        let slaves = m.slaves().expect("SLAVES");
        assert!(slaves.len() <= 1, "the slave is listed twice: {slaves:?}");
        assert!(
            resync || slaves.iter().all(|s| s.state != "syncing"),
            "no full resync happened, yet: {slaves:?}"
        );
        match slaves.as_slice() {
            [s] if s.state == "streaming" && s.acked_event_id == last => Ok(s.clone()),
            _ => Err(slaves),
        }
    })
}

#[test]
fn a_slave_copying_a_backlog_shows_its_lag_and_so_does_its_master() {
    let _turn = heavy_turn();
    let started = Instant::now();
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    let master = Server::start_with(mdir.path(), &store_fast());
    let mut m = master.client();
    m.create("t", 0).expect("create");
    // More than the loopback socket buffers can hold (4 MiB sent, up to
    // 32 MiB received) with a slave's apply batch (8 MiB), so a slave that
    // has begun copying is far from done.
    let last = publish_backlog(&mut m, "t", 1152, 64 << 10);
    assert_eq!(last_id(&mut m), last, "the master acknowledged all of it");

    let slave = Server::start_with_args(sdir.path(), &store_fast(), &slave_args(&master.addr, &[]));
    let mut s = slave.client();
    poll("the slave to begin copying", || {
        let st = Stats::of(&mut s);
        if st.num("last_event_id") > 0 {
            Ok(())
        } else {
            Err(st)
        }
    });
    // The master stops sending mid-backlog: the slave applies what the
    // socket holds and waits with the rest missing.
    let frozen = Frozen::new(&master);
    let st = poll("the slave to show how far behind it is", || {
        let st = Stats::of(&mut s);
        let behind = st.num("master_event_id") == last
            && st.num("last_event_id") < last
            && st.num("replication_lag_ms") > 0;
        if behind { Ok(st) } else { Err(st) }
    });
    st.assert_consistent_lag();
    assert!(st.num("replication_lag_events") > 0, "{st:?}");
    // How old the oldest missing record is: never older than the test.
    let age = st.num("replication_lag_ms");
    assert!(
        u128::from(age) <= started.elapsed().as_millis(),
        "lag {age} ms in a test {:?} old",
        started.elapsed()
    );
    assert_eq!(st.text("repl_state"), "streaming");
    drop(frozen);

    // Caught up: no lag on either side.
    let st = poll("the slave to catch up", || {
        let st = Stats::of(&mut s);
        if st.num("last_event_id") == last && st.num("replication_lag_events") == 0 {
            Ok(st)
        } else {
            Err(st)
        }
    });
    st.assert_consistent_lag();
    assert_eq!(
        (st.num("master_event_id"), st.num("replication_lag_ms")),
        (last, 0)
    );
    let seen = wait_one_streaming(&mut m, last, true);
    assert_eq!((seen.lag_events, seen.lag_ms), (0, 0), "{seen:?}");

    // The master's side of the same definition: a frozen slave lacks what
    // was written since, and the oldest of it ages.
    let frozen = Frozen::new(&slave);
    let before_pub = Instant::now();
    let (first, more) = m.mpublish("t", &[b"a", b"b", b"c"]).expect("MPUB");
    assert_eq!(more - first, 2);
    let seen = poll("the master to show the frozen slave's lag", || {
        let slaves = m.slaves().expect("SLAVES");
        match slaves.as_slice() {
            [s] if s.lag_ms > 0 => Ok(s.clone()),
            _ => Err(slaves),
        }
    });
    assert_eq!(seen.acked_event_id, last, "{seen:?}");
    assert_eq!(seen.lag_events, more - last, "{seen:?}");
    // Record times and the master's clock are whole ms: 1 ms of rounding.
    assert!(
        u128::from(seen.lag_ms) <= before_pub.elapsed().as_millis() + 1,
        "{seen:?}: older than the records it lacks"
    );
    drop(frozen);
    let seen = wait_one_streaming(&mut m, more, false);
    assert_eq!((seen.lag_events, seen.lag_ms), (0, 0), "{seen:?}");
    slave_caught_up(&mut s, more, "the slave to hear the master's last id");
}

/// Publishes small batches to `addr` until `stop`, counting the last id;
/// a failed MPUB ends it with the error, for the test to show.
fn steady_load(addr: String, stop: Arc<AtomicBool>, last: Arc<AtomicU64>) -> Result<(), String> {
    let mut c = Client::connect(&addr).map_err(|e| format!("connect the publisher: {e}"))?;
    c.set_timeout(Some(WAIT))
        .map_err(|e| format!("timeout: {e}"))?;
    let body = [b'y'; 200];
    let batch: Vec<&[u8]> = vec![&body[..]; 20];
    while !stop.load(Ordering::Relaxed) {
        let (_, id) = c.mpublish("load", &batch).map_err(|e| {
            format!(
                "MPUB under load after id {}: {e}",
                last.load(Ordering::Relaxed)
            )
        })?;
        last.store(id, Ordering::Relaxed);
    }
    Ok(())
}

/// Panics with the publisher's error if it has ended.
fn assert_still_loading(load: &mut Option<std::thread::JoinHandle<Result<(), String>>>) {
    if load.as_ref().is_some_and(|l| l.is_finished()) {
        let ended = load.take().map(|l| l.join());
        panic!("the load ended early: {ended:?}");
    }
}

#[test]
fn under_steady_load_the_slave_knows_the_masters_position_without_heartbeats() {
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    let master = Server::start_with(mdir.path(), &store_fast());
    let slave = Server::start_with_args(sdir.path(), &store_fast(), &slave_args(&master.addr, &[]));
    let (mut m, mut s) = (master.client(), slave.client());
    m.create("load", 0).expect("create");
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let load = {
        let (a, st, p) = (
            master.addr.clone(),
            Arc::clone(&stop),
            Arc::clone(&published),
        );
        Some(std::thread::spawn(move || steady_load(a, st, p)))
    };
    let mut load = load;
    // A heartbeat goes out only after a second without records: under
    // this load the slave can learn the master's position only from the
    // record frames.
    for _ in 0..5 {
        let acked = last_id(&mut m);
        let st = poll("the slave to learn a recent master position", || {
            let st = Stats::of(&mut s);
            if st.num("master_event_id") >= acked {
                Ok(st)
            } else {
                Err(st)
            }
        });
        st.assert_consistent_lag();
        assert_still_loading(&mut load);
        // The slave hears a frame before it applies, fsyncs and ACKs it, so
        // the master may list it as syncing until that first ACK arrives.
        let slaves = poll("the master to list the slave as streaming", || {
            let slaves = m.slaves().expect("SLAVES");
            if slaves.len() == 1 && slaves[0].state == "streaming" {
                Ok(slaves)
            } else {
                Err(slaves)
            }
        });
        assert_eq!(slaves.len(), 1, "{slaves:?}");
    }
    let still = published.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    if let Some(l) = load {
        let ended = l.join().expect("the publisher thread");
        assert_eq!(ended, Ok(()), "the publisher");
    }
    assert!(still > 0);
    let last = last_id(&mut m);
    let seen = wait_one_streaming(&mut m, last, true);
    assert_eq!((seen.lag_events, seen.lag_ms), (0, 0));
    slave_caught_up(&mut s, last, "the slave to catch up after the load");
}

/// Most bytes [`heavy_load`] writes: well past what the socket buffers
/// between master and slave hold, without filling the disk.
const HEAVY_MAX_BYTES: u64 = 80 << 20;

/// Publishes 1 MiB MPUBs to `addr` until `stop` or [`HEAVY_MAX_BYTES`];
/// counts the bytes.
fn heavy_load(addr: String, stop: Arc<AtomicBool>, bytes: Arc<AtomicU64>) {
    let mut c = Client::connect(&addr).expect("connect the publisher");
    c.set_timeout(Some(WAIT)).expect("timeout");
    let body = vec![b'z'; 64 << 10];
    let batch: Vec<&[u8]> = vec![&body[..]; 16];
    while !stop.load(Ordering::Relaxed) && bytes.load(Ordering::Relaxed) < HEAVY_MAX_BYTES {
        c.mpublish("heavy", &batch).expect("MPUB under load");
        bytes.fetch_add(16 << 16, Ordering::Relaxed);
    }
}

#[test]
fn a_frozen_slave_is_dropped_after_slave_timeout_ms_and_comes_back_once() {
    const TIMEOUT_MS: u64 = 2000;
    let _turn = heavy_turn();
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    // A short socket write timeout for clients: the slave's sender must
    // not use it, or the frozen slave would go ~0.1 s after its buffers fill.
    let mopts = store_fast()
        .section(&format!("replication:\n  slaveTimeoutMs: {TIMEOUT_MS}"))
        .section("timeout:\n  net:\n    write: 100");
    let master = Server::start_with(mdir.path(), &mopts);
    let slave = Server::start_with_args(sdir.path(), &store_fast(), &slave_args(&master.addr, &[]));
    let mut m = master.client();
    m.create("heavy", 0).expect("create");
    let last = last_id(&mut m);
    wait_one_streaming(&mut m, last, true);
    let full_syncs = Stats::of(&mut m).num("repl_full_syncs");

    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let load = {
        let (a, st, b) = (master.addr.clone(), Arc::clone(&stop), Arc::clone(&bytes));
        std::thread::spawn(move || heavy_load(a, st, b))
    };
    poll("the load to reach the slave", || {
        let slaves = m.slaves().expect("SLAVES");
        match slaves.as_slice() {
            [s] if s.acked_event_id > last => Ok(()),
            _ => Err(slaves),
        }
    });
    let frozen = Frozen::new(&slave);
    let t0 = Instant::now();
    let at_freeze = bytes.load(Ordering::Relaxed);
    poll("the master to drop the frozen slave", || {
        let slaves = m.slaves().expect("SLAVES");
        assert!(slaves.len() <= 1, "{slaves:?}");
        if slaves.is_empty() {
            Ok(())
        } else {
            Err(slaves)
        }
    });
    let gone_after = t0.elapsed();
    let written = bytes.load(Ordering::Relaxed) - at_freeze;
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the publisher");
    // Its last ACK came a moment before the freeze: allow for that.
    let earliest = Duration::from_millis(TIMEOUT_MS - 500);
    assert!(
        gone_after >= earliest,
        "dropped {gone_after:?} after the freeze, before slaveTimeoutMs ({TIMEOUT_MS} ms)"
    );
    // More than the socket buffers between them hold (4 + 32 MiB): the
    // sender's writes were blocked well before the drop.
    assert!(
        written > 40 << 20,
        "only {written} bytes written while the slave was frozen"
    );
    assert!(
        master.log_text().contains("replication.slaveTimeoutMs"),
        "the master says why it dropped the slave:\n{}",
        master.log_text()
    );

    // Continued, it reconnects by itself: listed once, streaming, and
    // without a full resync.
    drop(frozen);
    let last = last_id(&mut m);
    wait_one_streaming(&mut m, last, false);
    assert_eq!(Stats::of(&mut m).num("repl_full_syncs"), full_syncs);
}

#[test]
fn a_frozen_master_keeps_its_slave_listed_once() {
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    let master = Server::start(mdir.path());
    // The slave gives up on a silent master after 1 s (its own setting).
    let sopts = Opts::new().section("replication:\n  slaveTimeoutMs: 1000");
    let slave = Server::start_with_args(sdir.path(), &sopts, &slave_args(&master.addr, &[]));
    let (mut m, mut s) = (master.client(), slave.client());
    m.create("t", 0).expect("create");
    let last = m.publish("t", b"one").expect("pub");
    wait_one_streaming(&mut m, last, true);
    let full_syncs = Stats::of(&mut m).num("repl_full_syncs");

    let frozen = Frozen::new(&master);
    // The kernel still accepts its connections: the slave connects again
    // and again while the old session is still open on the master.
    poll("the slave to give up on the silent master twice", || {
        let st = Stats::of(&mut s);
        if st.num("repl_reconnects") >= 2 {
            Ok(())
        } else {
            Err(st)
        }
    });
    drop(frozen);
    let seen = wait_one_streaming(&mut m, last, false);
    assert_eq!((seen.lag_events, seen.lag_ms), (0, 0));
    assert_eq!(Stats::of(&mut m).num("repl_full_syncs"), full_syncs);
    poll("the slave to stream again", || {
        let st = Stats::of(&mut s);
        if st.text("repl_state") == "streaming" {
            Ok(())
        } else {
            Err(st)
        }
    });
}

/// Reads `raw` until the server closes it; false on a timeout.
fn closed_by_server(raw: &mut Raw) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match raw.stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The next RECS line of a replication stream, past LEASE lines.
fn recs_line(raw: &mut Raw) -> String {
    for _ in 0..10 {
        let line = raw.line();
        if !line.starts_with("LEASE ") {
            return line;
        }
    }
    panic!("only LEASE lines");
}

#[test]
fn a_new_session_of_a_node_replaces_the_old_one_on_the_wire() {
    let mdir = common::tempdir();
    let master = Server::start(mdir.path());
    let mut m = master.client();
    m.create("t", 0).expect("create");
    let last = m.publish("t", b"one").expect("pub");

    // An empty slave: a full resync, listed as syncing until it acknowledges.
    let mut first = Raw::connect(&master.addr);
    first.send(b"REPL 0 history=0 epoch=0 empty=1 node=ab format=3\r\n");
    let ok = first.line();
    let f: Vec<&str> = ok.split(' ').collect();
    assert_eq!((f[0], f.get(3).copied()), ("OK", Some("full")), "{ok}");
    let (history, epoch) = (f[1].to_string(), f[2].to_string());
    poll("the first session listed as syncing", || {
        let slaves = m.slaves().expect("SLAVES");
        match slaves.as_slice() {
            [s] if s.state == "syncing" => Ok(()),
            _ => Err(slaves),
        }
    });

    // The same node again, as a slave that has record 1: a stream plan.
    // It replaces the first session, which the master closes.
    let mut second = Raw::connect(&master.addr);
    second.send(
        format!("REPL 1 history={history} epoch={epoch} empty=0 node=ab format=3\r\n").as_bytes(),
    );
    assert_eq!(second.line(), format!("OK {history} {epoch} stream"));
    let addr = second.stream.local_addr().expect("addr").to_string();
    let slaves = m.slaves().expect("SLAVES");
    assert_eq!(slaves.len(), 1, "{slaves:?}");
    assert_eq!(
        (slaves[0].addr.as_str(), slaves[0].state.as_str()),
        (addr.as_str(), "streaming")
    );
    assert!(
        closed_by_server(&mut first),
        "the old session was not ended"
    );
    // A slave that names itself gets the long RECS form: the master's
    // last id, its time, and the next record's time (none here: 0).
    let recs = recs_line(&mut second);
    let t: Vec<&str> = recs.split(' ').collect();
    assert_eq!(
        (t.len(), t[0], t[3], t[5]),
        (6, "RECS", &*last.to_string(), "0"),
        "{recs}"
    );
    let n: usize = t[2].parse().expect("byte count");
    second.payload(n);

    // An older slave's REPL line (no node=) is still served, in the short
    // form, and listed beside the other.
    let mut old = Raw::connect(&master.addr);
    old.send(format!("REPL 1 history={history} epoch={epoch} empty=0 format=3\r\n").as_bytes());
    assert_eq!(old.line(), format!("OK {history} {epoch} stream"));
    let recs = recs_line(&mut old);
    assert_eq!(recs.split(' ').count(), 3, "{recs}");
    assert_eq!(m.slaves().expect("SLAVES").len(), 2);
}

/// Waits until the slave has `id` and knows it is the master's last, then
/// checks that it shows no lag.
fn slave_caught_up(s: &mut Client, id: u64, what: &str) {
    let st = poll(what, || {
        let st = Stats::of(s);
        if st.num("last_event_id") == id && st.num("master_event_id") == id {
            Ok(st)
        } else {
            Err(st)
        }
    });
    assert_eq!(
        (
            st.num("replication_lag_events"),
            st.num("replication_lag_ms")
        ),
        (0, 0)
    );
}
