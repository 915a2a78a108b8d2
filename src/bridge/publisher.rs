//! The `bridge-publisher` thread: the one owner of the [`Sink`]. Readers
//! send it jobs over a crossbeam channel and block on a reply channel of
//! their own; it coalesces the queued write jobs of several topics into one
//! sink write (at most `max_write` messages), and answers every job.
//!
//! A write job is answered only when it is settled: every message stored
//! ([`Written::All`]), a message refused ([`Written::Refused`], with how
//! many before it are stored), or the stop flag set while the sink kept
//! failing ([`Written::Stopped`]). On a Transient error it waits (bounded
//! backoff), asks the sink's [`Sink::last_msg_id`] for every subject it has
//! pending, counts what the sink already holds as stored (same history
//! only), and writes the rest again with the same ids — forever, while not
//! stopped. Nothing is ever skipped that the sink does not hold.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use log::{error, info, warn};

use super::metrics::Metrics;
use super::sink::{OutMsg, Sink, SinkError, parse_msg_id};
use super::{Backoff, BridgeError, Result};

/// How a write job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Written {
    /// Every message is stored.
    All,
    /// `msgs[stored]` was refused; the ones before it are stored.
    Refused { stored: usize, reason: String },
    /// Stopped while the sink failed; `msgs[..stored]` are stored.
    Stopped { stored: usize },
    /// Given back unfinished because the reader's deadline passed while
    /// the sink failed (see [`Handle::write`]); `msgs[..stored]` are stored.
    GivenBack { stored: usize },
}

enum Job {
    Write {
        topic: String,
        msgs: Vec<OutMsg>,
        reply: Sender<Written>,
        give_back: Arc<AtomicBool>,
    },
    LastId {
        subject: String,
        reply: Sender<Option<String>>,
    },
    Ended {
        topic: String,
        subject: String,
        why: String,
        reply: Sender<()>,
    },
    CheckSubject {
        subject: String,
        reply: Sender<std::result::Result<(), String>>,
    },
}

/// The readers' way to the publisher; cheap to clone.
#[derive(Clone)]
pub(super) struct Handle {
    tx: Sender<Job>,
}

/// The supervisor's handle: the channel and the thread.
pub(super) struct Owner {
    handle: Handle,
    thread: JoinHandle<()>,
}

impl std::ops::Deref for Owner {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Owner {
    /// Whether the thread ended (only after `finish`, or by a panic).
    pub(super) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Closes the channel (every reader has ended) and waits for the thread.
    pub(super) fn finish(self) {
        drop(self.handle);
        if self.thread.join().is_err() {
            error!("bridge: the publisher thread panicked");
        }
    }
}

impl Handle {
    /// Writes `msgs` (all of one topic, in order) and waits until settled.
    /// Past `patience` with the sink still failing, the job is given back
    /// at the publisher's next retry ([`Written::GivenBack`]): smss would
    /// soon count the un-ACKed batch as a failed delivery, which must not
    /// happen to a message only because the sink was down.
    pub(super) fn write(&self, topic: &str, msgs: Vec<OutMsg>, patience: Duration) -> Written {
        let (reply, rx) = bounded(1);
        let give_back = Arc::new(AtomicBool::new(false));
        let job = Job::Write {
            topic: topic.to_string(),
            msgs,
            reply,
            give_back: Arc::clone(&give_back),
        };
        if self.tx.send(job).is_err() {
            return Written::Stopped { stored: 0 };
        }
        match rx.recv_timeout(patience) {
            Ok(w) => return w,
            Err(RecvTimeoutError::Disconnected) => return Written::Stopped { stored: 0 },
            Err(RecvTimeoutError::Timeout) => give_back.store(true, Ordering::Relaxed),
        }
        rx.recv().unwrap_or(Written::Stopped { stored: 0 })
    }

    /// The sink's last msg id for `subject`: `None` when stopped first.
    pub(super) fn last_id(&self, subject: &str) -> Option<Option<String>> {
        let (reply, rx) = bounded(1);
        let subject = subject.to_string();
        self.tx.send(Job::LastId { subject, reply }).ok()?;
        // A dropped reply (stopped) is `Err`: None.
        rx.recv().ok()
    }

    /// Tells the sink the topic ended; waits until done (or stopped).
    pub(super) fn topic_ended(&self, topic: &str, subject: &str, why: &str) {
        let (reply, rx) = bounded(1);
        let job = Job::Ended {
            topic: topic.to_string(),
            subject: subject.to_string(),
            why: why.to_string(),
            reply,
        };
        if self.tx.send(job).is_ok() {
            let _ = rx.recv();
        }
    }

