//! `smss-cli dump`: the records of one segment file, offline, one line
//! each with a short preview of the body, then how the file ends.
//!
//! A file is taken for a segment by its content: it is empty, all zero fill
//! (a fresh active segment), or its first record decodes. Anything else is
//! refused before a line is printed, so `dump README.md` is an error rather
//! than `records=0 end=torn at 0`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};

use smss::storage::record::{self, Decoded, GroupOp, Kind, Record, ScanEnd};

use crate::error::{CliError, Result, stdout_err};

/// Printable ASCII as is (backslash doubled), everything else as `\xNN`.
fn escape(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
}

const PREVIEW_BYTES: usize = 64;

fn describe(offset: u64, r: &Record<'_>) -> String {
    let mut s = format!(
        "@{offset} id={} ts={} kind={} flags={} topic={} headers=\"",
        r.event_id,
        r.timestamp_ms,
        r.kind.name(),
        r.flags,
        r.topic
    );
    escape(r.headers, &mut s);
    s.push_str(&format!("\" len={}", r.body.len()));
    match (r.kind, r.life_ms(), r.delete_reason()) {
        (Kind::Create, Some(life), _) => s.push_str(&format!(" life_ms={life}")),
        (Kind::Delete, _, Some(reason)) => s.push_str(&format!(" reason={}", reason.as_str())),
        (Kind::Group, _, _) if r.group_op().is_some() => match r.group_op() {
            Some(GroupOp::Set {
                group,
                committed,
                failed_at,
                failures,
                alone,
            }) => s.push_str(&format!(
                " group={group} committed={committed} failed_at={failed_at} failures={failures} \
                 alone={}",
                u8::from(alone)
            )),
            Some(GroupOp::Remove { group }) => s.push_str(&format!(" group={group} removed")),
            None => {}
        },
        (Kind::Epoch, _, _) if r.epoch_fields().is_some() => {
            if let Some((epoch, prev_last_id, history)) = r.epoch_fields() {
                s.push_str(&format!(
                    " epoch={epoch} prev_last_id={prev_last_id} history={history:016x}"
                ));
            }
        }
        _ => {
            // A message, or a CREATE/DELETE whose body is malformed: show it.
            let body = match (r.kind, r.body_u64()) {
                (Kind::DPub, Some(due)) => {
                    s.push_str(&format!(" due_ms={due}"));
                    r.payload()
                }
                (Kind::Fire, Some(dpub)) => {
                    s.push_str(&format!(" dpub_id={dpub}"));
                    r.payload()
                }
                _ => r.body,
            };
            s.push_str(" body=");
            let n = body.len().min(PREVIEW_BYTES);
            escape(&body[..n], &mut s);
            if body.len() > n {
                s.push_str("...");
            }
        }
    }
    s
}

/// Why `file` (read from its start) is not a segment, or None when it is one.
fn not_a_segment(file: &mut File) -> io::Result<Option<String>> {
    let size = file.metadata()?.len();
    let mut head = Vec::with_capacity(4);
    Read::by_ref(file).take(4).read_to_end(&mut head)?;
    if head.iter().all(|&b| b == 0) {
        // Empty, or nothing written yet: the rest must be zero fill too.
        let mut at = head.len() as u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
                return Ok(Some(format!(
                    "it starts with zero fill (no record) but has data at offset {}",
                    at + i as u64
                )));
            }
            at += n as u64;
        }
    }
    let Ok(len_bytes) = <[u8; 4]>::try_from(head.as_slice()) else {
        return Ok(Some(format!(
            "it is {size} bytes long, shorter than a record"
        )));
    };
    let len = u64::from(u32::from_le_bytes(len_bytes));
    if len > size {
        return Ok(Some(format!(
            "its first record would be {len} bytes long but the file has {size}"
        )));
    }
    let mut first = head;
    Read::by_ref(file).take(len - 4).read_to_end(&mut first)?;
    Ok(match record::decode(&first) {
        Decoded::Record { .. } => None,
        Decoded::Corrupt(reason) => Some(format!("its first record does not decode: {reason}")),
        Decoded::Incomplete { .. } | Decoded::End => {
            Some("its first record does not decode".to_string())
        }
    })
}

pub fn dump(path: &OsString) -> Result<()> {
    let shown = std::path::Path::new(path).display().to_string();
    let open = || {
        File::open(path).map_err(|e| CliError::Io {
            what: format!("opening {shown}"),
            source: e,
        })
    };
    let why = not_a_segment(&mut open()?).map_err(|e| CliError::Io {
        what: format!("reading {shown}"),
        source: e,
    })?;
    if let Some(why) = why {
        return Err(CliError::NotSegment(format!(
            "{shown} is not a segment file: {why} (a segment is empty, zero fill, \
             or starts with a whole record)"
        )));
    }
    let file = open()?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut records = 0u64;
    let mut write_err: Option<io::Error> = None;
    let end = record::scan(io::BufReader::new(file), |offset, r| {
        records += 1;
        if write_err.is_none()
            && let Err(e) = writeln!(out, "{}", describe(offset, r))
        {
            write_err = Some(e);
        }
    })
    .map_err(|e| CliError::Io {
        what: format!("reading {shown}"),
        source: e,
    })?;
    if let Some(e) = write_err {
        return Err(stdout_err(e));
    }
    let summary = match &end {
        ScanEnd::Clean { .. } => "clean".to_string(),
        ScanEnd::Torn { offset } => format!("torn at {offset}"),
        ScanEnd::Corrupt { offset, reason } => format!("CORRUPT at {offset}: {reason}"),
    };
    writeln!(out, "records={records} end={summary}").map_err(stdout_err)?;
    out.flush().map_err(stdout_err)?;
    match end {
        ScanEnd::Corrupt { offset, reason } => Err(CliError::Corrupt(format!(
            "{shown}: corrupt record at offset {offset}: {reason}"
        ))),
        ScanEnd::Clean { .. } | ScanEnd::Torn { .. } => Ok(()),
    }
}
