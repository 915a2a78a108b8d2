//! [`Conn`] against a scripted fake server on loopback: the frame
//! handling that a real server rarely shows (a PING mid-request, frames
//! split across reads and across a timeout, INFO updates, garbage, an
//! oversized length, a refused login, a close).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// The server's side of one connection.
struct Peer {
    r: BufReader<TcpStream>,
    w: TcpStream,
    /// The client's inbox prefix (from its SUB), e.g. `_INBOX.abc`.
    inbox: String,
}

impl Peer {
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read from client");
        l.trim_end().to_string()
    }

    fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).expect("write to client");
        self.w.flush().expect("flush");
    }

    /// Reads one `PUB`/`HPUB` with its bytes; returns its reply subject.
    fn read_pub(&mut self) -> String {
        let l = self.line();
        let toks: Vec<&str> = l.split(' ').collect();
        let len: usize = toks.last().and_then(|t| t.parse().ok()).expect("length");
        let mut body = vec![0u8; len + 2];
        std::io::Read::read_exact(&mut self.r, &mut body).expect("body");
        toks[2].to_string()
    }
}

/// A fake server: sends `info`, then (unless `refuse`) reads CONNECT,
/// SUB and PING, answers PONG, and runs `script`.
fn fake(
    info: &'static str,
    refuse: Option<&'static str>,
    script: impl FnOnce(&mut Peer) + Send + 'static,
) -> (String, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let h = thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut p = Peer {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
            inbox: String::new(),
        };
        p.send(format!("INFO {info}\r\n").as_bytes());
        let connect = p.line();
        assert!(connect.starts_with("CONNECT {"), "{connect}");
        let sub = p.line();
        p.inbox = sub
            .split(' ')
            .nth(1)
            .and_then(|s| s.strip_suffix(".*"))
            .expect("SUB <inbox>.*")
            .to_string();
        assert_eq!(p.line(), "PING");
        if let Some(err) = refuse {
            p.send(format!("-ERR '{err}'\r\n").as_bytes());
            return;
        }
        p.send(b"PONG\r\n");
        script(&mut p);
    });
    (addr, h)
}

const INFO: &str = r#"{"server_id":"FAKE","server_name":"fake","max_payload":1000,"headers":true}"#;

fn connect(addr: &str) -> Conn {
    let mut o = Options::new(&[addr]);
    o.timeout = Duration::from_secs(5);
    Conn::connect(&o).expect("connect")
}

#[test]
fn ping_mid_request_split_frames_and_info_update() {
    let (addr, h) = fake(INFO, None, |p| {
        let reply = p.read_pub();
        // A PING first (answered while the client waits), an INFO raising
        // max_payload, then the reply in three pieces.
        p.send(b"+OK\r\nPING\r\n");
        assert_eq!(p.line(), "PONG");
        p.send(b"INFO {\"max_payload\":5000,\"headers\":true}\r\n");
        let frame = format!("HMSG {reply} 1 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n");
        let (a, b) = frame.as_bytes().split_at(9);
        let (b, c) = b.split_at(25);
        for part in [a, b, c] {
            p.send(part);
            thread::sleep(Duration::from_millis(20));
        }
    });
    let mut c = connect(&addr);
    assert_eq!((c.server_name(), c.max_payload()), ("fake", 1000));
    let m = c
        .request("svc", &[], b"q", Duration::from_secs(5))
        .expect("reply");
    assert_eq!(m.payload, b"hello");
    assert_eq!(m.header("a"), Some("b"));
    assert_eq!(c.max_payload(), 5000);
    h.join().expect("fake server");
}

