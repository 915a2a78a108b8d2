//! What both suites run and show: the publish and drain rows, each
//! measured against a server the suite started, and the table cells.

use super::procs::{Proc, RssSampler};
use crate::error::BenchError;
use crate::load::run_one;
use crate::opts::{Mode, Opts, Protocol, SuiteOpts};
use crate::report::Report;

/// One table row: a label and its report.
pub(super) struct Row {
    pub(super) label: String,
    pub(super) r: Report,
}

/// A CPU µs/msg figure for a table cell; `-` when unknown.
pub(super) fn us_cell(v: Option<f64>) -> String {
    v.map(|u| format!("{u:.1}")).unwrap_or_else(|| "-".into())
}

/// Runs one measurement against `server` (whose CPU time it reports),
/// echoing its key=value line to stderr.
pub(super) fn measure(server: &Proc, o: &Opts) -> Result<Report, BenchError> {
    let o = Opts {
        server_pid: Some(server.pid()),
        ..o.clone()
    };
    let r = run_one(&o)?;
    eprintln!("{}", r.line());
    Ok(r)
}

/// A publish row: `conns` connections over `threads` client threads (0 =
/// one per connection).
pub(super) fn pub_opts(
    p: Protocol,
    port: u16,
    conns: usize,
    pipeline: usize,
    threads: usize,
    max_secs: f64,
) -> Opts {
    let mut o = Opts::new(Mode::Pub, p, port);
    o.conns = conns;
    o.pipeline = pipeline;
    o.threads = threads;
    o.count = (20_000 * conns as u64 * pipeline as u64).min(400_000);
    o.max_secs = max_secs;
    o
}

pub(super) fn drain_opts(p: Protocol, port: u16, max_secs: f64) -> Opts {
    let mut o = Opts::new(Mode::Sub, p, port);
    o.count = 200_000;
    o.batch = 256;
    o.max_secs = max_secs;
    o
}

/// The publish rows shared by matrix and peers, with the RSS of the server
/// during the 256-connection row: (rows, peak sampled KiB, VmHWM KiB).
pub(super) fn pub_rows(
    server: &Proc,
    p: Protocol,
    conns: &[usize],
    s: &SuiteOpts,
    tag: &str,
) -> Result<(Vec<Row>, u64, u64), BenchError> {
    let mut rows = Vec::new();
    let (mut peak, mut hwm) = (0, 0);
    let (threads, max_secs) = (s.client_threads, s.max_secs);
    for &c in conns {
        let o = pub_opts(p, server.port, c, 1, threads, max_secs);
        let r = if c == 256 {
            let s = RssSampler::start(server.pid())?;
            let r = measure(server, &o);
            peak = s.finish();
            hwm = server.hwm_kb();
            r?
        } else {
            measure(server, &o)?
        };
        rows.push(Row {
            label: format!("{tag} pub C={c}"),
            r,
        });
    }
    let o = pub_opts(p, server.port, 16, 32, threads, max_secs);
    rows.push(Row {
        label: format!("{tag} pub C=16 P=32"),
        r: measure(server, &o)?,
    });
    Ok((rows, peak, hwm))
}

pub(super) fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}
