//! `bench matrix`: smss alone with `fsync: always`, then `interval`, every
//! row against each (with the drain as a plain SUB and as a consumer group,
//! a shared group of 1, 2 and 4 members with 50 µs of work per message,
//! and a group standby's takeover time), the disk bytes per message, the
//! replication rows ([`super::repl`]: master with and without a slave,
//! visibility on the slave, catch-up) with their targets, the restart after
//! `kill -9` of a log of `--restart-gib` GiB, and the restart after
//! `kill -9` with a 64 MiB garbage tail (recovery must find that nothing
//! valid follows the damage without a CRC check at every byte), and the
//! RSS with 300 silent and 100 idle subscribers ([`super::footprint`]).

use std::path::Path;
use std::time::{Duration, Instant};

use super::procs::{
    Proc, TempDir, make_certs, smss_bin, smss_stats, start_smss, stat_u64, write_smss_config,
    write_smss_config_with,
};
use super::rows::{Row, drain_opts, measure, mib, pub_opts, pub_rows, us_cell};
use crate::error::{BenchError, io_err};
use crate::opts::{Mode, Opts, Protocol, SuiteOpts};
use crate::wire::{Conn, Reply};

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:<42} {:>10} {:>8} {:>9} {:>9} {:>9} {:>6} {:>5} {:>9} {:>9}",
        "row",
        "msgs/s",
        "MB/s",
        "p50_us",
        "p99_us",
        "p999_us",
        "errors",
        "trunc",
        "srv_us/m",
        "cli_us/m"
    );
    for Row { label, r } in rows {
        let (p50, p99, p999) = match r.lateness_ms {
            Some([a, b, c]) => (format!("{a}ms"), format!("{b}ms"), format!("max {c}ms")),
            None => (
                r.p50_us.to_string(),
                r.p99_us.to_string(),
                r.p999_us.to_string(),
            ),
        };
        println!(
            "{:<42} {:>10.0} {:>8.2} {:>9} {:>9} {:>9} {:>6} {:>5} {:>9} {:>9}",
            label,
            r.msgs_per_s(),
            r.mb_per_s(),
            p50,
            p99,
            p999,
            r.errors,
            u8::from(r.truncated),
            us_cell(r.server_us_per_msg()),
            us_cell(r.client_us_per_msg())
        );
        if !r.note.is_empty() {
            println!("{:<42}   note: {}", "", r.note);
        }
    }
}

/// The same 16-connection PUB load over TLS, on a server of its own with
/// only a TLS port (certificates made with openssl), right after the
/// plain row; the figure is its ratio to that row (the target: TLS costs
/// <= 20%). Without openssl the row is skipped with the reason.
fn tls_row(
    bin: &Path,
    tmp: &TempDir,
    s: &SuiteOpts,
    tag: &str,
    rows: &mut Vec<Row>,
    figures: &mut Vec<(String, String)>,
) -> Result<(), BenchError> {
    let dir = tmp.sub("tls")?;
    let (ca, cert, key) = match make_certs(&dir) {
        Ok(files) => files,
        Err(e) => {
            figures.push(("TLS row".into(), format!("skipped: {e}")));
            return Ok(());
        }
    };
    let section = format!(
        "tls:\n  port: 0\n  only: true\n  cert: {}\n  key: {}\n",
        cert.display(),
        key.display()
    );
    let config = write_smss_config_with(&dir, "always", &section)?;
    let server = start_smss(bin, &config, "smss fsync=always, TLS only")?;
    let mut o = pub_opts(
        Protocol::Smss,
        server.port,
        16,
        1,
        s.client_threads,
        s.max_secs,
    );
    o.tls_ca = Some(ca);
    let r = measure(&server, &o)?;
    let plain = rows
        .iter()
        .find(|row| row.label == format!("{tag} pub C=16 without keys"))
        .map(|row| row.r.msgs_per_s());
    if let Some(plain) = plain.filter(|p| *p > 0.0) {
        figures.push((
            "pub C=16 over TLS / plain (fsync=always)".into(),
            format!("{:.2}x (target >= 0.80)", r.msgs_per_s() / plain),
        ));
    }
    rows.push(Row {
        label: format!("{tag} pub C=16 over TLS"),
        r,
    });
    Ok(())
}

