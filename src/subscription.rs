//! A SUB request and the subscription it starts: find where to begin, then
//! send batches (each waits for an ACK), `ALIVE` while idle, and `END` when
//! the topic goes away, until STOP, QUIT or a hang-up.
//!
//! Runs on the subscriber's connection thread, which stays in [`run`] for
//! the whole subscription. It waits on the topic's condvar
//! ([`Topic::wait_beyond`]) for new entries, reads the topic's index and the
//! log segments with pread and sends each batch in bounded chunks (through
//! [`Batcher`]), and bumps the `subscribers` counter; it sends nothing to
//! the writer. While it waits for an ACK or for new messages it holds no
//! batch buffer: they are given back (and the `mem-trim` thread asked to
//! return them to the OS when the subscription goes idle or ends).
//!
//! Retention may delete the segments a lagging subscriber was about to read:
//! it then goes on from the topic's oldest retained message, which the
//! writer publishes before it lets go of the segments.
//!
//! A SUB with `group=` is [`crate::group_sub`]'s; it drives the same [`Sub`]
//! (batches, input during a subscription) with its own loop.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::broker::Broker;
use crate::protocol::{
    ErrCode, Parsed, ProtoError, Request, SubArgs, SubFrom, encode_end, encode_err, encode_line,
    encode_ok,
};
use crate::stats::Stats;
use crate::storage::index;
use crate::storage::view::Topic;
use crate::sub_batch::{Batcher, Failed, Plan};
use crate::wire::{Flow, Input, Wire};
/// How often an idle subscriber checks its socket for STOP or a hang-up.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(100);
/// How many times one batch is restarted past segments retention deleted
/// under it (each restart starts strictly further on).
const MAX_RESTARTS: usize = 16;

/// Input during a subscription.
pub(crate) enum SubInput {
    Ack,
    Stop,
    Quit,
    /// Nothing arrived (idle poll) or the wait timed out.
    Nothing,
    /// The client hung up, or the framing is lost (ERR already queued).
    Closed,
}

/// One running subscription.
pub(crate) struct Sub<'a> {
    pub(crate) wire: &'a mut Wire,
    pub(crate) broker: &'a Broker,
    pub(crate) peer: &'a str,
    pub(crate) topic: Arc<Topic>,
    pub(crate) batch: usize,
    pub(crate) ack_wait: Duration,
    pub(crate) alive: Duration,
    batcher: Batcher,
    /// A batch went out since the subscription last went idle.
    busy: bool,
    /// What any request but ACK, STOP and QUIT gets meanwhile.
    refusal: ProtoError,
}

/// What [`Sub::put_batch`] prepared.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// A batch checked and ready to send, from the entry asked for, or
    /// from the oldest retained one when retention deleted that.
    Batch(Plan),
    /// Nothing: the topic ended, or retention left nothing to read; the
    /// loop's next wait tells which.
    Nothing,
}

/// Answers a SUB without a group and, once it is accepted, runs the
/// subscription until it ends. Called with no write in flight, so the `OK`
/// is in order.
pub fn run(wire: &mut Wire, broker: &Broker, peer: &str, args: SubArgs) -> io::Result<Flow> {
    let Some(topic) = broker.topic(&args.topic) else {
        encode_err(
            &mut wire.out,
            &ProtoError::new(ErrCode::NoTopic, format!("no topic {}", args.topic)),
        );
        return Ok(Flow::Continue);
    };
    if args.group.is_some() || args.from == SubFrom::Committed {
        // The connection routes group SUBs elsewhere; the parser refuses `-`.
        encode_err(
            &mut wire.out,
            &ProtoError::new(ErrCode::BadReq, "SUB position '-' needs group=<name>"),
        );
        return Ok(Flow::Continue);
    }
    let st = topic.state();
    let after = match args.from {
        SubFrom::After(n) => n,
        SubFrom::Latest | SubFrom::Committed => st.last_id,
    };
    let found = broker
        .index_of(&topic)
        .and_then(|f| index::search_after(&*f, st.first_entry, st.entries, after));
    let mut next = match found {
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
    let _counted = Counted::new(&broker.stats);
    // `after` may be above every id stored so far: entries written
    // later can still be <= after, so it stays a floor until passed.
    let floor = (after > st.last_id).then_some(after);
    let mut sub = Sub::new(wire, broker, peer, topic, &args);
    sub.sub_loop(&mut next, floor)
}

/// Counts a subscription in STATS `subscribers` for as long as it lives.
pub(crate) struct Counted<'a>(&'a Stats);

