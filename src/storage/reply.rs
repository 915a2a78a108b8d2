//! Where the writer's answers go ([`Reply`]) and the thread side that
//! delivers a committed batch's answers ([`Releaser`]).
//!
//! A caller that waits for its answer gives a channel. A client connection
//! gives a [`ReplySink`] instead: the answering thread encodes the reply and
//! writes it to the client's socket itself, so the connection thread sleeps
//! once per request (in `read`) rather than twice (for the answer, then for
//! the next request). The writer never sends to sockets: it hands each
//! committed batch to the `replier` thread (`repl-sync` under semi-sync),
//! which releases it while the writer already builds and fsyncs the next.
//!
//! A socket that will not take a reply now (the client is not reading) is
//! never waited on: what it did not take stays with its sink, and the
//! releaser tries again every [`RETRY_EVERY`] until it is gone, so one slow
//! client never holds up another's replies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::ops::{Reply, ReplySink, WriteResult};

/// How often replies a socket would not take are tried again.
pub const RETRY_EVERY: Duration = Duration::from_millis(5);

impl Reply {
    /// Delivers one answer at once, on its own (answers that must not wait
    /// behind a batch, and the writer's last ones at shutdown).
    pub fn send(self, res: WriteResult) {
        Releaser::default().release(vec![(self, res)]);
    }
}

/// The answers of one committed batch, in request order (a connection
/// matches answers to requests by order).
#[derive(Debug)]
pub struct HeldReplies {
    /// The batch's last event id a slave must acknowledge first under
    /// semi-sync; 0 when the answers need not wait.
    pub needs_id: u64,
    /// When the writer committed the batch.
    pub committed: Instant,
    pub replies: Vec<(Reply, WriteResult)>,
}

/// Delivers batches of answers and keeps the sinks whose sockets would not
/// take everything yet.
#[derive(Default)]
pub struct Releaser {
    to_flush: Vec<Arc<dyn ReplySink>>,
    blocked: Vec<Arc<dyn ReplySink>>,
}

impl Releaser {
    /// Delivers every answer, then sends each sink's replies in one write.
    pub fn release(&mut self, replies: Vec<(Reply, WriteResult)>) {
        for (reply, res) in replies {
            match reply {
                Reply::Chan(tx) => {
                    let _ = tx.try_send(res);
                }
                Reply::Sink(ticket) => {
                    if let Some(sink) = ticket.redeem()
                        && sink.answer(res)
                    {
                        self.to_flush.push(sink);
                    }
                }
            }
        }
        for sink in self.to_flush.drain(..) {
            if !sink.flush() {
                self.blocked.push(sink);
            }
        }
    }

    /// Tries the sinks that had replies left over again.
    pub fn retry_blocked(&mut self) {
        self.blocked.retain(|sink| !sink.flush());
    }

    /// How long the thread may wait for more work before
    /// [`Releaser::retry_blocked`] is due.
    pub fn patience(&self, idle: Duration) -> Duration {
        if self.blocked.is_empty() {
            idle
        } else {
            RETRY_EVERY
        }
    }
}

/// The `replier` thread (without semi-sync): releases each batch the
/// writer hands over at once; ends when the writer drops its end.
pub fn run(rx: Receiver<HeldReplies>) {
    let mut releaser = Releaser::default();
    loop {
        match rx.recv_timeout(releaser.patience(Duration::from_secs(1))) {
            Ok(held) => releaser.release(held.replies),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        releaser.retry_blocked();
    }
}
