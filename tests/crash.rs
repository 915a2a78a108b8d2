//! Crash harness: rounds of `kill -9` on one data directory. Each round
//! starts the real server (`store.fsync: always`), runs concurrent
//! publishers (PUB, MPUB, DPUB, CREATE/DELETE of scratch topics), records
//! every acknowledged write as it is acknowledged, kills the server at a
//! random moment, sometimes kills it again while it recovers, restarts it
//! and checks what survived:
//!
//! - every acknowledged write is there, byte-exact with its headers;
//! - nothing appears that was not written: an unacknowledged write (in
//!   flight at the kill) is either there whole or absent, an MPUB too;
//! - ids strictly increase in each topic, and every id that appears after
//!   a restart is above every id known before it (ids never go back);
//! - acknowledged DPUBs are delivered once or still pending (STATS
//!   `delayed_pending`), and at the end every one has fired;
//! - deleted topics stay deleted.
//!
//! Every choice (publishers, their operations and payloads, when to kill)
//! comes from one seed, printed first. `SMSS_CRASH_SEED` (decimal or `0x`
//! hex) replays a run's choices and `SMSS_CRASH_ROUNDS` sets the number of
//! rounds (default 3). The seed fixes what is done and when the kills come;
//! thread interleaving still varies between runs.
//!
//! This file holds the plan of each round, the kills and the rounds;
//! `crash/publisher.rs` the writers and their journals; `crash/model.rs`
//! what must be in the store and the check after each restart.

mod common;
#[path = "crash/model.rs"]
mod model;
#[path = "crash/publisher.rs"]
mod publisher;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Opts, Server, WAIT, stat};
use model::{Kind, Model, Tally, check};
use publisher::{Acked, Journal, Op, Spec, lock, publisher};

/// Topics that live through the whole run; scratch topics come and go.
const PERM_TOPICS: [&str; 3] = ["load-0", "load-1", "load-2"];
/// Longest extra wait, in µs, after a round's kill point under load.
const MAX_KILL_DELAY_US: u64 = 3_000;
/// Longest wait, in ms, before the kill of a round that ends idle.
const MAX_IDLE_KILL_MS: u64 = 250;
/// Short DPUB delays fire within a round or during recovery; long ones
/// stay pending across several crashes.
const SHORT_DELAY_MS: (u64, u64) = (1, 250);
const LONG_DELAY_MS: (u64, u64) = (600, 2_500);

// ---------------------------------------------------------------- seeds

pub(crate) use common::seed::Rng;
use common::seed::{env_u64, time_seed};

/// Printed when the harness fails, so the failure can be replayed.
struct ReplayHint {
    seed: u64,
    rounds: u64,
}

impl Drop for ReplayHint {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "crash harness FAILED; replay with: SMSS_CRASH_SEED={:#x} SMSS_CRASH_ROUNDS={} \
                 cargo test --release --test crash -- --nocapture",
                self.seed, self.rounds
            );
        }
    }
}

/// What one round does, all drawn from its seed.
struct Plan {
    seed: u64,
    publishers: u64,
    budget: u64,
    kill: Kill,
    recovery_kills: Vec<RecoveryKill>,
}

/// When the round's server dies. A point in the load is counted in
/// acknowledged writes, so it falls inside the load on fast and slow
/// machines alike; the delay after it moves the kill off reply boundaries.
#[derive(Clone, Copy)]
enum Kill {
    /// This many µs after the n-th acknowledged write.
    UnderLoad { acks: u64, delay_us: u64 },
    /// This many ms after every publisher finished (delayed messages and
    /// checkpoints may still be running).
    Idle { delay_ms: u64 },
}

#[derive(Clone, Copy)]
enum RecoveryKill {
    /// SIGKILL this many µs after spawning, READY or not.
    AfterSpawn(u64),
    /// SIGKILL this many ms after the READY line.
    AfterReady(u64),
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::UnderLoad { acks, delay_us } => {
                write!(f, "kill -9 {delay_us} us after acknowledged write {acks}")
            }
            Kill::Idle { delay_ms } => write!(f, "kill -9 {delay_ms} ms after the load"),
        }
    }
}

impl std::fmt::Display for RecoveryKill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryKill::AfterSpawn(us) => write!(f, "spawn+{us}us"),
            RecoveryKill::AfterReady(ms) => write!(f, "READY+{ms}ms"),
        }
    }
}

