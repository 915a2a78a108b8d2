//! Reading a topic's messages back from the commit log, given its index
//! entries: the records are fetched with as few preads as possible (one per
//! run of entries in the same segment that lie close together), each record
//! is checked against its index entry, and the messages are handed to the
//! caller one by one. A reader may be given a budget ([`Reader::bounded`]):
//! then a run stops growing at that many bytes (a record larger than it is
//! read alone) and its buffer is given back after a read that grew it past
//! twice the budget, so a reader's memory does not grow with the batch.
//!
//! A reader keeps the segments it read from ([`Reader::unpin`] lets go), so
//! a caller that reads the same entries twice (checks them, then sends
//! them) still finds them after retention dropped their segments from the
//! [`SegmentSet`].
//!
//! Used by subscriptions (the replication sender streams whole chunks of
//! the log with [`super::logread`] instead), so it knows segments, records and index entries but nothing about sockets or reply
//! encoding. Runs on the caller's thread (a connection thread); it takes the
//! [`SegmentSet`] read lock briefly to find each entry's segment, and reads
//! through the segment's shared file handle, so a segment retention unlinks
//! mid-read stays readable. Callers pass only entries the writer has
//! published, so nothing read here can be taken back by a crash.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::record::{self, Decoded};
use super::segment::{Segment, SegmentSet};
use crate::storage::StoreError;
use crate::storage::index::Entry;

/// Records this far apart or closer are read with one pread: reading the gap
/// costs less than another system call.
const RUN_SLACK_BYTES: u64 = 64 << 10;
/// The read buffer is dropped after a read that grew it past this, so one
/// large batch does not pin its memory for the rest of a subscription.
const KEEP_BUF_BYTES: usize = 4 << 20;

/// One message as stored, borrowing from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMsg<'a> {
    pub event_id: u64,
    pub timestamp_ms: u64,
    /// The header tokens as published ("k=v k2=v2"); empty when none.
    pub headers: &'a [u8],
    pub payload: &'a [u8],
}

/// Why a read failed, with the topic and where in the log.
#[derive(Debug)]
pub struct ReadError {
    pub topic: String,
    /// Global log position of the record (or run of records) concerned.
    pub pos: u64,
    pub kind: ReadErrorKind,
}

#[derive(Debug)]
pub enum ReadErrorKind {
    /// No segment holds `pos` (retention removed it, or the index is wrong).
    NoSegment,
    /// The pread of a run failed; `offset` is where it started in the
    /// segment the error names.
    Read { offset: u64, source: StoreError },
    /// The bytes at the entry's position are not the message it names;
    /// `why` says what is there instead (a CRC mismatch, another id, …).
    Mismatch {
        event_id: u64,
        path: PathBuf,
        offset: u64,
        why: String,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ReadErrorKind::NoSegment => write!(f, "no segment holds position {}", self.pos),
            ReadErrorKind::Read {
                offset,
                source: StoreError::Io { op, path, source },
            } => write!(f, "{op} {} at offset {offset}: {source}", path.display()),
            ReadErrorKind::Read { source, .. } => write!(f, "{source}"),
            ReadErrorKind::Mismatch {
                event_id,
                path,
                offset,
                why,
            } => write!(
                f,
                "the record of event {event_id} in {} at offset {offset} does not match the index of {}: {why}",
                path.display(),
                self.topic
            ),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ReadErrorKind::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads messages by index entry; keeps its buffer between reads.
#[derive(Debug)]
pub struct Reader {
    buf: Vec<u8>,
    /// Most bytes one pread reads (unless one record is larger).
    max_run: usize,
    /// The buffer is dropped after a read that grew it past this.
    keep: usize,
    /// Segments read from since the last [`Reader::unpin`].
    pinned: Vec<Arc<Segment>>,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader::new()
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            buf: Vec::new(),
            max_run: usize::MAX,
            keep: KEEP_BUF_BYTES,
            pinned: Vec::new(),
        }
    }

    /// A reader whose preads read at most `max_run` bytes (or one record)
    /// and whose buffer is dropped once it grew past `2 * max_run`.
    pub fn bounded(max_run: usize) -> Reader {
        Reader {
            max_run,
            keep: 2 * max_run,
            ..Reader::new()
        }
    }

    /// Lets go of the segments kept since the last call.
    pub fn unpin(&mut self) {
        self.pinned.clear();
    }

    /// Gives the buffer back (a subscription going idle).
    pub fn release(&mut self) {
        self.buf = Vec::new();
        self.pinned = Vec::new();
    }

    /// The segment holding `pos`: the set's (then kept), else a kept one
    /// retention has dropped from the set since.
    fn find(&mut self, segments: &SegmentSet, pos: u64) -> Option<Arc<Segment>> {
        match segments.find(pos) {
            Some(seg) => {
                if !self.pinned.iter().any(|s| s.base == seg.base) {
                    self.pinned.push(Arc::clone(&seg));
                }
                Some(seg)
            }
            None => (self.pinned.iter())
                .filter(|s| s.base <= pos)
                .max_by_key(|s| s.base)
                .cloned(),
        }
    }

