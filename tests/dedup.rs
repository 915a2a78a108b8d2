//! Idempotent publish with the real binary: a publish carrying a dedup key
//! (`msgid=<key>`) that repeats one within `publish.dedupWindowMs` writes
//! nothing and answers the first one's id with ` dup`; the window ends,
//! survives a restart (SIGTERM and kill -9) and a PROMOTE, the key cap
//! holds, a bad key is refused, and window 0 turns it off.

mod common;

use std::time::{Duration, Instant};

use common::repl::{poll_until, start_slave, wait_caught_up};
use common::{Opts, Raw, Server, WAIT, stat, tempdir};

/// A config with the given window and cap.
fn opts(window_ms: u64, max_keys: u64) -> Opts {
    Opts::new().section(&format!(
        "publish:\n  dedupWindowMs: {window_ms}\n  dedupMaxKeys: {max_keys}"
    ))
}

/// Sends one request and returns the reply line.
fn ask(r: &mut Raw, req: &str) -> String {
    r.send(req.as_bytes());
    r.line()
}

fn pub_key(r: &mut Raw, topic: &str, key: &str, payload: &str) -> String {
    ask(
        r,
        &format!("PUB {topic} {} msgid={key}\r\n{payload}\r\n", payload.len()),
    )
}

fn mpub_keys(r: &mut Raw, topic: &str, keys: &[&str]) -> String {
    let mut req = format!("MPUB {topic} {}\r\n", keys.len());
    for k in keys {
        req.push_str(&format!("1 msgid={k}\r\nx\r\n"));
    }
    ask(r, &req)
}

/// Messages of `topic` (INFO's count).
fn count(r: &mut Raw, topic: &str) -> u64 {
    let line = ask(r, &format!("INFO {topic}\r\n"));
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.first(), Some(&"TOPIC"), "INFO: {line}");
    f[4].parse().expect("messages")
}

fn ok_id(line: &str) -> u64 {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[0], "OK", "{line}");
    f[1].parse().expect("id")
}

#[test]
fn a_retry_within_the_window_is_written_once_and_answered_dup() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &opts(60_000, 1000));
    let mut r = s.raw();
    assert!(ask(&mut r, "CREATE t\r\n").starts_with("OK "));
    let first = pub_key(&mut r, "t", "k1", "hello");
    let id = ok_id(&first);
    assert_eq!(first, format!("OK {id}"));
    assert_eq!(pub_key(&mut r, "t", "k1", "hello"), format!("OK {id} dup"));
    // The key is the topic's: another topic writes it.
    assert!(ask(&mut r, "CREATE u\r\n").starts_with("OK "));
    assert!(!pub_key(&mut r, "u", "k1", "x").ends_with("dup"));
    assert_eq!(count(&mut r, "t"), 1);

    // MPUB: a whole repeat answers the first MPUB's range.
    let m = mpub_keys(&mut r, "t", &["a", "b", "c"]);
    assert!(!m.ends_with("dup"), "{m}");
    assert_eq!(mpub_keys(&mut r, "t", &["a", "b", "c"]), format!("{m} dup"));
    // A partial overlap is refused, naming the key, and writes nothing.
    let before = count(&mut r, "t");
    let e = mpub_keys(&mut r, "t", &["b", "new"]);
    assert!(e.starts_with("ERR BADREQ") && e.contains("msgid=b"), "{e}");
    let e = mpub_keys(&mut r, "t", &["z", "z"]);
    assert!(e.starts_with("ERR BADREQ"), "{e}");
    assert_eq!(count(&mut r, "t"), before);
    // A PUB may repeat one MPUB entry.
    let b_id = ok_id(&m) + 1;
    assert_eq!(pub_key(&mut r, "t", "b", "x"), format!("OK {b_id} dup"));

    // DPUB: answered with the DPUB's id; the fired message does not take the key.
    let d = ask(&mut r, "DPUB t 100 1 msgid=d1\r\nx\r\n");
    let d_id = ok_id(&d);
    assert_eq!(
        ask(&mut r, "DPUB t 100 1 msgid=d1\r\nx\r\n"),
        format!("OK {d_id} dup")
    );
    assert!(poll_until(WAIT, || count(&mut r, "t") == before + 1));
    assert_eq!(pub_key(&mut r, "t", "d1", "x"), format!("OK {d_id} dup"));
    assert_eq!(count(&mut r, "t"), before + 1);

    let mut c = s.client();
    assert_eq!(stat(&mut c, "dedup_duplicates"), 5);
    assert!(stat(&mut c, "dedup_keys") >= 5);
}

#[test]
fn after_the_window_the_key_is_written_again() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &opts(300, 1000));
    let mut r = s.raw();
    ask(&mut r, "CREATE t\r\n");
    let id = ok_id(&pub_key(&mut r, "t", "k", "x"));
    assert_eq!(pub_key(&mut r, "t", "k", "x"), format!("OK {id} dup"));
    let start = Instant::now();
    let mut again = String::new();
    while start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        again = pub_key(&mut r, "t", "k", "x");
        if !again.ends_with("dup") {
            break;
        }
    }
    assert!(
        !again.ends_with("dup"),
        "still a duplicate after 5 s: {again}"
    );
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert!(ok_id(&again) > id);
    assert_eq!(count(&mut r, "t"), 2);
}

