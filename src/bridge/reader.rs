//! One topic's reader: the `bridge-<topic>` thread. It holds a group SUB
//! (`group=bridge.<name>`, from `-`, the committed position) on the smss
//! master, turns each batch into [`OutMsg`]s, hands them to the publisher
//! and waits for its answer, and ACKs the batch only when every message of
//! it is stored (or known to be there already).
//!
//! Owns its smss connection (a [`Client`]) and what it knows the sink holds
//! for its subject: `(history, event id)` of the last message stored. It
//! talks to the publisher through [`Handle`] (a crossbeam channel and a
//! reply channel per call) and to nothing else.
//!
//! How a subscription ends and what follows:
//! - `END deleted|expired`: the sink is told ([`Sink::topic_ended`]) and the
//!   reader ends; so does a SUB answered `NOTOPIC` (deleted meanwhile);
//! - the stop flag: `STOP` (smss counts nothing failed; an un-ACKed batch is
//!   delivered again next time and skipped where stored);
//! - an smss connection error or `READONLY`: look for the master again
//!   ([`follow`]) and resume from the group's committed position;
//! - a message the sink refuses, with a dlq: the stored prefix is committed
//!   (STOP, then SUB with the event id before the refused message, which
//!   moves the group there), then the refused message's delivery is ended
//!   without an ACK by hanging up, which smss counts as a failed delivery;
//!   after `maxDeliver` of them smss copies it to the dlq topic and moves
//!   the group past it. Without a dlq the topic stays blocked: STOP, wait,
//!   try again, with an error logged every time;
//! - the sink failing for half the ACK deadline (`ack_ms`): the batch is
//!   handed back (STOP, which smss counts as no failure) and asked for
//!   again after a wait, so an outage of the sink never makes smss count
//!   failed deliveries (which could dead-letter a good message).
//!
//! [`Sink::topic_ended`]: super::sink::Sink::topic_ended

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::follow::{self, Master};
use super::metrics::{Metrics, TopicMetrics};
use super::publisher::{Handle, Written};
use super::sink::{OutMsg, msg_id, parse_msg_id};
use super::{Backoff, BridgeError, BridgeOptions, Result};
use crate::client::{ClientError, Delivered, SubEvent, SubOptions};

/// How often a waiting reader looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Starts the reader of `topic`.
pub(super) fn spawn(
    opts: &BridgeOptions,
    topic: &str,
    subject: &str,
    pubs: &Handle,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    // The dlq topic's own dead letters would go back into it: it blocks
    // instead.
    let is_dlq = opts.dlq.as_deref() == Some(topic);
    let sub = SubOptions {
        batch: opts.batch,
        ack_ms: Some(opts.ack_ms),
        group: Some(opts.group_name()),
        // 0 said explicitly: the server's default must not skip messages.
        max_deliver: Some(if is_dlq { 0 } else { opts.max_deliver }),
        dlq: if is_dlq { None } else { opts.dlq.clone() },
        shared: false,
    };
    let r = Reader {
        opts: opts.clone(),
        topic: topic.to_string(),
        subject: subject.to_string(),
        pubs: pubs.clone(),
        metrics: metrics.topic(topic),
        stop: Arc::clone(stop),
        sub,
        stored: None,
        progressed: false,
    };
    std::thread::Builder::new()
        .name(format!("bridge-{topic}"))
        // It holds a client and a batch on the heap; the stack stays small.
        .stack_size(256 << 10)
        .spawn(move || r.run())
        .map_err(|source| BridgeError::Io {
            what: format!("starting the reader thread of topic {topic}"),
            source,
        })
}

/// How one subscription ended.
enum Ended {
    /// `END <why>` or NOTOPIC: the topic is over.
    Topic(String),
    /// The stop flag.
    Stopped,
    /// A connection error, READONLY or another ERR: follow again.
    Lost(String),
    /// Hung up on purpose (a failed delivery of a refused message), or
    /// the group was removed: subscribe again at once.
    Failed,
    /// A refused message without a dlq, or the sink failing for longer
    /// than the ACK deadline allows: wait, then try again.
    Blocked,
}

struct Reader {
    opts: BridgeOptions,
    topic: String,
    subject: String,
    pubs: Handle,
    metrics: Arc<TopicMetrics>,
    stop: Arc<AtomicBool>,
    sub: SubOptions,
    /// The last message known stored in the sink: (history, event id).
    stored: Option<(u64, u64)>,
    /// A batch was ACKed in the current subscription: the backoffs start
    /// over.
    progressed: bool,
}

