//! The server processes and temp directories the suites start, each in a
//! guard that kills it by PID (or removes it) when dropped, also on error or
//! panic; starting smss (master or slave) and the peers, reading their RSS
//! and smss's STATS.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{BenchError, io_err};
use crate::opts::{Protocol, SuiteOpts};
use crate::wire::{Conn, Reply, Resp};

/// How long a freshly started server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(60);
/// Interval of the RSS sampler.
const RSS_SAMPLE: Duration = Duration::from_millis(100);

/// A temp directory removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Result<TempDir, BenchError> {
        let p = std::env::temp_dir().join(format!("smss-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        Ok(TempDir(p))
    }
    pub(super) fn sub(&self, name: &str) -> Result<PathBuf, BenchError> {
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
pub(super) struct Proc {
    name: String,
    child: Child,
    pub(super) port: u16,
}

impl Proc {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
    pub(super) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// `VmRSS` in KiB.
    pub(super) fn rss_kb(&self) -> u64 {
        status_kb(self.pid(), "VmRSS:")
    }
    /// `VmHWM` (peak RSS) in KiB.
    pub(super) fn hwm_kb(&self) -> u64 {
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
pub(super) struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kb: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub(super) fn start(pid: u32) -> Result<RssSampler, BenchError> {
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
    pub(super) fn finish(mut self) -> u64 {
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

/// One connection to smss that reads STATS as often as asked (the
/// replication rows poll it every ~20 ms, so it is not reopened each time).
pub(super) struct StatsConn(Conn);

impl StatsConn {
    pub(super) fn connect(addr: &str) -> Result<StatsConn, BenchError> {
        Conn::connect(addr, Duration::from_secs(10)).map(StatsConn)
    }

    /// `STATS` as name/value pairs.
    pub(super) fn read(&mut self) -> Result<Vec<(String, String)>, BenchError> {
        let c = &mut self.0;
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

    /// STATS `last_event_id`.
    pub(super) fn last_event_id(&mut self) -> Result<u64, BenchError> {
        Ok(stat_u64(&self.read()?, "last_event_id"))
    }
}

/// smss `STATS` as name/value pairs, over a connection of its own.
pub(super) fn smss_stats(addr: &str) -> Result<Vec<(String, String)>, BenchError> {
    StatsConn::connect(addr)?.read()
}

/// A numeric STATS value; 0 when missing or not a number.
pub(super) fn stat_u64(stats: &[(String, String)], key: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

pub(super) fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io_err("finding a free port"))
}

pub(super) fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

pub(super) fn smss_bin(s: &SuiteOpts) -> Result<PathBuf, BenchError> {
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

pub(super) fn write_smss_config(dir: &Path, fsync: &str) -> Result<PathBuf, BenchError> {
    write_smss_config_with(dir, fsync, "")
}

/// The bench's smss config with `extra` (whole top-level YAML sections,
/// e.g. `replication:`) appended.
pub(super) fn write_smss_config_with(
    dir: &Path,
    fsync: &str,
    extra: &str,
) -> Result<PathBuf, BenchError> {
    let y = format!(
        "port: 0\nbind: 127.0.0.1\nlog:\n  path: {log}\n  level: warn\n\
         store:\n  path: {data}\n  fsync: {fsync}\nlimits:\n  maxConnections: 2048\n{extra}",
        log = dir.join("smss.log").display(),
        data = dir.join("data").display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, y).map_err(io_err(format!("writing {}", path.display())))?;
    Ok(path)
}

/// A CA and a certificate for 127.0.0.1 signed by it, made in `dir` with
/// the `openssl` command (the bench has no certificate library): returns
/// (CA file, certificate, key). `Err` when openssl is missing or fails.
pub(super) fn make_certs(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), BenchError> {
    let f = |n: &str| dir.join(n);
    std::fs::write(f("ext.txt"), "subjectAltName=IP:127.0.0.1\n")
        .map_err(io_err("writing ext.txt"))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=smss-bench CA"],
        ]
        .concat(),
        [&["req"][..], &ec, &["-subj", "/CN=127.0.0.1"]].concat(),
        vec!["x509", "-req", "-days", "2", "-CAcreateserial"],
    ];
    let files: [Vec<(&str, PathBuf)>; 3] = [
        vec![("-keyout", f("ca-key.pem")), ("-out", f("ca.pem"))],
        vec![("-keyout", f("key.pem")), ("-out", f("csr.pem"))],
        vec![
            ("-in", f("csr.pem")),
            ("-CA", f("ca.pem")),
            ("-CAkey", f("ca-key.pem")),
            ("-extfile", f("ext.txt")),
            ("-out", f("cert.pem")),
        ],
    ];
    for (args, files) in steps.iter().zip(files) {
        let mut cmd = Command::new("openssl");
        cmd.args(args);
        for (flag, path) in files {
            cmd.arg(flag).arg(path);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("running openssl (apt-get install openssl)"))?;
        if !out.status.success() {
            return Err(BenchError::Server(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok((f("ca.pem"), f("cert.pem"), f("key.pem")))
}

/// Starts smss with `config` and waits for its `READY <addr>` line.
pub(super) fn start_smss(bin: &Path, config: &Path, name: &str) -> Result<Proc, BenchError> {
    start_smss_args(bin, config, name, &[])
}

/// [`start_smss`] with more arguments (`--role slave --master ADDR`).
pub(super) fn start_smss_args(
    bin: &Path,
    config: &Path,
    name: &str,
    args: &[&str],
) -> Result<Proc, BenchError> {
    let stderr = std::fs::File::create(config.with_file_name("stderr.txt"))
        .map_err(io_err("creating the server's stderr file"))?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
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
pub(super) fn start_peer(
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