impl Plan {
    fn new(seed: u64) -> Plan {
        let mut r = Rng(seed);
        let publishers = r.range((3, 6));
        let budget = r.range((20, 150));
        let kill = if r.chance(85) {
            Kill::UnderLoad {
                acks: r.range((1, publishers * budget)),
                delay_us: r.range((0, MAX_KILL_DELAY_US)),
            }
        } else {
            Kill::Idle {
                delay_ms: r.range((0, MAX_IDLE_KILL_MS)),
            }
        };
        let kills = if r.chance(40) { r.range((1, 2)) } else { 0 };
        let recovery_kills = (0..kills)
            .map(|_| {
                if r.chance(60) {
                    RecoveryKill::AfterSpawn(r.range((0, 8_000)))
                } else {
                    RecoveryKill::AfterReady(r.range((0, 20)))
                }
            })
            .collect();
        Plan {
            seed,
            publishers,
            budget,
            kill,
            recovery_kills,
        }
    }

    fn thread_seed(&self, t: u64) -> u64 {
        Rng(self.seed ^ (t + 1).wrapping_mul(0xA24B_AED4_963E_E407)).next()
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {:#018x}: {} publishers x <={} ops, {}",
            self.seed, self.publishers, self.budget, self.kill
        )?;
        if !self.recovery_kills.is_empty() {
            let ks: Vec<String> = self.recovery_kills.iter().map(|k| k.to_string()).collect();
            write!(f, ", then kill during recovery: {}", ks.join(", "))?;
        }
        Ok(())
    }
}

// ------------------------------------------------- servers killed early

/// A server started without waiting for READY, to be killed while it
/// recovers. Dropping it kills it by its PID (std keeps the reaped status,
/// so a second kill never hits a reused PID).
struct Spawned {
    child: Child,
    ready: mpsc::Receiver<()>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Spawned {
    fn start(config: &Path) -> Spawned {
        let mut child = Command::new(common::bin())
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smss");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) if l.starts_with("READY ") => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Spawned {
            child,
            ready,
            stderr: Some(stderr),
        }
    }

