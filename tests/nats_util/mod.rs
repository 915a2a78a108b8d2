//! Real nats-server processes for tests/nats.rs: each on an ephemeral
//! loopback port, with JetStream in a temp dir, killed by PID (then
//! waited for) when its guard drops, whatever the test did.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nats-server on PATH, or in /usr/sbin (where Debian puts it).
pub fn nats_server_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// The binary, or prints the SKIP line (the caller returns).
pub fn bin_or_skip() -> Option<PathBuf> {
    let b = nats_server_bin();
    if b.is_none() {
        println!("SKIP: nats-server not found (apt-get install nats-server)");
    }
    b
}

/// A free loopback port: bind port 0, read it, let it go.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A running nats-server.
pub struct NatsServer {
    child: Child,
    bin: PathBuf,
    dir: PathBuf,
    config: Option<String>,
    pub name: String,
    pub port: u16,
    pub addr: String,
    pub log: PathBuf,
}

impl NatsServer {
    /// Starts `nats-server -a 127.0.0.1 -p <port> -n <name> -js -sd
    /// <dir>/<name>` plus `-c <dir>/<name>.conf` holding `config` when given,
    /// and waits until it answers.
    pub fn start(bin: &Path, dir: &Path, name: &str, config: Option<&str>) -> NatsServer {
        Self::start_on(bin, dir, name, free_port(), config)
    }

    pub fn start_on(
        bin: &Path,
        dir: &Path,
        name: &str,
        port: u16,
        config: Option<&str>,
    ) -> NatsServer {
        let child = Self::spawn(bin, dir, name, port, config);
        let mut s = NatsServer {
            child,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            config: config.map(str::to_string),
            name: name.to_string(),
            port,
            addr: format!("127.0.0.1:{port}"),
            log: dir.join(format!("{name}.log")),
        };
        s.wait_ready();
        s
    }

    fn spawn(bin: &Path, dir: &Path, name: &str, port: u16, config: Option<&str>) -> Child {
        let store = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-n", name]);
        // A config with a jetstream block names its own store_dir (the
        // server refuses it twice).
        if !config.is_some_and(|c| c.contains("jetstream")) {
            cmd.arg("-js").arg("-sd").arg(&store);
        }
        if let Some(c) = config {
            let file = dir.join(format!("{name}.conf"));
            std::fs::write(&file, c).expect("write nats config");
            cmd.arg("-c").arg(file);
        }
        // Appended to, so a restart keeps the earlier run's log.
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start nats-server")
    }

    /// Starts it again (killed first if it runs) on the same port, config
    /// and store, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(
            &self.bin,
            &self.dir,
            &self.name,
            self.port,
            self.config.as_deref(),
        );
        self.wait_ready();
    }

    /// Polls a connect until the server sends its INFO line (10 s at most).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("nats-server {} exited ({status}); log:\n{log}", self.name);
            }
            if let Ok(s) = TcpStream::connect(&self.addr) {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return;
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "nats-server {} not ready on {} in 10 s; log:\n{log}",
                    self.name, self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nodes on loopback, each with a config naming itself and routing
/// to the other two.
pub fn cluster(bin: &Path, dir: &Path) -> Vec<NatsServer> {
    let names = ["n1", "n2", "n3"];
    let client_ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let route_ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let routes: Vec<String> = route_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            let conf = format!(
                "server_name: {name}\njetstream {{\n  store_dir: \"{}\"\n}}\n\
                 cluster {{\n  name: c1\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                dir.join(name).display(),
                route_ports[i],
                routes.join(", ")
            );
            NatsServer::start_on(bin, dir, name, client_ports[i], Some(&conf))
        })
        .collect()
}
