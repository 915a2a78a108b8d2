//! The bridge's sink into NATS JetStream ([`NatsSink`]): one stream, one
//! subject per smss topic (`<prefix>.<topic>`), each message published with
//! `Nats-Msg-Id: <history>-<event id>` and the acks awaited before the
//! bridge ACKs smss.
//!
//! Owns the one NATS connection of the `bridge-publisher` thread. A write
//! is one chained, pipelined publish ([`JetStream::publish_chain`]), which
//! gives the [`Sink`] contract's prefix property: what the stream holds of
//! a write is a prefix of it, in order, whatever fails midway (a leader
//! election, a lost connection). After a failure the connection is dropped
//! and made again, to the next server of the list, on the next call; the
//! bridge then asks [`Sink::last_msg_id`] (the stream's last message on the
//! subject, `STREAM.MSG.GET last_by_subj`) before writing again, so an
//! outage longer than the stream's duplicate window duplicates nothing.
//!
//! A topic's end in smss (its lifetime, or DELETE) purges its subject from
//! the stream: Debian's nats-server 2.9 has no per-message TTL (2.11+), and
//! a stream's `max_age` is one value for all topics.

use std::time::Duration;

use log::{info, warn};

use super::sink::{OutMsg, Sink, SinkError, WriteOutcome};
use crate::nats::{Conn, JetStream, NatsError, Options, Publishable, StreamConfig, StreamInfo};

/// What [`NatsSink::connect`] needs.
#[derive(Debug, Clone)]
pub struct NatsSinkOptions {
    /// The servers, credentials, TLS and timeout of the connection.
    pub nats: Options,
    pub stream: String,
    /// Subjects are `<prefix>.<topic>`; the stream must take `<prefix>.>`.
    pub prefix: String,
    /// Create the stream when it is missing.
    pub create: bool,
    pub replicas: u32,
    /// The created stream's duplicate window.
    pub duplicate_window: Duration,
    /// How long a write waits for its acks.
    pub ack_timeout: Duration,
}

/// See the module docs.
pub struct NatsSink {
    opts: NatsSinkOptions,
    /// `None` after a failure: made again on the next call.
    js: Option<JetStream>,
}

impl NatsSink {
    /// Connects and checks (or creates) the stream. `Err` says what is
    /// wrong in words an operator can act on.
    pub fn connect(opts: NatsSinkOptions) -> Result<NatsSink, String> {
        let mut js = JetStream::new(Conn::connect(&opts.nats).map_err(|e| e.to_string())?);
        let wanted = format!("{}.>", opts.prefix);
        let info = match js.stream_info(&opts.stream).map_err(|e| e.to_string())? {
            Some(info) => info,
            None if opts.create => {
                let mut cfg = StreamConfig::new(&opts.stream, &[wanted.as_str()]);
                cfg.replicas = opts.replicas.max(1);
                cfg.duplicate_window = opts.duplicate_window;
                let info = js.create_stream(&cfg).map_err(|e| e.to_string())?;
                info!(
                    "created JetStream stream {} (subjects {wanted}, {} replicas, duplicate \
                     window {:?})",
                    opts.stream, info.num_replicas, info.duplicate_window
                );
                info
            }
            None => {
                return Err(format!(
                    "JetStream has no stream {}: create it (subjects {wanted}), or run the \
                     bridge with --create-stream",
                    opts.stream
                ));
            }
        };
        check_takes(&info, &opts.prefix)?;
        info!(
            "NATS: stream {} on {} ({} messages, {} replicas)",
            info.name,
            js.conn().server(),
            info.messages,
            info.num_replicas
        );
        Ok(NatsSink { opts, js: Some(js) })
    }

    /// The connection, made again (next server first) after a failure.
    fn js(&mut self) -> Result<&mut JetStream, SinkError> {
        if self.js.is_none() {
            let conn = Conn::connect(&self.opts.nats).map_err(|e| transient(&e))?;
            info!("NATS: connected to {}", conn.server());
            self.js = Some(JetStream::new(conn));
        }
        self.js
            .as_mut()
            .ok_or_else(|| SinkError::Transient("no NATS connection".into()))
    }

