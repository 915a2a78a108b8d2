//! The file-descriptor budget: how many clients and open index files the
//! process's descriptor limit allows, with a reserve the writer can always
//! use.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit (both are
//! logged; "raised" only when it was: [`describe_limit`]). The budget then keeps a fixed reserve for what the server itself
//! opens (listener, log, lock, segments, the writer's temp files and a new
//! index file), a bounded set of index handles (see
//! `storage::handles`), and gives the rest to connections at two
//! descriptors each (the socket, and an index file a subscriber may hold
//! during a read). Past the connection cap clients get `ERR BUSY`, so no
//! number of idle clients can leave the writer without descriptors.
//! Called once by the main thread.

use std::io;

/// Descriptors kept for the server itself: stdio, listener, log file, data
/// lock, signal pipe, up to ~64 open segments, the writer's temp files.
const RESERVED: u64 = 128;
/// Descriptors a connection may use: its socket and an index being read.
const PER_CONNECTION: u64 = 2;
/// Bounds of the index-handle set.
const MIN_INDEX_HANDLES: u64 = 8;
const MAX_INDEX_HANDLES: u64 = 1024;
/// Never ask for more than this, even under an unlimited hard limit.
const HIGHEST_SOFT_LIMIT: u64 = 1 << 20;

/// What the descriptor limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdBudget {
    /// The soft limit in force.
    pub(crate) limit: u64,
    pub(crate) index_handles: usize,
    /// `min(limits.maxConnections, what the limit allows)`.
    pub(crate) max_connections: usize,
    /// True when the limit, not the config, decided `max_connections`.
    pub(crate) capped: bool,
}

/// Splits a descriptor limit between connections and index handles.
pub(crate) fn plan(limit: u64, configured_connections: usize) -> FdBudget {
    let spare = limit.saturating_sub(RESERVED);
    let index_handles = (spare / 8).clamp(MIN_INDEX_HANDLES, MAX_INDEX_HANDLES);
    let allowed = (spare.saturating_sub(index_handles) / PER_CONNECTION).max(1);
    let max_connections = (configured_connections as u64).min(allowed) as usize;
    FdBudget {
        limit,
        index_handles: index_handles as usize,
        max_connections,
        capped: allowed < configured_connections as u64,
    }
}

/// The soft and hard `RLIMIT_NOFILE` before and after raising the soft one
/// to the hard one: `(soft_before, soft_now, hard)`.
pub(crate) fn raise_nofile_limit() -> io::Result<(u64, u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before: u64 = lim.rlim_cur;
    let hard: u64 = lim.rlim_max;
    let want = hard.min(HIGHEST_SOFT_LIMIT);
    if want <= before {
        return Ok((before, before, hard));
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit from a struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, want, hard))
}

/// The start-up line about the limit, from [`raise_nofile_limit`]'s result.
pub(crate) fn describe_limit(before: u64, now: u64, hard: u64) -> String {
    if now > before {
        format!("file descriptors: soft limit {before} raised to {now} (hard limit {hard})")
    } else if now >= hard {
        format!("file descriptors: soft limit {now}, already at the hard limit ({hard})")
    } else {
        // Above the highest soft limit asked for (an unlimited hard limit).
        format!("file descriptors: soft limit {now} (hard limit {hard})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_only_when_it_was() {
        assert_eq!(
            describe_limit(1024, 4096, 4096),
            "file descriptors: soft limit 1024 raised to 4096 (hard limit 4096)"
        );
        let same = describe_limit(20_000, 20_000, 20_000);
        assert!(!same.contains("raised"), "{same}");
        assert_eq!(
            same,
            "file descriptors: soft limit 20000, already at the hard limit (20000)"
        );
        let unlimited = describe_limit(HIGHEST_SOFT_LIMIT, HIGHEST_SOFT_LIMIT, u64::MAX);
        assert!(!unlimited.contains("raised"), "{unlimited}");
    }

    #[test]
    fn a_small_limit_caps_connections_and_keeps_the_reserve() {
        let b = plan(1024, 1024);
        assert!(b.capped);
        assert_eq!(b.index_handles, 112);
        assert_eq!(b.max_connections, (1024 - 128 - 112) / 2);
        let used = RESERVED + b.index_handles as u64 + PER_CONNECTION * b.max_connections as u64;
        assert!(used <= 1024, "the budget fits the limit: {used}");
    }

    #[test]
    fn a_large_limit_leaves_the_configured_cap() {
        let b = plan(65_536, 1024);
        assert!(!b.capped);
        assert_eq!(b.max_connections, 1024);
        assert_eq!(b.index_handles, 1024);
    }

    #[test]
    fn a_tiny_limit_still_serves_one_client() {
        let b = plan(20, 1024);
        assert_eq!(b.max_connections, 1);
        assert_eq!(b.index_handles, 8);
    }

    #[test]
    fn raising_never_lowers_the_limit() -> io::Result<()> {
        let (before, now, hard) = raise_nofile_limit()?;
        assert!(now >= before && now <= hard.max(before));
        Ok(())
    }
}
