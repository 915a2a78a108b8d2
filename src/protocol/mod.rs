//! The smss wire protocol, version 1: turns client bytes into [`Request`]s and server
//! replies into bytes. The protocol (restated in README.md's Protocol section) is a
//! fixed contract; this module is the server's only implementation of its framing.
//!
//! The module is **pure**: no sockets, no I/O, no threads, no locks, no clocks. The
//! connection thread owns a growing input buffer and calls [`parse_request`] on its
//! unread part; the answer says how many bytes the request used:
//!
//! - [`Parsed::NeedMore`]: the buffer does not yet hold a whole request — a normal
//!   state, nothing is consumed; read more and call again from the same start.
//! - [`Parsed::Request`]: a whole, valid request of `consumed` bytes.
//! - [`Parsed::Error`]: a bad request whose framing is intact: reply `ERR`, drop
//!   `consumed` bytes, keep the connection.
//! - [`Parsed::Fatal`]: framing is lost (line over [`MAX_LINE_BYTES`], unparsable byte
//!   count or MPUB count, a payload or an MPUB's payloads in all over the limit, payload
//!   not followed by CRLF): reply `ERR` and close the connection.
//!
//! Every line read is bounded by [`MAX_LINE_BYTES`], every declared length is checked
//! against [`Limits`] before anything is copied, and payloads are skipped by length, so
//! one call costs O(bytes of request lines), not O(payload bytes), until the whole
//! request is there and its payloads are copied once. No input can make it panic.
//!
//! [`rules`] says what one argument (a name, a header, a number) must look like; the
//! parser applies it after framing, and the client applies the same functions
//! before sending.
//! A request the connection will refuse whatever its payload holds need not be
//! buffered at all: [`next_request`] wraps [`parse_request`] and, given the refusal,
//! drops such a request's payload bytes as they arrive ([`Skip`]).
//!
//! The `encode_*` functions append reply lines (always ending in `\r\n`) to a caller's
//! `Vec<u8>` without allocating anything else.

mod encode;
mod options;
mod parse;
pub mod repl;
pub mod rules;
mod skip;
#[cfg(test)]
mod test_rng;

use std::fmt;

pub use encode::*;
pub use parse::parse_request;
pub use skip::{Skip, next_request};

/// Longest request line, including its `\n` (and the `\r` before it, if any).
pub const MAX_LINE_BYTES: usize = 4096;
/// Most `key=value` headers one message may carry.
pub const MAX_HEADERS: usize = 32;
/// Longest header key.
pub const MAX_HEADER_KEY_BYTES: usize = 64;
/// Longest header value (a value may be empty).
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;
/// Longest topic or group name.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest error text [`encode_err`] writes; a longer text is cut, so an `ERR` line always
/// fits in [`MAX_LINE_BYTES`].
pub const MAX_ERR_TEXT_BYTES: usize = 1024;

/// The `CODE` of an `ERR <CODE> <text…>` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrCode {
    /// Malformed line, bad argument, bad name.
    BadReq,
    /// No such command.
    Unknown,
    /// The topic does not exist.
    NoTopic,
    /// The topic already exists.
    Exists,
    /// Payload over the configured maximum.
    TooBig,
    /// A write sent to a slave.
    ReadOnly,
    /// AUTH missing or wrong.
    NoAuth,
    /// Connection limit reached.
    Busy,
    /// `replication.minSlaves`: too few slaves had the write in time; it
    /// changed nothing.
    NoSlave,
    /// The server failed; nothing was written.
    Internal,
}

impl ErrCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrCode::BadReq => "BADREQ",
            ErrCode::Unknown => "UNKNOWN",
            ErrCode::NoTopic => "NOTOPIC",
            ErrCode::Exists => "EXISTS",
            ErrCode::TooBig => "TOOBIG",
            ErrCode::ReadOnly => "READONLY",
            ErrCode::NoAuth => "NOAUTH",
            ErrCode::Busy => "BUSY",
            ErrCode::NoSlave => "NOSLAVE",
            ErrCode::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error to send to the client as `ERR <code> <msg>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    pub code: ErrCode,
    pub msg: String,
}

impl ProtoError {
    pub fn new(code: ErrCode, msg: impl Into<String>) -> Self {
        ProtoError {
            code,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.msg.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.msg)
        }
    }
}

impl std::error::Error for ProtoError {}

/// Configured limits the parser enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload of one message, in bytes; a larger declared `<n>` is `TOOBIG`.
    pub max_payload: usize,
    /// Largest MPUB `<count>` and SUB `batch=`.
    pub max_batch: usize,
    /// Most payload bytes one MPUB may declare in all; more is `TOOBIG`.
    pub max_batch_bytes: u64,
}

/// One message as published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The header tokens exactly as received, joined by single spaces ("k=v k2=v2"); empty when none.
    pub headers: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Where a subscription starts (SUB's `<after>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubFrom {
    /// `0` (from the oldest retained message) or a number N (event ids greater than N).
    After(u64),
    /// `$`: only messages written after the SUB.
    Latest,
    /// `-`: from the group's committed position (only with a group).
    Committed,
}