/// `bench matrix`.
pub fn run(s: &SuiteOpts) -> Result<(), BenchError> {
    let bin = smss_bin(s)?;
    let tmp = TempDir::new("matrix")?;
    let mut rows = Vec::new();
    let mut figures: Vec<(String, String)> = Vec::new();
    for fsync in ["always", "interval"] {
        let dir = tmp.sub(fsync)?;
        let config = write_smss_config(&dir, fsync)?;
        let server = start_smss(&bin, &config, &format!("smss fsync={fsync}"))?;
        eprintln!(
            "bench: smss fsync={fsync} pid {} on {}",
            server.pid(),
            server.addr()
        );
        figures.push((format!("idle RSS (fsync={fsync})"), mib(server.rss_kb())));
        let tag = format!("smss {fsync}");
        let (r, peak, hwm) = pub_rows(&server, Protocol::Smss, &[1, 16, 64, 256], s, &tag)?;
        rows.extend(r);
        figures.push((
            format!("peak RSS during 256-conn run (fsync={fsync})"),
            format!("{} sampled, VmHWM {}", mib(peak), mib(hwm)),
        ));
        if fsync == "always" {
            let mut o = pub_opts(
                Protocol::Smss,
                server.port,
                16,
                32,
                s.client_threads,
                s.max_secs,
            );
            o.mpub = 32;
            o.pipeline = 4;
            rows.push(Row {
                label: format!("{tag} mpub C=16 B=32 P=4"),
                r: measure(&server, &o)?,
            });
            // Idempotent publish: the same 16-connection PUB load, each PUB
            // with a unique dedup key, right after one without, so the two
            // rows share the machine's mood (the target: keys cost <= 10%).
            for key in [false, true] {
                let mut o = pub_opts(
                    Protocol::Smss,
                    server.port,
                    16,
                    1,
                    s.client_threads,
                    s.max_secs,
                );
                o.key = key;
                let what = if key { "with keys" } else { "without keys" };
                rows.push(Row {
                    label: format!("{tag} pub C=16 {what}"),
                    r: measure(&server, &o)?,
                });
            }
            tls_row(&bin, &tmp, s, &tag, &mut rows, &mut figures)?;
            let st = smss_stats(&server.addr())?;
            let (disk, msgs) = (
                stat_u64(&st, "disk_bytes"),
                stat_u64(&st, "messages_published"),
            );
            let on_disk = dir_bytes(&dir.join("data"));
            if msgs > 0 {
                figures.push((
                    "disk bytes per 200-byte message".into(),
                    format!(
                        "{:.1} (STATS disk_bytes {disk} / messages_published {msgs}; \
                         data dir {on_disk} bytes = {:.1}/msg)",
                        disk as f64 / msgs as f64,
                        on_disk as f64 / msgs as f64
                    ),
                ));
            }
            drain_rows(&server, &tag, s, &mut rows, &mut figures)?;
            let mut o = Opts::new(Mode::E2e, Protocol::Smss, server.port);
            o.count = 20_000;
            o.max_secs = s.max_secs;
            rows.push(Row {
                label: format!("{tag} e2e P=1"),
                r: measure(&server, &o)?,
            });
            let mut o = Opts::new(Mode::Delay, Protocol::Smss, server.port);
            o.count = 10_000;
            o.pipeline = 64;
            o.max_secs = s.max_secs;
            rows.push(Row {
                label: format!("{tag} delay 10k same second"),
                r: measure(&server, &o)?,
            });
            figures.push((
                "VmHWM of smss after all rows (fsync=always)".into(),
                mib(server.hwm_kb()),
            ));
        } else {
            drain_rows(&server, &tag, s, &mut rows, &mut figures)?;
        }
        drop(server);
    }
    figures.extend(super::footprint::figures(&bin, &tmp));
    figures.extend(super::bridge::figures(&bin, &tmp));
    let repl = super::repl::run(&bin, &tmp, s);
    figures.extend(repl.failed.iter().cloned());
    if s.restart_gib > 0.0 {
        match restart_row(&bin, &tmp, s) {
            Ok(f) => figures.extend(f),
            Err(e) => figures.push(("restart".into(), format!("failed: {e}"))),
        }
    }
    match garbage_tail_row(&bin, &tmp) {
        Ok(f) => figures.push(("restart, 64 MiB garbage tail".into(), f)),
        Err(e) => figures.push((
            "restart, 64 MiB garbage tail".into(),
            format!("failed: {e}"),
        )),
    }
    print_rows("smss bench matrix (200-byte messages)", &rows);
    print_rows(
        "replication (fsync always on master and slave, 16 connections; `visible` rows: \
         p50/p99 = publish to delivery to a SUB on the slave, on the master for `none`)",
        &repl.rows,
    );
    super::repl::print_checks(&repl.checks);
    println!();
    for (k, v) in &figures {
        println!("{k:<58} {v}");
    }
    Ok(())
}

