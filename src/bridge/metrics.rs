//! The bridge's counters, per topic and in total; the periodic info log
//! line; and the optional `bridge-metrics` thread serving `GET /metrics` in
//! the Prometheus text format the server's `/metrics` uses (`smss_bridge_`
//! names, counters ending in `_total`, the topic as a label).
//!
//! Counters are atomics any bridge thread bumps (readers, the publisher);
//! the supervisor sets the lag from GROUPS. The HTTP thread only reads.
//! Request heads are parsed by the server's own pure parser
//! (`crate::http::request`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{debug, info};

use super::{BridgeError, Result};
use crate::http::request::{MAX_HEAD_BYTES, head_end, parse};

/// The `Content-Type` of the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One topic's counters.
#[derive(Debug, Default)]
pub struct TopicMetrics {
    bridged: AtomicU64,
    retries: AtomicU64,
    refused: AtomicU64,
    dead_lettered: AtomicU64,
    skipped: AtomicU64,
    handed_back: AtomicU64,
    /// A refused message smss should dead-letter; 0: none. Whoever sees
    /// the group pass it first (the reader's next batch, or GROUPS) counts
    /// it.
    awaiting_dlq: AtomicU64,
    lag_messages: AtomicU64,
    /// Timestamp of the oldest message of the batch in flight; 0: none.
    in_flight_ms: AtomicU64,
    /// Timestamp of the last message stored.
    bridged_upto_ms: AtomicU64,
    ended: AtomicBool,
}

/// A topic's values at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicSnapshot {
    /// Messages stored in the sink (written by this bridge, or found there
    /// after a Transient error).
    pub bridged: u64,
    /// Writes that failed Transiently while this topic's messages waited.
    pub retries: u64,
    /// Deliveries the sink refused.
    pub refused: u64,
    /// Refused messages smss moved to the dead-letter topic.
    pub dead_lettered: u64,
    /// Redelivered messages not written again: the sink had them.
    pub skipped: u64,
    /// Batches handed back to smss (STOP) while the sink kept failing.
    pub handed_back: u64,
    /// GROUPS lag of the bridge's group.
    pub lag_messages: u64,
    /// How old the oldest message not yet bridged is (0 when caught up).
    pub lag_seconds: f64,
    pub ended: bool,
}

impl TopicMetrics {
    pub(super) fn add_bridged(&self, n: u64) {
        self.bridged.fetch_add(n, Relaxed);
    }
    pub(super) fn add_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
    pub(super) fn add_refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }
    pub(super) fn add_skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Relaxed);
    }
    pub(super) fn add_handed_back(&self) {
        self.handed_back.fetch_add(1, Relaxed);
    }
    pub(super) fn await_dead_letter(&self, event_id: u64) {
        self.awaiting_dlq.store(event_id, Relaxed);
    }
    /// The group is past `upto`: a refused message at or below it went to
    /// the dead-letter topic, counted once (its id returned).
    pub(super) fn passed(&self, upto: u64) -> Option<u64> {
        let r = self.awaiting_dlq.load(Relaxed);
        if r == 0 || upto < r {
            return None;
        }
        self.awaiting_dlq
            .compare_exchange(r, 0, Relaxed, Relaxed)
            .ok()?;
        self.dead_lettered.fetch_add(1, Relaxed);
        Some(r)
    }
    pub(super) fn set_lag(&self, n: u64) {
        self.lag_messages.store(n, Relaxed);
    }
    pub(super) fn set_in_flight(&self, ts_ms: u64) {
        self.in_flight_ms.store(ts_ms.max(1), Relaxed);
    }
    pub(super) fn set_bridged_upto(&self, ts_ms: u64) {
        self.bridged_upto_ms.store(ts_ms, Relaxed);
        self.in_flight_ms.store(0, Relaxed);
    }
    pub(super) fn set_ended(&self) {
        self.ended.store(true, Relaxed);
    }

    /// The values now; `now_ms` for the lag in seconds.
    pub fn snapshot(&self, now_ms: u64) -> TopicSnapshot {
        let lag = self.lag_messages.load(Relaxed);
        let in_flight = self.in_flight_ms.load(Relaxed);
        let upto = self.bridged_upto_ms.load(Relaxed);
        let oldest = if in_flight > 0 {
            in_flight
        } else if lag > 0 {
            upto
        } else {
            0
        };
        let lag_seconds = if oldest == 0 {
            0.0
        } else {
            now_ms.saturating_sub(oldest) as f64 / 1000.0
        };
        TopicSnapshot {
            bridged: self.bridged.load(Relaxed),
            retries: self.retries.load(Relaxed),
            refused: self.refused.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            handed_back: self.handed_back.load(Relaxed),
            lag_messages: lag,
            lag_seconds,
            ended: self.ended.load(Relaxed),
        }
    }
}

