//! Replication test helpers: starting a slave of a master, waiting for it
//! to catch up (polling STATS, the only signal a slave's progress has),
//! reading a server's whole visible state to compare two servers, and a
//! process frozen with SIGSTOP that is always continued again.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use smss::client::{Client, Delivered, SubEvent, SubOptions, TopicInfo};

use super::{Opts, Server, WAIT, stat};

/// Pause between two polls of a slave's STATS.
pub const POLL: Duration = Duration::from_millis(20);

/// A port that was free a moment ago, for a server that must come back on
/// the same address after a restart (the OS picks it; nothing else here
/// binds fixed ports, so reuse within the test is unlikely).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The command line of a slave of `master`, with `extra` flags after it.
pub fn slave_args<'a>(master: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--role", "slave", "--master", master];
    v.extend_from_slice(extra);
    v
}

pub fn start_slave(dir: &Path, opts: &Opts, master: &str) -> Server {
    Server::start_with_args(dir, opts, &slave_args(master, &[]))
}

/// Polls `cond` every [`POLL`] until it holds or `limit` passed.
pub fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Replication progress has no event a test can wait on.
        std::thread::sleep(POLL);
    }
}

/// A client of `s`, authenticated when `token` is given.
pub fn client_of(s: &Server, token: Option<&str>) -> Client {
    let mut c = s.client();
    if let Some(t) = token {
        c.auth(t).expect("AUTH");
    }
    c
}

pub fn last_id(c: &mut Client) -> u64 {
    stat(c, "last_event_id")
}

/// Waits until `s` (a slave) has every record up to `id`; panics with its
/// log when it does not get there in [`WAIT`].
pub fn wait_for_id(s: &Server, token: Option<&str>, id: u64) {
    let mut c = client_of(s, token);
    let mut have = 0;
    let ok = poll_until(WAIT, || {
        have = last_id(&mut c);
        have >= id
    });
    assert!(
        ok,
        "the slave reached event id {have}, not {id}, in {WAIT:?}; its log:\n{}",
        s.log_text()
    );
}

/// Waits until the slave `s` has everything `master` has now.
pub fn wait_caught_up(master: &Server, s: &Server, token: Option<&str>) -> u64 {
    let id = last_id(&mut client_of(master, token));
    wait_for_id(s, token, id);
    id
}

/// One message as compared between two servers.
pub type Msg = (u64, u64, Vec<(String, String)>, Vec<u8>);

fn as_msg(d: Delivered) -> Msg {
    (d.event_id, d.timestamp_ms, d.headers, d.payload)
}

/// Every retained message of `topic` (SUB 0 until INFO's last id).
pub fn messages(c: &mut Client, topic: &str) -> Vec<Msg> {
    let info = c.info(topic).expect("INFO");
    if info.messages == 0 {
        return Vec::new();
    }
    let opts = SubOptions {
        batch: Some(1000),
        ack_ms: Some(60_000),
        ..SubOptions::default()
    };
    c.subscribe(topic, "0", &opts).expect("SUB 0");
    let mut got: Vec<Msg> = Vec::new();
    // Every event is a batch of at least one message or a rare ALIVE.
    for _ in 0..2 * info.messages + 2 {
        if got.last().is_some_and(|m| m.0 >= info.last_id) {
            break;
        }
        match c.next_event().expect("subscription event") {
            SubEvent::Batch(ms) => {
                got.extend(ms.into_iter().map(as_msg));
                if got.last().is_some_and(|m| m.0 >= info.last_id) {
                    break;
                }
                c.ack().expect("ACK");
            }
            SubEvent::Alive => {}
            other => panic!("unexpected {other:?} reading {topic}"),
        }
    }
    c.stop().expect("STOP");
    got
}

/// What a client can see of a server: LIST, and every topic's messages.
pub type State = (Vec<TopicInfo>, Vec<(String, Vec<Msg>)>);

pub fn state(c: &mut Client) -> State {
    let list = c.list().expect("LIST");
    let msgs = list
        .iter()
        .map(|t| (t.name.clone(), messages(c, &t.name)))
        .collect();
    (list, msgs)
}

/// Asserts that the two servers show the same LIST, INFO and messages.
/// Polls first: a slave publishes its STATS counters before the topics of
/// the same commit, so reaching an id there does not mean SUB shows it yet.
pub fn assert_same_state(master: &mut Client, slave: &mut Client) -> State {
    let m = state(master);
    let mut s = state(slave);
    poll_until(WAIT, || {
        s = state(slave);
        s == m
    });
    assert_eq!(s.0, m.0, "LIST differs (slave, master)");
    for t in &m.0 {
        assert_eq!(
            slave.info(&t.name).expect("INFO on the slave"),
            *t,
            "INFO {}",
            t.name
        );
    }
    assert_eq!(s.1, m.1, "messages differ (slave, master)");
    m
}

/// Waits until `topic` is visible on `c`'s server (see [`assert_same_state`]).
pub fn wait_topic(c: &mut Client, topic: &str) {
    assert!(
        poll_until(WAIT, || c.info(topic).is_ok()),
        "topic {topic} did not appear"
    );
}

