//! Checkpoints: the derived metadata at one log position, written atomically.
//!
//! Recovery loads the newest checkpoint and replays the log from its
//! position, so restart time does not grow with the log. The file is text
//! (readable with `cat`) ending in a CRC line:
//!
//! ```text
//! smss-checkpoint 1
//! format <storage format version of the log, indexes and this file>
//! log_pos <global position covered>
//! last_event_id <id>
//! history <16 hex digits: the data directory's history id; 0 = none yet>
//! epoch <epoch> <first event id of it> <last event id of the epochs before>
//! topic <name> <create_id> <created_ms> <expires_ms> <entries> <first_entry> <first_id> <last_id>
//! delayed <dpub_event_id> <due_ms> <log_pos> <record_len> <topic>
//! group <topic> <name> <committed> <failed_at> <failures> <set_id> <alone: 0|1>
//! gap <first event id> <last event id>
//! dedup <topic> <event_id> <timestamp_ms> <request's first id> <last of it: 0|1> <key>
//! crc <crc32 of every byte before this line, 8 hex digits>
//! ```
//!
//! Written by the writer thread only: temp file, fsync, rename, fsync dir.
//!
//! The `format` line is the data directory's storage format version
//! ([`FORMAT_VERSION`]): a server refuses to open a directory written in a
//! version it does not know rather than misread it. A checkpoint without
//! the line was written before it existed, in version 1. Before version 3
//! a group line had no `alone` field (read as 0: not sent alone); the
//! field is required from version 3 on, so a cut line is not misread.
//! `gap` lines came with version 3 too: event ids this master assigned
//! whose records are not in its log — undone because too few slaves
//! acknowledged them (`replication.minSlaves`), or lost with a crash above
//! the id lease — so a slave that holds such records is told to move them
//! aside.
//! `dedup` lines (optional, in the order the keys were applied) are the
//! publish dedup keys still in their window when the checkpoint was
//! written (`storage/engine/state/dedup.rs`): recovery replays only the
//! log after the checkpoint, so without them a restart would forget the
//! keys of messages written before it. They need no new format version: a
//! checkpoint without them (every older one) reads as "no keys", and the
//! log and index formats are unchanged. An older server meeting one
//! refuses the checkpoint as damaged (the unknown line), and
//! `smss --repair` rebuilds it without them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::log::record::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use super::{StoreError, sync_dir};

pub const FILE_NAME: &str = "checkpoint";
const TMP_NAME: &str = "checkpoint.tmp";
const MAGIC: &str = "smss-checkpoint 1";
/// The first format whose group lines end in the `alone` field.
const ALONE_FORMAT_VERSION: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub create_id: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Index entries written (the index file holds exactly these).
    pub entries: u64,
    /// First entry still retained.
    pub first_entry: u64,
    pub first_id: u64,
    pub last_id: u64,
}

/// A pending delayed message: where its DPUB record is and when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayedMeta {
    pub id: u64,
    pub due_ms: u64,
    pub pos: u64,
    pub len: u32,
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Storage format version the directory was written in.
    pub format: u32,
    pub log_pos: u64,
    pub last_event_id: u64,
    /// The history this data belongs to (0: a slave that has not synced).
    pub history: u64,
    /// Every epoch after the first, oldest first.
    pub epochs: Vec<EpochMeta>,
    pub topics: Vec<TopicMeta>,
    pub delayed: Vec<DelayedMeta>,
    pub groups: Vec<GroupMeta>,
    /// Ranges of event ids (first, last) assigned here whose records are not
    /// in the log (see the module docs), ascending and disjoint.
    pub gaps: Vec<(u64, u64)>,
    /// Publish dedup keys within their window, oldest first.
    pub dedup: Vec<DedupMeta>,
}

/// A publish dedup key and the message it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupMeta {
    pub topic: String,
    /// 1-128 bytes of visible ASCII (the protocol's rule): one token.
    pub key: String,
    pub id: u64,
    pub ts_ms: u64,
    /// The first id of the request it came in (an MPUB's).
    pub first: u64,
    /// It was the last message of that request.
    pub last: bool,
}

/// A consumer group's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMeta {
    pub topic: String,
    pub name: String,
    pub committed: u64,
    pub failed_at: u64,
    pub failures: u32,
    pub set_id: u64,
    /// The last failed delivery of `failed_at` was that message alone.
    pub alone: bool,
}