/// Every topic's counters and the totals.
#[derive(Debug, Default)]
pub struct Metrics {
    topics: Mutex<BTreeMap<String, Arc<TopicMetrics>>>,
    published: AtomicU64,
    transient_errors: AtomicU64,
    topics_refused: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Metrics {
    /// The counters of `topic`, made on first use.
    pub fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(t.entry(topic.to_string()).or_default())
    }

    pub(super) fn add_published(&self, n: u64) {
        self.published.fetch_add(n, Relaxed);
    }
    pub(super) fn add_transient(&self) {
        self.transient_errors.fetch_add(1, Relaxed);
    }
    pub(super) fn topic_refused(&self) {
        self.topics_refused.fetch_add(1, Relaxed);
    }

    /// Messages stored in the sink, all topics.
    pub fn published(&self) -> u64 {
        self.published.load(Relaxed)
    }
    /// Sink writes that failed Transiently.
    pub fn transient_errors(&self) -> u64 {
        self.transient_errors.load(Relaxed)
    }
    /// Topics not bridged because the sink refuses their subject.
    pub fn topics_refused(&self) -> u64 {
        self.topics_refused.load(Relaxed)
    }

    /// Every topic's values now, by name.
    pub fn snapshot(&self) -> Vec<(String, TopicSnapshot)> {
        let now = now_ms();
        let t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.iter()
            .map(|(k, v)| (k.clone(), v.snapshot(now)))
            .collect()
    }

