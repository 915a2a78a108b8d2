//! The `replication:` section: semi-sync, the write quorum, the peer and
//! the silence after which a slave is dropped.
//!
//! Owns [`ReplicationConfig`] (validated, and the section's YAML shape, read
//! like every section: see `config/de.rs`) and its checks. Read once at start
//! like the rest of the config.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::check_ms;
use super::error::{ConfigError, invalid};

/// `replication:` — master-slave replication.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicationConfig {
    /// Semi-sync: answer a write only once a slave has it durably.
    pub sync: bool,
    /// How long to wait for a slave before falling back to async (or, with
    /// `min_slaves`, before refusing the write).
    pub sync_timeout_ms: u64,
    /// With N ≥ 1: a write that fewer than N slaves have durably within
    /// `sync_timeout_ms` is refused (`ERR NOSLAVE`) and undone.
    pub min_slaves: u32,
    /// The other server of the pair (`HOST:PORT`); a slave's master counts
    /// as its peer when this is not set (empty is not set). Roles are compared
    /// by epoch with it.
    #[serde(deserialize_with = "peer")]
    pub peer: Option<String>,
    /// A slave that sends nothing (no ACK, no heartbeat answer) for this long
    /// is dropped; a slave drops a master as silent after the same time.
    pub slave_timeout_ms: u64,
    /// `replication.tls`: a slave connects to its master (and a master
    /// looks at its peer) over TLS; the master's address is its TLS port.
    pub tls: bool,
    /// `replication.tlsCa`: the CA certificate(s) (PEM) the master's
    /// certificate must chain to.
    #[serde(deserialize_with = "super::tls::path")]
    pub tls_ca: Option<PathBuf>,
    /// `replication.tlsCert` / `tlsKey`: the slave's own certificate and key
    /// (PEM), for a master with `tls.clientCa`.
    #[serde(deserialize_with = "super::tls::path")]
    pub tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "super::tls::path")]
    pub tls_key: Option<PathBuf>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            sync: false,
            sync_timeout_ms: 1000,
            min_slaves: 0,
            peer: None,
            slave_timeout_ms: 10_000,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `replication.peer`: an empty string is no peer.
fn peer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|p| !p.is_empty()))
}

/// Most slaves a write can be made to wait for.
const MAX_MIN_SLAVES: u32 = 16;

impl ReplicationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_ms("replication.syncTimeoutMs", self.sync_timeout_ms, 1)?;
        // Under a second would drop a healthy slave between two heartbeats.
        check_ms("replication.slaveTimeoutMs", self.slave_timeout_ms, 1000)?;
        if self.min_slaves > MAX_MIN_SLAVES {
            return Err(invalid(
                "replication.minSlaves",
                format!(
                    "must be between 0 and {MAX_MIN_SLAVES}, got {}",
                    self.min_slaves
                ),
            ));
        }
        if let Some(peer) = &self.peer {
            check_peer(peer)?;
        }
        if self.tls && self.tls_ca.is_none() {
            return Err(invalid(
                "replication.tlsCa",
                "replication.tls is on: name the CA file that signed the master's certificate",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "replication.tlsCert",
                "replication.tlsCert and replication.tlsKey go together",
            ));
        }
        Ok(())
    }
}

/// `HOST:PORT`, the form `--master` takes.
fn check_peer(peer: &str) -> Result<(), ConfigError> {
    let ok = peer.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "replication.peer",
            format!("must be HOST:PORT (like --master), got {peer:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let d = ReplicationConfig::default();
        assert_eq!(
            (d.min_slaves, d.peer.clone(), d.slave_timeout_ms),
            (0, None, 10_000)
        );
        assert!(d.validate().is_ok());
        let bad = |c: ReplicationConfig, key: &str| match c.validate() {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        };
        bad(
            ReplicationConfig {
                min_slaves: 17,
                ..d.clone()
            },
            "replication.minSlaves",
        );
        bad(
            ReplicationConfig {
                slave_timeout_ms: 999,
                ..d.clone()
            },
            "replication.slaveTimeoutMs",
        );
        for p in ["nohost", ":12301", "h:notaport", "h:70000", "a b:1"] {
            bad(
                ReplicationConfig {
                    peer: Some(p.into()),
                    ..d.clone()
                },
                "replication.peer",
            );
        }
        let ok = ReplicationConfig {
            peer: Some("127.0.0.1:12302".into()),
            min_slaves: 1,
            ..d
        };
        assert!(ok.validate().is_ok());
    }
}
