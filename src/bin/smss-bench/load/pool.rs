//! The `sub --group G --shared` load: an untimed fill, then `--members`
//! connections of one shared consumer group drain it, each waiting
//! `--work-us` per message of a batch before its ACK (simulated work such
//! as I/O, which is what a worker pool parallelises). Timed from the first
//! SUB to the last message; the latency figures are per batch, receive to
//! receive on one member.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::common::{POLL, connect, ensure_topic, join, report, spawn};
use super::cpu::CpuMark;
use super::publish::fill;
use crate::error::BenchError;
use crate::opts::Opts;
use crate::report::Report;
use crate::wire::{self, Reply};

/// The shared drain: fill `count` messages, then `members` threads drain
/// them as one shared group.
pub(super) fn shared_drain(o: &Opts, topic: &str) -> Result<Report, BenchError> {
    ensure_topic(o, topic)?;
    let filled = fill(o, topic, o.count, 4)?;
    let target = filled.done;
    let mut r = report(o, o.members);
    r.truncated = filled.truncated;
    let group = o.group.clone().unwrap_or_else(|| "bench".into());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(o.max_secs);
    let start = Instant::now();
    let cpu = CpuMark::start(o.server_pid);
    let mut hs = Vec::with_capacity(o.members);
    for i in 0..o.members {
        let (o, topic, group, done) = (
            o.clone(),
            topic.to_string(),
            group.clone(),
            Arc::clone(&done),
        );
        hs.push(spawn(format!("member-{i}"), move || {
            member(&o, &topic, &group, &done, target, deadline)
        })?);
    }
    let mut lat = Vec::new();
    for h in hs {
        match join(h)? {
            Ok(l) => lat.extend(l),
            Err(e) => {
                r.errors += 1;
                if r.note.is_empty() {
                    r.note = e.to_string();
                }
            }
        }
    }
    r.secs = start.elapsed().as_secs_f64();
    cpu.finish(&mut r);
    r.done = done.load(Ordering::SeqCst).min(target);
    r.truncated |= r.done < target;
    r.set_latency(lat);
    Ok(r)
}

/// One member: SUB shared, then each batch received, "worked on" and
/// ACKed, until the group has `target` messages or the deadline passes.
fn member(
    o: &Opts,
    topic: &str,
    group: &str,
    done: &AtomicU64,
    target: u64,
    deadline: Instant,
) -> Result<Vec<u64>, BenchError> {
    let mut c = connect(o)?;
    c.set_read_timeout(POLL)?;
    let sub = format!(
        "SUB {topic} - batch={} group={group} mode=shared\r\n",
        o.batch
    );
    c.send(sub.as_bytes())?;
    match c.smss()? {
        Reply::Ok(..) => {}
        other => return Err(BenchError::Server(format!("SUB {topic}: {other:?}"))),
    }
    let mut lat = Vec::new();
    let (mut in_batch, mut n) = (0u64, 0u64);
    let mut t0 = Instant::now();
    while done.load(Ordering::SeqCst) < target && Instant::now() < deadline {
        let Some(reply) = c.try_frame(wire::smss_frame)? else {
            continue;
        };
        match reply {
            Reply::Batch(k) => (in_batch, n) = (k, k),
            Reply::Msg { .. } => {
                in_batch = in_batch.saturating_sub(1);
                if in_batch == 0 {
                    lat.push(t0.elapsed().as_micros() as u64);
                    std::thread::sleep(Duration::from_micros(o.work_us * n));
                    done.fetch_add(n, Ordering::SeqCst);
                    c.send(b"ACK\r\n")?;
                    t0 = Instant::now();
                }
            }
            Reply::Alive => {}
            other => return Err(BenchError::Server(format!("draining: {other:?}"))),
        }
    }
    Ok(lat)
}
