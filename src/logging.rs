//! Logging set-up: installs the global logger a [`LogConfig`] describes.
//!
//! Runs once on the main thread at start-up, after the config is loaded and before
//! any other thread exists; it touches no channel and no lock besides the `log`
//! crate's global logger.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| ConfigError::LogFile { path, source })?;
        WriteLogger::new(log.level, config, file)
    };

    // Err here means a logger is already installed; keep it (documented above).
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(log.level);
        LOGGER_INSTALLED.store(true, Ordering::Release);
    }
    Ok(())
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
