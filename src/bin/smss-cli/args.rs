//! The command line of `smss-cli`: global options, the commands and their
//! arguments (lexopt), and the `--help` text. Parsing only; nothing here
//! connects or prints except the help.

use std::ffi::OsString;

use smss::client::SubOptions;

use crate::error::{CliError, Result, usage};

pub const USAGE: &str = "\
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

pub const COMMANDS: &str = "create, delete, pub, sub, list, info, stats, ping, dump";

/// What the command line asks for.
pub enum Invocation {
    /// `--help`, before or after the command.
    Help,
    /// `--version`.
    Version,
    /// `bench` and the arguments after it, which the bench parses itself.
    Bench(Vec<OsString>),
    /// A client command and the global options it runs with.
    Run(Global, Command),
}

/// Global options, before the command.
pub struct Global {
    pub host: String,
    pub port: u16,
    pub token: Option<String>,
    pub timeout_ms: u64,
}

/// A parsed command.
pub enum Command {
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

/// Parses the whole command line: global options, then the command.
pub fn parse(mut p: lexopt::Parser) -> Result<Invocation> {
    use lexopt::prelude::*;
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
            Some(Short('h') | Long("help")) => return Ok(Invocation::Help),
            Some(Short('V') | Long("version")) => return Ok(Invocation::Version),
            Some(Value(v)) => break string(v, "command")?,
            Some(arg) => return Err(arg.unexpected().into()),
            None => return Err(usage("missing command")),
        }
    };
    if name == "bench" {
        // The bench has its own flags (and its own --host/--port).
        return Ok(Invocation::Bench(p.raw_args()?.collect()));
    }
    match parse_command(&mut p, &name) {
        Err(CliError::HelpRequested) => Ok(Invocation::Help),
        r => Ok(Invocation::Run(g, r?)),
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

pub fn print_help() -> Result<()> {
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