    /// The sink's verdict on `subject`; `None` when the publisher is gone.
    pub(super) fn check_subject(&self, subject: &str) -> Option<std::result::Result<(), String>> {
        let (reply, rx) = bounded(1);
        let subject = subject.to_string();
        self.tx.send(Job::CheckSubject { subject, reply }).ok()?;
        rx.recv().ok()
    }
}

/// Starts the publisher thread with the sink.
pub(super) fn spawn(
    sink: Box<dyn Sink>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    max_write: usize,
) -> Result<Owner> {
    // Readers wait for their answer, so at most one job per reader queues.
    let (tx, rx) = bounded(1024);
    let mut p = Publisher {
        sink,
        stop,
        metrics,
        max_write,
        pending: VecDeque::new(),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        transient_errors: 0,
    };
    let thread = std::thread::Builder::new()
        .name("bridge-publisher".into())
        .spawn(move || p.run(&rx))
        .map_err(|source| BridgeError::Io {
            what: "starting the bridge-publisher thread".into(),
            source,
        })?;
    Ok(Owner {
        handle: Handle { tx },
        thread,
    })
}

/// A write job not settled yet.
struct Pending {
    topic: String,
    msgs: Vec<OutMsg>,
    /// `msgs[..done]` are stored.
    done: usize,
    reply: Sender<Written>,
    /// Set by the reader whose patience ran out.
    give_back: Arc<AtomicBool>,
}

struct Publisher {
    sink: Box<dyn Sink>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    max_write: usize,
    pending: VecDeque<Pending>,
    backoff: Backoff,
    transient_errors: u64,
}

impl Publisher {
    fn run(&mut self, rx: &Receiver<Job>) {
        loop {
            if self.pending.is_empty() {
                match rx.recv() {
                    Ok(job) => self.take(job),
                    Err(_) => return, // every reader and the supervisor are gone
                }
            }
            // Coalesce what else is queued, up to one write's worth.
            while self.undone() < self.max_write {
                match rx.try_recv() {
                    Ok(job) => self.take(job),
                    Err(_) => break,
                }
            }
            if !self.pending.is_empty() {
                self.write_round();
            }
        }
    }

    fn undone(&self) -> usize {
        self.pending.iter().map(|p| p.msgs.len() - p.done).sum()
    }

    /// A write job queues; the others are answered now.
    fn take(&mut self, job: Job) {
        match job {
            Job::Write {
                topic,
                msgs,
                reply,
                give_back,
            } => {
                if msgs.is_empty() {
                    let _ = reply.send(Written::All);
                } else {
                    self.pending.push_back(Pending {
                        topic,
                        msgs,
                        done: 0,
                        reply,
                        give_back,
                    });
                }
            }
            Job::LastId { subject, reply } => {
                if let Some(id) = self.last_id_retrying(&subject) {
                    let _ = reply.send(id);
                }
            }
            Job::Ended {
                topic,
                subject,
                why,
                reply,
            } => {
                self.ended_retrying(&topic, &subject, &why);
                let _ = reply.send(());
            }
            Job::CheckSubject { subject, reply } => {
                let _ = reply.send(self.sink.check_subject(&subject));
            }
        }
    }

    /// `last_msg_id`, retried on errors until it answers; `None` if stopped.
    fn last_id_retrying(&mut self, subject: &str) -> Option<Option<String>> {
        loop {
            match self.sink.last_msg_id(subject) {
                Ok(id) => return Some(id),
                Err(e) => {
                    warn!(
                        "bridge: asking {} for the last id of {subject}: {e}",
                        self.sink.describe()
                    );
                    if !self.backoff.wait(&self.stop) {
                        return None;
                    }
                }
            }
        }
    }

    fn ended_retrying(&mut self, topic: &str, subject: &str, why: &str) {
        loop {
            match self.sink.topic_ended(subject, why) {
                Ok(()) => {
                    info!(
                        "bridge: topic {topic} {why}; told {} ({subject})",
                        self.sink.describe()
                    );
                    return;
                }
                Err(SinkError::Refused(m)) => {
                    error!(
                        "bridge: topic {topic} {why}, but {} refused to end {subject}: {m}",
                        self.sink.describe()
                    );
                    return;
                }
                Err(e) => {
                    warn!(
                        "bridge: topic {topic} {why}; telling {} failed: {e}",
                        self.sink.describe()
                    );
                    if !self.backoff.wait(&self.stop) {
                        return;
                    }
                }
            }
        }
    }

