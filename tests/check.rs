//! `smss --check` and `smss --repair` on real data directories: what each
//! finding names, that check writes nothing and refuses a running server's
//! directory, and that repair cuts back to the last good record, names the
//! lost ids, and leaves a directory the server starts on and checks clean.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Opts, Server, records, segments};

/// Every message id of `topic`, from the start.
fn message_ids(s: &Server, topic: &str) -> Vec<u64> {
    common::drain(s, topic).into_iter().map(|m| m.0).collect()
}

/// Runs `smss <flag> --config <dir>/config.yaml`, bounded in time.
fn offline(dir: &Path, flag: &str) -> (bool, String, String) {
    let mut child = Command::new(common::bin())
        .arg(flag)
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn smss");
    let status = common::wait_timeout(&mut child, common::WAIT).expect("smss should finish");
    let Output { stdout, stderr, .. } = child.wait_with_output().expect("output");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                m.insert(p.clone(), std::fs::read(&p).expect("read"));
            }
        }
    }
    m
}

fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    f.write_all_at(&[b[0] ^ 0x20], at).expect("write");
}

/// A stopped server's directory with topic `t` over several 4 KiB segments.
fn rolled_dir(n: usize) -> (tempfile::TempDir, Opts, Vec<u64>) {
    let dir = common::tempdir();
    let opts = Opts::new().store("maxLogSize: 4096");
    let s = Server::start_with(dir.path(), &opts);
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let ids = (0..n)
        .map(|i| {
            c.publish("t", format!("{i} {}", "p".repeat(100)).as_bytes())
                .expect("pub")
        })
        .collect();
    drop(c);
    assert!(s.sigterm().success());
    assert!(segments(dir.path()).len() >= 3, "the log rolled");
    (dir, opts, ids)
}

#[test]
fn check_passes_a_clean_directory_and_refuses_a_running_servers() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    c.publish("t", b"one").expect("pub");
    c.mpublish("t", &[b"two", b"three"]).expect("mpub");
    drop(c);
    let (ok, out, err) = offline(dir.path(), "--check");
    assert!(!ok, "a running server's directory is refused: {out}");
    assert!(err.contains("in use by another smss process"), "{err}");
    assert!(s.sigterm().success());

    let before = snapshot(dir.path());
    let (ok, out, err) = offline(dir.path(), "--check");
    assert!(ok, "clean: {out} {err}");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("check: clean: 1 segments"), "{out}");
    assert!(last.contains("4 records, last event id 4"), "{out}");
    assert!(last.contains("1 index files with 3 entries"), "{out}");
    assert_eq!(snapshot(dir.path()), before, "check writes nothing");

    // Deletes, re-creates, a pending delayed message, and a crash (index
    // entries past the checkpoint): still nothing to report.
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("d", 0).expect("create d");
    c.publish("d", b"old").expect("pub");
    c.delete("d").expect("delete d");
    c.create("d", 0).expect("re-create d");
    c.publish("d", b"new").expect("pub");
    c.dpublish("t", 600_000, b"later").expect("dpub");
    drop(c);
    assert!(s.sigterm().success());
    let (ok, out, _) = offline(dir.path(), "--check");
    assert!(ok, "with deletes and a delayed message: {out}");
    let s = Server::start(dir.path());
    s.client().publish("t", b"unsynced index").expect("pub");
    s.kill9();
    let (ok, out, _) = offline(dir.path(), "--check");
    assert!(ok, "after kill -9: {out}");
}

#[test]
fn check_names_a_flipped_byte_by_file_offset_event_and_topic() {
    let (dir, _opts, ids) = rolled_dir(80);
    let seg = &segments(dir.path())[0];
    let (recs, _) = records(seg);
    let (off, id, len) = recs[10];
    flip(seg, off + len - 1);
    let before = snapshot(dir.path());

    let (ok, out, _) = offline(dir.path(), "--check");
    assert!(!ok, "damage exits non-zero: {out}");
    let want = format!(
        "{} offset {off} event {id} topic t: CRC mismatch",
        seg.display()
    );
    assert!(out.contains(&want), "the log finding: {want}\n{out}");
    let entry = ids.iter().position(|&i| i == id).expect("a message") * 20;
    let idx = dir.path().join("data/index/t@1.idx");
    let want = format!(
        "{} offset {entry} event {id} topic t: entry points at",
        idx.display()
    );
    assert!(out.contains(&want), "the index finding: {want}\n{out}");
    let lost = format!("lose event ids {id}-{} ", ids[ids.len() - 1]);
    assert!(
        out.contains(&lost),
        "says what a repair loses: {lost}\n{out}"
    );
    assert_eq!(snapshot(dir.path()), before, "check writes nothing");
}

#[test]
fn check_finds_an_index_entry_that_names_the_wrong_record() {
    let (dir, _opts, ids) = rolled_dir(80);
    let idx = dir.path().join("data/index/t@1.idx");
    // Entry 5 now claims the id of entry 6: same position, wrong id.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .expect("open index");
    f.write_all_at(&(ids[5] + 1).to_le_bytes(), 5 * 20)
        .expect("write");
    drop(f);
    let (ok, out, _) = offline(dir.path(), "--check");
    assert!(!ok, "{out}");
    let want = format!(
        "{} offset 100 event {} topic t: entry points at",
        idx.display(),
        ids[5] + 1
    );
    assert!(out.contains(&want), "{want}\n{out}");
    assert!(
        out.contains(&format!("the record there has event id {}", ids[5])),
        "{out}"
    );
}

