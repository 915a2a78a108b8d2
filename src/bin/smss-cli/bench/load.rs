//! One measurement (`pub`, `sub`, `e2e`, `delay`) against a running server.
//!
//! `pub`: the connections are spread over `--threads` client threads (default
//! one per connection), all connected before a barrier. Each thread drives
//! its connections in lockstep: one write of a pre-built window of `pipeline`
//! requests to each, then each one's replies in turn, so no connection has
//! more than `pipeline` requests in flight. `sub`: an untimed fill, then one
//! subscriber drains it, timed. `e2e` and `delay`: a subscriber on the
//! calling thread and a publisher thread. Every loop stops at its count or at
//! `--max-secs`, whichever first. Around each timed part the CPU time of the
//! bench (and of the server, given its PID) is read from `/proc`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::wire::{self, Bean, Conn, Reply};
use super::{BenchError, Mode, Opts, Protocol};

/// Stack of a bench client thread: buffers are on the heap.
const THREAD_STACK_BYTES: usize = 256 << 10;
/// How long a blocking socket call may take before the bench gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeout of subscribers that must also watch the clock.
const POLL: Duration = Duration::from_millis(200);
/// How long a subscriber waits for stragglers once publishing has ended.
const GRACE: Duration = Duration::from_secs(3);
/// Clock ticks per second of the `/proc/<pid>/stat` CPU fields (`getconf
/// CLK_TCK`). The kernel exports them in USER_HZ, which is 100 on every
/// Linux architecture we run on; hardcoded to need no libc call.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// Result of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub mode: &'static str,
    pub protocol: &'static str,
    pub conns: usize,
    /// `pub`: client threads the connections were spread over (0 = not
    /// reported, other modes).
    pub threads: usize,
    /// Messages asked for.
    pub count: u64,
    /// Messages done (published and acknowledged, or received).
    pub done: u64,
    pub size: usize,
    pub pipeline: usize,
    pub mpub: usize,
    pub batch: usize,
    pub secs: f64,
    pub errors: u64,
    pub truncated: bool,
    /// Latency percentiles in µs (per request; per batch for `sub`; publish
    /// to delivery for `e2e`).
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// `delay` only: lateness of delivery after the due time, ms.
    pub lateness_ms: Option<[i64; 3]>,
    /// First error text, if any.
    pub note: String,
    /// CPU seconds (user+system) of the bench process during the timed part;
    /// `None` when `/proc/self/stat` could not be read.
    pub client_cpu_s: Option<f64>,
    /// CPU seconds of the server over the same interval; `None` when its PID
    /// is unknown or its `/proc/<pid>/stat` could not be read.
    pub server_cpu_s: Option<f64>,
}

impl Report {
    pub fn msgs_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.done as f64 / self.secs
        } else {
            0.0
        }
    }
    pub fn mb_per_s(&self) -> f64 {
        self.msgs_per_s() * self.size as f64 / 1e6
    }
    /// CPU µs of the bench per message done.
    pub fn client_us_per_msg(&self) -> Option<f64> {
        self.us_per_msg(self.client_cpu_s)
    }
    /// CPU µs of the server per message done.
    pub fn server_us_per_msg(&self) -> Option<f64> {
        self.us_per_msg(self.server_cpu_s)
    }
    fn us_per_msg(&self, cpu_s: Option<f64>) -> Option<f64> {
        cpu_s
            .filter(|_| self.done > 0)
            .map(|s| s * 1e6 / self.done as f64)
    }

    /// The one `key=value` line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "mode={} protocol={} conns={} count={} done={} size={} pipeline={} mpub={} \
             batch={} secs={:.3} msgs_per_s={:.0} mb_per_s={:.2} p50_us={} p99_us={} \
             p999_us={} errors={} truncated={}",
            self.mode,
            self.protocol,
            self.conns,
            self.count,
            self.done,
            self.size,
            self.pipeline,
            self.mpub,
            self.batch,
            self.secs,
            self.msgs_per_s(),
            self.mb_per_s(),
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.errors,
            u8::from(self.truncated),
        );
        if self.threads > 0 {
            s.push_str(&format!(" threads={}", self.threads));
        }
        for (who, cpu, per_msg) in [
            ("client", self.client_cpu_s, self.client_us_per_msg()),
            ("server", self.server_cpu_s, self.server_us_per_msg()),
        ] {
            if let Some(c) = cpu {
                s.push_str(&format!(" {who}_cpu_s={c:.2}"));
            }
            if let Some(u) = per_msg {
                s.push_str(&format!(" {who}_us_per_msg={u:.1}"));
            }
        }
        if let Some([p50, p99, max]) = self.lateness_ms {
            s.push_str(&format!(
                " lateness_p50_ms={p50} lateness_p99_ms={p99} lateness_max_ms={max}"
            ));
        }
        if !self.note.is_empty() {
            s.push_str(&format!(" note={:?}", self.note));
        }
        s
    }

    fn set_latency(&mut self, mut lat: Vec<u64>) {
        lat.sort_unstable();
        self.p50_us = percentile(&lat, 0.50);
        self.p99_us = percentile(&lat, 0.99);
        self.p999_us = percentile(&lat, 0.999);
    }
}

