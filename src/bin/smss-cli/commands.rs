//! The network commands: connecting with the global options, running one
//! command through [`smss::client::Client`] and printing its result.

use std::io::{self, Read, Write};
use std::time::Duration;

use smss::client::{Client, SubEvent, SubOptions};

use crate::args::{Command, Global};
use crate::dump;
use crate::error::{CliError, Result, stdout_err};

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
    let mut c = Client::connect_timeout(&addr, timeout)?;
    if g.timeout_ms == 0 {
        c.set_timeout(None)?;
    }
    if let Some(t) = &g.token {
        c.auth(t)?;
    }
    Ok(c)
}

pub fn execute(c: &mut Client, cmd: Command) -> Result<()> {
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
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let id = match delay_ms {
                Some(d) => c.dpublish_with_headers(&topic, d, &h, &payload)?,
                None => c.publish_with_headers(&topic, &h, &payload)?,
            };
            writeln!(out, "{id}").map_err(stdout_err)?;
        }
        Command::Sub {
            topic,
            from,
            count,
            opts,
            raw,
        } => return subscribe(c, &mut out, &topic, &from, count, &opts, raw),
        Command::List => {
            let topics = c.list()?;
            print_topics(&mut out, &topics).map_err(stdout_err)?;
        }
        Command::Info { topic } => {
            let t = c.info(&topic)?;
            print_topics(&mut out, &[t]).map_err(stdout_err)?;
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
            SubEvent::Alive | SubEvent::Standby => {}
            SubEvent::End(reason) => {
                out.flush().map_err(stdout_err)?;
                eprintln!("end: {reason}");
                return Ok(());
            }
        }
    }
}

fn print_message(out: &mut impl Write, m: &smss::client::Delivered, raw: bool) -> io::Result<()> {
    if !raw {
        write!(out, "{} {} ", m.event_id, m.timestamp_ms)?;
        for (k, v) in &m.headers {
            write!(out, "{k}={v} ")?;
        }
    }
    out.write_all(&m.payload)?;
    out.write_all(b"\n")
}
