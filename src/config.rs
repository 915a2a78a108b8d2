//! Server configuration: the YAML file (`config/config.yaml`), its defaults and its
//! validation (the logger it describes is installed by [`crate::logging`]).
//!
//! Owns: [`Config`] and its sections (the *validated* form every other module reads,
//! and at the same time the YAML's shape: each key is stated once, as a field of its
//! section, with its default in the section's `Default`), the conversions of the few
//! values whose YAML form is not their Rust type (`port`, `bind`, `log.level`,
//! `store.fsync`, `sub.maxDeliver`), and [`ConfigError`]. Runs once on the main thread
//! at startup, before any other thread exists; touches no channels or locks.
//!
//! Loading is two steps: serde reads the YAML text straight into the sections
//! (`deny_unknown_fields`, camelCase keys), then [`Config::validate`] checks every
//! value. A key that is missing — or present with an empty value — takes its default;
//! an empty file (or one with only comments) is all defaults. Every error names the
//! YAML key it is about (`store.maxLogSize`), or for syntax and type errors carries
//! serde_yaml's message, which names the key and the line.
//!
//! Submodules: `config/de.rs` (the serde glue: empty values take their default,
//! legacy keys set aside, values that do not convert become errors naming their key),
//! `config/error.rs` ([`ConfigError`]), `config/legacy.rs` (the few keys of the
//! original smss's config that this design does not need, read and explained:
//! [`IgnoredKey`], so such a file is accepted) and `config/replication.rs` (the
//! `replication:` section), `config/tls.rs` (the `tls:` section).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use log::LevelFilter;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod de;
mod error;
mod http;
mod legacy;
mod limits;
mod publish;
mod replication;
mod secret;
mod tls;

pub use self::error::ConfigError;
use self::error::invalid;
pub use self::http::HttpConfig;
pub use self::legacy::{IgnoredKey, LegacyKey};
pub use self::publish::PublishConfig;
pub use self::replication::ReplicationConfig;
pub use self::tls::TlsConfig;

/// Where the server looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/config.yaml";

/// Special `log.path` value meaning "write log lines to standard output".
pub const LOG_STDOUT: &str = "stdout";

/// Smallest allowed `store.maxLogSize` (bytes).
pub const MIN_LOG_SIZE: u64 = 4096;
/// Largest allowed `store.maxLogSize` (bytes, 1 TiB).
pub const MAX_LOG_SIZE: u64 = 1 << 40;
/// Largest allowed `store.maxDays` (100 years; keeps day → ms conversions in range).
pub const MAX_DAYS: f64 = 36_500.0;
/// Largest allowed value of every millisecond timeout/interval key (30 days), so that
/// `Instant::now() + timeout` can never overflow and panic.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;
/// Largest allowed `store.clearInterval` (seconds, 30 days).
pub const MAX_CLEAR_INTERVAL_SECS: u64 = 30 * 24 * 3600;
/// Largest allowed `limits.maxDelayMs` (10 years), so `now_ms + delay_ms` cannot overflow.
pub const MAX_DELAY_CAP_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// Largest allowed `limits.maxBatchBytes` (4 GiB).
pub const MAX_BATCH_BYTES_CAP: u64 = 1 << 32;
/// Longest allowed `auth.token` in bytes (it must fit on one 4096-byte protocol line).
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Upper bound of `sub.maxPending`: a shared group's dispatcher keeps a few
/// dozen bytes per range, at most one range per message in the window.
pub const MAX_PENDING_CAP: u64 = 10_000_000;

/// When the writer fsyncs the commit log.
///
/// The guarantee in each case is about what survives a crash of the *machine* (power
/// loss, kernel panic). A crash of only the smss process (`kill -9`) loses nothing
/// acknowledged under any policy, because the writer flushes its buffer to the OS
/// before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every group commit, before any `OK` of that group is sent. Every
    /// acknowledged write survives power loss. The default.
    Always,
    /// fsync at most every `store.fsyncIntervalMs`. A power loss can lose the writes
    /// acknowledged in the last interval; a process crash loses nothing.
    Interval,
    /// Never fsync; the OS writes dirty pages back when it likes (typically within
    /// ~30 s). A power loss can lose that much; a process crash loses nothing.
    Never,
}

impl FsyncPolicy {
    /// The YAML spelling: `always`, `interval` or `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Never => "never",
        }
    }

    /// Parse the YAML spelling (exact, lower case).
    pub fn parse(s: &str) -> Option<FsyncPolicy> {
        match s {
            "always" => Some(FsyncPolicy::Always),
            "interval" => Some(FsyncPolicy::Interval),
            "never" => Some(FsyncPolicy::Never),
            _ => None,
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The validated server configuration. Build it with [`Config::load`],
/// [`Config::from_yaml`] or [`Config::default`]; if you build or change one by hand,
/// call [`Config::validate`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// TCP port to listen on; 0 asks the OS for an ephemeral port (tests use it).
    #[serde(deserialize_with = "port")]
    pub port: u16,
    /// Address to bind.
    #[serde(deserialize_with = "bind")]
    pub bind: IpAddr,
    #[serde(deserialize_with = "de::section")]
    pub log: LogConfig,
    #[serde(deserialize_with = "de::section")]
    pub store: StoreConfig,
    #[serde(deserialize_with = "de::section")]
    pub worker: WorkerConfig,
    #[serde(deserialize_with = "de::section")]
    pub timeout: TimeoutConfig,
    #[serde(deserialize_with = "de::section")]
    pub limits: LimitsConfig,
    #[serde(deserialize_with = "de::section")]
    pub sub: SubConfig,
    #[serde(deserialize_with = "de::section")]
    pub auth: AuthConfig,
    #[serde(deserialize_with = "de::section")]
    pub replication: ReplicationConfig,
    /// `http:` — the monitoring listener (`config/http.rs`).
    #[serde(deserialize_with = "de::section")]
    pub http: HttpConfig,
    /// `publish:` — idempotent publishing (`config/publish.rs`).
    #[serde(deserialize_with = "de::section")]
    pub publish: PublishConfig,
    /// `tls:` — the TLS client port (`config/tls.rs`).
    #[serde(deserialize_with = "de::section")]
    pub tls: TlsConfig,
    /// Keys of the original smss's config found in the file, which have no effect
    /// here; the server logs one line for each at start.
    #[serde(skip)]
    pub ignored: Vec<IgnoredKey>,
}

/// `log:` — where and how much to log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LogConfig {
    /// `"stdout"` or a file path (opened in append mode, created if missing).
    pub path: String,
    /// Log 1 of every `sample` per-message events; 0 = none.
    pub sample: u64,
    #[serde(deserialize_with = "level", serialize_with = "level_name")]
    pub level: LevelFilter,
}

