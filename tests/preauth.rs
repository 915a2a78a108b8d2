//! Before AUTH: what clients that never authenticate, or guess the token,
//! can do to the ones that have it. With `auth.token` set, connections not
//! yet authenticated hold at most `limits.maxUnauthenticated` slots (a
//! quarter of the connection cap by default): a newcomer past that cap
//! closes the oldest of them (`ERR BUSY`) instead of being refused, so idle
//! sockets cannot lock real clients out, and authenticated clients can
//! always use the whole connection cap. Wrong tokens are paced per source
//! address across connections. Also: the start-up warning for a config
//! file that holds the token and others can read, and the descriptor-limit
//! line that says "raised" only when it was.
//!
//! Every client here comes from 127.0.0.1, so the pacing test is many
//! connections of one address.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Opts, Raw, Server, stat, tempdir, write_config};

const TOKEN: &str = "s3cret";

fn with_token() -> Opts {
    Opts::new()
        .store("fsync: never")
        .section(&format!("auth:\n  token: {TOKEN}"))
        // Idle sockets stay for the whole test unless evicted.
        .section("timeout:\n  auth: 600000")
}

/// A connection that is served but never authenticates (one PONG proves
/// its thread runs).
fn idle(s: &Server) -> Raw {
    let mut r = s.raw();
    r.send(b"PING\r\n");
    assert_eq!(r.line(), "PONG");
    r
}

fn authed(s: &Server) -> smss::client::Client {
    let mut c = s.client();
    c.auth(TOKEN).expect("AUTH");
    c
}

/// The ERR BUSY an evicted connection gets, then its close.
fn assert_evicted(r: &mut Raw, what: &str) {
    let l = r.line();
    assert!(
        l.starts_with("ERR BUSY ") && l.contains("limits.maxUnauthenticated"),
        "{what}: {l:?}"
    );
    assert!(r.closed(), "{what}: still open after its ERR BUSY");
}

#[test]
fn idle_unauthenticated_sockets_cannot_lock_real_clients_out() {
    let dir = tempdir();
    let opts = with_token().section("limits:\n  maxConnections: 16");
    let s = Server::start_with(dir.path(), &opts);
    let mut admin = authed(&s);
    assert_eq!(stat(&mut admin, "connections_unauthenticated_max"), 4);

    // The attacker fills the pre-auth cap.
    let mut idles: Vec<Raw> = (0..4).map(|_| idle(&s)).collect();
    assert_eq!(stat(&mut admin, "connections_unauthenticated"), 4);
    assert_eq!(stat(&mut admin, "connections"), 5);

    // A real client still connects (closing the oldest idle one), AUTHs
    // and works.
    let mut c = s.client();
    assert_evicted(&mut idles[0], "the oldest idle socket");
    c.auth(TOKEN).expect("AUTH with the pre-auth cap full");
    c.create("t", 0).expect("CREATE");
    c.publish("t", b"in").expect("PUB");
    assert_eq!(stat(&mut c, "connections_unauthenticated"), 3);
    assert_eq!(stat(&mut c, "unauthenticated_evicted"), 1);
    assert_eq!(stat(&mut c, "rejected_busy"), 0);

    // Its AUTH gave its pre-auth slot back: the attacker refills the cap,
    // and a further unauthenticated socket evicts the next oldest, not a
    // newer one.
    let refill = idle(&s);
    assert_eq!(stat(&mut c, "connections_unauthenticated"), 4);
    let extra = idle(&s);
    assert_evicted(&mut idles[1], "the next oldest idle socket");
    for r in &mut idles[2..] {
        r.send(b"PING\r\n");
        assert_eq!(r.line(), "PONG", "a newer idle socket is still served");
    }
    assert_eq!(stat(&mut c, "connections_unauthenticated"), 4);

    // The next real client evicts the oldest idle socket again (the
    // pre-auth cap is full).
    let mut clients = vec![admin, c];
    clients.push(authed(&s));
    assert_evicted(&mut idles[2], "idle socket 3");
    let mut rest: Vec<Raw> = idles.drain(3..).chain([refill, extra]).collect();

    // Authenticated clients get every slot of limits.maxConnections: with
    // the connection cap full, a newcomer takes an unauthenticated
    // connection's place even below the pre-auth cap.
    while clients.len() < 13 {
        clients.push(authed(&s));
    }
    assert_eq!(stat(&mut clients[0], "connections"), 16);
    assert_eq!(stat(&mut clients[0], "connections_unauthenticated"), 3);
    for (i, r) in rest.iter_mut().enumerate() {
        clients.push(authed(&s));
        assert_evicted(r, &format!("idle socket {} with the cap full", i + 4));
    }
    let c = &mut clients[0];
    assert_eq!(stat(c, "connections"), 16);
    assert_eq!(stat(c, "connections_unauthenticated"), 0);
    assert_eq!(stat(c, "unauthenticated_evicted"), 6);

    // Only now, with every slot authenticated, is a newcomer refused.
    let mut refused = s.raw();
    let l = refused.line();
    assert!(l.starts_with("ERR BUSY too many connections"), "{l}");
    assert!(refused.closed());
    assert_eq!(stat(c, "rejected_busy"), 1);
    for (i, c) in clients.iter_mut().enumerate() {
        c.publish("t", format!("{i}").as_bytes()).expect("PUB");
    }
    assert_eq!(clients[0].info("t").expect("INFO").messages, 17);
}

