//! Storage: the commit log, per-topic indexes, checkpoints and recovery.
//!
//! Layout of the data directory (`store.path`):
//!
//! ```text
//! LOCK                          held with an exclusive file lock while a server runs
//! checkpoint                    derived metadata (topics, counts, last event id), written atomically
//! log/00000000000000000000.log  commit-log segments, named by their start position
//! index/<topic>@<create_id>.idx per-topic index: fixed 20-byte entries (event id, position, length)
//! ```
//!
//! Only the persistence thread ([`engine::writer`]) creates, appends to,
//! truncates or deletes these files while a server runs; the offline
//! `smss --repair` ([`offline::repair`]) is the one other writer, with the
//! directory locked. Connection threads read segments and indexes with
//! pread (`read_exact_at`) and never past what the writer has flushed.
//!
//! # The layers
//!
//! ```text
//! log/      the log on disk: knows byte offsets, reads records
//!   segment     segment files and the shared, ordered set of them
//!   record      one record's layout, encode/decode, CRC (pure)
//!   logread     raw records by position or id: what a replication sender streams
//!   reader      a topic's messages through its index entries: what a subscriber gets
//!   chain       the segment chain: no gap, no overlap, covers the checkpoint
//!   torn        a torn tail (cut it) versus damage in the middle (stop)
//!   logscan     the whole log, offline: lengths, CRCs, ids, where it stops being clean
//! engine/   the persistence thread and what it is made of
//!   writer      the loop: take a batch, append, flush, fsync, commit, answer
//!   active_log  the segment being appended to: buffer, zero fill, flush, fdatasync, roll, cut-back
//!   state/      WriterState: topics, pending delays, ids, epochs, the batch's undo
//!     apply       the one apply path (live writes, recovery, replication)
//!     undo        the batch's undo log
//!     checkpoint  the writer's state to and from a checkpoint
//!     topic       the state's types (WriterTopic, Pending, Change, BatchCounts)
//!   execute     a request becomes records
//!   groups, delayed, lifetimes, retention, replica   the writes each kind of request asks for
//!   quorum, quorum_gate   replication.minSlaves on the writer's side
//!   epochs, lease, checkpointer, checkpoint_gate   epochs, the id lease file, writing checkpoints
//!   links       what the writer shares: the store view, STATS, role, replication state
//!   recovery    open the data directory, replay the tail through apply (main thread)
//! offline/  smss --check (check, read-only) and smss --repair (repair)
//! ```
//!
//! Beside the layers, shared by them: [`ops`] (the writer's contract:
//! requests in, results out), [`reply`] (where answers go: a caller's
//! channel or a connection's socket, released per batch), [`index`] and [`handles`] (per-topic index
//! files and the bounded set of open ones), [`checkpoint`] (the checkpoint
//! file), [`tail`] (the durable position the writer publishes), [`ids`]
//! (epoch id ranges), [`role`] (the `data/role` claim), [`view`] (what
//! the writer publishes to readers: topics, last event id, segments,
//! durable tail, index files; the broker holds it, storage imports no
//! broker). `log/` imports
//! nothing from `engine/` or `offline/`; `offline/` reuses the engine's
//! recovery and id lease.

pub(crate) mod checkpoint;
pub(crate) mod engine;
pub(crate) mod handles;
pub(crate) mod ids;
pub(crate) mod index;
pub(crate) mod log;
pub mod offline;
pub(crate) mod ops;
pub(crate) mod reply;
pub(crate) mod role;
pub(crate) mod tail;
pub mod view;

// The paths the binaries and the integration tests use: the record format
// (`smss-cli dump`, tests that write or inspect segments) and the offline
// tools (`smss --check`, `smss --repair`).
pub use log::record;
pub use offline::{check, repair};

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Every storage failure, with the file (and offset) it concerns.
#[derive(Debug)]
pub enum StoreError {
    /// An I/O call failed; `op` says which.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Bytes on disk are not what the format allows.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Another process holds the data directory.
    Locked { path: PathBuf },
    /// The directory was written in a storage format this build does not read.
    Version { path: PathBuf, found: u32 },
    /// An earlier failed fsync made the writer refuse writes; the text says which.
    Poisoned(String),
    /// `id` is past the range of ids the master of `epoch` may assign.
    IdsExhausted { epoch: u64, id: u64 },
    /// `replication.minSlaves`: the slaves did not acknowledge the batch in
    /// time, so it is undone like a failed write; the text says how many did.
    NoQuorum(String),
}

impl StoreError {
    /// A failed fsync: after it the file's contents cannot be trusted, so
    /// the writer refuses further writes. Every other failure (a full disk,
    /// no file descriptors) fails only the requests involved.
    pub fn is_sync_failure(&self) -> bool {
        match self {
            StoreError::Io { op, .. } => op.starts_with("fsync"),
            StoreError::Poisoned(_) => true,
            _ => false,
        }
    }
}

impl StoreError {
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { op, path, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            StoreError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "corrupt data in {} at offset {offset}: {reason}",
                path.display()
            ),
            StoreError::Locked { path } => write!(
                f,
                "data directory is in use by another smss process (lock held on {})",
                path.display()
            ),
            StoreError::Poisoned(why) => write!(f, "storage failed earlier: {why}"),
            StoreError::IdsExhausted { epoch, id } => write!(
                f,
                "event id {id} is past the ids of epoch {epoch} (the next epoch could not \
                 be started: see the log)"
            ),
            StoreError::NoQuorum(why) => f.write_str(why),
            StoreError::Version { path, found } => write!(
                f,
                "{} says the data directory is in storage format version {found}; this smss \
                 reads versions {} to {}: run the smss release that wrote it",
                path.display(),
                record::OLDEST_FORMAT_VERSION,
                record::FORMAT_VERSION
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// fsync a directory so that a created, renamed or deleted entry survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
