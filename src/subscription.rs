//! A SUB request and the subscription it starts: find where to begin, then
//! send batches (each waits for an ACK), `ALIVE` while idle, and `END` when
//! the topic goes away, until STOP, QUIT or a hang-up.
//!
//! Runs on the subscriber's connection thread, which stays in [`run`] for
//! the whole subscription. It waits on the topic's condvar
//! ([`Topic::wait_beyond`]) for new entries, reads the topic's index and the
//! log segments with pread (through [`Reader`]), and bumps the
//! `subscribers` counter; it sends nothing to the writer.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::broker::{Broker, Topic};
use crate::protocol::{
    ErrCode, Parsed, ProtoError, Request, SubArgs, SubFrom, encode_count, encode_end, encode_err,
    encode_line, encode_msg, encode_ok,
};
use crate::replication::Role;
use crate::stats::Stats;
use crate::storage::index::{self, Entry};
use crate::storage::reader::{ReadErrorKind, Reader};
use crate::wire::{Flow, Input, Wire};

/// A batch stops growing past this many record bytes (at least one message).
const MAX_BATCH_BYTES: u64 = 1 << 20;
/// How often an idle subscriber checks its socket for STOP or a hang-up.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Input during a subscription.
enum SubInput {
    Ack,
    Stop,
    Quit,
    /// Nothing arrived (idle poll) or the wait timed out.
    Nothing,
    /// The client hung up, or the framing is lost (ERR already queued).
    Closed,
}

/// One running subscription.
struct Sub<'a> {
    wire: &'a mut Wire,
    broker: &'a Broker,
    peer: &'a str,
    topic: Arc<Topic>,
    batch: usize,
    ack_wait: Duration,
    alive: Duration,
    entries: Vec<Entry>,
    reader: Reader,
    /// What any request but ACK, STOP and QUIT gets meanwhile.
    refusal: ProtoError,
}

/// Answers SUB and, once it is accepted, runs the subscription until it
/// ends. Called with no write in flight, so the `OK` is in order.
pub fn run(wire: &mut Wire, broker: &Broker, peer: &str, args: SubArgs) -> io::Result<Flow> {
    let Some(topic) = broker.topic(&args.topic) else {
        encode_err(
            &mut wire.out,
            &ProtoError::new(ErrCode::NoTopic, format!("no topic {}", args.topic)),
        );
        return Ok(Flow::Continue);
    };
    if args.group.is_some() && broker.role() == Role::Slave {
        encode_err(
            &mut wire.out,
            &ProtoError::new(ErrCode::ReadOnly, "group subscriptions need the master"),
        );
        return Ok(Flow::Continue);
    }
    if args.group.is_some() || args.from == SubFrom::Committed {
        encode_err(
            &mut wire.out,
            &ProtoError::new(ErrCode::BadReq, "consumer groups are not supported yet"),
        );
        return Ok(Flow::Continue);
    }
    let cfg = &broker.config;
    let batch = args
        .batch
        .unwrap_or(cfg.sub.default_batch)
        .clamp(1, cfg.limits.max_batch);
    let ack_wait = Duration::from_millis(args.ack_ms.unwrap_or(cfg.sub.default_ack_timeout_ms));
    let alive = Duration::from_millis(cfg.timeout.server_alive_ms);
    let st = topic.state();
    let after = match args.from {
        SubFrom::After(n) => n,
        SubFrom::Latest | SubFrom::Committed => st.last_id,
    };
    let mut next = match index::search_after(&topic.index, st.first_entry, st.entries, after) {
        Ok(n) => n,
        Err(e) => {
            encode_err(
                &mut wire.out,
                &ProtoError::new(
                    ErrCode::Internal,
                    format!("reading the index of {}: {e}", topic.name),
                ),
            );
            return Ok(Flow::Continue);
        }
    };
    encode_ok(&mut wire.out, &[]);
    wire.flush()?;
    Stats::add(&broker.stats.subscribers, 1);
    // `after` may be above every id stored so far: entries written
    // later can still be <= after, so it stays a floor until passed.
    let floor = (after > st.last_id).then_some(after);
    let mut sub = Sub {
        wire,
        broker,
        peer,
        topic,
        batch,
        ack_wait,
        alive,
        entries: Vec::new(),
        reader: Reader::new(),
        refusal: ProtoError::new(
            ErrCode::BadReq,
            "only ACK, STOP or QUIT during a subscription",
        ),
    };
    let res = sub.sub_loop(&mut next, floor);
    Stats::sub(&broker.stats.subscribers, 1);
    res
}

