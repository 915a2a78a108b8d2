//! `limits.maxUnauthenticated`: its check. The rest of the `limits:`
//! section lives in `config.rs`; this key has a room of its own because
//! its meaning depends on another key (`limits.maxConnections`) and on the
//! descriptor budget known only at start ([`crate::preauth::effective_cap`]).
//!
//! Read once at start on the main thread, like the rest of the config.

use super::LimitsConfig;
use super::error::{ConfigError, invalid};

impl LimitsConfig {
    /// 0 (the default: a quarter of the connection cap in force) or
    /// 1 ..= `limits.maxConnections`: more could never be used.
    pub(super) fn validate_unauthenticated(&self) -> Result<(), ConfigError> {
        let (n, max) = (self.max_unauthenticated, self.max_connections);
        if n > max {
            return Err(invalid(
                "limits.maxUnauthenticated",
                format!(
                    "must be between 0 (a quarter of the connection cap) and \
                     limits.maxConnections ({max}), got {n}"
                ),
            ));
        }
        Ok(())
    }
}
