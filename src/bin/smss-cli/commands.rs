//! The network commands: checking their arguments, connecting with the
//! global options, running one command through [`smss::client::Client`]
//! and printing its result.

use std::io::{self, BufRead, Read, Write};
use std::time::Duration;

use smss::client::{Client, ClientError, SubEvent, SubOptions, check};

use crate::args::{Command, Global};
use crate::dump;
use crate::error::{CliError, Result, stdout_err, usage};
use crate::json;

/// Checks every argument with the client's rules (the server's) before
/// anything connects: a bad one is a usage error naming it.
pub fn check(g: &Global, cmd: &Command) -> Result<()> {
    let (name, r) = match cmd {
        Command::Create { topic, life_ms } => (
            "create",
            check::topic(topic).and_then(|()| check::life_ms(*life_ms)),
        ),
        Command::Delete { topic } => ("delete", check::topic(topic)),
        Command::Info { topic } => ("info", check::topic(topic)),
        Command::Groups { topic } => ("groups", check::topic(topic)),
        Command::GroupDel { topic, group } => (
            "groupdel",
            check::topic(topic).and_then(|()| check::group(group)),
        ),
        Command::Pub {
            topic,
            headers,
            delay_ms,
            key,
            ..
        } => (
            "pub",
            check::topic(topic)
                .and_then(|()| check::headers(&pairs(headers)))
                .and_then(|()| delay_ms.map_or(Ok(()), check::delay_ms))
                .and_then(|()| key.as_deref().map_or(Ok(()), check::dedup_key)),
        ),
        Command::PubLines { topic, headers, .. } => (
            "pub",
            check::topic(topic).and_then(|()| check::headers(&pairs(headers))),
        ),
        Command::Sub {
            topic, from, opts, ..
        } => (
            "sub",
            check::topic(topic).and_then(|()| check::subscription(from, opts)),
        ),
        Command::List
        | Command::Health(_)
        | Command::Backup { .. }
        | Command::Stats
        | Command::Ping
        | Command::Slaves
        | Command::Promote
        | Command::Dump { .. }
        | Command::Bridge(_) => ("", Ok(())),
    };
    let r = r.and_then(|()| g.token.as_deref().map_or(Ok(()), check::token));
    match r {
        Err(ClientError::BadArgument(m)) if name.is_empty() => Err(usage(m)),
        Err(ClientError::BadArgument(m)) => Err(usage(format!("{name}: {m}"))),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}

fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `--tls`: the server is verified against `--ca` only (this tool runs
/// offline and trusts no system roots).
#[cfg(feature = "tls")]
fn connect_tls(g: &Global, addr: &str, timeout: Duration) -> Result<Client> {
    Ok(Client::connect_tls_with(addr, tls_config(g)?, timeout)?)
}

/// The TLS client configuration of `--tls --ca [--cert --cert-key]`.
#[cfg(feature = "tls")]
pub fn tls_config(g: &Global) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    let Some(ca) = &g.ca else {
        return Err(CliError::Usage(
            "--tls needs --ca FILE: the CA certificate that signed the server's".into(),
        ));
    };
    let identity = match (&g.cert, &g.key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => return Err(CliError::Usage("--cert and --cert-key go together".into())),
    };
    smss::tls::client_config(ca, identity).map_err(CliError::Usage)
}

#[cfg(not(feature = "tls"))]
fn connect_tls(_: &Global, _: &str, _: Duration) -> Result<Client> {
    Err(CliError::Usage(
        "this smss-cli was built without TLS (cargo feature `tls`)".into(),
    ))
}

pub fn connect(g: &Global) -> Result<Client> {
    let addr = if g.host.contains(':') && !g.host.starts_with('[') {
        format!("[{}]:{}", g.host, g.port)
    } else {
        format!("{}:{}", g.host, g.port)
    };
    let timeout = match g.timeout_ms {
        0 => Duration::from_secs(30),
        ms => Duration::from_millis(ms),
    };
    let mut c = if g.tls || g.ca.is_some() || g.cert.is_some() {
        connect_tls(g, &addr, timeout)?
    } else {
        Client::connect_timeout(&addr, timeout)?
    };
    if g.timeout_ms == 0 {
        c.set_timeout(None)?;
    }
    if let Some(t) = &g.token {
        c.auth(t)?;
    }
    Ok(c)
}

pub fn execute(c: &mut Client, cmd: Command, json: bool) -> Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match cmd {
        Command::Create { topic, life_ms } => {
            let id = c.create(&topic, life_ms)?;
            writeln!(out, "{id}").map_err(stdout_err)?;
        }
        Command::Delete { topic } => {
            let id = c.delete(&topic)?;
            writeln!(out, "{id}").map_err(stdout_err)?;
        }
        Command::Pub {
            topic,
            payload,
            headers,
            delay_ms,
            key,
        } => {
            let payload = match payload {
                Some(p) => p,
                None => {
                    let mut buf = Vec::new();
                    io::stdin()
                        .lock()
                        .read_to_end(&mut buf)
                        .map_err(|e| CliError::Io {
                            what: "reading the payload from stdin".to_string(),
                            source: e,
                        })?;
                    buf
                }
            };
            let h = pairs(&headers);
            let (id, dup) = match (delay_ms, key.as_deref()) {
                (Some(d), Some(k)) => {
                    let r = c.dpublish_with_key(&topic, d, k, &h, &payload)?;
                    (r.id, r.dup)
                }
                (None, Some(k)) => {
                    let r = c.publish_with_key(&topic, k, &h, &payload)?;
                    (r.id, r.dup)
                }
                (Some(d), None) => (c.dpublish_with_headers(&topic, d, &h, &payload)?, false),
                (None, None) => (c.publish_with_headers(&topic, &h, &payload)?, false),
            };
            let flag = if dup { " dup" } else { "" };
            writeln!(out, "{id}{flag}").map_err(stdout_err)?;
        }
        Command::PubLines {
            topic,
            headers,
            batch,
        } => {
            let stdin = io::stdin();
            let ids = publish_lines(c, &topic, &pairs(&headers), batch, stdin.lock())?;
            match ids {
                Some((first, last)) => writeln!(out, "{first} {last}").map_err(stdout_err)?,
                None => eprintln!("pub: no lines on stdin; nothing was published"),
            }
        }
        Command::Sub {
            topic,
            from,
            count,
            opts,
            raw,
        } => return subscribe(c, &mut out, &topic, &from, count, &opts, raw),
        Command::List if json => {
            writeln!(out, "{}", json::topics(&c.list()?)).map_err(stdout_err)?
        }
        Command::List => {
            let topics = c.list()?;
            print_topics(&mut out, &topics).map_err(stdout_err)?;
        }
        Command::Info { topic } if json => {
            writeln!(out, "{}", json::topic(&c.info(&topic)?)).map_err(stdout_err)?
        }
        Command::Info { topic } => {
            let t = c.info(&topic)?;
            print_topics(&mut out, &[t]).map_err(stdout_err)?;
        }
        Command::Groups { topic } if json => {
            writeln!(out, "{}", json::groups(&c.groups(&topic)?)).map_err(stdout_err)?
        }
        Command::Groups { topic } => {
            let groups = c.groups(&topic)?;
            writeln!(out, "name committed_id active standbys lag").map_err(stdout_err)?;
            for g in groups {
                write!(
                    out,
                    "{} {} {} {} {}",
                    g.name,
                    g.committed_id,
                    u8::from(g.active),
                    g.standby_count,
                    g.lag
                )
                .map_err(stdout_err)?;
                if let Some((members, pending)) = g.shared {
                    // A shared group with members: its mode, members, pending.
                    write!(out, " shared {members} {pending}").map_err(stdout_err)?;
                }
                writeln!(out).map_err(stdout_err)?;
            }
        }
        Command::GroupDel { topic, group } => {
            let id = c.groupdel(&topic, &group)?;
            writeln!(out, "{id}").map_err(stdout_err)?;
        }
        Command::Stats if json => {
            writeln!(out, "{}", json::stats(&c.stats()?)).map_err(stdout_err)?
        }
        Command::Stats => {
            for (k, v) in c.stats()? {
                writeln!(out, "{k} {v}").map_err(stdout_err)?;
            }
        }
        Command::Ping => {
            c.ping()?;
            writeln!(out, "PONG").map_err(stdout_err)?;
        }
        Command::Slaves if json => {
            writeln!(out, "{}", json::slaves(&c.slaves()?)).map_err(stdout_err)?
        }
        Command::Slaves => {
            let slaves = c.slaves()?;
            print_slaves(&mut out, &slaves).map_err(stdout_err)?;
        }
        // main runs these: health for its own exit statuses, backup with
        // a connection of its own.
        Command::Health(_) | Command::Backup { .. } | Command::Bridge(_) => {}
        Command::Promote => {
            let id = c.promote()?;
            writeln!(out, "{id}").map_err(stdout_err)?;
        }
        Command::Dump { path } => return dump::dump(&path),
    }
    out.flush().map_err(stdout_err)
}

