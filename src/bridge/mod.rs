//! The bridge: copies smss topics into an external durable [`Sink`] (NATS
//! JetStream now; Kafka could sit beside it), losing nothing and writing
//! nothing twice.
//!
//! # Threads and channels
//!
//! ```text
//!  bridge (the supervisor, started by Bridge::start: polls LIST and GROUPS
//!    │     on the master, starts a reader per topic, logs the counters)
//!    ├── bridge-<topic> (one per topic): a group SUB on the smss master ──┐
//!    │     batch → OutMsgs → Job::Write ──crossbeam──▶ bridge-publisher   │
//!    │     ACK only once the publisher says every message is stored ◀──┘
//!    ├── bridge-publisher: owns the Sink; coalesces jobs into writes,
//!    │     retries Transient errors forever (asking last_msg_id), answers
//!    └── bridge-metrics (optional): GET /metrics, Prometheus text
//! ```
//!
//! Files: [`sink`] (the trait and the message id), [`nats_sink`] (the
//! sink into NATS JetStream), [`follow`] (finding the
//! master among the smss addresses), `reader` (one topic's subscription
//! loop), `publisher` (the thread that owns the sink), [`metrics`]
//! (counters, the periodic log line and `/metrics`). This file holds the
//! options, the error type, and the supervisor that starts and stops them.
//!
//! # Guarantees
//!
//! - A reader ACKs an smss batch (committing the bridge group's position)
//!   only after every message of it is stored in the sink, or is known to
//!   be there already. A crash anywhere redelivers from the committed
//!   position, and the redelivered messages the sink already holds are
//!   skipped, so nothing is lost and nothing is written twice.
//! - Skipping: a message is not written when its event id is at or below
//!   what the sink's [`Sink::last_msg_id`] says it holds for the subject,
//!   when that id is of the same smss history (a different history is
//!   another lineage: warned about, nothing skipped), or at or below what
//!   this reader itself saw stored. The sink is asked at each (re)start of a
//!   subscription and after every Transient error.
//! - A message the sink refuses is never dropped by the bridge: with
//!   `max_deliver` and `dlq` its delivery is ended without an ACK until the
//!   group's `maxDeliver` moves it to the dead-letter topic; without them
//!   its topic stays blocked, logged at every retry.
//! - A sink that keeps failing never makes smss count a failed delivery: a
//!   batch still unwritten at half the ACK deadline (`ack_ms`) is handed
//!   back with STOP and asked for again later, so `maxDeliver` only ever
//!   counts refusals.

pub mod follow;
pub mod metrics;
pub mod nats_sink;
mod publisher;
mod reader;
pub mod sink;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::client::{Client, ClientError};

pub use self::metrics::Metrics;
pub use self::sink::{OutMsg, Sink, SinkError, WriteOutcome, msg_id, parse_msg_id};

