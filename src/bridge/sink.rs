//! The contract between the bridge and the durable system it writes into
//! (NATS JetStream; Kafka could sit beside it): [`Sink`], the message it
//! takes ([`OutMsg`]), what a write did ([`WriteOutcome`], [`SinkError`]),
//! and the message id both sides agree on ([`msg_id`], [`parse_msg_id`]).
//!
//! A sink is owned by the bridge's one `bridge-publisher` thread
//! (`publisher`); nothing else calls it, so it needs `Send` but not
//! `Sync`, and may keep one connection and block on it.
//!
//! What the bridge relies on:
//! - **prefix property**: a write stores `msgs[..stored]` and nothing after
//!   (never `msgs[i+1]` without `msgs[i]`); `stored` may understate what
//!   was stored (an answer lost on the way), never overstate it;
//! - **message ids**: every message carries `msg_id` =
//!   `<history hex16>-<event id>`, and [`Sink::last_msg_id`] returns the id
//!   of the last message the sink holds for a subject. That is the truth
//!   the bridge resumes from after a [`SinkError::Transient`] error and at
//!   start: what it says is stored is never written again. A sink that also
//!   deduplicates on the id (JetStream's `Nats-Msg-Id`) is safer still, but
//!   the bridge does not need it.

use std::fmt;

/// One smss message on its way to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMsg {
    /// The smss topic it came from.
    pub topic: String,
    /// Where it goes in the sink: `<prefix>.<topic>`.
    pub subject: String,
    /// Its smss event id.
    pub event_id: u64,
    /// `<history hex16>-<event id>` ([`msg_id`]).
    pub msg_id: String,
    /// When smss stored it (Unix ms).
    pub timestamp_ms: u64,
    /// The message's own headers in their order, then `Smss-Topic`,
    /// `Smss-Id` and `Smss-Timestamp`.
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// Why a write or a question to the sink failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// Try again later with the same messages and ids (connection lost,
    /// timeout, the sink busy or without a leader). Whether anything after
    /// the reported prefix was stored is unknown: the bridge asks
    /// [`Sink::last_msg_id`] before writing again.
    Transient(String),
    /// `msgs[stored]` can never be accepted (too big, refused by the
    /// sink's rules): the bridge gives it to smss's dead-letter machinery.
    Refused(String),
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Transient(m) => write!(f, "transient sink error: {m}"),
            SinkError::Refused(m) => write!(f, "refused by the sink: {m}"),
        }
    }
}

impl std::error::Error for SinkError {}

/// What [`Sink::write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// A prefix of the messages known to be durably stored; a lower bound.
    pub stored: usize,
    /// Why the write stopped before the end; `None` when `stored` is all.
    pub error: Option<SinkError>,
}

impl WriteOutcome {
    /// All `n` messages stored.
    pub fn all(n: usize) -> WriteOutcome {
        WriteOutcome {
            stored: n,
            error: None,
        }
    }
}

/// A durable destination for bridged messages.
pub trait Sink: Send {
    /// Writes msgs in order; never stores `msgs[i+1]` without `msgs[i]` (prefix property).
    fn write(&mut self, msgs: &[OutMsg]) -> WriteOutcome;
    /// The msg id of the last message the sink holds for `subject`, if any
    /// (the truth after a Transient error, and at start).
    fn last_msg_id(&mut self, subject: &str) -> Result<Option<String>, SinkError>;
    /// The topic's life ended or it was deleted in smss (the NATS sink will
    /// purge the subject).
    fn topic_ended(&mut self, subject: &str, why: &str) -> Result<(), SinkError>;
    /// For logs: where it writes.
    fn describe(&self) -> String;
    /// Whether subject is acceptable to this sink (e.g. NATS: no empty
    /// tokens); Err(text) to refuse a topic clearly.
    fn check_subject(&self, subject: &str) -> Result<(), String>;
}

/// The id of a message: `<history as 16 lowercase hex digits>-<event id>`.
pub fn msg_id(history: u64, event_id: u64) -> String {
    format!("{history:016x}-{event_id}")
}

/// The (history, event id) of an id made by [`msg_id`]; `None` for an id of
/// another shape (a message the bridge did not write).
pub fn parse_msg_id(id: &str) -> Option<(u64, u64)> {
    let (h, e) = id.split_once('-')?;
    if h.len() != 16 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((u64::from_str_radix(h, 16).ok()?, e.parse().ok()?))
}

/// The sink subject of a topic: `<prefix>.<topic>`.
pub fn subject_of(prefix: &str, topic: &str) -> String {
    format!("{prefix}.{topic}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_round_trip() {
        assert_eq!(msg_id(0xab, 42), "00000000000000ab-42");
        assert_eq!(parse_msg_id("00000000000000ab-42"), Some((0xab, 42)));
        assert_eq!(
            parse_msg_id(&msg_id(u64::MAX, u64::MAX)),
            Some((u64::MAX, u64::MAX))
        );
        for bad in [
            "",
            "ab-42",
            "00000000000000ab-",
            "00000000000000ab-x",
            "zz00000000000000-1",
            "00000000000000ab42",
        ] {
            assert_eq!(parse_msg_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(subject_of("smss", "orders.eu"), "smss.orders.eu");
    }
}
