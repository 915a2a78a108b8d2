//! Master–slave replication: the threads that copy the log ([`sender`] on
//! a master, [`receiver`] on a slave) with what they share ([`state`], and
//! [`quorum`]: the slaves' acknowledgements the writer waits for under
//! `replication.minSlaves`); semi-sync's held answers ([`sync`]); fencing
//! by epoch between the two servers of a pair ([`peer`]); how one reaches
//! the other, plain or TLS ([`dial`]).
//!
//! Which side of replication this server is ([`crate::role::Role`]) lives
//! in [`crate::role`], below everything, so storage and the broker need not
//! point up here. The [`sender`] and [`receiver`] threads depend on
//! `broker`.

pub mod dial;
pub mod error;
pub mod peer;
pub mod quorum;
pub mod receiver;
pub mod sender;
pub mod state;
pub mod sync;