#[test]
fn repair_of_a_shortened_newest_segment_loses_only_the_cut_record() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("create");
    let ids: Vec<u64> = (0..10)
        .map(|i| c.publish("t", format!("m{i}").as_bytes()).expect("pub"))
        .collect();
    drop(c);
    assert!(s.sigterm().success());
    let seg = segments(dir.path()).pop().expect("segment");
    let (recs, end) = records(&seg);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(end - 3).expect("shorten");
    drop(f);
    let (status, _) = Server::start_failing(dir.path());
    assert!(!status.success(), "the server refuses this directory");

    let (ok, out, err) = offline(dir.path(), "--repair");
    assert!(ok, "{out}\n{err}");
    let last = ids[9];
    assert!(
        out.contains(&format!("repair: lost event ids {last} (1 in all)")),
        "{out}"
    );
    let cut_at = recs.last().expect("records").0;
    assert!(out.contains(&format!("at offset {cut_at}")), "{out}");
    assert!(
        out.contains("repair: done: the data directory checks clean"),
        "{out}"
    );

    let s = Server::start(dir.path());
    assert_eq!(message_ids(&s, "t"), ids[..9].to_vec());
    let next = s.client().publish("t", b"after").expect("pub");
    assert!(
        next > last,
        "the lost id {last} is not handed out again ({next})"
    );
    assert!(s.sigterm().success());
    let (ok, out, _) = offline(dir.path(), "--check");
    assert!(ok, "{out}");
}

#[test]
fn repair_of_damage_in_a_sealed_segment_names_every_lost_id() {
    let (dir, opts, ids) = rolled_dir(80);
    let segs = segments(dir.path());
    let (recs, _) = records(&segs[1]);
    let (off, id, _) = recs[3];
    flip(&segs[1], off + 10); // inside the event id field
    let (ok, out, err) = offline(dir.path(), "--repair");
    assert!(ok, "{out}\n{err}");
    let last = ids[ids.len() - 1];
    let lost = (last - id + 1) as usize;
    assert!(
        out.contains(&format!(
            "repair: lost event ids {id}-{last} ({lost} in all)"
        )),
        "{out}"
    );
    // What was cut off is kept aside, not deleted.
    let stash = std::fs::read_dir(dir.path().join("data"))
        .expect("data dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("damaged-"))
        })
        .expect("a damaged-* directory");
    for s in &segs[2..] {
        assert!(
            stash.join(s.file_name().expect("name")).exists(),
            "{s:?} kept"
        );
    }
    let s = Server::start_with(dir.path(), &opts);
    let kept: Vec<u64> = ids.iter().copied().filter(|&i| i < id).collect();
    assert_eq!(message_ids(&s, "t"), kept);
    let next = s.client().publish("t", b"after").expect("pub");
    assert!(next > last);
}

#[test]
fn repair_rebuilds_a_damaged_checkpoint_and_a_missing_index() {
    let (dir, opts, ids) = rolled_dir(80);
    std::fs::write(dir.path().join("data/checkpoint"), "garbage\n").expect("write");
    std::fs::remove_file(dir.path().join("data/index/t@1.idx")).expect("remove");
    let (status, stderr) = Server::start_failing(dir.path());
    assert!(!status.success(), "{stderr}");

    let (ok, out, err) = offline(dir.path(), "--check");
    assert!(!ok);
    assert!(
        out.contains("data/checkpoint offset 0 event - topic -: corrupt"),
        "{out}{err}"
    );
    let (ok, out, err) = offline(dir.path(), "--repair");
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("repair: lost no event ids"), "{out}");
    let s = Server::start_with(dir.path(), &opts);
    assert_eq!(message_ids(&s, "t"), ids);
}

#[test]
fn repair_keeps_topics_created_before_the_oldest_segment() {
    // As retention does: the oldest segments are gone, and with them the
    // CREATE record of t; repair takes t from the checkpoint.
    let (dir, opts, ids) = rolled_dir(100);
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[0]).expect("retention");
    let (recs1, _) = records(&segs[1]);
    let first_kept = recs1[0].1;
    let newest = segs.last().expect("newest");
    let (recs, end) = records(newest);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .expect("open");
    f.set_len(end - 1).expect("shorten");
    drop(f);
    let (ok, out, err) = offline(dir.path(), "--repair");
    assert!(ok, "{out}\n{err}");
    let last = recs.last().expect("records").1;
    assert!(
        out.contains(&format!("repair: lost event ids {last} (1 in all)")),
        "{out}"
    );
    let s = Server::start_with(dir.path(), &opts);
    let want: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&i| i >= first_kept && i < last)
        .collect();
    assert_eq!(message_ids(&s, "t"), want);
}

#[test]
fn a_garbage_checkpoint_stops_the_start_naming_it_and_repair_rebuilds_it() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(c.publish("t", format!("m{i}").as_bytes()).expect("PUB"));
    }
    drop(c);
    assert!(s.sigterm().success());
    let cp = dir.path().join("data/checkpoint");
    std::fs::write(&cp, [0xffu8, 0xfe, 0x00, 0x80, b'\n']).expect("damage the checkpoint");

    let (status, stderr) = Server::start_failing(dir.path());
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("data/checkpoint"),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("smss --repair"),
        "says what to do: {stderr}"
    );
    let (ok, out, err) = offline(dir.path(), "--repair");
    assert!(ok, "{out}\n{err}");
    let s = Server::start(dir.path());
    assert_eq!(message_ids(&s, "t"), ids, "the log was whole: nothing lost");
}