impl Sub<'_> {
    fn sub_loop(&mut self, next: &mut u64, mut floor: Option<u64>) -> io::Result<Flow> {
        let topic = Arc::clone(&self.topic);
        let mut last_sent = Instant::now();
        loop {
            let until_alive = self.alive.saturating_sub(last_sent.elapsed());
            let st = topic.wait_beyond(*next, until_alive.min(IDLE_POLL));
            if let Some(reason) = st.ended {
                encode_end(&mut self.wire.out, reason.as_str());
                self.wire.flush()?;
                return Ok(Flow::Continue);
            }
            *next = (*next).max(st.first_entry);
            if let Some(after) = floor
                && st.entries > *next
            {
                match index::search_after(&topic.index, *next, st.entries, after) {
                    Ok(n) => *next = n,
                    Err(e) => {
                        let msg = format!("reading the index of {}: {e}", topic.name);
                        encode_err(&mut self.wire.out, &ProtoError::new(ErrCode::Internal, msg));
                        self.wire.flush()?;
                        return Ok(Flow::Continue);
                    }
                }
                if *next < st.entries {
                    floor = None; // ids only grow from here
                }
            }
            if st.entries > *next {
                let want = self.batch.min((st.entries - *next) as usize);
                let sent = match self.put_batch(*next, want) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!("{}: subscription to {} failed: {e}", self.peer, topic.name);
                        encode_err(&mut self.wire.out, &ProtoError::new(ErrCode::Internal, e));
                        self.wire.flush()?;
                        return Ok(Flow::Continue);
                    }
                };
                self.wire.flush()?;
                *next += sent as u64;
                last_sent = Instant::now();
                let input = self.sub_input(Some(self.ack_wait))?;
                if let Some(flow) = self.sub_end(&input) {
                    return Ok(flow);
                }
                match input {
                    SubInput::Ack => continue,
                    _ => {
                        info!(
                            "{}: no ACK within {} ms on {}; closing",
                            self.peer,
                            self.ack_wait.as_millis(),
                            topic.name
                        );
                        return Ok(Flow::Close);
                    }
                }
            }
            // Idle: STOP, QUIT or a hang-up may arrive; a stray ACK is ignored.
            let input = self.sub_input(None)?;
            if let Some(flow) = self.sub_end(&input) {
                return Ok(flow);
            }
            if last_sent.elapsed() >= self.alive {
                encode_line(&mut self.wire.out, "ALIVE");
                self.wire.flush()?;
                last_sent = Instant::now();
            }
        }
    }

    /// STOP, QUIT and a hang-up end a subscription the same way wherever
    /// they arrive; `None` for anything else.
    fn sub_end(&mut self, input: &SubInput) -> Option<Flow> {
        match input {
            SubInput::Stop => {
                encode_ok(&mut self.wire.out, &[]);
                Some(Flow::Continue)
            }
            SubInput::Quit => {
                encode_ok(&mut self.wire.out, &[]);
                Some(Flow::Close)
            }
            SubInput::Closed => Some(Flow::Close),
            SubInput::Ack | SubInput::Nothing => None,
        }
    }

    /// Reads what the subscriber sent: blocking up to `wait` (after a batch)
    /// or without blocking (`None`, while idle).
    fn sub_input(&mut self, wait: Option<Duration>) -> io::Result<SubInput> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            match self.wire.next_request(Some(&self.refusal)) {
                Parsed::Request { req, .. } => match req {
                    Request::Ack => return Ok(SubInput::Ack),
                    Request::Stop => return Ok(SubInput::Stop),
                    Request::Quit => return Ok(SubInput::Quit),
                    _ => {
                        encode_err(&mut self.wire.out, &self.refusal);
                        self.wire.flush()?;
                    }
                },
                Parsed::Error { err, .. } => {
                    encode_err(&mut self.wire.out, &err);
                    self.wire.flush()?;
                }
                Parsed::Fatal { err } => {
                    encode_err(&mut self.wire.out, &err);
                    self.wire.flush()?;
                    self.wire.close_after_fatal();
                    return Ok(SubInput::Closed);
                }
                Parsed::NeedMore => {
                    let got = match deadline {
                        None => self.wire.poll()?,
                        Some(d) => self.wire.read_until(d)?,
                    };
                    match got {
                        Input::Data => {}
                        Input::Closed => return Ok(SubInput::Closed),
                        Input::Nothing => return Ok(SubInput::Nothing),
                    }
                }
            }
        }
    }

    /// Queues `BATCH n` and up to `want` messages starting at entry `from`;
    /// returns how many were queued. On error nothing is queued (but see
    /// the no-segment case below).
    fn put_batch(&mut self, from: u64, want: usize) -> Result<usize, String> {
        let topic = &self.topic;
        self.entries.clear();
        index::read_entries(&topic.index, from, want, &mut self.entries)
            .map_err(|e| format!("reading the index of {}: {e}", topic.name))?;
        // Bound the batch by bytes, keeping at least one message.
        let mut bytes = 0u64;
        let mut n = 0;
        for e in &self.entries {
            if n > 0 && bytes + u64::from(e.len) > MAX_BATCH_BYTES {
                break;
            }
            bytes += u64::from(e.len);
            n += 1;
        }
        let out = &mut self.wire.out;
        let mark = out.len();
        encode_count(out, "BATCH", n as u64);
        let res = self.reader.read(
            &self.broker.segments,
            &topic.name,
            &self.entries[..n],
            |m| encode_msg(out, m.event_id, m.timestamp_ms, m.headers, m.payload),
        );
        if let Err(e) = res {
            // A batch is announced with its count, so a failed one is taken
            // back, except (as before the reader was split out) when no
            // segment held a record: then what was queued stays.
            if !matches!(e.kind, ReadErrorKind::NoSegment) {
                self.wire.out.truncate(mark);
            }
            return Err(e.to_string());
        }
        Ok(n)
    }
}
