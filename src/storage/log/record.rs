//! One commit-log record: its byte layout, encoding, decoding and CRC.
//!
//! Pure code, used by the writer (encode), the readers and recovery (decode)
//! and `smss-cli dump`. Every record is self-delimiting and checksummed, so a
//! segment can be scanned from any record boundary and a torn or corrupt
//! record is always detected. All integers are little-endian.
//!
//! | offset | size        | field                                              |
//! |--------|-------------|----------------------------------------------------|
//! | 0      | 4           | `len`: total bytes of the record, this field included |
//! | 4      | 4           | CRC32 (IEEE) of bytes `8..len`                      |
//! | 8      | 8           | event id                                           |
//! | 16     | 8           | timestamp, Unix epoch ms                           |
//! | 24     | 1           | kind (see [`Kind`])                                |
//! | 25     | 1           | flags (bit 0: [`FLAG_BATCH_MORE`])                 |
//! | 26     | 1           | topic length `t` (1–128)                           |
//! | 27     | 2           | headers length `h`                                 |
//! | 29     | `t`         | topic name                                         |
//! | 29+t   | `h`         | headers, as received (`k=v k=v`)                   |
//! | 29+t+h | the rest    | body: the payload, or the kind's fields            |
//!
//! A `len` of 0 marks the end of the written part of a segment (zero fill).
//!
//! Format version 3. Version 2 wrote GROUP set bodies without the
//! `alone` byte (read as "not sent alone") and its checkpoints had no
//! `gap` lines; version 1 had no EPOCH or GROUP kind; this code reads all
//! three. Changing the layout means a new version number in the checkpoint
//! and a reader for the old layout; never reinterpret old bytes.

use std::io::Read;

/// Bytes before the topic name.
pub const HEADER_LEN: usize = 29;
/// Set on every record of an MPUB batch except the last: recovery discards a
/// batch whose last record is missing, so a batch is all-or-nothing.
pub const FLAG_BATCH_MORE: u8 = 1;
/// The record format this code writes.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this code reads (a subset of the current one).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// The topic field of records that belong to no topic (EPOCH): not a valid
/// topic name, so it can never collide with one.
pub const NO_TOPIC: &str = "$";

/// What a record means. The body layout depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A topic was created. Body: `life_ms` u64 (0 = no lifetime).
    Create = 1,
    /// A topic was removed. Body: one [`DeleteReason`] byte.
    Delete = 2,
    /// A message. Body: the payload.
    Pub = 3,
    /// A delayed message, not yet delivered. Body: due time (Unix ms, u64),
    /// then the payload.
    DPub = 4,
    /// A delayed message reaching its topic. Body: the event id of its DPUB
    /// record (u64), then the payload. Naming the DPUB makes firing
    /// idempotent across crashes and on slaves.
    Fire = 5,
    /// A new epoch began (PROMOTE). Topic [`NO_TOPIC`]. Body: the epoch
    /// (u64), the last event id of the epochs before it (u64), the data
    /// directory's history id (u64).
    Epoch = 6,
    /// A consumer group's state changed. Topic: the group's topic. Body: op
    /// (u8: 1 = set, 2 = remove), group name length (u8), group name, then
    /// for set: committed position (u64), the message id whose deliveries
    /// failed (u64, 0 = none), how many times (u32), and since version 3
    /// `alone` (u8: 1 = its last failed delivery was a batch of that
    /// message alone, 0 = not; a version 2 body has no such byte and reads
    /// as 0).
    Group = 7,
}

/// A group record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp<'a> {
    Set {
        group: &'a str,
        committed: u64,
        failed_at: u64,
        failures: u32,
        /// The last failed delivery of `failed_at` was that message alone,
        /// so its failures are surely its own (it may be given up on).
        alone: bool,
    },
    Remove {
        group: &'a str,
    },
}

