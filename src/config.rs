//! TEMP STUB — replaced at merge.
use std::path::PathBuf;
#[derive(Debug, Clone, Copy, PartialEq, Eq)] pub enum FsyncPolicy { Always, Interval, Never }
#[derive(Debug, Clone)] pub struct Config { pub port: u16, pub bind: std::net::IpAddr, pub log: LogConfig, pub store: StoreConfig, pub worker: WorkerConfig, pub timeout: TimeoutConfig, pub limits: LimitsConfig, pub sub: SubConfig, pub auth: AuthConfig, pub replication: ReplicationConfig }
#[derive(Debug, Clone)] pub struct LogConfig { pub path: String, pub sample: u64, pub level: log::LevelFilter }
#[derive(Debug, Clone)] pub struct StoreConfig { pub path: PathBuf, pub max_log_size: u64, pub max_days: f64, pub clear_interval_secs: u64, pub fsync: FsyncPolicy, pub fsync_interval_ms: u64, pub checkpoint_bytes: u64 }
#[derive(Debug, Clone)] pub struct WorkerConfig { pub buff_size: usize, pub send_timeout_ms: u64 }
#[derive(Debug, Clone)] pub struct TimeoutConfig { pub net_write_ms: u64, pub server_alive_ms: u64 }
#[derive(Debug, Clone)] pub struct LimitsConfig { pub max_payload: usize, pub max_connections: usize, pub max_batch: usize, pub max_delay_ms: u64 }
#[derive(Debug, Clone)] pub struct SubConfig { pub default_batch: usize, pub default_ack_timeout_ms: u64 }
#[derive(Debug, Clone)] pub struct AuthConfig { pub token: String }
#[derive(Debug, Clone)] pub struct ReplicationConfig { pub sync: bool, pub sync_timeout_ms: u64 }
#[derive(Debug)] pub enum ConfigError { Invalid { key: &'static str, msg: String } }
impl std::fmt::Display for ConfigError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") } }
impl std::error::Error for ConfigError {}
impl Config { pub fn load(_p: &std::path::Path) -> Result<Config, ConfigError> { Err(ConfigError::Invalid { key: "x", msg: String::new() }) } }
pub fn init_logging(_l: &LogConfig) -> Result<(), ConfigError> { Ok(()) }
