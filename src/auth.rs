//! Authentication of client connections: the token check, what a wrong token
//! costs, and the log of wrong tokens shared by every connection.
//!
//! Runs on the connection threads. A wrong `AUTH` is answered only after
//! [`FAIL_DELAY`], and the connection is closed at its [`MAX_FAILURES`]th, so
//! guessing the token costs time and connections. Wrong tokens are logged at
//! most once per [`LOG_INTERVAL`], with how many there were since the line
//! before, so guessing cannot fill the disk with log lines either:
//! [`FailureLog`] is two atomics, kept in the broker, taken by no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a wrong `AUTH` waits for its `ERR NOAUTH`.
pub const FAIL_DELAY: Duration = Duration::from_millis(150);
/// Wrong `AUTH`s after which a connection is closed.
pub const MAX_FAILURES: u32 = 3;
/// At most one log line about wrong tokens per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

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
}
