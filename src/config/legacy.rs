//! Keys of a config.yaml written for the original smss that this design does
//! not need.
//!
//! Owns [`LegacyKey`] (those keys, and why each has no effect here),
//! [`IgnoredKey`] (one found in the file, kept in `Config::ignored` so the
//! server logs one line for it at start), where in the file each one sits
//! ([`lookup`], [`names`]: `config/de.rs` sets them aside while it reads a
//! section), and the raw `background:` section, which holds nothing else.
//! Such a key is accepted, not refused; every other unknown key stays an
//! error.

use std::fmt;

use serde::Deserialize;
use serde_yaml::Value;

use super::error::{ConfigError, invalid};

/// A key of the original smss's config with no effect in this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyKey {
    /// `store.waitDelLockTimeoutMs`
    WaitDelLockTimeoutMs,
    /// `worker.waitMsgTimeout`
    WaitMsgTimeout,
    /// `worker.waitMsgTimeoutLogSample`
    WaitMsgTimeoutLogSample,
    /// `background.life.defaultScanSec`
    LifeDefaultScanSec,
    /// `background.delay.firstExec`
    DelayFirstExec,
}

impl LegacyKey {
    pub const ALL: [LegacyKey; 5] = [
        LegacyKey::WaitDelLockTimeoutMs,
        LegacyKey::WaitMsgTimeout,
        LegacyKey::WaitMsgTimeoutLogSample,
        LegacyKey::LifeDefaultScanSec,
        LegacyKey::DelayFirstExec,
    ];

    /// The YAML key, as the original config wrote it.
    pub fn key(self) -> &'static str {
        match self {
            LegacyKey::WaitDelLockTimeoutMs => "store.waitDelLockTimeoutMs",
            LegacyKey::WaitMsgTimeout => "worker.waitMsgTimeout",
            LegacyKey::WaitMsgTimeoutLogSample => "worker.waitMsgTimeoutLogSample",
            LegacyKey::LifeDefaultScanSec => "background.life.defaultScanSec",
            LegacyKey::DelayFirstExec => "background.delay.firstExec",
        }
    }

    /// Why this server has nothing for the key to set.
    pub fn reason(self) -> &'static str {
        match self {
            LegacyKey::WaitDelLockTimeoutMs => {
                "deletes never wait for a lock here: the writer thread owns every file \
                 and deletes old segments itself"
            }
            LegacyKey::WaitMsgTimeout => {
                "subscribers wait on a condition variable, woken by each commit, so there \
                 is no wait timeout to set"
            }
            LegacyKey::WaitMsgTimeoutLogSample => {
                "there is no wait timeout whose log lines could be sampled (see \
                 worker.waitMsgTimeout); log.sample samples the per-message log lines"
            }
            LegacyKey::LifeDefaultScanSec => {
                "topic lifetimes are a min-heap timer that sleeps until the next expiry, \
                 not a periodic scan"
            }
            LegacyKey::DelayFirstExec => {
                "delayed messages fire at their due time from a min-heap timer, those \
                 that came due while the server was down right after start; there is no \
                 first scan to schedule"
            }
        }
    }
}

/// The top-level section of the original config that holds only legacy keys.
const BACKGROUND: &str = "background";

/// A legacy key where a section is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// A key with one value.
    Key(LegacyKey),
    /// The whole `background:` section ([`RawBackground`]).
    Background,
}

impl Found {
    /// The key as written in its section.
    pub(super) fn name(self) -> &'static str {
        match self {
            Found::Key(k) => k.key().rsplit_once('.').map_or(k.key(), |(_, name)| name),
            Found::Background => BACKGROUND,
        }
    }
}

/// The legacy key `name` of the section at `section` (dotted, `""` for the
/// top of the file), if it is one.
pub(super) fn lookup(section: &str, name: &str) -> Option<Found> {
    if section.is_empty() && name == BACKGROUND {
        return Some(Found::Background);
    }
    LegacyKey::ALL
        .into_iter()
        .find(|k| k.key().rsplit_once('.') == Some((section, name)))
        .map(Found::Key)
}

/// The legacy keys of the section at `section`, in the order the raw
/// structs of the original layout declared them.
pub(super) fn names(section: &str) -> Vec<&'static str> {
    if section.is_empty() {
        return vec![BACKGROUND];
    }
    LegacyKey::ALL
        .into_iter()
        .filter(|k| k.key().rsplit_once('.').is_some_and(|(s, _)| s == section))
        .map(|k| Found::Key(k).name())
        .collect()
}

/// A legacy key present in the config file, with its value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredKey {
    pub key: LegacyKey,
    pub value: String,
}

/// The start-up log line.
impl fmt::Display for IgnoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config key {} ({}) has no effect here and is ignored: {}",
            self.key.key(),
            self.value,
            self.key.reason()
        )
    }
}

/// The keys among `found` that have a value, in the given order. A missing
/// or empty key (`None`) is left out, as elsewhere in the config. A list or
/// a mapping is refused: the original keys hold one number, and a mapping
/// here most likely holds keys indented too far, which would be lost.
pub(super) fn ignored(
    found: impl IntoIterator<Item = (LegacyKey, Option<Value>)>,
) -> Result<Vec<IgnoredKey>, ConfigError> {
    let mut out = Vec::new();
    for (key, value) in found {
        let value = match value {
            None => continue,
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::String(s)) => format!("{s:?}"),
            Some(other) => {
                let what = match other {
                    Value::Sequence(_) => "a list",
                    Value::Mapping(_) => "a mapping (are the keys below it indented too far?)",
                    _ => "a tagged value",
                };
                return Err(invalid(
                    key.key(),
                    format!("must be a single value (it has no effect here), got {what}"),
                ));
            }
        };
        out.push(IgnoredKey { key, value });
    }
    Ok(out)
}

/// `background:` of the original config: only legacy keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawBackground {
    life: Option<RawLife>,
    delay: Option<RawDelay>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLife {
    default_scan_sec: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDelay {
    first_exec: Option<Value>,
}

impl RawBackground {
    /// Its keys, for [`ignored`].
    pub(super) fn keys(self) -> [(LegacyKey, Option<Value>); 2] {
        [
            (
                LegacyKey::LifeDefaultScanSec,
                self.life.and_then(|l| l.default_scan_sec),
            ),
            (
                LegacyKey::DelayFirstExec,
                self.delay.and_then(|d| d.first_exec),
            ),
        ]
    }
}
