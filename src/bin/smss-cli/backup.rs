//! `smss-cli backup DIR`: a hot backup of a running server, over the
//! network, into a new data directory.
//!
//! It asks the server for its last event id, then follows it as an empty
//! slave would (`REPL 0 … empty=1`): the server sends the state its log
//! depends on (live topics, consumer groups, pending delayed messages,
//! epochs) and then its retained log, each record exactly as in its log,
//! checked here by CRC. The records go, in order, into one segment file of
//! DIR; once every record up to that last id is written the file is
//! fsynced and the library's offline check verifies the directory. So DIR
//! holds every message the server had acknowledged when the backup began
//! (and possibly a few more), and `smss --check` accepts it; a server
//! started on it replays the log once and builds its indexes and its
//! checkpoint, as after a crash before its first checkpoint. Nothing is
//! written on the server.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use smss::storage::record::{self, Decoded, FORMAT_VERSION};

use crate::args::Global;
use crate::error::{CliError, Result, usage};

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let what = what.into();
    move |source| CliError::Io { what, source }
}

fn proto(msg: impl Into<String>) -> CliError {
    CliError::Corrupt(msg.into())
}

/// Takes the backup into `dir` (a new or empty directory).
pub fn backup(g: &Global, dir: &Path, out: &mut dyn Write) -> Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(io(format!("reading {}", dir.display())))?
            .next()
            .is_some()
    {
        return Err(usage(format!(
            "backup: {} is not empty; give a new or empty directory",
            dir.display()
        )));
    }
    let log_dir = dir.join("log");
    std::fs::create_dir_all(&log_dir).map_err(io(format!("creating {}", log_dir.display())))?;

    // What the server had acknowledged when the backup began.
    let mut c = crate::commands::connect(g)?;
    let target: u64 = c
        .stats()?
        .into_iter()
        .find(|(k, _)| k == "last_event_id")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| proto("the server's STATS has no last_event_id"))?;
    drop(c);

    let seg_path = log_dir.join(format!("{:020}.log", 0));
    let mut seg = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&seg_path)
        .map_err(io(format!("creating {}", seg_path.display())))?;
    let (records, last) = stream(g, target, &mut seg)?;
    seg.sync_all()
        .map_err(io(format!("fsync {}", seg_path.display())))?;
    drop(seg);
    if let Ok(d) = File::open(&log_dir) {
        let _ = d.sync_all();
    }

    // The offline check, as `smss --check` would run it.
    let mut report = Vec::new();
    let clean = smss::storage::check::run(dir, &mut report)
        .map_err(|e| proto(format!("checking the backup: {e}")))?;
    if !clean {
        return Err(proto(format!(
            "the backup does not check clean:\n{}",
            String::from_utf8_lossy(&report)
        )));
    }
    writeln!(
        out,
        "backup: {records} records up to event id {last} (everything up to {target} the \
         server had when it began) in {}, checked clean",
        dir.display()
    )
    .map_err(crate::error::stdout_err)
}

/// Follows the server as an empty slave until every record up to `target`
/// is in `seg`. Returns how many records, and the last id written.
fn stream(g: &Global, target: u64, seg: &mut File) -> Result<(u64, u64)> {
    // The client's connection: AUTH, and TLS with --tls (the server serves
    // REPL on its TLS port too).
    let mut c = crate::commands::connect(g)?;
    c.send_raw(
        format!("REPL 0 history=0000000000000000 epoch=0 empty=1 format={FORMAT_VERSION}\r\n")
            .as_bytes(),
    )?;
    let reply = c.read_line()?;
    if !(reply.starts_with("OK ") && reply.ends_with(" full")) {
        return Err(proto(format!(
            "the server refused the backup's REPL: {reply}"
        )));
    }
    let (mut records, mut last) = (0u64, 0u64);
    // An empty server: nothing to wait for.
    while last < target {
        let l = c.read_line()?;
        let f: Vec<&str> = l.split(' ').collect();
        match f.as_slice() {
            ["RECS", _count, n, ..] => {
                let n: usize = n.parse().map_err(|_| proto(format!("bad frame {l:?}")))?;
                let buf = c.read_payload(n)?;
                let (k, id) = check_records(&buf, last)?;
                seg.write_all(&buf)
                    .map_err(io("writing the backup's log"))?;
                records += k;
                last = last.max(id);
                c.send_raw(format!("ACK {last}\r\n").as_bytes())?;
            }
            ["SYNCED", id] => {
                let id: u64 = id.parse().map_err(|_| proto(format!("bad frame {l:?}")))?;
                last = last.max(id);
                c.send_raw(format!("ACK {last}\r\n").as_bytes())?;
            }
            ["LEASE", _] => {}
            ["HB", _, _] => c.send_raw(format!("ACK {last}\r\n").as_bytes())?,
            _ => return Err(proto(format!("unexpected line from the server: {l:?}"))),
        }
    }
    Ok((records, last))
}

/// Every record of a RECS payload is whole, checks by CRC and comes after
/// `after` in id order. Returns how many there are and the last id.
fn check_records(buf: &[u8], after: u64) -> Result<(u64, u64)> {
    let (mut at, mut n, mut last) = (0, 0u64, after);
    while at < buf.len() {
        match record::decode(&buf[at..]) {
            Decoded::Record { rec, len } => {
                if rec.event_id <= last && last > 0 {
                    return Err(proto(format!(
                        "record {} arrived after {last}: not in id order",
                        rec.event_id
                    )));
                }
                last = rec.event_id;
                n += 1;
                at += len;
            }
            other => {
                return Err(proto(format!(
                    "a damaged record from the server: {other:?}"
                )));
            }
        }
    }
    Ok((n, last))
}
