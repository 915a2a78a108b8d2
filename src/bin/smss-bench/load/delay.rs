//! The `delay` load: DPUBs all due at one wall-clock second, and how late
//! the live subscriber gets them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::common::{GRACE, connect, ensure_topic, join, now_ms, payload, report, spawn};
use super::cpu::CpuMark;
use super::live::{Ev, Progress, sub_event, subscribe_new};
use crate::error::BenchError;
use crate::opts::Opts;
use crate::report::{Report, percentile};
use crate::wire::{self, Reply};

/// The `delay` measurement: DPUB `count` messages all due at one wall-clock
/// second at least `delay_ms` ahead; lateness = delivery ms − due ms.
pub(super) fn delay(o: &Opts, topic: &str) -> Result<Report, BenchError> {
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
