//! Reading raw records from the log by position and by event id: what a
//! replication sender streams, and where a slave's divergent tail starts.
//!
//! Runs on the caller's thread (a `repl-<peer>` sender, or the writer when
//! a slave moves a divergent tail aside) with pread through the shared
//! segment handles; callers pass an `end` no further than what the writer
//! has made durable, so nothing read here can be taken back. Records are
//! returned exactly as stored (CRC included), always whole, and a chunk
//! never crosses a segment nor ends inside an MPUB batch.

use std::sync::Arc;

use super::record::{self, Decoded, FLAG_BATCH_MORE, HEADER_LEN};
use super::segment::{Segment, SegmentSet};
use crate::storage::StoreError;

/// Most bytes one chunk read returns (more if a single record is larger).
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// Whole records read from the log.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub(crate) bytes: Vec<u8>,
    pub(crate) count: usize,
    pub(crate) last_id: u64,
    /// Where the next read starts.
    pub(crate) next_pos: u64,
}

fn file_len(seg: &Segment) -> Result<u64, StoreError> {
    seg.file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| StoreError::io("stat segment", &seg.path, e))
}

/// The event id of a segment's first record, if it has one.
pub(crate) fn first_id(seg: &Segment) -> Result<Option<u64>, StoreError> {
    let len = file_len(seg)?;
    if len < HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut head = [0u8; record::PEEK_LEN];
    seg.read_exact_at(&mut head, seg.base)?;
    // None for zero fill: nothing written yet.
    Ok(record::peek(&head).map(|p| p.event_id))
}

/// Reads whole records from global position `pos`, up to `end` and up to
/// about `max` bytes (more for one record or MPUB batch larger than that:
/// a chunk never ends inside a batch), within one segment. At a segment's
/// end the chunk is empty and `next_pos` is the next segment's base.
pub(crate) fn read_chunk(
    segments: &SegmentSet,
    pos: u64,
    end: u64,
    max: usize,
) -> Result<Chunk, StoreError> {
    let mut chunk = Chunk {
        next_pos: pos,
        ..Chunk::default()
    };
    if pos >= end {
        return Ok(chunk);
    }
    let seg = segments.find(pos).ok_or_else(|| StoreError::Corrupt {
        path: "log".into(),
        offset: pos,
        reason: "no segment holds this position (deleted by retention?)".into(),
    })?;
    let seg_end = (seg.base + file_len(&seg)?).min(end);
    if pos >= seg_end {
        // Sealed segments hold exactly their records: go on in the next.
        chunk.next_pos = next_base(segments, &seg, pos);
        return Ok(chunk);
    }
    let readable = (seg_end - pos) as usize;
    let mut want = readable.min(max.max(HEADER_LEN));
    loop {
        let mut buf = vec![0u8; want];
        seg.read_exact_at(&mut buf, pos)?;
        // `at`: end of the last whole record; `whole`: end of the last one
        // that closes an MPUB batch (or stands alone), with its count and id.
        let (mut at, mut count, mut last_id) = (0, 0, 0);
        let (mut whole, mut whole_count, mut whole_last) = (0, 0, 0);
        let mut zero_fill = false;
        while at < buf.len() {
            match record::decode(&buf[at..]) {
                Decoded::Record { rec, len } => {
                    at += len;
                    count += 1;
                    last_id = rec.event_id;
                    if rec.flags & FLAG_BATCH_MORE == 0 {
                        (whole, whole_count, whole_last) = (at, count, last_id);
                    }
                }
                Decoded::Incomplete { need } if at == 0 => {
                    if pos + need as u64 > seg_end {
                        let reason = format!("record of {need} bytes runs past the readable end");
                        return Err(StoreError::corrupt(&seg.path, pos - seg.base, reason));
                    }
                    want = need; // one record larger than the chunk
                    break;
                }
                Decoded::Incomplete { .. } => break,
                Decoded::End => {
                    zero_fill = true;
                    break;
                }
                Decoded::Corrupt(reason) => {
                    let off = pos - seg.base + at as u64;
                    return Err(StoreError::corrupt(&seg.path, off, reason));
                }
            }
        }
        if at == 0 && !zero_fill {
            continue; // read again, the whole large record
        }
        if whole < at {
            // The chunk ends inside an MPUB batch. A batch goes whole (a
            // slave applies and rolls per chunk, so half a batch would be
            // visible there and could end one of its segments): cut before
            // it, or, when it started the chunk, read on to its end. An
            // open batch at the readable end (a torn tail) goes as it is.
            if whole > 0 {
                (at, count, last_id) = (whole, whole_count, whole_last);
            } else if want < readable && !zero_fill {
                want = want.saturating_mul(2).min(readable);
                continue;
            }
        }
        buf.truncate(at);
        chunk.bytes = buf;
        chunk.count = count;
        chunk.last_id = last_id;
        chunk.next_pos = if at == 0 {
            next_base(segments, &seg, pos)
        } else {
            pos + at as u64
        };
        return Ok(chunk);
    }
}

