//! The footprint rows of `bench matrix` (and `bench footprint` alone): the
//! server's RSS with many subscribers that ask for large batches of 1 KiB
//! messages — 300 that never read, and 100 that drain the topic and then
//! sit idle (and 3 s after they all hung up). A subscription's memory must
//! not grow with `batch=` or the message size (targets: ≤ 40 MiB and
//! ≤ 15 MiB). Runs on the bench's main thread; every wait is bounded.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::procs::{Proc, StatsConn, TempDir, start_smss, stat_u64, write_smss_config};
use super::rows::mib;
use crate::error::{BenchError, io_err};
use crate::opts::SuiteOpts;
use crate::wire::{Conn, Reply, smss_mpub};

/// Messages in the topic the subscribers read: two full batches of 1000.
const MESSAGES: u64 = 2000;
const PAYLOAD_BYTES: usize = 1024;
const BATCH: u32 = 1000;
const SILENT_SUBS: usize = 300;
const IDLE_SUBS: usize = 100;
/// How long RSS is sampled once the silent subscribers are all running.
const SETTLE: Duration = Duration::from_secs(2);
/// How long after the idle subscribers hang up RSS is read again.
const AFTER_CLOSE: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// `bench footprint`, and the matrix's footprint figures.
pub fn run(s: &SuiteOpts) -> Result<(), BenchError> {
    let bin = super::procs::smss_bin(s)?;
    let tmp = TempDir::new("footprint")?;
    for (k, v) in figures(&bin, &tmp) {
        println!("{k:<58} {v}");
    }
    Ok(())
}

/// The footprint figures as (label, value); a failed row says why.
pub(super) fn figures(bin: &Path, tmp: &TempDir) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let res = (|| -> Result<(), BenchError> {
        let dir = tmp.sub("footprint")?;
        let config = write_smss_config(&dir, "interval")?;
        let server = start_smss(bin, &config, "smss footprint")?;
        fill(&server)?;
        out.push((
            "idle RSS, 2000 msgs of 1 KiB stored".into(),
            mib(server.rss_kb()),
        ));
        out.push(silent(&server)?);
        out.extend(drained(&server)?);
        Ok(())
    })();
    if let Err(e) = res {
        out.push(("footprint rows".into(), format!("failed: {e}")));
    }
    out
}

fn fill(server: &Proc) -> Result<(), BenchError> {
    let mut c = Conn::connect(&server.addr(), IO_TIMEOUT)?;
    c.send(b"CREATE fp\r\n")?;
    expect_ok(&mut c, "CREATE fp")?;
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let mut req = Vec::new();
    for _ in 0..MESSAGES / 100 {
        req.clear();
        smss_mpub(&mut req, "fp", &payload, 100);
        c.send(&req)?;
        expect_ok(&mut c, "MPUB fp")?;
    }
    Ok(())
}

fn expect_ok(c: &mut Conn, what: &str) -> Result<(), BenchError> {
    match c.smss()? {
        Reply::Ok(..) => Ok(()),
        other => Err(BenchError::Server(format!("{what}: {other:?}"))),
    }
}

/// Waits (bounded) until STATS `subscribers` is `n`.
fn wait_subscribers(stats: &mut StatsConn, n: u64) -> Result<(), BenchError> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if stat_u64(&stats.read()?, "subscribers") == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Server(format!(
                "STATS subscribers did not reach {n}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The most RSS seen over `d`, sampled every 50 ms.
fn peak_rss(server: &Proc, d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut max = server.rss_kb();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        max = max.max(server.rss_kb());
    }
    max
}

/// 300 subscribers ask for `batch=1000` and never read.
fn silent(server: &Proc) -> Result<(String, String), BenchError> {
    let mut stats = StatsConn::connect(&server.addr())?;
    let before = server.rss_kb();
    let mut socks = Vec::with_capacity(SILENT_SUBS);
    let sub = format!("SUB fp 0 batch={BATCH} ack=60000\r\n");
    for _ in 0..SILENT_SUBS {
        let mut s = TcpStream::connect(server.addr()).map_err(io_err("connecting"))?;
        s.set_write_timeout(Some(IO_TIMEOUT))
            .and_then(|()| s.write_all(sub.as_bytes()))
            .map_err(io_err("sending SUB"))?;
        socks.push(s);
    }
    wait_subscribers(&mut stats, SILENT_SUBS as u64)?;
    let peak = peak_rss(server, SETTLE);
    let now = server.rss_kb();
    drop(socks);
    wait_subscribers(&mut stats, 0)?;
    Ok((
        format!("RSS, {SILENT_SUBS} subscribers never reading, batch={BATCH} × 1 KiB"),
        format!(
            "{} peak over {} s, {} at the end (before: {}; target ≤ 40 MiB)",
            mib(peak),
            SETTLE.as_secs(),
            mib(now),
            mib(before)
        ),
    ))
}

/// 100 subscribers drain the topic in turns (one batch each per round),
/// then sit idle; then they hang up.
fn drained(server: &Proc) -> Result<Vec<(String, String)>, BenchError> {
    let mut stats = StatsConn::connect(&server.addr())?;
    let mut conns = Vec::with_capacity(IDLE_SUBS);
    let sub = format!("SUB fp 0 batch={BATCH} ack=60000\r\n");
    for _ in 0..IDLE_SUBS {
        let mut c = Conn::connect(&server.addr(), IO_TIMEOUT)?;
        c.send(sub.as_bytes())?;
        expect_ok(&mut c, "SUB fp")?;
        conns.push((c, 0u64));
    }
    let t0 = Instant::now();
    // Each round every subscriber reads one batch and ACKs it; bounded by
    // the message count (every batch holds at least one message).
    for _ in 0..MESSAGES {
        let mut all = true;
        for (c, got) in conns.iter_mut() {
            if *got >= MESSAGES {
                continue;
            }
            all = false;
            *got += read_batch(c)?;
            c.send(b"ACK\r\n")?;
        }
        if all {
            break;
        }
    }
    let drain = t0.elapsed();
    let peak = server.hwm_kb();
    wait_subscribers(&mut stats, IDLE_SUBS as u64)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle = server.rss_kb();
    drop(conns);
    wait_subscribers(&mut stats, 0)?;
    std::thread::sleep(AFTER_CLOSE);
    let closed = server.rss_kb();
    Ok(vec![
        (
            format!("RSS, {IDLE_SUBS} subscribers idle after a drain"),
            format!(
                "{} (each drained {MESSAGES} × 1 KiB at batch={BATCH} in {:.2} s; \
                 VmHWM {}; target ≤ 15 MiB)",
                mib(idle),
                drain.as_secs_f64(),
                mib(peak)
            ),
        ),
        (
            format!("RSS, 3 s after the {IDLE_SUBS} idle subscribers hung up"),
            mib(closed),
        ),
    ])
}

/// Reads one `BATCH n` and its messages (skipping ALIVE); returns n.
fn read_batch(c: &mut Conn) -> Result<u64, BenchError> {
    let n = loop {
        match c.smss()? {
            Reply::Batch(n) => break n,
            Reply::Alive => {}
            other => return Err(BenchError::Protocol(format!("expected BATCH: {other:?}"))),
        }
    };
    for _ in 0..n {
        match c.smss()? {
            Reply::Msg { .. } => {}
            other => return Err(BenchError::Protocol(format!("expected MSG: {other:?}"))),
        }
    }
    Ok(n)
}
