//! `bench matrix` and `bench peers`: start servers, run fixed rows, print
//! tables, with the CPU µs per message of server and bench (the two share
//! the machine, so the bench's own cost matters). Every server started here
//! lives in a [`procs::Proc`] guard that kills it by PID and waits for it when
//! dropped (also on error or panic); every temp directory lives in a
//! [`procs::TempDir`] guard that removes it.
//!
//! [`procs`] owns the guards and starting the servers, [`rows`] the publish
//! and drain rows both suites run, [`repl`] the matrix's replication rows
//! (master and slave pairs), [`footprint`] the RSS rows with many
//! subscribers, [`bridge`] the bridge into NATS JetStream; [`matrix`] and
//! [`peers`] are the two suites.
//! This file only declares them.

pub mod bridge;
pub mod footprint;
pub mod matrix;
pub mod peers;
mod procs;
mod repl;
mod rows;
