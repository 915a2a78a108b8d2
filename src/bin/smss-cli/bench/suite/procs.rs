//! The server processes and temp directories the suites start, each in a
//! guard that kills it by PID (or removes it) when dropped, also on error or
//! panic; starting smss and the peers, and reading their RSS.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bench::error::{BenchError, io_err};
use crate::bench::opts::{Protocol, SuiteOpts};
use crate::bench::wire::{Conn, Resp};

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
pub(super) fn start_smss(bin: &Path, config: &Path, name: &str) -> Result<Proc, BenchError> {
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
