//! `bench peers`: smss, Redis 7 Streams and beanstalkd (from PATH), the
//! same publish and drain rows against each over `--rounds` rounds, and
//! the smss ÷ peer table with the targets evaluated.

use std::path::Path;

use super::procs::{
    Proc, TempDir, free_port, on_path, smss_bin, start_peer, start_smss, write_smss_config,
};
use super::rows::{drain_opts, measure, mib, pub_rows, us_cell};
use crate::error::BenchError;
use crate::opts::{Protocol, SuiteOpts};
use crate::report::Report;

/// One system of the peers comparison.
struct System {
    label: &'static str,
    rows: Vec<Report>,
    idle_kb: u64,
    peak_kb: u64,
    hwm_kb: u64,
    skipped: Option<String>,
}

fn start_system(label: &str, bin: &Path, tmp: &TempDir, n: usize) -> Result<Proc, BenchError> {
    let dir = tmp.sub(&format!("p{n}"))?;
    let d = dir.display().to_string();
    let port = || free_port();
    match label {
        "smss always" => start_smss(bin, &write_smss_config(&dir, "always")?, label),
        "redis always" | "redis everysec" => {
            let port = port()?;
            let fsync = label.trim_start_matches("redis ");
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &d,
                "--appendonly",
                "yes",
                "--appendfsync",
                fsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--maxclients",
                "4096",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            start_peer(label, "redis-server", &args, Protocol::Resp, port, &dir)
        }
        _ => {
            let port = port()?;
            let mut args: Vec<String> = ["-l", "127.0.0.1", "-p", &port.to_string(), "-b", &d]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if label == "beanstalkd -f0" {
                args.extend(["-f".to_string(), "0".to_string()]);
            }
            start_peer(label, "beanstalkd", &args, Protocol::Beanstalk, port, &dir)
        }
    }
}

