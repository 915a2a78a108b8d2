//! Logging set-up: installs the global logger a [`LogConfig`] describes, and
//! reopens its file on SIGHUP ([`reopen`]) so log rotation works.
//!
//! Installed once on the main thread at start-up, after the config is loaded
//! and before any other thread exists. A log file is written through
//! [`LogFile`]: one mutex around the open file, which the `signals` thread
//! swaps for a newly opened one on SIGHUP (logrotate renames the file, then
//! sends SIGHUP: the next line goes to a new file under the configured name).

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use log::LevelFilter;

use crate::config::{ConfigError, LOG_STDOUT, LogConfig};

static LOGGER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Install the global logger described by `log`: lines carry an RFC 3339 UTC time,
/// the level, the thread name (threads are named `writer`, `conn-<peer>`, …) and,
/// at debug and trace, the module. `path: stdout` logs to standard output (coloured
/// only when stdout is a terminal); any other path is a file opened in append mode
/// and created if missing.
///
/// Only the first successful call installs a logger: a later call (or a call after
/// someone else installed one, e.g. a test harness) returns `Ok(())` and changes
/// nothing. An unopenable log file is [`ConfigError::LogFile`], naming the path.
pub fn init_logging(log: &LogConfig) -> Result<(), ConfigError> {
    use simplelog::{
        ColorChoice, ConfigBuilder, TermLogger, TerminalMode, ThreadLogMode, WriteLogger,
    };

    if LOGGER_INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_time_level(LevelFilter::Error)
        .set_thread_level(LevelFilter::Error)
        .set_thread_mode(ThreadLogMode::Names)
        .build();

    let logger: Box<dyn log::Log> = if log.path == LOG_STDOUT {
        let color = if std::io::stdout().is_terminal() {
            ColorChoice::Auto
        } else {
            ColorChoice::Never
        };
        TermLogger::new(log.level, config, TerminalMode::Stdout, color)
    } else {
        let path = PathBuf::from(&log.path);
        let file = open_log(&path).map_err(|source| ConfigError::LogFile {
            path: path.clone(),
            source,
        })?;
        let shared = Arc::new(LogFile {
            path,
            file: Mutex::new(file),
        });
        if LOG_FILE.set(Arc::clone(&shared)).is_err() {
            return Ok(()); // a logger was installed already
        }
        WriteLogger::new(log.level, config, SharedLogFile(shared))
    };

    // Err here means a logger is already installed; keep it (documented above).
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(log.level);
        LOGGER_INSTALLED.store(true, Ordering::Release);
    }
    Ok(())
}

/// The log file the installed logger writes to, when `log.path` names one.
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// The open log file, swappable under its lock.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

/// What the logger writes through: every line goes to the file open now.
struct SharedLogFile(Arc<LogFile>);

impl Write for SharedLogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0.file).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        lock(&self.0.file).flush()
    }
}

fn lock(m: &Mutex<File>) -> std::sync::MutexGuard<'_, File> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// SIGHUP: opens the configured log file anew (after a rotation renamed
/// it) and writes there from now on. `Ok(None)` when logging goes to
/// stdout; on an error the old file stays in use.
pub fn reopen() -> std::io::Result<Option<PathBuf>> {
    let Some(log) = LOG_FILE.get() else {
        return Ok(None);
    };
    let file = open_log(&log.path)?;
    *lock(&log.file) = file;
    Ok(Some(log.path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_error_names_the_path() {
        let log = LogConfig {
            path: "/nonexistent/smss-test/dir/smss.log".into(),
            ..LogConfig::default()
        };
        // Either the logger is already installed by another test (Ok, nothing done)
        // or opening fails; it must never panic. Only check the error when we get one.
        if let Err(e) = init_logging(&log) {
            assert!(matches!(e, ConfigError::LogFile { .. }));
            assert!(
                e.to_string()
                    .contains("/nonexistent/smss-test/dir/smss.log")
            );
        }
    }

    #[test]
    fn init_logging_twice_does_not_panic() {
        let dir = std::env::temp_dir().join(format!("smss-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let log = LogConfig {
            path: dir.join("smss.log").to_string_lossy().into_owned(),
            sample: 1,
            level: LevelFilter::Info,
        };
        init_logging(&log).expect("first call");
        init_logging(&log).expect("second call is Ok");
        init_logging(&LogConfig::default()).expect("third call is Ok");
        std::fs::remove_dir_all(&dir).ok();
    }
}
