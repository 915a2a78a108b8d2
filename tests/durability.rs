//! Durability: restarts, torn tails, corruption, shutdown, kill -9 after a
//! delete. Each test runs the real binary on a temp data dir and restarts
//! it there. Kill -9 under load is tests/crash.rs, the crash harness.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{Opts, Server, drain, segments, stat};
use smss::storage::record::{self, ScanEnd};

/// Where the records of a segment end (the file may carry zero fill after).
fn data_end(seg: &Path) -> u64 {
    let f = std::fs::File::open(seg).expect("open segment");
    match record::scan(std::io::BufReader::new(f), |_, _| {}).expect("scan") {
        ScanEnd::Clean { offset } => offset,
        other => panic!("segment does not end cleanly: {other:?}"),
    }
}

#[test]
fn restart_keeps_topics_messages_and_the_id_sequence() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("a", 0).expect("create a");
    c.create("b", 60_000).expect("create b");
    let mut sent = Vec::new();
    for i in 0..50u32 {
        let payload = format!("message {i}\r\n\0 end").into_bytes();
        let id = c.publish("a", &payload).expect("pub");
        sent.push((id, payload));
    }
    let (f, l) = c.mpublish("b", &[b"x", b"y"]).expect("mpub");
    let info_b = c.info("b").expect("info b");
    let last = stat(&mut c, "last_event_id");
    assert_eq!(l, last);
    drop(c);
    assert!(s.sigterm().success(), "SIGTERM must exit 0");

    let s = Server::start(dir.path());
    let mut c = s.client();
    let names: Vec<String> = c
        .list()
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    assert_eq!(c.info("b").expect("info"), info_b, "INFO survives restart");
    assert_eq!(stat(&mut c, "last_event_id"), last);
    assert_eq!(drain(&s, "a"), sent);
    assert_eq!(drain(&s, "b"), vec![(f, b"x".to_vec()), (l, b"y".to_vec())]);
    let next = c.publish("a", b"after").expect("pub after restart");
    assert_eq!(next, last + 1, "ids continue after restart without reuse");
}

#[test]
fn garbage_after_the_last_record_is_cut_at_restart() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let ids: Vec<u64> = (0..10)
        .map(|i| c.publish("t", format!("m{i}").as_bytes()).expect("pub"))
        .collect();
    drop(c);
    s.kill9();
    let seg = segments(dir.path()).pop().expect("a segment");
    let good_len = data_end(&seg);
    // A torn write right after the last record (over the zero fill): the
    // start of a record header, then junk.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.write_all_at(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3], good_len)
        .expect("write garbage");
    drop(f);

    let s = Server::start(dir.path());
    assert_eq!(
        std::fs::metadata(&seg).expect("stat").len(),
        good_len,
        "tail cut"
    );
    assert!(s.log_text().contains("torn tail"), "the cut is logged");
    let got: Vec<u64> = drain(&s, "t").into_iter().map(|x| x.0).collect();
    assert_eq!(got, ids);
    let next = s.client().publish("t", b"after").expect("pub");
    assert!(next > ids[9], "ids keep increasing after the cut");
    drop(s);
    // And the repaired log restarts cleanly again.
    let s = Server::start(dir.path());
    assert_eq!(drain(&s, "t").len(), 11);
}

#[test]
fn corruption_in_the_middle_refuses_to_start_and_names_file_and_offset() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    for i in 0..20 {
        c.publish("t", format!("payload number {i}").as_bytes())
            .expect("pub");
    }
    drop(c);
    s.kill9(); // no shutdown checkpoint: recovery re-reads these records
    let seg = segments(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let mid = data_end(&seg) as usize / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");

    let (status, stderr) = Server::start_failing(dir.path());
    assert!(!status.success(), "must refuse to start");
    let name = seg.file_name().expect("name").to_string_lossy().to_string();
    assert!(stderr.contains(&name), "names the file: {stderr}");
    assert!(stderr.contains("offset"), "names the offset: {stderr}");
    // Nothing was truncated: the damage stays for a human to look at.
    assert_eq!(std::fs::read(&seg).expect("read").len(), bytes.len());
}

#[test]
fn a_torn_mpub_batch_is_dropped_whole() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let before = c.publish("t", b"single").expect("pub");
    let payloads: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i; 100]).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let (first, last) = c.mpublish("t", &refs).expect("mpub");
    assert_eq!(last - first, 4);
    drop(c);
    s.kill9();
    // Cut the file inside the batch's third record, as a crash mid-write would.
    let seg = segments(dir.path()).pop().expect("segment");
    let len = data_end(&seg);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(len - 2 * 140 - 50).expect("truncate");
    drop(f);

    let s = Server::start(dir.path());
    let got: Vec<u64> = drain(&s, "t").into_iter().map(|x| x.0).collect();
    assert_eq!(got, vec![before], "no part of the torn batch survives");
    assert_eq!(s.client().info("t").expect("info").messages, 1);
}

