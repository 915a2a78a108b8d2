//! Finding the next valid record after a bad one: is a bad record a torn
//! tail (nothing valid follows) or damage in the middle of the log?
//!
//! Pure scanning over one segment file with pread; used by recovery (main
//! thread, before the writer starts) and by the offline `smss --check` /
//! `--repair`. A full decode checks the CRC of up to the whole rest of the
//! buffer, so trying it at every byte of a garbage tail is quadratic; each
//! candidate offset is first put through [`plausible`], which reads only
//! the fixed header fields, and only the few that pass are decoded.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::{self, Decoded, HEADER_LEN, Kind};
use crate::storage::StoreError;

/// How far past a bad record recovery looks for a valid one before
/// deciding the bad record is a torn tail.
pub(crate) const SCAN_LIMIT: u64 = 64 << 20;
/// Headroom above the id lease for [`id_ceiling`]: every id on disk is at
/// most the lease (it is written before ids past it are handed out), so this
/// only covers a lease file that was lost or restored from an older copy.
const ID_SLACK: u64 = 1 << 32;

#[cfg(test)]
thread_local! {
    /// Full decodes (CRC checks) tried by [`find_valid_after`] on this thread.
    pub(crate) static FULL_DECODES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The highest event id a real record can carry, given the last id seen
/// and the id lease.
pub(crate) fn id_ceiling(last_id: u64, lease: u64) -> u64 {
    last_id.max(lease).saturating_add(ID_SLACK)
}

/// Whether `buf` could start a record with an id in `after_id+1..=max_id`,
/// judged by the fixed header fields only: the length is at least a header
/// and fits in `buf`, the kind is known, the topic is 1..=128 bytes and the
/// topic and headers fit in the length. Every record [`record::decode`]
/// accepts with such an id passes; random bytes almost never do.
pub(crate) fn plausible(buf: &[u8], after_id: u64, max_id: u64) -> bool {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return false;
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len < HEADER_LEN || len > buf.len() {
        return false;
    }
    if Kind::from_u8(h[24]).is_none() {
        return false;
    }
    let topic_len = h[26] as usize;
    let headers_len = u16::from_le_bytes([h[27], h[28]]) as usize;
    if !(1..=128).contains(&topic_len) || HEADER_LEN + topic_len + headers_len > len {
        return false;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[8..16]);
    let id = u64::from_le_bytes(id);
    id > after_id && id <= max_id
}

/// Looks for a valid record with an id in `after_id+1..=max_id` starting
/// anywhere in `from+1..len` of `file` (at most [`SCAN_LIMIT`] bytes on).
/// Returns its offset. Finding one means the bad bytes at `from` are damage
/// in the middle of the log, not a torn tail.
pub(crate) fn find_valid_after(
    file: &File,
    path: &Path,
    from: u64,
    len: u64,
    after_id: u64,
    max_id: u64,
) -> Result<Option<u64>, StoreError> {
    let end = len.min(from.saturating_add(SCAN_LIMIT));
    if from + 1 >= end {
        return Ok(None);
    }
    let mut buf = vec![0u8; (end - from - 1) as usize];
    file.read_exact_at(&mut buf, from + 1)
        .map_err(|e| StoreError::io("read segment", path, e))?;
    for i in 0..buf.len() {
        let rest = &buf[i..];
        if !plausible(rest, after_id, max_id) {
            continue;
        }
        #[cfg(test)]
        FULL_DECODES.with(|n| n.set(n.get() + 1));
        if let Decoded::Record { rec, .. } = record::decode(rest)
            && rec.event_id > after_id
        {
            return Ok(Some(from + 1 + i as u64));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::super::record::{Record, encode};
    use super::*;

    /// xorshift64*: reproducible "random" garbage without a crate.
    fn garbage(n: usize, mut seed: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            v.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        v.truncate(n);
        v
    }

    fn rec(id: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &mut out,
            &Record {
                event_id: id,
                timestamp_ms: 1,
                kind: Kind::Pub,
                flags: 0,
                topic: "t",
                headers: b"",
                body: b"hello",
            },
        );
        out
    }

    fn file_with(bytes: &[u8]) -> Result<(tempfile::TempDir, File), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("seg.log");
        std::fs::File::create(&path)?.write_all(bytes)?;
        let f = File::open(&path)?;
        Ok((dir, f))
    }

    #[test]
    fn every_valid_record_is_plausible() {
        let r = rec(10);
        assert!(plausible(&r, 9, id_ceiling(9, 0)));
        assert!(!plausible(&r, 10, id_ceiling(10, 0)), "id must increase");
        assert!(!plausible(&r, 0, 9), "id above the ceiling");
        assert!(!plausible(&r[..r.len() - 1], 9, u64::MAX), "must fit");
    }

    #[test]
    fn random_bytes_cost_almost_no_crc_checks() -> Result<(), Box<dyn std::error::Error>> {
        // A 1 MiB garbage tail: without the cheap header checks every one
        // of its offsets whose length field fits would be CRC-checked.
        let bytes = garbage(1 << 20, 0x9e37_79b9_7f4a_7c15);
        let (_d, f) = file_with(&bytes)?;
        FULL_DECODES.with(|n| n.set(0));
        let found = find_valid_after(
            &f,
            Path::new("seg.log"),
            0,
            bytes.len() as u64,
            1000,
            id_ceiling(1000, 1000 + (1 << 20)),
        )?;
        assert_eq!(found, None);
        let tried = FULL_DECODES.with(|n| n.get());
        assert!(tried < 4, "{tried} full decodes on 1 MiB of garbage");
        Ok(())
    }

    #[test]
    fn a_valid_record_after_garbage_is_found() -> Result<(), Box<dyn std::error::Error>> {
        let mut bytes = garbage(100_000, 7);
        let at = bytes.len() as u64;
        bytes.extend(rec(1001));
        bytes.extend(garbage(5000, 8));
        let (_d, f) = file_with(&bytes)?;
        let len = bytes.len() as u64;
        let p = Path::new("seg.log");
        let ceiling = id_ceiling(1000, 0);
        assert_eq!(find_valid_after(&f, p, 0, len, 1000, ceiling)?, Some(at));
        // An old id (already replayed) does not count.
        assert_eq!(find_valid_after(&f, p, 0, len, 1001, ceiling)?, None);
        Ok(())
    }
}
