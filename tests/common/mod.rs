//! Test harness: runs the real `smss` binary on an ephemeral port with a
//! temporary data directory, waits for its `READY <addr>` line, and kills it
//! when dropped. Every socket read has a timeout; nothing sleeps to wait.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use smss::client::{Client, SubEvent};

pub mod certs;
pub mod files;
pub mod groups;
pub mod repl;
pub mod seed;

// Not every test file uses every helper.
#[allow(unused_imports)]
pub use files::{drain, records, segments};

/// Longest a test waits for anything the server should do promptly.
pub const WAIT: Duration = Duration::from_secs(20);

/// Config sections for a test server. `store` lines are added under
/// `store:` next to the data path; `sections` are whole top-level blocks.
#[derive(Clone, Default)]
pub struct Opts {
    pub store: Vec<String>,
    pub sections: Vec<String>,
    /// A fixed port (a server restarted on the same address); 0 when unset.
    pub port: u16,
}

impl Opts {
    pub fn new() -> Opts {
        Opts::default()
    }
    pub fn store(mut self, line: &str) -> Opts {
        self.store.push(line.to_string());
        self
    }
    pub fn section(mut self, yaml: &str) -> Opts {
        self.sections.push(yaml.to_string());
        self
    }
    pub fn port(mut self, port: u16) -> Opts {
        self.port = port;
        self
    }
}

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    /// The `TLS <addr>` line printed before READY, with `tls.cert` set.
    pub tls_addr: Option<String>,
    /// The `HTTP <addr>` line that follows READY (see [`Server::http_addr`]).
    http: std::sync::Mutex<HttpLine>,
    pub dir: PathBuf,
    pub config: PathBuf,
}

/// A temporary directory that outlives server restarts.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("smss-test-")
        .tempdir()
        .expect("create temp dir")
}