impl<'a> Counted<'a> {
    pub(crate) fn new(stats: &'a Stats) -> Counted<'a> {
        Stats::add(&stats.subscribers, 1);
        Counted(stats)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        Stats::sub(&self.0.subscribers, 1);
    }
}

impl<'a> Sub<'a> {
    /// A subscription with the batch size and ACK deadline `args` ask for
    /// (or the configured defaults).
    pub(crate) fn new(
        wire: &'a mut Wire,
        broker: &'a Broker,
        peer: &'a str,
        topic: Arc<Topic>,
        args: &SubArgs,
    ) -> Sub<'a> {
        let cfg = &broker.config;
        let batch = args
            .batch
            .unwrap_or(cfg.sub.default_batch)
            .clamp(1, cfg.limits.max_batch);
        let ack_ms = args.ack_ms.unwrap_or(cfg.sub.default_ack_timeout_ms);
        Sub {
            wire,
            broker,
            peer,
            topic,
            batch,
            ack_wait: Duration::from_millis(ack_ms),
            alive: Duration::from_millis(cfg.timeout.server.alive_ms),
            batcher: Batcher::new(),
            busy: false,
            refusal: ProtoError::new(
                ErrCode::BadReq,
                "only ACK, STOP or QUIT during a subscription",
            ),
        }
    }
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
                let found = (self.broker.index_of(&self.topic))
                    .and_then(|f| index::search_after(&*f, *next, st.entries, after));
                match found {
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
                let plan = match self.put_batch(*next, st.entries) {
                    Ok(Queued::Batch(plan)) => plan,
                    Ok(Queued::Nothing) => continue,
                    Err(e) => {
                        warn!("{}: subscription to {} failed: {e}", self.peer, topic.name);
                        encode_err(&mut self.wire.out, &ProtoError::new(ErrCode::Internal, e));
                        self.wire.flush()?;
                        return Ok(Flow::Continue);
                    }
                };
                if !self.send_batch(&plan)? {
                    return Ok(Flow::Close);
                }
                *next = plan.from + plan.n as u64;
                last_sent = Instant::now();
                let input = self.sub_input(Some(self.ack_wait))?;
                if let Some(flow) = self.sub_end(&input) {
                    return Ok(flow);
                }
                match input {
                    SubInput::Ack => {
                        Stats::add(&self.broker.stats.messages_acked, plan.n as u64);
                        continue;
                    }
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
            if let Some(flow) = self.idle(&mut last_sent)? {
                return Ok(flow);
            }
        }
    }

    /// Ends the subscription with `END <reason>` (the connection goes back
    /// to command mode).
    pub(crate) fn end(&mut self, reason: &str) -> io::Result<Flow> {
        encode_end(&mut self.wire.out, reason);
        self.wire.flush()?;
        Ok(Flow::Continue)
    }

    /// Ends the subscription with an `ERR` (the connection goes back to
    /// command mode).
    pub(crate) fn fail(&mut self, code: ErrCode, msg: String) -> io::Result<Flow> {
        encode_err(&mut self.wire.out, &ProtoError::new(code, msg));
        self.wire.flush()?;
        Ok(Flow::Continue)
    }

    /// One idle step: the buffers go back, STOP, QUIT or a hang-up end the
    /// subscription (`Some`; a stray ACK is ignored), and ALIVE goes out
    /// once `alive` has passed since `last_sent`.
    pub(crate) fn idle(&mut self, last_sent: &mut Instant) -> io::Result<Option<Flow>> {
        self.go_idle();
        let input = self.sub_input(None)?;
        if let Some(flow) = self.sub_end(&input) {
            return Ok(Some(flow));
        }
        if last_sent.elapsed() >= self.alive {
            encode_line(&mut self.wire.out, "ALIVE");
            self.wire.flush()?;
            *last_sent = Instant::now();
        }
        Ok(None)
    }

