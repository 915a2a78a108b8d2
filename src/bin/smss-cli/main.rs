//! `smss-cli`: the command line client.
//!
//! Owns argument parsing (lexopt) and output formatting; every network
//! command goes through [`smss::client::Client`]. `dump` works offline on a
//! segment file with [`smss::storage::record::scan`]. Single-threaded.
//!
//! Exit codes: 0 success, 1 server error / connection failure / corrupt
//! segment (one line `smss-cli: <message>` on stderr), 2 usage error.
#![deny(clippy::unwrap_used)]

mod bench;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use smss::client::{Client, ClientError, SubEvent, SubOptions};
use smss::storage::record::{self, Kind, Record, ScanEnd};

const USAGE: &str = "\
usage: smss-cli [--host HOST] [--port PORT] [--token TOKEN] [--timeout MS] <command> [args]

commands:
  create <topic> [--life MS]             create a topic; prints the event id
  delete <topic>                         delete a topic; prints the event id
  pub <topic> [<payload>|-] [--header k=v]... [--delay MS]
                                         publish (payload from stdin when absent or -)
  sub <topic> [--from 0|N|$|-] [--count N] [--batch N] [--group NAME] [--raw]
                                         print messages as `id timestamp_ms [k=v ...] payload`
  list                                   all topics
  info <topic>                           one topic
  stats                                  server statistics
  ping                                   check the server is alive
  dump <segment-file>                    print the records of a segment file (offline)

global options:
  --host HOST      server host (default 127.0.0.1)
  --port PORT      server port (default 12301)
  --token TOKEN    authenticate with AUTH first
  --timeout MS     read timeout, 0 = none (default 30000)
  -h, --help       show this help
  -V, --version    show the version";

const COMMANDS: &str = "create, delete, pub, sub, list, info, stats, ping, dump";

/// Everything `run` can fail with; `main` maps it to an exit code.
#[derive(Debug)]
enum CliError {
    /// Bad command line: exit 2 with a usage hint.
    Usage(String),
    /// The server or the connection failed.
    Client(ClientError),
    /// A local file or stream failed.
    Io { what: String, source: io::Error },
    /// `dump` found a corrupt record.
    Corrupt(String),
    /// A benchmark failed.
    Bench(String),
    /// `--help` after the command: not an error; `run` prints the help.
    HelpRequested,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Corrupt(m) | CliError::Bench(m) => f.write_str(m),
            CliError::HelpRequested => f.write_str("help requested"),
            CliError::Client(e) => write!(f, "{e}"),
            CliError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Client(e) => Some(e),
            CliError::Io { source, .. } => Some(source),
            CliError::Usage(_)
            | CliError::Corrupt(_)
            | CliError::Bench(_)
            | CliError::HelpRequested => None,
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(e)
    }
}

impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> Self {
        CliError::Usage(e.to_string())
    }
}

type Result<T> = std::result::Result<T, CliError>;

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

fn stdout_err(e: io::Error) -> CliError {
    CliError::Io {
        what: "writing to stdout".to_string(),
        source: e,
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`smss-cli sub t | head`) is not a failure.
        Err(CliError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e @ CliError::Usage(_)) => {
            eprintln!("smss-cli: {e}");
            eprintln!("try 'smss-cli --help' (commands: {COMMANDS})");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("smss-cli: {e}");
            ExitCode::from(1)
        }
    }
}

/// Global options, before the command.
struct Global {
    host: String,
    port: u16,
    token: Option<String>,
    timeout_ms: u64,
}

/// A parsed command.
enum Command {
    Create {
        topic: String,
        life_ms: u64,
    },
    Delete {
        topic: String,
    },
    Pub {
        topic: String,
        payload: Option<Vec<u8>>,
        headers: Vec<(String, String)>,
        delay_ms: Option<u64>,
    },
    Sub {
        topic: String,
        from: String,
        count: Option<u64>,
        opts: SubOptions,
        raw: bool,
    },
    List,
    Info {
        topic: String,
    },
    Stats,
    Ping,
    Dump {
        path: OsString,
    },
}

fn string(v: OsString, what: &str) -> Result<String> {
    v.into_string()
        .map_err(|v| usage(format!("{what} {v:?} is not valid UTF-8")))
}

fn number<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str, what: &str) -> Result<T> {
    let v = string(p.value()?, flag)?;
    v.parse()
        .map_err(|_| usage(format!("{flag}: expected {what}, got {v:?}")))
}

