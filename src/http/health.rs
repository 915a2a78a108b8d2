//! `/healthz`: is this server serving and writable — a master whose writer
//! is not poisoned and that has the slaves `replication.minSlaves` asks
//! for, or a slave streaming from its master — and, when the query asks,
//! within lag thresholds (`?maxSlaveLagSeconds=`, `?maxGroupLag=`).
//!
//! Pure over a [`View`]: the first reason found is the one-line answer of
//! a `503`. Runs on the `http` thread.

use super::view::View;
use crate::stats::ReplGauges;

/// Thresholds from the query string; `None` = not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// A master: every slave's lag; a slave: its own.
    pub max_slave_lag_seconds: Option<f64>,
    /// Every consumer group of every topic.
    pub max_group_lag: Option<u64>,
}

impl Thresholds {
    /// From query parameters; the error is the `400` reason.
    pub fn parse(
        max_slave_lag: Option<&str>,
        max_group_lag: Option<&str>,
    ) -> Result<Thresholds, String> {
        let max_slave_lag_seconds = match max_slave_lag {
            None => None,
            Some(s) => match s.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
                _ => {
                    return Err(format!(
                        "maxSlaveLagSeconds must be a number of seconds ≥ 0, got {s:?}"
                    ));
                }
            },
        };
        let max_group_lag = match max_group_lag {
            None => None,
            Some(s) => Some(s.parse::<u64>().map_err(|_| {
                format!("maxGroupLag must be a whole number of messages, got {s:?}")
            })?),
        };
        Ok(Thresholds {
            max_slave_lag_seconds,
            max_group_lag,
        })
    }
}

/// `Ok(())` for a healthy server, else the reason it is not.
pub fn check(v: &View, min_slaves: u32, th: Thresholds) -> Result<(), String> {
    if v.shutting_down {
        return Err("shutting down".into());
    }
    if v.poisoned {
        return Err(
            "the writer is poisoned (a write or fsync failed): writes are refused; see the log"
                .into(),
        );
    }
    match &v.gauges.repl {
        ReplGauges::Master { .. } => {
            let streaming = v.slaves.iter().filter(|s| s.state == "streaming").count();
            if (streaming as u64) < u64::from(min_slaves) {
                return Err(format!(
                    "{streaming} slave(s) streaming, replication.minSlaves is {min_slaves}: writes are refused (NOSLAVE)"
                ));
            }
            if let Some(max) = th.max_slave_lag_seconds {
                for s in &v.slaves {
                    let lag = s.lag.ms as f64 / 1000.0;
                    if lag > max {
                        return Err(format!(
                            "slave {} lags {lag:.1} s ({} events), more than {max} s",
                            s.addr, s.lag.events
                        ));
                    }
                }
            }
        }
        ReplGauges::Slave {
            master, state, lag, ..
        } => {
            if *state != "streaming" {
                return Err(format!("slave of {master}: {state}, not streaming"));
            }
            if let Some(max) = th.max_slave_lag_seconds {
                let secs = lag.ms as f64 / 1000.0;
                if secs > max {
                    return Err(format!(
                        "this slave lags {master} by {secs:.1} s ({} events), more than {max} s",
                        lag.events
                    ));
                }
            }
        }
    }
    if let Some(max) = th.max_group_lag {
        for t in &v.topics {
            for g in &t.groups {
                if let Some(lag) = g.lag
                    && lag > max
                {
                    return Err(format!(
                        "group {} of topic {} lags {lag} messages, more than {max}",
                        g.name, t.name
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse() {
        assert_eq!(Thresholds::parse(None, None), Ok(Thresholds::default()));
        let t = Thresholds::parse(Some("1.5"), Some("10")).expect("ok");
        assert_eq!(t.max_slave_lag_seconds, Some(1.5));
        assert_eq!(t.max_group_lag, Some(10));
        for (a, b) in [
            (Some("x"), None),
            (Some("-1"), None),
            (Some("inf"), None),
            (None, Some("1.5")),
        ] {
            assert!(Thresholds::parse(a, b).is_err(), "{a:?} {b:?}");
        }
    }

    fn master_view() -> View {
        View {
            gauges: crate::stats::Gauges {
                last_event_id: 5,
                topics: 1,
                uptime_ms: 1,
                segments: 1,
                index_files_open: 1,
                epoch: 0,
                history: 0,
                groups: 0,
                repl: ReplGauges::Master {
                    slaves: 0,
                    sync_in_force: false,
                    acked_event_id: 0,
                    sync_fallbacks: 0,
                    full_syncs: 0,
                },
            },
            topics: Vec::new(),
            slaves: Vec::new(),
            disk: None,
            poisoned: false,
            shutting_down: false,
            fsync: Default::default(),
            publish: Default::default(),
        }
    }

    #[test]
    fn a_poisoned_writer_or_a_missing_quorum_is_unhealthy() {
        let t = Thresholds::default();
        assert_eq!(check(&master_view(), 0, t), Ok(()));
        let poisoned = View {
            poisoned: true,
            ..master_view()
        };
        let why = check(&poisoned, 0, t).expect_err("poisoned");
        assert!(why.contains("poisoned"), "{why}");
        let why = check(&master_view(), 1, t).expect_err("no slave for minSlaves 1");
        assert!(why.contains("NOSLAVE"), "{why}");
        let closing = View {
            shutting_down: true,
            ..master_view()
        };
        assert_eq!(check(&closing, 0, t), Err("shutting down".into()));
    }
}