/// `store:` — the data directory and the commit log.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreConfig {
    /// Data directory; a relative path resolves against the working directory.
    pub path: PathBuf,
    /// Segment size in bytes; a segment rolls when it reaches this size.
    pub max_log_size: u64,
    /// Retention in days (may be fractional).
    pub max_days: f64,
    /// `store.clearInterval`: seconds between retention scans.
    #[serde(rename = "clearInterval")]
    pub clear_interval_secs: u64,
    #[serde(deserialize_with = "fsync")]
    pub fsync: FsyncPolicy,
    /// Used with [`FsyncPolicy::Interval`].
    pub fsync_interval_ms: u64,
    /// Log bytes written between automatic checkpoints.
    pub checkpoint_bytes: u64,
}

impl StoreConfig {
    /// Retention as whole milliseconds (`max_days` × 86 400 000, rounded down, at
    /// least 1). Validation keeps `max_days` in (0, 36 500], so this never saturates.
    pub fn max_age_ms(&self) -> u64 {
        let ms = self.max_days * 86_400_000.0;
        // `as` saturates for out-of-range floats; validation keeps us in range.
        (ms as u64).max(1)
    }
}

/// `worker:` — the persistence thread's input channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerConfig {
    /// Capacity of the bounded channel into the writer.
    #[serde(deserialize_with = "de::usize")]
    pub buff_size: usize,
    /// How long a connection waits to enqueue a write on a full channel before
    /// answering `ERR INTERNAL`.
    pub send_timeout_ms: u64,
}

/// `timeout:` — network timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeoutConfig {
    /// `timeout.net:`
    #[serde(deserialize_with = "de::section")]
    pub net: NetTimeouts,
    /// `timeout.server:`
    #[serde(deserialize_with = "de::section")]
    pub server: ServerTimeouts,
    /// `timeout.auth`: with `auth.token` set, how long a connection may take to
    /// authenticate before it is closed.
    #[serde(rename = "auth")]
    pub auth_ms: u64,
}

/// `timeout.net:`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NetTimeouts {
    /// `timeout.net.write`: socket write timeout.
    #[serde(rename = "write")]
    pub write_ms: u64,
}

/// `timeout.server:`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTimeouts {
    /// `timeout.server.alive`: interval of ALIVE heartbeats to an idle subscriber.
    #[serde(rename = "alive")]
    pub alive_ms: u64,
}

/// `limits:` — bounds on what clients may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsConfig {
    /// Largest message payload in bytes.
    #[serde(deserialize_with = "de::usize")]
    pub max_payload: usize,
    /// Most simultaneous client connections.
    #[serde(deserialize_with = "de::usize")]
    pub max_connections: usize,
    /// Most messages in one MPUB and in one SUB batch.
    #[serde(deserialize_with = "de::usize")]
    pub max_batch: usize,
    /// Most payload bytes of one MPUB in all.
    pub max_batch_bytes: u64,
    /// Longest delay of a delayed message.
    pub max_delay_ms: u64,
    /// `limits.maxUnauthenticated`: with `auth.token`, most connections not
    /// yet authenticated; 0 = a quarter of the connection cap in force
    /// (see `config/limits.rs` and [`crate::preauth`]).
    #[serde(deserialize_with = "de::usize")]
    pub max_unauthenticated: usize,
}

/// `sub:` — subscription defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SubConfig {
    /// Batch size of a SUB that does not give one (≤ `limits.maxBatch`).
    #[serde(deserialize_with = "de::usize")]
    pub default_batch: usize,
    /// `sub.defaultAckTimeout`: how long a SUB without `ack=` waits for ACK/STOP.
    #[serde(rename = "defaultAckTimeout")]
    pub default_ack_timeout_ms: u64,
    /// `sub.maxDeliver`: failed deliveries of one message before a group
    /// SUB without `maxDeliver=` gives up on it; 0 = never.
    #[serde(deserialize_with = "max_deliver")]
    pub max_deliver: u32,
    /// `sub.maxPending`: a shared group's messages out to its members or
    /// ACKed above its committed position, at most; members wait beyond.
    pub max_pending: u64,
}

/// `auth:` — the shared token; empty = no authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthConfig {
    pub token: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            path: LOG_STDOUT.to_string(),
            sample: 10_000,
            level: LevelFilter::Info,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("data"),
            max_log_size: 1 << 30,
            max_days: 7.0,
            clear_interval_secs: 7200,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 1000,
            checkpoint_bytes: 64 << 20,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            buff_size: 1000,
            send_timeout_ms: 5000,
        }
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            net: NetTimeouts::default(),
            server: ServerTimeouts::default(),
            auth_ms: 10_000,
        }
    }
}

impl Default for NetTimeouts {
    fn default() -> Self {
        NetTimeouts { write_ms: 1000 }
    }
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        ServerTimeouts { alive_ms: 30_000 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_payload: 4 << 20,
            max_connections: 1024,
            max_batch: 1000,
            max_batch_bytes: 32 << 20,
            max_delay_ms: 30 * 24 * 3600 * 1000,
            max_unauthenticated: 0,
        }
    }
}

