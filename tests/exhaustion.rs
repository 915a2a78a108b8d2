//! Running out of resources: file descriptors and disk space. A write that
//! cannot be done is answered ERR and leaves nothing behind; every OK is
//! kept; writes work again by themselves once the resource is back.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Opts, Server, WAIT, stat, tempdir};
use smss::client::{Client, SubOptions};

/// Sends `lines` pipelined on one connection (from a second thread, so the
/// socket buffers never deadlock) and returns one reply line per request.
fn pipeline(addr: &str, lines: Vec<String>) -> Vec<String> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let n = lines.len();
    let sender = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            buf.extend_from_slice(b"\r\n");
            if buf.len() > 1 << 16 {
                w.write_all(&buf).expect("send");
                buf.clear();
            }
        }
        w.write_all(&buf).expect("send");
    });
    let mut r = BufReader::new(stream);
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        let mut l = String::new();
        r.read_line(&mut l).expect("reply");
        replies.push(l.trim_end().to_string());
    }
    sender.join().expect("sender");
    replies
}

fn names(c: &mut Client) -> Vec<String> {
    c.list()
        .expect("LIST")
        .into_iter()
        .map(|t| t.name)
        .collect()
}

#[test]
fn creates_past_a_small_descriptor_limit_are_answered_truthfully() {
    // Before: 1 open index per topic, so past ~the limit CREATEs failed and
    // earlier OKs of the same commit were lost.
    let dir = tempdir();
    let s = Server::start_with_nofile(dir.path(), &Opts::new(), 256);
    let reqs: Vec<String> = (0..1500).map(|i| format!("CREATE t{i:05}")).collect();
    let replies = pipeline(&s.addr, reqs);
    let mut ok = Vec::new();
    for (i, r) in replies.iter().enumerate() {
        if r.starts_with("OK ") {
            ok.push(format!("t{i:05}"));
        } else {
            assert!(r.starts_with("ERR "), "{r}");
        }
    }
    assert_eq!(
        ok.len(),
        1500,
        "index handles are bounded: every CREATE works"
    );
    let mut c = s.client();
    assert_eq!(names(&mut c), ok, "every OK'd topic is there, nothing else");
    assert!(
        stat(&mut c, "index_files_open") <= 16,
        "the handle set stays small"
    );
    assert_eq!(stat(&mut c, "writer_poisoned"), 0);
    for t in ["t00000", "t01011", "t01499"] {
        c.publish(t, b"x").expect("PUB to an evicted topic's index");
    }
    drop(c);
    s.sigterm();
    let s = Server::start_with_nofile(dir.path(), &Opts::new(), 256);
    let mut c = s.client();
    assert_eq!(names(&mut c), ok, "and still after a restart");
    assert_eq!(c.info("t01011").expect("INFO").messages, 1);
}