    /// After an error: a broken or doubtful connection is dropped, so the
    /// next call connects again (and, if the server is gone, to another).
    fn after(&mut self, e: &NatsError) {
        let doubtful = matches!(
            e,
            NatsError::Disconnected { .. }
                | NatsError::Timeout { .. }
                | NatsError::Protocol { .. }
                | NatsError::Server { .. }
        );
        if doubtful && let Some(js) = self.js.take() {
            warn!(
                "NATS: dropping the connection to {}: {e}",
                js.conn().server()
            );
        }
    }
}

/// The stream must take `<prefix>.>`: `>`, `<prefix>.>` or a wider
/// wildcard among its subjects.
fn check_takes(info: &StreamInfo, prefix: &str) -> Result<(), String> {
    let wanted = format!("{prefix}.>");
    let takes = info.subjects.iter().any(|s| {
        s == ">" || *s == wanted || {
            // `a.>` takes `a.b.>` (a prefix of ours ending in `.>`).
            s.strip_suffix('>')
                .is_some_and(|head| head.ends_with('.') && wanted.starts_with(head))
        }
    });
    if takes {
        Ok(())
    } else {
        Err(format!(
            "JetStream stream {} does not take subjects {wanted} (its subjects: {}): add it \
             to the stream, or choose another --prefix or --stream",
            info.name,
            info.subjects.join(", ")
        ))
    }
}

/// The bridge's messages are published as they are, without a copy.
impl Publishable for OutMsg {
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

fn transient(e: &NatsError) -> SinkError {
    SinkError::Transient(e.to_string())
}

/// What a failed publish is to the bridge: a message the server will
/// never take (too big, refused by a stream rule) or something to retry.
fn classify(e: &NatsError) -> SinkError {
    match e {
        NatsError::TooBig { .. } => SinkError::Refused(e.to_string()),
        NatsError::Api { .. } if !e.is_retryable() => SinkError::Refused(e.to_string()),
        _ => transient(e),
    }
}

impl Sink for NatsSink {
    fn write(&mut self, msgs: &[OutMsg]) -> WriteOutcome {
        let timeout = self.opts.ack_timeout;
        let js = match self.js() {
            Ok(js) => js,
            Err(e) => {
                return WriteOutcome {
                    stored: 0,
                    error: Some(e),
                };
            }
        };
        let mut stored = 0;
        let mut failed = None;
        for r in js.publish_chain(msgs, timeout) {
            match r {
                // A duplicate is a message the stream holds already.
                Ok(_) => stored += 1,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let error = failed.map(|e| {
            self.after(&e);
            classify(&e)
        });
        WriteOutcome { stored, error }
    }

    fn last_msg_id(&mut self, subject: &str) -> Result<Option<String>, SinkError> {
        let stream = self.opts.stream.clone();
        let js = self.js()?;
        match js.last_by_subject(&stream, subject) {
            Ok(m) => Ok(m.and_then(|m| m.header("Nats-Msg-Id").map(str::to_string))),
            Err(e) => {
                self.after(&e);
                Err(transient(&e))
            }
        }
    }

    fn topic_ended(&mut self, subject: &str, why: &str) -> Result<(), SinkError> {
        let stream = self.opts.stream.clone();
        let js = self.js()?;
        match js.purge_subject(&stream, subject) {
            Ok(n) => {
                info!("NATS: purged {n} messages of {subject} from {stream} (the topic {why})");
                Ok(())
            }
            Err(e) => {
                self.after(&e);
                Err(transient(&e))
            }
        }
    }

    fn describe(&self) -> String {
        let at = match &self.js {
            Some(js) => js.conn().server().to_string(),
            None => self.opts.nats.servers.join(","),
        };
        format!("JetStream stream {} at {at}", self.opts.stream)
    }

    fn check_subject(&self, subject: &str) -> Result<(), String> {
        let bad = subject.split('.').any(|t| {
            t.is_empty()
                || t.bytes()
                    .any(|b| b == b'*' || b == b'>' || b.is_ascii_whitespace())
        });
        if bad {
            return Err(format!(
                "{subject:?} is not a NATS subject (a topic name starting or ending with '.', \
                 or with '..', makes an empty token)"
            ));
        }
        Ok(())
    }
}