fn print_topics(out: &mut impl Write, topics: &[smss::client::TopicInfo]) -> io::Result<()> {
    writeln!(out, "name created_ms expires_ms messages first_id last_id")?;
    for t in topics {
        writeln!(
            out,
            "{} {} {} {} {} {}",
            t.name, t.created_ms, t.expires_ms, t.messages, t.first_id, t.last_id
        )?;
    }
    Ok(())
}

fn print_slaves(out: &mut impl Write, slaves: &[smss::client::SlaveInfo]) -> io::Result<()> {
    writeln!(out, "addr acked_event_id lag_events lag_ms state")?;
    for s in slaves {
        writeln!(
            out,
            "{} {} {} {} {}",
            s.addr, s.acked_event_id, s.lag_events, s.lag_ms, s.state
        )?;
    }
    Ok(())
}

/// Prints messages until `count` is reached or the subscription ends.
///
/// Each batch is printed, stdout flushed, then ACKed. When `count` ends in
/// the middle of a batch the batch is not ACKed (with a group, its position
/// is therefore not committed past it and those messages are delivered
/// again); when it ends exactly at a batch's end the batch is ACKed first.
fn subscribe(
    c: &mut Client,
    out: &mut impl Write,
    topic: &str,
    from: &str,
    count: Option<u64>,
    opts: &SubOptions,
    raw: bool,
) -> Result<()> {
    c.subscribe(topic, from, opts)?;
    watch_stdout_closing();
    let mut seen: u64 = 0;
    loop {
        match c.next_event()? {
            SubEvent::Batch(msgs) => {
                let left = count.map_or(u64::MAX, |n| n - seen);
                let take = msgs.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                for m in &msgs[..take] {
                    print_message(out, m, raw).map_err(stdout_err)?;
                }
                out.flush().map_err(stdout_err)?;
                seen += take as u64;
                if count == Some(seen) {
                    if take == msgs.len() {
                        c.ack()?;
                    }
                    c.stop()?;
                    return Ok(());
                }
                c.ack()?;
            }
            SubEvent::Alive => {}
            SubEvent::Standby => {
                let g = opts.group.as_deref().unwrap_or_default();
                eprintln!(
                    "standby: another subscriber of group {g} is active; waiting to take over"
                );
            }
            SubEvent::End(reason) => {
                out.flush().map_err(stdout_err)?;
                eprintln!("end: {reason}");
                return Ok(());
            }
        }
    }
}