    /// STOP, QUIT and a hang-up end a subscription the same way wherever
    /// they arrive; `None` for anything else.
    pub(crate) fn sub_end(&mut self, input: &SubInput) -> Option<Flow> {
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
    pub(crate) fn sub_input(&mut self, wait: Option<Duration>) -> io::Result<SubInput> {
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

    /// Checks a batch of messages from entry `from` on (of `entries`
    /// published), queuing nothing. When retention deleted the segments
    /// under `from` since the caller looked, the batch starts at the
    /// topic's oldest retained entry instead.
    fn put_batch(&mut self, from: u64, entries: u64) -> Result<Queued, String> {
        self.put_batch_of(from, entries, self.batch)
    }

    /// [`Sub::put_batch`] with at most `max` messages.
    pub(crate) fn put_batch_of(
        &mut self,
        mut from: u64,
        mut entries: u64,
        max: usize,
    ) -> Result<Queued, String> {
        let topic = Arc::clone(&self.topic);
        for _ in 0..MAX_RESTARTS {
            let want = max.min(entries.saturating_sub(from) as usize);
            if want == 0 {
                return Ok(Queued::Nothing);
            }
            match self.batcher.prepare(self.broker, &topic, from, want) {
                Ok(plan) => return Ok(Queued::Batch(plan)),
                Err(Failed::NoSegment(e)) => {
                    // The writer publishes a topic's new first entry before it
                    // drops the segments, so this state is past them.
                    let st = topic.state();
                    if st.ended.is_some() {
                        return Ok(Queued::Nothing);
                    }
                    if st.first_entry <= from {
                        return Err(e); // not retention: the index is wrong
                    }
                    from = st.first_entry;
                    entries = st.entries;
                }
                Err(Failed::Other(e)) => return Err(e),
            }
        }
        Err(format!(
            "reading {}: retention kept deleting the segments being read",
            topic.name
        ))
    }

    /// Sends a batch [`Sub::put_batch`] prepared, then gives its buffers
    /// back for the wait for the ACK. `false`: it broke off after part of
    /// it went out (logged); the connection must close.
    pub(crate) fn send_batch(&mut self, plan: &Plan) -> io::Result<bool> {
        let res = self
            .batcher
            .send(self.wire, self.broker, &self.topic, plan)?;
        self.batcher.release();
        self.busy = true;
        if res.is_ok() {
            Stats::add(&self.broker.stats.messages_delivered, plan.n as u64);
        }
        if let Err(e) = res {
            warn!(
                "{}: batch of {} broke off after it began: {e}; closing",
                self.peer, self.topic.name
            );
            return Ok(false);
        }
        Ok(true)
    }

    /// Nothing to send: the buffers go back, and once per idle spell the
    /// trim thread is asked to return them to the OS.
    pub(crate) fn go_idle(&mut self) {
        if std::mem::take(&mut self.busy) | self.batcher.release() {
            self.wire.release_idle();
            crate::memory::released();
        }
    }
}

impl Drop for Sub<'_> {
    fn drop(&mut self) {
        self.batcher.release();
        crate::memory::released();
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::protocol::{Limits, MAX_LINE_BYTES};
    use crate::role::Role;
    use crate::storage::index::Entry;
    use crate::storage::log::record::{self, DeleteReason, Kind, Record};
    use crate::storage::log::segment::Segment;
    use crate::storage::view::TopicState;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A broker whose topic `t` holds ids 1..=3 in segment 0 and 4..=6 in
    /// the next; the broker is never asked to write.
    fn six_messages(dir: &Path) -> Result<(Broker, Arc<Topic>), Box<dyn std::error::Error>> {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut cfg = Config::default();
        cfg.store.path = dir.to_path_buf();
        let broker = Broker::new(cfg, Role::Master, tx, 4);
        std::fs::create_dir_all(dir.join("index"))?;
        let index = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("index").join("t@1.idx"))?;
        let mut entries = Vec::new();
        let mut base = 0;
        for ids in [1..=3u64, 4..=6] {
            let seg = Segment::open(dir, base, true)?;
            let mut bytes = Vec::new();
            for id in ids {
                let start = bytes.len();
                let body = format!("m{id}");
                record::encode(
                    &mut bytes,
                    &Record {
                        event_id: id,
                        timestamp_ms: 1000 + id,
                        kind: Kind::Pub,
                        flags: 0,
                        topic: "t",
                        headers: b"",
                        body: body.as_bytes(),
                    },
                );
                Entry {
                    event_id: id,
                    pos: base + start as u64,
                    len: (bytes.len() - start) as u32,
                }
                .encode_into(&mut entries);
            }
            seg.file.write_all_at(&bytes, 0)?;
            broker.store.segments.push(Arc::new(seg));
            base += bytes.len() as u64;
        }
        index.write_all_at(&entries, 0)?;
        let state = TopicState {
            entries: 6,
            first_entry: 0,
            first_id: 1,
            last_id: 6,
            ended: None,
        };
        let topic = Arc::new(Topic::new("t".into(), 1, 0, 0, state));
        broker.store.insert_topic(Arc::clone(&topic));
        Ok((broker, topic))
    }

    /// What retention does to `t`: the first entry moves past segment 0,
    /// published before the segment is dropped.
    fn retain_from_id_4(broker: &Broker, topic: &Topic) {
        topic.publish(TopicState {
            first_entry: 3,
            first_id: 4,
            ..topic.state()
        });
        broker.store.segments.remove_prefix(1);
    }

    fn wire() -> Result<(TcpStream, Wire), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        let limits = Limits {
            max_payload: MAX_LINE_BYTES,
            max_batch: 10,
            max_batch_bytes: 1 << 20,
        };
        Ok((client, Wire::new(server, limits)))
    }

