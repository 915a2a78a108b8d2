//! Reading raw records from the log by position and by event id: what a
//! replication sender streams, and where a slave's divergent tail starts.
//!
//! Runs on the caller's thread (a `repl-<peer>` sender, or the writer when
//! a slave moves a divergent tail aside) with pread through the shared
//! segment handles; callers pass an `end` no further than what the writer
//! has made durable, so nothing read here can be taken back. Records are
//! returned exactly as stored (CRC included), always whole, and a chunk
//! never crosses a segment.

use std::sync::Arc;

use super::StoreError;
use super::record::{self, Decoded, HEADER_LEN};
use super::segment::{Segment, SegmentSet};

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
    let mut head = [0u8; 16];
    seg.read_exact_at(&mut head, seg.base)?;
    if head[..4] == [0, 0, 0, 0] {
        return Ok(None); // zero fill: nothing written yet
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[8..16]);
    Ok(Some(u64::from_le_bytes(id)))
}

/// Reads whole records from global position `pos`, up to `end` and up to
/// about `max` bytes, within one segment. At a segment's end the chunk is
/// empty and `next_pos` is the next segment's base.
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
    let mut want = ((seg_end - pos) as usize).min(max.max(HEADER_LEN));
    loop {
        let mut buf = vec![0u8; want];
        seg.read_exact_at(&mut buf, pos)?;
        let mut at = 0;
        let mut zero_fill = false;
        while at < buf.len() {
            match record::decode(&buf[at..]) {
                Decoded::Record { rec, len } => {
                    chunk.last_id = rec.event_id;
                    chunk.count += 1;
                    at += len;
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
        buf.truncate(at);
        chunk.bytes = buf;
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
