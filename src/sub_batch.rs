//! One subscription batch, checked and then sent in bounded chunks, so a
//! subscription's memory does not grow with `batch=` or the batch's bytes.
//!
//! A batch is announced by its count (`BATCH <n>`), and a damaged record
//! must never be half-sent, so it goes in two passes over the index entries
//! and records, each a chunk ([`CHUNK_BYTES`] of records, or one larger
//! record) at a time:
//! 1. [`Batcher::prepare`] reads every record of the batch with pread and
//!    checks it (CRC, event id, kind) without keeping it. The batch ends
//!    before the first record that fails the check: the intact records
//!    before it are the batch, and the next batch (after the ACK) starts at
//!    the damaged record, whose error is then the subscription's
//!    `ERR INTERNAL` (a damaged first record is an error at once). The
//!    first chunk is kept encoded, so a batch of one chunk is read once.
//! 2. [`Batcher::send`] writes `BATCH <n>` and the kept chunk, then reads,
//!    encodes and writes the rest chunk by chunk into the same buffer. The
//!    segments read in pass 1 stay open ([`Reader`] keeps them), so
//!    retention cannot take them away in between. Should a record still
//!    fail here (its bytes changed between the passes: a failing disk),
//!    part of the batch is out and cannot be taken back: `send` says so and
//!    the caller closes the connection (a group's batch is then delivered
//!    again, as after any lost connection).
//!
//! Runs on the subscriber's connection thread (plain and group SUB); it
//! reads the topic's index and the segments by pread, writes to the socket
//! through [`Wire::write_raw`], and touches no lock but the segment set's.

use std::fs::File;
use std::io;

use log::warn;

use crate::broker::Broker;
use crate::protocol::{encode_count, encode_msg};
use crate::storage::index::{self, Entry};
use crate::storage::log::reader::{ReadError, ReadErrorKind, Reader};
use crate::storage::view::Topic;
use crate::wire::Wire;

/// Record bytes read, encoded and written at a time (one record may be
/// larger: it is then read alone).
pub(crate) const CHUNK_BYTES: usize = 32 << 10;
/// A batch stops growing past this many record bytes (at least one
/// message): it bounds the time pass 1 takes before anything is sent.
pub(crate) const MAX_BATCH_BYTES: u64 = 1 << 20;
/// Index entries read at a time.
const ENTRY_BLOCK: usize = 256;
/// Room kept in front of the first chunk for the `BATCH <n>` line.
const HEAD: usize = 32;

/// Why [`Batcher::prepare`] found no batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// No segment holds the first record the index names: retention
    /// deleted it, or the index is wrong.
    NoSegment(String),
    Other(String),
}

/// A batch checked by [`Batcher::prepare`] and ready to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// First index entry.
    pub(crate) from: u64,
    /// Messages (at least one).
    pub(crate) n: usize,
    pub(crate) first_id: u64,
    pub(crate) last_id: u64,
}

/// What stopped a walk over entries.
enum Stop {
    Index(io::Error),
    Read(ReadError),
    Write(io::Error),
}

/// The buffers of one subscription's batches, each bounded.
#[derive(Debug)]
pub(crate) struct Batcher {
    reader: Reader,
    entries: Vec<Entry>,
    /// [`HEAD`] bytes of room, then the encoded first chunk of the plan;
    /// during [`Batcher::send`], each further chunk.
    staged: Vec<u8>,
    /// Messages in the kept first chunk.
    staged_n: usize,
}

impl Batcher {
    pub(crate) fn new() -> Batcher {
        Batcher {
            reader: Reader::bounded(CHUNK_BYTES),
            entries: Vec::new(),
            staged: Vec::new(),
            staged_n: 0,
        }
    }

    /// Pass 1: checks up to `want` messages from index entry `from` (at
    /// most [`MAX_BATCH_BYTES`] of records), up to the first damaged one.
    /// Queues nothing.
    pub(crate) fn prepare(
        &mut self,
        broker: &Broker,
        topic: &Topic,
        from: u64,
        want: usize,
    ) -> Result<Plan, Failed> {
        self.reader.unpin();
        self.staged.clear();
        self.staged.resize(HEAD, 0);
        self.staged_n = 0;
        let index = broker
            .index_of(topic)
            .map_err(|e| Failed::Other(index_error(topic, &e)))?;
        let mut plan = Plan {
            from,
            n: 0,
            first_id: 0,
            last_id: 0,
        };
        let Batcher {
            reader,
            entries,
            staged,
            staged_n,
        } = self;
        let res = walk(&index, entries, from, want, MAX_BATCH_BYTES, |win| {
            let first = plan.n == 0;
            let mut ok = 0;
            let res = reader.read(&broker.store.segments, &topic.name, win, |m| {
                if first {
                    encode_msg(staged, m.event_id, m.timestamp_ms, m.headers, m.payload);
                }
                ok += 1;
            });
            if first {
                *staged_n = ok;
                plan.first_id = win.first().map_or(0, |e| e.event_id);
            }
            if let Some(last) = ok.checked_sub(1).and_then(|i| win.get(i)) {
                plan.last_id = last.event_id;
            }
            plan.n += ok;
            res.map_err(Stop::Read)
        });
        match res {
            Ok(()) if plan.n > 0 => Ok(plan),
            Ok(()) => Err(Failed::Other(format!("an empty batch of {}", topic.name))),
            Err(Stop::Read(e)) if plan.n > 0 => {
                warn!(
                    "{}: batch cut to the {} intact messages before a damaged one: {e}",
                    topic.name, plan.n
                );
                Ok(plan)
            }
            Err(Stop::Read(e)) => Err(match e.kind {
                ReadErrorKind::NoSegment => Failed::NoSegment(e.to_string()),
                _ => Failed::Other(e.to_string()),
            }),
            Err(Stop::Index(e)) => Err(Failed::Other(index_error(topic, &e))),
            Err(Stop::Write(e)) => Err(Failed::Other(e.to_string())),
        }
    }