/// Nearest-rank percentile of sorted values (`p` in (0, 1]); 0 when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A topic name no earlier run used: short, since it is stored per message.
pub fn fresh_topic() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "b{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat`. The
/// comm field (2) is in parentheses and may itself contain spaces and
/// parentheses, so the fields are counted from after the last `)`: there
/// field 3 (state) comes first, utime and stime are fields 14 and 15.
pub(super) fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds used so far by process `pid` (`None` = this process), all
/// threads including exited ones; `None` when unreadable.
fn cpu_s(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    Some(stat_cpu_ticks(&s)? as f64 / CLOCK_TICKS_PER_S)
}

/// CPU times of the bench and the server at the start of a timed part.
struct CpuMark {
    client: Option<f64>,
    server_pid: Option<u32>,
    server: Option<f64>,
}

impl CpuMark {
    fn start(server_pid: Option<u32>) -> CpuMark {
        CpuMark {
            client: cpu_s(None),
            server_pid,
            server: server_pid.and_then(|p| cpu_s(Some(p))),
        }
    }
    /// Stores the CPU used since [`CpuMark::start`] in `r`.
    fn finish(self, r: &mut Report) {
        let since = |then: Option<f64>, now: Option<f64>| Some((now? - then?).max(0.0));
        r.client_cpu_s = since(self.client, cpu_s(None));
        r.server_cpu_s = since(self.server, self.server_pid.and_then(|p| cpu_s(Some(p))));
    }
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, BenchError> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(THREAD_STACK_BYTES)
        .spawn(f)
        .map_err(super::io_err("starting a bench thread"))
}

fn join<T>(h: std::thread::JoinHandle<T>) -> Result<T, BenchError> {
    h.join()
        .map_err(|_| BenchError::Protocol("a bench thread panicked".into()))
}

/// Runs one measurement as `o` describes.
pub fn run_one(o: &Opts) -> Result<Report, BenchError> {
    if let Some(pid) = o.server_pid
        && cpu_s(Some(pid)).is_none()
    {
        return Err(BenchError::Usage(format!(
            "--server-pid {pid}: cannot read /proc/{pid}/stat (no such process?)"
        )));
    }
    let topic = o.topic.clone().unwrap_or_else(fresh_topic);
    match o.mode {
        Mode::Pub => {
            ensure_topic(o, &topic)?;
            pub_load(o, &topic)
        }
        Mode::Sub => sub_drain(o, &topic),
        Mode::E2e => e2e(o, &topic),
        Mode::Delay => delay(o, &topic),
    }
}

fn connect(o: &Opts) -> Result<Conn, BenchError> {
    Conn::connect(&o.addr(), IO_TIMEOUT)
}

