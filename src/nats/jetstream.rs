//! [`JetStream`]: the JetStream API calls the bridge needs, over one
//! [`Conn`] (requests to `$JS.API.…` with JSON bodies, on the caller's
//! thread): stream info and create, chained pipelined publishes, and
//! reading a stored message back (last on a subject, or by sequence).
//!
//! # The prefix property of [`JetStream::publish_chain`]
//!
//! A chain is sent pipelined: every message goes out, then all the acks
//! are awaited. Pipelining alone would break order: when a stream leader
//! is elected mid-chain, message *i* can fail (no responders, a timeout)
//! while *i+1* reaches the new leader and is stored, so a retry of *i*
//! lands after it. So message *i > 0* carries
//! `Nats-Expected-Last-Msg-Id: <msg id of message i-1>` and the server
//! refuses it (err_code 10070) unless *i-1* is the stream's last message.
//! Hence **what the stream holds of a chain, once its acks are in (or
//! timed out), is always a prefix of the chain in send order**: messages
//! 0..k stored, none of k+1.. stored. Retrying from the first failed
//! message with the same `Nats-Msg-Id`s is then safe and exact: a message
//! already stored (its ack was lost) is answered `duplicate` by the
//! stream's dedup window (checked before the expected-last-id check), and
//! the ones after it are stored in order. The bridge relies on exactly
//! this; keep the chain header on every message after the first.
//!
//! The first message of a chain carries no expectation, so a retry that
//! starts at the first failed message always gets going, also when
//! another writer's message landed in the stream meanwhile (the order of
//! this writer's messages is what the chain keeps).
//! [`JetStream::publish_chain_after`] chains the first message too; use
//! it only on a stream with no other writer, or such an interleaved
//! message refuses every retry (10070 until the caller gives up).
//!
//! A message above the server's `max_payload` is not sent
//! ([`NatsError::TooBig`], the connection stays fine); the messages after
//! it then fail with 10070, as the chain says they must. Such a message
//! must be set aside by the caller, or the chain can never pass it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::conn::{Conn, Msg};
use super::json::{self, Json, quote};
use super::{ERR_NO_MESSAGE_FOUND, ERR_STREAM_NOT_FOUND, NatsError, Result, base64, proto};

/// The JetStream API's subject prefix (default domain).
const API: &str = "$JS.API";

/// A stream to create (file storage, limits retention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
    /// 1, 3 or 5.
    pub replicas: u32,
    /// How long the stream remembers a `Nats-Msg-Id` to drop a duplicate.
    pub duplicate_window: Duration,
    /// Messages older than this are removed; zero keeps them.
    pub max_age: Duration,
}

impl StreamConfig {
    /// One replica, a 2-minute dedup window (NATS' default), no age limit.
    pub fn new(name: &str, subjects: &[&str]) -> StreamConfig {
        StreamConfig {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
        }
    }
}

/// What STREAM.INFO says about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub subjects: Vec<String>,
    pub num_replicas: u32,
    pub duplicate_window: Duration,
    pub max_age: Duration,
    pub messages: u64,
    pub bytes: u64,
    /// 0 when the stream never held a message.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The `server_name` of the stream's leader, in a cluster.
    pub cluster_leader: Option<String>,
}

/// One message of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubMsg {
    pub subject: String,
    /// Sent as `Nats-Msg-Id`: unique per message, the same on a retry.
    pub msg_id: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// What a chain publishes, read in place: [`PubMsg`], or a caller's own
/// message type (the bridge's), so nothing is copied to send it.
pub trait Publishable {
    fn subject(&self) -> &str;
    /// Sent as `Nats-Msg-Id`: unique per message, the same on a retry.
    fn msg_id(&self) -> &str;
    fn headers(&self) -> &[(String, String)];
    fn payload(&self) -> &[u8];
}

impl Publishable for PubMsg {
    fn subject(&self) -> &str {
        &self.subject
    }
    fn msg_id(&self) -> &str {
        &self.msg_id
    }
    fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// The stream's answer to a stored (or deduplicated) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    pub stream: String,
    pub seq: u64,
    /// The stream already had this `Nats-Msg-Id` (at `seq`).
    pub duplicate: bool,
}

/// A message read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMsg {
    pub seq: u64,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    /// When the stream stored it, RFC 3339 as the server wrote it.
    pub time: String,
}

impl StoredMsg {
    /// The first header named `name` (case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A stream name the API takes: non-empty, no `.`, `*`, `>` or whitespace.
fn check_stream(name: &str) -> Result<()> {
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b <= b' ' || matches!(b, b'.' | b'*' | b'>' | 0x7f))
    {
        return Err(NatsError::BadArgument(format!("bad stream name {name:?}")));
    }
    Ok(())
}

