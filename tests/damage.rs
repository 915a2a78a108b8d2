//! Damage to the data directory: found at start and named exactly (file and
//! offset), or, for a damaged record the start does not re-read, reported to
//! the reader that reaches it; zero fill is not called torn; a garbage tail
//! is cut and a valid record after garbage is corruption.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{Opts, Server, records, segments};
use smss::client::{SubEvent, SubOptions};
use smss::storage::record::{self, Kind, Record};

fn name(p: &Path) -> String {
    p.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// Reproducible pseudo-random bytes (xorshift64*), none of them zero so
/// the garbage's length is exactly what is cut.
fn garbage(n: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let x = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        v.extend(x.iter().map(|&b| b | 1));
    }
    v.truncate(n);
    v
}

fn write_at(path: &Path, bytes: &[u8], at: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    f.write_all_at(bytes, at).expect("write");
}

fn set_len(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    f.set_len(len).expect("truncate");
}

/// The last "recovered …" line of the server's log.
fn recovery_line(s: &Server) -> String {
    s.log_text()
        .lines()
        .rev()
        .find(|l| l.contains("recovered "))
        .unwrap_or_else(|| panic!("no recovery line in the log: {}", s.log_text()))
        .to_string()
}

#[test]
fn a_newest_segment_shorter_than_the_checkpoint_stops_the_start() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    for i in 0..10 {
        c.publish("t", format!("message {i}").as_bytes())
            .expect("pub");
    }
    drop(c);
    assert!(s.sigterm().success());
    let seg = segments(dir.path()).pop().expect("a segment");
    let (_, end) = records(&seg);
    set_len(&seg, end - 3);

    let (status, stderr) = Server::start_failing(dir.path());
    assert!(!status.success(), "must refuse to start: {stderr}");
    assert!(stderr.contains(&name(&seg)), "names the file: {stderr}");
    assert!(
        stderr.contains(&format!("at offset {}", end - 3)),
        "names where the file ends: {stderr}"
    );
    assert!(
        stderr.contains(&format!("up to position {end}")),
        "names what the checkpoint covers: {stderr}"
    );
    assert_eq!(
        std::fs::metadata(&seg).expect("stat").len(),
        end - 3,
        "nothing was written after the damage"
    );
}

#[test]
fn a_missing_segment_in_the_middle_stops_the_start() {
    let dir = common::tempdir();
    let opts = Opts::new().store("maxLogSize: 4096");
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("create");
    for i in 0..120 {
        c.publish("t", format!("{i} {}", "p".repeat(100)).as_bytes())
            .expect("pub");
    }
    drop(c);
    assert!(s.sigterm().success());
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "the log rolled: {segs:?}");
    std::fs::remove_file(&segs[1]).expect("remove the middle segment");

    let (status, stderr) = Server::start_failing(dir.path());
    assert!(!status.success(), "must refuse to start: {stderr}");
    let before_len = std::fs::metadata(&segs[0]).expect("stat").len();
    assert!(
        stderr.contains(&format!("{} at offset {before_len}", name(&segs[0]))),
        "names the file before the hole and where it ends: {stderr}"
    );
    assert!(
        stderr.contains(&name(&segs[1])),
        "names the missing segment: {stderr}"
    );
}

#[test]
fn a_clean_restart_drops_zero_fill_without_calling_it_torn() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    c.publish("t", b"hello").expect("pub");
    drop(c);
    assert!(s.sigterm().success());
    let seg = segments(dir.path()).pop().expect("a segment");
    let on_disk = std::fs::metadata(&seg).expect("stat").len();
    let (_, end) = records(&seg);
    assert!(
        on_disk > end,
        "the clean stop left the preallocated zero fill"
    );

    let s = Server::start(dir.path());
    let line = recovery_line(&s);
    assert!(!line.contains("torn"), "zero fill is not torn: {line}");
    assert!(
        line.contains(&format!("dropped {} bytes of zero fill", on_disk - end)),
        "says what was dropped: {line}"
    );
    assert!(!s.log_text().contains("cutting torn tail"), "no warning");
}

