//! Write replies are written to the client's socket by the thread that
//! releases the writer's batches, not by the connection's own thread: they
//! must still come in request order around reads and errors, under
//! `fsync: always`, and a client that stops reading must not hold up
//! anyone else's replies.

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{Opts, Raw, Server};

fn pub_frame(topic: &str, payload: &str) -> Vec<u8> {
    format!("PUB {topic} {}\r\n{payload}\r\n", payload.len()).into_bytes()
}

fn ok_id(line: &str) -> u64 {
    match line.strip_prefix("OK ").map(str::parse) {
        Some(Ok(id)) => id,
        _ => panic!("expected OK <id>, got {line:?}"),
    }
}

/// `TOPIC <name> <created> <expires> <msgs> <first> <last>`: the count.
fn info_msgs(line: &str) -> u64 {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.first(), Some(&"TOPIC"), "INFO reply: {line:?}");
    f[4].parse().expect("message count")
}

#[test]
fn writes_reads_and_errors_in_one_pipeline_are_answered_in_order() {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &Opts::new().store("fsync: always"));
    let mut r = server.raw();
    // One write: writes, reads that must see the writes before them, bad
    // requests and refused writes, interleaved.
    let mut buf = Vec::new();
    buf.extend_from_slice(b"CREATE ord\r\n");
    buf.extend(pub_frame("ord", "a"));
    buf.extend_from_slice(b"INFO ord\r\n");
    buf.extend(pub_frame("ord", "b"));
    buf.extend_from_slice(b"NOSUCHCOMMAND\r\n");
    buf.extend(pub_frame("nosuch", "c"));
    buf.extend_from_slice(b"PING\r\nCREATE ord\r\n");
    buf.extend(pub_frame("ord", "d"));
    buf.extend_from_slice(b"INFO ord\r\nQUIT\r\n");
    r.send(&buf);

    let created = ok_id(&r.line());
    let a = ok_id(&r.line());
    assert!(a > created);
    assert_eq!(info_msgs(&r.line()), 1, "INFO must see the PUB before it");
    let b = ok_id(&r.line());
    assert!(b > a);
    assert_eq!(r.line(), "ERR UNKNOWN unknown command 'NOSUCHCOMMAND'");
    assert_eq!(r.line(), "ERR NOTOPIC no topic nosuch");
    assert_eq!(r.line(), "PONG");
    assert!(r.line().starts_with("ERR EXISTS"), "second CREATE");
    let d = ok_id(&r.line());
    assert!(d > b);
    assert_eq!(info_msgs(&r.line()), 3);
    assert_eq!(r.line(), "OK");
    assert!(r.at_eof(), "QUIT closes after its OK");
}

/// A client pipelines far more replies than its socket holds and does not
/// read them for a while; another client's writes are answered meanwhile,
/// and the first gets every reply, in order, once it reads.
#[test]
fn a_client_that_stops_reading_holds_up_only_itself() {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &Opts::new().store("fsync: never"));
    let mut admin = server.raw();
    admin.send(b"CREATE slow\r\nCREATE other\r\n");
    ok_id(&admin.line());
    ok_id(&admin.line());

    let mut slow = server.raw();
    // A small receive buffer, so the server's replies back up quickly.
    let small: libc::c_int = 16384;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            slow.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
    let n = 20_000;
    let mut frames = Vec::new();
    for i in 0..n {
        frames.extend(pub_frame("slow", &format!("{i:0>40}")));
    }
    let mut writer = slow.stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&frames).map_err(|e| e.to_string())
    });

    // Meanwhile another client publishes one request at a time.
    let mut other = server.raw();
    let mut last = 0;
    for i in 0..200 {
        other.send(&pub_frame("other", &format!("o{i}")));
        let id = ok_id(&other.line());
        assert!(id > last, "ids go up");
        last = id;
    }

    // Now the slow client reads: every reply, ids increasing.
    let mut prev = 0;
    for i in 0..n {
        let id = ok_id(&slow.line());
        assert!(id > prev, "reply {i}: id {id} after {prev}");
        prev = id;
    }
    sender.join().expect("sender").expect("all requests sent");
    slow.send(b"INFO slow\r\n");
    assert_eq!(info_msgs(&slow.line()), n);
    assert!(
        slow.silent_for(Duration::from_millis(100)),
        "no reply beyond the requests"
    );
}

/// Many connections with one write in flight each, under `fsync: always`:
/// each gets exactly its own answers.
#[test]
fn concurrent_connections_each_get_their_own_answers() {
    let dir = common::tempdir();
    let server = Server::start_with(dir.path(), &Opts::new().store("fsync: always"));
    let mut admin = server.raw();
    admin.send(b"CREATE many\r\n");
    ok_id(&admin.line());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let mut r: Raw = server.raw();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..50 {
                    r.send(&pub_frame("many", &format!("{t}-{i}")));
                    ids.push(ok_id(&r.line()));
                }
                r.send(b"PING\r\n");
                assert_eq!(r.line(), "PONG");
                ids
            })
        })
        .collect();
    let mut all: Vec<u64> = Vec::new();
    for t in threads {
        let ids = t.join().expect("client thread");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        all.extend(ids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 16 * 50, "every answer once, no id twice");
    admin.send(b"INFO many\r\n");
    assert_eq!(info_msgs(&admin.line()), 16 * 50);
}
