//! The commit log on disk: segment files, the record format, and every
//! piece of code that knows byte offsets in the log and reads it.
//!
//! Nothing here changes the writer's state; the writer appends through
//! [`segment`] and everything else only reads (pread, never past what the
//! writer has flushed). Which reader is for what:
//!
//! - [`record`]: one record's byte layout, encode/decode and CRC (pure);
//! - [`segment`]: the segment files and the shared, ordered set of them;
//! - [`logread`]: raw records by position or event id, for replication
//!   senders (and the writer finding a slave's divergent tail);
//! - [`reader`]: a topic's messages, fetched through its index entries, for
//!   subscribers;
//! - [`chain`]: the segment chain (no gap, no overlap, covers the checkpoint);
//! - [`torn`]: a torn tail versus damage in the middle of the log (recovery);
//! - [`logscan`]: the whole log, offline (`smss --check`, `smss --repair`).

pub(in crate::storage) mod chain;
pub(crate) mod logread;
pub(in crate::storage) mod logscan;
pub(crate) mod reader;
pub mod record;
pub(crate) mod segment;
pub(in crate::storage) mod torn;