#[test]
fn a_garbage_tail_is_cut_and_only_the_garbage_is_called_torn() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let ids: Vec<u64> = (0..5)
        .map(|i| c.publish("t", format!("m{i}").as_bytes()).expect("pub"))
        .collect();
    drop(c);
    s.kill9();
    let seg = segments(dir.path()).pop().expect("a segment");
    let (_, end) = records(&seg);
    let junk = garbage(1 << 20, 42);
    write_at(&seg, &junk, end);

    let s = Server::start(dir.path());
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), end, "cut");
    let line = recovery_line(&s);
    assert!(
        line.contains(&format!("cut {} torn bytes", junk.len())),
        "the garbage, not the zero fill after it, is torn: {line}"
    );
    assert!(s.log_text().contains("cutting torn tail"), "warned");
    let mut c = s.client();
    assert_eq!(c.info("t").expect("info").messages, ids.len() as u64);
    let next = c.publish("t", b"after").expect("pub");
    assert!(next > ids[4]);
}

#[test]
fn a_valid_record_after_garbage_is_corruption() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let last = c.publish("t", b"kept").expect("pub");
    drop(c);
    s.kill9();
    let seg = segments(dir.path()).pop().expect("a segment");
    let (_, end) = records(&seg);
    let mut tail = garbage(256 << 10, 7);
    let valid_at = end + tail.len() as u64;
    record::encode(
        &mut tail,
        &Record {
            event_id: last + 1,
            timestamp_ms: 1,
            kind: Kind::Pub,
            flags: 0,
            topic: "t",
            headers: b"",
            body: b"after the damage",
        },
    );
    tail.extend(garbage(1000, 8));
    write_at(&seg, &tail, end);

    let (status, stderr) = Server::start_failing(dir.path());
    assert!(!status.success(), "must refuse to start: {stderr}");
    assert!(stderr.contains(&name(&seg)), "names the file: {stderr}");
    assert!(
        stderr.contains(&format!("at offset {end}")),
        "names the bad record: {stderr}"
    );
    assert!(
        stderr.contains(&format!("a valid record follows at offset {valid_at}")),
        "names the valid record after it: {stderr}"
    );
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_to_its_reader_with_file_and_offset() {
    let dir = common::tempdir();
    let opts = Opts::new().store("maxLogSize: 4096");
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("create");
    for i in 0..80 {
        c.publish("t", format!("{i} {}", "p".repeat(100)).as_bytes())
            .expect("pub");
    }
    drop(c);
    assert!(s.sigterm().success());
    let segs = segments(dir.path());
    assert!(segs.len() >= 2, "the log rolled");
    let sealed = &segs[0];
    let (recs, _) = records(sealed);
    let (off, id, len) = recs[recs.len() / 2];
    write_at(sealed, b"X", off + len - 2); // inside the payload

    // Start-up does not re-read records before the checkpoint.
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    let sub = SubOptions {
        batch: Some(1),
        ..SubOptions::default()
    };
    c.subscribe("t", "0", &sub).expect("sub");
    let mut got = Vec::new();
    let err = loop {
        assert!(got.len() <= 80, "the damaged record was never reached");
        match c.next_event() {
            Ok(SubEvent::Batch(ms)) => {
                got.extend(ms.into_iter().map(|m| m.event_id));
                c.ack().expect("ack");
            }
            Ok(SubEvent::Alive) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(!got.contains(&id), "the damaged record is never served");
    assert_eq!(got.last().copied(), Some(id - 1), "everything before it is");
    assert!(err.contains("INTERNAL"), "{err}");
    assert!(
        err.contains(&format!("event {id}")),
        "names the event: {err}"
    );
    assert!(err.contains(&name(sealed)), "names the file: {err}");
    assert!(
        err.contains(&format!("offset {off}")),
        "names the offset: {err}"
    );
    assert!(err.contains("CRC"), "says what is wrong: {err}");
}