    /// Pass 2: writes `BATCH <n>` and the plan's messages, chunk by chunk.
    /// `Ok(Err(why))`: a record failed after part of the batch went out;
    /// the caller must close the connection.
    pub(crate) fn send(
        &mut self,
        wire: &mut Wire,
        broker: &Broker,
        topic: &Topic,
        plan: &Plan,
    ) -> io::Result<Result<(), String>> {
        let mut line = Vec::with_capacity(HEAD);
        encode_count(&mut line, "BATCH", plan.n as u64);
        let start = HEAD.saturating_sub(line.len());
        if let Some(room) = self.staged.get_mut(start..HEAD) {
            room.copy_from_slice(&line);
        }
        wire.write_raw(self.staged.get(start..).unwrap_or_default())?;
        let rest = plan.n.saturating_sub(self.staged_n);
        let mut res = Ok(());
        if rest > 0 {
            let from = plan.from + self.staged_n as u64;
            let Batcher {
                reader,
                entries,
                staged,
                ..
            } = self;
            res = broker
                .index_of(topic)
                .map_err(Stop::Index)
                .and_then(|index| {
                    walk(&index, entries, from, rest, u64::MAX, |win| {
                        staged.clear();
                        reader
                            .read(&broker.store.segments, &topic.name, win, |m| {
                                encode_msg(staged, m.event_id, m.timestamp_ms, m.headers, m.payload)
                            })
                            .map_err(Stop::Read)?;
                        wire.write_raw(staged).map_err(Stop::Write)
                    })
                });
        }
        self.reader.unpin();
        self.staged.clear();
        if self.staged.capacity() > 2 * CHUNK_BYTES + HEAD {
            self.staged = Vec::new(); // one large record grew it
        }
        match res {
            Ok(()) => Ok(Ok(())),
            Err(Stop::Write(e)) => Err(e),
            Err(Stop::Read(e)) => Ok(Err(e.to_string())),
            Err(Stop::Index(e)) => Ok(Err(index_error(topic, &e))),
        }
    }

    /// Gives every buffer back (a subscription waiting for an ACK or for
    /// new messages); true when there was something to give.
    pub(crate) fn release(&mut self) -> bool {
        let held = self.staged.capacity() > 0 || self.entries.capacity() > 0;
        self.reader.release();
        self.staged = Vec::new();
        self.entries = Vec::new();
        held
    }
}

fn index_error(topic: &Topic, e: &io::Error) -> String {
    format!("reading the index of {}: {e}", topic.name)
}

/// Walks `want` index entries from `from` in windows of at most
/// [`CHUNK_BYTES`] of records (at least one entry each), stopping after
/// `cap` record bytes (at least one entry in all) or at `each`'s error.
fn walk(
    index: &File,
    entries: &mut Vec<Entry>,
    from: u64,
    want: usize,
    cap: u64,
    mut each: impl FnMut(&[Entry]) -> Result<(), Stop>,
) -> Result<(), Stop> {
    let end = from + want as u64;
    let (mut at, mut bytes, mut any) = (from, 0u64, false);
    while at < end {
        let n = usize::try_from(end - at).map_or(ENTRY_BLOCK, |n| n.min(ENTRY_BLOCK));
        entries.clear();
        index::read_entries(index, at, n, entries).map_err(Stop::Index)?;
        let mut i = 0;
        while i < entries.len() {
            let (mut j, mut window, mut capped) = (i, 0u64, false);
            while let Some(e) = entries.get(j) {
                let len = u64::from(e.len);
                if any && bytes + len > cap {
                    capped = true;
                    break;
                }
                if j > i && window + len > CHUNK_BYTES as u64 {
                    break;
                }
                (window, bytes, any) = (window + len, bytes + len, true);
                j += 1;
            }
            if j > i {
                each(&entries[i..j])?;
            }
            if capped {
                return Ok(());
            }
            i = j;
        }
        at += n as u64;
    }
    Ok(())
}