#[test]
fn sigterm_exits_zero_after_a_final_checkpoint() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    for i in 0..100 {
        c.publish("t", format!("{i}").as_bytes()).expect("pub");
    }
    drop(c);
    let status = s.sigterm();
    assert!(status.success(), "exit status {status:?}");
    let s = Server::start(dir.path());
    // The shutdown checkpoint covered everything: nothing to replay.
    assert!(
        s.log_text().contains("replayed 0 records"),
        "log: {}",
        s.log_text()
    );
    assert_eq!(drain(&s, "t").len(), 100);
}

#[test]
fn kill9_after_deleting_a_topic_the_checkpoint_names_restarts() {
    // Found by tests/crash.rs: the checkpoint names t's index file, DELETE
    // removed the file, and recovery refused to start without it.
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create t");
    c.create("keep", 0).expect("create keep");
    c.publish("t", b"gone").expect("pub t");
    let kept = c.publish("keep", b"kept").expect("pub keep");
    drop(c);
    assert!(s.sigterm().success(), "a checkpoint naming t");
    let s = Server::start(dir.path());
    s.client().delete("t").expect("delete");
    s.kill9();
    let s = Server::start(dir.path());
    let mut c = s.client();
    assert_eq!(
        c.info("t").map_err(|e| e.code().map(str::to_string)).err(),
        Some(Some("NOTOPIC".into()))
    );
    assert_eq!(drain(&s, "keep"), vec![(kept, b"kept".to_vec())]);
    drop(c);
    s.kill9();
    let s = Server::start(dir.path());
    assert!(s.client().info("t").is_err(), "t stays deleted");
}

#[test]
fn a_missing_index_of_a_live_topic_stops_the_start_naming_the_file() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    let id = c.create("t", 0).expect("create t");
    c.publish("t", b"x").expect("pub");
    drop(c);
    assert!(s.sigterm().success());
    let index = dir
        .path()
        .join("data")
        .join("index")
        .join(format!("t@{id}.idx"));
    std::fs::remove_file(&index).expect("remove the index by hand");
    let (status, stderr) = Server::start_failing(dir.path());
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("t@{id}.idx")),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("missing"), "{stderr}");
}

#[test]
fn a_second_server_cannot_use_the_same_data_dir() {
    let dir = common::tempdir();
    let _s = Server::start(dir.path());
    let (status, stderr) = Server::start_failing(dir.path());
    assert!(!status.success());
    assert!(stderr.contains("in use"), "stderr: {stderr}");
}

#[test]
fn deletes_and_recreates_survive_restart_across_segments() {
    let dir = common::tempdir();
    let opts = Opts::new().store("maxLogSize: 4096");
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("create");
    for i in 0..100 {
        c.publish("t", format!("old {i} {}", "p".repeat(90)).as_bytes())
            .expect("pub");
    }
    c.delete("t").expect("delete");
    c.create("t", 0).expect("recreate");
    let mut want = Vec::new();
    for i in 0..100 {
        let p = format!("new {i} {}", "q".repeat(90)).into_bytes();
        want.push((c.publish("t", &p).expect("pub"), p));
    }
    drop(c);
    assert!(segments(dir.path()).len() > 2, "the log rolled");
    s.kill9();
    let s = Server::start_with(dir.path(), &opts);
    assert_eq!(drain(&s, "t"), want);
    drop(s);
    let s = Server::start_with(dir.path(), &opts);
    assert_eq!(drain(&s, "t"), want, "and again after a clean replay");
}

#[test]
fn ids_are_not_reused_when_unsynced_records_are_lost() {
    // fsync never: a crash may lose records a subscriber already saw. Lose
    // them by hand (truncate the log), and the next id must still be new.
    let dir = common::tempdir();
    let opts = Opts::new().store("fsync: never");
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let seg = segments(dir.path()).pop().expect("segment");
    let keep = data_end(&seg);
    let mut seen = 0;
    for i in 0..20 {
        seen = c.publish("t", format!("{i}").as_bytes()).expect("pub");
    }
    drop(c);
    s.kill9();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(keep).expect("lose the unsynced records");
    drop(f);
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    assert_eq!(
        c.info("t").expect("info").messages,
        0,
        "the records are gone"
    );
    let next = c.publish("t", b"new").expect("pub");
    assert!(
        next > seen,
        "id {next} must be above every id handed out ({seen})"
    );
    drop(c);
    // A clean shutdown shrinks the lease: no gap after a clean restart.
    assert!(s.sigterm().success());
    let s = Server::start_with(dir.path(), &opts);
    assert_eq!(s.client().publish("t", b"x").expect("pub"), next + 1);
}
