//! The config loader's error type.
//!
//! Owns [`ConfigError`]: every way loading the config file or opening the log
//! it names can fail, each naming the file or the YAML key it is about.

use std::fmt;
use std::path::PathBuf;

/// What can go wrong loading the config or setting up logging.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key, or a value of the wrong type. `msg`
    /// is serde_yaml's message (it names the key and the line). `path` is the file,
    /// when the text came from one.
    Parse { path: Option<PathBuf>, msg: String },
    /// A value is out of range or otherwise unusable; `key` is its YAML key.
    Invalid { key: &'static str, msg: String },
    /// The log file named by `log.path` could not be opened.
    LogFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, .. } => {
                write!(f, "cannot read config file {}", path.display())
            }
            ConfigError::Parse {
                path: Some(path),
                msg,
            } => write!(f, "bad config file {}: {msg}", path.display()),
            ConfigError::Parse { path: None, msg } => write!(f, "bad config: {msg}"),
            ConfigError::Invalid { key, msg } => write!(f, "invalid config value {key}: {msg}"),
            ConfigError::LogFile { path, .. } => {
                write!(f, "cannot open log file {} (log.path)", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } | ConfigError::LogFile { source, .. } => Some(source),
            ConfigError::Parse { .. } | ConfigError::Invalid { .. } => None,
        }
    }
}

/// A [`ConfigError::Invalid`] for `key`.
pub(super) fn invalid(key: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        msg: msg.into(),
    }
}
