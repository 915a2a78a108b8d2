//! `bench matrix`'s bridge figures: smss → NATS JetStream through the
//! bridge (`smss::bridge` with its NATS sink, in this process), against a
//! single nats-server with file storage started here on its own port and
//! directory:
//!
//! - the bridge draining a 200k-message backlog (200-byte messages, in 4
//!   topics: a reader each) of an smss with `fsync: always` into the stream
//!   (target ≥ 50k msgs/s);
//! - the CPU each side spends per message during that drain (smss,
//!   nats-server, the bridge), which tells which one is the slower side;
//! - JetStream alone: the same messages published by one connection in
//!   chains of 1,000 (what one client can get from that nats-server), and
//!   the bridge's rate as a share of it (the bridge should never be the
//!   slower side);
//! - end to end: 5,000 messages published one by one to smss while the
//!   bridge runs; latency = the time JetStream stored each one (its
//!   message `time`) minus the time smss stored it (`Smss-Timestamp`, ms).
//!
//! Without nats-server the figures say why they were skipped.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use smss::bridge::nats_sink::{NatsSink, NatsSinkOptions};
use smss::bridge::{Bridge, BridgeOptions};
use smss::client::Client;
use smss::nats::{Conn, JetStream, Options, PubMsg, StreamConfig};

use super::procs::{TempDir, free_port, start_peer, start_smss, write_smss_config};
use crate::error::BenchError;
use crate::opts::{Protocol, SuiteOpts};

const BACKLOG: u64 = 200_000;
/// The backlog is spread over these topics (one reader each).
const TOPICS: [&str; 4] = ["b1", "b2", "b3", "b4"];
const LATENCY_MSGS: u64 = 5_000;
const SIZE: usize = 200;

fn nats_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Server(format!("NATS: {e}"))
}

/// nats-server on PATH or in /usr/sbin (Debian's place for it).
fn nats_bin() -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// `bench bridge`: the figures alone.
pub fn run_alone(s: &SuiteOpts) -> Result<(), BenchError> {
    let bin = super::procs::smss_bin(s)?;
    let tmp = TempDir::new("bridge")?;
    for (k, v) in figures(&bin, &tmp) {
        println!("{k:<58} {v}");
    }
    Ok(())
}

/// The figures (label, value); on failure one figure saying why.
pub(super) fn figures(bin: &Path, tmp: &TempDir) -> Vec<(String, String)> {
    let Some(nats) = nats_bin() else {
        return vec![(
            "bridge → JetStream".into(),
            "skipped: nats-server not installed (apt-get install nats-server)".into(),
        )];
    };
    match run(bin, tmp, &nats) {
        Ok(f) => f,
        Err(e) => vec![("bridge → JetStream".into(), format!("failed: {e}"))],
    }
}

fn js(addr: &str) -> Result<JetStream, BenchError> {
    let mut o = Options::new(&[addr]);
    o.timeout = Duration::from_secs(10);
    Ok(JetStream::new(Conn::connect(&o).map_err(nats_err)?))
}

