//! Authentication of client connections: the token check, what a wrong token
//! costs, the pacing of AUTHs per source address, and the log of wrong
//! tokens shared by every connection.
//!
//! Runs on the connection threads. A wrong `AUTH` is answered only after
//! [`FAIL_DELAY`], and the connection is closed at its [`MAX_FAILURES`]th, so
//! guessing the token costs time and connections. Wrong tokens are logged at
//! most once per [`LOG_INTERVAL`], with how many there were since the line
//! before, so guessing cannot fill the disk with log lines either:
//! [`FailureLog`] is two atomics, kept in the broker, taken by no lock.
//!
//! Across connections, [`SourcePacer`] bounds how fast one source address
//! (an IPv4 address, an IPv6 /64: `preauth::source_of`) may have tokens
//! checked, whatever number of connections it opens: [`SOURCE_BURST`] wrong
//! tokens at once, then one check per [`SOURCE_INTERVAL`] (a generic cell
//! rate: each wrong token pushes the source's "theoretical arrival time" one
//! interval on). An AUTH from a source over its budget waits for its turn
//! *before* its token is compared — the right token too, since answering it
//! at once would tell a guesser which tokens are wrong without waiting —
//! and one whose turn is more than [`MAX_PACE_WAIT`] away is refused
//! unchecked. A right token never uses the budget up. The map is bounded
//! ([`MAX_SOURCES`]): entries whose time has passed are dropped, and when it
//! is full of live ones, new sources share one budget, so a flood of
//! addresses costs a bounded map and is paced as one. One mutex, held for a
//! map lookup and update; never while sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a wrong `AUTH` waits for its `ERR NOAUTH`.
pub const FAIL_DELAY: Duration = Duration::from_millis(150);
/// Wrong `AUTH`s after which a connection is closed.
pub const MAX_FAILURES: u32 = 3;
/// At most one log line about wrong tokens per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Wrong tokens one source may have checked at once before its AUTHs wait.
pub const SOURCE_BURST: u64 = 10;
/// Past the burst: one token of a source checked per this interval.
pub const SOURCE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest an AUTH waits for its source's turn; later turns are refused
/// unchecked (so few threads of one source ever wait).
pub const MAX_PACE_WAIT: Duration = Duration::from_secs(2);
/// Most source addresses remembered; beyond, new ones share one budget.
pub const MAX_SOURCES: usize = 4096;

/// True when `got` is the configured token `want`, or no token is configured.
pub fn token_matches(want: &str, got: &str) -> bool {
    want.is_empty() || constant_time_eq(want.as_bytes(), got.as_bytes())
}

/// Compares secrets without an early exit that leaks the matching prefix length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Wrong tokens across all connections, and when they may next be logged.
#[derive(Debug)]
pub struct FailureLog {
    base: Instant,
    /// Milliseconds after `base` before which no line is written.
    next_ms: AtomicU64,
    /// Wrong tokens not yet in a log line.
    unlogged: AtomicU64,
}

impl Default for FailureLog {
    fn default() -> Self {
        FailureLog {
            base: Instant::now(),
            next_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }
}

impl FailureLog {
    /// Counts one wrong token. `Some(n)` when the caller should log a line
    /// now, `n` being the wrong tokens since the last line, this one included.
    pub fn record(&self) -> Option<u64> {
        self.record_at(self.base.elapsed())
    }

    /// [`FailureLog::record`] at `now` after the log was made.
    fn record_at(&self, now: Duration) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::AcqRel);
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Acquire);
        if now_ms < next {
            return None;
        }
        let after = now_ms.saturating_add(LOG_INTERVAL.as_millis() as u64);
        // One of the connections racing past the interval writes the line.
        self.next_ms
            .compare_exchange(next, after, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(self.unlogged.swap(0, Ordering::AcqRel))
    }
}

/// What [`SourcePacer::attempt`] decided about one AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The token is right.
    Accepted,
    /// The token is wrong (and counted against its source).
    Wrong,
    /// The source is over its budget: not checked; try again after this.
    Wait(Duration),
}

/// Per-source pacing of AUTH checks (see the module docs).
#[derive(Debug)]
pub struct SourcePacer {
    base: Instant,
    sources: Mutex<Sources>,
}

/// Each source's theoretical arrival time, in ms after `base`.
#[derive(Debug, Default)]
struct Sources {
    tat_ms: HashMap<IpAddr, u64>,
    /// The budget sources share while the map is full of live entries.
    shared_tat_ms: u64,
}

impl Default for SourcePacer {
    fn default() -> Self {
        SourcePacer {
            base: Instant::now(),
            sources: Mutex::new(Sources::default()),
        }
    }
}

impl SourcePacer {
    /// Decides one AUTH from `source`; `matches` is the constant-time
    /// comparison's result, revealed only when the verdict is not `Wait`.
    pub fn attempt(&self, source: IpAddr, matches: bool) -> Verdict {
        let now_ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.attempt_at(source, matches, now_ms)
    }

