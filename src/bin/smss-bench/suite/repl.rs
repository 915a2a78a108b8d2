//! `bench matrix`'s replication rows and their targets. Every row runs on
//! fresh servers, each with its own port and temp dir and `fsync: always`
//! on both sides, 200-byte PUB over 16 connections:
//!
//! - the master's throughput with no slave, with one async slave and with
//!   one semi-sync slave (`replication.sync: true`), the median of
//!   `--repl-rounds` rounds over the three (kept up side by side);
//! - publish-to-visible-on-slave latency under that load (a `SUB t $` on
//!   the slave, payloads stamped with their send time: [`visible`]), and
//!   the same on the master alone as the baseline;
//! - the catch-up rate of a fresh slave copying a `--repl-backlog` backlog.
//!
//! Owns starting a master and its slave, waiting until the slave streams
//! (its STATS `last_event_id` has reached the master's after a write),
//! timing the catch-up, and the pure target checks ([`Check`]). Servers
//! live in [`Proc`] guards: a slave is declared after its master, so it
//! is stopped first.

use std::path::Path;
use std::time::{Duration, Instant};

use super::procs::{Proc, StatsConn, TempDir, start_smss, start_smss_args, write_smss_config_with};
use super::rows::{Row, measure, pub_opts};
use crate::error::BenchError;
use crate::load::{cpu_s, visible};
use crate::opts::{Mode, Opts, Protocol, SuiteOpts};
use crate::report::Report;
use crate::wire::{Conn, Reply};

/// Connections of the throughput and visibility rows.
const CONNS: usize = 16;
/// How long a slave may take to reach the master's last event id when
/// there is (next to) nothing to copy.
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// Interval of the STATS polls that watch a slave.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// `replication.syncTimeoutMs` of the semi-sync master (the default).
const SYNC_TIMEOUT_MS: u64 = 1000;
/// Messages per MPUB, and in flight, of the catch-up backlog fill: enough
/// to make the fill quick under `fsync: always`, under `limits.maxBatch`.
const FILL_MPUB: usize = 200;
const FILL_CONNS: usize = 8;
const FILL_PIPELINE: usize = 2;

/// Starts a master (`sync`: semi-sync) on `tmp/<tag>`.
fn start_master(bin: &Path, tmp: &TempDir, tag: &str, sync: bool) -> Result<Proc, BenchError> {
    let extra = if sync {
        format!("replication:\n  sync: true\n  syncTimeoutMs: {SYNC_TIMEOUT_MS}\n")
    } else {
        String::new()
    };
    let config = write_smss_config_with(&tmp.sub(tag)?, "always", &extra)?;
    let p = start_smss(bin, &config, &format!("smss {tag}"))?;
    eprintln!("bench: smss {tag} pid {} on {}", p.pid(), p.addr());
    Ok(p)
}

/// Starts a slave of `master` on `tmp/<tag>`, an empty data dir.
fn start_slave(bin: &Path, tmp: &TempDir, tag: &str, master: &Proc) -> Result<Proc, BenchError> {
    let config = write_smss_config_with(&tmp.sub(tag)?, "always", "")?;
    let maddr = master.addr();
    let args = ["--role", "slave", "--master", maddr.as_str()];
    let p = start_smss_args(bin, &config, &format!("smss {tag}"), &args)?;
    eprintln!(
        "bench: smss {tag} pid {} on {}, slave of {maddr}",
        p.pid(),
        p.addr()
    );
    Ok(p)
}

fn create_topic(addr: &str, topic: &str) -> Result<(), BenchError> {
    let mut c = Conn::connect(addr, Duration::from_secs(10))?;
    c.send(format!("CREATE {topic}\r\n").as_bytes())?;
    match c.smss()? {
        Reply::Ok(..) => Ok(()),
        other => Err(BenchError::Server(format!("CREATE {topic}: {other:?}"))),
    }
}