/// The plain drain, the same drain as a consumer group (each ACK a durable
/// commit of the group's position) and the standby takeover time.
fn drain_rows(
    server: &Proc,
    tag: &str,
    s: &SuiteOpts,
    rows: &mut Vec<Row>,
    figures: &mut Vec<(String, String)>,
) -> Result<(), BenchError> {
    let plain = measure(server, &drain_opts(Protocol::Smss, server.port, s.max_secs))?;
    // Beside it: the same drain as a consumer group, each ACK a
    // durable commit of the group's position.
    let mut o = drain_opts(Protocol::Smss, server.port, s.max_secs);
    o.group = Some("bench".into());
    let grouped = measure(server, &o)?;
    figures.push((
        format!("group drain ÷ plain drain, 200k batch 256 ({tag})"),
        speedup(grouped.msgs_per_s(), plain.msgs_per_s()),
    ));
    rows.push(Row {
        label: format!("{tag} sub drain 200k batch 256"),
        r: plain,
    });
    rows.push(Row {
        label: format!("{tag} group drain 200k batch 256"),
        r: grouped,
    });
    shared_rows(server, tag, s, rows, figures)?;
    let mut o = Opts::new(Mode::Takeover, Protocol::Smss, server.port);
    o.count = 50;
    o.max_secs = s.max_secs;
    let t = measure(server, &o)?;
    figures.push((
        format!("standby takeover, connection end -> first batch ({tag})"),
        format!(
            "{} rounds: p50 {:.2} ms, p99 {:.2} ms",
            t.done,
            t.p50_us as f64 / 1000.0,
            t.p99_us as f64 / 1000.0
        ),
    ));
    Ok(())
}

/// `a ÷ b` of two throughputs, with both.
fn speedup(a: f64, b: f64) -> String {
    format!("{:.2}× ({a:.0} ÷ {b:.0} msgs/s)", a / b.max(1.0))
}

/// A shared group of 1, 2 and 4 members draining 200k messages, each
/// member waiting 50 µs per message before its ACK (simulated work): the
/// worker pool's speed-up over one member.
fn shared_rows(
    server: &Proc,
    tag: &str,
    s: &SuiteOpts,
    rows: &mut Vec<Row>,
    figures: &mut Vec<(String, String)>,
) -> Result<(), BenchError> {
    let mut one = 0.0;
    for members in [1, 2, 4] {
        let mut o = drain_opts(Protocol::Smss, server.port, s.max_secs);
        o.group = Some(format!("pool{members}"));
        o.shared = true;
        o.members = members;
        o.work_us = 50;
        let r = measure(server, &o)?;
        if members == 1 {
            one = r.msgs_per_s();
        } else {
            figures.push((
                format!("shared group, {members} members ÷ 1, work 50 µs/msg ({tag})"),
                speedup(r.msgs_per_s(), one),
            ));
        }
        rows.push(Row {
            label: format!("{tag} shared group x{members} 200k, 50 µs/msg"),
            r,
        });
    }
    Ok(())
}