/// Everything the bridge can fail with. Each variant names what it was
/// working on (the topic, the address).
#[derive(Debug)]
pub enum BridgeError {
    /// The options do not make sense; the text says which.
    Options(String),
    /// Talking to the smss server at `addr` failed.
    Smss { addr: String, source: ClientError },
    /// None of the smss addresses answered as a master.
    NoMaster(String),
    /// The sink failed for `topic` (or the sink as a whole, topic empty).
    Sink { topic: String, source: SinkError },
    /// A local resource (the metrics port, a thread).
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Options(m) => write!(f, "bridge options: {m}"),
            BridgeError::Smss { addr, source } => write!(f, "smss at {addr}: {source}"),
            BridgeError::NoMaster(m) => write!(f, "no smss master: {m}"),
            BridgeError::Sink { topic, source } if topic.is_empty() => write!(f, "{source}"),
            BridgeError::Sink { topic, source } => write!(f, "topic {topic}: {source}"),
            BridgeError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for BridgeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BridgeError::Smss { source, .. } => Some(source),
            BridgeError::Sink { source, .. } => Some(source),
            BridgeError::Io { source, .. } => Some(source),
            BridgeError::Options(_) | BridgeError::NoMaster(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, BridgeError>;

/// What to bridge, from where, and how.
#[derive(Clone)]
pub struct BridgeOptions {
    /// `HOST:PORT` of the smss master and its slaves: the bridge follows
    /// whichever says `role master` (the highest `epoch` if two do).
    pub smss: Vec<String>,
    /// `AUTH` token for smss.
    pub token: Option<String>,
    /// TLS to smss (made with [`crate::tls::client_config`]).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Topics to bridge; empty = all, and topics created later are picked
    /// up by polling LIST every `poll_interval`.
    pub topics: Vec<String>,
    /// Sink subjects are `<prefix>.<topic>`.
    pub prefix: String,
    /// The bridge's name: its group is `bridge.<name>` unless `group` is set.
    pub name: String,
    pub group: Option<String>,
    /// Messages per smss batch (SUB `batch=`); None: the server's default.
    pub batch: Option<usize>,
    /// With `dlq`: deliveries of a message the sink refuses before smss moves
    /// it to `dlq`. 0 (without `dlq`): never; the topic blocks instead.
    pub max_deliver: u32,
    pub dlq: Option<String>,
    /// Serve `/metrics` here (0: a port the OS picks, see
    /// [`Bridge::metrics_addr`]).
    pub metrics_port: Option<u16>,
    /// The address `/metrics` binds (default 127.0.0.1).
    pub metrics_bind: String,
    /// How often LIST (new topics) and GROUPS (lag) are polled.
    pub poll_interval: Duration,
    /// How often the per-topic counters are logged at info.
    pub report_interval: Duration,
    /// SUB `ack=`: how long smss waits for an ACK while the sink is slow
    /// or retrying; past it smss counts a failed delivery.
    pub ack_ms: u64,
    /// Most messages in one sink write (several topics' batches coalesce).
    pub max_write: usize,
    /// Connect and read timeout towards smss.
    pub timeout: Duration,
}

impl Default for BridgeOptions {
    fn default() -> BridgeOptions {
        BridgeOptions {
            smss: vec!["127.0.0.1:12301".into()],
            token: None,
            #[cfg(feature = "tls")]
            tls: None,
            topics: Vec::new(),
            prefix: "smss".into(),
            name: "default".into(),
            group: None,
            batch: None,
            max_deliver: 0,
            dlq: None,
            metrics_port: None,
            metrics_bind: "127.0.0.1".into(),
            poll_interval: Duration::from_secs(5),
            report_interval: Duration::from_secs(60),
            ack_ms: 300_000,
            max_write: 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

impl BridgeOptions {
    /// The consumer group the bridge reads as.
    pub fn group_name(&self) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("bridge.{}", self.name))
    }

    /// Checks the options against the protocol's rules.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BridgeError::Options(m));
        if self.smss.is_empty() {
            return bad("no smss address".into());
        }
        crate::client::check::group(&self.group_name())
            .map_err(|e| BridgeError::Options(format!("group: {e}")))?;
        for t in &self.topics {
            crate::client::check::topic(t)
                .map_err(|e| BridgeError::Options(format!("topic: {e}")))?;
        }
        if let Some(d) = &self.dlq {
            crate::client::check::topic(d)
                .map_err(|e| BridgeError::Options(format!("dlq: {e}")))?;
        }
        match (self.max_deliver, &self.dlq) {
            (0, Some(_)) => return bad("a dlq needs max_deliver of at least 1".into()),
            (n, None) if n > 0 => {
                // smss would skip the message: a silent loss for a bridge.
                return bad("max_deliver needs a dlq (without one smss drops the message)".into());
            }
            _ => {}
        }
        if self.prefix.is_empty() {
            return bad("the subject prefix is empty".into());
        }
        if self.max_write == 0 || self.batch == Some(0) || self.ack_ms == 0 {
            return bad("batch, max_write and ack_ms must be at least 1".into());
        }
        Ok(())
    }

    /// A connection to smss at `addr`, authenticated.
    pub(crate) fn connect(&self, addr: &str) -> Result<Client> {
        let err = |source| BridgeError::Smss {
            addr: addr.to_string(),
            source,
        };
        #[cfg(feature = "tls")]
        let c = match &self.tls {
            Some(cfg) => Client::connect_tls_with(addr, Arc::clone(cfg), self.timeout),
            None => Client::connect_timeout(addr, self.timeout),
        };
        #[cfg(not(feature = "tls"))]
        let c = Client::connect_timeout(addr, self.timeout);
        let mut c = c.map_err(err)?;
        if let Some(t) = &self.token {
            c.auth(t).map_err(err)?;
        }
        Ok(c)
    }
}

/// Waits between retries: from `min`, doubling up to `max`; the wait
/// ends early when the stop flag is set.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps the next wait; false when the stop flag ended it.
    pub(crate) fn wait(&mut self, stop: &AtomicBool) -> bool {
        let d = self.next_wait();
        sleep_unless_stopped(d, stop)
    }

    /// The next wait (and doubles the one after it).
    pub(crate) fn next_wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Sleeps `d` in short slices; false as soon as `stop` is set.
pub(crate) fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A running bridge: [`Bridge::join`] waits until `stop` is set and every
/// thread finished.
pub struct Bridge {
    supervisor: JoinHandle<Result<()>>,
    metrics_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
}

impl Bridge {
    /// Checks the options, binds the metrics port, starts the threads.
    pub fn start(
        opts: BridgeOptions,
        sink: Box<dyn Sink>,
        stop: Arc<AtomicBool>,
    ) -> Result<Bridge> {
        opts.validate()?;
        let metrics = Arc::new(Metrics::default());
        let metrics_addr = match opts.metrics_port {
            Some(port) => Some(metrics::serve(
                &opts.metrics_bind,
                port,
                Arc::clone(&metrics),
                Arc::clone(&stop),
            )?),
            None => None,
        };
        info!(
            "bridge {} → {}: smss {}, group {}, topics {}",
            opts.name,
            sink.describe(),
            opts.smss.join(","),
            opts.group_name(),
            if opts.topics.is_empty() {
                "all".to_string()
            } else {
                opts.topics.join(",")
            }
        );
        let pubs = publisher::spawn(
            sink,
            Arc::clone(&stop),
            Arc::clone(&metrics),
            opts.max_write,
        )?;
        let m = Arc::clone(&metrics);
        let supervisor = std::thread::Builder::new()
            .name("bridge".into())
            .spawn(move || supervise(&opts, pubs, &m, &stop))
            .map_err(|source| BridgeError::Io {
                what: "starting the bridge thread".into(),
                source,
            })?;
        Ok(Bridge {
            supervisor,
            metrics_addr,
            metrics,
        })
    }

    /// Where `/metrics` listens, when asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The counters, as `/metrics` shows them.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Waits for the bridge to stop (after `stop` is set).
    pub fn join(self) -> Result<()> {
        match self.supervisor.join() {
            Ok(r) => r,
            Err(_) => Err(BridgeError::Io {
                what: "the bridge thread".into(),
                source: std::io::Error::other("panicked"),
            }),
        }
    }
}

/// Runs the bridge until `stop` is set; the batches in flight are finished
/// (stored and ACKed, or left un-ACKed for the next run) first. The bridge
/// sets `stop` itself when it cannot go on (the sink panicked, no thread
/// could be started) and then returns the error.
pub fn run(opts: BridgeOptions, sink: Box<dyn Sink>, stop: Arc<AtomicBool>) -> Result<()> {
    Bridge::start(opts, sink, stop)?.join()
}

/// One topic's reader thread.
struct Running {
    handle: JoinHandle<()>,
}

/// The supervisor loop: keeps a reader per wanted topic, polls lag, logs.
fn supervise(
    opts: &BridgeOptions,
    pubs: publisher::Owner,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    let mut readers: BTreeMap<String, Running> = BTreeMap::new();
    let mut refused_topics: BTreeMap<String, String> = BTreeMap::new();
    let mut missing_logged: BTreeSet<String> = BTreeSet::new();
    let mut last_report = Instant::now();
    let mut conn: Option<follow::Master> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut outcome = Ok(());
    while !stop.load(Ordering::Relaxed) {
        if pubs.is_finished() {
            // Only a panic in the sink ends it early: stop everything.
            outcome = Err(BridgeError::Sink {
                topic: String::new(),
                source: SinkError::Transient("the bridge-publisher thread ended (panic)".into()),
            });
            stop.store(true, Ordering::Relaxed);
            break;
        }
        readers.retain(|_, r| !r.handle.is_finished());
        if conn.is_none() {
            conn = follow::find_master(opts, stop);
        }
        let Some(m) = conn.as_mut() else { break };
        let listed = match m.client.list() {
            Ok(l) => l,
            Err(e) => {
                warn!(
                    "bridge: LIST on {} failed: {e}; looking for the master again",
                    m.addr
                );
                conn = None;
                backoff.wait(stop);
                continue;
            }
        };
        backoff.reset();
        for t in &listed {
            let wanted = if opts.topics.is_empty() {
                true
            } else {
                opts.topics.contains(&t.name)
            };
            if !wanted || readers.contains_key(&t.name) || refused_topics.contains_key(&t.name) {
                continue;
            }
            let subject = sink::subject_of(&opts.prefix, &t.name);
            match pubs.check_subject(&subject) {
                Some(Ok(())) => {}
                Some(Err(why)) => {
                    warn!(
                        "bridge: topic {} is not bridged: the sink refuses subject {subject}: {why}",
                        t.name
                    );
                    metrics.topic_refused();
                    refused_topics.insert(t.name.clone(), why);
                    continue;
                }
                None => break, // the publisher is gone: stopping
            }
            match reader::spawn(opts, &t.name, &subject, &pubs, metrics, stop) {
                Ok(handle) => {
                    readers.insert(t.name.clone(), Running { handle });
                }
                Err(e) => {
                    // No thread to be had: stop the others cleanly too.
                    outcome = Err(e);
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        for want in &opts.topics {
            if !listed.iter().any(|t| &t.name == want) && missing_logged.insert(want.clone()) {
                warn!("bridge: topic {want} does not exist (yet); it is bridged once created");
            }
        }
        // Lag of the bridge's group, per topic.
        let group = opts.group_name();
        for name in readers.keys() {
            match m.client.groups(name) {
                Ok(gs) => {
                    let tm = metrics.topic(name);
                    let g = gs.iter().find(|g| g.name == group);
                    tm.set_lag(g.map_or(0, |g| g.lag));
                    if let Some(r) = g.and_then(|g| tm.passed(g.committed_id)) {
                        info!("bridge: topic {name}: message {r} went to the dead-letter topic");
                    }
                }
                Err(e) if e.code().is_some() => {} // NOTOPIC: its reader sees it
                Err(e) => {
                    warn!("bridge: GROUPS {name} on {} failed: {e}", m.addr);
                    conn = None;
                    break;
                }
            }
        }
        if last_report.elapsed() >= opts.report_interval {
            metrics.log_report();
            last_report = Instant::now();
        }
        sleep_unless_stopped(opts.poll_interval, stop);
    }
    for (name, r) in std::mem::take(&mut readers) {
        if r.handle.join().is_err() {
            warn!("bridge: the reader of {name} panicked");
        }
    }
    pubs.finish();
    metrics.log_report();
    info!("bridge {} stopped", opts.name);
    outcome
}