    fn sub<'a>(wire: &'a mut Wire, broker: &'a Broker, topic: Arc<Topic>) -> Sub<'a> {
        let args = SubArgs {
            topic: "t".into(),
            from: SubFrom::After(0),
            batch: Some(10),
            ack_ms: Some(5000),
            group: None,
            max_deliver: None,
            dlq: None,
            mode: None,
        };
        Sub::new(wire, broker, "test", topic, &args)
    }

    #[test]
    fn a_batch_whose_segments_retention_deleted_starts_at_the_oldest_retained() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (broker, topic) = six_messages(dir.path())?;
        let (mut client, mut wire) = wire()?;
        let mut s = sub(&mut wire, &broker, Arc::clone(&topic));
        // The subscriber looked (next entry 0 of 6), then retention ran.
        retain_from_id_4(&broker, &topic);
        let plan = Plan {
            from: 3,
            n: 3,
            first_id: 4,
            last_id: 6,
        };
        assert_eq!(s.put_batch(0, 6), Ok(Queued::Batch(plan)));
        assert!(s.wire.out.is_empty(), "a prepared batch is not queued");
        assert!(s.send_batch(&plan)?);
        let want = "BATCH 3\r\nMSG 4 1004 2\r\nm4\r\nMSG 5 1005 2\r\nm5\r\nMSG 6 1006 2\r\nm6\r\n";
        client.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut got = vec![0u8; want.len()];
        std::io::Read::read_exact(&mut client, &mut got)?;
        assert_eq!(String::from_utf8(got)?, want);
        Ok(())
    }

    #[test]
    fn a_deleted_topic_whose_segments_are_gone_ends_with_end_deleted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (broker, topic) = six_messages(dir.path())?;
        let (mut client, mut wire) = wire()?;
        let mut s = sub(&mut wire, &broker, Arc::clone(&topic));
        topic.end(DeleteReason::Deleted);
        broker.store.segments.remove_prefix(1);
        assert_eq!(s.put_batch(0, 6), Ok(Queued::Nothing));
        assert!(s.wire.out.is_empty(), "no half batch queued");
        let mut next = 0;
        assert_eq!(s.sub_loop(&mut next, None)?, Flow::Continue);
        client.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut got = [0u8; 13];
        std::io::Read::read_exact(&mut client, &mut got)?;
        assert_eq!(&got, b"END deleted\r\n");
        Ok(())
    }

    #[test]
    fn a_missing_segment_retention_did_not_explain_is_an_error_with_nothing_queued() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (broker, topic) = six_messages(dir.path())?;
        let (_client, mut wire) = wire()?;
        let mut s = sub(&mut wire, &broker, topic);
        broker.store.segments.remove_prefix(1); // the first entry did not move
        assert_eq!(
            s.put_batch(0, 6),
            Err("no segment holds position 0".to_string())
        );
        assert!(s.wire.out.is_empty(), "a failed batch is taken back whole");
        Ok(())
    }
}