impl Reader {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut blocked = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        while !self.stopped() {
            let Some(mut m) = follow::find_master(&self.opts, &self.stop) else {
                return;
            };
            // The sink's truth at each start of a subscription.
            let Some(last) = self.pubs.last_id(&self.subject) else {
                return;
            };
            self.resume_from(last.as_deref(), m.history);
            self.progressed = false;
            let ended = self.session(&mut m);
            if self.progressed {
                backoff.reset();
                blocked.reset();
            }
            match ended {
                Ended::Topic(why) => {
                    self.metrics.set_ended();
                    self.pubs.topic_ended(&self.topic, &self.subject, &why);
                    return;
                }
                Ended::Stopped => return,
                Ended::Lost(e) => {
                    warn!(
                        "bridge: topic {}: {e}; following the master again",
                        self.topic
                    );
                    drop(m);
                    backoff.wait(&self.stop);
                }
                Ended::Failed => {
                    backoff.reset();
                    drop(m);
                }
                Ended::Blocked => {
                    drop(m);
                    blocked.wait(&self.stop);
                }
            }
        }
    }

    /// Takes what the sink says it holds (`last`, a msg id) into account.
    fn resume_from(&mut self, last: Option<&str>, history: u64) {
        if self.stored.is_some_and(|(h, _)| h != history) {
            self.stored = None;
        }
        let Some(id) = last else { return };
        match parse_msg_id(id) {
            Some((h, upto)) if h == history => {
                if self.stored.is_none_or(|(_, mine)| upto > mine) {
                    self.stored = Some((h, upto));
                }
            }
            Some((h, _)) => warn!(
                "bridge: {} holds messages of smss history {h:016x}, not this one's \
                 {history:016x} (another smss): skipping nothing",
                self.subject
            ),
            None => warn!(
                "bridge: the last message of {} has id {id:?}, not one of the bridge's: \
                 skipping nothing",
                self.subject
            ),
        }
    }

    fn is_stored(&self, history: u64, event_id: u64) -> bool {
        self.stored
            .is_some_and(|(h, upto)| h == history && event_id <= upto)
    }

    fn mark_stored(&mut self, history: u64, event_id: u64) {
        if !self.is_stored(history, event_id) {
            self.stored = Some((history, event_id));
        }
    }

    /// One subscription, until it ends.
    fn session(&mut self, m: &mut Master) -> Ended {
        if let Err(e) = m.client.subscribe(&self.topic, "-", &self.sub) {
            return self.refused_sub(e, &m.addr);
        }
        let mut standby_logged = false;
        // smss sends ALIVE every timeout.server.alive (30 s by default):
        // silence much longer than that is a dead peer.
        let idle_limit = self.opts.timeout * 4;
        let mut heard = Instant::now();
        loop {
            if self.stopped() {
                // Nothing counts as failed; a batch in flight is read away.
                let _ = m.client.stop();
                return Ended::Stopped;
            }
            match m.client.poll_readable(STOP_POLL) {
                Ok(false) if heard.elapsed() > idle_limit => {
                    return Ended::Lost(format!(
                        "smss at {} sent nothing for {} s",
                        m.addr,
                        idle_limit.as_secs()
                    ));
                }
                Ok(false) => continue,
                Ok(true) => heard = Instant::now(),
                Err(e) => return Ended::Lost(format!("smss at {}: {e}", m.addr)),
            }
            let ev = match m.client.next_event() {
                Ok(ev) => ev,
                Err(e) => return Ended::Lost(format!("smss at {}: {e}", m.addr)),
            };
            match ev {
                SubEvent::Alive => {}
                SubEvent::Standby => {
                    if !standby_logged {
                        info!(
                            "bridge: topic {}: another subscriber of group {} is active; \
                             standing by",
                            self.topic,
                            self.opts.group_name()
                        );
                        standby_logged = true;
                    }
                }
                SubEvent::End(why) => return self.end_of(m, why),
                SubEvent::Batch(msgs) => match self.batch(m, msgs) {
                    Ok(None) => {}
                    Ok(Some(end)) => return end,
                    Err(e) => return Ended::Lost(format!("smss at {}: {e}", m.addr)),
                },
            }
        }
    }

    /// `END <why>`: the topic ended, or only the bridge's group was
    /// removed (GROUPDEL sends `END deleted` too), which must not end the
    /// topic in the sink: INFO tells them apart. A removed group is
    /// subscribed again from the oldest message; what the sink holds is
    /// skipped.
    fn end_of(&self, m: &mut Master, why: String) -> Ended {
        match m.client.info(&self.topic) {
            Err(ClientError::Server { code, .. }) if code == "NOTOPIC" => Ended::Topic(why),
            Ok(_) => {
                warn!(
                    "bridge: topic {}: group {} was removed (END {why}); subscribing again",
                    self.topic,
                    self.opts.group_name()
                );
                Ended::Failed
            }
            Err(e) => Ended::Lost(format!("INFO {} on smss at {}: {e}", self.topic, m.addr)),
        }
    }

    /// A SUB answered with an error.
    fn refused_sub(&self, e: ClientError, addr: &str) -> Ended {
        match &e {
            ClientError::Server { code, msg } if code == "NOTOPIC" && !msg.contains("dlq") => {
                Ended::Topic("deleted".into())
            }
            ClientError::Server { code, msg } if code == "NOTOPIC" => {
                error!(
                    "bridge: topic {}: the dead-letter topic is missing ({msg}); create it",
                    self.topic
                );
                Ended::Blocked
            }
            _ => Ended::Lost(format!("SUB {} on smss at {addr}: {e}", self.topic)),
        }
    }

    fn out_msg(&self, history: u64, d: Delivered) -> OutMsg {
        let id = msg_id(history, d.event_id);
        let mut headers = d.headers;
        headers.push(("Smss-Topic".into(), self.topic.clone()));
        headers.push(("Smss-Id".into(), d.event_id.to_string()));
        headers.push(("Smss-Timestamp".into(), d.timestamp_ms.to_string()));
        OutMsg {
            topic: self.topic.clone(),
            subject: self.subject.clone(),
            event_id: d.event_id,
            msg_id: id,
            timestamp_ms: d.timestamp_ms,
            headers,
            payload: d.payload,
        }
    }

    /// Bridges one smss batch: `None` when it was ACKed (or the group was
    /// moved past its stored prefix) and the subscription goes on.
    fn batch(
        &mut self,
        m: &mut Master,
        msgs: Vec<Delivered>,
    ) -> std::result::Result<Option<Ended>, ClientError> {
        let history = m.history;
        let Some(first) = msgs.first() else {
            m.client.ack()?;
            return Ok(None);
        };
        if let Some(r) = self.metrics.passed(first.event_id.saturating_sub(1)) {
            info!(
                "bridge: topic {}: message {r} went to the dead-letter topic {}",
                self.topic,
                self.sub.dlq.as_deref().unwrap_or("-")
            );
        }
        let first_ts = first.timestamp_ms;
        // The event ids of the batch, for a refusal after the move below.
        let smss_ids: Vec<u64> = msgs.iter().map(|d| d.event_id).collect();
        let out: Vec<OutMsg> = msgs
            .into_iter()
            .filter(|d| !self.is_stored(history, d.event_id))
            .map(|d| self.out_msg(history, d))
            .collect();
        self.metrics
            .add_skipped((smss_ids.len() - out.len()) as u64);
        if out.is_empty() {
            m.client.ack()?;
            return Ok(None);
        }
        self.metrics.set_in_flight(first_ts);
        let ids: Vec<(u64, u64)> = out.iter().map(|o| (o.event_id, o.timestamp_ms)).collect();
        // Half the ACK deadline: the batch is given back (STOP, nothing
        // failed) well before smss would count a failed delivery.
        let patience = Duration::from_millis(self.opts.ack_ms / 2);
        let written = self.pubs.write(&self.topic, out, patience);
        let stored = match &written {
            Written::All => ids.len(),
            Written::Refused { stored, .. }
            | Written::Stopped { stored }
            | Written::GivenBack { stored } => *stored,
        };
        if let Some(&(id, ts)) = stored.checked_sub(1).and_then(|i| ids.get(i)) {
            self.mark_stored(history, id);
            self.metrics.set_bridged_upto(ts);
        }
        match written {
            Written::All => {
                m.client.ack()?;
                self.progressed = true;
                Ok(None)
            }
            Written::Stopped { .. } => {
                let _ = m.client.stop();
                Ok(Some(Ended::Stopped))
            }
            Written::GivenBack { .. } => {
                self.metrics.add_handed_back();
                warn!(
                    "bridge: topic {}: the sink has been failing for {} ms; handing the batch \
                     back to smss (STOP) and trying again later",
                    self.topic,
                    patience.as_millis()
                );
                let _ = m.client.stop();
                Ok(Some(Ended::Blocked))
            }
            Written::Refused { stored, reason } => {
                let Some(&(rid, _)) = ids.get(stored) else {
                    return Ok(Some(Ended::Lost("a refusal past the batch".into())));
                };
                self.metrics.add_refused();
                self.refused_msg(m, &smss_ids, rid, &reason)
            }
        }
    }

    /// Message `rid` of the batch (`ids`) was refused; the ones before it
    /// are stored.
    fn refused_msg(
        &mut self,
        m: &mut Master,
        ids: &[u64],
        rid: u64,
        reason: &str,
    ) -> std::result::Result<Option<Ended>, ClientError> {
        let Some(dlq) = self.sub.dlq.clone() else {
            error!(
                "bridge: topic {}: message {rid} is refused by the sink ({reason}); the topic \
                 is blocked until the sink takes it (bridge with --max-deliver and --dlq to \
                 dead-letter such messages)",
                self.topic
            );
            let _ = m.client.stop();
            return Ok(Some(Ended::Blocked));
        };
        warn!(
            "bridge: topic {}: message {rid} is refused by the sink ({reason}); its delivery \
             ends without an ACK, so smss moves it to {dlq} after {} deliveries",
            self.topic, self.opts.max_deliver
        );
        self.metrics.await_dead_letter(rid);
        let at = ids.iter().position(|&id| id == rid).unwrap_or(0);
        match at.checked_sub(1).and_then(|i| ids.get(i)) {
            Some(before) => {
                // Commit the stored prefix by moving the group past it
                // (STOP counts no failure): the refused message comes first
                // in the next batch.
                m.client.stop()?;
                m.client
                    .subscribe(&self.topic, &before.to_string(), &self.sub)?;
                Ok(None)
            }
            // First of its batch: hanging up counts the failed delivery.
            None => Ok(Some(Ended::Failed)),
        }
    }
}