/// Where reading continues after the end of `seg`.
fn next_base(segments: &SegmentSet, seg: &Arc<Segment>, pos: u64) -> u64 {
    segments
        .all()
        .iter()
        .map(|s| s.base)
        .find(|&b| b > seg.base)
        .unwrap_or(pos)
}

/// The position of the first record whose id is above `after_id`, among
/// the records before `end`; `end` when there is none.
pub(crate) fn position_after(
    segments: &SegmentSet,
    end: u64,
    after_id: u64,
) -> Result<u64, StoreError> {
    let segs = segments.all();
    // The last segment that starts at or below the id: the record is in it
    // or later (ids grow with positions).
    let mut start = segs.first().map_or(end, |s| s.base);
    for seg in &segs {
        match first_id(seg)? {
            Some(id) if id <= after_id => start = seg.base,
            Some(_) => break,
            None => {}
        }
    }
    let mut pos = start;
    // Bounded: every chunk moves forward, to at most `end`.
    while pos < end {
        let chunk = read_chunk(segments, pos, end, CHUNK_BYTES)?;
        if chunk.next_pos <= pos {
            break;
        }
        if chunk.last_id > after_id {
            // In this chunk: walk it to the record.
            let mut at = 0;
            while at < chunk.bytes.len() {
                if let Decoded::Record { rec, len } = record::decode(&chunk.bytes[at..]) {
                    if rec.event_id > after_id {
                        return Ok(pos + at as u64);
                    }
                    at += len;
                } else {
                    break;
                }
            }
        }
        pos = chunk.next_pos;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use super::*;
    use crate::storage::log::record::{Kind, Record};

    fn rec(out: &mut Vec<u8>, id: u64, flags: u8) {
        record::encode(
            out,
            &Record {
                event_id: id,
                timestamp_ms: 1,
                kind: Kind::Pub,
                flags,
                topic: "t",
                headers: b"",
                body: &[b'x'; 100],
            },
        );
    }

    /// Records 1 and 5 alone, 2..=4 one MPUB batch, 6..=9 another.
    fn log() -> Result<(tempfile::TempDir, SegmentSet, u64), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        let seg = Segment::open(dir.path(), 0, true)?;
        let mut bytes = Vec::new();
        for (id, more) in [
            (1, 0),
            (2, 1),
            (3, 1),
            (4, 0),
            (5, 0),
            (6, 1),
            (7, 1),
            (8, 1),
        ] {
            rec(&mut bytes, id, more);
        }
        rec(&mut bytes, 9, 0);
        seg.file
            .write_all_at(&bytes, 0)
            .map_err(|e| StoreError::io("write", &seg.path, e))?;
        let set = SegmentSet::default();
        set.push(Arc::new(seg));
        Ok((dir, set, bytes.len() as u64))
    }

    #[test]
    fn a_chunk_never_ends_inside_an_mpub_batch() -> Result<(), StoreError> {
        let (_dir, set, end) = log()?;
        let one = record::encoded_len(1, 0, 100);
        // Room for two records: the batch 2..=4 would be cut after 2.
        let c = read_chunk(&set, 0, end, 2 * one)?;
        assert_eq!((c.count, c.last_id), (1, 1), "cut before the batch");
        // With every chunk size, chunks end only where a batch does.
        for max in [1, one, 2 * one, 3 * one, 5 * one] {
            let (mut pos, mut ends, mut total) = (0, vec![], 0);
            while pos < end {
                let c = read_chunk(&set, pos, end, max)?;
                assert!(c.next_pos > pos);
                ends.push(c.last_id);
                total += c.count;
                pos = c.next_pos;
            }
            assert_eq!(total, 9);
            assert!(
                ends.iter().all(|id| [1, 4, 5, 9].contains(id)),
                "chunks of {max} bytes end at {ends:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn an_open_batch_at_the_readable_end_is_returned_as_it_is() -> Result<(), StoreError> {
        let (_dir, set, end) = log()?;
        let one = record::encoded_len(1, 0, 100) as u64;
        // The readable end falls inside the last batch (a torn tail).
        let c = read_chunk(&set, 5 * one, end - one, 1 << 20)?;
        assert_eq!((c.count, c.last_id), (3, 8));
        assert_eq!(position_after(&set, end, 6)?, 6 * one);
        Ok(())
    }
}
