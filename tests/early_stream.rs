//! Early streams (semi-sync): a master sends a batch to its slave while it
//! is still fsyncing it, and `DUR` frames say how far its log is durable.
//! The slave acknowledges what it has durably at once but shows its
//! readers nothing above the master's durable point, so a record the
//! master loses (its machine crashed before the fsync) is never seen on the
//! slave: it is moved aside when the master says the slave diverged.
//! Played against the real slave by a scripted master on an ephemeral port.

mod common;

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};

use common::repl::{accept_one, diverged, last_id, messages, poll, read_line, start_slave};
use common::{Opts, Server, tempdir};
use smss::storage::record::{self, Kind, Record};

/// One session of the scripted master with the slave.
struct Session {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Session {
    fn accept(l: &TcpListener) -> (Session, String) {
        let conn = accept_one(l);
        let w = conn.try_clone().expect("clone");
        let mut s = Session {
            w,
            r: BufReader::new(conn),
        };
        let repl = s.line();
        (s, repl)
    }

    fn line(&mut self) -> String {
        read_line(&mut self.r)
    }

    fn send(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send");
    }

    fn recs(&mut self, recs: &[u8], count: usize) {
        self.send(&format!("RECS {count} {}", recs.len()));
        self.w.write_all(recs).expect("send");
        self.w.write_all(b"\r\n").expect("send");
    }

    /// Reads the slave's ACKs until one covers `id`.
    fn acked(&mut self, id: u64) {
        for _ in 0..100 {
            let line = self.line();
            let n: u64 = line
                .strip_prefix("ACK ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not an ACK: {line:?}"));
            if n >= id {
                return;
            }
        }
        panic!("no ACK of {id}");
    }
}

fn rec(out: &mut Vec<u8>, event_id: u64, kind: Kind, body: &[u8]) {
    record::encode(
        out,
        &Record {
            event_id,
            timestamp_ms: 1_700_000_000_000 + event_id,
            kind,
            flags: 0,
            topic: "t",
            headers: b"",
            body,
        },
    );
}

fn create() -> Vec<u8> {
    let mut out = Vec::new();
    rec(&mut out, 1, Kind::Create, &0u64.to_le_bytes());
    out
}

fn message(id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rec(&mut out, id, Kind::Pub, body);
    out
}

/// A slave on a fresh directory following a scripted master: the
/// master's listener, the slave and a client of it.
fn scripted_slave() -> (tempfile::TempDir, TcpListener, Server, smss::client::Client) {
    let sd = tempdir();
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = fake.local_addr().expect("addr").to_string();
    let slave = start_slave(sd.path(), &Opts::new(), &addr);
    let c = slave.client();
    (sd, fake, slave, c)
}

/// Polls the slave's STATS until its last event id is `id`.
fn shows(c: &mut smss::client::Client, id: u64) {
    poll("the slave showing up to its id", || {
        let have = last_id(c);
        if have == id { Ok(()) } else { Err(have) }
    });
}

fn payloads(c: &mut smss::client::Client) -> Vec<(u64, Vec<u8>)> {
    messages(c, "t").into_iter().map(|m| (m.0, m.3)).collect()
}

#[test]
fn a_slave_shows_only_what_its_master_has_durably_and_moves_a_lost_record_aside() {
    let (sd, fake, _slave, mut c) = scripted_slave();

    // Session 1: a full sync, then messages ahead of the durable point.
    let (mut m, repl) = Session::accept(&fake);
    assert!(
        repl.starts_with("REPL 0 ") && repl.contains(" early=1"),
        "a slave asks for an early stream: {repl}"
    );
    m.send("OK 00000000000000ab 0 full early");
    m.recs(&create(), 1);
    m.send("SYNCED 1");
    m.acked(1);
    m.send("HB 1 1700000000000");
    m.acked(1);
    assert!(
        c.info("t").is_err(),
        "the CREATE is shown only once durable"
    );
    m.send("DUR 1");
    poll("the CREATE shown", || {
        c.info("t").map_err(|e| e.to_string())
    });

    m.recs(&message(2, b"a"), 1);
    m.acked(2);
    m.send("DUR 2");
    shows(&mut c, 2);
    // Message 3 is durable on the slave (acknowledged) but not yet on the
    // master: a heartbeat answered after it proves the slave applied it.
    m.recs(&message(3, b"b"), 1);
    m.acked(3);
    m.send("HB 3 1700000000000");
    m.acked(3);
    assert_eq!(
        last_id(&mut c),
        2,
        "nothing above the master's durable point"
    );
    assert_eq!(payloads(&mut c), [(2, b"a".to_vec())]);

    // The master's machine crashed before message 3 was durable there: it
    // comes back without it. The slave resumes after what it received...
    drop(m);
    let (mut m, repl) = Session::accept(&fake);
    assert!(
        repl.starts_with("REPL 3 history=00000000000000ab "),
        "the slave resumes after its last record, shown or not: {repl}"
    );
    // ...and is told it holds a record this master does not have.
    m.send("OK 00000000000000ab 0 diverged 2");
    drop(m);

    // Session 3: a full resync; the master's own message 3 is different.
    let (mut m, repl) = Session::accept(&fake);
    assert!(repl.contains(" early=1"), "{repl}");
    m.send("OK 00000000000000ab 0 full early");
    let mut state = create();
    state.extend_from_slice(&message(2, b"a"));
    m.recs(&state, 2);
    m.send("SYNCED 2");
    m.acked(2);
    m.recs(&message(3, b"c"), 1);
    m.send("DUR 3");
    m.acked(3);
    shows(&mut c, 3);
    assert_eq!(
        payloads(&mut c),
        [(2, b"a".to_vec()), (3, b"c".to_vec())],
        "the lost record was never shown"
    );
    assert_eq!(
        diverged(sd.path()).get(&3).map(Vec::as_slice),
        Some(&b"b"[..]),
        "the lost record is kept aside"
    );
}

#[test]
fn a_master_without_early_streams_is_followed_as_before() {
    let (_sd, fake, _slave, mut c) = scripted_slave();
    // A master from before early streams refuses the option by count.
    let (mut m, repl) = Session::accept(&fake);
    assert!(repl.ends_with(" early=1"), "{repl}");
    m.send(
        "ERR BADREQ too many arguments for REPL (at most 6): usage: REPL <after_event_id> \
         [history=<hex>] [epoch=<n>] [empty=0|1] [node=<hex>] [format=<n>]",
    );
    let again = m.line();
    assert!(
        again.contains(" node=") && again.contains(" format=") && !again.contains("early"),
        "asked again without early=: {again}"
    );
    m.send("OK 00000000000000ab 0 full");
    m.recs(&create(), 1);
    m.send("SYNCED 1");
    m.acked(1);
    m.recs(&message(2, b"a"), 1);
    m.acked(2);
    // Its records are durable when sent: shown at once, no DUR needed.
    shows(&mut c, 2);
}
