//! Test-only fault injection into the writer's commit steps.
//!
//! Compiled under `cfg(test)` only. A test arms one step to fail on its
//! n-th call (counting from 1) with a chosen error kind; the writer calls
//! [`hit`] just before the real I/O of that step. The arming is per thread
//! (the writer thread of the test sets it itself), so tests running in
//! parallel never see each other's faults.

use std::cell::RefCell;
use std::io;
use std::path::Path;

use crate::storage::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    IndexCreate,
    Roll,
    Lease,
    Write,
    Fsync,
}

impl Step {
    fn op(self) -> &'static str {
        match self {
            Step::IndexCreate => "create index",
            Step::Roll => "open segment",
            Step::Lease => "write id lease",
            Step::Write => "write segment",
            Step::Fsync => "fsync segment",
        }
    }
}

struct Armed {
    step: Step,
    /// Calls of `step` left before the one that fails.
    skip: u32,
    kind: io::ErrorKind,
}

thread_local! {
    static ARMED: RefCell<Option<Armed>> = const { RefCell::new(None) };
}

/// Makes the `nth` next call of `step` on this thread fail with `kind`.
pub(crate) fn arm(step: Step, nth: u32, kind: io::ErrorKind) {
    ARMED.with(|a| {
        *a.borrow_mut() = Some(Armed {
            step,
            skip: nth.saturating_sub(1),
            kind,
        })
    });
}

/// Disarms whatever is still armed on this thread.
pub(crate) fn disarm() {
    ARMED.with(|a| *a.borrow_mut() = None);
}

/// Called by the writer before the real I/O of `step`.
pub(crate) fn hit(step: Step) -> Result<(), StoreError> {
    ARMED.with(|a| {
        let mut a = a.borrow_mut();
        let Some(armed) = a.as_mut() else {
            return Ok(());
        };
        if armed.step != step {
            return Ok(());
        }
        if armed.skip > 0 {
            armed.skip -= 1;
            return Ok(());
        }
        let kind = armed.kind;
        *a = None;
        Err(StoreError::io(
            step.op(),
            Path::new("(injected)"),
            io::Error::new(kind, format!("injected {kind:?}")),
        ))
    })
}
