//! The one way into the writer: [`WriterHandle`] sends a [`WriteOp`]
//! through the bounded writer channel (`worker.buffSize`) and waits for its
//! answer; [`WriterHandle::submit`] hands a client connection's write over
//! with its socket as the place for the answer; [`Pipeline`] keeps writes
//! in flight with their answers on a channel (a group subscription's
//! commits); [`reply`] turns any failure into the `ERR` a
//! client reads.
//!
//! Every caller of the writer — connections, GROUPDEL and group
//! subscriptions, PROMOTE, the timers, the replication sender, receiver and
//! peer watch, start-up and shutdown — goes through here, so "the queue
//! stayed full", "the writer is gone" and "no answer in time" are told
//! apart the same way everywhere ([`CallError`]). A full queue is a reply,
//! never a hang (STYLE rule 7).
//!
//! Runs on the caller's thread; touches only the writer channel and the
//! caller's own reply channel (bounded, with room for every answer it
//! awaits, so the writer never blocks on a reply).

use std::fmt;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use crate::protocol::{ErrCode, ProtoError};
use crate::storage::ops::Reply;
use crate::storage::ops::{WriteError, WriteOk, WriteOp, WriteReq, WriteResult};

/// How long a connection waits for the writer's answer to a write it sent
/// before giving it up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call to the writer came to nothing or to a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The writer's queue stayed full for the whole send wait
    /// (`worker.sendTimeoutMs` for a pipelined write): nothing was sent.
    Busy,
    /// The writer is gone (shutting down, or it died) before answering.
    Gone,
    /// The request was sent but no answer came in time.
    Timeout,
    /// The writer's own answer: refused or failed, nothing of it stayed.
    Write(WriteError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Busy => f.write_str("the writer queue is full; nothing was written"),
            CallError::Gone => f.write_str("the writer is gone (shutting down)"),
            CallError::Timeout => f.write_str("the writer did not answer in time"),
            CallError::Write(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Write(e) => Some(e),
            _ => None,
        }
    }
}

/// What a client asked for when the call failed: the texts of the replies
/// that say the writer did not take or answer a request differ by request
/// (kept byte for byte as clients have read them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A pipelined CREATE, DELETE, PUB, MPUB or DPUB.
    Write,
    /// A group subscription's commit, failed delivery or dead letter.
    GroupWrite,
    /// A group SUB writing where the group starts.
    GroupPosition,
    /// GROUPDEL.
    GroupDel,
    /// PROMOTE, or a slave's REPL asking for its plan.
    Once,
}

/// The one mapping from a failed call to the `ERR` the client gets: the
/// writer's refusals by their kind, everything else `ERR INTERNAL`.
pub fn reply(e: &CallError, asked: Asked) -> ProtoError {
    let internal = |msg: &str| ProtoError::new(ErrCode::Internal, msg);
    match (e, asked) {
        (CallError::Write(e), _) => write_error(e),
        (CallError::Busy, Asked::Write) => {
            internal("the writer queue is full; nothing was written, try again")
        }
        (CallError::Gone, Asked::Write) => {
            internal("the server is shutting down; nothing was written")
        }
        (CallError::Busy | CallError::Gone, Asked::GroupWrite) => {
            internal("storage failed: the writer queue is full; nothing was written")
        }
        (CallError::Timeout, Asked::GroupWrite) => {
            internal("storage failed: the writer did not answer in time")
        }
        (_, Asked::Write | Asked::GroupDel) => internal("the writer did not answer in time"),
        (_, Asked::GroupPosition) => {
            internal("the writer did not answer; the group's position may not be set")
        }
        (_, Asked::Once) => internal("the writer did not answer"),
    }
}

/// The reply a refused or failed write gets.
fn write_error(e: &WriteError) -> ProtoError {
    let code = match e {
        WriteError::NoTopic(_) => ErrCode::NoTopic,
        WriteError::Exists(_) => ErrCode::Exists,
        WriteError::Invalid(_) => ErrCode::BadReq,
        WriteError::NoSlave(_) => ErrCode::NoSlave,
        WriteError::Poisoned(_) | WriteError::ShuttingDown | WriteError::Storage(_) => {
            ErrCode::Internal
        }
    };
    ProtoError::new(code, e.to_string())
}