    /// One sink write of the pending jobs' next messages, and its outcome.
    fn write_round(&mut self) {
        // (job index, messages of it in this write), in order.
        let mut spans = Vec::new();
        let mut room = self.max_write;
        for (i, p) in self.pending.iter().enumerate() {
            if room == 0 {
                break;
            }
            let n = (p.msgs.len() - p.done).min(room);
            spans.push((i, n));
            room -= n;
        }
        let outcome = match spans.as_slice() {
            [(i, n)] => {
                let p = &self.pending[*i];
                self.sink.write(&p.msgs[p.done..p.done + n])
            }
            _ => {
                let batch: Vec<OutMsg> = spans
                    .iter()
                    .flat_map(|&(i, n)| {
                        let p = &self.pending[i];
                        p.msgs[p.done..p.done + n].iter().cloned()
                    })
                    .collect();
                self.sink.write(&batch)
            }
        };
        let total: usize = spans.iter().map(|s| s.1).sum();
        let stored = outcome.stored.min(total);
        let mut left = stored;
        // The job where the write stopped, if it stopped short.
        let mut short = None;
        for &(i, n) in &spans {
            let take = n.min(left);
            left -= take;
            let p = &mut self.pending[i];
            p.done += take;
            self.metrics.topic(&p.topic).add_bridged(take as u64);
            if take < n && short.is_none() {
                short = Some(i);
            }
        }
        self.metrics.add_published(stored as u64);
        let error = match (outcome.error, short) {
            (None, None) => None,
            (Some(e), _) => Some(e),
            (None, Some(_)) => Some(SinkError::Transient(format!(
                "the sink stored {stored} of {total} messages and gave no reason"
            ))),
        };
        match error {
            None => {
                self.backoff.reset();
            }
            Some(SinkError::Refused(reason)) => {
                self.backoff.reset();
                if let Some(i) = short
                    && let Some(p) = self.pending.remove(i)
                {
                    let stored = p.done;
                    let _ = p.reply.send(Written::Refused { stored, reason });
                }
            }
            Some(SinkError::Transient(reason)) => {
                self.transient(&reason);
            }
        }
        self.settle_complete();
    }

    /// A Transient error: wait, then count what the sink already holds.
    fn transient(&mut self, reason: &str) {
        if self.transient_errors.is_multiple_of(10) {
            warn!(
                "bridge: writing to {} failed: {reason}; retrying with the same ids",
                self.sink.describe()
            );
        }
        self.transient_errors += 1;
        self.metrics.add_transient();
        for p in &self.pending {
            self.metrics.topic(&p.topic).add_retry();
        }
        loop {
            if !self.pause() {
                for p in self.pending.drain(..) {
                    let _ = p.reply.send(Written::Stopped { stored: p.done });
                }
                return;
            }
            self.give_back();
            match self.resync() {
                Ok(()) => return,
                Err(e) => warn!("bridge: asking {} what it holds: {e}", self.sink.describe()),
            }
        }
    }

    /// Waits the next backoff, ending early when a reader wants its job
    /// back; false when the stop flag is set.
    fn pause(&mut self) -> bool {
        let end = Instant::now() + self.backoff.next_wait();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= end
                || self
                    .pending
                    .iter()
                    .any(|p| p.give_back.load(Ordering::Relaxed))
            {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }

    /// Answers the jobs whose readers ran out of patience.
    fn give_back(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].give_back.load(Ordering::Relaxed) {
                if let Some(p) = self.pending.remove(i) {
                    let _ = p.reply.send(Written::GivenBack { stored: p.done });
                }
            } else {
                i += 1;
            }
        }
    }

    /// Counts as stored what the sink says it holds of each pending job.
    fn resync(&mut self) -> std::result::Result<(), SinkError> {
        let mut last: BTreeMap<String, Option<(u64, u64)>> = BTreeMap::new();
        for p in self.pending.iter_mut() {
            let Some(first) = p.msgs.get(p.done) else {
                continue;
            };
            let subject = first.subject.clone();
            let held = match last.get(&subject) {
                Some(h) => *h,
                None => {
                    let id = self.sink.last_msg_id(&subject)?;
                    let h = id.as_deref().and_then(parse_msg_id);
                    last.insert(subject.clone(), h);
                    h
                }
            };
            let Some((history, upto)) = held else {
                continue;
            };
            let before = p.done;
            while let Some(m) = p.msgs.get(p.done) {
                match parse_msg_id(&m.msg_id) {
                    Some((h, id)) if h == history && id <= upto => p.done += 1,
                    Some((h, _)) if h != history => {
                        warn!(
                            "bridge: {subject} holds {upto} of history {history:016x}, not this \
                             smss's {h:016x}; skipping nothing"
                        );
                        break;
                    }
                    _ => break,
                }
            }
            if p.done > before {
                let n = (p.done - before) as u64;
                self.metrics.topic(&p.topic).add_bridged(n);
                self.metrics.add_published(n);
            }
        }
        Ok(())
    }

    /// Answers the jobs whose every message is stored.
    fn settle_complete(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].done >= self.pending[i].msgs.len() {
                if let Some(p) = self.pending.remove(i) {
                    let _ = p.reply.send(Written::All);
                }
            } else {
                i += 1;
            }
        }
    }
}
