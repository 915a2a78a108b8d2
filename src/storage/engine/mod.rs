//! The storage engine: the persistence thread ([`writer`]) and the parts it
//! is made of — the one apply path and its undo log, the writer's state, the
//! commit loop's helpers (quorum, checkpoints, id lease, epochs) and the
//! writes each kind of request asks for (consumer groups, delayed messages,
//! lifetimes, retention, replication) — plus [`recovery`], which opens the
//! data directory and replays the log tail through the same apply path
//! before the writer thread starts.
//!
//! Runs on the writer thread (recovery: on the main thread, before it).

mod active_log;
mod apply;
mod checkpointer;
#[cfg(test)]
mod commit_tests;
mod delayed;
pub(in crate::storage) mod epochs;
mod execute;
#[cfg(test)]
pub(crate) mod fault;
mod groups;
pub(crate) mod lease;
mod lifetimes;
mod quorum;
mod quorum_gate;
#[cfg(test)]
mod quorum_tests;
pub(crate) mod recovery;
mod replica;
mod retention;
mod state;
mod state_checkpoint;
mod undo;
pub(crate) mod writer;
mod writer_state;