/// Polls `slave`'s `last_event_id` every [`POLL_EVERY`] until it reaches
/// `target` or `deadline` passes: (the last id seen, whether it reached).
fn poll_until(
    slave: &mut StatsConn,
    target: u64,
    deadline: Instant,
) -> Result<(u64, bool), BenchError> {
    loop {
        let id = slave.last_event_id()?;
        if id >= target {
            return Ok((id, true));
        }
        if Instant::now() >= deadline {
            return Ok((id, false));
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Waits until the slave has everything the (idle) master has; returns how
/// long that took.
fn wait_streaming(master: &mut StatsConn, slave: &mut StatsConn) -> Result<Duration, BenchError> {
    let t0 = Instant::now();
    let target = master.last_event_id()?;
    match poll_until(slave, target, t0 + STREAM_WAIT)? {
        (_, true) => Ok(t0.elapsed()),
        (id, false) => Err(BenchError::Server(format!(
            "the slave is at event {id}, the master at {target}, after {STREAM_WAIT:?}"
        ))),
    }
}

/// CPU seconds `pid` used since `then` (a [`cpu_s`] reading).
fn cpu_since(pid: u32, then: Option<f64>) -> Option<f64> {
    Some((cpu_s(Some(pid))? - then?).max(0.0))
}

fn add_note(r: &mut Report, note: String) {
    r.note = if r.note.is_empty() {
        note
    } else {
        format!("{}; {note}", r.note)
    };
}

/// The 16-connection PUB load on `topic` of the master at `port`.
fn load_opts(port: u16, topic: &str, s: &SuiteOpts) -> Opts {
    let mut o = pub_opts(Protocol::Smss, port, CONNS, 1, s.client_threads, s.max_secs);
    o.topic = Some(topic.to_string());
    o
}

/// One system of the throughput rows: a master with no slave, an async
/// slave or a semi-sync slave, each with its STATS connection, and its
/// rounds' reports. `slave` is declared before `master`, so it is stopped
/// first.
struct System {
    tag: &'static str,
    slave: Option<(Proc, StatsConn)>,
    master: Proc,
    ms: StatsConn,
    runs: Vec<Report>,
}

impl System {
    /// Starts the master (and slave), creates the load's topic `rt` and
    /// the visibility row's `rv` (the first writes) and waits until the
    /// slave has them, i.e. streams.
    fn start(
        bin: &Path,
        tmp: &TempDir,
        tag: &'static str,
        slave: bool,
        sync: bool,
    ) -> Result<System, BenchError> {
        let master = start_master(bin, tmp, &format!("repl-{tag}-m"), sync)?;
        let ms = StatsConn::connect(&master.addr())?;
        create_topic(&master.addr(), "rt")?;
        create_topic(&master.addr(), "rv")?;
        let slave = match slave {
            false => None,
            true => {
                let p = start_slave(bin, tmp, &format!("repl-{tag}-s"), &master)?;
                let ss = StatsConn::connect(&p.addr())?;
                Some((p, ss))
            }
        };
        let mut sys = System {
            tag,
            slave,
            master,
            ms,
            runs: Vec::new(),
        };
        sys.caught_up()?;
        Ok(sys)
    }

    /// Waits until the slave has all the (idle) master has: how long that
    /// took (no slave: zero).
    fn caught_up(&mut self) -> Result<Duration, BenchError> {
        match &mut self.slave {
            None => Ok(Duration::ZERO),
            Some((_, ss)) => wait_streaming(&mut self.ms, ss),
        }
    }

    /// One round: the 16-connection load, from a slave that has everything,
    /// with the slave's CPU per message and how long it took to catch up
    /// after the load in the note.
    fn round(&mut self, s: &SuiteOpts) -> Result<(), BenchError> {
        self.caught_up()?;
        let slave_pid = self.slave.as_ref().map(|(p, _)| p.pid());
        let cpu = slave_pid.and_then(|pid| cpu_s(Some(pid)));
        let mut r = measure(&self.master, &load_opts(self.master.port, "rt", s))?;
        if let Some(pid) = slave_pid {
            let cpu = cpu_since(pid, cpu);
            let behind = self.caught_up()?;
            if let Some(c) = cpu.filter(|_| r.done > 0) {
                let per_msg = c * 1e6 / r.done as f64;
                add_note(&mut r, format!("slave CPU {per_msg:.1} µs/msg"));
            }
            let ms = behind.as_millis();
            add_note(&mut r, format!("slave caught up {ms} ms after the load"));
        }
        self.runs.push(r);
        Ok(())
    }

    /// The load again with a subscriber on the slave (on the master when
    /// there is none: the baseline), once the slave has caught up.
    fn visibility(&mut self, s: &SuiteOpts) -> Result<Report, BenchError> {
        self.caught_up()?;
        let port = self
            .slave
            .as_ref()
            .map_or(self.master.port, |(p, _)| p.port);
        let o = Opts {
            server_pid: Some(self.master.pid()),
            ..load_opts(self.master.port, "rv", s)
        };
        let r = visible(&o, port)?;
        eprintln!("{}", r.line());
        Ok(r)
    }
}

/// The run of median rate (the lower of the two middle ones for an even
/// number), `None` for no runs.
fn median_run(runs: &[Report]) -> Option<&Report> {
    let mut v: Vec<&Report> = runs.iter().collect();
    v.sort_by(|a, b| a.msgs_per_s().total_cmp(&b.msgs_per_s()));
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// The throughput rows: `s.repl_rounds` rounds over the three systems,
/// all started first and kept up, each round in a rotated order (the
/// machine drifts), each row its median round; then each system's
/// visibility row. Returns the rows' reports: (throughput, visibility)
/// per system, `None` where it failed.
fn throughput_rows(
    out: &mut ReplRows,
    bin: &Path,
    tmp: &TempDir,
    s: &SuiteOpts,
) -> [(Option<Report>, Option<Report>); 3] {
    let specs = [
        ("none", false, false),
        ("async", true, false),
        ("semi-sync", true, true),
    ];
    let mut systems: Vec<Option<System>> = specs
        .iter()
        .map(
            |&(tag, slave, sync)| match System::start(bin, tmp, tag, slave, sync) {
                Ok(sys) => Some(sys),
                Err(e) => {
                    out.failed
                        .push((format!("repl {tag}"), format!("failed: {e}")));
                    None
                }
            },
        )
        .collect();
    let n = systems.len();
    for round in 0..s.repl_rounds.max(1) {
        for k in 0..n {
            let slot = &mut systems[(round + k) % n];
            if let Some(Err(e)) = slot.as_mut().map(|sys| sys.round(s)) {
                let tag = slot.as_ref().map_or("", |sys| sys.tag);
                out.failed
                    .push((format!("repl {tag}"), format!("failed: {e}")));
                *slot = None;
            }
        }
    }
    let mut got: [(Option<Report>, Option<Report>); 3] = Default::default();
    for (slot, g) in systems.iter_mut().zip(got.iter_mut()) {
        let Some(sys) = slot else { continue };
        let Some(mut r) = median_run(&sys.runs).cloned() else {
            continue;
        };
        if sys.runs.len() > 1 {
            let all: Vec<String> = sys.runs.iter().map(|r| num(Some(r.msgs_per_s()))).collect();
            let note = format!("median of {} rounds: {} msgs/s", all.len(), all.join(" / "));
            add_note(&mut r, note);
        }
        let tag = sys.tag;
        g.0 = out.keep(format!("repl {tag} pub C={CONNS}"), Ok(r));
        let on = if sys.slave.is_some() {
            "slave"
        } else {
            "master"
        };
        g.1 = out.keep(
            format!("repl {tag} visible on {on} C={CONNS}"),
            sys.visibility(s),
        );
    }
    got
}

/// A backlog of `s.repl_backlog` messages published fast (MPUB), then a
/// fresh slave started and timed until it has all of it. The report's rate
/// is records copied per second from the slave's start; its server CPU is
/// the slave's.
fn catch_up(bin: &Path, tmp: &TempDir, s: &SuiteOpts) -> Result<Report, BenchError> {
    let master = start_master(bin, tmp, "repl-catchup-m", false)?;
    create_topic(&master.addr(), "rc")?;
    let mut o = Opts::new(Mode::Pub, Protocol::Smss, master.port);
    o.topic = Some("rc".into());
    (o.conns, o.pipeline, o.mpub) = (FILL_CONNS, FILL_PIPELINE, FILL_MPUB);
    o.count = s.repl_backlog;
    let bound = (s.max_secs * 6.0).max(60.0);
    o.max_secs = bound;
    let fill = measure(&master, &o)?;
    let target = StatsConn::connect(&master.addr())?.last_event_id()?;
    let master_cpu = cpu_s(Some(master.pid()));
    let t0 = Instant::now();
    let slave = start_slave(bin, tmp, "repl-catchup-s", &master)?;
    let ready = t0.elapsed();
    let mut ss = StatsConn::connect(&slave.addr())?;
    let (got, reached) = poll_until(&mut ss, target, t0 + Duration::from_secs_f64(bound))?;
    let secs = t0.elapsed().as_secs_f64();
    let mut r = Report {
        mode: "catchup",
        protocol: "smss",
        conns: 1,
        count: target,
        done: got.min(target),
        size: o.size,
        secs,
        truncated: !reached,
        server_cpu_s: cpu_s(Some(slave.pid())),
        ..Report::default()
    };
    let mut note = format!(
        "{target} records ({} messages, filled at {:.0}/s{}); slave READY {} ms",
        fill.done,
        fill.msgs_per_s(),
        if fill.truncated {
            ", fill truncated"
        } else {
            ""
        },
        ready.as_millis()
    );
    if let Some(c) = cpu_since(master.pid(), master_cpu).filter(|_| r.done > 0) {
        note.push_str(&format!(
            "; master CPU {:.1} µs/record",
            c * 1e6 / r.done as f64
        ));
    }
    add_note(&mut r, note);
    eprintln!("{}", r.line());
    drop(slave);
    Ok(r)
}

/// What the replication rows give `bench matrix`: table rows, target
/// checks and the failures of rows that could not run.
#[derive(Default)]
pub(super) struct ReplRows {
    pub(super) rows: Vec<Row>,
    pub(super) checks: Vec<Check>,
    pub(super) failed: Vec<(String, String)>,
}

impl ReplRows {
    /// Keeps `r` as a row labelled `label`, or its error as a failure.
    fn keep(&mut self, label: String, r: Result<Report, BenchError>) -> Option<Report> {
        match r {
            Ok(r) => {
                self.rows.push(Row {
                    label,
                    r: r.clone(),
                });
                Some(r)
            }
            Err(e) => {
                self.failed.push((label, format!("failed: {e}")));
                None
            }
        }
    }
}

/// All replication rows and their checks.
pub(super) fn run(bin: &Path, tmp: &TempDir, s: &SuiteOpts) -> ReplRows {
    let mut out = ReplRows::default();
    let [(none, _), (asy, vis_a), (semi, vis_s)] = throughput_rows(&mut out, bin, tmp, s);
    let vis = [vis_a, vis_s];
    let rate = |r: &Option<Report>| r.as_ref().map(Report::msgs_per_s);
    let (none, asy, semi) = (rate(&none), rate(&asy), rate(&semi));
    out.checks.push(Check::new(
        "async slave's cost to the master's throughput",
        (Goal::AtMost(10.0), "%"),
        cost_pct(none, asy),
        |v| format!("{v:.1}% ({} → {} msgs/s)", num(none), num(asy)),
    ));
    out.checks.push(Check::new(
        "semi-sync ÷ async master throughput",
        (Goal::AtLeast(0.6), "×"),
        ratio(semi, asy),
        |v| format!("{v:.2}× ({} / {} msgs/s)", num(semi), num(asy)),
    ));
    for (tag, v) in [("async", &vis[0]), ("semi-sync", &vis[1])] {
        let p99 = v.as_ref().map(|r| r.p99_us as f64 / 1000.0);
        let p50 = v.as_ref().map(|r| r.p50_us as f64 / 1000.0);
        out.checks.push(Check::new(
            &format!("slave visibility p99, {tag} slave"),
            (Goal::AtMost(20.0), " ms"),
            p99,
            |v| format!("{v:.1} ms (p50 {:.1} ms)", p50.unwrap_or(0.0)),
        ));
    }
    if s.repl_backlog > 0 {
        let label = format!("repl catch-up {} backlog", s.repl_backlog);
        let c = out.keep(label, catch_up(bin, tmp, s));
        let got = c.as_ref().filter(|r| r.done > 0).map(Report::msgs_per_s);
        let done = c.as_ref().map(|r| (r.done, r.secs, r.truncated));
        out.checks.push(Check::new(
            "catch-up of a fresh slave",
            (Goal::AtLeast(300_000.0), " records/s"),
            got,
            |v| match done {
                Some((n, secs, cut)) => format!(
                    "{} records/s ({n} records in {secs:.2} s{})",
                    num(Some(v)),
                    if cut {
                        ", stopped by the time bound"
                    } else {
                        ""
                    }
                ),
                None => num(Some(v)),
            },
        ));
    }
    out
}

/// Prints the checks as a table: what, target, verdict, measured.
pub(super) fn print_checks(checks: &[Check]) {
    println!("\nreplication targets (fsync always on master and slave, 200-byte PUB)");
    println!(
        "{:<46} {:<20} {:<12} measured",
        "check", "target", "verdict"
    );
    for c in checks {
        println!(
            "{:<46} {:<20} {:<12} {}",
            c.what,
            c.target(),
            c.verdict(),
            c.shown
        );
    }
}

/// A figure's bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn holds(self, v: f64) -> bool {
        match self {
            Goal::AtMost(b) => v <= b,
            Goal::AtLeast(b) => v >= b,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::AtMost(b) => write!(f, "≤ {}", num(Some(*b))),
            Goal::AtLeast(b) => write!(f, "≥ {}", num(Some(*b))),
        }
    }
}

/// One target and what was measured against it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Check {
    what: String,
    goal: Goal,
    /// Unit of the goal's bound, as shown after it (`%`, ` ms`).
    unit: &'static str,
    /// The figure held to the goal; `None` = its rows did not run.
    got: Option<f64>,
    /// The figure as shown, with what it came from.
    shown: String,
}

impl Check {
    fn new(
        what: &str,
        (goal, unit): (Goal, &'static str),
        got: Option<f64>,
        show: impl Fn(f64) -> String,
    ) -> Check {
        Check {
            what: what.to_string(),
            goal,
            unit,
            got,
            shown: got.map(show).unwrap_or_else(|| "-".into()),
        }
    }

    /// The target cell: the bound and its unit.
    fn target(&self) -> String {
        format!("{}{}", self.goal, self.unit)
    }

    fn verdict(&self) -> &'static str {
        match self.got {
            None => "not measured",
            Some(v) if self.goal.holds(v) => "met",
            Some(_) => "NOT MET",
        }
    }
}

/// How much lower `with` is than `base`, in percent (negative: higher).
fn cost_pct(base: Option<f64>, with: Option<f64>) -> Option<f64> {
    let (b, w) = (base?, with?);
    (b > 0.0).then(|| (1.0 - w / b) * 100.0)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b > 0.0).then(|| a / b)
}