#[test]
fn without_a_token_nothing_changes() {
    let dir = tempdir();
    let opts = Opts::new().section("limits:\n  maxConnections: 4\n  maxUnauthenticated: 1");
    let s = Server::start_with(dir.path(), &opts);
    let mut conns: Vec<Raw> = (0..4).map(|_| idle(&s)).collect();
    let mut fifth = s.raw();
    let l = fifth.line();
    assert!(l.starts_with("ERR BUSY too many connections"), "{l}");
    assert!(fifth.closed());
    // Nobody was evicted: the first connection still works.
    conns[0].send(b"STATS\r\n");
    let mut stats = Vec::new();
    let head = conns[0].line();
    let n: usize = head
        .strip_prefix("STATS ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{head}"));
    for _ in 0..n {
        stats.push(conns[0].line());
    }
    for want in [
        "STAT connections_unauthenticated 0",
        "STAT unauthenticated_evicted 0",
        "STAT rejected_busy 1",
    ] {
        assert!(stats.iter().any(|l| l == want), "{want}: {stats:?}");
    }
}

#[test]
fn wrong_tokens_from_one_address_are_paced_across_connections() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &with_token());
    // 50 connections at a time keep guessing for WINDOW. Without pacing per
    // address each of them gets a wrong token checked every 150 ms (~330/s).
    const CONNS: usize = 50;
    const WINDOW: Duration = Duration::from_secs(3);
    let checked = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..CONNS)
        .map(|i| {
            let addr = s.addr.clone();
            let (checked, throttled) = (Arc::clone(&checked), Arc::clone(&throttled));
            std::thread::spawn(move || {
                // Bounded in count and time: every read has a timeout.
                for n in 0..10_000 {
                    if t0.elapsed() >= WINDOW {
                        break;
                    }
                    let mut r = Raw::connect(&addr);
                    r.send(format!("AUTH guess-{i}-{n}\r\n").as_bytes());
                    let l = r.line();
                    if l == "ERR NOAUTH wrong token" {
                        checked.fetch_add(1, Ordering::Relaxed);
                    } else if l.starts_with("ERR NOAUTH too many wrong tokens from 127.0.0.1") {
                        throttled.fetch_add(1, Ordering::Relaxed);
                        assert!(r.closed(), "a throttled AUTH closes its connection");
                    } else {
                        panic!("unexpected reply to a wrong token: {l:?}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("guessing thread");
    }
    let took = t0.elapsed();
    let checked = checked.load(Ordering::Relaxed);
    let throttled = throttled.load(Ordering::Relaxed);
    let rate = checked as f64 / took.as_secs_f64();
    eprintln!("{checked} tokens checked, {throttled} refused unchecked in {took:?}: {rate:.1}/s");
    assert!(
        rate < 20.0,
        "{checked} wrong tokens checked in {took:?} ({rate:.1}/s) from one address"
    );
    assert!(throttled > 0, "no AUTH was refused unchecked");

    // The right token from the same address gets in once the guessing
    // stopped (its turn is at most one interval away).
    let mut c = s.client();
    c.auth(TOKEN).expect("the right token after the guessing");
    assert_eq!(stat(&mut c, "auth_failures"), checked);
    assert_eq!(stat(&mut c, "auth_throttled"), throttled);
}

// ---------------------------------------------------------------------------
// The config file as a secret

fn start_with_mode(opts: &Opts, mode: u32) -> (tempfile::TempDir, Server) {
    let dir = tempdir();
    let config = write_config(dir.path(), opts);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let s = Server::start_config(dir.path(), &config);
    (dir, s)
}

fn token_warnings(s: &Server) -> Vec<String> {
    s.log_text()
        .lines()
        .filter(|l| l.contains("holds auth.token"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_config_holding_a_token_that_others_can_read_gets_one_warning() {
    let (_dir, s) = start_with_mode(&with_token(), 0o644);
    let lines = token_warnings(&s);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let path = s.config.display().to_string();
    let l = &lines[0];
    assert!(
        l.contains(&format!("config file {path} ")),
        "names the file: {l}"
    );
    assert!(l.contains("mode 0644"), "names the mode: {l}");
    assert!(
        l.contains(&format!("chmod 600 {path}")),
        "gives the fix: {l}"
    );
    assert!(l.contains("WARN"), "{l}");

    let (_dir, s) = start_with_mode(&with_token(), 0o600);
    assert_eq!(token_warnings(&s), Vec::<String>::new(), "a private file");
    let (_dir, s) = start_with_mode(&with_token(), 0o640);
    assert_eq!(token_warnings(&s), Vec::<String>::new(), "group-readable");
    let (_dir, s) = start_with_mode(&Opts::new(), 0o644);
    assert_eq!(token_warnings(&s), Vec::<String>::new(), "no token");
}

// ---------------------------------------------------------------------------
// The descriptor limit

#[test]
fn no_raised_line_when_the_soft_limit_already_is_the_hard_one() {
    let dir = tempdir();
    let s = Server::start_with_nofile(dir.path(), &Opts::new(), 512);
    let log = s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("file descriptors:"))
        .unwrap_or_else(|| panic!("no descriptor line: {log}"));
    assert!(!line.contains("raised"), "{line}");
    assert!(
        line.contains("soft limit 512, already at the hard limit (512)"),
        "{line}"
    );
}