pub fn ids(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter().map(|m| m.0).collect()
}

pub fn assert_strictly_increasing(msgs: &[Msg]) {
    let ids = ids(msgs);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids must strictly increase: {ids:?}"
    );
}

/// A process stopped with SIGSTOP; continued again when dropped, whatever
/// happens in the test.
pub struct Frozen(u32);

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} {pid} failed");
}

impl Frozen {
    pub fn new(s: &Server) -> Frozen {
        let pid = s.pid();
        assert!(pid > 0, "the server is not running");
        signal(pid, "STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // No assert in drop: it may run while a test panics.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.0.to_string())
            .status();
    }
}

/// `smss-cli dump <file>`: (success, stdout, stderr).
pub fn cli_dump(file: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .arg("dump")
        .arg(file)
        .output()
        .expect("run smss-cli dump");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number in `data/idlease` of a server directory.
pub fn id_lease(dir: &Path) -> u64 {
    let path = dir.join("data/idlease");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{path:?} holds {text:?}"))
}

/// Subscription options of the replication tests: large batches, a long
/// ack deadline.
pub fn sub_opts() -> SubOptions {
    SubOptions {
        batch: Some(100),
        ack_ms: Some(60_000),
        ..SubOptions::default()
    }
}

/// The next batch of a subscription, skipping ALIVE (bounded).
pub fn next_batch(c: &mut Client) -> Vec<Delivered> {
    for _ in 0..100 {
        match c.next_event().expect("subscription event") {
            SubEvent::Batch(ms) => return ms,
            SubEvent::Alive => {}
            other => panic!("expected a batch, got {other:?}"),
        }
    }
    panic!("only ALIVE for 100 events");
}

/// An old master restarted after its slave was promoted: it stepped down
/// before serving (a slave, refusing writes) and follows the new master
/// up to `id`, a write made there while it was down. Returns its client.
pub fn assert_stepped_down(m: &Server, id: u64) -> Client {
    let mut mc = m.client();
    assert_eq!(role(&mut mc), "slave", "{}", m.log_text());
    let err = mc
        .publish("t", b"refused")
        .expect_err("a write to the old master");
    assert!(err.to_string().contains("READONLY"), "{err}");
    wait_for_id(m, None, id);
    mc
}

/// STATS `role` of a server.
pub fn role(c: &mut Client) -> String {
    let r = text_stat(c, "role");
    assert!(!r.is_empty(), "STATS has no role");
    r
}

/// A STATS field as text ("" when absent: e.g. `repl_state` on a master).
pub fn text_stat(c: &mut Client, name: &str) -> String {
    c.stats()
        .expect("STATS")
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// The `.log` files under a server directory's `data/diverged`.
pub fn diverged_files(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir.join("data/diverged")) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// (event id, payload) of every message record in one diverged file.
pub fn diverged_messages(file: &Path) -> Vec<(u64, Vec<u8>)> {
    let f = std::fs::File::open(file).expect("open a diverged file");
    let mut out = Vec::new();
    smss::storage::record::scan(std::io::BufReader::new(f), |_, r| {
        if r.is_message() {
            out.push((r.event_id, r.payload().to_vec()));
        }
    })
    .expect("scan a diverged file");
    out
}

/// Every message moved aside under a server directory: id → payload.
pub fn diverged(dir: &Path) -> std::collections::HashMap<u64, Vec<u8>> {
    diverged_files(dir)
        .iter()
        .flat_map(|f| diverged_messages(f.as_path()))
        .collect()
}

/// Asks `probe` every [`POLL`] until it answers `Ok`, for at most [`WAIT`];
/// panics with `what` and the last thing seen. Replication is asynchronous,
/// so there is no reply to wait on: a bounded poll is the only way to see it.
pub fn poll<T, S: std::fmt::Debug>(what: &str, mut probe: impl FnMut() -> Result<T, S>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {WAIT:?}; last seen {seen:?}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// A master on `md` (with `m_opts`) holding topic `t` and one message
/// `first`, and a slave of it on `sd` (with `s_opts`) that has caught up.
pub fn pair_with_topic(
    md: &Path,
    m_opts: &Opts,
    sd: &Path,
    s_opts: &Opts,
    first: &[u8],
) -> (Server, Server) {
    let m = Server::start_with(md, m_opts);
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    mc.publish("t", first).expect("PUB");
    let s = start_slave(sd, s_opts, &m.addr);
    wait_caught_up(&m, &s, None);
    (m, s)
}

/// Accepts one connection on `l` within [`WAIT`] (the accept runs on a
/// helper thread, so a slave that never comes cannot hang the test).
pub fn accept_one(l: &std::net::TcpListener) -> std::net::TcpStream {
    let l = l.try_clone().expect("clone listener");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(l.accept().map(|(s, _)| s));
    });
    let s = rx
        .recv_timeout(WAIT)
        .expect("the slave did not connect")
        .expect("accept");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

/// One line from a scripted peer, its line end trimmed.
pub fn read_line(r: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a line from the slave");
    line.trim_end().to_string()
}