    /// [`SourcePacer::attempt`] at `now_ms` after the pacer was made.
    fn attempt_at(&self, source: IpAddr, matches: bool, now_ms: u64) -> Verdict {
        let interval = SOURCE_INTERVAL.as_millis() as u64;
        let tolerance = interval * (SOURCE_BURST - 1);
        let mut s = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let tat = s.tat_ms.get(&source).copied().unwrap_or(s.shared_tat_ms);
        let allowed_at = tat.saturating_sub(tolerance);
        if now_ms < allowed_at {
            return Verdict::Wait(Duration::from_millis(allowed_at - now_ms));
        }
        if matches {
            return Verdict::Accepted;
        }
        let next = tat.max(now_ms).saturating_add(interval);
        if s.tat_ms.len() >= MAX_SOURCES && !s.tat_ms.contains_key(&source) {
            // Full: forget sources whose time has passed (they are fresh).
            s.tat_ms.retain(|_, t| *t > now_ms);
        }
        if s.tat_ms.len() < MAX_SOURCES || s.tat_ms.contains_key(&source) {
            s.tat_ms.insert(source, next);
        } else {
            s.shared_tat_ms = next;
        }
        Verdict::Wrong
    }

    /// Sources remembered now (bounded by [`MAX_SOURCES`]).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tat_ms
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_or_when_none_is_set() {
        assert!(token_matches("", "anything"));
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("s3cret", "s3cret!"));
        assert!(!token_matches("s3cret", "S3cret"));
        assert!(!token_matches("s3cret", ""));
    }

    #[test]
    fn one_line_per_interval_with_the_count_since_the_last() {
        let log = FailureLog::default();
        let ms = Duration::from_millis;
        assert_eq!(log.record_at(ms(0)), Some(1), "the first is logged at once");
        for t in 1..1000 {
            assert_eq!(log.record_at(ms(t)), None, "at {t} ms");
        }
        let interval = LOG_INTERVAL.as_millis() as u64;
        assert_eq!(log.record_at(ms(interval - 1)), None);
        assert_eq!(log.record_at(ms(interval)), Some(1001));
        assert_eq!(log.record_at(ms(interval + 1)), None);
        // A quiet spell: the next one is logged at once again, counted alone
        // with what was suppressed before it.
        assert_eq!(log.record_at(ms(10 * interval)), Some(2));
    }

    #[test]
    fn racing_connections_write_one_line() {
        let log = std::sync::Arc::new(FailureLog::default());
        let lines: u64 = (0..8)
            .map(|_| {
                let log = std::sync::Arc::clone(&log);
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| log.record_at(Duration::from_millis(5)).is_some())
                        .count() as u64
                })
            })
            .map(|t| t.join().expect("thread"))
            .sum();
        assert_eq!(lines, 1, "8000 wrong tokens within one interval, one line");
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_source_gets_a_burst_then_one_check_per_interval() {
        let p = SourcePacer::default();
        let a = ip(1);
        let step = SOURCE_INTERVAL.as_millis() as u64;
        for i in 0..SOURCE_BURST {
            assert_eq!(p.attempt_at(a, false, 100), Verdict::Wrong, "burst {i}");
        }
        // Over budget: the right token waits too, unchecked.
        let Verdict::Wait(w) = p.attempt_at(a, true, 100) else {
            panic!("a source past its burst waits");
        };
        assert_eq!(w, SOURCE_INTERVAL);
        assert_eq!(
            p.attempt_at(a, false, 100 + step - 1),
            Verdict::Wait(Duration::from_millis(1))
        );
        assert_eq!(p.attempt_at(a, false, 100 + step), Verdict::Wrong);
        assert!(matches!(
            p.attempt_at(a, false, 100 + step),
            Verdict::Wait(_)
        ));
        // The right token, in turn, is accepted and uses nothing up.
        assert_eq!(p.attempt_at(a, true, 100 + 2 * step), Verdict::Accepted);
        assert_eq!(p.attempt_at(a, true, 100 + 2 * step), Verdict::Accepted);
        // Another source is not affected.
        assert_eq!(p.attempt_at(ip(2), true, 100), Verdict::Accepted);
        assert_eq!(p.attempt_at(ip(2), false, 100), Verdict::Wrong);
        // A quiet source is fresh again.
        let later = 100 + (SOURCE_BURST + 3) * step;
        for _ in 0..SOURCE_BURST {
            assert_eq!(p.attempt_at(a, false, later), Verdict::Wrong);
        }
    }

    #[test]
    fn the_rate_of_checks_per_source_is_bounded_whatever_the_attempts() {
        let p = SourcePacer::default();
        let step = SOURCE_INTERVAL.as_millis() as u64;
        // 1000 attempts every 10 ms for 60 s, as from many connections.
        let mut checked = 0;
        for t in (0..60_000).step_by(10) {
            for _ in 0..1000 / 100 {
                if p.attempt_at(ip(7), false, t) == Verdict::Wrong {
                    checked += 1;
                }
            }
        }
        // The burst at once, then one per interval after the first.
        assert_eq!(checked, SOURCE_BURST + 60_000 / step - 1);
    }

    #[test]
    fn a_flood_of_addresses_is_bounded_and_shares_one_budget() {
        let p = SourcePacer::default();
        let n = MAX_SOURCES as u32 + 500;
        let mut wrong = 0;
        for i in 0..n {
            if p.attempt_at(ip(1000 + i), false, 0) == Verdict::Wrong {
                wrong += 1;
            }
        }
        assert_eq!(p.len(), MAX_SOURCES, "the map stays bounded");
        // The sources beyond the map share one burst.
        assert_eq!(wrong, MAX_SOURCES as u64 + SOURCE_BURST);
        let fresh = ip(900_000);
        assert!(matches!(p.attempt_at(fresh, true, 0), Verdict::Wait(_)));
        // Once their time passed, the entries are dropped for new sources.
        let later = (SOURCE_BURST + 1) * SOURCE_INTERVAL.as_millis() as u64 + 600_000;
        assert_eq!(p.attempt_at(fresh, false, later), Verdict::Wrong);
        assert_eq!(p.len(), 1);
    }
}
