//! The `pub` load: requests pre-built per protocol, connections spread over
//! client threads, each thread driving its connections in lockstep. With
//! stamping on (the replication visibility row), each message's first 8
//! payload bytes carry its send time ([`mono_ns`], little-endian).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::common::{connect, join, mono_ns, payload, report, spawn};
use super::cpu::CpuMark;
use crate::error::BenchError;
use crate::opts::{Mode, Opts, Protocol};
use crate::report::Report;
use crate::wire::{self, Bean, Conn, Reply};

/// Dedup keys handed out (`--key`): unique within the process, so within
/// the run's fresh topic.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// Writes a fresh key (16 hex digits) at `at` of each of the first `w`
/// requests of `window`, requests `req_len` bytes apart.
fn set_keys(window: &mut [u8], req_len: usize, at: usize, w: usize) {
    let first = NEXT_KEY.fetch_add(w as u64, Ordering::Relaxed);
    for i in 0..w {
        let o = i * req_len + at;
        let hex = format!("{:016x}", first + i as u64);
        window[o..o + 16].copy_from_slice(hex.as_bytes());
    }
}

/// One request's bytes, how many messages it carries and where its dedup
/// key goes (`--key`).
fn pub_request_keyed(o: &Opts, topic: &str, body: &[u8]) -> (Vec<u8>, u64, Option<usize>) {
    if o.key && o.protocol == Protocol::Smss && o.mpub == 0 {
        let mut req = Vec::new();
        let at = wire::smss_pub_keyed(&mut req, topic, body);
        return (req, 1, Some(at));
    }
    let (req, n) = pub_request(o, topic, body);
    (req, n, None)
}

/// One request's bytes and how many messages it carries.
fn pub_request(o: &Opts, topic: &str, body: &[u8]) -> (Vec<u8>, u64) {
    let mut req = Vec::new();
    match o.protocol {
        Protocol::Smss if o.mpub > 0 => {
            wire::smss_mpub(&mut req, topic, body, o.mpub);
            return (req, o.mpub as u64);
        }
        Protocol::Smss => wire::smss_pub(&mut req, topic, body),
        Protocol::Resp => {
            wire::resp_encode(&mut req, &[b"XADD", topic.as_bytes(), b"*", b"d", body])
        }
        Protocol::Beanstalk => wire::bean_put(&mut req, body),
    }
    (req, 1)
}

/// Reads one publish reply: `Ok(None)` = success, `Ok(Some(text))` = an
/// error reply (counted), `Err` = the connection is unusable.
fn pub_reply(c: &mut Conn, p: Protocol) -> Result<Option<String>, BenchError> {
    match p {
        Protocol::Smss => match c.smss()? {
            Reply::Ok(..) => Ok(None),
            Reply::Err(e) => Ok(Some(e)),
            other => Err(BenchError::Protocol(format!("unexpected reply {other:?}"))),
        },
        Protocol::Resp => match c.frame(wire::resp_skip)? {
            false => Ok(None),
            true => Ok(Some("RESP error reply".into())),
        },
        Protocol::Beanstalk => match c.bean()? {
            Bean::Inserted(_) => Ok(None),
            other => Ok(Some(format!("{other:?}"))),
        },
    }
}

/// Opens a publishing connection (beanstalkd: `use <tube>`).
fn pub_conn(o: &Opts, topic: &str) -> Result<Conn, BenchError> {
    let mut c = connect(o)?;
    if o.protocol == Protocol::Beanstalk {
        c.send(format!("use {topic}\r\n").as_bytes())?;
        match c.bean()? {
            Bean::Using => {}
            other => return Err(BenchError::Server(format!("use {topic}: {other:?}"))),
        }
    }
    Ok(c)
}

#[derive(Default)]
struct PubOut {
    /// The thread's connections, open until the server's context switches
    /// are read (its connection threads end when they close).
    lanes: Vec<Lane>,
    ok_reqs: u64,
    errors: u64,
    truncated: bool,
    lat: Vec<u64>,
    note: String,
}

