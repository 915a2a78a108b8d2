//! Per-topic index (the consume queue): fixed-size entries, one per message.
//!
//! Entry `i` of a topic is at byte `i * ENTRY_LEN` of its index file:
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 8    | event id (strictly increasing)          |
//! | 8      | 8    | global log position of the record       |
//! | 16     | 4    | record length in bytes                  |
//!
//! Because ids increase, "first message after id N" is a binary search over
//! entry numbers, a handful of 20-byte preads. The writer appends; readers
//! only read entries below the topic's published count.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const ENTRY_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub event_id: u64,
    pub pos: u64,
    pub len: u32,
}

impl Entry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.event_id.to_le_bytes());
        out.extend_from_slice(&self.pos.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    /// Decodes one entry; `b` must hold at least [`ENTRY_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Option<Entry> {
        let b = b.get(..ENTRY_LEN)?;
        let mut id = [0u8; 8];
        let mut pos = [0u8; 8];
        let mut len = [0u8; 4];
        id.copy_from_slice(&b[0..8]);
        pos.copy_from_slice(&b[8..16]);
        len.copy_from_slice(&b[16..20]);
        Some(Entry {
            event_id: u64::from_le_bytes(id),
            pos: u64::from_le_bytes(pos),
            len: u32::from_le_bytes(len),
        })
    }
}

/// `<topic>@<create_id>.idx`: the create id keeps a re-created topic's index
/// apart from the deleted one's (`@` cannot appear in a topic name).
pub fn file_name(topic: &str, create_id: u64) -> String {
    format!("{topic}@{create_id}.idx")
}

/// Something entries can be read from by number (a file, or a Vec in tests).
pub trait EntrySource {
    fn entry(&self, i: u64) -> io::Result<Entry>;
}

impl EntrySource for File {
    fn entry(&self, i: u64) -> io::Result<Entry> {
        let mut b = [0u8; ENTRY_LEN];
        self.read_exact_at(&mut b, i * ENTRY_LEN as u64)?;
        Entry::decode(&b).ok_or_else(|| io::Error::other("short index entry"))
    }
}

impl EntrySource for [Entry] {
    fn entry(&self, i: u64) -> io::Result<Entry> {
        self.get(i as usize)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no such entry"))
    }
}

/// The number of the first entry in `lo..hi` whose event id is greater than
/// `after` (`hi` when there is none). Entries must be sorted by event id.
pub fn search_after<S: EntrySource + ?Sized>(
    src: &S,
    mut lo: u64,
    mut hi: u64,
    after: u64,
) -> io::Result<u64> {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if src.entry(mid)?.event_id <= after {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Reads entries `from..from + n` in one pread.
pub fn read_entries(file: &File, from: u64, n: usize, out: &mut Vec<Entry>) -> io::Result<()> {
    let mut buf = vec![0u8; n * ENTRY_LEN];
    file.read_exact_at(&mut buf, from * ENTRY_LEN as u64)?;
    out.extend(buf.chunks_exact(ENTRY_LEN).filter_map(Entry::decode));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(ids: &[u64]) -> Vec<Entry> {
        ids.iter()
            .map(|&id| Entry {
                event_id: id,
                pos: id * 100,
                len: 50,
            })
            .collect()
    }

    #[test]
    fn search_finds_first_greater() -> io::Result<()> {
        let e = entries(&[3, 5, 9, 10, 20]);
        let n = e.len() as u64;
        assert_eq!(search_after(&e[..], 0, n, 0)?, 0);
        assert_eq!(search_after(&e[..], 0, n, 3)?, 1);
        assert_eq!(search_after(&e[..], 0, n, 4)?, 1);
        assert_eq!(search_after(&e[..], 0, n, 9)?, 3);
        assert_eq!(search_after(&e[..], 0, n, 19)?, 4);
        assert_eq!(search_after(&e[..], 0, n, 20)?, 5);
        assert_eq!(search_after(&e[..], 0, n, u64::MAX)?, 5);
        // A lower bound (retention) is respected.
        assert_eq!(search_after(&e[..], 2, n, 0)?, 2);
        assert_eq!(search_after(&e[..], 0, 0, 0)?, 0);
        Ok(())
    }

    #[test]
    fn search_agrees_with_linear_scan() -> io::Result<()> {
        let ids: Vec<u64> = (0..200).map(|i| i * 3 + (i % 2)).collect();
        let e = entries(&ids);
        for after in 0..620 {
            let linear = e.iter().position(|x| x.event_id > after).unwrap_or(e.len()) as u64;
            assert_eq!(
                search_after(&e[..], 0, e.len() as u64, after)?,
                linear,
                "after {after}"
            );
        }
        Ok(())
    }

    #[test]
    fn file_round_trip() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(file_name("t", 1));
        let e = entries(&[1, 2, 7]);
        let mut bytes = Vec::new();
        for x in &e {
            x.encode_into(&mut bytes);
        }
        assert_eq!(bytes.len(), 3 * ENTRY_LEN);
        std::fs::write(&path, &bytes)?;
        let f = File::open(&path)?;
        let mut out = Vec::new();
        read_entries(&f, 1, 2, &mut out)?;
        assert_eq!(out, e[1..].to_vec());
        assert_eq!(search_after(&f, 0, 3, 2)?, 2);
        assert!(read_entries(&f, 2, 2, &mut out).is_err());
        Ok(())
    }
}
