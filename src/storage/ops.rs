//! The writer's contract: what connections, timers and replication (a
//! slave's receiver, a master's REPL plan, PROMOTE) may ask the persistence
//! thread to do, and what it answers. Types only; no thread runs here.
//!
//! Requests travel through the one bounded crossbeam channel
//! (`worker.buffSize`) into the writer, sent by the writer handle
//! (`WriterHandle`); each carries its own reply sender, which must have
//! room for the result so the writer never blocks on a reply. After a commit the writer tells the timer threads about new
//! lifetimes and delayed messages through the unbounded [`TimerSenders`].

use std::fmt;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::log::record::DeleteReason;
use super::role::RoleClaim;
use crate::protocol::Message;

/// One change to apply, sent by a connection (or a timer) to the writer.
#[derive(Debug)]
pub enum WriteOp {
    Create {
        topic: String,
        life_ms: u64,
    },
    /// `create_id` set: delete only that incarnation of the topic (expiry
    /// must not remove a topic re-created under the same name).
    Delete {
        topic: String,
        reason: DeleteReason,
        create_id: Option<u64>,
    },
    Pub {
        topic: String,
        msg: Message,
    },
    MPub {
        topic: String,
        msgs: Vec<Message>,
    },
    DPub {
        topic: String,
        delay_ms: u64,
        msg: Message,
    },
    /// Deliver these pending delayed messages (ids of their DPUB records),
    /// in this order. Ids no longer pending are skipped.
    Fire {
        ids: Vec<u64>,
    },
    /// Delete sealed segments older than `store.maxDays` at `now_ms`.
    Retention {
        now_ms: u64,
    },
    /// A consumer group has consumed everything up to `position`.
    /// `expect_set: None` creates the group or moves it (a SUB); `Some(id)`
    /// commits only if the group exists and was last set by record `id`
    /// (an ACK: a GROUPDEL or a SUB that moved the group meanwhile wins);
    /// `Some(0)` only if the group does not exist (a SUB `-` creating it).
    GroupCommit {
        topic: String,
        group: String,
        position: u64,
        expect_set: Option<u64>,
    },
    /// A delivery of message `at` to the group ended without an ACK;
    /// `alone`: it was a batch of that message only.
    GroupFailed {
        topic: String,
        group: String,
        at: u64,
        alone: bool,
    },
    /// GROUPDEL.
    GroupDel {
        topic: String,
        group: String,
    },
    /// Copy message `at` to the `dlq` topic and commit the group past it.
    DeadLetter {
        topic: String,
        group: String,
        at: u64,
        dlq: String,
    },
    /// Master: how to serve a slave that asks for the records after
    /// `after_id` (see [`ReplPlan`]).
    ReplPlan {
        after_id: u64,
        /// The slave's history id (0: it has none yet) and epoch.
        history: u64,
        epoch: u64,
        /// The slave holds no records at all.
        empty: bool,
    },
    /// Slave: append these records from the master as they are (the
    /// master's ids and timestamps): whole records, whole MPUB batches.
    /// Records the slave has already are skipped.
    Replicate {
        records: Vec<u8>,
    },
    /// Slave: the master's id lease moved; keep at least this much.
    ReplLease {
        lease: u64,
    },
    /// Slave of an early stream: the master's durable bound moved
    /// (`ReplState::master_durable`, already raised); publish the records
    /// it frees. Writes nothing.
    ReplDurable,
    /// Slave: discard every topic and record (a full resync follows) and
    /// adopt the master's `history`. With `diverged_after`, first move the
    /// records after that id, which the master never had, into a file.
    ReplReset {
        history: u64,
        diverged_after: Option<u64>,
    },
    /// Slave: the snapshot of a full resync is applied; the data now
    /// belongs to `history` (until then a restart resyncs from scratch).
    ReplSynced {
        history: u64,
        /// The snapshot stood for every record up to this id.
        after_id: u64,
    },
    /// Slave becoming master: write the EPOCH record of a new epoch, with an
    /// id above every id the old master could have assigned.
    Promote,
    /// Write the durable role claim (`data/role`), after making everything
    /// written so far durable: after PROMOTE (master of the new epoch) or
    /// when stepping down for a master of a higher epoch.
    ClaimRole(RoleClaim),
    /// `--demote`: a promoted server becomes a slave on purpose. The records
    /// of its own epochs are moved aside, its data is reset for a full
    /// resync, and its claim says slave.
    Demote,
    /// Finish what is queued before it, fsync, checkpoint, and stop.
    Shutdown,
}