/// The start of an epoch: written by PROMOTE as an EPOCH record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochMeta {
    pub epoch: u64,
    /// Event id of its EPOCH record.
    pub start_id: u64,
    /// The last event id of the epochs before it: a server that has records
    /// above this from an older epoch holds what this history never had.
    pub prev_last_id: u64,
}

impl Default for Checkpoint {
    fn default() -> Checkpoint {
        Checkpoint {
            format: FORMAT_VERSION,
            log_pos: 0,
            last_event_id: 0,
            history: 0,
            epochs: Vec::new(),
            topics: Vec::new(),
            delayed: Vec::new(),
            groups: Vec::new(),
            gaps: Vec::new(),
            dedup: Vec::new(),
        }
    }
}

impl Checkpoint {
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{MAGIC}");
        let _ = writeln!(s, "format {}", self.format);
        let _ = writeln!(s, "log_pos {}", self.log_pos);
        let _ = writeln!(s, "last_event_id {}", self.last_event_id);
        let _ = writeln!(s, "history {:016x}", self.history);
        for e in &self.epochs {
            let _ = writeln!(s, "epoch {} {} {}", e.epoch, e.start_id, e.prev_last_id);
        }
        for t in &self.topics {
            let _ = writeln!(
                s,
                "topic {} {} {} {} {} {} {} {}",
                t.name,
                t.create_id,
                t.created_ms,
                t.expires_ms,
                t.entries,
                t.first_entry,
                t.first_id,
                t.last_id
            );
        }
        for d in &self.delayed {
            let _ = writeln!(
                s,
                "delayed {} {} {} {} {}",
                d.id, d.due_ms, d.pos, d.len, d.topic
            );
        }
        for g in &self.groups {
            let _ = writeln!(
                s,
                "group {} {} {} {} {} {} {}",
                g.topic,
                g.name,
                g.committed,
                g.failed_at,
                g.failures,
                g.set_id,
                u8::from(g.alone)
            );
        }
        for (first, last) in &self.gaps {
            let _ = writeln!(s, "gap {first} {last}");
        }
        for d in &self.dedup {
            let _ = writeln!(
                s,
                "dedup {} {} {} {} {} {}",
                d.topic,
                d.id,
                d.ts_ms,
                d.first,
                u8::from(d.last),
                d.key
            );
        }
        let crc = crc32fast::hash(s.as_bytes());
        let _ = writeln!(s, "crc {crc:08x}");
        s
    }

    /// Parses a checkpoint; the error says which line is wrong.
    pub fn decode(text: &str) -> Result<Checkpoint, String> {
        let body_end = text
            .rfind("crc ")
            .ok_or_else(|| "missing crc line".to_string())?;
        let (body, crc_line) = text.split_at(body_end);
        let stored = u32::from_str_radix(crc_line.trim_end().trim_start_matches("crc "), 16)
            .map_err(|_| format!("bad crc line {crc_line:?}"))?;
        let actual = crc32fast::hash(body.as_bytes());
        if stored != actual {
            return Err(format!(
                "crc mismatch: stored {stored:08x}, computed {actual:08x}"
            ));
        }
        let mut lines = body.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!("first line is not {MAGIC:?}"));
        }
        // Absent in checkpoints written before the line existed: version 1.
        let mut cp = Checkpoint {
            format: 1,
            ..Checkpoint::default()
        };
        for (no, line) in lines.enumerate() {
            let bad = || format!("line {}: {line:?}", no + 2);
            let mut f = line.split(' ');
            let num = |s: Option<&str>| -> Result<u64, String> {
                s.and_then(|s| s.parse().ok()).ok_or_else(bad)
            };
            match f.next() {
                Some("format") => cp.format = u32::try_from(num(f.next())?).map_err(|_| bad())?,
                Some("log_pos") => cp.log_pos = num(f.next())?,
                Some("last_event_id") => cp.last_event_id = num(f.next())?,
                Some("history") => {
                    cp.history = f
                        .next()
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .ok_or_else(bad)?
                }
                Some("epoch") => cp.epochs.push(EpochMeta {
                    epoch: num(f.next())?,
                    start_id: num(f.next())?,
                    prev_last_id: num(f.next())?,
                }),
                Some("topic") => {
                    let name = f.next().ok_or_else(bad)?.to_string();
                    cp.topics.push(TopicMeta {
                        name,
                        create_id: num(f.next())?,
                        created_ms: num(f.next())?,
                        expires_ms: num(f.next())?,
                        entries: num(f.next())?,
                        first_entry: num(f.next())?,
                        first_id: num(f.next())?,
                        last_id: num(f.next())?,
                    });
                }
                Some("group") => {
                    let topic = f.next().ok_or_else(bad)?.to_string();
                    let name = f.next().ok_or_else(bad)?.to_string();
                    let committed = num(f.next())?;
                    let failed_at = num(f.next())?;
                    let failures = u32::try_from(num(f.next())?).map_err(|_| bad())?;
                    let set_id = num(f.next())?;
                    // The `format` line comes first, so the version is known.
                    let alone = match (cp.format >= ALONE_FORMAT_VERSION).then(|| f.next()) {
                        None => false,
                        Some(Some("0")) => false,
                        Some(Some("1")) => true,
                        Some(_) => return Err(bad()),
                    };
                    cp.groups.push(GroupMeta {
                        topic,
                        name,
                        committed,
                        failed_at,
                        failures,
                        set_id,
                        alone,
                    });
                }
                Some("gap") => cp.gaps.push((num(f.next())?, num(f.next())?)),
                Some("dedup") => {
                    let topic = f.next().ok_or_else(bad)?.to_string();
                    let id = num(f.next())?;
                    let ts_ms = num(f.next())?;
                    let first = num(f.next())?;
                    let last = match f.next() {
                        Some("0") => false,
                        Some("1") => true,
                        _ => return Err(bad()),
                    };
                    let key = f.next().filter(|k| !k.is_empty()).ok_or_else(bad)?;
                    cp.dedup.push(DedupMeta {
                        topic,
                        key: key.to_string(),
                        id,
                        ts_ms,
                        first,
                        last,
                    });
                }
                Some("delayed") => {
                    let id = num(f.next())?;
                    let due_ms = num(f.next())?;
                    let pos = num(f.next())?;
                    let len = u32::try_from(num(f.next())?).map_err(|_| bad())?;
                    let topic = f.next().ok_or_else(bad)?.to_string();
                    cp.delayed.push(DelayedMeta {
                        id,
                        due_ms,
                        pos,
                        len,
                        topic,
                    });
                }
                _ => return Err(bad()),
            }
            if f.next().is_some() {
                return Err(bad());
            }
        }
        Ok(cp)
    }

    /// Reads `dir/checkpoint`; `Ok(None)` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>, StoreError> {
        /// What to do about a damaged checkpoint: it is derived state.
        const REPAIR_HINT: &str = "the checkpoint is derived from the log: run `smss --check` to \
                                   see the damage and `smss --repair` to rebuild it";
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(StoreError::corrupt(
                    &path,
                    0,
                    format!("not a checkpoint (not text: {e}); {REPAIR_HINT}"),
                ));
            }
            Err(e) => return Err(StoreError::io("read checkpoint", &path, e)),
        };
        let cp = Checkpoint::decode(&text)
            .map_err(|reason| StoreError::corrupt(&path, 0, format!("{reason}; {REPAIR_HINT}")))?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&cp.format) {
            return Err(StoreError::Version {
                path,
                found: cp.format,
            });
        }
        Ok(Some(cp))
    }

    /// Writes `dir/checkpoint` atomically (temp, fsync, rename, fsync dir).
    pub fn store(&self, dir: &Path) -> Result<(), StoreError> {
        let tmp = dir.join(TMP_NAME);
        let path = dir.join(FILE_NAME);
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| StoreError::io("create checkpoint", &tmp, e))?;
        f.write_all(self.encode().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| StoreError::io("write checkpoint", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename checkpoint", &path, e))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            format: FORMAT_VERSION,
            log_pos: 12345,
            last_event_id: 99,
            history: 0x0123_4567_89ab_cdef,
            epochs: vec![EpochMeta {
                epoch: 1,
                start_id: 1_048_700,
                prev_last_id: 90,
            }],
            topics: vec![TopicMeta {
                name: "orders.v1".into(),
                create_id: 1,
                created_ms: 1_700_000_000_000,
                expires_ms: 0,
                entries: 40,
                first_entry: 2,
                first_id: 5,
                last_id: 98,
            }],
            delayed: vec![DelayedMeta {
                id: 77,
                due_ms: 1_700_000_060_000,
                pos: 4096,
                len: 250,
                topic: "orders.v1".into(),
            }],
            groups: vec![GroupMeta {
                topic: "orders.v1".into(),
                name: "billing".into(),
                committed: 97,
                failed_at: 98,
                failures: 2,
                set_id: 99,
                alone: true,
            }],
            gaps: vec![(100, 104), (1_048_700, 2_097_275)],
            dedup: vec![DedupMeta {
                topic: "orders.v1".into(),
                key: "order-17/a".into(),
                id: 98,
                ts_ms: 1_700_000_000_500,
                first: 97,
                last: true,
            }],
        }
    }

    #[test]
    fn round_trip() {
        let cp = sample();
        assert_eq!(Checkpoint::decode(&cp.encode()), Ok(cp));
    }

    #[test]
    fn the_format_version_is_written_and_an_unknown_one_refused() -> Result<(), StoreError> {
        let text = sample().encode();
        assert!(text.contains(&format!("\nformat {FORMAT_VERSION}\n")));
        // Written before the format line existed: version 1 (which had no
        // groups either).
        let old: String = text
            .lines()
            .filter(|l| {
                !["format ", "crc ", "group "]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let old = format!("{old}crc {:08x}\n", crc32fast::hash(old.as_bytes()));
        assert_eq!(Checkpoint::decode(&old).map(|c| c.format), Ok(1));
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        Checkpoint {
            format: FORMAT_VERSION + 1,
            ..sample()
        }
        .store(dir.path())?;
        match Checkpoint::load(dir.path()) {
            Err(e @ StoreError::Version { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("version {}", FORMAT_VERSION + 1)),
                    "{msg}"
                );
                assert!(msg.contains("checkpoint"), "names the file: {msg}");
            }
            other => panic!("an unknown format must be refused: {other:?}"),
        }
        Ok(())
    }

    /// `text` with its crc line recomputed, as a checkpoint writer would.
    fn resealed(text: &str) -> String {
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("crc "))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{body}crc {:08x}\n", crc32fast::hash(body.as_bytes()))
    }

    #[test]
    fn the_group_line_carries_alone_and_a_version_2_line_reads_as_not_alone() {
        let text = sample().encode();
        assert!(
            text.contains("\ngroup orders.v1 billing 97 98 2 99 1\n"),
            "{text}"
        );
        // Version 2 wrote the line without the field.
        let v2 = resealed(
            &text
                .replace(&format!("format {FORMAT_VERSION}"), "format 2")
                .replace(" 2 99 1\n", " 2 99\n"),
        );
        let cp = Checkpoint::decode(&v2).expect("a version 2 checkpoint");
        assert_eq!(cp.format, 2);
        assert_eq!(
            cp.groups[0],
            GroupMeta {
                alone: false,
                ..sample().groups[0].clone()
            }
        );
        // From version 3 on the field is required, and only 0 or 1.
        let cut = resealed(&text.replace(" 2 99 1\n", " 2 99\n"));
        assert!(Checkpoint::decode(&cut).is_err(), "a version 3 line cut");
        let odd = resealed(&text.replace(" 2 99 1\n", " 2 99 2\n"));
        assert!(Checkpoint::decode(&odd).is_err(), "alone is 0 or 1");
        let extra = resealed(&v2.replace(" 2 99\n", " 2 99 1\n"));
        assert!(Checkpoint::decode(&extra).is_err(), "no field in version 2");
    }

    #[test]
    fn any_change_is_detected() {
        let text = sample().encode();
        let tampered = text.replace("log_pos 12345", "log_pos 12346");
        assert!(Checkpoint::decode(&tampered).is_err());
        assert!(Checkpoint::decode(&text[..text.len() - 3]).is_err());
        assert!(Checkpoint::decode("").is_err());
    }

    #[test]
    fn store_and_load() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        assert_eq!(Checkpoint::load(dir.path())?, None);
        sample().store(dir.path())?;
        assert_eq!(Checkpoint::load(dir.path())?, Some(sample()));
        assert!(!dir.path().join(TMP_NAME).exists());
        std::fs::write(dir.path().join(FILE_NAME), "garbage")
            .map_err(|e| StoreError::io("write", dir.path(), e))?;
        assert!(matches!(
            Checkpoint::load(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
        Ok(())
    }
}