fn run() -> Result<()> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut g = Global {
        host: "127.0.0.1".to_string(),
        port: 12301,
        token: None,
        timeout_ms: 30_000,
    };
    let name = loop {
        match p.next()? {
            Some(Long("host")) => g.host = string(p.value()?, "--host")?,
            Some(Long("port")) => g.port = number(&mut p, "--port", "a port number (0-65535)")?,
            Some(Long("token")) => g.token = Some(string(p.value()?, "--token")?),
            Some(Long("timeout")) => {
                g.timeout_ms = number(&mut p, "--timeout", "a number of milliseconds")?
            }
            Some(Short('h') | Long("help")) => return print_help(),
            Some(Short('V') | Long("version")) => {
                println!("smss-cli {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            Some(Value(v)) => break string(v, "command")?,
            Some(arg) => return Err(arg.unexpected().into()),
            None => return Err(usage("missing command")),
        }
    };
    if name == "bench" {
        // The bench has its own flags (and its own --host/--port).
        let rest: Vec<OsString> = p.raw_args()?.collect();
        return bench::run(rest).map_err(|e| match e {
            bench::BenchError::Usage(m) => CliError::Usage(format!("bench: {m}")),
            other => CliError::Bench(other.to_string()),
        });
    }
    let cmd = match parse_command(&mut p, &name) {
        Err(CliError::HelpRequested) => return print_help(),
        r => r?,
    };
    match cmd {
        Command::Dump { path } => dump(&path),
        cmd => {
            let mut c = connect(&g)?;
            execute(&mut c, cmd)
        }
    }
}

fn parse_command(p: &mut lexopt::Parser, name: &str) -> Result<Command> {
    Ok(match name {
        "create" => parse_create(p)?,
        "delete" => Command::Delete {
            topic: one_positional(p, "delete", "<topic>")?,
        },
        "pub" => parse_pub(p)?,
        "sub" => parse_sub(p)?,
        "list" => no_args(p, "list", Command::List)?,
        "info" => Command::Info {
            topic: one_positional(p, "info", "<topic>")?,
        },
        "stats" => no_args(p, "stats", Command::Stats)?,
        "ping" => no_args(p, "ping", Command::Ping)?,
        "dump" => {
            let path = positionals(p, "dump", 1, 1, "<segment-file>")?;
            Command::Dump {
                path: path.into_iter().next().unwrap_or_default(),
            }
        }
        other => {
            return Err(usage(format!("unknown command {other:?}")));
        }
    })
}

fn print_help() -> Result<()> {
    println!(
        "smss-cli {} — command line client for smss\n",
        env!("CARGO_PKG_VERSION")
    );
    println!("{USAGE}");
    Ok(())
}

/// Collects between `min` and `max` positional arguments of a command that
/// takes no options.
fn positionals(
    p: &mut lexopt::Parser,
    cmd: &str,
    min: usize,
    max: usize,
    shape: &str,
) -> Result<Vec<OsString>> {
    use lexopt::prelude::*;
    let mut out = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if out.len() < max => out.push(v),
            Value(v) => return Err(usage(format!("{cmd}: unexpected argument {v:?}"))),
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            arg => return Err(usage(format!("{cmd}: {}", arg.unexpected()))),
        }
    }
    if out.len() < min {
        return Err(usage(format!(
            "{cmd}: missing argument; usage: {cmd} {shape}"
        )));
    }
    Ok(out)
}

fn one_positional(p: &mut lexopt::Parser, cmd: &str, shape: &str) -> Result<String> {
    let v = positionals(p, cmd, 1, 1, shape)?;
    string(v.into_iter().next().unwrap_or_default(), "argument")
}

fn no_args(p: &mut lexopt::Parser, cmd: &str, c: Command) -> Result<Command> {
    positionals(p, cmd, 0, 0, "")?;
    Ok(c)
}

fn parse_create(p: &mut lexopt::Parser) -> Result<Command> {
    use lexopt::prelude::*;
    let mut topic = None;
    let mut life_ms = 0;
    while let Some(arg) = p.next()? {
        match arg {
            Long("life") => life_ms = number(p, "--life", "a number of milliseconds")?,
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            Value(v) if topic.is_none() => topic = Some(string(v, "topic")?),
            arg => return Err(usage(format!("create: {}", arg.unexpected()))),
        }
    }
    let topic = topic.ok_or_else(|| usage("create: missing <topic>"))?;
    Ok(Command::Create { topic, life_ms })
}

fn parse_pub(p: &mut lexopt::Parser) -> Result<Command> {
    use lexopt::prelude::*;
    let mut topic = None;
    let mut payload: Option<OsString> = None;
    let mut headers = Vec::new();
    let mut delay_ms = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("header") => {
                let h = string(p.value()?, "--header")?;
                let Some((k, v)) = h.split_once('=') else {
                    return Err(usage(format!("--header: expected key=value, got {h:?}")));
                };
                headers.push((k.to_string(), v.to_string()));
            }
            Long("delay") => delay_ms = Some(number(p, "--delay", "a number of milliseconds")?),
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            Value(v) if topic.is_none() => topic = Some(string(v, "topic")?),
            Value(v) if payload.is_none() => payload = Some(v),
            arg => return Err(usage(format!("pub: {}", arg.unexpected()))),
        }
    }
    let topic = topic.ok_or_else(|| usage("pub: missing <topic>"))?;
    let payload = payload
        .filter(|v| v != "-")
        .map(OsString::into_encoded_bytes);
    Ok(Command::Pub {
        topic,
        payload,
        headers,
        delay_ms,
    })
}