impl WriteOp {
    /// The topic a client's or a timer's request names (not replication's).
    pub fn topic(&self) -> Option<&str> {
        match self {
            WriteOp::Create { topic, .. }
            | WriteOp::Delete { topic, .. }
            | WriteOp::Pub { topic, .. }
            | WriteOp::MPub { topic, .. }
            | WriteOp::DPub { topic, .. }
            | WriteOp::GroupCommit { topic, .. }
            | WriteOp::GroupFailed { topic, .. }
            | WriteOp::GroupDel { topic, .. }
            | WriteOp::DeadLetter { topic, .. } => Some(topic),
            _ => None,
        }
    }

    /// The write that gives up on message `at` of a group after
    /// `maxDeliver`: its copy to `dlq` with the commit past it, or without
    /// a dlq the commit past it alone (if the group is still set by
    /// `expect_set`, when given).
    pub fn give_up(
        topic: &str,
        group: &str,
        at: u64,
        dlq: Option<&str>,
        expect_set: Option<u64>,
    ) -> WriteOp {
        let (topic, group) = (topic.to_string(), group.to_string());
        match dlq {
            Some(dlq) => WriteOp::DeadLetter {
                topic,
                group,
                at,
                dlq: dlq.to_string(),
            },
            None => WriteOp::GroupCommit {
                topic,
                group,
                position: at,
                expect_set,
            },
        }
    }

    /// Replication's own requests: their answers never wait for a slave's
    /// acknowledgement under semi-sync. A slave's REPL plan held behind a
    /// batch that waits for that very slave would wait for itself.
    pub fn answers_at_once(&self) -> bool {
        matches!(
            self,
            WriteOp::ReplPlan { .. }
                | WriteOp::Replicate { .. }
                | WriteOp::ReplLease { .. }
                | WriteOp::ReplDurable
                | WriteOp::ReplReset { .. }
                | WriteOp::ReplSynced { .. }
                | WriteOp::Promote
                | WriteOp::ClaimRole(_)
                | WriteOp::Demote
        )
    }

    /// Whether the request appends records someone asked for (a client, a
    /// consumer group's ACK, a timer): under `replication.minSlaves` those
    /// must reach the slaves before they are answered, or be undone.
    /// Retention, replication and PROMOTE's own records are not held.
    pub fn needs_quorum(&self) -> bool {
        matches!(
            self,
            WriteOp::Create { .. }
                | WriteOp::Delete { .. }
                | WriteOp::Pub { .. }
                | WriteOp::MPub { .. }
                | WriteOp::DPub { .. }
                | WriteOp::Fire { .. }
                | WriteOp::GroupCommit { .. }
                | WriteOp::GroupFailed { .. }
                | WriteOp::GroupDel { .. }
                | WriteOp::DeadLetter { .. }
        )
    }
}

/// How a master serves one slave (the answer to [`WriteOp::ReplPlan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplPlan {
    pub history: u64,
    pub epoch: u64,
    pub mode: ReplMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplMode {
    /// Send the records after `after_id`, from the log.
    Stream {
        after_id: u64,
    },
    /// The slave must discard what it has: send `snapshot` (in id order,
    /// every id ≤ `after_id`), then the records after `after_id`.
    Full {
        after_id: u64,
        snapshot: Vec<SnapItem>,
    },
    /// The slave has records after `keep_id` from an epoch this history
    /// ended there: it must move them aside, then resync.
    Diverged {
        keep_id: u64,
    },
    Refused(String),
}

/// One record of a full-resync snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapItem {
    /// A record built from the master's state (CREATE of a live topic,
    /// EPOCH), encoded.
    Built { id: u64, bytes: Vec<u8> },
    /// A record to copy from the log (a pending DPUB).
    Logged { id: u64, pos: u64, len: u32 },
}