/// Builds a log of about `restart_gib` GiB (fsync never, 64 KiB messages),
/// kills the server with SIGKILL and times a restart until PING answers.
fn restart_row(
    bin: &Path,
    tmp: &TempDir,
    s: &SuiteOpts,
) -> Result<Vec<(String, String)>, BenchError> {
    let dir = tmp.sub("restart")?;
    let config = write_smss_config(&dir, "never")?;
    let server = start_smss(bin, &config, "smss restart-fill")?;
    let mut o = Opts::new(Mode::Pub, Protocol::Smss, server.port);
    o.size = 64 << 10;
    o.mpub = 16;
    o.conns = 2;
    o.pipeline = 2;
    // 32 MiB short of the size asked for: the log then ends half-way between
    // two checkpoints (every 64 MiB), so recovery has a tail to replay.
    o.count = ((s.restart_gib * 16384.0) as u64)
        .saturating_sub(512)
        .max(16);
    o.max_secs = (s.max_secs * 12.0).max(60.0);
    let fill = measure(&server, &o)?;
    drop(server); // SIGKILL: the worst case for recovery.
    let log_bytes = dir_bytes(&dir.join("data"));
    let t0 = Instant::now();
    let server = start_smss(bin, &config, "smss restarted")?;
    let ready = t0.elapsed();
    let mut c = Conn::connect(&server.addr(), Duration::from_secs(30))?;
    c.send(b"PING\r\n")?;
    match c.smss()? {
        Reply::Pong => {}
        other => return Err(BenchError::Server(format!("PING after restart: {other:?}"))),
    }
    let serving = t0.elapsed();
    Ok(vec![
        (
            "restart after kill -9".into(),
            format!(
                "log {:.2} GiB ({} msgs of 64 KiB{}): READY {} ms, PING {} ms",
                log_bytes as f64 / (1u64 << 30) as f64,
                fill.done,
                if fill.truncated {
                    ", fill truncated"
                } else {
                    ""
                },
                ready.as_millis(),
                serving.as_millis()
            ),
        ),
        ("RSS after restart".into(), mib(server.rss_kb())),
    ])
}

/// Bytes of random garbage written after the last record.
const GARBAGE_TAIL: usize = 64 << 20;

/// Writes a few records, kills the server with SIGKILL, writes 64 MiB of
/// random bytes after the last record (as a disk returning junk would) and
/// times the restart until READY; checks that the tail was cut.
fn garbage_tail_row(bin: &Path, tmp: &TempDir) -> Result<String, BenchError> {
    let dir = tmp.sub("garbage")?;
    let config = write_smss_config(&dir, "always")?;
    let server = start_smss(bin, &config, "smss garbage-fill")?;
    let mut c = Conn::connect(&server.addr(), Duration::from_secs(10))?;
    c.send(b"CREATE g\r\nPUB g 5\r\nhello\r\nPUB g 5\r\nworld\r\n")?;
    for _ in 0..3 {
        match c.smss()? {
            Reply::Ok(..) => {}
            other => return Err(BenchError::Server(format!("filling: {other:?}"))),
        }
    }
    drop(c);
    drop(server); // SIGKILL: no shutdown checkpoint, the tail is replayed.
    let seg = dir.join("data/log").join(format!("{:020}.log", 0));
    let file = std::fs::File::open(&seg).map_err(io_err(format!("opening {}", seg.display())))?;
    let end = match smss::storage::record::scan(std::io::BufReader::new(file), |_, _| {})
        .map_err(io_err(format!("reading {}", seg.display())))?
    {
        smss::storage::record::ScanEnd::Clean { offset } => offset,
        other => {
            return Err(BenchError::Server(format!(
                "log did not end cleanly: {other:?}"
            )));
        }
    };
    let mut junk = Vec::with_capacity(GARBAGE_TAIL + 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while junk.len() < GARBAGE_TAIL {
        // xorshift64*: fast, reproducible garbage.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        junk.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    junk.truncate(GARBAGE_TAIL);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .map_err(io_err(format!("opening {}", seg.display())))?;
        f.write_all_at(&junk, end)
            .and_then(|_| f.sync_all())
            .map_err(io_err(format!("writing garbage to {}", seg.display())))?;
    }
    let t0 = Instant::now();
    let server = start_smss(bin, &config, "smss restarted on garbage")?;
    let ready = t0.elapsed();
    let len = std::fs::metadata(&seg)
        .map_err(io_err(format!("stat {}", seg.display())))?
        .len();
    drop(server);
    if len != end {
        return Err(BenchError::Server(format!(
            "the garbage was not cut: {} is {len} bytes, records end at {end}",
            seg.display()
        )));
    }
    Ok(format!(
        "READY {} ms (garbage cut back to offset {end})",
        ready.as_millis()
    ))
}
