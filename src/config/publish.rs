//! The `publish:` section: idempotent publishing — how long a dedup key
//! (`msgid=` header) is remembered per topic, and how many keys at most.
//!
//! Owns [`PublishConfig`] (validated, and the section's YAML shape, read
//! like every section: see `config/de.rs`). Read once at start on the main
//! thread; the writer's dedup table
//! (`storage/engine/state/dedup.rs`) takes both values when it is made.

use serde::{Deserialize, Serialize};

use super::de;
use super::error::{ConfigError, invalid};

/// Longest window: a day (the table is memory; NATS's default is 2 min).
const MAX_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// Most keys: 10 million (each costs its key, topic and ~100 bytes).
const MAX_KEYS: usize = 10_000_000;

/// `publish:` — idempotent publishing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishConfig {
    /// `publish.dedupWindowMs`: a publish whose key was seen on its topic
    /// this recently is answered with the first one's id and writes
    /// nothing; 0 turns dedup off.
    pub dedup_window_ms: u64,
    /// `publish.dedupMaxKeys`: keys held at most over all topics; the
    /// oldest go first when more come.
    #[serde(deserialize_with = "de::usize")]
    pub dedup_max_keys: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            dedup_window_ms: 120_000,
            dedup_max_keys: 100_000,
        }
    }
}

impl PublishConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.dedup_window_ms > MAX_WINDOW_MS {
            return Err(invalid(
                "publish.dedupWindowMs",
                format!(
                    "must be between 0 (off) and {MAX_WINDOW_MS}, got {}",
                    self.dedup_window_ms
                ),
            ));
        }
        if !(1..=MAX_KEYS).contains(&self.dedup_max_keys) {
            return Err(invalid(
                "publish.dedupMaxKeys",
                format!(
                    "must be between 1 and {MAX_KEYS}, got {}",
                    self.dedup_max_keys
                ),
            ));
        }
        Ok(())
    }
}