#[test]
fn idle_unauthenticated_clients_cannot_switch_writes_off() {
    let dir = tempdir();
    // Unauthenticated connections stay for the whole test.
    let opts = Opts::new()
        .section("auth:\n  token: s3cret")
        .section("timeout:\n  auth: 600000");
    let s = Server::start_with_nofile(dir.path(), &opts, 256);
    let mut c = s.client();
    c.auth("s3cret").expect("AUTH");
    let cap = stat(&mut c, "connections_max") as usize;
    assert!(cap < 256, "the cap comes from the descriptor budget: {cap}");
    let preauth = stat(&mut c, "connections_unauthenticated_max") as usize;
    assert_eq!(preauth, cap / 4, "a quarter of the cap in force");
    // The attacker opens more than every slot that is left.
    let idle: Vec<TcpStream> = (0..cap + 20)
        .map(|_| TcpStream::connect(&s.addr).expect("connect"))
        .collect();
    // Past the pre-auth cap each newcomer closes the oldest idle one; wait
    // for the acceptor to have seen them all (bounded: 200 polls of STATS).
    let evicted_all = (cap + 20 - preauth) as u64;
    let mut evicted = 0;
    for _ in 0..200 {
        evicted = stat(&mut c, "unauthenticated_evicted");
        if evicted >= evicted_all {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(evicted, evicted_all, "idle sockets past the pre-auth cap");
    assert_eq!(stat(&mut c, "rejected_busy"), 0, "nobody was refused");
    assert_eq!(stat(&mut c, "connections_unauthenticated"), preauth as u64);
    assert!(
        stat(&mut c, "connections") <= 1 + preauth as u64,
        "the idle ones hold only their own cap"
    );
    // The authenticated client kept its connection and its writes work,
    // and more authenticated clients find slots.
    c.create("u", 0).expect("CREATE with the slots taken");
    c.publish("u", b"still here").expect("PUB");
    assert_eq!(stat(&mut c, "writer_poisoned"), 0);
    let mut others: Vec<_> = (0..8).map(|_| s.client()).collect();
    for o in &mut others {
        o.auth("s3cret").expect("AUTH of a later client");
        o.publish("u", b"another").expect("PUB of a later client");
    }
    drop(idle);
    c.publish("u", b"after").expect("PUB after they left");
    assert_eq!(c.info("u").expect("INFO").messages, 10);
}

#[test]
fn a_hundred_thousand_topics_under_a_1024_descriptor_limit() {
    let dir = tempdir();
    let opts = Opts::new().store("fsync: interval");
    let s = Server::start_with_nofile(dir.path(), &opts, 1024);
    let n = 100_000;
    let reqs: Vec<String> = (0..n).map(|i| format!("CREATE q{i:06}")).collect();
    let replies = pipeline(&s.addr, reqs);
    let bad: Vec<&String> = replies.iter().filter(|r| !r.starts_with("OK ")).collect();
    assert!(
        bad.is_empty(),
        "{} failed, first {:?}",
        bad.len(),
        bad.first()
    );
    let sample: Vec<String> = (0..n).step_by(997).map(|i| format!("q{i:06}")).collect();
    let pubs: Vec<String> = sample.iter().map(|t| format!("PUB {t} 2\r\nhi")).collect();
    assert!(pipeline(&s.addr, pubs).iter().all(|r| r.starts_with("OK ")));
    let mut c = s.client();
    assert!(stat(&mut c, "index_files_open") <= 1024);
    drop(c);
    s.sigterm();
    let s = Server::start_with_nofile(dir.path(), &opts, 1024);
    let mut c = s.client();
    assert_eq!(stat(&mut c, "topics"), n as u64);
    assert_eq!(c.list().expect("LIST").len(), n);
    for t in &sample {
        assert_eq!(c.info(t).expect("INFO").messages, 1, "{t}");
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_writes_until_space_is_freed_without_a_restart() {
    let dir = tempdir();
    let fs_dir = dir.path().join("fs");
    std::fs::create_dir(&fs_dir).expect("mkdir");
    let _fs = match Tmpfs::mount(&fs_dir, "12m") {
        Ok(m) => m,
        Err(why) => {
            println!("SKIP a_full_disk_fails_writes…: cannot mount a small tmpfs ({why})");
            return;
        }
    };
    // Room the test gives back later.
    let ballast = fs_dir.join("ballast");
    std::fs::write(&ballast, vec![7u8; 3 << 20]).expect("ballast");
    let opts = Opts::new().store("maxLogSize: 1048576");
    let mut y = std::fs::read_to_string(common::write_config(dir.path(), &opts)).expect("config");
    y = y.replace(
        &format!("path: {}", dir.path().join("data").display()),
        &format!("path: {}", fs_dir.join("data").display()),
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, y).expect("config");
    let s = Server::start_config(dir.path(), &config);
    let mut c = s.client();
    c.create("big", 0).expect("CREATE");
    let payload = vec![b'p'; 64 << 10];
    let mut acked = Vec::new();
    let mut refused = None;
    for _ in 0..400 {
        match c.publish("big", &payload) {
            Ok(id) => acked.push(id),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("a 12 MiB filesystem fills up within 400 × 64 KiB");
    assert!(refused.contains("INTERNAL"), "{refused}");
    // The step and the file, as README promises.
    assert!(
        refused.contains(" segment ") && refused.contains("/data/log/"),
        "names the step and the file: {refused}"
    );
    assert!(
        refused.contains("No space left"),
        "names the cause: {refused}"
    );
    assert!(!acked.is_empty());
    assert_eq!(
        stat(&mut c, "writer_poisoned"),
        0,
        "a full disk does not poison"
    );
    assert!(c.publish("big", &payload).is_err(), "still full");
    std::fs::remove_file(&ballast).expect("free space");
    let id = c
        .publish("big", &payload)
        .expect("writes work again by themselves");
    acked.push(id);
    assert_eq!(c.info("big").expect("INFO").messages, acked.len() as u64);
    drop(c);
    s.sigterm();
    let s = Server::start_config(dir.path(), &config);
    let mut c = s.client();
    c.subscribe("big", "0", &SubOptions::default())
        .expect("SUB");
    let got = common::collect(&mut c, acked.len());
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, acked, "every OK'd message survived, and nothing else");
    assert!(got.iter().all(|(_, p)| p == &payload));
}
