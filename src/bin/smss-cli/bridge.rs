//! `smss-cli bridge`: runs [`smss::bridge`] into NATS JetStream until
//! SIGTERM or SIGINT. Builds the bridge's options from the command line,
//! the sink through [`make_sink`] (the one place that knows which sink),
//! logs to stderr (journald under systemd), and maps the outcome to the
//! CLI's errors.
//!
//! Runs on the main thread, which waits in [`smss::bridge::run`]; signals
//! only set the stop flag (signal-hook), and the bridge finishes the batch
//! in flight before it returns.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use std::time::Duration;

use smss::bridge::nats_sink::{NatsSink, NatsSinkOptions};
use smss::bridge::{BridgeOptions, Sink};

use crate::args::{BridgeArgs, Global};
use crate::error::{CliError, Result};

/// The sink the bridge writes into: NATS JetStream, from `--nats`,
/// `--stream`, `--create-stream`, `--replicas` and the `--nats-*` options.
/// The one place that knows which sink; a Kafka sink would be chosen here.
fn make_sink(a: &BridgeArgs) -> Result<Box<dyn Sink>> {
    let servers: Vec<&str> = a.nats.iter().map(String::as_str).collect();
    let mut nats = smss::nats::Options::new(&servers);
    nats.name = Some(format!("smss-bridge {}", a.name));
    nats.user = a.nats_user.clone();
    if let Some(f) = &a.nats_password_file {
        nats.pass = Some(first_line(f)?);
    }
    if let Some(f) = &a.nats_token_file {
        nats.token = Some(first_line(f)?);
    }
    nats.tls_ca = a.nats_ca.clone();
    nats.tls_cert = a.nats_cert.clone();
    nats.tls_key = a.nats_cert_key.clone();
    let opts = NatsSinkOptions {
        nats,
        stream: a.stream.clone(),
        prefix: a.prefix.clone(),
        create: a.create_stream,
        replicas: a.replicas.unwrap_or(1),
        duplicate_window: Duration::from_millis(a.dup_window_ms),
        ack_timeout: Duration::from_millis(a.ack_timeout_ms),
    };
    let sink = NatsSink::connect(opts).map_err(CliError::Bridge)?;
    Ok(Box::new(sink))
}

/// The first line of a secret's file, trimmed.
fn first_line(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// The smss address of the global `--host`/`--port`.
fn global_addr(g: &Global) -> String {
    if g.host.contains(':') && !g.host.starts_with('[') {
        format!("[{}]:{}", g.host, g.port)
    } else {
        format!("{}:{}", g.host, g.port)
    }
}

/// The options of the bridge, from the command line.
fn options(g: &Global, a: &BridgeArgs) -> Result<BridgeOptions> {
    let mut o = BridgeOptions {
        smss: if a.smss.is_empty() {
            vec![global_addr(g)]
        } else {
            a.smss.clone()
        },
        token: g.token.clone(),
        topics: a.topics.clone(),
        prefix: a.prefix.clone(),
        name: a.name.clone(),
        batch: a.batch,
        max_deliver: a.max_deliver,
        dlq: a.dlq.clone(),
        metrics_port: a.metrics_port,
        ..BridgeOptions::default()
    };
    if let Some(b) = &a.metrics_bind {
        o.metrics_bind = b.clone();
    }
    if g.timeout_ms > 0 {
        o.timeout = std::time::Duration::from_millis(g.timeout_ms);
    }
    if g.tls || g.ca.is_some() || g.cert.is_some() {
        tls(g, &mut o)?;
    }
    o.validate().map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(o)
}

#[cfg(feature = "tls")]
fn tls(g: &Global, o: &mut BridgeOptions) -> Result<()> {
    o.tls = Some(crate::commands::tls_config(g)?);
    Ok(())
}

#[cfg(not(feature = "tls"))]
fn tls(_: &Global, _: &mut BridgeOptions) -> Result<()> {
    Err(CliError::Usage(
        "this smss-cli was built without TLS (cargo feature `tls`)".into(),
    ))
}

/// `smss-cli bridge …`: runs until SIGTERM/SIGINT.
pub fn run(g: &Global, a: BridgeArgs) -> Result<()> {
    let opts = options(g, &a)?;
    // Log lines go to stderr: journald under systemd.
    let _ = simplelog::WriteLogger::init(
        log::LevelFilter::Info,
        simplelog::Config::default(),
        std::io::stderr(),
    );
    let sink = make_sink(&a)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|source| CliError::Io {
            what: "installing the signal handlers".into(),
            source,
        })?;
    }
    smss::bridge::run(opts, sink, stop).map_err(|e| CliError::Bridge(e.to_string()))
}