#[test]
fn keys_survive_a_restart_sigterm_and_kill9() {
    let dir = tempdir();
    let o = opts(600_000, 1000);
    let s = Server::start_with(dir.path(), &o);
    let mut r = s.raw();
    ask(&mut r, "CREATE t\r\n");
    let a = ok_id(&pub_key(&mut r, "t", "a", "x"));
    let m = mpub_keys(&mut r, "t", &["m1", "m2"]);
    drop(r);
    assert!(s.sigterm().success());

    // After SIGTERM (a checkpoint holds the keys).
    let s = Server::start_with(dir.path(), &o);
    let mut r = s.raw();
    assert_eq!(pub_key(&mut r, "t", "a", "x"), format!("OK {a} dup"));
    assert_eq!(mpub_keys(&mut r, "t", &["m1", "m2"]), format!("{m} dup"));
    let b = ok_id(&pub_key(&mut r, "t", "b", "x"));
    drop(r);
    s.kill9();

    // After kill -9: the checkpoint's keys and the replayed tail's.
    let s = Server::start_with(dir.path(), &o);
    let mut r = s.raw();
    assert_eq!(pub_key(&mut r, "t", "a", "x"), format!("OK {a} dup"));
    assert_eq!(pub_key(&mut r, "t", "b", "x"), format!("OK {b} dup"));
    assert_eq!(count(&mut r, "t"), 4);
}

#[test]
fn a_promoted_slave_knows_the_masters_keys() {
    let (md, sd) = (tempdir(), tempdir());
    let o = opts(600_000, 1000);
    let m = Server::start_with(md.path(), &o);
    let mut r = m.raw();
    ask(&mut r, "CREATE t\r\n");
    let a = ok_id(&pub_key(&mut r, "t", "a", "x"));
    let mm = mpub_keys(&mut r, "t", &["m1", "m2"]);
    let s = start_slave(sd.path(), &o, &m.addr);
    wait_caught_up(&m, &s, None);
    let mut sc = s.client();
    assert_eq!(stat(&mut sc, "dedup_keys"), 3);
    drop(r);
    m.kill9();
    let mut sr = s.raw();
    assert!(ask(&mut sr, "PROMOTE\r\n").starts_with("OK "));
    assert_eq!(pub_key(&mut sr, "t", "a", "x"), format!("OK {a} dup"));
    assert_eq!(mpub_keys(&mut sr, "t", &["m1", "m2"]), format!("{mm} dup"));
    assert_eq!(count(&mut sr, "t"), 3);
}

#[test]
fn the_key_cap_holds() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &opts(600_000, 10));
    let mut r = s.raw();
    ask(&mut r, "CREATE t\r\n");
    for i in 0..50 {
        pub_key(&mut r, "t", &format!("k{i}"), "x");
    }
    let mut c = s.client();
    assert_eq!(stat(&mut c, "dedup_keys"), 10);
    // The oldest went first: k0 is written again, k49 is still known.
    assert!(!pub_key(&mut r, "t", "k0", "x").ends_with("dup"));
    assert!(pub_key(&mut r, "t", "k49", "x").ends_with("dup"));
    assert!(stat(&mut c, "dedup_keys") <= 10);
    // Deleting the topic drops its keys.
    assert!(ask(&mut r, "DELETE t\r\n").starts_with("OK "));
    assert_eq!(stat(&mut c, "dedup_keys"), 0);
}

#[test]
fn a_bad_key_is_refused_and_writes_nothing() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &opts(60_000, 100));
    let mut r = s.raw();
    ask(&mut r, "CREATE t\r\n");
    let long = "k".repeat(129);
    for req in [
        "PUB t 1 msgid=\r\nx\r\n".to_string(),
        "PUB t 1 msgid=a msgid=b\r\nx\r\n".to_string(),
        format!("PUB t 1 msgid={long}\r\nx\r\n"),
        "MPUB t 2\r\n1 msgid=a\r\nx\r\n1 msgid=\r\nx\r\n".to_string(),
        "DPUB t 10 1 msgid=\r\nx\r\n".to_string(),
    ] {
        let e = ask(&mut r, &req);
        assert!(e.starts_with("ERR BADREQ"), "{req:?}: {e}");
    }
    assert_eq!(count(&mut r, "t"), 0);
    // A key of 128 bytes is fine.
    let k128 = "k".repeat(128);
    assert!(pub_key(&mut r, "t", &k128, "x").starts_with("OK "));
}

