//! The replication visibility load: the `pub` load against a master, every
//! message stamped with its send time, and a live subscriber (`SUB <topic>
//! $`) on one of its slaves measuring publish-to-visible-on-slave latency.
//!
//! The publisher runs on its own thread (the `pub` load's threads under
//! it); the subscriber runs on the calling thread, like `e2e`'s. Both stamp
//! and receive time come from [`mono_ns`], one clock for the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::common::{join, mono_ns, spawn};
use super::live::{Ev, Progress, sub_event, subscribe_new};
use super::publish::pub_load;
use crate::error::BenchError;
use crate::opts::Opts;
use crate::report::Report;

/// How long the subscriber waits, once publishing has ended, for messages
/// still on their way to the slave: longer than `e2e`'s grace, since a slave
/// may lag its master by seconds, and a message that arrives late must count
/// in the percentiles rather than be left out of them.
const GRACE: Duration = Duration::from_secs(15);

/// Sets `done` however the publisher thread ends, so the subscriber stops.
struct Done(Arc<Progress>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
    }
}

/// Publishes `o` (a `pub` load; `o.topic` must exist on the master and
/// already be replicated to the slave) to the master at `o.port` while a
/// subscriber on the slave at `slave_port` receives it. The report is the
/// publish load's (its rate and CPU figures), with the latency percentiles
/// replaced by publish-to-visible-on-slave latency, in µs.
pub fn visible(o: &Opts, slave_port: u16) -> Result<Report, BenchError> {
    let topic = o
        .topic
        .clone()
        .ok_or_else(|| BenchError::Usage("the visibility load needs a topic".into()))?;
    let on_slave = Opts {
        port: slave_port,
        ..o.clone()
    };
    let mut sub = subscribe_new(&on_slave, &topic)?;
    let prog = Arc::new(Progress {
        published: AtomicU64::new(0),
        done: AtomicBool::new(false),
        errors: AtomicU64::new(0),
    });
    let publisher = {
        let (o, topic, prog) = (o.clone(), topic.clone(), Arc::clone(&prog));
        spawn("bench-visible-pub".into(), move || {
            let done = Done(prog);
            let r = pub_load(&o, &topic, true);
            if let Ok(r) = &r {
                done.0.published.store(r.done, Ordering::Release);
            }
            r
        })?
    };
    let mut lat = Vec::with_capacity(o.count.min(1 << 22) as usize);
    let mut seen = 0u64;
    let mut in_batch = 0u64;
    let mut done_at: Option<Instant> = None;
    let mut note = String::new();
    // Bounded: the publisher stops at its count or --max-secs, then this
    // loop waits at most GRACE for the messages still on their way (each
    // read returns within POLL).
    while seen < o.count {
        if prog.done.load(Ordering::Acquire) {
            let published = prog.published.load(Ordering::Acquire);
            if seen >= published {
                break;
            }
            if done_at.get_or_insert_with(Instant::now).elapsed() > GRACE {
                note = format!(
                    "{} published messages not seen on the slave",
                    published - seen
                );
                break;
            }
        }
        match sub.try_frame(sub_event) {
            Ok(None | Some(Ev::Alive)) => {}
            Ok(Some(Ev::Batch(k))) => in_batch = k,
            Ok(Some(Ev::Msg(sent_ns))) => {
                lat.push(mono_ns().saturating_sub(sent_ns) / 1000);
                seen += 1;
                in_batch = in_batch.saturating_sub(1);
                if in_batch == 0 {
                    sub.send(b"ACK\r\n")?;
                }
            }
            Ok(Some(Ev::Fail(e))) => {
                note = format!("slave subscriber: {e}");
                break;
            }
            // Still join the publisher: it is bounded and owns sockets.
            Err(e) => {
                note = format!("slave subscriber: {e}");
                break;
            }
        }
    }
    let mut r = join(publisher)??;
    if !note.is_empty() {
        r.note = if r.note.is_empty() {
            note
        } else {
            format!("{}; {note}", r.note)
        };
    }
    r.mode = "visible";
    r.set_latency(lat);
    Ok(r)
}
