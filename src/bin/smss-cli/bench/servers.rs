//! `bench matrix` and `bench peers`: start servers, run fixed rows, print
//! tables, with the CPU µs per message of server and bench (the two share
//! the machine, so the bench's own cost matters). Every server started here
//! lives in a [`Proc`] guard that kills it by PID and waits for it when
//! dropped (also on error or panic); every temp directory lives in a
//! [`TempDir`] guard that removes it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::load::{self, Report};
use super::wire::{Conn, Reply, Resp};
use super::{BenchError, Mode, Opts, Protocol, SuiteOpts, io_err};

/// How long a freshly started server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(60);
/// Interval of the RSS sampler.
const RSS_SAMPLE: Duration = Duration::from_millis(100);

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, BenchError> {
        let p = std::env::temp_dir().join(format!("smss-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        Ok(TempDir(p))
    }
    fn sub(&self, name: &str) -> Result<PathBuf, BenchError> {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process the bench started; killed by PID on drop.
struct Proc {
    name: String,
    child: Child,
    port: u16,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// `VmRSS` in KiB.
    fn rss_kb(&self) -> u64 {
        status_kb(self.pid(), "VmRSS:")
    }
    /// `VmHWM` (peak RSS) in KiB.
    fn hwm_kb(&self) -> u64 {
        status_kb(self.pid(), "VmHWM:")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("bench: stopped {} (pid {})", self.name, self.child.id());
    }
}

/// A field of `/proc/<pid>/status` in KiB (0 when unreadable).
fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples a process's RSS every 100 ms until dropped; keeps the maximum.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kb: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> Result<RssSampler, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kb = Arc::new(AtomicU64::new(0));
        let (s, m) = (Arc::clone(&stop), Arc::clone(&max_kb));
        let handle = std::thread::Builder::new()
            .name("bench-rss".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    m.fetch_max(status_kb(pid, "VmRSS:"), Ordering::Relaxed);
                    std::thread::sleep(RSS_SAMPLE);
                }
            })
            .map_err(io_err("starting the RSS sampler"))?;
        Ok(RssSampler {
            stop,
            max_kb,
            handle: Some(handle),
        })
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.max_kb.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io_err("finding a free port"))
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

fn smss_bin(s: &SuiteOpts) -> Result<PathBuf, BenchError> {
    let p = match &s.smss {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(io_err("finding the current executable"))?
            .with_file_name("smss"),
    };
    if !p.is_file() {
        return Err(BenchError::Usage(format!(
            "no smss binary at {} (build it, or pass --smss PATH)",
            p.display()
        )));
    }
    Ok(p)
}

fn write_smss_config(dir: &Path, fsync: &str) -> Result<PathBuf, BenchError> {
    let y = format!(
        "port: 0\nbind: 127.0.0.1\nlog:\n  path: {log}\n  level: warn\n\
         store:\n  path: {data}\n  fsync: {fsync}\nlimits:\n  maxConnections: 2048\n",
        log = dir.join("smss.log").display(),
        data = dir.join("data").display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, y).map_err(io_err(format!("writing {}", path.display())))?;
    Ok(path)
}

/// Starts smss with `config` and waits for its `READY <addr>` line.
fn start_smss(bin: &Path, config: &Path, name: &str) -> Result<Proc, BenchError> {
    let stderr = std::fs::File::create(config.with_file_name("stderr.txt"))
        .map_err(io_err("creating the server's stderr file"))?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(io_err(format!("starting {}", bin.display())))?;
    let stdout = child.stdout.take();
    let mut p = Proc {
        name: name.to_string(),
        child,
        port: 0,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = stdout {
        // Keeps draining stdout after READY so the pipe never fills.
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if let Some(a) = l.trim().strip_prefix("READY ") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
    }
    let addr = rx.recv_timeout(START_WAIT).map_err(|_| {
        BenchError::Server(format!(
            "{name} did not print READY; see {}",
            config.with_file_name("stderr.txt").display()
        ))
    })?;
    p.port = addr
        .rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Protocol(format!("bad READY address {addr:?}")))?;
    Ok(p)
}

