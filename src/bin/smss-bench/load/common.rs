//! What every load uses: its timeouts, connecting, creating the topic,
//! fresh topic names, payloads, the bench's monotonic clock, bench threads
//! and the empty report.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{BenchError, io_err};
use crate::opts::{Opts, Protocol};
use crate::report::Report;
use crate::wire::{Conn, Reply};

/// Stack of a bench client thread: buffers are on the heap.
const THREAD_STACK_BYTES: usize = 256 << 10;
/// How long a blocking socket call may take before the bench gives up.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeout of subscribers that must also watch the clock.
pub(super) const POLL: Duration = Duration::from_millis(200);
/// How long a subscriber waits for stragglers once publishing has ended.
pub(super) const GRACE: Duration = Duration::from_secs(3);

/// A topic name no earlier run used: short, since it is stored per message.
pub(super) fn fresh_topic() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "b{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Nanoseconds on one monotonic clock shared by every thread of the bench
/// (its zero is the first call), for send stamps that another thread of the
/// same process reads back from a payload.
pub(super) fn mono_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub(super) fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

pub(super) fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, BenchError> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(THREAD_STACK_BYTES)
        .spawn(f)
        .map_err(io_err("starting a bench thread"))
}

pub(super) fn join<T>(h: std::thread::JoinHandle<T>) -> Result<T, BenchError> {
    h.join()
        .map_err(|_| BenchError::Protocol("a bench thread panicked".into()))
}

pub(super) fn connect(o: &Opts) -> Result<Conn, BenchError> {
    match &o.tls_ca {
        None => Conn::connect(&o.addr(), IO_TIMEOUT),
        Some(ca) => Conn::connect_with(&o.addr(), IO_TIMEOUT, Some(&tls_config(ca)?)),
    }
}

#[cfg(feature = "tls")]
fn tls_config(ca: &std::path::Path) -> Result<crate::wire::Tls, BenchError> {
    smss::tls::client_config(ca, None).map_err(BenchError::Usage)
}

#[cfg(not(feature = "tls"))]
fn tls_config(_: &std::path::Path) -> Result<crate::wire::Tls, BenchError> {
    Err(BenchError::Usage(
        "--tls-ca: this smss-bench was built without the `tls` feature".into(),
    ))
}

/// Creates the smss topic (an existing one is fine); others need nothing.
pub(super) fn ensure_topic(o: &Opts, topic: &str) -> Result<(), BenchError> {
    if o.protocol != Protocol::Smss {
        return Ok(());
    }
    let mut c = connect(o)?;
    c.send(format!("CREATE {topic}\r\n").as_bytes())?;
    match c.smss()? {
        Reply::Ok(..) => Ok(()),
        Reply::Err(e) if e.starts_with("ERR EXISTS") => Ok(()),
        other => Err(BenchError::Server(format!("CREATE {topic}: {other:?}"))),
    }
}

pub(super) fn report(o: &Opts, conns: usize) -> Report {
    Report {
        mode: o.mode.name(),
        protocol: o.protocol.name(),
        conns,
        count: o.count,
        size: o.size,
        pipeline: o.pipeline,
        mpub: o.mpub,
        key: o.key,
        batch: o.batch,
        ..Report::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_clock_never_goes_back() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a);
    }

    #[test]
    fn topics_are_short_and_fresh() {
        let (a, b) = (fresh_topic(), fresh_topic());
        assert_ne!(a, b);
        assert!(a.len() <= 12, "{a}");
    }
}
