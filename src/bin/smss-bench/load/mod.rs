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
//!
//! This file only dispatches on the mode, to [`publish`] (`pub`), [`drain`]
//! (`sub`), [`pool`] (`sub --shared`: a shared group's members), [`e2e`], [`delay`] and [`takeover`] (a consumer group's
//! standby taking over); [`common`] holds what they all use,
//! [`cpu`] reads CPU times from `/proc`, [`live`] is the live subscriber of
//! `e2e`, `delay` and [`visible`]. [`visible`] (publish to a master,
//! subscribe on its slave) is no mode of its own: only `bench matrix`'s
//! replication rows run it, so it is re-exported here with [`cpu_s`].

mod common;
pub mod cpu;
mod delay;
mod drain;
mod e2e;
mod live;
mod pool;
mod publish;
mod takeover;
mod visible;

use super::error::BenchError;
use super::opts::{Mode, Opts};
use super::report::Report;
use common::{ensure_topic, fresh_topic};
pub use cpu::cpu_s;
pub use visible::visible;

/// Runs one measurement as `o` describes.
pub fn run_one(o: &Opts) -> Result<Report, BenchError> {
    if let Some(pid) = o.server_pid
        && cpu::cpu_s(Some(pid)).is_none()
    {
        return Err(BenchError::Usage(format!(
            "--server-pid {pid}: cannot read /proc/{pid}/stat (no such process?)"
        )));
    }
    let topic = o.topic.clone().unwrap_or_else(fresh_topic);
    match o.mode {
        Mode::Pub => {
            ensure_topic(o, &topic)?;
            publish::pub_load(o, &topic, false)
        }
        Mode::Sub if o.shared => pool::shared_drain(o, &topic),
        Mode::Sub => drain::sub_drain(o, &topic),
        Mode::E2e => e2e::e2e(o, &topic),
        Mode::Delay => delay::delay(o, &topic),
        Mode::Takeover => takeover::takeover(o, &topic),
    }
}