#[test]
fn a_timeout_mid_frame_loses_nothing() {
    let (addr, h) = fake(INFO, None, |p| {
        let reply = p.read_pub();
        p.send(format!("MSG {reply} 1 5\r\nhe").as_bytes());
        // The client times out on the half frame and comes back.
        assert_eq!(p.line(), "PING");
        p.send(b"llo\r\nPONG\r\n");
    });
    let mut c = connect(&addr);
    let reply = c.new_reply();
    c.publish("svc", Some(&reply), &[], b"q").expect("publish");
    let soon = Instant::now() + Duration::from_millis(200);
    assert_eq!(c.next_reply(soon).expect("no error"), None);
    // A ping makes the server send the rest; the reply is read whole.
    c.wbuf.extend_from_slice(b"PING\r\n");
    let m = c
        .next_reply(Instant::now() + Duration::from_secs(5))
        .expect("ok")
        .expect("the reply");
    assert_eq!(
        (m.subject.as_str(), m.payload.as_slice()),
        (reply.as_str(), &b"hello"[..])
    );
    h.join().expect("fake server");
}

#[test]
fn a_503_status_is_no_responders() {
    let (addr, h) = fake(INFO, None, |p| {
        let reply = p.read_pub();
        p.send(format!("HMSG {reply} 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n").as_bytes());
    });
    let mut c = connect(&addr);
    let e = c
        .request("svc", &[], b"q", Duration::from_secs(5))
        .expect_err("503");
    assert!(matches!(e, NatsError::NoResponders { .. }), "{e}");
    h.join().expect("fake server");
}

#[test]
fn garbage_and_oversized_lengths_break_the_connection_cleanly() {
    for bad in [
        "WHAT IS THIS\r\n",
        "MSG x 1 999999999999\r\n",
        "MSG x 1 3\r\nabcXY",
    ] {
        let (addr, h) = fake(INFO, None, move |p| {
            p.read_pub();
            p.send(bad.as_bytes());
        });
        let mut c = connect(&addr);
        let e = c
            .request("svc", &[], b"q", Duration::from_secs(5))
            .expect_err(bad);
        assert!(matches!(e, NatsError::Protocol { .. }), "{bad:?}: {e}");
        assert!(!c.is_connected());
        let e = c
            .request("svc", &[], b"q", Duration::from_secs(1))
            .expect_err("dead");
        assert!(matches!(e, NatsError::Disconnected { .. }), "{e}");
        h.join().expect("fake server");
    }
}

#[test]
fn refusal_and_close() {
    let (addr, h) = fake(INFO, Some("Authorization Violation"), |_| {});
    let mut o = Options::new(&[&addr]);
    o.timeout = Duration::from_secs(5);
    let e = Conn::connect(&o).expect_err("refused");
    assert!(
        matches!(e, NatsError::Auth { .. }) && !e.is_retryable(),
        "{e}"
    );
    h.join().expect("fake server");

    let (addr, h) = fake(INFO, None, |p| {
        p.read_pub();
    });
    let mut c = connect(&addr);
    let e = c
        .request("svc", &[], b"q", Duration::from_secs(5))
        .expect_err("closed");
    assert!(
        matches!(e, NatsError::Disconnected { .. }) && e.is_retryable(),
        "{e}"
    );
    h.join().expect("fake server");
}

#[test]
fn too_big_and_bad_arguments_send_nothing() {
    let (addr, h) = fake(INFO, None, |p| {
        // Only the one good request arrives.
        let reply = p.read_pub();
        p.send(format!("MSG {reply} 1 2\r\nok\r\n").as_bytes());
    });
    let mut c = connect(&addr);
    let e = c
        .publish("svc", None, &[], &[0u8; 1001])
        .expect_err("too big");
    assert!(
        matches!(
            e,
            NatsError::TooBig {
                size: 1001,
                max: 1000,
                ..
            }
        ),
        "{e}"
    );
    let e = c
        .publish("svc", None, &[("bad name", "v")], b"x")
        .expect_err("header");
    assert!(matches!(e, NatsError::BadArgument(_)), "{e}");
    assert_eq!(c.buffered(), 0);
    let m = c
        .request("svc", &[], b"q", Duration::from_secs(5))
        .expect("reply");
    assert_eq!(m.payload, b"ok");
    h.join().expect("fake server");
}