fn parse_sub(p: &mut lexopt::Parser) -> Result<Command> {
    use lexopt::prelude::*;
    let mut topic = None;
    let mut from = "0".to_string();
    let mut count = None;
    let mut opts = SubOptions::default();
    let mut raw = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("from") => {
                from = string(p.value()?, "--from")?;
                let ok = from == "$" || from == "-" || from.parse::<u64>().is_ok();
                if !ok {
                    return Err(usage(format!(
                        "--from: expected 0, an event id, $ or -, got {from:?}"
                    )));
                }
            }
            Long("count") => {
                let n: u64 = number(p, "--count", "a number of messages")?;
                if n == 0 {
                    return Err(usage("--count: must be at least 1"));
                }
                count = Some(n);
            }
            Long("batch") => opts.batch = Some(number(p, "--batch", "a number of messages")?),
            Long("group") => opts.group = Some(string(p.value()?, "--group")?),
            Long("raw") => raw = true,
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            Value(v) if topic.is_none() => topic = Some(string(v, "topic")?),
            arg => return Err(usage(format!("sub: {}", arg.unexpected()))),
        }
    }
    let topic = topic.ok_or_else(|| usage("sub: missing <topic>"))?;
    Ok(Command::Sub {
        topic,
        from,
        count,
        opts,
        raw,
    })
}

fn connect(g: &Global) -> Result<Client> {
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

fn execute(c: &mut Client, cmd: Command) -> Result<()> {
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
        Command::Dump { path } => return dump(&path),
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

/// Printable ASCII as is (backslash doubled), everything else as `\xNN`.
fn escape(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
}

const PREVIEW_BYTES: usize = 64;

fn describe(offset: u64, r: &Record<'_>) -> String {
    let mut s = format!(
        "@{offset} id={} ts={} kind={} flags={} topic={} headers=\"",
        r.event_id,
        r.timestamp_ms,
        r.kind.name(),
        r.flags,
        r.topic
    );
    escape(r.headers, &mut s);
    s.push_str(&format!("\" len={}", r.body.len()));
    match (r.kind, r.life_ms(), r.delete_reason()) {
        (Kind::Create, Some(life), _) => s.push_str(&format!(" life_ms={life}")),
        (Kind::Delete, _, Some(reason)) => s.push_str(&format!(" reason={}", reason.as_str())),
        _ => {
            // A message, or a CREATE/DELETE whose body is malformed: show it.
            let body = match (r.kind, r.body_u64()) {
                (Kind::DPub, Some(due)) => {
                    s.push_str(&format!(" due_ms={due}"));
                    r.payload()
                }
                (Kind::Fire, Some(dpub)) => {
                    s.push_str(&format!(" dpub_id={dpub}"));
                    r.payload()
                }
                _ => r.body,
            };
            s.push_str(" body=");
            let n = body.len().min(PREVIEW_BYTES);
            escape(&body[..n], &mut s);
            if body.len() > n {
                s.push_str("...");
            }
        }
    }
    s
}

fn dump(path: &OsString) -> Result<()> {
    let shown = std::path::Path::new(path).display().to_string();
    let file = std::fs::File::open(path).map_err(|e| CliError::Io {
        what: format!("opening {shown}"),
        source: e,
    })?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut records = 0u64;
    let mut write_err: Option<io::Error> = None;
    let end = record::scan(io::BufReader::new(file), |offset, r| {
        records += 1;
        if write_err.is_none()
            && let Err(e) = writeln!(out, "{}", describe(offset, r))
        {
            write_err = Some(e);
        }
    })
    .map_err(|e| CliError::Io {
        what: format!("reading {shown}"),
        source: e,
    })?;
    if let Some(e) = write_err {
        return Err(stdout_err(e));
    }
    let summary = match &end {
        ScanEnd::Clean { .. } => "clean".to_string(),
        ScanEnd::Torn { offset } => format!("torn at {offset}"),
        ScanEnd::Corrupt { offset, reason } => format!("CORRUPT at {offset}: {reason}"),
    };
    writeln!(out, "records={records} end={summary}").map_err(stdout_err)?;
    out.flush().map_err(stdout_err)?;
    match end {
        ScanEnd::Corrupt { offset, reason } => Err(CliError::Corrupt(format!(
            "{shown}: corrupt record at offset {offset}: {reason}"
        ))),
        ScanEnd::Clean { .. } | ScanEnd::Torn { .. } => Ok(()),
    }
}