/// Share `i` of `total` split into `parts` shares that differ by at most
/// one; the first `total % parts` shares get the extra one.
fn share(total: u64, parts: u64, i: u64) -> u64 {
    total / parts + u64::from(i < total % parts)
}

/// Requests per connection, grouped by client thread: `total` requests over
/// `conns` connections, the connections over `threads` threads (0 = one per
/// connection; clamped to `conns`). Connection `k` (counting across threads
/// in order) gets share `k` of the requests, as with one thread each.
fn plan(total: u64, conns: usize, threads: usize) -> Vec<Vec<u64>> {
    let conns = conns.max(1) as u64;
    let threads = if threads == 0 {
        conns
    } else {
        (threads as u64).min(conns)
    };
    let mut k = 0;
    (0..threads)
        .map(|t| {
            (0..share(conns, threads, t))
                .map(|_| {
                    k += 1;
                    share(total, conns, k - 1)
                })
                .collect()
        })
        .collect()
}

/// Where the send stamp goes in each request of a window: the payload's
/// start, `size` bytes + CRLF before the request's end. `None` when the
/// request is not one message of at least 8 bytes (MPUB, short payloads).
fn stamp_offset(req_len: usize, size: usize, per_req: u64) -> Option<usize> {
    (per_req == 1 && size >= 8 && req_len >= size + 2).then(|| req_len - size - 2)
}

/// Writes `t` (little-endian) at `at` of each of the first `w` requests
/// of `window`, requests `req_len` bytes apart.
fn stamp(window: &mut [u8], req_len: usize, at: usize, w: usize, t: u64) {
    for i in 0..w {
        let o = i * req_len + at;
        window[o..o + 8].copy_from_slice(&t.to_le_bytes());
    }
}

/// What one publishing thread does.
struct PubJob {
    window: Arc<Vec<u8>>,
    req_len: usize,
    /// Stamp offset in each request; `None` = the window is sent as built.
    stamp_at: Option<usize>,
    /// Dedup key offset in each request (`--key`).
    key_at: Option<usize>,
    proto: Protocol,
    pipeline: usize,
    max: Duration,
    barrier: Arc<Barrier>,
}

/// One connection of a publishing thread and its requests still to send
/// (0 once done or broken).
struct Lane {
    c: Conn,
    left: u64,
}

/// Drives `lanes` in lockstep: each round writes every unfinished lane's
/// window, then reads each one's replies in turn. Blocking sockets suffice,
/// as with one thread per connection: the replies to one window (at most
/// `pipeline` short lines) fit in the socket buffers, so a server never
/// blocks on a lane whose replies are read later in the round.
fn pub_thread(mut lanes: Vec<Lane>, job: PubJob) -> PubOut {
    let PubJob {
        window,
        req_len,
        stamp_at,
        key_at,
        proto,
        pipeline,
        max,
        barrier,
    } = job;
    let reqs: u64 = lanes.iter().map(|l| l.left).sum();
    let mut out = PubOut {
        lat: Vec::with_capacity(reqs.min(1 << 22) as usize),
        ..PubOut::default()
    };
    // (lane, when its window was written, requests in it) of this round.
    let mut sent: Vec<(usize, Instant, u64)> = Vec::with_capacity(lanes.len());
    // A stamping thread sends from its own copy, stamped before each write.
    let mut own = stamp_at.or(key_at).map(|_| window.to_vec());
    barrier.wait();
    let deadline = Instant::now() + max;
    while lanes.iter().any(|l| l.left > 0) {
        if Instant::now() >= deadline {
            out.truncated = true;
            break;
        }
        sent.clear();
        for (i, l) in lanes.iter_mut().enumerate() {
            if l.left == 0 {
                continue;
            }
            let w = (pipeline as u64).min(l.left);
            let t0 = Instant::now();
            let bytes = match own.as_mut() {
                Some(buf) => {
                    if let Some(at) = key_at {
                        set_keys(buf, req_len, at, w as usize);
                    }
                    if let Some(at) = stamp_at {
                        stamp(buf, req_len, at, w as usize, mono_ns());
                    }
                    &buf[..]
                }
                None => &window[..],
            };
            match l.c.send(&bytes[..w as usize * req_len]) {
                Ok(()) => sent.push((i, t0, w)),
                Err(e) => {
                    out.errors += w;
                    out.note = e.to_string();
                    l.left = 0;
                }
            }
        }
        'lanes: for &(i, t0, w) in &sent {
            let l = &mut lanes[i];
            for k in 0..w {
                match pub_reply(&mut l.c, proto) {
                    Ok(None) => {
                        out.ok_reqs += 1;
                        out.lat.push(t0.elapsed().as_micros() as u64);
                    }
                    Ok(Some(e)) => {
                        out.errors += 1;
                        if out.note.is_empty() {
                            out.note = e;
                        }
                    }
                    Err(e) => {
                        // The connection is unusable: its window's unread
                        // replies are errors, its remaining requests unsent.
                        out.errors += w - k;
                        out.note = e.to_string();
                        l.left = 0;
                        continue 'lanes;
                    }
                }
            }
            l.left -= w;
        }
    }
    out.lanes = lanes;
    out
}