    /// Hands the message of each of `entries` (of topic `topic`) to `each`,
    /// in order. Stops at the first error; messages handed over before it
    /// stay handed over, so a caller that must send all or nothing discards
    /// them itself.
    pub fn read(
        &mut self,
        segments: &SegmentSet,
        topic: &str,
        entries: &[Entry],
        mut each: impl FnMut(StoredMsg<'_>),
    ) -> Result<(), ReadError> {
        let fail = |pos: u64, kind: ReadErrorKind| ReadError {
            topic: topic.to_string(),
            pos,
            kind,
        };
        let n = entries.len();
        let mut i = 0;
        while i < n {
            // A run of entries read with one pread: same segment, dense enough.
            let first = entries[i];
            let seg = self
                .find(segments, first.pos)
                .ok_or_else(|| fail(first.pos, ReadErrorKind::NoSegment))?;
            // One look at the set per run, not per entry: a segment the
            // entries lie in is in the set before they are published.
            let seg_end = segments.end_of(seg.base);
            let mut j = i + 1;
            let mut useful = u64::from(first.len);
            while j < n {
                let e = entries[j];
                if e.pos < first.pos {
                    break;
                }
                let span = e.pos + u64::from(e.len) - first.pos;
                let same = e.pos < seg_end;
                if !same
                    || span > 2 * (useful + u64::from(e.len)) + RUN_SLACK_BYTES
                    || span > self.max_run as u64
                {
                    break;
                }
                useful += u64::from(e.len);
                j += 1;
            }
            let last = entries[j - 1];
            let span = (last.pos + u64::from(last.len) - first.pos) as usize;
            self.buf.resize(span, 0);
            let offset = first.pos.saturating_sub(seg.base);
            seg.read_exact_at(&mut self.buf, first.pos)
                .map_err(|source| fail(first.pos, ReadErrorKind::Read { offset, source }))?;
            for e in &entries[i..j] {
                let at = (e.pos - first.pos) as usize;
                let end = at + e.len as usize;
                let decoded = self.buf.get(at..end).map(record::decode);
                let why = match decoded {
                    Some(Decoded::Record { rec, .. })
                        if rec.event_id == e.event_id && rec.is_message() =>
                    {
                        Ok(rec)
                    }
                    Some(Decoded::Record { rec, .. }) if rec.event_id != e.event_id => {
                        Err(format!("the record there has event id {}", rec.event_id))
                    }
                    Some(Decoded::Record { rec, .. }) => {
                        Err(format!("the record there is a {}", rec.kind.name()))
                    }
                    Some(Decoded::Corrupt(reason)) => Err(reason),
                    Some(Decoded::Incomplete { need }) => Err(format!(
                        "the record there is {need} bytes, the index says {}",
                        e.len
                    )),
                    Some(Decoded::End) => Err("there are only zero bytes there".to_string()),
                    None => Err("the record lies outside what was read".to_string()),
                };
                let rec = match why {
                    Ok(rec) => rec,
                    Err(why) => {
                        return Err(fail(
                            e.pos,
                            ReadErrorKind::Mismatch {
                                event_id: e.event_id,
                                path: seg.path.clone(),
                                offset: e.pos.saturating_sub(seg.base),
                                why,
                            },
                        ));
                    }
                };
                each(StoredMsg {
                    event_id: rec.event_id,
                    timestamp_ms: rec.timestamp_ms,
                    headers: rec.headers,
                    payload: rec.payload(),
                });
            }
            i = j;
        }
        if self.buf.capacity() > self.keep {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::sync::Arc;

    use super::super::record::{Kind, Record};
    use super::super::segment::Segment;
    use super::*;

    /// Writes `recs` (event id, kind, payload) into a new segment at `base`
    /// and returns their index entries.
    fn segment(
        dir: &Path,
        set: &SegmentSet,
        base: u64,
        recs: &[(u64, Kind, &[u8])],
    ) -> Result<Vec<Entry>, StoreError> {
        let seg = Segment::open(dir, base, true)?;
        let mut bytes = Vec::new();
        let mut entries = Vec::new();
        for &(id, kind, payload) in recs {
            let start = bytes.len();
            record::encode(
                &mut bytes,
                &Record {
                    event_id: id,
                    timestamp_ms: id * 10,
                    kind,
                    flags: 0,
                    topic: "t",
                    headers: if id % 2 == 0 { b"k=v" } else { b"" },
                    body: payload,
                },
            );
            entries.push(Entry {
                event_id: id,
                pos: base + start as u64,
                len: (bytes.len() - start) as u32,
            });
        }
        seg.file
            .write_all_at(&bytes, 0)
            .map_err(|e| StoreError::io("write", &seg.path, e))?;
        set.push(Arc::new(seg));
        Ok(entries)
    }

    /// (event id, timestamp, headers, payload) of a message read.
    type Got = (u64, u64, Vec<u8>, Vec<u8>);

    fn read_all(
        reader: &mut Reader,
        set: &SegmentSet,
        entries: &[Entry],
    ) -> (Vec<Got>, Result<(), ReadError>) {
        let mut got = Vec::new();
        let res = reader.read(set, "t", entries, |m| {
            got.push((
                m.event_id,
                m.timestamp_ms,
                m.headers.to_vec(),
                m.payload.to_vec(),
            ))
        });
        (got, res)
    }

    #[test]
    fn a_run_stops_where_its_segment_ends_though_the_next_one_is_adjacent()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let set = SegmentSet::default();
        let mut entries = segment(
            dir.path(),
            &set,
            0,
            &[(1, Kind::Pub, b"a"), (2, Kind::Pub, b"b")],
        )?;
        let end = entries.last().map_or(0, |e| e.pos + u64::from(e.len));
        entries.extend(segment(
            dir.path(),
            &set,
            end,
            &[(3, Kind::Pub, b"c"), (4, Kind::Pub, b"d")],
        )?);
        assert_eq!(set.end_of(0), end);
        assert_eq!(set.end_of(end), u64::MAX);
        let (got, res) = read_all(&mut Reader::new(), &set, &entries);
        res?;
        let ids: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(got[2].3, b"c");
        Ok(())
    }

    #[test]
    fn reads_messages_across_segments_and_gaps() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let set = SegmentSet::default();
        let big = vec![7u8; 200 << 10];
        let mut entries = segment(
            dir.path(),
            &set,
            0,
            &[
                (1, Kind::Pub, b"a"),
                (2, Kind::Pub, b"bb"),
                (3, Kind::Pub, &big), // skipped below: a gap wider than the slack
                (4, Kind::Pub, b"dddd"),
            ],
        )?;
        entries.remove(2);
        entries.extend(segment(
            dir.path(),
            &set,
            1 << 20,
            &[(5, Kind::Pub, b""), (6, Kind::Pub, b"f")],
        )?);
        let mut reader = Reader::new();
        let (got, res) = read_all(&mut reader, &set, &entries);
        res?;
        let want: Vec<Got> = [
            (1, &b"a"[..]),
            (2, b"bb"),
            (4, b"dddd"),
            (5, b""),
            (6, b"f"),
        ]
        .iter()
        .map(|&(id, p)| {
            let h: &[u8] = if id % 2 == 0 { b"k=v" } else { b"" };
            (id, id * 10, h.to_vec(), p.to_vec())
        })
        .collect();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn a_record_that_does_not_match_its_entry_is_an_error() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let set = SegmentSet::default();
        let entries = segment(
            dir.path(),
            &set,
            0,
            &[(1, Kind::Pub, b"a"), (2, Kind::Create, b"")],
        )?;
        let mut reader = Reader::new();

        // Not a message.
        let (got, res) = read_all(&mut reader, &set, &entries);
        assert_eq!(got.len(), 1);
        let err = res.err().ok_or("expected an error")?;
        assert!(matches!(
            err.kind,
            ReadErrorKind::Mismatch { event_id: 2, .. }
        ));
        let text = err.to_string();
        assert!(text.contains("record of event 2 in"), "{text}");
        assert!(
            text.contains("does not match the index of t: the record there is a CREATE"),
            "{text}"
        );

        // Another event id at that position.
        let mut wrong = entries[0];
        wrong.event_id = 9;
        let (got, res) = read_all(&mut reader, &set, &[wrong]);
        assert!(got.is_empty());
        let err = res.err().ok_or("expected an error")?;
        assert!(
            err.to_string().ends_with("the record there has event id 1"),
            "{err}"
        );
        assert!(matches!(
            err.kind,
            ReadErrorKind::Mismatch { event_id: 9, .. }
        ));

        // A flipped byte: the CRC check fails.
        let seg = set.find(0).ok_or("segment")?;
        let mut b = [0u8; 1];
        seg.file.read_exact_at(&mut b, entries[0].pos + 29)?;
        seg.file.write_all_at(&[b[0] ^ 1], entries[0].pos + 29)?;
        let (got, res) = read_all(&mut reader, &set, &entries[..1]);
        assert!(got.is_empty(), "a damaged record is never handed over");
        let err = res.err().ok_or("expected an error")?;
        let text = err.to_string();
        assert!(
            text.contains("in ") && text.contains("at offset 0"),
            "{text}"
        );
        assert!(text.contains("CRC mismatch"), "{text}");

        // Past the end of the file.
        let mut past = entries[0];
        past.pos = 1 << 16;
        let (_, res) = read_all(&mut reader, &set, &[past]);
        let err = res.err().ok_or("expected an error")?;
        assert!(matches!(
            err.kind,
            ReadErrorKind::Read { offset: 65536, .. }
        ));
        assert!(err.to_string().starts_with("read segment "), "{err}");
        Ok(())
    }

    #[test]
    fn no_segment_is_an_error() {
        let set = SegmentSet::default();
        let e = Entry {
            event_id: 1,
            pos: 5,
            len: 30,
        };
        let (_, res) = read_all(&mut Reader::new(), &set, &[e]);
        assert_eq!(
            res.map_err(|e| e.to_string()),
            Err("no segment holds position 5".to_string())
        );
    }
}
