//! The `sub` load: an untimed fill, then one subscriber drains it in
//! batches (smss SUB/ACK, Redis XREAD COUNT, beanstalkd reserve/delete).
//! With `--group`, the smss subscriber is a consumer group: the server
//! commits the group's position durably at each ACK before the next batch.

use std::time::{Duration, Instant};

use super::common::{IO_TIMEOUT, POLL, connect, ensure_topic, report};
use super::cpu::CpuMark;
use super::publish::fill;
use crate::error::BenchError;
use crate::opts::{Opts, Protocol};
use crate::report::Report;
use crate::wire::{self, Bean, Conn, Reply};

/// The `sub` measurement: fill `count` messages (untimed), drain them with
/// one subscriber in batches of `batch` (timed).
pub(super) fn sub_drain(o: &Opts, topic: &str) -> Result<Report, BenchError> {
    ensure_topic(o, topic)?;
    let filled = fill(o, topic, o.count, 4)?;
    let target = filled.done;
    let mut r = report(o, 1);
    r.truncated = filled.truncated;
    let mut c = connect(o)?;
    c.set_read_timeout(POLL)?;
    let deadline = Instant::now() + Duration::from_secs_f64(o.max_secs);
    let mut lat = Vec::with_capacity((target as usize / o.batch) + 1);
    let start = Instant::now();
    let cpu = CpuMark::start(o.server_pid);
    match o.protocol {
        Protocol::Smss => drain_smss(o, topic, &mut c, target, deadline, &mut r, &mut lat)?,
        Protocol::Resp => drain_resp(o, topic, &mut c, target, deadline, &mut r, &mut lat)?,
        Protocol::Beanstalk => drain_bean(o, topic, &mut c, target, deadline, &mut r, &mut lat)?,
    }
    r.secs = start.elapsed().as_secs_f64();
    cpu.finish(&mut r);
    r.set_latency(lat);
    Ok(r)
}

fn drain_smss(
    o: &Opts,
    topic: &str,
    c: &mut Conn,
    target: u64,
    deadline: Instant,
    r: &mut Report,
    lat: &mut Vec<u64>,
) -> Result<(), BenchError> {
    let mut t0 = Instant::now();
    let sub = match &o.group {
        // `-` on a new group: from the oldest message, like `0`.
        Some(g) => format!("SUB {topic} - batch={} group={g}\r\n", o.batch),
        None => format!("SUB {topic} 0 batch={}\r\n", o.batch),
    };
    c.send(sub.as_bytes())?;
    match c.smss()? {
        Reply::Ok(..) => {}
        other => return Err(BenchError::Server(format!("SUB {topic}: {other:?}"))),
    }
    let mut in_batch = 0u64;
    while r.done < target {
        if Instant::now() >= deadline {
            r.truncated = true;
            break;
        }
        let Some(reply) = c.try_frame(wire::smss_frame)? else {
            continue;
        };
        match reply {
            Reply::Batch(n) => in_batch = n,
            Reply::Msg { .. } => {
                r.done += 1;
                in_batch = in_batch.saturating_sub(1);
                if in_batch == 0 {
                    lat.push(t0.elapsed().as_micros() as u64);
                    t0 = Instant::now();
                    c.send(b"ACK\r\n")?;
                }
            }
            Reply::Alive => {}
            other => return Err(BenchError::Server(format!("draining: {other:?}"))),
        }
    }
    Ok(())
}

fn drain_resp(
    o: &Opts,
    topic: &str,
    c: &mut Conn,
    target: u64,
    deadline: Instant,
    r: &mut Report,
    lat: &mut Vec<u64>,
) -> Result<(), BenchError> {
    let count = o.batch.to_string();
    let mut last = b"0-0".to_vec();
    let mut req = Vec::with_capacity(128);
    while r.done < target {
        if Instant::now() >= deadline {
            r.truncated = true;
            break;
        }
        req.clear();
        wire::resp_encode(
            &mut req,
            &[
                b"XREAD",
                b"COUNT",
                count.as_bytes(),
                b"STREAMS",
                topic.as_bytes(),
                &last,
            ],
        );
        let t0 = Instant::now();
        c.send(&req)?;
        let got = loop {
            let f = c.try_frame(|b| {
                Ok(wire::xread_frame(b)?.map(|(x, n)| {
                    if let Some(id) = x.last_id {
                        last.clear();
                        last.extend_from_slice(&b[id]);
                    }
                    (x.entries, n)
                }))
            })?;
            if let Some(n) = f {
                break n;
            }
            if Instant::now() >= deadline + IO_TIMEOUT {
                return Err(BenchError::Protocol("XREAD: no reply".into()));
            }
        };
        lat.push(t0.elapsed().as_micros() as u64);
        if got == 0 {
            break;
        }
        r.done += got as u64;
    }
    Ok(())
}

fn drain_bean(
    o: &Opts,
    topic: &str,
    c: &mut Conn,
    target: u64,
    deadline: Instant,
    r: &mut Report,
    lat: &mut Vec<u64>,
) -> Result<(), BenchError> {
    c.set_read_timeout(IO_TIMEOUT)?;
    c.send(format!("watch {topic}\r\nignore default\r\n").as_bytes())?;
    for _ in 0..2 {
        match c.bean()? {
            Bean::Watching(_) => {}
            other => return Err(BenchError::Server(format!("watch {topic}: {other:?}"))),
        }
    }
    let reserve = b"reserve-with-timeout 0\r\n".repeat(o.batch);
    let mut ids: Vec<u64> = Vec::with_capacity(o.batch);
    let mut req = Vec::with_capacity(reserve.len() + 24 * o.batch);
    loop {
        let more = r.done < target && Instant::now() < deadline;
        if !more && r.done < target {
            r.truncated = true;
        }
        req.clear();
        for id in &ids {
            req.extend_from_slice(format!("delete {id}\r\n").as_bytes());
        }
        if more {
            req.extend_from_slice(&reserve);
        }
        if req.is_empty() {
            break;
        }
        let t0 = Instant::now();
        c.send(&req)?;
        for _ in 0..ids.len() {
            match c.bean()? {
                Bean::Deleted => {}
                other => {
                    r.errors += 1;
                    if r.note.is_empty() {
                        r.note = format!("delete: {other:?}");
                    }
                }
            }
        }
        ids.clear();
        if !more {
            break;
        }
        let mut timed_out = 0;
        for _ in 0..o.batch {
            match c.bean()? {
                Bean::Reserved { id, .. } => ids.push(id),
                Bean::TimedOut => timed_out += 1,
                other => return Err(BenchError::Server(format!("reserve: {other:?}"))),
            }
        }
        lat.push(t0.elapsed().as_micros() as u64);
        r.done += ids.len() as u64;
        if timed_out == o.batch {
            break;
        }
    }
    Ok(())
}