/// `sub | head -2`: a subscription may wait for minutes with nothing to
/// print, so it would only notice the closed pipe at its next message. A
/// small thread polls stdout instead and ends the process (status 0, as
/// for a broken pipe) once nobody reads it any more.
fn watch_stdout_closing() {
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .stack_size(64 << 10)
        .spawn(|| {
            loop {
                let mut fd = libc::pollfd {
                    fd: 1,
                    events: 0,
                    revents: 0,
                };
                // SAFETY: one pollfd that lives on this stack; poll reads
                // and writes only it.
                let n = unsafe { libc::poll(&mut fd, 1, 200) };
                if n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                    std::process::exit(0);
                }
                if n < 0 {
                    return; // poll itself failed: the next write will tell
                }
            }
        });
    // Without the watcher, the closed pipe is still noticed at the next write.
    drop(spawned);
}

fn print_message(out: &mut impl Write, m: &smss::client::Delivered, raw: bool) -> io::Result<()> {
    if raw {
        out.write_all(&m.payload)?;
        return out.write_all(b"\n");
    }
    let mut line = format!("{} {} ", m.event_id, m.timestamp_ms).into_bytes();
    for (k, v) in &m.headers {
        line.extend_from_slice(format!("{k}={v} ").as_bytes());
    }
    escape_payload(&m.payload, &mut line);
    line.push(b'\n');
    out.write_all(&line)
}

/// Printable ASCII as it is; `\n` `\r` `\t` `\\` escaped as in C; any other
/// byte as `\xNN`. So a payload is always one line and can be told apart
/// byte for byte.
fn escape_payload(payload: &[u8], out: &mut Vec<u8>) {
    for &b in payload {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
}

/// `pub --lines`: every line of `input` (without its `\n` or `\r\n`) as one
/// message, `batch` per MPUB, all over `c`. Returns the first and last event
/// id, or None for empty input. On an error, says on stderr how many lines
/// were published before it (each MPUB is all or nothing).
fn publish_lines(
    c: &mut Client,
    topic: &str,
    headers: &[(&str, &str)],
    batch: usize,
    mut input: impl BufRead,
) -> Result<Option<(u64, u64)>> {
    let mut ids: Option<(u64, u64)> = None;
    let mut published: u64 = 0;
    let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(batch);
    loop {
        let mut line = Vec::new();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::Io {
                what: format!(
                    "reading line {} from stdin",
                    published + chunk.len() as u64 + 1
                ),
                source: e,
            })?;
        if n > 0 {
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            chunk.push(line);
        }
        if chunk.len() == batch || (n == 0 && !chunk.is_empty()) {
            let payloads: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            let (first, last) = match c.mpublish_with_headers(topic, headers, &payloads) {
                Ok(r) => r,
                Err(e) => {
                    if published > 0 {
                        eprintln!(
                            "pub: {published} lines were published (ids {} to {}) before this error",
                            ids.map_or(0, |(f, _)| f),
                            ids.map_or(0, |(_, l)| l)
                        );
                    }
                    return Err(e.into());
                }
            };
            ids = Some((ids.map_or(first, |(f, _)| f), last));
            published += chunk.len() as u64;
            chunk.clear();
        }
        if n == 0 {
            return Ok(ids);
        }
    }
}