/// Polls the stream until it holds `n` messages; the time it took.
fn wait_count(j: &mut JetStream, stream: &str, n: u64, since: Instant) -> Result<f64, BenchError> {
    let deadline = since + Duration::from_secs(300);
    loop {
        let held = j
            .stream_info(stream)
            .map_err(nats_err)?
            .map_or(0, |i| i.messages);
        if held >= n {
            return Ok(since.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Server(format!(
                "stream {stream} holds {held} of {n} messages after 300 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(bin: &Path, tmp: &TempDir, nats: &str) -> Result<Vec<(String, String)>, BenchError> {
    let mut out = Vec::new();
    let ndir = tmp.sub("nats")?;
    let port = free_port()?;
    let args: Vec<String> = [
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-js",
        "-sd",
        &ndir.join("js").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let server = start_peer("nats-server", nats, &args, Protocol::Smss, port, &ndir)?;
    let naddr = server.addr();
    let payload = vec![b'x'; SIZE];

    // JetStream alone: one connection, chains of 1,000.
    let mut j = js(&naddr)?;
    j.create_stream(&StreamConfig::new("RAW", &["raw.>"]))
        .map_err(nats_err)?;
    let t0 = Instant::now();
    for chunk in 0..BACKLOG / 1000 {
        let msgs: Vec<PubMsg> = (0..1000)
            .map(|i| PubMsg {
                subject: "raw.t".into(),
                msg_id: format!("raw-{}", chunk * 1000 + i),
                headers: Vec::new(),
                payload: payload.clone(),
            })
            .collect();
        for r in j.publish_chain(&msgs, Duration::from_secs(30)) {
            r.map_err(nats_err)?;
        }
    }
    let alone = BACKLOG as f64 / t0.elapsed().as_secs_f64();

    // The bridge draining a backlog.
    let sdir = tmp.sub("bridge-smss")?;
    let config = write_smss_config(&sdir, "always")?;
    let smss = start_smss(bin, &config, "smss fsync=always (bridge)")?;
    let saddr = smss.addr();
    let mut c = Client::connect(&saddr).map_err(|e| BenchError::Server(e.to_string()))?;
    let cerr = |e: smss::client::ClientError| BenchError::Server(format!("smss: {e}"));
    for t in TOPICS {
        c.create(t, 0).map_err(cerr)?;
    }
    c.create("lat", 0).map_err(cerr)?;
    let refs: Vec<&[u8]> = (0..1000).map(|_| payload.as_slice()).collect();
    for i in 0..BACKLOG / 1000 {
        c.mpublish(TOPICS[i as usize % TOPICS.len()], &refs)
            .map_err(cerr)?;
    }
    let sink = NatsSink::connect(NatsSinkOptions {
        nats: Options::new(&[naddr.as_str()]),
        stream: "SMSS".into(),
        prefix: "smss".into(),
        create: true,
        replicas: 1,
        duplicate_window: Duration::from_secs(120),
        ack_timeout: Duration::from_secs(10),
    })
    .map_err(BenchError::Server)?;
    let stop = Arc::new(AtomicBool::new(false));
    let opts = BridgeOptions {
        smss: vec![saddr.clone()],
        batch: Some(1000),
        ..BridgeOptions::default()
    };
    let cpu = || [Some(smss.pid()), Some(server.pid()), None].map(crate::load::cpu::cpu_s);
    let cpu0 = cpu();
    let t0 = Instant::now();
    let bridge = Bridge::start(opts, Box::new(sink), Arc::clone(&stop))
        .map_err(|e| BenchError::Server(e.to_string()))?;
    let secs = wait_count(&mut j, "SMSS", BACKLOG, t0);
    let cpu1 = cpu();
    let latency = secs.and_then(|secs| {
        let rate = BACKLOG as f64 / secs;
        // Which side works hardest: CPU per message of smss, nats-server
        // and the bridge (this process: the bridge's threads and the poll).
        let us = |i: usize| match (cpu0[i], cpu1[i]) {
            (Some(a), Some(b)) => format!("{:.1}", (b - a) * 1e6 / BACKLOG as f64),
            _ => "?".into(),
        };
        out.push((
            "bridge drain: CPU µs/msg of smss / nats-server / bridge".into(),
            format!("{} / {} / {} (2 cores)", us(0), us(1), us(2)),
        ));
        out.push((
            "bridge: 200k backlog in 4 topics, smss (always) → JetStream".into(),
            format!("{rate:.0} msgs/s (target >= 50000)"),
        ));
        out.push((
            "JetStream alone: 1 connection, chains of 1000".into(),
            format!("{alone:.0} msgs/s; bridge / alone = {:.2}", rate / alone),
        ));
        latency(&mut c, &mut j, &payload)
    });
    stop.store(true, Ordering::Relaxed);
    let _ = bridge.join();
    let (p50, p99, max) = latency?;
    out.push((
        "bridge e2e: smss stored → JetStream stored (5k PUBs, one at a time)".into(),
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (smss times are ms)"),
    ));
    Ok(out)
}

/// Publishes [`LATENCY_MSGS`] one by one to `lat` while the bridge runs,
/// then reads them back from the stream: (p50, p99, max) in ms.
fn latency(
    c: &mut Client,
    j: &mut JetStream,
    payload: &[u8],
) -> Result<(f64, f64, f64), BenchError> {
    let cerr = |e: smss::client::ClientError| BenchError::Server(format!("smss: {e}"));
    let before = j
        .stream_info("SMSS")
        .map_err(nats_err)?
        .map_or(0, |i| i.last_seq);
    for _ in 0..LATENCY_MSGS {
        c.publish("lat", payload).map_err(cerr)?;
    }
    wait_count(j, "SMSS", BACKLOG + LATENCY_MSGS, Instant::now())?;
    let mut lat = Vec::with_capacity(LATENCY_MSGS as usize);
    for seq in before + 1..=before + LATENCY_MSGS {
        let Some(m) = j.get_by_seq("SMSS", seq).map_err(nats_err)? else {
            continue;
        };
        let smss_ms: f64 = m
            .header("Smss-Timestamp")
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| BenchError::Protocol("a message without Smss-Timestamp".into()))?
            as f64;
        let stored_ms = rfc3339_ms(&m.time)
            .ok_or_else(|| BenchError::Protocol(format!("bad stream time {:?}", m.time)))?;
        lat.push((stored_ms - smss_ms).max(0.0));
    }
    if lat.is_empty() {
        return Err(BenchError::Protocol("no latency samples".into()));
    }
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    Ok((at(0.5), at(0.99), at(1.0)))
}

/// `2026-12-06T10:24:37.123456789Z` → Unix ms (with the fraction).
fn rfc3339_ms(t: &str) -> Option<f64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as f64 * 1000.0 + frac * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn stream_times_convert() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339_ms("1970-01-02T00:00:01.5Z"), Some(86_401_500.0));
        // 2026-12-06T10:24:37Z = 1796552677 s.
        let ms = rfc3339_ms("2026-12-06T10:24:37.123456789Z").expect("parses");
        assert!((ms - 1_796_552_677_123.457).abs() < 0.01, "{ms}");
        assert_eq!(rfc3339_ms("garbage"), None);
    }
}