/// Creates the smss topic (an existing one is fine); others need nothing.
pub fn ensure_topic(o: &Opts, topic: &str) -> Result<(), BenchError> {
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

/// What one publishing thread does.
struct PubJob {
    window: Arc<Vec<u8>>,
    req_len: usize,
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
            match l.c.send(&window[..w as usize * req_len]) {
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
    out
}

/// The `pub` measurement (the topic must exist).
pub fn pub_load(o: &Opts, topic: &str) -> Result<Report, BenchError> {
    let body = payload(o.size);
    let (req, per_req) = pub_request(o, topic, &body);
    let mut window = Vec::with_capacity(req.len() * o.pipeline);
    for _ in 0..o.pipeline {
        window.extend_from_slice(&req);
    }
    let window = Arc::new(window);
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
    for h in handles {
        let t = join(h)?;
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
    r.set_latency(lat);
    Ok(r)
}

fn report(o: &Opts, conns: usize) -> Report {
    Report {
        mode: o.mode.name(),
        protocol: o.protocol.name(),
        conns,
        count: o.count,
        size: o.size,
        pipeline: o.pipeline,
        mpub: o.mpub,
        batch: o.batch,
        ..Report::default()
    }
}

/// The `sub` measurement: fill `count` messages (untimed), drain them with
/// one subscriber in batches of `batch` (timed).
pub fn sub_drain(o: &Opts, topic: &str) -> Result<Report, BenchError> {
    ensure_topic(o, topic)?;
    let mut fill = o.clone();
    fill.mode = Mode::Pub;
    fill.threads = 0;
    // Pipelined single publishes: the backlog holds exactly `count` messages.
    fill.conns = 4;
    fill.mpub = 0;
    fill.pipeline = 64;
    let filled = pub_load(&fill, topic)?;
    if filled.errors > 0 {
        return Err(BenchError::Server(format!(
            "filling the backlog: {} errors, first: {}",
            filled.errors, filled.note
        )));
    }
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
    c.send(format!("SUB {topic} 0 batch={}\r\n", o.batch).as_bytes())?;
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

/// Subscribes with `SUB <topic> $ batch=<batch>` and waits for `OK`.
fn subscribe_new(o: &Opts, topic: &str) -> Result<Conn, BenchError> {
    let mut c = connect(o)?;
    c.send(format!("SUB {topic} $ batch={}\r\n", o.batch).as_bytes())?;
    match c.smss()? {
        Reply::Ok(..) => {}
        other => return Err(BenchError::Server(format!("SUB {topic}: {other:?}"))),
    }
    c.set_read_timeout(POLL)?;
    Ok(c)
}

/// Subscriber-side event of `e2e` and `delay`.
enum Ev {
    Batch(u64),
    /// A message; the first 8 payload bytes as a little-endian number.
    Msg(u64),
    Alive,
    Fail(String),
}

fn sub_event(b: &[u8]) -> Result<Option<(Ev, usize)>, BenchError> {
    Ok(wire::smss_frame(b)?.map(|(r, n)| {
        let ev = match r {
            Reply::Batch(k) => Ev::Batch(k),
            Reply::Msg { payload, .. } => {
                let p = &b[payload];
                let mut seq = [0u8; 8];
                let k = p.len().min(8);
                seq[..k].copy_from_slice(&p[..k]);
                Ev::Msg(u64::from_le_bytes(seq))
            }
            Reply::Alive => Ev::Alive,
            other => Ev::Fail(format!("{other:?}")),
        };
        (ev, n)
    }))
}

/// Shared state of a publisher thread and the subscriber.
struct Progress {
    published: AtomicU64,
    done: AtomicBool,
    errors: AtomicU64,
}

/// The `e2e` measurement: publish-to-delivery latency with a live subscriber.
pub fn e2e(o: &Opts, topic: &str) -> Result<Report, BenchError> {
    ensure_topic(o, topic)?;
    let n = o.count as usize;
    let mut sub = subscribe_new(o, topic)?;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let prog = Arc::new(Progress {
        published: AtomicU64::new(0),
        done: AtomicBool::new(false),
        errors: AtomicU64::new(0),
    });
    let base = Instant::now();
    let cpu = CpuMark::start(o.server_pid);
    let max = Duration::from_secs_f64(o.max_secs);
    let mut pc = connect(o)?;
    let (size, pipeline) = (o.size.max(8), o.pipeline);
    let mut req = Vec::new();
    wire::smss_pub(&mut req, topic, &payload(size));
    let body_at = req.len() - size - 2;
    let publisher = {
        let (sent_at, prog) = (Arc::clone(&sent_at), Arc::clone(&prog));
        spawn("bench-e2e-pub".into(), move || -> Result<(), BenchError> {
            struct Done(Arc<Progress>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.done.store(true, Ordering::Release);
                }
            }
            let _done = Done(Arc::clone(&prog));
            let mut window = req.repeat(pipeline);
            let mut seq = 0usize;
            while seq < n && base.elapsed() < max {
                let w = pipeline.min(n - seq);
                for i in 0..w {
                    let at = i * req.len() + body_at;
                    window[at..at + 8].copy_from_slice(&((seq + i) as u64).to_le_bytes());
                    let t = base.elapsed().as_nanos() as u64;
                    sent_at[seq + i].store(t, Ordering::Release);
                }
                pc.send(&window[..w * req.len()])?;
                for _ in 0..w {
                    match pc.smss()? {
                        Reply::Ok(..) => {}
                        _ => {
                            prog.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                seq += w;
                prog.published.store(seq as u64, Ordering::Release);
            }
            Ok(())
        })?
    };
    let mut r = report(o, 1);
    let mut lat = Vec::with_capacity(n);
    let mut in_batch = 0u64;
    let mut last_rx = base;
    let mut done_at: Option<Instant> = None;
    loop {
        if r.done >= o.count {
            break;
        }
        if prog.done.load(Ordering::Acquire) {
            let published = prog.published.load(Ordering::Acquire);
            if r.done >= published {
                break;
            }
            let t = *done_at.get_or_insert_with(Instant::now);
            if t.elapsed() > GRACE {
                r.note = format!("{} published messages not delivered", published - r.done);
                break;
            }
        }
        match sub.try_frame(sub_event)? {
            None | Some(Ev::Alive) => {}
            Some(Ev::Batch(k)) => in_batch = k,
            Some(Ev::Msg(seq)) => {
                let now = base.elapsed().as_nanos() as u64;
                last_rx = Instant::now();
                if let Some(t) = sent_at.get(seq as usize) {
                    lat.push(now.saturating_sub(t.load(Ordering::Acquire)) / 1000);
                }
                r.done += 1;
                in_batch = in_batch.saturating_sub(1);
                if in_batch == 0 {
                    sub.send(b"ACK\r\n")?;
                }
            }
            Some(Ev::Fail(e)) => return Err(BenchError::Server(format!("subscriber: {e}"))),
        }
    }
    let published = join(publisher)?;
    if let Err(e) = published {
        r.note = e.to_string();
    }
    r.errors = prog.errors.load(Ordering::Relaxed);
    r.truncated = r.done < o.count;
    r.secs = (last_rx - base).as_secs_f64();
    cpu.finish(&mut r);
    r.set_latency(lat);
    Ok(r)
}

/// The `delay` measurement: DPUB `count` messages all due at one wall-clock
/// second at least `delay_ms` ahead; lateness = delivery ms − due ms.
pub fn delay(o: &Opts, topic: &str) -> Result<Report, BenchError> {
    ensure_topic(o, topic)?;
    let mut sub = subscribe_new(o, topic)?;
    let due_ms = (now_ms() + o.delay_ms as i64 + 999) / 1000 * 1000;
    let prog = Arc::new(Progress {
        published: AtomicU64::new(0),
        done: AtomicBool::new(false),
        errors: AtomicU64::new(0),
    });
    let (n, pipeline, size) = (o.count, o.pipeline, o.size);
    let max = Duration::from_secs_f64(o.max_secs);
    let mut pc = connect(o)?;
    let t = topic.to_string();
    let publisher = {
        let prog = Arc::clone(&prog);
        spawn(
            "bench-delay-pub".into(),
            move || -> Result<u64, BenchError> {
                struct Done(Arc<Progress>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.done.store(true, Ordering::Release);
                    }
                }
                let _done = Done(Arc::clone(&prog));
                let body = payload(size);
                let start = Instant::now();
                let mut window = Vec::new();
                let (mut sent, mut late) = (0u64, 0u64);
                while sent < n && start.elapsed() < max {
                    let w = (pipeline as u64).min(n - sent);
                    window.clear();
                    for _ in 0..w {
                        let d = due_ms - now_ms();
                        if d < 1 {
                            late += 1;
                        }
                        wire::smss_dpub(&mut window, &t, d.max(1) as u64, &body);
                    }
                    pc.send(&window)?;
                    for _ in 0..w {
                        if !matches!(pc.smss()?, Reply::Ok(..)) {
                            prog.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    sent += w;
                    prog.published.store(sent, Ordering::Release);
                }
                Ok(late)
            },
        )?
    };
    let mut r = report(o, 1);
    let mut late_ms = Vec::with_capacity(n as usize);
    let mut in_batch = 0u64;
    let start = Instant::now();
    let cpu = CpuMark::start(o.server_pid);
    let deadline = start + max + Duration::from_millis(o.delay_ms) + Duration::from_secs(1);
    while r.done < o.count {
        if Instant::now() >= deadline {
            r.note = "deadline".into();
            break;
        }
        if prog.done.load(Ordering::Acquire)
            && r.done >= prog.published.load(Ordering::Acquire)
            && now_ms() > due_ms + GRACE.as_millis() as i64
        {
            break;
        }
        match sub.try_frame(sub_event)? {
            None | Some(Ev::Alive) => {}
            Some(Ev::Batch(k)) => in_batch = k,
            Some(Ev::Msg(_)) => {
                late_ms.push(now_ms() - due_ms);
                r.done += 1;
                in_batch = in_batch.saturating_sub(1);
                if in_batch == 0 {
                    sub.send(b"ACK\r\n")?;
                }
            }
            Some(Ev::Fail(e)) => return Err(BenchError::Server(format!("subscriber: {e}"))),
        }
    }
    match join(publisher)? {
        Ok(0) => {}
        Ok(late) => r.note = format!("{late} DPUBs were sent after the due time"),
        Err(e) => r.note = e.to_string(),
    }
    r.errors = prog.errors.load(Ordering::Relaxed);
    r.truncated = r.done < o.count;
    r.secs = start.elapsed().as_secs_f64();
    cpu.finish(&mut r);
    late_ms.sort_unstable();
    r.lateness_ms = Some([
        percentile(&late_ms, 0.5),
        percentile(&late_ms, 0.99),
        late_ms.last().copied().unwrap_or(0),
    ]);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 0.999), 100);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[7u64], 0.5), 7);
        assert_eq!(percentile::<u64>(&[], 0.5), 0);
        assert_eq!(percentile(&[1i64, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile(&[1i64, 2, 3, 4], 0.51), 3);
        assert_eq!(percentile(&[-3i64, -1], 0.01), -3);
    }

    #[test]
    fn report_line_has_the_figures() {
        let mut r = Report {
            mode: "pub",
            protocol: "smss",
            conns: 2,
            count: 10,
            done: 10,
            size: 200,
            pipeline: 1,
            secs: 2.0,
            ..Report::default()
        };
        r.set_latency((1..=1000).collect());
        let l = r.line();
        for kv in [
            "mode=pub",
            "msgs_per_s=5",
            "mb_per_s=0.00",
            "p50_us=500",
            "p99_us=990",
            "p999_us=999",
            "errors=0",
            "truncated=0",
        ] {
            assert!(l.contains(kv), "{kv} missing in {l}");
        }
    }

    #[test]
    fn report_line_has_cpu_figures_when_known() {
        let mut r = Report {
            mode: "pub",
            done: 200_000,
            threads: 16,
            client_cpu_s: Some(1.5),
            ..Report::default()
        };
        let l = r.line();
        for kv in ["threads=16", "client_cpu_s=1.50", "client_us_per_msg=7.5"] {
            assert!(l.contains(kv), "{kv} missing in {l}");
        }
        assert!(!l.contains("server_"), "{l}");
        r.server_cpu_s = Some(0.5);
        let l = r.line();
        assert!(l.contains("server_cpu_s=0.50 server_us_per_msg=2.5"), "{l}");
        // Nothing done: CPU seconds, but no per-message figure.
        r.done = 0;
        let l = r.line();
        assert!(l.contains("client_cpu_s=1.50"), "{l}");
        assert!(!l.contains("us_per_msg"), "{l}");
        assert_eq!(Report::default().client_us_per_msg(), None);
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

    #[test]
    fn proc_stat_cpu_ticks() {
        // Fields 14 and 15 (utime, stime) are 7 and 5 here.
        let plain = "1234 (smss) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 999";
        assert_eq!(stat_cpu_ticks(plain), Some(12));
        // The comm may hold spaces and parentheses, even a ") " lookalike.
        let odd = "77 (a (b) ) S 9 z) S 1 77 77 0 -1 0 0 0 0 0 250 31 0 0 20 0 1 0 5";
        assert_eq!(stat_cpu_ticks(odd), Some(281));
        let spaced = "5 (bench pub 3) R 1 5 5 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5\n";
        assert_eq!(stat_cpu_ticks(spaced), Some(3));
        for bad in [
            "",
            "no paren at all 1 2 3",
            "1 (x) S 1 2 3",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 5 0",
        ] {
            assert_eq!(stat_cpu_ticks(bad), None, "{bad:?}");
        }
        // This process can read its own.
        assert!(cpu_s(None).is_some());
        assert!(cpu_s(Some(std::process::id())).is_some());
    }

    #[test]
    fn topics_are_short_and_fresh() {
        let (a, b) = (fresh_topic(), fresh_topic());
        assert_ne!(a, b);
        assert!(a.len() <= 12, "{a}");
    }
}