/// Reads a running subscription's batches, acking each, until `total`
/// messages arrived: (event id, payload) in delivery order. Every event is
/// a batch of at least one message or a rare ALIVE, so `2 * total` events
/// bound the loop; fewer messages come back if the server sent fewer.
pub fn collect(c: &mut Client, total: usize) -> Vec<(u64, Vec<u8>)> {
    let mut got = Vec::with_capacity(total);
    for _ in 0..total * 2 {
        if got.len() >= total {
            break;
        }
        match c.next_event().expect("event") {
            SubEvent::Batch(ms) => {
                got.extend(ms.into_iter().map(|m| (m.event_id, m.payload)));
                c.ack().expect("ack");
            }
            SubEvent::Alive => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

/// A numeric STATS value; panics naming the stat when it is missing.
pub fn stat(c: &mut Client, name: &str) -> u64 {
    let stats = c.stats().expect("STATS");
    let (_, v) = stats
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("STATS has no {name}: {stats:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("STAT {name} is not a number: {v:?}"))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_smss")
}

/// Where the HTTP address comes from: the reader of the child's stdout,
/// then the address once read.
enum HttpLine {
    Waiting(std::sync::mpsc::Receiver<String>),
    Known(Option<String>),
}

pub fn write_config(dir: &Path, opts: &Opts) -> PathBuf {
    let mut y = String::new();
    y.push_str(&format!("port: {}\nbind: 127.0.0.1\n", opts.port));
    // The HTTP listener on a port of its own choosing, unless the test
    // configures it.
    if !opts
        .sections
        .iter()
        .any(|s| s.trim_start().starts_with("http:"))
    {
        y.push_str("http:\n  port: 0\n");
    }
    y.push_str(&format!(
        "log:\n  path: {}\n  level: info\n",
        dir.join("smss.log").display()
    ));
    y.push_str(&format!("store:\n  path: {}\n", dir.join("data").display()));
    for l in &opts.store {
        y.push_str(&format!("  {l}\n"));
    }
    for s in &opts.sections {
        y.push_str(s);
        y.push('\n');
    }
    let path = dir.join("config.yaml");
    std::fs::write(&path, y).expect("write config");
    path
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &Opts::new())
    }

    pub fn start_with(dir: &Path, opts: &Opts) -> Server {
        let config = write_config(dir, opts);
        Server::start_config(dir, &config)
    }

    /// Starts the binary with an existing config file and waits for READY.
    pub fn start_config(dir: &Path, config: &Path) -> Server {
        Server::spawn_ready(Command::new(bin()), dir, config, &[])
    }

    /// Like [`Server::start_with`], with extra command-line flags
    /// (`--role slave --master …`).
    pub fn start_with_args(dir: &Path, opts: &Opts, args: &[&str]) -> Server {
        let config = write_config(dir, opts);
        Server::spawn_ready(Command::new(bin()), dir, &config, args)
    }

    /// Like `start_with`, with the child's RLIMIT_NOFILE (soft and hard) set
    /// to `nofile` before exec, as a small machine or a systemd unit would.
    pub fn start_with_nofile(dir: &Path, opts: &Opts, nofile: u64) -> Server {
        use std::os::unix::process::CommandExt;
        let config = write_config(dir, opts);
        let mut cmd = Command::new(bin());
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Server::spawn_ready(cmd, dir, &config, &[])
    }

    /// Runs the binary as an operator would, `smss <args>` with `dir` as its
    /// working directory: no `--config` is added, so `dir/config/config.yaml`
    /// applies unless `args` names another. Waits for READY.
    pub fn start_in(dir: &Path, args: &[&str]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.current_dir(dir).args(args);
        Server::wait_ready(cmd, dir, &dir.join("config").join("config.yaml"))
    }

    fn spawn_ready(mut cmd: Command, dir: &Path, config: &Path, args: &[&str]) -> Server {
        cmd.arg("--config").arg(config).args(args);
        Server::wait_ready(cmd, dir, config)
    }

    fn wait_ready(mut cmd: Command, dir: &Path, config: &Path) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn smss");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let (http_tx, http_rx) = std::sync::mpsc::channel();
        let (tls_tx, tls_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(addr) = line.trim().strip_prefix("READY ") {
                            let _ = tx.send(addr.to_string());
                        }
                        if let Some(addr) = line.trim().strip_prefix("TLS ") {
                            let _ = tls_tx.send(addr.to_string());
                        }
                        if let Some(addr) = line.trim().strip_prefix("HTTP ") {
                            let _ = http_tx.send(addr.to_string());
                        }
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "smss did not become ready; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        Server {
            child: Some(child),
            addr,
            // Printed before READY, so already sent when READY is.
            tls_addr: tls_rx.try_recv().ok(),
            http: std::sync::Mutex::new(HttpLine::Waiting(http_rx)),
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
        }
    }

    /// Runs the binary expecting it to fail at start-up; returns status and stderr.
    pub fn start_failing(dir: &Path) -> (ExitStatus, String) {
        let config = dir.join("config.yaml");
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn smss");
        let status = wait_timeout(&mut child, WAIT).expect("smss should exit by itself");
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }

    /// The HTTP listener's address, from the `HTTP <addr>` line printed
    /// right after READY; `None` when the server prints none (HTTP off)
    /// within a short wait.
    pub fn http_addr(&self) -> Option<String> {
        let mut g = self.http.lock().unwrap_or_else(|p| p.into_inner());
        if let HttpLine::Waiting(rx) = &*g {
            let got = rx.recv_timeout(Duration::from_secs(5)).ok();
            *g = HttpLine::Known(got);
        }
        match &*g {
            HttpLine::Known(a) => a.clone(),
            HttpLine::Waiting(_) => None,
        }
    }

    pub fn client(&self) -> Client {
        let mut c = Client::connect(&self.addr).expect("connect");
        c.set_timeout(Some(WAIT)).expect("timeout");
        c
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(&self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, like a crash or power loss of the process.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn sigterm(mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success());
        wait_timeout(&mut c, WAIT).expect("smss should exit after SIGTERM")
    }

    /// A `/proc/<pid>/status` figure of the server in KiB: `VmRSS` (resident
    /// now) or `VmHWM` (the most it was ever resident).
    pub fn mem_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{path} has no {field}: line"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("smss.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return None;
        }
        // Polling a child's exit has no signal to wait on without libc.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A raw socket for byte-exact protocol tests.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_write_timeout(Some(WAIT)).expect("timeout");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(e) => panic!(
                "read failed (timeout?): {e}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// One reply line without its CRLF. Panics on EOF or timeout.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut l: Vec<u8> = self.buf.drain(..=i).collect();
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                return String::from_utf8(l).expect("utf8 line");
            }
            if self.fill() == 0 {
                panic!(
                    "EOF before a line; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Exactly `n` bytes followed by CRLF.
    pub fn payload(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n + 2 {
            if self.fill() == 0 {
                panic!("EOF in payload");
            }
        }
        let p: Vec<u8> = self.buf.drain(..n).collect();
        let end: Vec<u8> = self.buf.drain(..2).collect();
        assert_eq!(end, b"\r\n", "payload not followed by CRLF");
        p
    }

    /// True when the server closed the connection (EOF) with nothing more to read.
    pub fn at_eof(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }

    /// True when the server has closed the connection: EOF, or a reset
    /// (input the server never read was pending when it closed). False when
    /// a byte arrives instead; panics on a timeout.
    pub fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut tmp = [0u8; 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(e) => panic!("read failed (timeout?): {e}"),
        }
    }

    /// Reads with a short timeout: true when nothing arrives in `d`
    /// (used only to check that the server does NOT send, e.g. before ACK).
    pub fn silent_for(&mut self, d: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.set_read_timeout(Some(d)).expect("timeout");
        let mut tmp = [0u8; 1024];
        let r = self.stream.read(&mut tmp);
        self.stream.set_read_timeout(Some(WAIT)).expect("timeout");
        match r {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(_) => true,
        }
    }
}