/// A rate or bound for the table: thousands separated, small ones with
/// their fraction.
fn num(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    if v.abs() < 100.0 {
        return format!("{v}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut s = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(ch);
    }
    if v < 0.0 { format!("-{s}") } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_run_is_a_whole_run() {
        let run = |done: u64, note: &str| Report {
            done,
            secs: 1.0,
            note: note.into(),
            ..Report::default()
        };
        assert!(median_run(&[]).is_none());
        assert_eq!(median_run(&[run(5, "a")]).map(|r| r.done), Some(5));
        let three = [run(30, "a"), run(10, "b"), run(20, "c")];
        assert_eq!(median_run(&three).map(|r| r.note.as_str()), Some("c"));
        // Even: the lower middle one.
        let four = [run(40, "a"), run(10, "b"), run(30, "c"), run(20, "d")];
        assert_eq!(median_run(&four).map(|r| r.note.as_str()), Some("d"));
    }

    #[test]
    fn costs_and_ratios() {
        assert_eq!(
            cost_pct(Some(100.0), Some(90.0)).map(f64::round),
            Some(10.0)
        );
        assert_eq!(
            cost_pct(Some(100.0), Some(110.0)).map(f64::round),
            Some(-10.0)
        );
        assert_eq!(cost_pct(Some(0.0), Some(5.0)), None);
        assert_eq!(cost_pct(None, Some(5.0)), None);
        assert_eq!(cost_pct(Some(5.0), None), None);
        assert_eq!(ratio(Some(3.0), Some(4.0)), Some(0.75));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }

    #[test]
    fn goals_and_verdicts() {
        assert!(Goal::AtMost(10.0).holds(10.0));
        assert!(!Goal::AtMost(10.0).holds(10.1));
        assert!(Goal::AtLeast(0.6).holds(0.6));
        assert!(!Goal::AtLeast(0.6).holds(0.59));
        assert_eq!(Goal::AtMost(20.0).to_string(), "≤ 20");
        assert_eq!(Goal::AtLeast(300_000.0).to_string(), "≥ 300,000");
        assert_eq!(Goal::AtLeast(0.6).to_string(), "≥ 0.6");
        let c = Check::new("x", (Goal::AtMost(10.0), "%"), Some(4.0), |v| {
            format!("{v}%")
        });
        assert_eq!((c.verdict(), c.shown.as_str()), ("met", "4%"));
        assert_eq!(c.target(), "≤ 10%");
        let c = Check::new("x", (Goal::AtLeast(0.6), "×"), Some(0.5), |v| {
            format!("{v}")
        });
        assert_eq!((c.verdict(), c.target().as_str()), ("NOT MET", "≥ 0.6×"));
        let c = Check::new("x", (Goal::AtLeast(3e5), "/s"), None, |v| format!("{v}"));
        assert_eq!((c.verdict(), c.shown.as_str()), ("not measured", "-"));
        assert_eq!(c.target(), "≥ 300,000/s");
    }

    #[test]
    fn numbers_for_the_table() {
        assert_eq!(num(None), "-");
        assert_eq!(num(Some(0.6)), "0.6");
        assert_eq!(num(Some(20.0)), "20");
        assert_eq!(num(Some(100.0)), "100");
        assert_eq!(num(Some(41_060.4)), "41,060");
        assert_eq!(num(Some(1_000_000.0)), "1,000,000");
        assert_eq!(num(Some(-12_345.0)), "-12,345");
    }
}