    /// Kills as the plan says; returns what the kill interrupted.
    fn kill_during_recovery(mut self, how: RecoveryKill) -> String {
        let ready = match how {
            RecoveryKill::AfterSpawn(us) => {
                std::thread::sleep(Duration::from_micros(us));
                self.ready.try_recv().is_ok()
            }
            RecoveryKill::AfterReady(ms) => {
                let r = self.ready.recv_timeout(WAIT).is_ok();
                std::thread::sleep(Duration::from_millis(ms));
                r
            }
        };
        if let Ok(Some(status)) = self.child.try_wait() {
            let err = self.stderr.take().map(|h| h.join().unwrap_or_default());
            panic!("smss exited by itself during recovery ({status}): {err:?}");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if ready { "after READY" } else { "before READY" }.to_string()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ the rounds

/// Starts the publishers, kills the server as `plan.kill` says, and folds
/// every acknowledged and in-flight write into the model.
fn load(s: Server, round: u64, plan: &Plan, model: &mut Model) -> String {
    let scratch = model.scratch();
    let (ack_tx, ack_rx) = mpsc::channel();
    let mut threads = Vec::new();
    for t in 0..plan.publishers {
        let spec = Spec {
            round,
            t,
            seed: plan.thread_seed(t),
            budget: plan.budget,
            scratch: scratch
                .iter()
                .skip(t as usize)
                .step_by(plan.publishers as usize)
                .cloned()
                .collect(),
        };
        let journal = Arc::new(Mutex::new(Journal::default()));
        let (c, j, tx) = (s.client(), journal.clone(), ack_tx.clone());
        let h = std::thread::spawn(move || publisher(c, spec, j, tx));
        threads.push((h, journal));
    }
    drop(ack_tx);
    let started = Instant::now();
    let deadline = started + WAIT;
    let (target, delay) = match plan.kill {
        Kill::UnderLoad { acks, delay_us } => (acks, Duration::from_micros(delay_us)),
        Kill::Idle { delay_ms } => (u64::MAX, Duration::from_millis(delay_ms)),
    };
    // Count acknowledgements up to the kill point; the channel closes
    // when every publisher is done.
    let mut seen = 0;
    while seen < target {
        match ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => seen += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("round {round}: only {seen} writes acknowledged in {WAIT:?}")
            }
        }
    }
    std::thread::sleep(delay);
    let kill_at = Instant::now();
    let killed_after = kill_at - started;
    s.kill9();

    let mut tally = Tally::default();
    let mut in_flight = 0;
    for (t, (h, journal)) in threads.into_iter().enumerate() {
        h.join().expect("publisher thread");
        let j = std::mem::take(&mut *lock(&journal));
        if let Some(err) = &j.error {
            match j.died_at {
                Some(at) if at >= kill_at => {}
                _ => panic!("round {round}: publisher {t} before the kill: {err}"),
            }
        }
        for (op, a) in j.acked {
            model.acked(op, a, &mut tally);
        }
        if let Some(op) = j.in_flight {
            model.in_flight(op);
            in_flight += 1;
        }
    }
    let total = tally.pubs + tally.mpubs + tally.dpubs + tally.creates + tally.deletes;
    assert!(total > 0, "round {round}: something was acknowledged");
    format!(
        "{total} acknowledged ({} PUB, {} MPUB, {} DPUB, {} CREATE, {} DELETE), \
         {in_flight} in flight at the kill after {:.1} ms",
        tally.pubs,
        tally.mpubs,
        tally.dpubs,
        tally.creates,
        tally.deletes,
        killed_after.as_secs_f64() * 1000.0
    )
}

#[test]
fn kill9_rounds_lose_no_acknowledged_write() {
    let seed = env_u64("SMSS_CRASH_SEED").unwrap_or_else(time_seed);
    let rounds = env_u64("SMSS_CRASH_ROUNDS").unwrap_or(3);
    println!("crash harness: SMSS_CRASH_SEED={seed:#x} SMSS_CRASH_ROUNDS={rounds}");
    let _hint = ReplayHint { seed, rounds };
    let run_started = Instant::now();

    let dir = common::tempdir();
    // Small segments and checkpoints, so kills also land on rolls and
    // checkpoint writes.
    let opts = Opts::new()
        .store("fsync: always")
        .store("maxLogSize: 262144")
        .store("checkpointBytes: 65536");
    let config = common::write_config(dir.path(), &opts);
    let mut model = Model::default();
    {
        let s = Server::start_config(dir.path(), &config);
        let mut c = s.client();
        let mut tally = Tally::default();
        for t in PERM_TOPICS {
            let id = c.create(t, 0).expect("create");
            model.acked(Op::Create(t.to_string()), Acked::Id(id), &mut tally);
        }
        model.floor = stat(&mut c, "last_event_id");
        drop(c);
        s.kill9();
    }

    let mut master = Rng(seed);
    for round in 0..rounds {
        let plan = Plan::new(master.next());
        println!(
            "round {}/{rounds} at {:.1} s, {plan}",
            round + 1,
            run_started.elapsed().as_secs_f64()
        );
        for how in &plan.recovery_kills {
            let at = Spawned::start(&config).kill_during_recovery(*how);
            println!("  recovery kill {how}: {at}");
        }
        let t0 = Instant::now();
        let s = Server::start_config(dir.path(), &config);
        let t1 = Instant::now();
        let summary = check(&s, &mut model, &format!("round {}", round + 1));
        let t2 = Instant::now();
        println!(
            "  restart: {summary} (up in {:.1?}, checked in {:.1?})",
            t1 - t0,
            t2 - t1
        );
        println!("  load: {}", load(s, round, &plan, &mut model));
    }

    // The last crash, then every delayed message must fire.
    let s = Server::start_config(dir.path(), &config);
    println!("final restart: {}", check(&s, &mut model, "final restart"));
    let deadline = Instant::now() + Duration::from_millis(LONG_DELAY_MS.1) + WAIT;
    let mut c = s.client();
    while stat(&mut c, "delayed_pending") > 0 {
        assert!(Instant::now() < deadline, "delayed messages never fired");
        // No signal says "every delayed message fired"; poll, bounded.
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("all fired: {}", check(&s, &mut model, "after all fired"));
    let lost: Vec<String> = model
        .expect
        .values()
        .filter_map(|e| match e.kind {
            Kind::Fire { dpub_id: Some(id) } => Some(format!("DPUB {id} on {}", e.topic)),
            _ => None,
        })
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged DPUBs never delivered: {lost:?}"
    );
    let next = c.publish(PERM_TOPICS[0], b"last").expect("pub");
    assert!(next > model.floor, "no id is reused after crashes");
    drop(c);
    assert!(s.sigterm().success(), "SIGTERM after the rounds exits 0");
    model.expect.clear(); // nothing is pending or in flight any more
    let mut tally = Tally::default();
    let op = Op::Pub {
        topic: PERM_TOPICS[0].into(),
        headers: Vec::new(),
        payload: b"last".to_vec(),
    };
    model.acked(op, Acked::Id(next), &mut tally);
    let s = Server::start_config(dir.path(), &config);
    println!("clean restart: {}", check(&s, &mut model, "clean restart"));
    println!(
        "crash harness: {rounds} rounds passed in {:.1} s (seed {seed:#x})",
        run_started.elapsed().as_secs_f64()
    );
}