/// An untimed backlog of `count` messages of `o.size` bytes for the
/// drain measurements: pipelined single publishes on `conns` connections,
/// so it holds exactly `count` messages. Any refused publish is an error.
pub(super) fn fill(o: &Opts, topic: &str, count: u64, conns: usize) -> Result<Report, BenchError> {
    let mut f = o.clone();
    f.mode = Mode::Pub;
    f.threads = 0;
    f.conns = conns;
    f.mpub = 0;
    f.pipeline = 64;
    f.count = count;
    let filled = pub_load(&f, topic, false)?;
    if filled.errors > 0 {
        return Err(BenchError::Server(format!(
            "filling the backlog: {} errors, first: {}",
            filled.errors, filled.note
        )));
    }
    Ok(filled)
}

/// The `pub` measurement (the topic must exist); `stamped`: each message
/// carries its send time (see the module doc), when its request allows it.
pub(super) fn pub_load(o: &Opts, topic: &str, stamped: bool) -> Result<Report, BenchError> {
    let body = payload(o.size);
    let (req, per_req, key_at) = pub_request_keyed(o, topic, &body);
    let mut window = Vec::with_capacity(req.len() * o.pipeline);
    for _ in 0..o.pipeline {
        window.extend_from_slice(&req);
    }
    let window = Arc::new(window);
    let stamp_at = stamped
        .then(|| stamp_offset(req.len(), o.size, per_req))
        .flatten();
    let total_reqs = o.count.div_ceil(per_req);
    let conns = (o.conns as u64).min(total_reqs).max(1) as usize;
    let plan = plan(total_reqs, conns, o.threads);
    let mut groups = Vec::with_capacity(plan.len());
    for reqs in &plan {
        let mut lanes = Vec::with_capacity(reqs.len());
        for &left in reqs {
            lanes.push(Lane {
                c: pub_conn(o, topic)?,
                left,
            });
        }
        groups.push(lanes);
    }
    let barrier = Arc::new(Barrier::new(groups.len() + 1));
    let max = Duration::from_secs_f64(o.max_secs);
    let mut handles = Vec::with_capacity(groups.len());
    for (i, lanes) in groups.into_iter().enumerate() {
        let job = PubJob {
            window: Arc::clone(&window),
            req_len: req.len(),
            stamp_at,
            key_at,
            proto: o.protocol,
            pipeline: o.pipeline,
            max,
            barrier: Arc::clone(&barrier),
        };
        handles.push(spawn(format!("bench-pub-{i}"), move || {
            pub_thread(lanes, job)
        })?);
    }
    let mut r = report(o, conns);
    r.threads = handles.len();
    barrier.wait();
    let start = Instant::now();
    let cpu = CpuMark::start(o.server_pid);
    let mut lat = Vec::new();
    let mut open = Vec::new();
    for h in handles {
        let mut t = join(h)?;
        open.append(&mut t.lanes);
        r.done += t.ok_reqs * per_req;
        r.errors += t.errors;
        r.truncated |= t.truncated;
        if r.note.is_empty() {
            r.note = t.note;
        }
        lat.extend_from_slice(&t.lat);
    }
    r.secs = start.elapsed().as_secs_f64();
    cpu.finish(&mut r);
    drop(open);
    r.set_latency(lat);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_land_on_each_payload_start() {
        let body = payload(12);
        let mut req = Vec::new();
        wire::smss_pub(&mut req, "t", &body);
        let at = stamp_offset(req.len(), body.len(), 1).expect("a PUB can be stamped");
        let mut window = req.repeat(3);
        stamp(&mut window, req.len(), at, 2, 0x0102_0304_0506_0708);
        let reqs: Vec<&[u8]> = window.chunks(req.len()).collect();
        for r in &reqs[..2] {
            assert!(r.starts_with(b"PUB t 12\r\n"), "{r:?}");
            assert_eq!(&r[at..at + 8], &0x0102_0304_0506_0708u64.to_le_bytes());
            assert_eq!(&r[at + 8..], b"ijkl\r\n");
        }
        // The third request was not in the window written: untouched.
        assert_eq!(reqs[2], &req[..]);
        // MPUB, payloads under 8 bytes: not stamped.
        assert_eq!(stamp_offset(req.len(), 12, 32), None);
        assert_eq!(stamp_offset(20, 7, 1), None);
        assert_eq!(stamp_offset(5, 8, 1), None);
    }

    #[test]
    fn shares_differ_by_at_most_one() {
        for (total, parts) in [(10, 3), (3, 10), (0, 4), (7, 7), (1_000_003, 256)] {
            let v: Vec<u64> = (0..parts).map(|i| share(total, parts, i)).collect();
            assert_eq!(v.iter().sum::<u64>(), total, "{total}/{parts}");
            let (lo, hi) = (v.iter().min(), v.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{v:?}");
            // The extra ones go to the first shares.
            assert!(v.windows(2).all(|w| w[0] >= w[1]), "{v:?}");
        }
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
    }

    #[test]
    fn plan_spreads_connections_and_requests() {
        for (total, conns, threads, want_threads) in [
            (200_000, 256, 16, 16),
            (200_000, 256, 256, 256),
            (200_000, 256, 0, 256),
            (200_001, 256, 7, 7),
            (100, 16, 4, 4),
            (5, 3, 10, 3),
            (1, 1, 1, 1),
            (7, 10, 3, 3),
        ] {
            let p = plan(total, conns, threads);
            let tag = format!("total={total} conns={conns} threads={threads}");
            assert_eq!(p.len(), want_threads, "{tag}");
            // Connections over threads: exact total, at most one extra.
            let per_thread: Vec<usize> = p.iter().map(Vec::len).collect();
            assert_eq!(per_thread.iter().sum::<usize>(), conns, "{tag}");
            let (lo, hi) = (per_thread.iter().min(), per_thread.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{tag}");
            assert!(per_thread.iter().all(|&n| n >= 1), "{tag}");
            // Requests over connections: exact total, at most one extra,
            // in the same order as with one thread per connection.
            let reqs: Vec<u64> = p.concat();
            assert_eq!(reqs.iter().sum::<u64>(), total, "{tag}");
            let want: Vec<u64> = (0..conns as u64)
                .map(|k| total / conns as u64 + u64::from(k < total % conns as u64))
                .collect();
            assert_eq!(reqs, want, "{tag}");
        }
        assert_eq!(plan(10, 4, 2), vec![vec![3, 3], vec![2, 2]]);
        assert_eq!(plan(10, 5, 2), vec![vec![2, 2, 2], vec![2, 2]]);
    }
}
