//! The storage engine: the persistence thread ([`writer`]) and the parts it
//! is made of, plus [`recovery`], which opens the data directory and replays
//! the log tail through the same apply path before the writer thread starts.
//!
//! The writer is a loop that composes two owned parts:
//! - `active_log::ActiveLog`: the segment being appended to (buffer, zero
//!   fill ahead, flush, fdatasync, roll, cut-back of a failed batch);
//! - `state::WriterState` (the `state/` folder): what the records add up
//!   to (topics, pending delays, last id, lease, history, epochs) and the
//!   batch being built, with the one apply path (`state/apply`), the undo
//!   of a failed batch (`state/undo`) and its checkpoint
//!   (`state/checkpoint`) as its methods.
//!
//! Around them: the commit loop's helpers (quorum, checkpointer, id lease,
//! epochs) and the writes each kind of request asks for (execute; consumer
//! groups, delayed messages, lifetimes, retention, replication).
//!
//! What the writer shares with the rest of the server (the published
//! store view, STATS, the role, replication state) comes in as
//! `links::WriterLinks`, built by the broker (or by `--repair`).
//!
//! Runs on the writer thread (recovery: on the main thread, before it).

mod active_log;
mod chains;
mod checkpoint_gate;
mod checkpointer;
#[cfg(test)]
mod commit_tests;
mod delayed;
#[cfg(test)]
mod early_tests;
pub(in crate::storage) mod epochs;
mod execute;
#[cfg(test)]
pub(crate) mod fault;
mod groups;
pub(crate) mod lease;
mod lifetimes;
pub(crate) mod links;
mod quorum;
mod quorum_gate;
#[cfg(test)]
mod quorum_tests;
pub(crate) mod recovery;
mod replica;
mod retention;
mod state;
#[cfg(test)]
mod test_writer;
pub(crate) mod writer;
