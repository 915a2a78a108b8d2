//! The `takeover` measurement (smss only): how long a consumer group's
//! standby waits once the active subscriber's connection ends with a batch
//! unacknowledged — from the close to the first batch at the standby. That
//! span holds the server seeing the hang-up, the durable count of the failed
//! delivery, the handover in the registry and the batch read and sent.
//!
//! One thread; each round connects a new standby (it gets `STANDBY`),
//! closes the active connection, times the standby's first `BATCH`, then
//! has it ACK once so the group moves on, and makes it the next active one.

use std::time::{Duration, Instant};

use super::common::{connect, ensure_topic, report};
use super::cpu::CpuMark;
use super::publish::fill;
use crate::error::BenchError;
use crate::opts::Opts;
use crate::report::Report;
use crate::wire::{Conn, Reply};

/// Reads replies until a `MSG` (the end of a one-message batch); the
/// instant the `BATCH` line was parsed.
fn until_batch(c: &mut Conn) -> Result<Instant, BenchError> {
    let mut at = None;
    for _ in 0..64 {
        match c.smss()? {
            Reply::Batch(_) => at = Some(Instant::now()),
            Reply::Msg { .. } => {
                return at.ok_or_else(|| BenchError::Protocol("MSG before BATCH".into()));
            }
            Reply::Alive | Reply::Other(_) => {}
            other => {
                return Err(BenchError::Server(format!(
                    "waiting for a batch: {other:?}"
                )));
            }
        }
    }
    Err(BenchError::Protocol("no batch in 64 replies".into()))
}

pub(super) fn takeover(o: &Opts, topic: &str) -> Result<Report, BenchError> {
    ensure_topic(o, topic)?;
    let rounds = o.count;
    fill(o, topic, rounds + 4, 1)?;
    let sub = format!("SUB {topic} - batch=1 group=takeover\r\n");
    let subscribe = |standby: bool| -> Result<Conn, BenchError> {
        let mut c = connect(o)?;
        c.send(sub.as_bytes())?;
        match c.smss()? {
            Reply::Ok(..) => {}
            other => return Err(BenchError::Server(format!("SUB: {other:?}"))),
        }
        if standby {
            match c.smss()? {
                Reply::Other(l) if l == "STANDBY" => {}
                other => return Err(BenchError::Server(format!("expected STANDBY: {other:?}"))),
            }
        }
        Ok(c)
    };
    let mut r = report(o, 2);
    r.batch = 1;
    let mut active = subscribe(false)?;
    until_batch(&mut active)?;
    let deadline = Instant::now() + Duration::from_secs_f64(o.max_secs);
    let mut lat = Vec::with_capacity(rounds as usize);
    let start = Instant::now();
    let cpu = CpuMark::start(o.server_pid);
    while r.done < rounds {
        if Instant::now() >= deadline {
            r.truncated = true;
            break;
        }
        let mut standby = subscribe(true)?;
        let t0 = Instant::now();
        drop(active); // the close: no STOP, the batch unacknowledged
        let got = until_batch(&mut standby)?;
        lat.push(got.duration_since(t0).as_micros() as u64);
        r.done += 1;
        // Consume the redelivered message so the next round holds a new one.
        standby.send(b"ACK\r\n")?;
        until_batch(&mut standby)?;
        active = standby;
    }
    r.secs = start.elapsed().as_secs_f64();
    cpu.finish(&mut r);
    r.set_latency(lat);
    Ok(r)
}
