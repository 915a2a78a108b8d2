//! `smss-cli health`: one line and an exit status for cron, monit and
//! systemd timers — 0 ok, 1 warning, 2 critical (the monitoring-plugin
//! convention) — judged from STATS.
//!
//! Critical: no answer, a poisoned writer (it refuses writes until a
//! restart), a slave that is not streaming for longer than a reconnect.
//! Warning: a slave's lag past `--max-lag-ms`, a master with fewer
//! slaves than `--min-slaves`, semi-sync fallen back to async.

use std::collections::HashMap;

/// How far things may go before `health` complains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// A slave's `replication_lag_ms` above this is a warning (10 s).
    pub max_lag_ms: u64,
    /// A master with fewer connected slaves is a warning (0: none needed).
    pub min_slaves: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_lag_ms: 10_000,
            min_slaves: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    pub fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }
}

/// The verdict on one STATS answer: the worst level and why.
pub fn judge(stats: &[(String, String)], t: &Thresholds) -> (Level, Vec<String>) {
    let m: HashMap<&str, &str> = stats
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let num = |k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut found = Vec::new();
    if num("writer_poisoned") == 1 {
        found.push((
            Level::Critical,
            "the writer is poisoned (a failed fsync): writes are refused until a restart"
                .to_string(),
        ));
    }
    match m.get("role").copied() {
        Some("slave") => {
            let state = m.get("repl_state").copied().unwrap_or("unknown");
            if state != "streaming" {
                found.push((
                    Level::Critical,
                    format!("replication is {state}, not streaming"),
                ));
            }
            let lag = num("replication_lag_ms");
            if lag > t.max_lag_ms {
                found.push((
                    Level::Warning,
                    format!("replication lag {lag} ms is over {} ms", t.max_lag_ms),
                ));
            }
        }
        Some("master") => {
            let slaves = num("slaves");
            if slaves < t.min_slaves {
                found.push((
                    Level::Warning,
                    format!("{slaves} slave(s) connected, fewer than {}", t.min_slaves),
                ));
            }
            if m.contains_key("repl_sync")
                && num("repl_sync") == 0
                && num("repl_sync_fallbacks") > 0
            {
                found.push((
                    Level::Warning,
                    "semi-sync has fallen back to async".to_string(),
                ));
            }
        }
        _ => found.push((Level::Critical, "STATS has no role".to_string())),
    }
    let level = found.iter().map(|f| f.0).max().unwrap_or(Level::Ok);
    let mut why: Vec<String> = found.into_iter().map(|f| f.1).collect();
    if why.is_empty() {
        let role = m.get("role").copied().unwrap_or("?");
        why.push(format!(
            "{role}, epoch {}, last event id {}",
            num("epoch"),
            num("last_event_id")
        ));
    }
    (level, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn levels_from_stats() {
        let t = Thresholds::default();
        let (l, why) = judge(&stats(&[("role", "master"), ("writer_poisoned", "0")]), &t);
        assert_eq!(l, Level::Ok, "{why:?}");
        let (l, _) = judge(&stats(&[("role", "master"), ("writer_poisoned", "1")]), &t);
        assert_eq!(l, Level::Critical);
        let slave = |state: &str, lag: &str| {
            stats(&[
                ("role", "slave"),
                ("repl_state", state),
                ("replication_lag_ms", lag),
            ])
        };
        assert_eq!(judge(&slave("streaming", "5"), &t).0, Level::Ok);
        assert_eq!(judge(&slave("streaming", "10001"), &t).0, Level::Warning);
        assert_eq!(judge(&slave("connecting", "0"), &t).0, Level::Critical);
        let need = Thresholds { min_slaves: 1, ..t };
        let (l, why) = judge(&stats(&[("role", "master"), ("slaves", "0")]), &need);
        assert_eq!(l, Level::Warning);
        assert!(why[0].contains("fewer than 1"));
        let fell = stats(&[
            ("role", "master"),
            ("repl_sync", "0"),
            ("repl_sync_fallbacks", "2"),
        ]);
        assert_eq!(judge(&fell, &t).0, Level::Warning);
    }
}
