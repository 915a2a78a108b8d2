//! Following the smss master: among the configured addresses (a master
//! and its slaves), connect to the one whose STATS says `role master`,
//! the highest `epoch` if two do (an old master that has not stepped down
//! yet), and read its `history` (the data lineage that message ids name).
//!
//! Called by the supervisor and by every reader thread, each for its own
//! connection; it holds no state between calls. On a connection error or a
//! `READONLY` the caller drops its connection and calls [`find_master`]
//! again, which retries with a bounded backoff until it finds one or the
//! stop flag is set.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use log::{info, warn};

use super::{Backoff, BridgeError, BridgeOptions, Result};
use crate::client::Client;

/// A connection to the master, and what its STATS said.
pub struct Master {
    pub client: Client,
    pub addr: String,
    pub epoch: u64,
    /// The history id (`STAT history`); 0 when the server does not say.
    pub history: u64,
}

/// What one server said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub master: bool,
    pub epoch: u64,
    pub history: u64,
}

/// Reads role, epoch and history out of STATS pairs.
pub fn probe_of(stats: &[(String, String)]) -> Probe {
    let get = |name: &str| {
        stats
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    Probe {
        master: get("role") == Some("master"),
        epoch: get("epoch").and_then(|v| v.parse().ok()).unwrap_or(0),
        history: get("history")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0),
    }
}

/// One attempt over every address: the master's connection, or why none.
pub fn try_find(opts: &BridgeOptions) -> Result<Master> {
    let mut best: Option<Master> = None;
    let mut seen = Vec::new();
    for addr in &opts.smss {
        let got = opts.connect(addr).and_then(|mut c| {
            let stats = c.stats().map_err(|source| BridgeError::Smss {
                addr: addr.clone(),
                source,
            })?;
            Ok((c, probe_of(&stats)))
        });
        match got {
            Ok((client, p)) if p.master => {
                seen.push(format!("{addr}: master, epoch {}", p.epoch));
                if best.as_ref().is_none_or(|b| p.epoch > b.epoch) {
                    best = Some(Master {
                        client,
                        addr: addr.clone(),
                        epoch: p.epoch,
                        history: p.history,
                    });
                }
            }
            Ok(_) => seen.push(format!("{addr}: slave")),
            Err(e) => seen.push(e.to_string()),
        }
    }
    best.ok_or_else(|| BridgeError::NoMaster(seen.join("; ")))
}

/// Looks for the master until it is found (`Some`) or `stop` is set.
pub fn find_master(opts: &BridgeOptions, stop: &AtomicBool) -> Option<Master> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0u32;
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        match try_find(opts) {
            Ok(m) => {
                if failures > 0 {
                    info!(
                        "bridge: following the smss master at {} (epoch {})",
                        m.addr, m.epoch
                    );
                }
                return Some(m);
            }
            Err(e) => {
                // The first failure, then every tenth: a long outage does
                // not flood the log.
                if failures.is_multiple_of(10) {
                    warn!("bridge: {e}; retrying");
                }
                failures += 1;
            }
        }
        if !backoff.wait(stop) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn probes_read_role_epoch_and_history() {
        let p = probe_of(&pairs(&[
            ("role", "master"),
            ("epoch", "3"),
            ("history", "00000000000000ff"),
        ]));
        assert_eq!(
            p,
            Probe {
                master: true,
                epoch: 3,
                history: 255
            }
        );
        let p = probe_of(&pairs(&[("role", "slave")]));
        assert_eq!(
            p,
            Probe {
                master: false,
                epoch: 0,
                history: 0
            }
        );
    }
}