#[test]
fn window_zero_turns_dedup_off() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &opts(0, 100));
    let mut r = s.raw();
    ask(&mut r, "CREATE t\r\n");
    let a = pub_key(&mut r, "t", "k", "x");
    let b = pub_key(&mut r, "t", "k", "x");
    assert!(!a.ends_with("dup") && !b.ends_with("dup"));
    assert_ne!(a, b);
    assert_eq!(count(&mut r, "t"), 2);
    let mut c = s.client();
    assert_eq!(stat(&mut c, "dedup_keys"), 0);
}

#[test]
fn the_rust_client_and_the_cli_send_keys_and_read_dup() {
    let dir = tempdir();
    let s = Server::start_with(dir.path(), &opts(60_000, 100));
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let a = c
        .publish_with_key("t", "a", &[("x", "1")], b"p")
        .expect("PUB");
    assert!(!a.dup);
    let again = c.publish_with_key("t", "a", &[], b"p").expect("PUB");
    assert_eq!((again.id, again.dup), (a.id, true));
    let d = c
        .dpublish_with_key("t", 60_000, "d", &[], b"p")
        .expect("DPUB");
    assert_eq!(
        c.dpublish_with_key("t", 60_000, "d", &[], b"p")
            .expect("DPUB"),
        smss::client::Keyed {
            id: d.id,
            dup: true
        }
    );
    let msgs: [(&str, &[u8]); 2] = [("m1", b"1"), ("m2", b"2")];
    let m = c.mpublish_with_keys("t", &msgs).expect("MPUB");
    assert!(!m.dup && m.last == m.first + 1);
    let m2 = c.mpublish_with_keys("t", &msgs).expect("MPUB");
    assert_eq!((m2.first, m2.last, m2.dup), (m.first, m.last, true));
    // A key the server would refuse is refused before anything is sent.
    assert!(c.publish_with_key("t", "", &[], b"p").is_err());
    assert!(c.publish_with_key("t", "a b", &[], b"p").is_err());

    let port = s.addr.rsplit(':').next().expect("port");
    let cli = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_smss-cli"))
            .args(["--port", port])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run smss-cli");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (ok, first) = cli(&["pub", "t", "hello", "--key", "cli-1"]);
    assert!(ok && !first.contains("dup"), "{first}");
    let (ok, second) = cli(&["pub", "t", "hello", "--key", "cli-1"]);
    assert!(ok);
    assert_eq!(second.trim(), format!("{} dup", first.trim()));
    let (ok, _) = cli(&["pub", "t", "hello", "--key", ""]);
    assert!(!ok, "an empty key is a usage error");
}

/// `client::Reconnecting`: a keyed write whose connection was lost is sent
/// again, same keys, on a new connection — written once, answered `dup`;
/// an `ERR` is not retried; a server gone for good ends in the I/O error
/// after the attempts.
#[test]
fn the_rust_client_retries_keyed_writes_on_a_new_connection() {
    use smss::client::{Client, ClientError, Keyed, Reconnecting};
    let dir = tempdir();
    let port = common::repl::free_port();
    let o = opts(600_000, 1000).port(port);
    let s = Server::start_with(dir.path(), &o);
    let addr = s.addr.clone();
    let connects = std::cell::Cell::new(0);
    let mut r = Reconnecting::new(|| {
        connects.set(connects.get() + 1);
        let mut c = Client::connect(&addr)?;
        c.set_timeout(Some(WAIT))?;
        Ok(c)
    });
    r.client().expect("connect").create("t", 0).expect("CREATE");
    let a = r.publish_with_key("t", "a", &[], b"x").expect("PUB");
    assert!(!a.dup);
    // The server goes away and comes back on the same port: the connection
    // the publisher holds is dead, and the first try on it fails.
    assert!(s.sigterm().success());
    let s = Server::start_with(dir.path(), &o);
    let again = r
        .publish_with_key("t", "a", &[], b"x")
        .expect("PUB after the restart");
    assert_eq!(
        again,
        Keyed {
            id: a.id,
            dup: true
        }
    );
    assert_eq!(connects.get(), 2);
    let m = r
        .mpublish_with_keys("t", &[("m1", b"1"), ("m2", b"2")])
        .expect("MPUB");
    let b = r.publish_with_key("t", "b", &[], b"y").expect("PUB");
    assert!(!b.dup && b.id > m.last);
    // An ERR is the server's answer: not retried, same connection.
    let e = r
        .publish_with_key("nosuch", "c", &[], b"z")
        .expect_err("no such topic");
    assert!(
        matches!(&e, ClientError::Server { code, .. } if code == "NOTOPIC"),
        "{e}"
    );
    assert_eq!(connects.get(), 2);
    let mut raw = s.raw();
    assert_eq!(count(&mut raw, "t"), 4, "a, m1, m2, b: each once");
    drop(raw);
    // The server gone for good: two attempts, then the I/O error.
    s.kill9();
    let mut r = r.attempts(2);
    let e = r
        .publish_with_key("t", "d", &[], b"w")
        .expect_err("no server");
    assert!(matches!(e, ClientError::Io(_)), "{e}");
}