/// The sending side of the writer channel, with how long a pipelined
/// write may wait for room in it (`worker.sendTimeoutMs`).
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: Sender<WriteReq>,
    send_wait: Duration,
}

impl WriterHandle {
    pub fn new(tx: Sender<WriteReq>, send_wait: Duration) -> WriterHandle {
        WriterHandle { tx, send_wait }
    }

    /// One request from a client's connection, answered before the
    /// connection goes on: waits up to `worker.sendTimeoutMs` or
    /// [`REPLY_TIMEOUT`], whichever is longer, for room in the queue and
    /// again for the answer.
    pub fn call(&self, op: WriteOp) -> Result<WriteOk, CallError> {
        self.call_within(op, self.send_wait.max(REPLY_TIMEOUT))
    }

    /// A client connection's write, answered on its socket (`reply` is its
    /// sink): waits up to `worker.sendTimeoutMs` for room in the queue;
    /// `Busy` or `Gone` when it was not sent.
    pub fn submit(&self, op: WriteOp, reply: Reply) -> Result<(), CallError> {
        match self.tx.send_timeout(WriteReq { op, reply }, self.send_wait) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = match e {
                    SendTimeoutError::Timeout(_) => CallError::Busy,
                    SendTimeoutError::Disconnected(_) => CallError::Gone,
                };
                // Not sent: the caller answers it, so its ticket must not.
                if let Reply::Sink(ticket) = e.into_inner().reply {
                    drop(ticket.redeem());
                }
                Err(err)
            }
        }
    }

    /// One request, waiting up to `wait` for room in the queue and again
    /// for the answer: for threads with their own patience (timers,
    /// replication, start-up and shutdown).
    pub fn call_within(&self, op: WriteOp, wait: Duration) -> Result<WriteOk, CallError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let reply = Reply::Chan(tx);
        send(&self.tx, WriteReq { op, reply }, wait)?;
        match rx.recv_timeout(wait) {
            Ok(res) => res.map_err(CallError::Write),
            Err(RecvTimeoutError::Timeout) => Err(CallError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Gone),
        }
    }
}

fn send(tx: &Sender<WriteReq>, req: WriteReq, wait: Duration) -> Result<(), CallError> {
    tx.send_timeout(req, wait).map_err(|e| match e {
        SendTimeoutError::Timeout(_) => CallError::Busy,
        SendTimeoutError::Disconnected(_) => CallError::Gone,
    })
}

/// Writes in flight from one thread, answered in the order they were sent
/// (the writer answers a connection's requests in order): submit several,
/// then settle them one by one. The reply channel has room for `capacity`
/// answers: the caller keeps no more than that in flight.
pub struct Pipeline {
    reply_tx: Sender<WriteResult>,
    reply_rx: Receiver<WriteResult>,
    inflight: usize,
}

impl Pipeline {
    pub fn new(capacity: usize) -> Pipeline {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(capacity);
        Pipeline {
            reply_tx,
            reply_rx,
            inflight: 0,
        }
    }

    /// Sends `op`, waiting up to `worker.sendTimeoutMs` for room in the
    /// writer's queue: `Busy` or `Gone` when it was not sent.
    pub fn submit(&mut self, w: &WriterHandle, op: WriteOp) -> Result<(), CallError> {
        let req = WriteReq {
            op,
            reply: Reply::Chan(self.reply_tx.clone()),
        };
        send(&w.tx, req, w.send_wait)?;
        self.inflight += 1;
        Ok(())
    }

