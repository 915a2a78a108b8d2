//! The command line of `smss-cli`: global options (before or after the
//! command), the commands and their arguments (lexopt), and the help texts,
//! global and per command ([`HELP`]). Parsing only; nothing here connects
//! or prints except the help.

use std::ffi::OsString;
use std::io::IsTerminal;

use smss::client::SubOptions;

use crate::error::{CliError, Result, usage};
use crate::habits;

/// One command's help: `synopsis` (may span lines), a one-line `summary` for
/// the global help, and `details` for `smss-cli help <command>`.
pub struct CommandHelp {
    pub name: &'static str,
    synopsis: &'static str,
    summary: &'static str,
    details: &'static str,
}

/// Every command, in the order the global help lists them.
pub const HELP: [CommandHelp; 17] = [
    CommandHelp {
        name: "create",
        synopsis: "create <topic> [--life MS]",
        summary: "create a topic; prints the event id",
        details: "\
Creates a topic and prints the event id of its creation.

  --life MS       the topic is removed MS ms after its creation
                  (0, the default: never; otherwise at least 1000)",
    },
    CommandHelp {
        name: "delete",
        synopsis: "delete <topic>",
        summary: "delete a topic; prints the event id",
        details: "\
Deletes a topic and its messages and prints the event id of the deletion.
Its subscribers get the end of their subscription (\"end: deleted\").",
    },
    CommandHelp {
        name: "pub",
        synopsis: "pub <topic> [<payload>|-] [--header k=v]... [--delay MS] [--key K]\n\
                   pub <topic> --lines [--header k=v]... [--batch N]",
        summary: "publish one message, or each line of stdin",
        details: "\
Publishes one message and prints its event id. The payload is read from
stdin when it is absent or -.

  --header k=v    a header, repeatable (at most 32): the key is 1-64 bytes of
                  A-Z a-z 0-9 . _ -, the value up to 1024 bytes of visible
                  ASCII (no spaces)
  --delay MS      deliver MS ms from now (DPUB); prints the id of the
                  delayed-publish record, the message gets a new id when due
  --key K         a dedup key (the msgid=K header; 1-128 bytes of visible
                  ASCII): a publish with a key the topic saw within the
                  server's publish.dedupWindowMs writes nothing and prints the
                  first one's id followed by \"dup\", so a retry is safe
  --lines         publish every line of stdin (without its \\n or \\r\\n) as
                  one message, all over one connection in MPUB batches; prints
                  \"<first_id> <last_id>\" (ids of other writers may fall in
                  between when they publish at the same time)
  --batch N       with --lines: messages per MPUB (default 100; at most the
                  server's limits.maxBatch)",
    },
    CommandHelp {
        name: "sub",
        synopsis: "sub <topic> [--from 0|N|$|-] [--count N] [--batch N] [--raw]\n\
                   sub <topic> --group NAME [--shared] [--from 0|N|$|-] [--max-deliver N] [--dlq TOPIC] ...",
        summary: "print messages, one line each",
        details: "\
Prints messages one line each, \"<event_id> <timestamp_ms> [k=v ...] <payload>\",
until --count messages arrived or the topic ends (\"end: deleted\" or
\"end: expired\" on stderr). The payload is escaped so that one message is
one line: \\n \\r \\t and \\\\ for themselves, \\xNN for any other byte outside
printable ASCII.

  --from P        where to start (default 0); with --group the default is -:
                  0 = the oldest retained message, N = the messages after
                  event id N, $ = only messages published from now on, - =
                  the group's position (needs --group); with --group, 0, N
                  and $ move the group's position there
  --count N       stop after N messages (default: until the topic ends)
  --batch N       messages per batch (default: the server's sub.defaultBatch)
  --group NAME    read as consumer group NAME: resumes from the group's
                  position; each batch is ACKed (and so committed) once it is
                  printed. While another subscriber of the group is active
                  this one waits (\"standby\" on stderr) and takes over when
                  that one ends
  --shared        with --group: join the group as a worker of a pool; every
                  subscriber of a shared group gets batches of its own (no
                  order across them), and a batch not ACKed goes to another
  --max-deliver N with --group: give up on a message after N deliveries that
                  ended without an ACK (0 = never; default: the server's
                  sub.maxDeliver)
  --dlq TOPIC     with --group: a message given up on goes to TOPIC (an
                  existing topic) with dlq.* headers; without it, it is skipped
  --raw           print only each payload, its bytes as they are, then \\n",
    },
    CommandHelp {
        name: "groups",
        synopsis: "groups <topic>",
        summary: "the topic's consumer groups",
        details: "\
Prints a header row, then one line per consumer group of the topic:
\"<name> <committed_id> <active> <standbys> <lag>\": the group has consumed
every message up to committed_id; active is 1 while a subscriber of the
group is delivering; standbys are subscribers waiting to take over; lag is
how many retained messages come after committed_id.",
    },
    CommandHelp {
        name: "groupdel",
        synopsis: "groupdel <topic> <group>",
        summary: "remove a consumer group; prints the event id",
        details: "\
Removes a consumer group and its position and prints the event id of the
removal. Its subscribers get the end of their subscription (\"end: deleted\").",
    },
    CommandHelp {
        name: "list",
        synopsis: "list",
        summary: "all topics",
        details: "\
Prints a header row, then one line per topic, ordered by name:
\"<name> <created_ms> <expires_ms> <messages> <first_id> <last_id>\"
(expires_ms 0: no lifetime; first_id and last_id 0: no messages).",
    },
    CommandHelp {
        name: "info",
        synopsis: "info <topic>",
        summary: "one topic",
        details: "\
Prints a header row and the topic's line, as `list` does.",
    },
    CommandHelp {
        name: "stats",
        synopsis: "stats",
        summary: "server statistics",
        details: "\
Prints the server's statistics, \"<name> <value>\" per line.",
    },
    CommandHelp {
        name: "ping",
        synopsis: "ping",
        summary: "check the server is alive",
        details: "\
Prints PONG when the server answers.",
    },
    CommandHelp {
        name: "slaves",
        synopsis: "slaves",
        summary: "the slaves connected to a master",
        details: "\
Prints a header row, then one line per slave connected to the master:
\"<addr> <acked_event_id> <lag_events> <lag_ms> <state>\". acked_event_id is
the last event id the slave has durably; lag_events how many ids the master
is ahead of it (a jump to a new epoch's ids not counted); lag_ms 0 when it is
caught up, else how old the oldest record it lacks is; state connecting,
syncing (a full resync) or streaming. A slave answers with no slaves: only
the header row.",
    },
    CommandHelp {
        name: "health",
        synopsis: "health [--max-lag-ms N] [--min-slaves N]",
        summary: "one line and exit 0/1/2: ok/warning/critical",
        details: "\
Judges the server from STATS for cron, monit and systemd timers; prints one
line (OK, WARNING or CRITICAL and why) and exits 0, 1 or 2. Critical: no
answer, a poisoned writer, a slave not streaming. Warning: a slave's
replication_lag_ms over --max-lag-ms (default 10000), a master with fewer
slaves than --min-slaves (default 0), semi-sync fallen back to async.",
    },
    CommandHelp {
        name: "backup",
        synopsis: "backup <dir>",
        summary: "hot backup of a running server into a new data directory",
        details: "\
Copies the server's data, while it runs, into <dir> (new or empty): it follows
the server as an empty slave would until it has every record up to the last
event id the server had when the backup began, writes them as a segment,
builds the indexes and the checkpoint, and checks the result like
'smss --check'. Prints what it copied. Restore by stopping the server and
putting <dir> in place of its store.path (README: Backup and restore).",
    },
    CommandHelp {
        name: "promote",
        synopsis: "promote",
        summary: "turn a slave into a master; prints the event id",
        details: "\
Sends PROMOTE to a slave: it stops replicating, starts a new epoch above
every id its old master may have handed out, and takes writes from now on.
Prints the event id where the new epoch starts. A master refuses it.",
    },
    CommandHelp {
        name: "dump",
        synopsis: "dump <segment-file>",
        summary: "print the records of a segment file (offline)",
        details: "\
Reads a segment file of the commit log (data/log/*.log) directly; needs no
server. Prints each record, then \"records=<n> end=clean|torn at OFFSET|CORRUPT
at OFFSET\". Exits 1 on a corrupt record, and for a file that is not a
segment (not empty, not zero fill, and its first record does not decode).",
    },
    CommandHelp {
        name: "bridge",
        synopsis: "bridge --nats HOST:PORT[,HOST:PORT...] [options] [TOPIC...]",
        summary: "copy topics into NATS JetStream, losslessly, until SIGTERM",
        details: "\
Copies smss topics into a NATS JetStream stream: every message once, in
order per topic, as subject <prefix>.<topic> with msg id
<history>-<event id> (Nats-Msg-Id) and the headers Smss-Topic, Smss-Id and
Smss-Timestamp next to its own. It reads each topic as the consumer group
bridge.<name> and ACKs a batch only once the stream stored all of it, so a
restart resumes where it was; messages the stream already holds are not
written again. Runs until SIGTERM or SIGINT, finishing the batch in flight.

  TOPIC...          the topics to bridge (default: all, and topics created
                    later are picked up)
  --nats LIST       NATS servers, HOST:PORT separated by commas (required)
  --stream NAME     the JetStream stream (default SMSS)
  --prefix P        subjects are P.<topic> (default smss)
  --create-stream   create the stream (subjects P.>) if it does not exist
  --replicas N      with --create-stream: its replicas (default 1)
  --smss LIST       smss servers, HOST:PORT separated by commas: the master
                    and its slaves; the bridge follows whichever is master
                    (default: --host/--port)
  --name N          the bridge's name; its group is bridge.N (default default)
  --max-deliver N, --dlq TOPIC
                    together: a message the stream refuses (too big, ...) is
                    moved by smss to TOPIC after N deliveries; without them
                    such a message blocks its topic (logged) until it is taken
  --batch N         messages per smss batch (default: the server's)
  --metrics-port P  serve Prometheus /metrics on port P
  --metrics-bind A  the address /metrics listens on (default 127.0.0.1)
  --dup-window-ms MS
                    with --create-stream: the stream's duplicate window
                    (default 120000)
  --ack-timeout-ms MS
                    how long a write waits for the stream's acks before it
                    is retried with the same ids (default 5000)
  --nats-user U, --nats-password-file F
                    NATS user and the file holding its password
  --nats-token-file F
                    a NATS token, from the first line of F
  --nats-ca FILE    TLS to NATS, verifying its certificate against FILE
                    (also used when the NATS server requires TLS)
  --nats-cert FILE, --nats-cert-key FILE
                    a client certificate for NATS (mutual TLS)",
    },
    CommandHelp {
        name: "help",
        synopsis: "help [<command>]",
        summary: "this help, or one command's",
        details: "\
Prints the list of commands, or the usage of one (like <command> --help).",
    },
];

const GLOBAL_OPTIONS: &str = "\
global options (before or after the command):
  --host HOST[:PORT]  server host (default 127.0.0.1, or $SMSS_HOST)
  --port PORT         server port (default 12301, or $SMSS_PORT)
  --token TOKEN       authenticate with AUTH first ($SMSS_TOKEN; on the command
                      line it shows in ps and shell history: prefer --token-file)
  --token-file FILE   the token, from the first line of FILE
  --timeout MS        read timeout, 0 = none (default 30000)
  --json              stats, list, info, groups, slaves: one JSON document
  --tls               connect over TLS (the server's tls.port); needs --ca
  --ca FILE           the CA certificate (PEM) that signed the server's
                      certificate (no system roots are used)
  --cert FILE, --cert-key FILE
                      a client certificate and its key, for a server with
                      tls.clientCa (`pub --key` is a dedup key)
  -h, --help          show this help, or after a command that command's
  -V, --version       show the version";

pub const COMMANDS: &str = "create, delete, pub, sub, groups, groupdel, list, info, stats, ping, slaves, health, backup, promote, \
     bridge, dump, help";

/// What the command line asks for.
// Built once per run and moved, never stored in bulk: its size is no cost.
#[allow(clippy::large_enum_variant)]
pub enum Invocation {
    /// `--help` or `help`: the global help (None) or one command's.
    Help(Option<String>),
    /// `--version`.
    Version,
    /// `bench …` or `help bench`: the bench is the `smss-bench` binary now.
    Bench,
    /// A client command and the global options it runs with.
    Run(Global, Command),
}

/// Global options, before or after the command.
pub struct Global {
    pub host: String,
    pub port: u16,
    pub token: Option<String>,
    pub timeout_ms: u64,
    /// `--json`: state as one JSON document.
    pub json: bool,
    /// `--tls`, with `--ca` (and `--cert`/`--cert-key` for mutual TLS).
    pub tls: bool,
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
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
        /// `--key`: the dedup key (`msgid=`).
        key: Option<String>,
    },
    /// `pub --lines`: one message per line of stdin.
    PubLines {
        topic: String,
        headers: Vec<(String, String)>,
        batch: usize,
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
    Groups {
        topic: String,
    },
    GroupDel {
        topic: String,
        group: String,
    },
    Stats,
    Ping,
    Slaves,
    Health(crate::health::Thresholds),
    Promote,
    Dump {
        path: OsString,
    },
    Backup {
        dir: OsString,
    },
    Bridge(Box<BridgeArgs>),
}

/// `bridge`'s arguments, as given (checked by the bridge itself).
pub struct BridgeArgs {
    pub nats: Vec<String>,
    pub stream: String,
    pub prefix: String,
    pub create_stream: bool,
    pub replicas: Option<u32>,
    /// Empty: the global --host/--port.
    pub smss: Vec<String>,
    pub name: String,
    pub max_deliver: u32,
    pub dlq: Option<String>,
    pub batch: Option<usize>,
    pub metrics_port: Option<u16>,
    pub metrics_bind: Option<String>,
    pub topics: Vec<String>,
    /// NATS credentials: a user and the file holding its password, or a
    /// token file (files, so no secret shows in `ps`).
    pub nats_user: Option<String>,
    pub nats_password_file: Option<std::path::PathBuf>,
    pub nats_token_file: Option<std::path::PathBuf>,
    /// TLS to NATS: the CA, and a client certificate and key.
    pub nats_ca: Option<std::path::PathBuf>,
    pub nats_cert: Option<std::path::PathBuf>,
    pub nats_cert_key: Option<std::path::PathBuf>,
    /// With --create-stream: the stream's duplicate window.
    pub dup_window_ms: u64,
    /// How long a write waits for the stream's acks.
    pub ack_timeout_ms: u64,
}

/// Messages per MPUB of `pub --lines` unless `--batch` says otherwise.
const DEFAULT_LINES_BATCH: usize = 100;

fn string(v: OsString, what: &str) -> Result<String> {
    v.into_string()
        .map_err(|v| usage(format!("{what} {v:?} is not valid UTF-8")))
}

fn number<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str, what: &str) -> Result<T> {
    let v = string(p.value()?, flag)?;
    v.parse()
        .map_err(|_| usage(format!("{flag}: expected {what}, got {v:?}")))
}

#[derive(Clone, Copy)]
enum GlobalFlag {
    Host,
    Port,
    Token,
    TokenFile,
    Timeout,
    Json,
    Tls,
    Ca,
    Cert,
    Key,
}

fn global_flag(arg: &lexopt::Arg<'_>) -> Option<GlobalFlag> {
    match arg {
        lexopt::Arg::Long("host") => Some(GlobalFlag::Host),
        lexopt::Arg::Long("port") => Some(GlobalFlag::Port),
        lexopt::Arg::Long("token") => Some(GlobalFlag::Token),
        lexopt::Arg::Long("token-file") => Some(GlobalFlag::TokenFile),
        lexopt::Arg::Long("timeout") => Some(GlobalFlag::Timeout),
        lexopt::Arg::Long("json") => Some(GlobalFlag::Json),
        lexopt::Arg::Long("tls") => Some(GlobalFlag::Tls),
        lexopt::Arg::Long("ca") => Some(GlobalFlag::Ca),
        lexopt::Arg::Long("cert") => Some(GlobalFlag::Cert),
        lexopt::Arg::Long("cert-key") => Some(GlobalFlag::Key),
        _ => None,
    }
}

fn set_global(g: &mut Global, p: &mut lexopt::Parser, flag: GlobalFlag) -> Result<()> {
    match flag {
        GlobalFlag::Host => {
            let (host, port) = habits::host_port(&string(p.value()?, "--host")?, "--host")?;
            g.host = host;
            if let Some(port) = port {
                g.port = port;
            }
        }
        GlobalFlag::Port => g.port = number(p, "--port", "a port number (0-65535)")?,
        GlobalFlag::Token => g.token = Some(string(p.value()?, "--token")?),
        GlobalFlag::TokenFile => {
            let path = std::path::PathBuf::from(p.value()?);
            g.token = Some(habits::token_file(&path)?);
        }
        GlobalFlag::Timeout => g.timeout_ms = number(p, "--timeout", "a number of milliseconds")?,
        GlobalFlag::Json => g.json = true,
        GlobalFlag::Tls => g.tls = true,
        GlobalFlag::Ca => g.ca = Some(p.value()?.into()),
        GlobalFlag::Cert => g.cert = Some(p.value()?.into()),
        GlobalFlag::Key => g.key = Some(p.value()?.into()),
    }
    Ok(())
}

/// Parses the whole command line: the command, and global options around it.
pub fn parse(mut p: lexopt::Parser) -> Result<Invocation> {
    use lexopt::prelude::*;
    let mut g = Global {
        host: "127.0.0.1".to_string(),
        port: 12301,
        token: None,
        timeout_ms: 30_000,
        json: false,
        tls: false,
        ca: None,
        cert: None,
        key: None,
    };
    // The environment sets defaults; flags win over it.
    if let Ok(v) = std::env::var(habits::ENV_HOST) {
        let (host, port) = habits::host_port(&v, habits::ENV_HOST)?;
        g.host = host;
        g.port = port.unwrap_or(g.port);
    }
    if let Ok(v) = std::env::var(habits::ENV_PORT) {
        g.port = habits::port(&v, habits::ENV_PORT)?;
    }
    if let Ok(v) = std::env::var(habits::ENV_TOKEN) {
        g.token = Some(v).filter(|t| !t.is_empty());
    }
    let name = loop {
        let arg = match p.next()? {
            Some(arg) => arg,
            None => return Err(usage("missing command")),
        };
        if let Some(flag) = global_flag(&arg) {
            set_global(&mut g, &mut p, flag)?;
            continue;
        }
        match arg {
            Short('h') | Long("help") => return Ok(Invocation::Help(None)),
            Short('V') | Long("version") => return Ok(Invocation::Version),
            Value(v) => break string(v, "command")?,
            arg => return Err(arg.unexpected().into()),
        }
    };
    if name == "bench" {
        // Whatever follows: the bench moved to its own binary.
        return Ok(Invocation::Bench);
    }
    if name == "help" {
        let topic = match positionals(&mut p, &mut g, "help", 0, 1) {
            Err(CliError::HelpRequested) => return Ok(Invocation::Help(Some(name))),
            r => r?,
        };
        return match topic.into_iter().next() {
            None => Ok(Invocation::Help(None)),
            Some(v) => {
                let cmd = string(v, "command")?;
                if cmd == "bench" {
                    return Ok(Invocation::Bench);
                }
                find_help(&cmd)?;
                Ok(Invocation::Help(Some(cmd)))
            }
        };
    }
    find_help(&name)?;
    match parse_command(&mut p, &mut g, &name) {
        Err(CliError::HelpRequested) => Ok(Invocation::Help(Some(name))),
        // A usage error inside a command points at that command's help.
        Err(CliError::Usage(msg)) => Err(CliError::CommandUsage { cmd: name, msg }),
        r => Ok(Invocation::Run(g, r?)),
    }
}

fn find_help(name: &str) -> Result<&'static CommandHelp> {
    HELP.iter().find(|h| h.name == name).ok_or_else(|| {
        let hint = habits::nearest(name, HELP.iter().map(|h| h.name))
            .map(|c| format!("; did you mean {c:?}?"))
            .unwrap_or_default();
        usage(format!("unknown command {name:?}{hint}"))
    })
}

fn parse_command(p: &mut lexopt::Parser, g: &mut Global, name: &str) -> Result<Command> {
    Ok(match name {
        "create" => parse_create(p, g)?,
        "delete" => Command::Delete {
            topic: one_positional(p, g, "delete")?,
        },
        "pub" => parse_pub(p, g)?,
        "sub" => parse_sub(p, g)?,
        "list" => no_args(p, g, "list", Command::List)?,
        "info" => Command::Info {
            topic: one_positional(p, g, "info")?,
        },
        "groups" => Command::Groups {
            topic: one_positional(p, g, "groups")?,
        },
        "groupdel" => {
            let mut v = positionals(p, g, "groupdel", 2, 2)?.into_iter();
            Command::GroupDel {
                topic: string(v.next().unwrap_or_default(), "topic")?,
                group: string(v.next().unwrap_or_default(), "group")?,
            }
        }
        "stats" => no_args(p, g, "stats", Command::Stats)?,
        "ping" => no_args(p, g, "ping", Command::Ping)?,
        "slaves" => no_args(p, g, "slaves", Command::Slaves)?,
        "health" => parse_health(p, g)?,
        "promote" => no_args(p, g, "promote", Command::Promote)?,
        "backup" => {
            let dir = positionals(p, g, "backup", 1, 1)?;
            Command::Backup {
                dir: dir.into_iter().next().unwrap_or_default(),
            }
        }
        "bridge" => parse_bridge(p, g)?,
        "dump" => {
            let path = positionals(p, g, "dump", 1, 1)?;
            Command::Dump {
                path: path.into_iter().next().unwrap_or_default(),
            }
        }
        other => return Err(usage(format!("unknown command {other:?}"))),
    })
}

/// The global help, or `smss-cli help <command>`'s.
pub fn help_text(command: Option<&str>) -> Result<String> {
    let mut s = String::new();
    match command {
        None => {
            s.push_str(&format!(
                "smss-cli {} — command line client for smss\n\n\
                 usage: smss-cli [global options] <command> [args]\n\ncommands:\n",
                env!("CARGO_PKG_VERSION")
            ));
            for h in &HELP {
                let lines: Vec<&str> = h.synopsis.lines().map(str::trim).collect();
                match lines.as_slice() {
                    [one] if one.len() < 38 => {
                        s.push_str(&format!("  {one:<38} {}\n", h.summary));
                    }
                    many => {
                        for line in many {
                            s.push_str(&format!("  {line}\n"));
                        }
                        s.push_str(&format!("  {:<38} {}\n", "", h.summary));
                    }
                }
            }
            s.push('\n');
            s.push_str(GLOBAL_OPTIONS);
            s.push_str("\n\n'smss-cli help <command>' or 'smss-cli <command> --help' shows a command's options.\n");
            s.push_str(
                "The load generator and benchmarks are a binary of their own: smss-bench --help.\n",
            );
        }
        Some(name) => {
            let h = find_help(name)?;
            // dump and help never connect.
            let offline = matches!(h.name, "dump" | "help");
            let global = if offline { "" } else { "[global options] " };
            for (i, line) in h.synopsis.lines().map(str::trim).enumerate() {
                let lead = if i == 0 { "usage:" } else { "      " };
                s.push_str(&format!("{lead} smss-cli {global}{line}\n"));
            }
            s.push('\n');
            s.push_str(h.details);
            s.push('\n');
            if !offline {
                s.push('\n');
                s.push_str(GLOBAL_OPTIONS);
                s.push('\n');
            }
        }
    }
    Ok(s)
}

/// Collects between `min` and `max` positional arguments of a command that
/// takes no options of its own.
fn positionals(
    p: &mut lexopt::Parser,
    g: &mut Global,
    cmd: &str,
    min: usize,
    max: usize,
) -> Result<Vec<OsString>> {
    use lexopt::prelude::*;
    let mut out = Vec::new();
    while let Some(arg) = p.next()? {
        if let Some(flag) = global_flag(&arg) {
            set_global(g, p, flag)?;
            continue;
        }
        match arg {
            Value(v) if out.len() < max => out.push(v),
            Value(v) => return Err(usage(format!("{cmd}: unexpected argument {v:?}"))),
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            arg => return Err(usage(format!("{cmd}: {}", arg.unexpected()))),
        }
    }
    if out.len() < min {
        let shape = find_help(cmd).map(|h| h.synopsis).unwrap_or(cmd);
        return Err(usage(format!(
            "{cmd}: missing argument; usage: smss-cli {shape}"
        )));
    }
    Ok(out)
}

fn one_positional(p: &mut lexopt::Parser, g: &mut Global, cmd: &str) -> Result<String> {
    let v = positionals(p, g, cmd, 1, 1)?;
    string(v.into_iter().next().unwrap_or_default(), "argument")
}

fn no_args(p: &mut lexopt::Parser, g: &mut Global, cmd: &str, c: Command) -> Result<Command> {
    positionals(p, g, cmd, 0, 0)?;
    Ok(c)
}

fn parse_health(p: &mut lexopt::Parser, g: &mut Global) -> Result<Command> {
    use lexopt::prelude::*;
    let mut t = crate::health::Thresholds::default();
    while let Some(arg) = p.next()? {
        if let Some(flag) = global_flag(&arg) {
            set_global(g, p, flag)?;
            continue;
        }
        match arg {
            Long("max-lag-ms") => t.max_lag_ms = number(p, "--max-lag-ms", "milliseconds")?,
            Long("min-slaves") => t.min_slaves = number(p, "--min-slaves", "a number of slaves")?,
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            arg => return Err(usage(format!("health: {}", arg.unexpected()))),
        }
    }
    Ok(Command::Health(t))
}

fn parse_create(p: &mut lexopt::Parser, g: &mut Global) -> Result<Command> {
    use lexopt::prelude::*;
    let mut topic = None;
    let mut life_ms = 0;
    while let Some(arg) = p.next()? {
        if let Some(flag) = global_flag(&arg) {
            set_global(g, p, flag)?;
            continue;
        }
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

fn parse_pub(p: &mut lexopt::Parser, g: &mut Global) -> Result<Command> {
    use lexopt::prelude::*;
    let mut topic = None;
    let mut payload: Option<OsString> = None;
    let mut headers = Vec::new();
    let mut delay_ms = None;
    let mut key = None;
    let mut lines = false;
    let mut batch = None;
    while let Some(arg) = p.next()? {
        if let Some(flag) = global_flag(&arg) {
            set_global(g, p, flag)?;
            continue;
        }
        match arg {
            Long("header") => {
                let h = string(p.value()?, "--header")?;
                let Some((k, v)) = h.split_once('=') else {
                    return Err(usage(format!("--header: expected key=value, got {h:?}")));
                };
                headers.push((k.to_string(), v.to_string()));
            }
            Long("delay") => delay_ms = Some(number(p, "--delay", "a number of milliseconds")?),
            Long("key") => key = Some(string(p.value()?, "--key")?),
            Long("lines") => lines = true,
            Long("batch") => {
                let n: usize = number(p, "--batch", "a number of messages")?;
                if n == 0 {
                    return Err(usage("--batch: must be at least 1"));
                }
                batch = Some(n);
            }
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            Value(v) if topic.is_none() => topic = Some(string(v, "topic")?),
            Value(v) if payload.is_none() => payload = Some(v),
            arg => return Err(usage(format!("pub: {}", arg.unexpected()))),
        }
    }
    let topic = topic.ok_or_else(|| usage("pub: missing <topic>"))?;
    if lines {
        if payload.is_some() {
            return Err(usage("pub: --lines reads stdin; give no <payload>"));
        }
        if delay_ms.is_some() {
            return Err(usage("pub: --delay cannot be combined with --lines"));
        }
        if key.is_some() {
            // One key per message: a key for a whole stream would make
            // every line after the first a duplicate.
            return Err(usage("pub: --key cannot be combined with --lines"));
        }
        return Ok(Command::PubLines {
            topic,
            headers,
            batch: batch.unwrap_or(DEFAULT_LINES_BATCH),
        });
    }
    if batch.is_some() {
        return Err(usage("pub: --batch needs --lines"));
    }
    if payload.is_none() && std::io::stdin().is_terminal() {
        // Would wait on the terminal without a word: say what is missing.
        return Err(usage(
            "pub: missing <payload>: give it as an argument, or '-' to read it from stdin \
             (--lines: one message per line of stdin)",
        ));
    }
    let payload = payload
        .filter(|v| v != "-")
        .map(OsString::into_encoded_bytes);
    Ok(Command::Pub {
        topic,
        payload,
        headers,
        delay_ms,
        key,
    })
}

fn parse_sub(p: &mut lexopt::Parser, g: &mut Global) -> Result<Command> {
    use lexopt::prelude::*;
    let mut topic = None;
    let mut from = None;
    let mut count = None;
    let mut opts = SubOptions::default();
    let mut raw = false;
    while let Some(arg) = p.next()? {
        if let Some(flag) = global_flag(&arg) {
            set_global(g, p, flag)?;
            continue;
        }
        match arg {
            Long("from") => {
                let v = string(p.value()?, "--from")?;
                let ok = v == "$" || v == "-" || v.parse::<u64>().is_ok();
                if !ok {
                    return Err(usage(format!(
                        "--from: expected 0, an event id, $ or -, got {v:?}"
                    )));
                }
                from = Some(v);
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
            Long("max-deliver") => {
                opts.max_deliver = Some(number(p, "--max-deliver", "a number of deliveries")?)
            }
            Long("dlq") => opts.dlq = Some(string(p.value()?, "--dlq")?),
            Long("shared") => opts.shared = true,
            Long("raw") => raw = true,
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            Value(v) if topic.is_none() => topic = Some(string(v, "topic")?),
            arg => return Err(usage(format!("sub: {}", arg.unexpected()))),
        }
    }
    let topic = topic.ok_or_else(|| usage("sub: missing <topic>"))?;
    // A group resumes where it was unless told otherwise.
    let from = from.unwrap_or_else(|| if opts.group.is_some() { "-" } else { "0" }.to_string());
    Ok(Command::Sub {
        topic,
        from,
        count,
        opts,
        raw,
    })
}

/// A comma-separated list of `HOST:PORT`s.
fn addr_list(v: &str, flag: &str) -> Result<Vec<String>> {
    let list: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() || list.iter().any(|a| !a.contains(':')) {
        return Err(usage(format!(
            "{flag}: expected HOST:PORT[,HOST:PORT...], got {v:?}"
        )));
    }
    Ok(list)
}

fn parse_bridge(p: &mut lexopt::Parser, g: &mut Global) -> Result<Command> {
    use lexopt::prelude::*;
    let mut a = BridgeArgs {
        nats: Vec::new(),
        stream: "SMSS".into(),
        prefix: "smss".into(),
        create_stream: false,
        replicas: None,
        smss: Vec::new(),
        name: "default".into(),
        max_deliver: 0,
        dlq: None,
        batch: None,
        metrics_port: None,
        metrics_bind: None,
        topics: Vec::new(),
        nats_user: None,
        nats_password_file: None,
        nats_token_file: None,
        nats_ca: None,
        nats_cert: None,
        nats_cert_key: None,
        dup_window_ms: 120_000,
        ack_timeout_ms: 5_000,
    };
    while let Some(arg) = p.next()? {
        if let Some(flag) = global_flag(&arg) {
            set_global(g, p, flag)?;
            continue;
        }
        match arg {
            Long("nats") => a.nats = addr_list(&string(p.value()?, "--nats")?, "--nats")?,
            Long("stream") => a.stream = string(p.value()?, "--stream")?,
            Long("prefix") => a.prefix = string(p.value()?, "--prefix")?,
            Long("create-stream") => a.create_stream = true,
            Long("replicas") => {
                let n: u32 = number(p, "--replicas", "a number of replicas")?;
                if n == 0 {
                    return Err(usage("--replicas: must be at least 1"));
                }
                a.replicas = Some(n);
            }
            Long("smss") => a.smss = addr_list(&string(p.value()?, "--smss")?, "--smss")?,
            Long("name") => a.name = string(p.value()?, "--name")?,
            Long("max-deliver") => {
                a.max_deliver = number(p, "--max-deliver", "a number of deliveries")?
            }
            Long("dlq") => a.dlq = Some(string(p.value()?, "--dlq")?),
            Long("batch") => {
                let n: usize = number(p, "--batch", "a number of messages")?;
                if n == 0 {
                    return Err(usage("--batch: must be at least 1"));
                }
                a.batch = Some(n);
            }
            Long("metrics-port") => {
                a.metrics_port = Some(number(p, "--metrics-port", "a port number (0-65535)")?)
            }
            Long("metrics-bind") => a.metrics_bind = Some(string(p.value()?, "--metrics-bind")?),
            Long("nats-user") => a.nats_user = Some(string(p.value()?, "--nats-user")?),
            Long("nats-password-file") => a.nats_password_file = Some(p.value()?.into()),
            Long("nats-token-file") => a.nats_token_file = Some(p.value()?.into()),
            Long("nats-ca") => a.nats_ca = Some(p.value()?.into()),
            Long("nats-cert") => a.nats_cert = Some(p.value()?.into()),
            Long("nats-cert-key") => a.nats_cert_key = Some(p.value()?.into()),
            Long("dup-window-ms") => {
                let ms: u64 = number(p, "--dup-window-ms", "milliseconds")?;
                if ms < 100 {
                    return Err(usage("--dup-window-ms: at least 100"));
                }
                a.dup_window_ms = ms;
            }
            Long("ack-timeout-ms") => {
                let ms: u64 = number(p, "--ack-timeout-ms", "milliseconds")?;
                if ms < 100 {
                    return Err(usage("--ack-timeout-ms: at least 100"));
                }
                a.ack_timeout_ms = ms;
            }
            Short('h') | Long("help") => return Err(CliError::HelpRequested),
            Value(v) => a.topics.push(string(v, "topic")?),
            arg => return Err(usage(format!("bridge: {}", arg.unexpected()))),
        }
    }
    if a.nats.is_empty() {
        return Err(usage("bridge: missing --nats HOST:PORT[,HOST:PORT...]"));
    }
    match (a.max_deliver, &a.dlq) {
        (0, Some(_)) => return Err(usage("bridge: --dlq needs --max-deliver N (N >= 1)")),
        (n, None) if n > 0 => {
            return Err(usage(
                "bridge: --max-deliver needs --dlq TOPIC (without one smss would drop the message)",
            ));
        }
        _ => {}
    }
    if a.replicas.is_some() && !a.create_stream {
        return Err(usage("bridge: --replicas needs --create-stream"));
    }
    if a.nats_password_file.is_some() != a.nats_user.is_some() {
        return Err(usage(
            "bridge: --nats-user and --nats-password-file go together",
        ));
    }
    if a.nats_cert.is_some() != a.nats_cert_key.is_some() {
        return Err(usage("bridge: --nats-cert and --nats-cert-key go together"));
    }
    Ok(Command::Bridge(Box::new(a)))
}
