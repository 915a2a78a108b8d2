//! Test helpers on a server's data directory: its segments and records,
//! and reading a topic back.

use std::path::{Path, PathBuf};

use smss::client::SubOptions;
use smss::storage::record::{self, ScanEnd};

use super::Server;

/// The segment files of a test server's data directory, in log order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("data/log"))
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// Each record of a segment: (offset, event id, length), and where they
/// end; the segment must end cleanly there.
pub fn records(seg: &Path) -> (Vec<(u64, u64, u64)>, u64) {
    let f = std::fs::File::open(seg).expect("open segment");
    let mut recs = Vec::new();
    let mut last_end = 0;
    let end = record::scan(std::io::BufReader::new(f), |off, r| {
        let len = record::encoded_len(r.topic.len(), r.headers.len(), r.body.len()) as u64;
        recs.push((off, r.event_id, len));
        last_end = off + len;
    })
    .expect("scan");
    match end {
        ScanEnd::Clean { offset } => assert_eq!(offset, last_end),
        other => panic!("segment does not end cleanly: {other:?}"),
    }
    (recs, last_end)
}

/// Reads every message of `topic` from the start: (event id, payload).
pub fn drain(s: &Server, topic: &str) -> Vec<(u64, Vec<u8>)> {
    let mut c = s.client();
    let total = c.info(topic).expect("info").messages;
    if total == 0 {
        return Vec::new();
    }
    let opts = SubOptions {
        batch: Some(500),
        ..SubOptions::default()
    };
    c.subscribe(topic, "0", &opts).expect("sub");
    let got = super::collect(&mut c, total as usize);
    c.stop().expect("stop");
    got
}