impl GroupOp<'_> {
    /// The body of a Group record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        match self {
            GroupOp::Set {
                group,
                committed,
                failed_at,
                failures,
                alone,
            } => {
                b.push(1);
                b.push(group.len() as u8);
                b.extend_from_slice(group.as_bytes());
                b.extend_from_slice(&committed.to_le_bytes());
                b.extend_from_slice(&failed_at.to_le_bytes());
                b.extend_from_slice(&failures.to_le_bytes());
                b.push(u8::from(*alone));
            }
            GroupOp::Remove { group } => {
                b.push(2);
                b.push(group.len() as u8);
                b.extend_from_slice(group.as_bytes());
            }
        }
        b
    }
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Create),
            2 => Some(Kind::Delete),
            3 => Some(Kind::Pub),
            4 => Some(Kind::DPub),
            5 => Some(Kind::Fire),
            6 => Some(Kind::Epoch),
            7 => Some(Kind::Group),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Create => "CREATE",
            Kind::Delete => "DELETE",
            Kind::Pub => "PUB",
            Kind::DPub => "DPUB",
            Kind::Fire => "FIRE",
            Kind::Epoch => "EPOCH",
            Kind::Group => "GROUP",
        }
    }
}

/// Why a topic went away; subscribers are told `END <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DeleteReason {
    Deleted = 1,
    Expired = 2,
}

impl DeleteReason {
    pub fn from_u8(b: u8) -> Option<DeleteReason> {
        match b {
            1 => Some(DeleteReason::Deleted),
            2 => Some(DeleteReason::Expired),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Deleted => "deleted",
            DeleteReason::Expired => "expired",
        }
    }
}

/// A decoded record borrowing from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub event_id: u64,
    pub timestamp_ms: u64,
    pub kind: Kind,
    pub flags: u8,
    pub topic: &'a str,
    pub headers: &'a [u8],
    pub body: &'a [u8],
}

impl Record<'_> {
    /// The lifetime of a Create record, if the body is well formed.
    pub fn life_ms(&self) -> Option<u64> {
        self.body.try_into().ok().map(u64::from_le_bytes)
    }

    /// The leading u64 of a DPub (due time) or Fire (DPUB id) body.
    pub fn body_u64(&self) -> Option<u64> {
        self.body
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }

    /// What a subscriber receives: the payload of a Pub or Fire record, or
    /// the payload still waiting in a DPub record.
    pub fn payload(&self) -> &[u8] {
        match self.kind {
            Kind::DPub | Kind::Fire => self.body.get(8..).unwrap_or(&[]),
            _ => self.body,
        }
    }

    /// The three u64 of an Epoch body: (epoch, previous last id, history).
    pub fn epoch_fields(&self) -> Option<(u64, u64, u64)> {
        let f = |i: usize| {
            self.body
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        Some((f(0)?, f(1)?, f(2)?))
    }

    /// The content of a Group record, if its body is well formed: a set
    /// body of version 3 (with the `alone` byte) or of version 2 (without,
    /// read as not alone: that fact was not kept then).
    pub fn group_op(&self) -> Option<GroupOp<'_>> {
        let b = self.body;
        let (&op, rest) = b.split_first()?;
        let (&n, rest) = rest.split_first()?;
        let group = std::str::from_utf8(rest.get(..n as usize)?).ok()?;
        let rest = &rest[n as usize..];
        match op {
            1 if rest.len() == 20 || rest.len() == 21 => {
                let u = |r: &[u8]| r.try_into().ok().map(u64::from_le_bytes);
                let alone = match rest.get(20) {
                    None | Some(0) => false,
                    Some(1) => true,
                    Some(_) => return None,
                };
                Some(GroupOp::Set {
                    group,
                    committed: u(&rest[..8])?,
                    failed_at: u(&rest[8..16])?,
                    failures: rest[16..20].try_into().ok().map(u32::from_le_bytes)?,
                    alone,
                })
            }
            2 if rest.is_empty() => Some(GroupOp::Remove { group }),
            _ => None,
        }
    }

    /// True for records that are delivered to subscribers.
    pub fn is_message(&self) -> bool {
        matches!(self.kind, Kind::Pub | Kind::Fire)
    }

    /// The reason of a Delete record, if the body is well formed.
    pub fn delete_reason(&self) -> Option<DeleteReason> {
        match self.body {
            [b] => DeleteReason::from_u8(*b),
            _ => None,
        }
    }
}