    /// Logs one info line per topic and one of totals.
    pub fn log_report(&self) {
        for (name, s) in self.snapshot() {
            info!(
                "bridge: topic {name}: bridged {} skipped {} retries {} handed back {} \
                 refused {} dead-lettered {} lag {} messages {:.1} s{}",
                s.bridged,
                s.skipped,
                s.retries,
                s.handed_back,
                s.refused,
                s.dead_lettered,
                s.lag_messages,
                s.lag_seconds,
                if s.ended { " (ended)" } else { "" }
            );
        }
        info!(
            "bridge: published {} messages, {} transient sink errors, {} topics refused",
            self.published(),
            self.transient_errors(),
            self.topics_refused()
        );
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let snap = self.snapshot();
        let mut out = String::new();
        let families: [Family; 8] = [
            (
                "smss_bridge_messages_total",
                "counter",
                "Messages stored in the sink, per topic.",
                |s| s.bridged as f64,
            ),
            (
                "smss_bridge_skipped_total",
                "counter",
                "Redelivered messages the sink already held (not written again).",
                |s| s.skipped as f64,
            ),
            (
                "smss_bridge_retries_total",
                "counter",
                "Transient sink failures while the topic's messages waited.",
                |s| s.retries as f64,
            ),
            (
                "smss_bridge_refused_total",
                "counter",
                "Deliveries the sink refused.",
                |s| s.refused as f64,
            ),
            (
                "smss_bridge_dead_lettered_total",
                "counter",
                "Refused messages smss moved to the dead-letter topic.",
                |s| s.dead_lettered as f64,
            ),
            (
                "smss_bridge_handed_back_total",
                "counter",
                "Batches handed back to smss unwritten while the sink kept failing.",
                |s| s.handed_back as f64,
            ),
            (
                "smss_bridge_lag_messages",
                "gauge",
                "Messages of the topic the bridge's group has not committed (GROUPS lag).",
                |s| s.lag_messages as f64,
            ),
            (
                "smss_bridge_lag_seconds",
                "gauge",
                "Age of the oldest message not yet bridged (0 when caught up).",
                |s| s.lag_seconds,
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (topic, s) in &snap {
                let _ = writeln!(out, "{name}{{topic=\"{}\"}} {}", escape(topic), get(s));
            }
        }
        for (name, help, v) in [
            (
                "smss_bridge_published_total",
                "Messages stored in the sink, all topics.",
                self.published(),
            ),
            (
                "smss_bridge_sink_transient_errors_total",
                "Sink writes that failed transiently (retried).",
                self.transient_errors(),
            ),
            (
                "smss_bridge_topics_refused_total",
                "Topics not bridged: the sink refuses their subject.",
                self.topics_refused(),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

/// A per-topic family: name, type, help, and its value of a snapshot.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TopicSnapshot) -> f64,
);

/// A label value with `\`, `"` and newlines escaped (topic names have
/// none, but the format asks for it).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Binds `bind:port` and serves `/metrics` on a `bridge-metrics` thread
/// until `stop` is set; the bound address.
pub(super) fn serve(
    bind: &str,
    port: u16,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<SocketAddr> {
    let what = format!("the metrics port {bind}:{port}");
    let io = |source| BridgeError::Io {
        what: what.clone(),
        source,
    };
    let listener = TcpListener::bind((bind, port)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    std::thread::Builder::new()
        .name("bridge-metrics".into())
        .spawn(move || {
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        if let Err(e) = answer(s, &metrics) {
                            debug!("bridge: /metrics for {peer}: {e}");
                        }
                    }
                    // Nothing to accept: look at the stop flag again soon.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(io)?;
    info!("bridge: /metrics on http://{addr}/metrics");
    Ok(addr)
}

/// Reads one request head (bounded in size and time) and answers it.
fn answer(mut s: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break Some(end);
        }
        if buf.len() > MAX_HEAD_BYTES {
            break None;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, body) = match end.map(|e| parse(&buf[..e])) {
        None => ("431 Request Header Fields Too Large", String::new()),
        Some(Err(why)) => ("400 Bad Request", format!("{why}\n")),
        Some(Ok(r)) if r.method != "GET" => ("405 Method Not Allowed", "GET only\n".into()),
        Some(Ok(r)) if r.path == "/metrics" => ("200 OK", metrics.render()),
        Some(Ok(_)) => ("404 Not Found", "try /metrics\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_seconds_from_the_oldest_unbridged_message() {
        let t = TopicMetrics::default();
        assert_eq!(t.snapshot(10_000).lag_seconds, 0.0);
        t.set_in_flight(4_000);
        assert_eq!(t.snapshot(10_000).lag_seconds, 6.0);
        t.set_bridged_upto(5_000);
        assert_eq!(t.snapshot(10_000).lag_seconds, 0.0);
        t.set_lag(3);
        assert_eq!(t.snapshot(10_000).lag_seconds, 5.0);
    }

    #[test]
    fn a_dead_letter_is_counted_once() {
        let t = TopicMetrics::default();
        assert_eq!(t.passed(100), None);
        t.await_dead_letter(7);
        assert_eq!(t.passed(6), None);
        assert_eq!(t.passed(7), Some(7));
        assert_eq!(t.passed(9), None);
        assert_eq!(t.snapshot(0).dead_lettered, 1);
    }

    #[test]
    fn renders_families_once_with_topic_labels() {
        let m = Metrics::default();
        m.topic("a").add_bridged(3);
        m.topic("b").add_refused();
        m.add_published(3);
        let text = m.render();
        assert!(
            text.contains("smss_bridge_messages_total{topic=\"a\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("smss_bridge_refused_total{topic=\"b\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("smss_bridge_published_total 3\n"), "{text}");
        assert_eq!(
            text.matches("# TYPE smss_bridge_messages_total counter")
                .count(),
            1
        );
    }
}