impl Default for SubConfig {
    fn default() -> Self {
        SubConfig {
            default_batch: 32,
            default_ack_timeout_ms: 30_000,
            max_deliver: 0,
            max_pending: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 12301,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            log: LogConfig::default(),
            store: StoreConfig::default(),
            worker: WorkerConfig::default(),
            timeout: TimeoutConfig::default(),
            limits: LimitsConfig::default(),
            sub: SubConfig::default(),
            auth: AuthConfig::default(),
            replication: ReplicationConfig::default(),
            http: HttpConfig::default(),
            publish: PublishConfig::default(),
            tls: TlsConfig::default(),
            ignored: Vec::new(),
        }
    }
}

// The values whose YAML form is not their Rust type. One that does not convert is
// refused naming its key (`de::refuse`), after any syntax or type error in the file.

/// `port`: a YAML integer, 0-65535.
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let p = u64::deserialize(d)?;
    match u16::try_from(p) {
        Ok(p) => Ok(p),
        Err(_) => de::refuse("port", format!("must be between 0 and 65535, got {p}"), 0),
    }
}

/// `bind`: an IP address (not a host name); spaces around it are ignored.
fn bind<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = String::deserialize(d)?;
    match s.trim().parse::<IpAddr>() {
        Ok(ip) => Ok(ip),
        Err(_) => de::refuse(
            "bind",
            format!(
                "must be an IP address such as 127.0.0.1, 0.0.0.0 or ::1 \
                 (not a host name), got {s:?}"
            ),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ),
    }
}

/// `log.level`: a level name, in any case.
fn level<'de, D: Deserializer<'de>>(d: D) -> Result<LevelFilter, D::Error> {
    let s = String::deserialize(d)?;
    match parse_level(&s) {
        Some(level) => Ok(level),
        None => de::refuse(
            "log.level",
            format!("must be one of off, error, warn, info, debug, trace; got {s:?}"),
            LevelFilter::Info,
        ),
    }
}

fn level_name<S: Serializer>(level: &LevelFilter, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(level.as_str())
}

/// `store.fsync`: `always`, `interval` or `never`.
fn fsync<'de, D: Deserializer<'de>>(d: D) -> Result<FsyncPolicy, D::Error> {
    let s = String::deserialize(d)?;
    match FsyncPolicy::parse(&s) {
        Some(p) => Ok(p),
        None => de::refuse(
            "store.fsync",
            format!("must be one of always, interval, never; got {s:?}"),
            FsyncPolicy::Always,
        ),
    }
}

/// `sub.maxDeliver`: a YAML integer that fits a `u32`.
fn max_deliver<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => de::refuse(
            "sub.maxDeliver",
            format!("must be at most {}, got {v}", u32::MAX),
            0,
        ),
    }
}

/// Check `min <= value <= max` for key `key`.
fn check_range<T>(key: &'static str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// Check `value >= min` for key `key` (and ≤ [`MAX_TIMEOUT_MS`] for ms durations).
fn check_ms(key: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    check_range(key, value, min, MAX_TIMEOUT_MS)
}

/// Parse a `log.level` value (case-insensitive).
fn parse_level(s: &str) -> Option<LevelFilter> {
    let level = match s.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    };
    Some(level)
}