/// Starts a peer server and waits until it answers.
fn start_peer(
    name: &str,
    prog: &str,
    args: &[String],
    protocol: Protocol,
    port: u16,
    dir: &Path,
) -> Result<Proc, BenchError> {
    let log = std::fs::File::create(dir.join("server.log")).map_err(io_err("creating a log"))?;
    let log2 = log.try_clone().map_err(io_err("cloning a log file"))?;
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(io_err(format!("starting {prog}")))?;
    let mut p = Proc {
        name: name.to_string(),
        child,
        port,
    };
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            return Err(BenchError::Server(format!(
                "{name} exited at start ({st}); see {}",
                dir.join("server.log").display()
            )));
        }
        if let Ok(mut c) = Conn::connect(&p.addr(), Duration::from_secs(2)) {
            let ok = match protocol {
                Protocol::Resp => {
                    c.send(b"*1\r\n$4\r\nPING\r\n")?;
                    matches!(c.resp(), Ok(Resp::Simple(s)) if s == b"PONG")
                }
                _ => true,
            };
            if ok {
                return Ok(p);
            }
        }
        if t0.elapsed() > START_WAIT {
            return Err(BenchError::Server(format!("{name} did not start")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// smss `STATS` as name/value pairs.
fn smss_stats(addr: &str) -> Result<Vec<(String, String)>, BenchError> {
    let mut c = Conn::connect(addr, Duration::from_secs(10))?;
    c.send(b"STATS\r\n")?;
    let n = match c.smss()? {
        Reply::Other(l) => l
            .strip_prefix("STATS ")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| BenchError::Protocol(format!("STATS: {l}")))?,
        other => return Err(BenchError::Protocol(format!("STATS: {other:?}"))),
    };
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        if let Reply::Other(l) = c.smss()? {
            let mut it = l.splitn(3, ' ');
            if let (Some("STAT"), Some(k), Some(val)) = (it.next(), it.next(), it.next()) {
                v.push((k.to_string(), val.to_string()));
            }
        }
    }
    Ok(v)
}

fn stat_u64(stats: &[(String, String)], key: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

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

/// One table row: a label and its report.
struct Row {
    label: String,
    r: Report,
}

/// A CPU µs/msg figure for a table cell; `-` when unknown.
fn us_cell(v: Option<f64>) -> String {
    v.map(|u| format!("{u:.1}")).unwrap_or_else(|| "-".into())
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:<38} {:>10} {:>8} {:>9} {:>9} {:>9} {:>6} {:>5} {:>9} {:>9}",
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
            "{:<38} {:>10.0} {:>8.2} {:>9} {:>9} {:>9} {:>6} {:>5} {:>9} {:>9}",
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
            println!("{:<38}   note: {}", "", r.note);
        }
    }
}

/// Runs one measurement against `server` (whose CPU time it reports),
/// echoing its key=value line to stderr.
fn measure(server: &Proc, o: &Opts) -> Result<Report, BenchError> {
    let o = Opts {
        server_pid: Some(server.pid()),
        ..o.clone()
    };
    let r = load::run_one(&o)?;
    eprintln!("{}", r.line());
    Ok(r)
}

/// A publish row: `conns` connections over `threads` client threads (0 =
/// one per connection).
fn pub_opts(
    p: Protocol,
    port: u16,
    conns: usize,
    pipeline: usize,
    threads: usize,
    max_secs: f64,
) -> Opts {
    let mut o = Opts::new(Mode::Pub, p, port);
    o.conns = conns;
    o.pipeline = pipeline;
    o.threads = threads;
    o.count = (20_000 * conns as u64 * pipeline as u64).min(400_000);
    o.max_secs = max_secs;
    o
}

fn drain_opts(p: Protocol, port: u16, max_secs: f64) -> Opts {
    let mut o = Opts::new(Mode::Sub, p, port);
    o.count = 200_000;
    o.batch = 256;
    o.max_secs = max_secs;
    o
}

/// The publish rows shared by matrix and peers, with the RSS of the server
/// during the 256-connection row: (rows, peak sampled KiB, VmHWM KiB).
fn pub_rows(
    server: &Proc,
    p: Protocol,
    conns: &[usize],
    s: &SuiteOpts,
    tag: &str,
) -> Result<(Vec<Row>, u64, u64), BenchError> {
    let mut rows = Vec::new();
    let (mut peak, mut hwm) = (0, 0);
    let (threads, max_secs) = (s.client_threads, s.max_secs);
    for &c in conns {
        let o = pub_opts(p, server.port, c, 1, threads, max_secs);
        let r = if c == 256 {
            let s = RssSampler::start(server.pid())?;
            let r = measure(server, &o);
            peak = s.finish();
            hwm = server.hwm_kb();
            r?
        } else {
            measure(server, &o)?
        };
        rows.push(Row {
            label: format!("{tag} pub C={c}"),
            r,
        });
    }
    let o = pub_opts(p, server.port, 16, 32, threads, max_secs);
    rows.push(Row {
        label: format!("{tag} pub C=16 P=32"),
        r: measure(server, &o)?,
    });
    Ok((rows, peak, hwm))
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// `bench matrix`.
pub fn matrix(s: &SuiteOpts) -> Result<(), BenchError> {
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
            rows.push(Row {
                label: format!("{tag} sub drain 200k batch 256"),
                r: measure(
                    &server,
                    &drain_opts(Protocol::Smss, server.port, s.max_secs),
                )?,
            });
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
        }
        drop(server);
    }
    if s.restart_gib > 0.0 {
        match restart_row(&bin, &tmp, s) {
            Ok(f) => figures.extend(f),
            Err(e) => figures.push(("restart".into(), format!("failed: {e}"))),
        }
    }
    print_rows("smss bench matrix (200-byte messages)", &rows);
    println!();
    for (k, v) in &figures {
        println!("{k:<48} {v}");
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
pub fn peers(s: &SuiteOpts) -> Result<(), BenchError> {
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
    for s in systems {
        if let Some(why) = &s.skipped {
            println!("{}: {why}", s.label);
        }
    }
    println!("(* = stopped by --max-secs before its count; the rate is still valid)");
    // The targets of DESIGN.md, evaluated on this run.
    let (Some(sm), Some(ra), Some(re)) =
        (by("smss always"), by("redis always"), by("redis everysec"))
    else {
        return;
    };
    println!("\ntargets (DESIGN.md):");
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