/// Bytes a record with these parts takes on disk.
pub fn encoded_len(topic_len: usize, headers_len: usize, body_len: usize) -> usize {
    HEADER_LEN + topic_len + headers_len + body_len
}

/// Appends the encoded record to `out`. The caller guarantees the topic is
/// 1–128 bytes and headers fit in u16 (the protocol layer enforces both).
pub fn encode(out: &mut Vec<u8>, rec: &Record<'_>) {
    let start = out.len();
    let len = encoded_len(rec.topic.len(), rec.headers.len(), rec.body.len());
    out.reserve(len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // CRC, filled below
    out.extend_from_slice(&rec.event_id.to_le_bytes());
    out.extend_from_slice(&rec.timestamp_ms.to_le_bytes());
    out.push(rec.kind as u8);
    out.push(rec.flags);
    out.push(rec.topic.len() as u8);
    out.extend_from_slice(&(rec.headers.len() as u16).to_le_bytes());
    out.extend_from_slice(rec.topic.as_bytes());
    out.extend_from_slice(rec.headers);
    out.extend_from_slice(rec.body);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The outcome of decoding at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record of `len` bytes.
    Record { rec: Record<'a>, len: usize },
    /// The buffer ends inside a record that needs `need` bytes in all.
    Incomplete { need: usize },
    /// A zero length field: the written part of the segment ends here.
    End,
    /// The bytes are not a valid record; the reason says why.
    Corrupt(String),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Bytes of the fixed fields every record starts with: length, CRC, event
/// id, timestamp.
pub const PEEK_LEN: usize = 24;

/// The fixed fields at the start of a record, read without checking its
/// CRC: for a caller that only needs to know which record starts there
/// (the reader that decodes it checks the CRC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    pub len: u32,
    pub event_id: u64,
    pub timestamp_ms: u64,
}

/// The fixed fields of the record at the start of `buf`; `None` when `buf`
/// is shorter than [`PEEK_LEN`] or holds zero fill (length 0: the end of
/// what was written).
pub fn peek(buf: &[u8]) -> Option<Peek> {
    if buf.len() < PEEK_LEN {
        return None;
    }
    let len = u32_at(buf, 0);
    (len != 0).then(|| Peek {
        len,
        event_id: u64_at(buf, 8),
        timestamp_ms: u64_at(buf, 16),
    })
}

/// Decodes the record at the start of `buf`, checking length and CRC.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < 4 {
        if buf.iter().all(|&b| b == 0) && !buf.is_empty() {
            return Decoded::End;
        }
        return Decoded::Incomplete { need: 4 };
    }
    let len = u32_at(buf, 0) as usize;
    if len == 0 {
        return Decoded::End;
    }
    if len < HEADER_LEN {
        return Decoded::Corrupt(format!(
            "record length {len} is below the minimum {HEADER_LEN}"
        ));
    }
    if buf.len() < len {
        return Decoded::Incomplete { need: len };
    }
    let b = &buf[..len];
    let crc = u32_at(b, 4);
    let actual = crc32fast::hash(&b[8..]);
    if crc != actual {
        return Decoded::Corrupt(format!(
            "CRC mismatch: stored {crc:08x}, computed {actual:08x}"
        ));
    }
    let Some(kind) = Kind::from_u8(b[24]) else {
        return Decoded::Corrupt(format!("unknown record kind {}", b[24]));
    };
    let topic_len = b[26] as usize;
    let headers_len = u16::from_le_bytes([b[27], b[28]]) as usize;
    if topic_len == 0 || HEADER_LEN + topic_len + headers_len > len {
        return Decoded::Corrupt(format!(
            "topic length {topic_len} and headers length {headers_len} do not fit in a {len}-byte record"
        ));
    }
    let topic_end = HEADER_LEN + topic_len;
    let Ok(topic) = std::str::from_utf8(&b[HEADER_LEN..topic_end]) else {
        return Decoded::Corrupt("topic name is not UTF-8".to_string());
    };
    let rec = Record {
        event_id: u64_at(b, 8),
        timestamp_ms: u64_at(b, 16),
        kind,
        flags: b[25],
        topic,
        headers: &b[topic_end..topic_end + headers_len],
        body: &b[topic_end + headers_len..],
    };
    Decoded::Record { rec, len }
}

