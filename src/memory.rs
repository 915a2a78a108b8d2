//! What the process does with memory it no longer uses: the allocator's
//! settings at start, and a `mem-trim` thread that gives freed memory back
//! to the OS after connections let go of their buffers.
//!
//! glibc malloc keeps freed memory in its arenas (one per thread that
//! allocated, up to eight per core) instead of returning it, so 100
//! subscribers that drained large batches and went idle kept their peak in
//! RSS. Two measures, measured with `smss-bench footprint`:
//! - at start ([`tune`]): a fixed mmap threshold (128 KiB, glibc's default,
//!   but fixed turns off the dynamic threshold that after one large free
//!   serves every later large buffer from the arenas, where it stays), and
//!   at most [`ARENA_MAX`] arenas, so memory freed by one thread is reused
//!   by the next instead of sitting in an arena of its own;
//! - [`released`], called by a connection thread after it dropped or shrank
//!   its buffers (a subscription going idle or ending, a connection
//!   closing), wakes the `mem-trim` thread, which waits [`TRIM_DELAY`] to
//!   gather more releases and calls `malloc_trim(0)` (it returns the free
//!   pages of every arena to the OS). At most one trim per `TRIM_DELAY`.
//!
//! Only the `mem-trim` thread calls `malloc_trim`; [`released`] never
//! blocks (a full channel means a trim is already due). On other C
//! libraries both are no-ops.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::OnceLock;

/// Most glibc malloc arenas (the default is eight per core).
pub const ARENA_MAX: i32 = 2;
/// Allocations this large or larger are mmapped and unmapped on free.
pub const MMAP_THRESHOLD: i32 = 128 << 10;
/// How long the trim thread gathers releases before one trim.
pub const TRIM_DELAY: Duration = Duration::from_millis(200);

static TRIM: OnceLock<Sender<()>> = OnceLock::new();

/// Sets the allocator up (call once, first thing, before other threads)
/// and starts the `mem-trim` thread.
pub fn tune() -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc parameters; called before the
    // server starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    if TRIM.set(tx).is_err() {
        return Ok(()); // already running (tests start several servers)
    }
    std::thread::Builder::new()
        .name("mem-trim".into())
        .stack_size(64 << 10)
        .spawn(move || trim_loop(&rx))?;
    Ok(())
}

/// Buffers were freed: have the trim thread return free memory soon.
pub fn released() {
    if let Some(tx) = TRIM.get() {
        // Full: a trim is already due; disconnected: no trim thread.
        let _: Result<(), TrySendError<()>> = tx.try_send(());
    }
}

fn trim_loop(rx: &Receiver<()>) {
    while rx.recv().is_ok() {
        std::thread::sleep(TRIM_DELAY);
        // What arrived meanwhile is served by this trim.
        while rx.try_recv().is_ok() {}
        trim();
    }
}

/// Returns the free pages of every malloc arena to the OS.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself; it only releases
    // free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