impl Config {
    /// Read, parse and validate the config file at `path`. A missing file is an error
    /// ([`ConfigError::Read`]) naming the path that was tried.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { path: None, msg } => ConfigError::Parse {
                path: Some(path.to_path_buf()),
                msg,
            },
            other => other,
        })
    }

    /// Parse and validate YAML text. Empty text (or only comments) gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let (mut config, ignored) = de::load::<Config>(text)?;
        config.ignored = ignored;
        config.validate()?;
        Ok(config)
    }

    /// Check every value; the error names the first offending YAML key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // port: any u16 (0 = ephemeral); bind: any IpAddr — both enforced by the types.

        let log = &self.log;
        if log.path.trim().is_empty() {
            return Err(invalid(
                "log.path",
                "must not be empty (use \"stdout\" or a file path)",
            ));
        }
        if log.path.trim() != log.path {
            return Err(invalid(
                "log.path",
                format!("has leading or trailing spaces: {:?}", log.path),
            ));
        }

        let store = &self.store;
        if store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        check_range(
            "store.maxLogSize",
            store.max_log_size,
            MIN_LOG_SIZE,
            MAX_LOG_SIZE,
        )?;
        if !store.max_days.is_finite() || store.max_days <= 0.0 || store.max_days > MAX_DAYS {
            return Err(invalid(
                "store.maxDays",
                format!(
                    "must be a number greater than 0 and at most {MAX_DAYS}, got {}",
                    store.max_days
                ),
            ));
        }
        check_range(
            "store.clearInterval",
            store.clear_interval_secs,
            1,
            MAX_CLEAR_INTERVAL_SECS,
        )?;
        check_ms("store.fsyncIntervalMs", store.fsync_interval_ms, 1)?;
        check_range(
            "store.checkpointBytes",
            store.checkpoint_bytes,
            4096,
            u64::MAX,
        )?;

        check_range("worker.buffSize", self.worker.buff_size, 1, 1_000_000)?;
        check_ms("worker.sendTimeoutMs", self.worker.send_timeout_ms, 1)?;

        check_ms("timeout.net.write", self.timeout.net.write_ms, 1)?;
        check_ms("timeout.server.alive", self.timeout.server.alive_ms, 10)?;
        check_ms("timeout.auth", self.timeout.auth_ms, 1)?;

        let limits = &self.limits;
        check_range("limits.maxPayload", limits.max_payload, 1, 1 << 30)?;
        check_range("limits.maxConnections", limits.max_connections, 1, 100_000)?;
        check_range("limits.maxBatch", limits.max_batch, 1, 100_000)?;
        let max_bytes = limits.max_batch_bytes;
        check_range("limits.maxBatchBytes", max_bytes, 1, MAX_BATCH_BYTES_CAP)?;
        check_range(
            "limits.maxDelayMs",
            limits.max_delay_ms,
            1,
            MAX_DELAY_CAP_MS,
        )?;
        limits.validate_unauthenticated()?;
        self.publish.validate()?;

        if self.sub.default_batch < 1 || self.sub.default_batch > limits.max_batch {
            return Err(invalid(
                "sub.defaultBatch",
                format!(
                    "must be between 1 and limits.maxBatch ({}), got {}",
                    limits.max_batch, self.sub.default_batch
                ),
            ));
        }
        check_ms("sub.defaultAckTimeout", self.sub.default_ack_timeout_ms, 1)?;
        if !(1..=MAX_PENDING_CAP).contains(&self.sub.max_pending) {
            return Err(invalid(
                "sub.maxPending",
                format!(
                    "must be between 1 and {MAX_PENDING_CAP}, got {}",
                    self.sub.max_pending
                ),
            ));
        }

        let token = &self.auth.token;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(
                "auth.token",
                format!("is {} bytes, at most {MAX_TOKEN_BYTES}", token.len()),
            ));
        }
        if let Some(bad) = token.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(invalid(
                "auth.token",
                format!(
                    "may contain only visible ASCII characters (no spaces), found {bad:?} \
                     (it is sent as one word: AUTH <token>)"
                ),
            ));
        }

        self.replication.validate()?;
        self.tls.validate()?;
        Ok(())
    }

    /// The address to listen on: `bind:port`.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// Settings that are allowed but probably a mistake, as messages to log once the
    /// logger is up. Empty for the defaults. Names the configured port; the server
    /// logs [`Config::warnings_for`] the address it actually bound instead.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings_for(self.listen_addr())
    }

    /// [`Config::warnings`], naming `bound` (with `port: 0`, the port the OS picked).
    pub fn warnings_for(&self, bound: SocketAddr) -> Vec<String> {
        let mut out = Vec::new();
        if !self.bind.is_loopback() && self.auth.token.is_empty() {
            out.push(format!(
                "listening on {bound}: bind {} is not loopback and auth.token is empty: \
                 ANYONE who can reach port {} can read and write every topic",
                self.bind,
                bound.port()
            ));
        }
        if self.limits.max_payload as u64 >= self.store.max_log_size {
            out.push(format!(
                "limits.maxPayload ({}) is not smaller than store.maxLogSize ({}): a large \
                 message gets a segment of its own",
                self.limits.max_payload, self.store.max_log_size
            ));
        }
        if self.http.enabled && !self.http.bind.is_loopback() && self.auth.token.is_empty() {
            out.push(format!(
                "http.bind {} is not loopback and auth.token is empty: anyone who can reach \
                 the HTTP port can read /metrics and the status page (topic and group names)",
                self.http.bind
            ));
        }
        if self.store.fsync != FsyncPolicy::Always && self.replication.sync {
            out.push(format!(
                "replication.sync is on but store.fsync is {}: a slave's copy is durable, \
                 the master's own may not be",
                self.store.fsync
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(yaml: &str) -> ConfigError {
        match Config::from_yaml(yaml) {
            Ok(c) => panic!("expected an error for {yaml:?}, got {c:?}"),
            Err(e) => e,
        }
    }

    /// Assert that `yaml` is rejected with an `Invalid` error for `key`.
    fn assert_invalid(yaml: &str, key: &str) {
        match err_of(yaml) {
            ConfigError::Invalid { key: k, msg } => {
                assert_eq!(k, key, "yaml {yaml:?}: wrong key (msg: {msg})");
                let shown = err_of(yaml).to_string();
                assert!(shown.contains(key), "{shown:?} does not name {key}");
            }
            other => panic!("yaml {yaml:?}: expected Invalid {{ {key} }}, got {other:?}"),
        }
    }

    /// Assert that `yaml` is a parse error whose message contains every needle.
    fn assert_parse_err(yaml: &str, needles: &[&str]) {
        match err_of(yaml) {
            ConfigError::Parse { path: None, msg } => {
                for n in needles {
                    assert!(msg.contains(n), "{msg:?} does not contain {n:?}");
                }
            }
            other => panic!("yaml {yaml:?}: expected Parse, got {other:?}"),
        }
    }

    fn assert_same(a: &Config, b: &Config) {
        // Config is not PartialEq (IpAddr and f64 are, but keep the public API small);
        // compare the sections, which are.
        assert_eq!(a.port, b.port);
        assert_eq!(a.bind, b.bind);
        assert_eq!(a.log, b.log);
        assert_eq!(a.store, b.store);
        assert_eq!(a.worker, b.worker);
        assert_eq!(a.timeout, b.timeout);
        assert_eq!(a.limits, b.limits);
        assert_eq!(a.sub, b.sub);
        assert_eq!(a.auth, b.auth);
        assert_eq!(a.replication, b.replication);
        assert_eq!(a.http, b.http);
        assert_eq!(a.ignored, b.ignored);
    }

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name)
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let c = Config::default();
        assert_eq!(c.port, 12301);
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(c.log.path, "stdout");
        assert_eq!(c.log.sample, 10_000);
        assert_eq!(c.log.level, LevelFilter::Info);
        assert_eq!(c.store.path, PathBuf::from("data"));
        assert_eq!(c.store.max_log_size, 1_073_741_824);
        assert_eq!(c.store.max_days, 7.0);
        assert_eq!(c.store.clear_interval_secs, 7200);
        assert_eq!(c.store.fsync, FsyncPolicy::Always);
        assert_eq!(c.store.fsync_interval_ms, 1000);
        assert_eq!(c.store.checkpoint_bytes, 67_108_864);
        assert_eq!(c.worker.buff_size, 1000);
        assert_eq!(c.worker.send_timeout_ms, 5000);
        assert_eq!(c.timeout.net.write_ms, 1000);
        assert_eq!(c.timeout.server.alive_ms, 30_000);
        assert_eq!(c.timeout.auth_ms, 10_000);
        assert_eq!(c.limits.max_payload, 4_194_304);
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.max_batch, 1000);
        assert_eq!(c.limits.max_batch_bytes, 33_554_432);
        assert_eq!(c.limits.max_delay_ms, 2_592_000_000);
        assert_eq!(c.sub.default_batch, 32);
        assert_eq!(c.sub.default_ack_timeout_ms, 30_000);
        assert_eq!(c.sub.max_deliver, 0);
        assert_eq!(c.sub.max_pending, 10_000);
        assert_eq!(c.auth.token, "");
        assert!(!c.replication.sync);
        assert_eq!(c.replication.sync_timeout_ms, 1000);
        c.validate().expect("defaults validate");
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        assert_eq!(c.store.max_age_ms(), 7 * 86_400_000);
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:12301");
    }

    #[test]
    fn empty_and_comment_only_yaml_give_defaults() {
        for text in ["", "\n\n", "# nothing here\n  # still nothing\n", "---\n"] {
            let c = Config::from_yaml(text).expect("empty config parses");
            assert_same(&c, &Config::default());
        }
    }

    #[test]
    fn empty_sections_and_values_give_defaults() {
        let c = Config::from_yaml("log:\nstore:\n  path:\ntimeout:\n  net:\nauth:\n  token:\n")
            .expect("parses");
        assert_same(&c, &Config::default());
    }

    #[test]
    fn every_key_empty_gives_its_default() {
        let yaml = "port:\nbind:\nlog: { path: , sample: , level: }\n\
                    store: { path: , maxLogSize: , maxDays: , clearInterval: , fsync: , \
                    fsyncIntervalMs: , checkpointBytes: , waitDelLockTimeoutMs: }\n\
                    worker: { buffSize: , sendTimeoutMs: , waitMsgTimeout: ~ }\n\
                    timeout: { net: { write: }, server: { alive: ~ }, auth: }\n\
                    limits: { maxPayload: , maxConnections: , maxBatch: , maxBatchBytes: , \
                    maxDelayMs: }\n\
                    sub: { defaultBatch: , defaultAckTimeout: , maxDeliver: }\n\
                    auth: { token: }\n\
                    replication: { sync: , syncTimeoutMs: , minSlaves: , peer: , \
                    slaveTimeoutMs: }\n\
                    background: { life: , delay: { firstExec: } }\n";
        let c = Config::from_yaml(yaml).expect("parses");
        assert_same(&c, &Config::default());
    }

    #[test]
    fn shipped_config_yaml_equals_defaults() {
        let c = Config::load(&shipped("config.yaml")).expect("config/config.yaml loads");
        assert_same(&c, &Config::default());
    }

    #[test]
    fn shipped_slave_yaml_is_defaults_but_ports_and_store() {
        let c = Config::load(&shipped("slave.yaml")).expect("config/slave.yaml loads");
        assert_eq!(c.port, 12302);
        assert_eq!(c.store.path, PathBuf::from("data/slave"));
        let expected = Config {
            port: 12302,
            store: StoreConfig {
                path: PathBuf::from("data/slave"),
                ..StoreConfig::default()
            },
            http: HttpConfig {
                port: 12382,
                ..HttpConfig::default()
            },
            ..Config::default()
        };
        assert_same(&c, &expected);
    }

    #[test]
    fn every_key_is_read() {
        let yaml = r#"
port: 0
bind: "::1"
log: { path: /tmp/smss.log, sample: 0, level: DEBUG }
store:
  path: /var/lib/smss
  maxLogSize: 4096
  maxDays: 0.0001
  clearInterval: 1
  fsync: interval
  fsyncIntervalMs: 5
  checkpointBytes: 8192
worker: { buffSize: 7, sendTimeoutMs: 9 }
timeout: { net: { write: 11 }, server: { alive: 13 }, auth: 41 }
limits: { maxPayload: 17, maxConnections: 19, maxBatch: 23, maxBatchBytes: 43, maxDelayMs: 29, maxUnauthenticated: 7 }
sub: { defaultBatch: 23, defaultAckTimeout: 31, maxDeliver: 47, maxPending: 53 }
auth: { token: s3cr3t }
replication: { sync: true, syncTimeoutMs: 37, minSlaves: 2, peer: "127.0.0.1:12302", slaveTimeoutMs: 4000 }
"#;
        let c = Config::from_yaml(yaml).expect("parses");
        assert_eq!(c.port, 0);
        assert_eq!(c.bind, "::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            c.log,
            LogConfig {
                path: "/tmp/smss.log".into(),
                sample: 0,
                level: LevelFilter::Debug
            }
        );
        assert_eq!(
            c.store,
            StoreConfig {
                path: "/var/lib/smss".into(),
                max_log_size: 4096,
                max_days: 0.0001,
                clear_interval_secs: 1,
                fsync: FsyncPolicy::Interval,
                fsync_interval_ms: 5,
                checkpoint_bytes: 8192,
            }
        );
        assert_eq!(
            c.worker,
            WorkerConfig {
                buff_size: 7,
                send_timeout_ms: 9
            }
        );
        assert_eq!(
            c.timeout,
            TimeoutConfig {
                net: NetTimeouts { write_ms: 11 },
                server: ServerTimeouts { alive_ms: 13 },
                auth_ms: 41
            }
        );
        assert_eq!(
            c.limits,
            LimitsConfig {
                max_payload: 17,
                max_connections: 19,
                max_batch: 23,
                max_batch_bytes: 43,
                max_delay_ms: 29,
                max_unauthenticated: 7
            }
        );
        assert_eq!(
            c.sub,
            SubConfig {
                default_batch: 23,
                default_ack_timeout_ms: 31,
                max_deliver: 47,
                max_pending: 53
            }
        );
        assert_eq!(c.auth.token, "s3cr3t");
        assert_eq!(
            c.replication,
            ReplicationConfig {
                sync: true,
                sync_timeout_ms: 37,
                min_slaves: 2,
                peer: Some("127.0.0.1:12302".into()),
                slave_timeout_ms: 4000,
                ..ReplicationConfig::default()
            }
        );
        // Fractional days: 0.0001 d = 8640 ms.
        assert_eq!(c.store.max_age_ms(), 8640);
    }

    #[test]
    fn fractional_max_days_accepted() {
        let c = Config::from_yaml("store: { maxDays: 0.0001 }").expect("parses");
        assert_eq!(c.store.max_days, 0.0001);
        let c = Config::from_yaml("store: { maxDays: 1.5 }").expect("parses");
        assert_eq!(c.store.max_age_ms(), 129_600_000);
        // An integer is fine too.
        let c = Config::from_yaml("store: { maxDays: 30 }").expect("parses");
        assert_eq!(c.store.max_days, 30.0);
        // A tiny value still gives a positive age.
        let c = Config::from_yaml("store: { maxDays: 1.0e-12 }").expect("parses");
        assert_eq!(c.store.max_age_ms(), 1);
    }

    #[test]
    fn fsync_policies_parse() {
        for (s, p) in [
            ("always", FsyncPolicy::Always),
            ("interval", FsyncPolicy::Interval),
            ("never", FsyncPolicy::Never),
        ] {
            let c = Config::from_yaml(&format!("store: {{ fsync: {s} }}")).expect("parses");
            assert_eq!(c.store.fsync, p);
            assert_eq!(p.to_string(), s);
        }
        assert_invalid("store: { fsync: sometimes }", "store.fsync");
        assert_invalid("store: { fsync: Always }", "store.fsync");
        assert_invalid("store: { fsync: '' }", "store.fsync");
        let e = err_of("store: { fsync: sometimes }").to_string();
        assert!(e.contains("sometimes") && e.contains("always"), "{e}");
    }

    #[test]
    fn log_levels_parse() {
        for (s, l) in [
            ("off", LevelFilter::Off),
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
            ("TRACE", LevelFilter::Trace),
        ] {
            let c = Config::from_yaml(&format!("log: {{ level: {s} }}")).expect("parses");
            assert_eq!(c.log.level, l);
        }
        assert_invalid("log: { level: verbose }", "log.level");
        assert_invalid("log: { level: warning }", "log.level");
        assert_invalid("log: { level: 3 }", "log.level");
    }

    #[test]
    fn unknown_top_level_key_rejected_naming_it() {
        assert_parse_err("port: 1\nprot: 2\n", &["prot"]);
        assert_parse_err("maxPayload: 10\n", &["maxPayload"]);
    }

    #[test]
    fn unknown_nested_keys_rejected_naming_them() {
        assert_parse_err(
            "store:\n  maxlogsize: 4096\n",
            &["maxlogsize", "store", "line 2"],
        );
        assert_parse_err("log: { path: stdout, colour: true }", &["colour"]);
        assert_parse_err(
            "timeout:\n  net:\n    read: 5\n",
            &["read", "timeout.net", "line 3"],
        );
        assert_parse_err("timeout: { server: { alive: 50, dead: 1 } }", &["dead"]);
        assert_parse_err("timeout: { authMs: 5 }", &["authMs"]);
        assert_parse_err("worker: { buff_size: 10 }", &["buff_size"]);
        assert_parse_err("limits: { maxPayLoad: 10 }", &["maxPayLoad"]);
        assert_parse_err("sub: { defaultAckTimeoutMs: 10 }", &["defaultAckTimeoutMs"]);
        assert_parse_err("auth: { user: x }", &["user"]);
        assert_parse_err("replication: { async: true }", &["async"]);
    }

    #[test]
    fn wrong_types_and_bad_yaml_are_parse_errors() {
        assert_parse_err(
            "store:\n  maxLogSize: -1\n",
            &["store.maxLogSize", "line 2"],
        );
        assert_parse_err("store: { maxLogSize: 1G }", &["store.maxLogSize"]);
        assert_parse_err("port: [1, 2]", &["port"]);
        assert_parse_err("replication: { sync: yes }", &["replication.sync"]);
        assert_parse_err("port: 1\nport: 2\n", &["duplicate", "port"]);
        assert_parse_err("- just\n- a list\n", &["sequence"]);
        assert_parse_err("store: [1]", &["store"]);
        assert_parse_err("port: 1\n  bind: x: y\n", &[]);
    }

    #[test]
    fn port_and_bind_rules() {
        assert_invalid("port: 65536", "port");
        assert!(Config::from_yaml("port: 65535").is_ok());
        assert!(Config::from_yaml("port: 0").is_ok());
        assert_invalid("bind: localhost", "bind");
        assert_invalid("bind: 127.0.0.1:80", "bind");
        assert_invalid("bind: ''", "bind");
        assert_invalid("bind: 300.1.1.1", "bind");
        let c = Config::from_yaml("bind: 0.0.0.0").expect("parses");
        assert!(c.bind.is_unspecified());
        assert_eq!(c.warnings().len(), 1, "exposed without a token warns");
        let c = Config::from_yaml("bind: 0.0.0.0\nauth: { token: abc }").expect("parses");
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn each_range_rule_rejects_and_names_the_key() {
        let cases: &[(&str, &str)] = &[
            ("log: { path: '' }", "log.path"),
            ("log: { path: '   ' }", "log.path"),
            ("log: { path: ' out.log' }", "log.path"),
            ("store: { path: '' }", "store.path"),
            ("store: { maxLogSize: 4095 }", "store.maxLogSize"),
            ("store: { maxLogSize: 1099511627777 }", "store.maxLogSize"),
            ("store: { maxDays: 0 }", "store.maxDays"),
            ("store: { maxDays: -1 }", "store.maxDays"),
            ("store: { maxDays: .nan }", "store.maxDays"),
            ("store: { maxDays: .inf }", "store.maxDays"),
            ("store: { maxDays: 36501 }", "store.maxDays"),
            ("store: { clearInterval: 0 }", "store.clearInterval"),
            ("store: { clearInterval: 99999999 }", "store.clearInterval"),
            ("store: { fsyncIntervalMs: 0 }", "store.fsyncIntervalMs"),
            ("store: { checkpointBytes: 4095 }", "store.checkpointBytes"),
            ("worker: { buffSize: 0 }", "worker.buffSize"),
            ("worker: { buffSize: 1000001 }", "worker.buffSize"),
            ("worker: { sendTimeoutMs: 0 }", "worker.sendTimeoutMs"),
            ("timeout: { net: { write: 0 } }", "timeout.net.write"),
            (
                "timeout: { net: { write: 18446744073709551615 } }",
                "timeout.net.write",
            ),
            ("timeout: { server: { alive: 9 } }", "timeout.server.alive"),
            ("timeout: { auth: 0 }", "timeout.auth"),
            ("timeout: { auth: 2592000001 }", "timeout.auth"),
            ("limits: { maxPayload: 0 }", "limits.maxPayload"),
            ("limits: { maxPayload: 1073741825 }", "limits.maxPayload"),
            ("limits: { maxConnections: 0 }", "limits.maxConnections"),
            (
                "limits: { maxConnections: 100001 }",
                "limits.maxConnections",
            ),
            ("limits: { maxBatch: 0 }", "limits.maxBatch"),
            (
                "limits: { maxConnections: 10, maxUnauthenticated: 11 }",
                "limits.maxUnauthenticated",
            ),
            ("limits: { maxBatch: 100001 }", "limits.maxBatch"),
            ("limits: { maxBatchBytes: 0 }", "limits.maxBatchBytes"),
            (
                "limits: { maxBatchBytes: 4294967297 }",
                "limits.maxBatchBytes",
            ),
            ("limits: { maxDelayMs: 0 }", "limits.maxDelayMs"),
            (
                "limits: { maxDelayMs: 18446744073709551615 }",
                "limits.maxDelayMs",
            ),
            ("sub: { defaultBatch: 0 }", "sub.defaultBatch"),
            ("sub: { defaultBatch: 1001 }", "sub.defaultBatch"),
            (
                "limits: { maxBatch: 10 }\nsub: { defaultBatch: 11 }",
                "sub.defaultBatch",
            ),
            ("sub: { defaultAckTimeout: 0 }", "sub.defaultAckTimeout"),
            ("sub: { maxDeliver: 4294967296 }", "sub.maxDeliver"),
            ("auth: { token: 'two words' }", "auth.token"),
            ("auth: { token: \"tab\\there\" }", "auth.token"),
            ("auth: { token: \"caf\u{e9}\" }", "auth.token"),
            (
                "replication: { syncTimeoutMs: 0 }",
                "replication.syncTimeoutMs",
            ),
        ];
        for (yaml, key) in cases {
            assert_invalid(yaml, key);
        }
        let long = format!("auth: {{ token: {} }}", "x".repeat(MAX_TOKEN_BYTES + 1));
        assert_invalid(&long, "auth.token");
    }

    #[test]
    fn boundary_values_are_accepted() {
        let yaml = "store: { maxLogSize: 4096, clearInterval: 1, fsyncIntervalMs: 1, \
                    checkpointBytes: 4096 }\n\
                    worker: { buffSize: 1000000, sendTimeoutMs: 1 }\n\
                    timeout: { net: { write: 1 }, server: { alive: 10 }, auth: 1 }\n\
                    limits: { maxPayload: 1073741824, maxConnections: 100000, \
                    maxBatch: 100000, maxBatchBytes: 4294967296, maxDelayMs: 1 }\n\
                    sub: { defaultBatch: 100000, defaultAckTimeout: 1 }\n\
                    replication: { syncTimeoutMs: 1 }\n";
        let c = Config::from_yaml(yaml).expect("boundaries are valid");
        assert_eq!(c.store.max_log_size, 4096);
        // maxPayload ≥ maxLogSize is allowed but warned about.
        assert!(c.warnings().iter().any(|w| w.contains("limits.maxPayload")));
        assert!(Config::from_yaml("store: { maxLogSize: 1099511627776 }").is_ok());
    }

    #[test]
    fn validate_checks_hand_built_configs() {
        let mut c = Config::default();
        c.store.path = PathBuf::new();
        match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "store.path"),
            other => panic!("expected store.path error, got {other:?}"),
        }
        let mut c = Config::default();
        c.store.max_days = f64::NAN;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "store.maxDays",
                ..
            })
        ));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let path = Path::new("/nonexistent/smss-test/config.yaml");
        let err = Config::load(path).expect_err("missing file is an error");
        match &err {
            ConfigError::Read { path: p, source } => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Read, got {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("/nonexistent/smss-test/config.yaml")
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn parse_error_from_file_names_the_file() {
        let dir = std::env::temp_dir().join(format!("smss-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("bad.yaml");
        std::fs::write(&path, "store:\n  bogus: 1\n").expect("write");
        let err = Config::load(&path).expect_err("bad key");
        let shown = err.to_string();
        assert!(shown.contains("bad.yaml"), "{shown}");
        assert!(shown.contains("bogus"), "{shown}");
        assert!(matches!(err, ConfigError::Parse { path: Some(_), .. }));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A config.yaml as the original smss's users wrote it: its usual keys and
    /// the five this design does not need.
    const SEED_YAML: &str = "\
port: 12301
log:
  path: stdout
  sample: 1000
store:
  path: data
  maxLogSize: 1073741824
  maxDays: 7
  clearInterval: 7200
  waitDelLockTimeoutMs: 3000
worker:
  buffSize: 1000
  waitMsgTimeout: 10000
  waitMsgTimeoutLogSample: 10
timeout:
  net:
    write: 1000
  server:
    alive: 30000
background:
  life:
    defaultScanSec: 60
  delay:
    firstExec: 5
";

    #[test]
    fn seed_config_is_accepted_and_its_legacy_keys_noted() {
        let c = Config::from_yaml(SEED_YAML).expect("a seed config.yaml loads");
        let found: Vec<(LegacyKey, &str)> = c
            .ignored
            .iter()
            .map(|k| (k.key, k.value.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (LegacyKey::WaitDelLockTimeoutMs, "3000"),
                (LegacyKey::WaitMsgTimeout, "10000"),
                (LegacyKey::WaitMsgTimeoutLogSample, "10"),
                (LegacyKey::LifeDefaultScanSec, "60"),
                (LegacyKey::DelayFirstExec, "5"),
            ]
        );
        // Its other keys are read as usual.
        assert_eq!(c.log.sample, 1000);
        assert_eq!(c.worker.buff_size, 1000);
        assert_eq!(c.timeout.server.alive_ms, 30_000);
        // One line per key, naming it, its value and why it does nothing.
        let why = [
            "the writer thread owns every file",
            "condition variable, woken by each commit",
            "log.sample",
            "min-heap timer",
            "fire at their due time",
        ];
        for (k, why) in c.ignored.iter().zip(why) {
            let line = k.to_string();
            assert!(line.contains(k.key.key()), "{line}");
            assert!(line.contains(&format!("({})", k.value)), "{line}");
            assert!(line.contains("has no effect here"), "{line}");
            assert!(line.contains(why), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        // The legacy keys are not warnings about this server's own settings.
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn legacy_keys_change_no_setting() {
        let without: String = SEED_YAML
            .lines()
            .filter(|l| {
                ![
                    "waitDel",
                    "waitMsg",
                    "background",
                    "life",
                    "delay",
                    "defaultScan",
                    "firstExec",
                ]
                .iter()
                .any(|k| l.trim_start().starts_with(k))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let a = Config::from_yaml(&without).expect("parses");
        assert!(a.ignored.is_empty());
        let mut b = Config::from_yaml(SEED_YAML).expect("parses");
        assert_eq!(b.ignored.len(), 5);
        b.ignored.clear();
        assert_same(&a, &b);
    }

    #[test]
    fn every_legacy_key_alone_and_empty_ones() {
        for key in LegacyKey::ALL {
            let (section, name) = key.key().rsplit_once('.').expect("dotted key");
            // `a.b.c: v` as nested YAML.
            let mut yaml = String::new();
            for (depth, part) in section.split('.').enumerate() {
                yaml.push_str(&format!("{}{part}:\n", "  ".repeat(depth)));
            }
            let indent = "  ".repeat(section.split('.').count());
            let c = Config::from_yaml(&format!("{yaml}{indent}{name}: 42\n")).expect("parses");
            assert_eq!(
                c.ignored,
                [IgnoredKey {
                    key,
                    value: "42".into()
                }]
            );
            // An empty value is as if the key were missing.
            let c = Config::from_yaml(&format!("{yaml}{indent}{name}:\n")).expect("parses");
            assert!(c.ignored.is_empty(), "{key:?}");
            // One value, not a list or a mapping.
            for bad in ["[1, 2]", "{ buffSize: 10 }"] {
                assert_invalid(&format!("{yaml}{indent}{name}: {bad}\n"), key.key());
            }
        }
        // Strings and booleans are shown as written.
        let c = Config::from_yaml("worker: { waitMsgTimeout: 10s, waitMsgTimeoutLogSample: true }")
            .expect("parses");
        let values: Vec<&str> = c.ignored.iter().map(|k| k.value.as_str()).collect();
        assert_eq!(values, ["\"10s\"", "true"]);
        assert!(Config::default().ignored.is_empty());
        let shipped = Config::load(&shipped("config.yaml")).expect("loads");
        assert!(shipped.ignored.is_empty());
    }

    #[test]
    fn a_mapping_under_a_legacy_key_is_refused_naming_it() {
        // A real key indented one level too far would otherwise vanish.
        let e = err_of("worker:\n  waitMsgTimeout:\n    buffSize: 10\n").to_string();
        assert!(e.contains("worker.waitMsgTimeout"), "{e}");
        assert!(e.contains("indented too far"), "{e}");
    }

    #[test]
    fn other_unknown_keys_near_the_legacy_ones_stay_errors() {
        assert_parse_err("store: { waitDelLockTimeout: 1 }", &["waitDelLockTimeout"]);
        assert_parse_err("worker: { waitMsgTimeoutMs: 1 }", &["waitMsgTimeoutMs"]);
        assert_parse_err("background: { scan: 1 }", &["scan"]);
        assert_parse_err(
            "background:\n  life:\n    defaultScanSecond: 1\n",
            &["defaultScanSecond", "line 3"],
        );
        assert_parse_err(
            "background: { delay: { firstExecSecond: 1 } }",
            &["firstExecSecond"],
        );
        assert_parse_err("life: { defaultScanSec: 1 }", &["life"]);
        assert_parse_err("background: 5", &["background"]);
        // The other unknown key of the same file is reported, not hidden by the legacy ones.
        let e = err_of(&format!("{SEED_YAML}colour: blue\n")).to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
