//! The live subscriber of `e2e` and `delay` (subscribed at `$` before the
//! publisher starts) and the progress its publisher thread shares with it.

use std::sync::atomic::{AtomicBool, AtomicU64};

use super::common::{POLL, connect};
use crate::error::BenchError;
use crate::opts::Opts;
use crate::wire::{self, Conn, Reply};

/// Subscribes with `SUB <topic> $ batch=<batch>` and waits for `OK`.
pub(super) fn subscribe_new(o: &Opts, topic: &str) -> Result<Conn, BenchError> {
    let mut c = connect(o)?;
    c.send(format!("SUB {topic} $ batch={}\r\n", o.batch).as_bytes())?;
    match c.smss()? {
        Reply::Ok(..) => {}
        other => return Err(BenchError::Server(format!("SUB {topic}: {other:?}"))),
    }
    c.set_read_timeout(POLL)?;
    Ok(c)
}

/// Subscriber-side event of `e2e` and `delay`.
pub(super) enum Ev {
    Batch(u64),
    /// A message; the first 8 payload bytes as a little-endian number.
    Msg(u64),
    Alive,
    Fail(String),
}

pub(super) fn sub_event(b: &[u8]) -> Result<Option<(Ev, usize)>, BenchError> {
    Ok(wire::smss_frame(b)?.map(|(r, n)| {
        let ev = match r {
            Reply::Batch(k) => Ev::Batch(k),
            Reply::Msg { payload, .. } => {
                let p = &b[payload];
                let mut seq = [0u8; 8];
                let k = p.len().min(8);
                seq[..k].copy_from_slice(&p[..k]);
                Ev::Msg(u64::from_le_bytes(seq))
            }
            Reply::Alive => Ev::Alive,
            other => Ev::Fail(format!("{other:?}")),
        };
        (ev, n)
    }))
}

/// Shared state of a publisher thread and the subscriber.
pub(super) struct Progress {
    pub(super) published: AtomicU64,
    pub(super) done: AtomicBool,
    pub(super) errors: AtomicU64,
}