/// `bench peers`.
pub fn run(s: &SuiteOpts) -> Result<(), BenchError> {
    let bin = smss_bin(s)?;
    let tmp = TempDir::new("peers")?;
    let defs: [(&'static str, Protocol, &str); 5] = [
        ("smss always", Protocol::Smss, ""),
        ("redis always", Protocol::Resp, "redis-server"),
        ("redis everysec", Protocol::Resp, "redis-server"),
        ("beanstalkd -f0", Protocol::Beanstalk, "beanstalkd"),
        ("beanstalkd default", Protocol::Beanstalk, "beanstalkd"),
    ];
    let row_names = [
        "pub C=16",
        "pub C=64",
        "pub C=256",
        "pub C=16 P=32",
        "drain 200k B=256",
    ];
    let mut systems: Vec<System> = Vec::new();
    for (label, _, prog) in defs {
        let mut sys = System {
            label,
            rows: Vec::new(),
            idle_kb: 0,
            peak_kb: 0,
            hwm_kb: 0,
            skipped: None,
        };
        if !prog.is_empty() && !on_path(prog) {
            let why = format!("{prog} not on PATH (apt-get install redis-server beanstalkd)");
            eprintln!("bench: skipping {label}: {why}");
            sys.skipped = Some(why);
        }
        systems.push(sys);
    }
    // Rounds go over all systems in turn, so a slow spell of the machine
    // hits every system instead of one.
    let mut rounds: Vec<Vec<Option<System>>> = Vec::new();
    for round in 0..s.rounds {
        if s.rounds > 1 {
            eprintln!("bench: round {} of {}", round + 1, s.rounds);
        }
        let mut this = Vec::new();
        for (n, (label, protocol, _)) in defs.into_iter().enumerate() {
            if systems[n].skipped.is_some() {
                this.push(None);
                continue;
            }
            let run = || -> Result<System, BenchError> {
                let server = start_system(label, &bin, &tmp, round * defs.len() + n)?;
                eprintln!("bench: {label} pid {} on {}", server.pid(), server.addr());
                let idle_kb = server.rss_kb();
                let (rows, peak_kb, hwm_kb) =
                    pub_rows(&server, protocol, &[16, 64, 256], s, label)?;
                let mut rows: Vec<Report> = rows.into_iter().map(|r| r.r).collect();
                rows.push(measure(
                    &server,
                    &drain_opts(protocol, server.port, s.max_secs),
                )?);
                Ok(System {
                    label,
                    rows,
                    idle_kb,
                    peak_kb,
                    hwm_kb,
                    skipped: None,
                })
            };
            match run() {
                Ok(sys) => this.push(Some(sys)),
                Err(e) => {
                    eprintln!("bench: {label} failed: {e}");
                    systems[n].skipped = Some(format!("failed: {e}"));
                    this.push(None);
                }
            }
        }
        rounds.push(this);
    }
    for (n, sys) in systems.iter_mut().enumerate() {
        if sys.skipped.is_none() {
            let runs: Vec<&System> = rounds.iter().filter_map(|r| r[n].as_ref()).collect();
            combine_rounds(sys, &runs, row_names.len());
        }
    }
    print_peers(&systems, &row_names);
    Ok(())
}

/// One system's figures over its rounds: per row the median round by
/// msgs/s (its whole report, so rate, latency and CPU stay one run's), the
/// median idle RSS and the highest peak RSS.
fn combine_rounds(sys: &mut System, runs: &[&System], rows: usize) {
    sys.rows.clear();
    for i in 0..rows {
        let mut col: Vec<&Report> = runs.iter().filter_map(|r| r.rows.get(i)).collect();
        col.sort_by(|a, b| a.msgs_per_s().total_cmp(&b.msgs_per_s()));
        match col.get(col.len() / 2) {
            Some(r) => sys.rows.push((*r).clone()),
            None => break,
        }
    }
    let mut idle: Vec<u64> = runs.iter().map(|r| r.idle_kb).collect();
    idle.sort_unstable();
    sys.idle_kb = idle.get(idle.len() / 2).copied().unwrap_or(0);
    sys.peak_kb = runs.iter().map(|r| r.peak_kb).max().unwrap_or(0);
    sys.hwm_kb = runs.iter().map(|r| r.hwm_kb).max().unwrap_or(0);
}

fn print_peers(systems: &[System], row_names: &[&str]) {
    let rate = |sys: &System, i: usize| sys.rows.get(i).map(Report::msgs_per_s);
    let by = |label: &str| systems.iter().find(|s| s.label == label);
    println!("\nsmss vs peers, msgs/s (200-byte messages; same run, same machine)");
    print!("{:<18}", "row");
    for s in systems {
        print!(" {:>18}", s.label);
    }
    println!(" {:>10} {:>10}", "÷r-always", "÷r-evsec");
    for (i, name) in row_names.iter().enumerate() {
        print!("{name:<18}");
        for s in systems {
            match rate(s, i) {
                Some(v) => {
                    let t = if s.rows[i].truncated { "*" } else { "" };
                    print!(" {:>18}", format!("{v:.0}{t}"))
                }
                None => print!(" {:>18}", "-"),
            }
        }
        let smss = by("smss always").and_then(|s| rate(s, i));
        for peer in ["redis always", "redis everysec"] {
            match (smss, by(peer).and_then(|s| rate(s, i))) {
                (Some(a), Some(b)) if b > 0.0 => print!(" {:>10}", format!("{:.2}x", a / b)),
                _ => print!(" {:>10}", "-"),
            }
        }
        println!();
    }
    let line = |name: &str, f: &dyn Fn(&System) -> String| {
        print!("{name:<18}");
        for s in systems {
            print!(" {:>18}", f(s));
        }
        println!();
    };
    line("p99 us C=256", &|s| {
        s.rows
            .get(2)
            .map(|r| r.p99_us.to_string())
            .unwrap_or("-".into())
    });
    line("idle RSS", &|s| mib(s.idle_kb));
    line("peak RSS C=256", &|s| mib(s.peak_kb));
    line("VmHWM after C=256", &|s| mib(s.hwm_kb));
    println!("\nCPU µs per message, server / client (same rows)");
    print!("{:<18}", "row");
    for s in systems {
        print!(" {:>18}", s.label);
    }
    println!();
    for (i, name) in row_names.iter().enumerate() {
        print!("{name:<18}");
        for s in systems {
            let cell = s.rows.get(i).map_or_else(
                || "-".to_string(),
                |r| {
                    format!(
                        "{} / {}",
                        us_cell(r.server_us_per_msg()),
                        us_cell(r.client_us_per_msg())
                    )
                },
            );
            print!(" {cell:>18}");
        }
        println!();
    }
    println!("\nserver context switches per message (publish rows)");
    print!("{:<18}", "row");
    for s in systems {
        print!(" {:>18}", s.label);
    }
    println!();
    for (i, name) in row_names.iter().enumerate().take(4) {
        print!("{name:<18}");
        for s in systems {
            let cell = s
                .rows
                .get(i)
                .and_then(Report::server_switches_per_msg)
                .map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
            print!(" {cell:>18}");
        }
        println!();
    }
    for s in systems {
        if let Some(why) = &s.skipped {
            println!("{}: {why}", s.label);
        }
    }
    println!("(* = stopped by --max-secs before its count; the rate is still valid)");
    // The project's speed targets (README, Performance), evaluated on this run.
    let (Some(sm), Some(ra), Some(re)) =
        (by("smss always"), by("redis always"), by("redis everysec"))
    else {
        return;
    };
    println!("\ntargets:");
    for (i, name) in row_names.iter().enumerate().take(3) {
        if let (Some(a), Some(b), Some(c)) = (rate(sm, i), rate(ra, i), rate(re, i)) {
            let ok = a >= c && a >= 1.5 * b;
            println!(
                "  {:<16} smss ÷ redis-everysec {:.2} (≥1.0), ÷ redis-always {:.2} (≥1.5): {}",
                name,
                a / c,
                a / b,
                if ok { "met" } else { "NOT met" }
            );
        }
    }
    if let (Some(a), Some(c)) = (rate(sm, 3), rate(re, 3)) {
        println!(
            "  {:<16} smss ÷ redis-everysec {:.2} (≥1.0): {}",
            row_names[3],
            a / c,
            if a >= c { "met" } else { "NOT met" }
        );
    }
    if let (Some(a), Some(c)) = (rate(sm, 4), rate(re, 4)) {
        println!(
            "  {:<16} smss ÷ redis XREAD {:.2} (≥1.5): {}",
            row_names[4],
            a / c,
            if a >= 1.5 * c { "met" } else { "NOT met" }
        );
    }
    println!(
        "  peak RSS C=256   smss {} (≤ 20 MiB): {}",
        mib(sm.peak_kb.max(sm.hwm_kb)),
        if sm.peak_kb.max(sm.hwm_kb) <= 20 * 1024 {
            "met"
        } else {
            "NOT met"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(rates: &[u64], idle_kb: u64, peak_kb: u64) -> System {
        System {
            label: "x",
            rows: rates
                .iter()
                .map(|&done| Report {
                    done,
                    secs: 1.0,
                    p99_us: done, // marks which run a row came from
                    ..Report::default()
                })
                .collect(),
            idle_kb,
            peak_kb,
            hwm_kb: peak_kb,
            skipped: None,
        }
    }

    #[test]
    fn rounds_combine_to_the_median_run_per_row_and_the_highest_peak() {
        let a = system(&[100, 900], 10, 50);
        let b = system(&[300, 700], 30, 40);
        let c = system(&[200], 20, 60); // a round that lost its last row
        let mut sys = system(&[], 0, 0);
        combine_rounds(&mut sys, &[&a, &b, &c], 2);
        let rates: Vec<u64> = sys.rows.iter().map(|r| r.done).collect();
        assert_eq!(rates, [200, 900]);
        // The whole report of the median run is kept, not a mix.
        assert_eq!(sys.rows[0].p99_us, 200);
        assert_eq!((sys.idle_kb, sys.peak_kb, sys.hwm_kb), (20, 60, 60));
    }
}