impl SnapItem {
    pub fn id(&self) -> u64 {
        match self {
            SnapItem::Built { id, .. } | SnapItem::Logged { id, .. } => *id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOk {
    /// The event id of the record written.
    Id(u64),
    /// First and last event id of an MPUB.
    Range(u64, u64),
    /// A PUB or DPUB whose dedup key was seen within the window: nothing
    /// was written; the first publish's event id. Answered `OK <id> dup`.
    Dup(u64),
    /// An MPUB that repeats an earlier one (every key seen, in order):
    /// nothing was written; that MPUB's ids. Answered `OK <first> <last> dup`.
    DupRange(u64, u64),
    /// Shutdown (or a timer's request) finished.
    Done,
    /// The answer to [`WriteOp::ReplPlan`].
    Plan(Box<ReplPlan>),
}

/// Why the writer refused or failed a request. Nothing of a refused or
/// failed request is visible to readers. The connection maps each to an
/// `ERR` code; the texts are what the client reads after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    NoTopic(String),
    Exists(String),
    /// The request is well formed on the wire but not acceptable.
    Invalid(String),
    /// A failed fsync (or write) earlier made the store refuse writes.
    Poisoned(String),
    ShuttingDown,
    /// This request's storage step failed; the text names file and step.
    Storage(String),
    /// `replication.minSlaves`: too few slaves had the write durably in
    /// time; nothing of it stayed. The text says how many and how long.
    NoSlave(String),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::NoTopic(t) => write!(f, "no topic {t}"),
            WriteError::Exists(t) => write!(f, "topic {t} exists"),
            WriteError::Invalid(why) => f.write_str(why),
            WriteError::Poisoned(why) => {
                write!(
                    f,
                    "storage failed earlier, writes refused until restart: {why}"
                )
            }
            WriteError::ShuttingDown => f.write_str("server is shutting down"),
            WriteError::Storage(why) => write!(f, "storage failed: {why}"),
            WriteError::NoSlave(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for WriteError {}

pub type WriteResult = Result<WriteOk, WriteError>;

/// A client connection that takes its answers on its socket.
pub trait ReplySink: Send + Sync {
    /// Takes the answer to the connection's oldest write in flight (encoded,
    /// not sent yet). True when the sink has nothing waiting to be sent yet,
    /// so the caller must [`ReplySink::flush`] it once the batch is done.
    fn answer(&self, res: WriteResult) -> bool;
    /// Sends what the socket takes without waiting; true when nothing is
    /// left (or the connection is gone).
    fn flush(&self) -> bool;
    /// The connection's oldest write in flight will never be answered: the
    /// writer is gone with it still queued. Answers it with the error a
    /// caller gets when the writer is gone, and sends that.
    fn dropped(&self);
}

/// A connection's claim on the answer to one write. Dropped unanswered
/// (the writer gone with the request still queued, or its answer never
/// released), it tells the connection, which would otherwise wait for an
/// answer that never comes — as a caller's channel tells it by closing.
pub struct SinkTicket(Option<Arc<dyn ReplySink>>);

impl SinkTicket {
    pub fn new(sink: Arc<dyn ReplySink>) -> SinkTicket {
        SinkTicket(Some(sink))
    }

    /// The sink, to give it this write's answer.
    pub fn redeem(mut self) -> Option<Arc<dyn ReplySink>> {
        self.0.take()
    }
}

impl Drop for SinkTicket {
    fn drop(&mut self) {
        if let Some(sink) = self.0.take() {
            sink.dropped();
        }
    }
}

/// Where one write's answer goes.
pub enum Reply {
    /// A caller waiting on its own channel, which has room for every answer
    /// it awaits (the writer never blocks on a reply).
    Chan(Sender<WriteResult>),
    /// A client connection: the answer is written to its socket.
    Sink(SinkTicket),
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reply::Chan(_) => "Reply::Chan",
            Reply::Sink(_) => "Reply::Sink",
        })
    }
}

#[derive(Debug)]
pub struct WriteReq {
    pub op: WriteOp,
    /// Where the result goes.
    pub reply: Reply,
}

/// A topic incarnation whose life ends: (name, create_id).
pub type Expiry = (String, u64);

/// What the writer tells the timer threads after a commit.
#[derive(Clone)]
pub struct TimerSenders {
    /// (expires_ms, topic incarnation)
    pub lifetime: Sender<(u64, Expiry)>,
    /// (due_ms, DPUB event id)
    pub delay: Sender<(u64, u64)>,
}

pub struct TimerReceivers {
    pub lifetime: Receiver<(u64, Expiry)>,
    pub delay: Receiver<(u64, u64)>,
}

/// Unbounded: the writer must never block on a timer thread; entries are
/// a few words each and exist once per topic or pending message.
pub fn timer_channels() -> (TimerSenders, TimerReceivers) {
    let (lt, lr) = crossbeam_channel::unbounded();
    let (dt, dr) = crossbeam_channel::unbounded();
    (
        TimerSenders {
            lifetime: lt,
            delay: dt,
        },
        TimerReceivers {
            lifetime: lr,
            delay: dr,
        },
    )
}
