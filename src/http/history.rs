//! The last minutes of the server, for the status page's chart and rates:
//! a ring of samples (one every [`SAMPLE_EVERY`], [`SAMPLES`] of them, so
//! ten minutes) of the published-message counter and the fsync and publish
//! latency histograms, and each topic's message rate over the last sample.
//!
//! Owned and filled by the `http` thread itself, which wakes for each
//! sample even when nobody asks for a page; bounded memory (the ring, and
//! one entry per topic).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::histogram::Snapshot;
use crate::stats::Stats;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
pub const SAMPLES: usize = 120;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    published: u64,
    fsync: Snapshot,
}

/// One interval between two samples, as the chart draws it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds before now (the interval's end).
    pub ago_s: f64,
    /// Messages published per second.
    pub rate: f64,
    /// Mean fsync time in the interval, seconds; 0 without fsyncs.
    pub fsync_mean_s: f64,
    /// The bucket bound of the interval's 99th-percentile fsync.
    pub fsync_p99_s: f64,
}

#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    /// Per topic: messages ever added at the last sample, and the rate
    /// over the interval before it.
    topics: HashMap<String, (u64, f64)>,
}

impl History {
    /// Takes a sample now.
    pub fn tick(&mut self, b: &Broker, now: Instant) {
        let dt = self
            .samples
            .back()
            .map(|s| now.duration_since(s.at).as_secs_f64())
            .filter(|d| *d > 0.0);
        if self.samples.len() > SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at: now,
            published: Stats::get(&b.stats.messages_published),
            fsync: b.stats.fsync_seconds.snapshot(),
        });
        let mut next = HashMap::with_capacity(self.topics.len());
        for t in b.topics() {
            let appended = t.state().entries;
            let rate = match (self.topics.get(&t.name), dt) {
                (Some((before, _)), Some(dt)) => appended.saturating_sub(*before) as f64 / dt,
                _ => 0.0,
            };
            next.insert(t.name.clone(), (appended, rate));
        }
        self.topics = next;
    }

    /// Messages per second of `topic` over the last interval.
    pub fn topic_rate(&self, topic: &str) -> Option<f64> {
        self.topics.get(topic).map(|(_, r)| *r)
    }

    /// The intervals between consecutive samples, oldest first.
    pub fn points(&self, now: Instant) -> Vec<Point> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| {
                let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
                let f = b.fsync.since(&a.fsync);
                Point {
                    ago_s: now.saturating_duration_since(b.at).as_secs_f64(),
                    rate: b.published.saturating_sub(a.published) as f64 / dt,
                    fsync_mean_s: f.mean_seconds(),
                    fsync_p99_s: f.quantile_bound(0.99),
                }
            })
            .collect()
    }
}