/// How a consumer group shares its messages among its subscribers
/// (`mode=` of a group SUB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupMode {
    /// One active subscriber, the others standbys (the default).
    #[default]
    Exclusive,
    /// Every subscriber active; each batch goes to one of them.
    Shared,
}

impl GroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupMode::Exclusive => "exclusive",
            GroupMode::Shared => "shared",
        }
    }
}

/// The arguments of a SUB request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubArgs {
    pub topic: String,
    pub from: SubFrom,
    /// `batch=<n>`, 1..=max_batch; `None` means the configured default.
    pub batch: Option<usize>,
    /// `ack=<ms>`, at least 1; `None` means the configured default.
    pub ack_ms: Option<u64>,
    /// `group=<name>`.
    pub group: Option<String>,
    /// `maxDeliver=<n>` (with a group): failed deliveries of one message
    /// before it is dead-lettered or skipped; 0 = unlimited; `None` means
    /// the configured default.
    pub max_deliver: Option<u32>,
    /// `dlq=<topic>` (with a group): where a message goes after
    /// `maxDeliver` failed deliveries; without it, it is skipped.
    pub dlq: Option<String>,
    /// `mode=exclusive|shared` (with a group); `None` means exclusive.
    pub mode: Option<GroupMode>,
}

/// One parsed, validated client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Auth {
        token: String,
    },
    Quit,
    Create {
        topic: String,
        life_ms: u64,
    }, // life_ms absent -> 0
    Delete {
        topic: String,
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
    Info {
        topic: String,
    },
    List,
    Stats,
    Sub(SubArgs),
    Ack,
    Stop,
    Groups {
        topic: String,
    },
    GroupDel {
        topic: String,
        group: String,
    },
    Repl(ReplArgs),
    Promote,
    /// A master's connected slaves (`SLAVES 0` on a slave).
    Slaves,
    /// `ROLE` → `ROLE <master|slave> <epoch> <history> <last_event_id>`:
    /// what a peer compares epochs with.
    Role,
}

/// `REPL <after> [history=<hex>] [epoch=<n>] [empty=0|1] [node=<hex>]
/// [format=<n>] [early=0|1]`:
/// what a slave has and who it is (see README, Replication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplArgs {
    /// The slave has every record up to this event id.
    pub after: u64,
    /// Its data directory's history id; 0 when it has none yet.
    pub history: u64,
    pub epoch: u64,
    /// It holds no records: it needs the state first.
    pub empty: bool,
    /// The slave server's own id, the same on every connection it makes
    /// (0: not given, an older slave). A new session with the same id
    /// replaces the old one; such a slave reads the long `RECS` form.
    pub node: u64,
    /// The newest storage format the slave's smss reads (0: not given, an
    /// smss from before format 3, which reads up to format 2).
    pub format: u32,
    /// `early=1`: the slave takes records its master has written but not
    /// yet made durable, with `DUR` frames saying how far the master's log
    /// is durable (it shows its readers nothing above that).
    pub early: bool,
}

/// The result of one [`parse_request`] call.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The buffer does not yet hold a whole request.
    NeedMore,
    /// A whole request; `consumed` bytes of the buffer belong to it (line + payloads + their CRLFs).
    Request { req: Request, consumed: usize },
    /// A bad request whose framing is intact: reply with the error, drop `consumed` bytes, keep the connection.
    Error { err: ProtoError, consumed: usize },
    /// Framing is lost: reply with the error and close the connection.
    Fatal { err: ProtoError },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_and_display() {
        let all = [
            (ErrCode::BadReq, "BADREQ"),
            (ErrCode::Unknown, "UNKNOWN"),
            (ErrCode::NoTopic, "NOTOPIC"),
            (ErrCode::Exists, "EXISTS"),
            (ErrCode::TooBig, "TOOBIG"),
            (ErrCode::ReadOnly, "READONLY"),
            (ErrCode::NoAuth, "NOAUTH"),
            (ErrCode::Busy, "BUSY"),
            (ErrCode::NoSlave, "NOSLAVE"),
            (ErrCode::Internal, "INTERNAL"),
        ];
        for (code, text) in all {
            assert_eq!(code.as_str(), text);
        }
        assert_eq!(
            ProtoError::new(ErrCode::BadReq, "bad name").to_string(),
            "BADREQ bad name"
        );
        let err: Box<dyn std::error::Error> = Box::new(ProtoError::new(ErrCode::Busy, "full"));
        assert_eq!(err.to_string(), "BUSY full");
    }
}