/// How a [`scan`] of a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// The stream ended exactly after a record (or in zero fill).
    Clean { offset: u64 },
    /// The stream ended inside a record: a torn tail.
    Torn { offset: u64 },
    /// A record failed to decode at `offset`.
    Corrupt { offset: u64, reason: String },
}

/// Decodes every record of a stream in order, calling `visit(offset, record)`
/// for each. For tools (`smss-cli dump`); the server reads with pread.
pub fn scan<R: Read>(
    mut reader: R,
    mut visit: impl FnMut(u64, &Record<'_>),
) -> std::io::Result<ScanEnd> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut start = 0usize; // first unconsumed byte of buf
    let mut offset = 0u64; // stream offset of buf[start]
    let mut eof = false;
    loop {
        match decode(&buf[start..]) {
            Decoded::Record { rec, len } => {
                visit(offset, &rec);
                start += len;
                offset += len as u64;
                continue;
            }
            Decoded::End => return Ok(ScanEnd::Clean { offset }),
            Decoded::Corrupt(reason) => return Ok(ScanEnd::Corrupt { offset, reason }),
            Decoded::Incomplete { need } => {
                if eof {
                    return Ok(if start == buf.len() {
                        ScanEnd::Clean { offset }
                    } else {
                        ScanEnd::Torn { offset }
                    });
                }
                buf.drain(..start);
                start = 0;
                let want = need.max(1 << 16);
                if buf.capacity() < want {
                    buf.reserve(want - buf.len());
                }
                let old = buf.len();
                buf.resize(buf.capacity().max(old + 1), 0);
                let n = loop {
                    match reader.read(&mut buf[old..]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                };
                buf.truncate(old + n);
                eof = n == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &mut out,
            &Record {
                event_id: 42,
                timestamp_ms: 1_700_000_000_000,
                kind: Kind::Pub,
                flags: 0,
                topic: "orders",
                headers: b"k=v x=1",
                body: payload,
            },
        );
        out
    }

    fn group_record(body: &[u8]) -> Record<'_> {
        Record {
            event_id: 9,
            timestamp_ms: 1,
            kind: Kind::Group,
            flags: 0,
            topic: "t",
            headers: b"",
            body,
        }
    }

    #[test]
    fn peek_reads_the_fixed_fields_and_stops_at_zero_fill() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            &Record {
                event_id: 42,
                timestamp_ms: 1_700_000_000_123,
                kind: Kind::Pub,
                flags: 0,
                topic: "t",
                headers: b"",
                body: b"x",
            },
        );
        let p = peek(&buf).expect("a record");
        assert_eq!(
            (p.len as usize, p.event_id, p.timestamp_ms),
            (buf.len(), 42, 1_700_000_000_123)
        );
        assert_eq!(peek(&buf[..PEEK_LEN - 1]), None);
        assert_eq!(peek(&[0u8; PEEK_LEN]), None);
    }

    #[test]
    fn group_bodies_round_trip() {
        for op in [
            GroupOp::Set {
                group: "workers",
                committed: 42,
                failed_at: 43,
                failures: 2,
                alone: true,
            },
            GroupOp::Set {
                group: "workers",
                committed: 42,
                failed_at: 43,
                failures: 1,
                alone: false,
            },
            GroupOp::Remove { group: "w" },
        ] {
            let body = op.encode();
            assert_eq!(group_record(&body).group_op(), Some(op.clone()));
            // One byte short of a set body is a version 2 body; two are
            // nothing; a remove body cut is nothing.
            let cut = if matches!(op, GroupOp::Set { .. }) {
                2
            } else {
                1
            };
            let short = &body[..body.len() - cut];
            assert_eq!(group_record(short).group_op(), None, "a cut body");
            let mut long = body.clone();
            long.push(0);
            assert_eq!(group_record(&long).group_op(), None, "a longer body");
        }
    }

    #[test]
    fn a_version_2_group_body_reads_as_not_sent_alone() {
        // Built by hand as version 2 wrote it: op, name, committed,
        // failed_at, failures, and nothing after.
        let mut v2 = vec![1u8, 1, b'g'];
        v2.extend_from_slice(&7u64.to_le_bytes());
        v2.extend_from_slice(&8u64.to_le_bytes());
        v2.extend_from_slice(&3u32.to_le_bytes());
        let want = GroupOp::Set {
            group: "g",
            committed: 7,
            failed_at: 8,
            failures: 3,
            alone: false,
        };
        assert_eq!(group_record(&v2).group_op(), Some(want.clone()));
        // Version 3 of the same state differs by the one trailing byte.
        let v3 = want.encode();
        assert_eq!((&v3[..v2.len()], v3.len()), (&v2[..], v2.len() + 1));
        // An `alone` byte other than 0 or 1 is malformed, not "true".
        let mut bad = v3.clone();
        if let Some(b) = bad.last_mut() {
            *b = 2;
        }
        assert_eq!(group_record(&bad).group_op(), None);
    }

    #[test]
    fn round_trip_with_crlf_and_nul() {
        let payload = b"a\r\nb\0c";
        let bytes = sample(payload);
        assert_eq!(bytes.len(), encoded_len(6, 7, payload.len()));
        match decode(&bytes) {
            Decoded::Record { rec, len } => {
                assert_eq!(len, bytes.len());
                assert_eq!(rec.event_id, 42);
                assert_eq!(rec.timestamp_ms, 1_700_000_000_000);
                assert_eq!(rec.kind, Kind::Pub);
                assert_eq!(rec.topic, "orders");
                assert_eq!(rec.headers, b"k=v x=1");
                assert_eq!(rec.body, payload);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = sample(b"payload");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            match decode(&bad) {
                Decoded::Record { .. } => panic!("flip at {i} not detected"),
                Decoded::Corrupt(_) | Decoded::Incomplete { .. } | Decoded::End => {}
            }
        }
    }

    #[test]
    fn truncated_record_is_incomplete() {
        let bytes = sample(b"payload");
        for cut in 1..bytes.len() {
            match decode(&bytes[..cut]) {
                Decoded::Incomplete { need } => assert!(need > cut),
                other => panic!("cut {cut}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn zero_fill_is_end() {
        assert_eq!(decode(&[0u8; 64]), Decoded::End);
        assert_eq!(decode(&[0u8; 2]), Decoded::End);
    }

    #[test]
    fn create_and_delete_bodies() {
        let mut out = Vec::new();
        let life = 5000u64.to_le_bytes();
        encode(
            &mut out,
            &Record {
                event_id: 1,
                timestamp_ms: 2,
                kind: Kind::Create,
                flags: 0,
                topic: "t",
                headers: b"",
                body: &life,
            },
        );
        let Decoded::Record { rec, .. } = decode(&out) else {
            panic!("decode failed")
        };
        assert_eq!(rec.life_ms(), Some(5000));
        assert_eq!(rec.delete_reason(), None);
    }

    #[test]
    fn scan_reports_torn_and_corrupt_tails() {
        let mut log = sample(b"one");
        log.extend(sample(b"two"));
        let whole = log.len() as u64;
        let mut seen = Vec::new();
        let end =
            scan(&log[..], |off, r| seen.push((off, r.body.to_vec()))).expect("in-memory read");
        assert_eq!(end, ScanEnd::Clean { offset: whole });
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].1, b"two");

        let torn = &log[..log.len() - 3];
        let end = scan(torn, |_, _| {}).expect("in-memory read");
        assert_eq!(end, ScanEnd::Torn { offset: whole / 2 });

        let mut bad = log.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let end = scan(&bad[..], |_, _| {}).expect("in-memory read");
        assert!(matches!(end, ScanEnd::Corrupt { offset, .. } if offset == whole / 2));
    }
}