/// `{"error":{...}}` of a reply to `subject`, as [`NatsError::Api`].
fn api_error(v: &Json, subject: &str) -> Option<NatsError> {
    let e = v.get("error")?;
    Some(NatsError::Api {
        subject: subject.to_string(),
        code: e
            .get("code")
            .and_then(Json::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0),
        err_code: e.get("err_code").and_then(Json::as_u64).unwrap_or(0),
        description: e
            .get("description")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

fn bad_reply(server: &str, subject: &str, what: impl std::fmt::Display) -> NatsError {
    NatsError::Protocol {
        server: server.to_string(),
        reason: format!("reply to {subject}: {what}"),
    }
}

fn nanos(v: Option<&Json>) -> Duration {
    Duration::from_nanos(v.and_then(Json::as_u64).unwrap_or(0))
}

/// Turns the reply to one published message into its ack or error.
/// `subject` is the message's subject, named in the error.
fn parse_ack(m: &Msg, server: &str, subject: &str) -> Result<PubAck> {
    match m.status {
        Some(503) => {
            return Err(NatsError::NoResponders {
                server: server.to_string(),
                subject: subject.to_string(),
            });
        }
        Some(code) => {
            return Err(NatsError::Api {
                subject: subject.to_string(),
                code,
                err_code: 0,
                description: m.description.clone(),
            });
        }
        None => {}
    }
    let v = json::parse(&m.payload).map_err(|e| bad_reply(server, subject, e))?;
    if let Some(e) = api_error(&v, subject) {
        return Err(e);
    }
    let stream = v.get("stream").and_then(Json::as_str);
    let seq = v.get("seq").and_then(Json::as_u64);
    let (Some(stream), Some(seq)) = (stream, seq) else {
        return Err(bad_reply(server, subject, "no stream and seq in the ack"));
    };
    let duplicate = v.get("duplicate").and_then(Json::as_bool).unwrap_or(false);
    if duplicate && seq == 0 {
        // A clustered leader notes a msg id before its message is
        // committed; a duplicate of one not stored yet has no sequence.
        // Not proof that it is stored: retry until it is.
        return Err(NatsError::Api {
            subject: subject.to_string(),
            code: 503,
            err_code: 0,
            description: "duplicate of a message not stored yet (seq 0); retry".into(),
        });
    }
    Ok(PubAck {
        stream: stream.to_string(),
        seq,
        duplicate,
    })
}

fn parse_stream_info(v: &Json, server: &str, subject: &str) -> Result<StreamInfo> {
    let config = v
        .get("config")
        .ok_or_else(|| bad_reply(server, subject, "no config"))?;
    let state = v
        .get("state")
        .ok_or_else(|| bad_reply(server, subject, "no state"))?;
    let num = |o: &Json, k: &str| o.get(k).and_then(Json::as_u64).unwrap_or(0);
    Ok(StreamInfo {
        name: config
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string(),
        subjects: config
            .get("subjects")
            .and_then(Json::as_array)
            .unwrap_or(&[])
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        num_replicas: u32::try_from(num(config, "num_replicas")).unwrap_or(u32::MAX),
        duplicate_window: nanos(config.get("duplicate_window")),
        max_age: nanos(config.get("max_age")),
        messages: num(state, "messages"),
        bytes: num(state, "bytes"),
        first_seq: num(state, "first_seq"),
        last_seq: num(state, "last_seq"),
        cluster_leader: v
            .get("cluster")
            .and_then(|c| c.get("leader"))
            .and_then(Json::as_str)
            .map(str::to_string),
    })
}

/// JetStream over one connection.
#[derive(Debug)]
pub struct JetStream {
    conn: Conn,
    /// How long an API call (not a chain) waits for its reply.
    api_timeout: Duration,
}

impl JetStream {
    /// API calls wait as long as the connection's timeout.
    pub fn new(conn: Conn) -> JetStream {
        let api_timeout = conn.timeout();
        JetStream { conn, api_timeout }
    }

    pub fn set_api_timeout(&mut self, t: Duration) {
        self.api_timeout = t;
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    pub fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }

    pub fn into_conn(self) -> Conn {
        self.conn
    }

    /// [`Conn::reconnect`]: on to the next server of the list.
    pub fn reconnect(&mut self) -> Result<()> {
        self.conn.reconnect()
    }

    /// One API request; its JSON reply, or the API error it holds.
    fn api(&mut self, subject: &str, body: &str) -> Result<Json> {
        let m = self
            .conn
            .request(subject, &[], body.as_bytes(), self.api_timeout)?;
        let server = self.conn.server().to_string();
        if let Some(code) = m.status {
            return Err(NatsError::Api {
                subject: subject.to_string(),
                code,
                err_code: 0,
                description: m.description,
            });
        }
        let v = json::parse(&m.payload).map_err(|e| bad_reply(&server, subject, e))?;
        match api_error(&v, subject) {
            Some(e) => Err(e),
            None => Ok(v),
        }
    }

    /// The stream's config and state; `None` when there is no such stream.
    pub fn stream_info(&mut self, name: &str) -> Result<Option<StreamInfo>> {
        check_stream(name)?;
        let subject = format!("{API}.STREAM.INFO.{name}");
        match self.api(&subject, "") {
            Ok(v) => parse_stream_info(&v, self.conn.server(), &subject).map(Some),
            Err(NatsError::Api { err_code, .. }) if err_code == ERR_STREAM_NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the stream (file storage, limits retention, discard old).
    /// A stream of that name with the same config is fine; one with
    /// another config is an [`NatsError::Api`] error (10058).
    pub fn create_stream(&mut self, cfg: &StreamConfig) -> Result<StreamInfo> {
        check_stream(&cfg.name)?;
        for s in &cfg.subjects {
            proto::check_subject(s).map_err(NatsError::BadArgument)?;
        }
        let subjects: Vec<String> = cfg.subjects.iter().map(|s| quote(s)).collect();
        let body = format!(
            "{{\"name\":{},\"subjects\":[{}],\"retention\":\"limits\",\"storage\":\"file\",\
             \"discard\":\"old\",\"num_replicas\":{},\"duplicate_window\":{},\"max_age\":{}}}",
            quote(&cfg.name),
            subjects.join(","),
            cfg.replicas,
            cfg.duplicate_window.as_nanos(),
            cfg.max_age.as_nanos()
        );
        let subject = format!("{API}.STREAM.CREATE.{}", cfg.name);
        let v = self.api(&subject, &body)?;
        parse_stream_info(&v, self.conn.server(), &subject)
    }

    /// Publishes one message (a chain of one).
    pub fn publish(&mut self, msg: &PubMsg, timeout: Duration) -> Result<PubAck> {
        let mut r = self.publish_chain(std::slice::from_ref(msg), timeout);
        r.pop().unwrap_or_else(|| {
            Err(NatsError::BadArgument(
                "internal: empty chain result".into(),
            ))
        })
    }

    /// Publishes `msgs` pipelined, as a chain (see the module docs: the
    /// stream ends up holding a prefix of them in order), and waits up to
    /// `timeout` for all the acks. One result per message, in order.
    pub fn publish_chain<M: Publishable>(
        &mut self,
        msgs: &[M],
        timeout: Duration,
    ) -> Vec<Result<PubAck>> {
        self.publish_chain_after(None, msgs, timeout)
    }

    /// [`JetStream::publish_chain`], with the first message chained too:
    /// to `prev_msg_id`, the last message the caller knows is stored (so
    /// the chain continues an earlier one with nothing in between). Only
    /// for a stream this caller alone writes to (see the module docs).
    pub fn publish_chain_after<M: Publishable>(
        &mut self,
        prev_msg_id: Option<&str>,
        msgs: &[M],
        timeout: Duration,
    ) -> Vec<Result<PubAck>> {
        let deadline = Instant::now() + timeout;
        let mut results: Vec<Option<Result<PubAck>>> = vec![None; msgs.len()];
        // Reply subject → index of the message.
        let mut pending: HashMap<String, usize> = HashMap::with_capacity(msgs.len());
        let mut fatal: Option<NatsError> = None;
        for (i, m) in msgs.iter().enumerate() {
            let prev = if i == 0 {
                prev_msg_id
            } else {
                Some(msgs[i - 1].msg_id())
            };
            let mut headers: Vec<(&str, &str)> = Vec::with_capacity(m.headers().len() + 2);
            headers.push(("Nats-Msg-Id", m.msg_id()));
            if let Some(p) = prev {
                headers.push(("Nats-Expected-Last-Msg-Id", p));
            }
            headers.extend(m.headers().iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let reply = self.conn.new_reply();
            match self
                .conn
                .publish(m.subject(), Some(&reply), &headers, m.payload())
            {
                Ok(()) => {
                    pending.insert(reply, i);
                }
                Err(e @ NatsError::Disconnected { .. }) => {
                    fatal = Some(e);
                    break;
                }
                Err(e) => results[i] = Some(Err(e)),
            }
            // Write as we go: a long chain need not sit in memory whole,
            // and the server starts storing sooner.
            if self.conn.buffered() >= 256 * 1024
                && let Err(e) = self.conn.flush()
            {
                fatal = Some(e);
                break;
            }
        }
        while fatal.is_none() && !pending.is_empty() {
            match self.conn.next_reply(deadline) {
                Ok(Some(m)) => {
                    if let Some(i) = pending.remove(&m.subject) {
                        results[i] = Some(parse_ack(&m, self.conn.server(), msgs[i].subject()));
                    }
                }
                Ok(None) => break,
                Err(e) => fatal = Some(e),
            }
        }
        let server = self.conn.server().to_string();
        results
            .into_iter()
            .zip(msgs)
            .map(|(r, m)| {
                r.unwrap_or_else(|| {
                    Err(fatal.clone().unwrap_or_else(|| NatsError::Timeout {
                        server: server.clone(),
                        subject: m.subject().to_string(),
                    }))
                })
            })
            .collect()
    }

    /// The last message stored on `subject` in `stream`; `None` when it
    /// has none.
    pub fn last_by_subject(&mut self, stream: &str, subject: &str) -> Result<Option<StoredMsg>> {
        proto::check_subject(subject).map_err(NatsError::BadArgument)?;
        self.msg_get(stream, &format!("{{\"last_by_subj\":{}}}", quote(subject)))
    }

    /// Removes every message on `subject` from `stream` (what a topic's end
    /// in smss becomes in the stream); returns how many went.
    pub fn purge_subject(&mut self, stream: &str, subject: &str) -> Result<u64> {
        check_stream(stream)?;
        proto::check_subject(subject).map_err(NatsError::BadArgument)?;
        let api = format!("{API}.STREAM.PURGE.{stream}");
        let v = self.api(&api, &format!("{{\"filter\":{}}}", quote(subject)))?;
        Ok(v.get("purged").and_then(Json::as_u64).unwrap_or(0))
    }

    /// The message at `seq` in `stream`; `None` when there is none (never
    /// was, or deleted).
    pub fn get_by_seq(&mut self, stream: &str, seq: u64) -> Result<Option<StoredMsg>> {
        self.msg_get(stream, &format!("{{\"seq\":{seq}}}"))
    }

    fn msg_get(&mut self, stream: &str, body: &str) -> Result<Option<StoredMsg>> {
        check_stream(stream)?;
        let subject = format!("{API}.STREAM.MSG.GET.{stream}");
        let v = match self.api(&subject, body) {
            Ok(v) => v,
            Err(NatsError::Api { err_code, .. }) if err_code == ERR_NO_MESSAGE_FOUND => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let server = self.conn.server().to_string();
        let m = v
            .get("message")
            .ok_or_else(|| bad_reply(&server, &subject, "no message"))?;
        let text = |k: &str| m.get(k).and_then(Json::as_str).unwrap_or("");
        let decode = |k: &str| {
            base64::decode(text(k)).map_err(|e| bad_reply(&server, &subject, format!("{k}: {e}")))
        };
        let hdrs = decode("hdrs")?;
        let headers = if hdrs.is_empty() {
            Vec::new()
        } else {
            proto::parse_headers(&hdrs)
                .map_err(|e| bad_reply(&server, &subject, e))?
                .headers
        };
        Ok(Some(StoredMsg {
            seq: m
                .get("seq")
                .and_then(Json::as_u64)
                .ok_or_else(|| bad_reply(&server, &subject, "no seq"))?,
            subject: text("subject").to_string(),
            headers,
            payload: decode("data")?,
            time: text("time").to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(status: Option<u16>, payload: &str) -> Msg {
        Msg {
            subject: "_INBOX.x.1".into(),
            status,
            description: String::new(),
            headers: vec![],
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn acks_and_their_errors() {
        let ok = parse_ack(&msg(None, r#"{"stream":"S","seq":7}"#), "srv", "a").expect("ack");
        assert_eq!((ok.stream.as_str(), ok.seq, ok.duplicate), ("S", 7, false));
        let dup = parse_ack(
            &msg(None, r#"{"stream":"S","seq":7,"duplicate":true}"#),
            "srv",
            "a",
        );
        assert!(dup.expect("dup").duplicate);
        let e = parse_ack(&msg(Some(503), ""), "srv", "a").expect_err("503");
        assert!(matches!(e, NatsError::NoResponders { .. }) && e.is_retryable());
        let e = parse_ack(
            &msg(
                None,
                r#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: x"}}"#,
            ),
            "srv",
            "a",
        )
        .expect_err("chain");
        assert!(e.is_retryable(), "{e}");
        let e = parse_ack(
            &msg(
                None,
                r#"{"error":{"code":400,"err_code":10999,"description":"no"}}"#,
            ),
            "srv",
            "a",
        )
        .expect_err("api");
        assert!(!e.is_retryable());
        let staged = parse_ack(
            &msg(None, r#"{"stream":"S","seq":0,"duplicate":true}"#),
            "s",
            "a",
        );
        assert!(staged.expect_err("seq 0").is_retryable());
        for bad in ["", "{", r#"{"stream":"S"}"#, r#"{"seq":1}"#, "[]"] {
            assert!(parse_ack(&msg(None, bad), "srv", "a").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stream_names() {
        assert!(check_stream("ORDERS_1-x").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b"] {
            assert!(check_stream(bad).is_err(), "{bad:?}");
        }
    }
}
