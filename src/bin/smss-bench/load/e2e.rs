//! The `e2e` load: publish-to-delivery latency, a publisher thread stamping
//! each message's send time and a live subscriber on the calling thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::common::{GRACE, connect, ensure_topic, join, payload, report, spawn};
use super::cpu::CpuMark;
use super::live::{Ev, Progress, sub_event, subscribe_new};
use crate::error::BenchError;
use crate::opts::Opts;
use crate::report::Report;
use crate::wire::{self, Reply};

/// The `e2e` measurement: publish-to-delivery latency with a live subscriber.
pub(super) fn e2e(o: &Opts, topic: &str) -> Result<Report, BenchError> {
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