    /// The answer to the oldest write in flight, waiting up to
    /// [`REPLY_TIMEOUT`]; `None` when nothing is in flight. After a
    /// `Timeout` the write still counts as in flight.
    pub fn settle_one(&mut self) -> Option<Result<WriteOk, CallError>> {
        if self.inflight == 0 {
            return None;
        }
        let res = match self.reply_rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(res) => res.map_err(CallError::Write),
            Err(RecvTimeoutError::Timeout) => return Some(Err(CallError::Timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Gone),
        };
        self.inflight -= 1;
        Some(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> WriteOp {
        WriteOp::Create {
            topic: "t".into(),
            life_ms: 0,
        }
    }

    #[test]
    fn a_full_queue_is_busy_and_a_dropped_writer_is_gone() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let w = WriterHandle::new(tx, Duration::from_millis(10));
        let mut p = Pipeline::new(4);
        assert_eq!(p.submit(&w, op()), Ok(()));
        assert_eq!(p.submit(&w, op()), Err(CallError::Busy));
        let first = rx.recv().expect("queued");
        first.reply.send(Ok(WriteOk::Id(7)));
        assert_eq!(p.settle_one(), Some(Ok(WriteOk::Id(7))));
        assert_eq!(p.settle_one(), None);
        drop(rx);
        assert_eq!(p.submit(&w, op()), Err(CallError::Gone));
        assert_eq!(
            w.call_within(op(), Duration::from_millis(10)),
            Err(CallError::Gone)
        );
    }

    #[test]
    fn a_call_gets_the_writers_answer_or_gone_when_it_drops_the_request() {
        let (tx, rx) = crossbeam_channel::bounded::<WriteReq>(1);
        let w = WriterHandle::new(tx, Duration::from_millis(10));
        let writer = std::thread::spawn(move || {
            let req = rx.recv().expect("first");
            req.reply.send(Err(WriteError::NoTopic("t".into())));
            drop(rx.recv().expect("second")); // dropped unanswered
        });
        let wait = Duration::from_secs(10);
        let refused = w.call_within(op(), wait);
        assert_eq!(
            refused,
            Err(CallError::Write(WriteError::NoTopic("t".into())))
        );
        assert_eq!(w.call_within(op(), wait), Err(CallError::Gone));
        writer.join().expect("writer");
    }

    #[test]
    fn no_answer_in_time_is_a_timeout() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let w = WriterHandle::new(tx, Duration::from_millis(10));
        let got = w.call_within(op(), Duration::from_millis(10));
        assert_eq!(got, Err(CallError::Timeout));
    }

    #[test]
    fn the_replies_clients_read() {
        let text = |e: &CallError, a| {
            let p = reply(e, a);
            format!("{:?} {}", p.code, p.msg)
        };
        let refused = CallError::Write(WriteError::NoTopic("t".into()));
        assert_eq!(text(&refused, Asked::Write), "NoTopic no topic t");
        let exists = CallError::Write(WriteError::Exists("t".into()));
        assert_eq!(text(&exists, Asked::Once), "Exists topic t exists");
        let invalid = CallError::Write(WriteError::Invalid("why".into()));
        assert_eq!(text(&invalid, Asked::GroupWrite), "BadReq why");
        let noslave = CallError::Write(WriteError::NoSlave("few".into()));
        assert_eq!(text(&noslave, Asked::Write), "NoSlave few");
        let down = CallError::Write(WriteError::ShuttingDown);
        assert_eq!(
            text(&down, Asked::Write),
            "Internal server is shutting down"
        );
        let storage = CallError::Write(WriteError::Storage("disk".into()));
        assert_eq!(
            text(&storage, Asked::GroupDel),
            "Internal storage failed: disk"
        );
        let cases = [
            (
                CallError::Busy,
                Asked::Write,
                "the writer queue is full; nothing was written, try again",
            ),
            (
                CallError::Gone,
                Asked::Write,
                "the server is shutting down; nothing was written",
            ),
            (
                CallError::Timeout,
                Asked::Write,
                "the writer did not answer in time",
            ),
            (
                CallError::Gone,
                Asked::GroupWrite,
                "storage failed: the writer queue is full; nothing was written",
            ),
            (
                CallError::Timeout,
                Asked::GroupWrite,
                "storage failed: the writer did not answer in time",
            ),
            (
                CallError::Busy,
                Asked::GroupPosition,
                "the writer did not answer; the group's position may not be set",
            ),
            (
                CallError::Gone,
                Asked::GroupDel,
                "the writer did not answer in time",
            ),
            (CallError::Timeout, Asked::Once, "the writer did not answer"),
        ];
        for (e, asked, msg) in cases {
            assert_eq!(
                text(&e, asked),
                format!("Internal {msg}"),
                "{e:?} {asked:?}"
            );
        }
    }
}
