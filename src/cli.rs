//! The server's command line: `smss [--config FILE] [--role master|slave]
//! [--master HOST:PORT] [--event N]`, plus `--help`, `--version` and the
//! offline `--check` / `--repair` of the data directory.
//!
//! Owns: parsing argv (with lexopt) into [`Command`] / [`ServerArgs`], the `--help`
//! text ([`USAGE`]) and [`CliError`]. Pure: no I/O, runs once on the main thread.
//! These are the raw flags only; the config file they name is read and validated by
//! [`crate::config`], and `main` combines the two.
//!
//! The original smss's command lines work too: every long flag may be written
//! with one dash (`-role slave`, `-config FILE`), and `--host H [--port P]`
//! names the master as `--master H:P` does (see [`single_dash_as_long`] and
//! [`master_from_host_port`]).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::config::DEFAULT_CONFIG_PATH;
use crate::role::Role;

/// The `--help` text.
pub const USAGE: &str = "\
smss - a small persistent message queue server

Usage: smss [--config FILE] [--role master|slave] [--master HOST:PORT] [--event N]
            [--demote]
       smss --check [--config FILE]
       smss --repair [--config FILE]

Options:
  --config FILE       config file to load [default: config/config.yaml]
  --role ROLE         master (the default) or slave
  --master HOST:PORT  the master to replicate from (required with --role slave,
                      refused with --role master)
  --host HOST         the master in two flags: --host H --port P is the same
  --port PORT         as --master H:P (PORT defaults to 12301; not together
                      with --master). PORT is the master's, not this
                      server's: a server listens on `port:` of its config
  --event N           slave only: replicate from event id N instead of the
                      slave's own last event id
  --demote            slave only: make a server that was promoted (data/role
                      says master) a slave on purpose: the records of its own
                      epoch are moved to data/diverged/ and it copies its
                      master anew. Without it such a server stays the master
  --check             verify the data directory offline (no server may be
                      running on it): every record, the segment chain, every
                      index, the checkpoint; print each finding; exit 0 when
                      clean, 1 when damaged
  --repair            cut a damaged log back to its last good record, rebuild
                      the indexes and the checkpoint, print the event ids lost
  -h, --help          print this help and exit
  -V, --version       print the version and exit

Values may also be given as --flag=VALUE. Every long flag may also be written
with one dash, as the original smss wrote them:
  smss -role master
  smss -role slave -host 127.0.0.1 -port 12301 -event 0
";

/// The master's port when `--host` is given without `--port`: the protocol's
/// default port, which the original smss's slaves assumed too.
pub const DEFAULT_MASTER_PORT: u16 = 12301;

/// The `--version` text (without a trailing newline).
pub const VERSION_TEXT: &str = concat!("smss ", env!("CARGO_PKG_VERSION"));

/// The parsed, checked flags of a server run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerArgs {
    /// `--config`; default `config/config.yaml` (relative to the working directory).
    pub config: PathBuf,
    /// `--role`; default master.
    pub role: Role,
    /// `--master HOST:PORT`: present exactly when `role` is slave. Checked to have a
    /// non-empty host and a port 1..=65535; the host is not resolved here. An IPv6
    /// address is written in brackets: `[::1]:12301`.
    pub master: Option<String>,
    /// `--event N`: slave only; the event id to replicate from.
    pub event: Option<u64>,
    /// `--demote`: slave only; give up a promoted server's master claim.
    pub demote: bool,
}

impl Default for ServerArgs {
    fn default() -> Self {
        ServerArgs {
            config: PathBuf::from(DEFAULT_CONFIG_PATH),
            role: Role::Master,
            master: None,
            event: None,
            demote: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the server.
    Run(ServerArgs),
    /// Print [`USAGE`] and exit 0.
    Help,
    /// Print [`VERSION_TEXT`] and exit 0.
    Version,
    /// `--check`: verify the data directory of this config file offline.
    Check { config: PathBuf },
    /// `--repair`: repair the data directory of this config file offline.
    Repair { config: PathBuf },
}

/// A command-line mistake. Each message ends by pointing at `smss --help` where that
/// helps; `main` prints it and exits with status 2.
#[derive(Debug)]
pub enum CliError {
    /// A flag smss does not know, e.g. `--foo` or `-x`.
    UnknownFlag(String),
    /// A flag that needs a value was given none (or was followed by another flag).
    MissingValue { flag: &'static str },
    /// A flag that takes no value was given one, e.g. `--help=yes`.
    UnexpectedValue { flag: String, value: String },
    /// A flag's value is unusable; `reason` says why.
    BadValue {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// The same flag twice.
    Repeated { flag: &'static str },
    /// A positional argument; smss takes none.
    UnexpectedArgument(String),
    /// `--master` together with `--host`/`--port`: two names for one master.
    MasterTwice,
    /// `--port` without `--host`.
    PortWithoutHost,
    /// `--host`/`--port` with role master.
    HostNotAllowed,
    /// `--role slave` without `--master`.
    MasterRequired,
    /// `--master` with role master.
    MasterNotAllowed,
    /// `--demote` with role master.
    DemoteNotAllowed,
    /// `--event` with role master.
    EventNotAllowed,
    /// `--check` or `--repair` with a server flag, or both together.
    OfflineOnly { flag: &'static str },
    /// Any other lexopt error.
    Parse(lexopt::Error),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::UnknownFlag(flag) => write!(f, "unknown flag {flag} (see smss --help)"),
            CliError::MissingValue { flag } => {
                write!(f, "{flag} needs a value (see smss --help)")
            }
            CliError::UnexpectedValue { flag, value } => {
                write!(f, "{flag} takes no value, got '{value}'")
            }
            CliError::BadValue {
                flag,
                value,
                reason,
            } => write!(f, "{flag} {reason}, got '{value}'"),
            CliError::Repeated { flag } => write!(f, "{flag} given more than once"),
            CliError::UnexpectedArgument(arg) => write!(
                f,
                "unexpected argument '{arg}': smss takes only flags (see smss --help)"
            ),
            CliError::MasterTwice => {
                f.write_str("--master and --host/--port both name the master: give one of them")
            }
            CliError::PortWithoutHost => f.write_str(
                "--port is the master's port and needs --host (--host H --port P); \
                 the port this server listens on is `port:` in its config file",
            ),
            CliError::HostNotAllowed => f.write_str(
                "--host and --port name the master and are only allowed with --role slave; \
                 the port this server listens on is `port:` in its config file",
            ),
            CliError::MasterRequired => f.write_str(
                "--master is required with --role slave (e.g. --master 127.0.0.1:12301, \
                 or --host 127.0.0.1 --port 12301)",
            ),
            CliError::MasterNotAllowed => f.write_str("--master is only allowed with --role slave"),
            CliError::EventNotAllowed => f.write_str("--event is only allowed with --role slave"),
            CliError::DemoteNotAllowed => {
                f.write_str("--demote is only allowed with --role slave --master HOST:PORT")
            }
            CliError::OfflineOnly { flag } => write!(
                f,
                "{flag} works on the data directory offline and takes only --config (see smss --help)"
            ),
            CliError::Parse(e) => write!(f, "bad command line: {e} (see smss --help)"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Parse(e) => Some(e),
            _ => None,
        }
    }
}

/// Parse the server's arguments, WITHOUT `argv[0]` (pass `std::env::args_os().skip(1)`).
/// `--help` / `--version` win as soon as they are seen.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, CliError> {
    use lexopt::Arg::{Long, Short, Value};

    let (args, one_dash) = single_dash_as_long(args);
    let mut parser = lexopt::Parser::from_args(args);
    let mut host: Option<String> = None;
    let mut port: Option<u16> = None;
    let mut config: Option<PathBuf> = None;
    let mut role: Option<Role> = None;
    let mut master: Option<String> = None;
    let mut event: Option<u64> = None;
    let mut offline: Option<&'static str> = None;
    let mut demote = false;

    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return Err(map_lexopt(e)),
        };
        match arg {
            Short('h') | Long("help") => {
                no_value(&mut parser, "--help")?;
                return Ok(Command::Help);
            }
            Short('V') | Long("version") => {
                no_value(&mut parser, "--version")?;
                return Ok(Command::Version);
            }
            Long(f @ ("check" | "repair")) => {
                let flag = if f == "check" { "--check" } else { "--repair" };
                no_value(&mut parser, flag)?;
                if offline.is_some() {
                    return Err(CliError::OfflineOnly { flag });
                }
                offline = Some(flag);
            }
            Long("config") => {
                let v = value(&mut parser, "--config")?;
                if v.is_empty() {
                    return Err(bad("--config", "", "must be a file path"));
                }
                set_once(&mut config, PathBuf::from(v), "--config")?;
            }
            Long("role") => {
                let v = string_value(&mut parser, "--role")?;
                let r = match v.as_str() {
                    "master" => Role::Master,
                    "slave" => Role::Slave,
                    _ => return Err(bad("--role", &v, "must be master or slave")),
                };
                set_once(&mut role, r, "--role")?;
            }
            Long("master") => {
                let v = string_value(&mut parser, "--master")?;
                check_host_port(&v).map_err(|reason| {
                    bad("--master", &v, &format!("must be HOST:PORT, {reason}"))
                })?;
                set_once(&mut master, v, "--master")?;
            }
            Long("event") => {
                let v = string_value(&mut parser, "--event")?;
                let n = v.parse::<u64>().map_err(|_| {
                    bad(
                        "--event",
                        &v,
                        "must be an event id (a whole number, 0 or more)",
                    )
                })?;
                set_once(&mut event, n, "--event")?;
            }
            Long("demote") => {
                no_value(&mut parser, "--demote")?;
                demote = true;
            }
            Long("host") => {
                let v = string_value(&mut parser, "--host")?;
                set_once(&mut host, v, "--host")?;
            }
            Long("port") => {
                let v = string_value(&mut parser, "--port")?;
                let p = match v.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(bad("--port", &v, "must be the master's port, 1-65535")),
                };
                set_once(&mut port, p, "--port")?;
            }
            Short(c) => return Err(CliError::UnknownFlag(format!("-{c}"))),
            Long(name) => {
                // Name it as it was written.
                let dashes = if one_dash.iter().any(|n| n == name) {
                    "-"
                } else {
                    "--"
                };
                return Err(CliError::UnknownFlag(format!("{dashes}{name}")));
            }
            Value(v) => {
                return Err(CliError::UnexpectedArgument(
                    v.to_string_lossy().into_owned(),
                ));
            }
        }
    }

    let config = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    if let Some(flag) = offline {
        let server_flag = role.is_some() || master.is_some() || event.is_some() || demote;
        if server_flag || host.is_some() || port.is_some() {
            return Err(CliError::OfflineOnly { flag });
        }
        return Ok(if flag == "--check" {
            Command::Check { config }
        } else {
            Command::Repair { config }
        });
    }
    let role = role.unwrap_or(Role::Master);
    let master = master_from_host_port(master, host, port, role)?;
    match role {
        Role::Slave if master.is_none() => return Err(CliError::MasterRequired),
        Role::Master if master.is_some() => return Err(CliError::MasterNotAllowed),
        Role::Master if event.is_some() => return Err(CliError::EventNotAllowed),
        Role::Master if demote => return Err(CliError::DemoteNotAllowed),
        _ => {}
    }
    Ok(Command::Run(ServerArgs {
        config,
        role,
        master,
        event,
        demote,
    }))
}

/// The original smss's single-dash long flags, as the double-dash ones
/// lexopt knows: a token `-name` or `-name=VALUE` whose name is two or more
/// of `a-z` and `-` becomes `--name…` (lexopt would read `-role` as `-r`
/// with the value `ole`). One-letter flags (`-h`, `-V`), values such as `-1`
/// and everything after `--` stay as they are. Also returns the names so
/// rewritten, for error messages.
fn single_dash_as_long<I: IntoIterator<Item = OsString>>(args: I) -> (Vec<OsString>, Vec<String>) {
    let mut out = Vec::new();
    let mut names = Vec::new();
    let mut options_end = false;
    for arg in args {
        if options_end {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            options_end = true;
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            let rest = s.strip_prefix('-').filter(|r| !r.starts_with('-'))?;
            let name = rest.split_once('=').map_or(rest, |(n, _)| n);
            let long = name.len() >= 2
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
            long.then(|| (format!("-{s}"), name.to_string()))
        });
        match rewritten {
            Some((long, name)) => {
                out.push(OsString::from(long));
                names.push(name);
            }
            None => out.push(arg),
        }
    }
    (out, names)
}

/// `--host H [--port P]`, the original smss's way to name the master, as the
/// `--master H:P` it stands for (P defaults to [`DEFAULT_MASTER_PORT`]). An
/// IPv6 host may be given bare (`::1`) or in brackets. `--port` alone is
/// refused: on its own it reads like the listen port, which comes from the
/// config file.
fn master_from_host_port(
    master: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    role: Role,
) -> Result<Option<String>, CliError> {
    if master.is_some() && (host.is_some() || port.is_some()) {
        return Err(CliError::MasterTwice);
    }
    let Some(host) = host else {
        if port.is_some() {
            return Err(CliError::PortWithoutHost);
        }
        return Ok(master);
    };
    if role == Role::Master {
        return Err(CliError::HostNotAllowed);
    }
    let bracketed = match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host.clone(),
    };
    if bracketed.contains(':') && !bracketed.starts_with('[') {
        return Err(bad(
            "--host",
            &host,
            "must be a host name or address without a port (the port goes in --port)",
        ));
    }
    let addr = format!("{bracketed}:{}", port.unwrap_or(DEFAULT_MASTER_PORT));
    check_host_port(&addr).map_err(|reason| {
        bad(
            "--host",
            &host,
            &format!("must be a host name or address, {reason}"),
        )
    })?;
    Ok(Some(addr))
}

fn bad(flag: &'static str, value: &str, reason: &str) -> CliError {
    CliError::BadValue {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn set_once<T>(slot: &mut Option<T>, v: T, flag: &'static str) -> Result<(), CliError> {
    if slot.is_some() {
        return Err(CliError::Repeated { flag });
    }
    *slot = Some(v);
    Ok(())
}

/// Reject `--help=x`.
fn no_value(parser: &mut lexopt::Parser, flag: &str) -> Result<(), CliError> {
    match parser.optional_value() {
        None => Ok(()),
        Some(v) => Err(CliError::UnexpectedValue {
            flag: flag.to_string(),
            value: v.to_string_lossy().into_owned(),
        }),
    }
}

/// The value of a flag. `--config --role x` would make lexopt take `--role` as the
/// value; a value starting with `--` is treated as a missing value instead.
fn value(parser: &mut lexopt::Parser, flag: &'static str) -> Result<OsString, CliError> {
    let v = parser.value().map_err(|e| match e {
        lexopt::Error::MissingValue { .. } => CliError::MissingValue { flag },
        other => map_lexopt(other),
    })?;
    if v.to_string_lossy().starts_with("--") {
        return Err(CliError::MissingValue { flag });
    }
    Ok(v)
}

fn string_value(parser: &mut lexopt::Parser, flag: &'static str) -> Result<String, CliError> {
    let v = value(parser, flag)?;
    v.into_string()
        .map_err(|v| bad(flag, &v.to_string_lossy(), "must be valid UTF-8"))
}

fn map_lexopt(e: lexopt::Error) -> CliError {
    match e {
        lexopt::Error::UnexpectedValue { option, value } => CliError::UnexpectedValue {
            flag: option,
            value: value.to_string_lossy().into_owned(),
        },
        lexopt::Error::UnexpectedOption(flag) => CliError::UnknownFlag(flag),
        lexopt::Error::UnexpectedArgument(arg) => {
            CliError::UnexpectedArgument(arg.to_string_lossy().into_owned())
        }
        other => CliError::Parse(other),
    }
}

/// Check `HOST:PORT`: a non-empty host without spaces (an IPv6 address in brackets)
/// and a port 1..=65535. Returns what is wrong.
pub fn check_host_port(s: &str) -> Result<(), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("missing ':PORT'".to_string());
    };
    if host.is_empty() {
        return Err("missing HOST".to_string());
    }
    if let Some(inner) = host.strip_prefix('[') {
        let Some(addr) = inner.strip_suffix(']') else {
            return Err("unclosed '[' in HOST".to_string());
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{addr}' is not an IPv6 address"));
        }
    } else if host.contains(':') {
        return Err("an IPv6 HOST must be in brackets, e.g. [::1]:12301".to_string());
    } else if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/[]@".contains(c))
    {
        return Err(format!("'{host}' is not a host name or address"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err("PORT must be 1-65535".to_string()),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("PORT must be a number 1-65535, not '{port}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, CliError> {
        parse_args(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> ServerArgs {
        match parse(args) {
            Ok(Command::Run(a)) => a,
            other => panic!("{args:?}: expected Run, got {other:?}"),
        }
    }

    fn err(args: &[&str]) -> CliError {
        match parse(args) {
            Err(e) => e,
            Ok(c) => panic!("{args:?}: expected an error, got {c:?}"),
        }
    }

    #[test]
    fn no_args_gives_defaults() {
        let a = run(&[]);
        assert_eq!(a, ServerArgs::default());
        assert_eq!(a.config, PathBuf::from("config/config.yaml"));
        assert_eq!(a.role, Role::Master);
        assert_eq!(a.master, None);
        assert_eq!(a.event, None);
    }

    #[test]
    fn config_flag_both_spellings() {
        assert_eq!(run(&["--config", "x.yaml"]).config, PathBuf::from("x.yaml"));
        assert_eq!(run(&["--config=x"]).config, PathBuf::from("x"));
        assert_eq!(
            run(&["--config=/etc/smss/a b.yaml"]).config,
            PathBuf::from("/etc/smss/a b.yaml")
        );
    }

    #[test]
    fn role_master_explicit() {
        let a = run(&["--role", "master"]);
        assert_eq!(a.role, Role::Master);
        assert_eq!(a.master, None);
    }

    #[test]
    fn every_flag_for_a_slave() {
        let a = run(&[
            "--config",
            "config/slave.yaml",
            "--role",
            "slave",
            "--master",
            "127.0.0.1:12301",
            "--event",
            "42",
        ]);
        assert_eq!(
            a,
            ServerArgs {
                config: PathBuf::from("config/slave.yaml"),
                role: Role::Slave,
                master: Some("127.0.0.1:12301".into()),
                event: Some(42),
                demote: false,
            }
        );
        // Order does not matter; = spelling works for all.
        let b = run(&[
            "--event=42",
            "--master=127.0.0.1:12301",
            "--role=slave",
            "--config=config/slave.yaml",
        ]);
        assert_eq!(a, b);
    }

    #[test]
    fn master_host_forms() {
        for m in [
            "localhost:12301",
            "[::1]:12301",
            "db-1.example.com:1",
            "10.0.0.2:65535",
        ] {
            assert_eq!(
                run(&["--role", "slave", "--master", m]).master.as_deref(),
                Some(m)
            );
        }
        for m in [
            "127.0.0.1",
            ":12301",
            "host:",
            "host:0",
            "host:65536",
            "host:abc",
            "::1:5",
            "[::1:5",
            "a b:1",
        ] {
            let e = err(&["--role", "slave", "--master", m]);
            assert!(
                matches!(
                    e,
                    CliError::BadValue {
                        flag: "--master",
                        ..
                    }
                ),
                "{m}: {e:?}"
            );
            assert!(e.to_string().contains("--master"), "{e}");
        }
    }

    #[test]
    fn unknown_flag() {
        let e = err(&["--foo"]);
        assert!(matches!(&e, CliError::UnknownFlag(f) if f == "--foo"));
        assert_eq!(e.to_string(), "unknown flag --foo (see smss --help)");
        assert!(matches!(err(&["-x"]), CliError::UnknownFlag(f) if f == "-x"));
        assert!(matches!(err(&["--foo=1"]), CliError::UnknownFlag(f) if f == "--foo"));
    }

    #[test]
    fn missing_values() {
        for flag in ["--config", "--role", "--master", "--event"] {
            let e = err(&[flag]);
            assert!(
                matches!(e, CliError::MissingValue { flag: f } if f == flag),
                "{flag}: {e:?}"
            );
            assert!(e.to_string().contains(flag));
        }
        // A following flag is not taken as the value.
        assert!(matches!(
            err(&["--config", "--role", "slave"]),
            CliError::MissingValue { flag: "--config" }
        ));
        assert!(matches!(
            err(&["--config="]),
            CliError::BadValue {
                flag: "--config",
                ..
            }
        ));
    }

    #[test]
    fn bad_role() {
        let e = err(&["--role", "x"]);
        assert!(matches!(e, CliError::BadValue { flag: "--role", .. }));
        assert_eq!(e.to_string(), "--role must be master or slave, got 'x'");
        assert!(matches!(
            err(&["--role", "Slave"]),
            CliError::BadValue { .. }
        ));
    }

    #[test]
    fn slave_without_master() {
        let e = err(&["--role", "slave"]);
        assert!(matches!(e, CliError::MasterRequired));
        assert!(
            e.to_string()
                .starts_with("--master is required with --role slave")
        );
        assert!(matches!(
            err(&["--role", "slave", "--event", "3"]),
            CliError::MasterRequired
        ));
    }

    #[test]
    fn master_with_master_flag() {
        assert!(matches!(
            err(&["--master", "127.0.0.1:12301"]),
            CliError::MasterNotAllowed
        ));
        assert!(matches!(
            err(&["--role", "master", "--master", "127.0.0.1:12301"]),
            CliError::MasterNotAllowed
        ));
    }

    #[test]
    fn event_only_with_slave() {
        let e = err(&["--event", "5"]);
        assert!(matches!(e, CliError::EventNotAllowed));
        assert!(e.to_string().contains("--event"));
    }

    #[test]
    fn demote_only_with_slave_and_never_offline() {
        let e = err(&["--demote"]);
        assert!(matches!(e, CliError::DemoteNotAllowed));
        assert!(e.to_string().contains("--role slave"));
        assert!(matches!(
            err(&["--check", "--demote"]),
            CliError::OfflineOnly { .. }
        ));
        assert!(matches!(
            err(&["--role", "slave", "--master", "h:1", "--demote=x"]),
            CliError::UnexpectedValue { .. }
        ));
        let a = run(&["--role", "slave", "--master", "h:1", "--demote"]);
        assert!(a.demote);
        assert!(!run(&["--role", "slave", "--master", "h:1"]).demote);
        assert!(run(&["-role", "slave", "-master", "h:1", "-demote"]).demote);
    }

    #[test]
    fn event_not_a_number() {
        for v in ["abc", "-1", "1.5", "", "18446744073709551616"] {
            let e = err(&["--role", "slave", "--master", "h:1", "--event", v]);
            assert!(
                matches!(
                    e,
                    CliError::BadValue {
                        flag: "--event",
                        ..
                    }
                ),
                "{v:?}: {e:?}"
            );
        }
        assert_eq!(
            run(&["--role", "slave", "--master", "h:1", "--event", "0"]).event,
            Some(0)
        );
    }

    #[test]
    fn repeated_flag() {
        assert!(matches!(
            err(&["--config", "a", "--config", "b"]),
            CliError::Repeated { flag: "--config" }
        ));
    }

    #[test]
    fn positional_argument() {
        let e = err(&["serve"]);
        assert!(matches!(&e, CliError::UnexpectedArgument(a) if a == "serve"));
        assert!(e.to_string().contains("serve"));
        assert!(matches!(
            err(&["--config", "a.yaml", "extra"]),
            CliError::UnexpectedArgument(a) if a == "extra"
        ));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"]).ok(), Some(Command::Help));
        assert_eq!(
            parse(&["--check", "--config", "c.yaml"]).ok(),
            Some(Command::Check {
                config: PathBuf::from("c.yaml")
            })
        );
        assert_eq!(
            parse(&["--repair"]).ok(),
            Some(Command::Repair {
                config: PathBuf::from(DEFAULT_CONFIG_PATH)
            })
        );
        for bad in [
            &["--check", "--repair"][..],
            &["--repair", "--role", "master"],
            &["--check", "--role", "slave", "--master", "h:1"],
        ] {
            assert!(
                matches!(parse(bad), Err(CliError::OfflineOnly { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(&["--check=yes"]),
            Err(CliError::UnexpectedValue { .. })
        ));
        assert_eq!(parse(&["-h"]).ok(), Some(Command::Help));
        assert_eq!(parse(&["--version"]).ok(), Some(Command::Version));
        assert_eq!(parse(&["-V"]).ok(), Some(Command::Version));
        // Help wins even with other (valid or not-yet-checked) flags around it.
        assert_eq!(
            parse(&["--role", "slave", "--help"]).ok(),
            Some(Command::Help)
        );
        assert!(matches!(
            err(&["--help=yes"]),
            CliError::UnexpectedValue { .. }
        ));
        for flag in [
            "--config",
            "--role",
            "--master",
            "--event",
            "--help",
            "--version",
        ] {
            assert!(USAGE.contains(flag), "USAGE lacks {flag}");
        }
        assert!(VERSION_TEXT.starts_with("smss "));
    }

    // --- the original smss's command lines ---------------------------------

    fn slave_of(master: &str) -> ServerArgs {
        ServerArgs {
            role: Role::Slave,
            master: Some(master.into()),
            ..ServerArgs::default()
        }
    }

    #[test]
    fn seed_master_command_line() {
        assert_eq!(run(&["-role", "master"]), ServerArgs::default());
        assert_eq!(run(&["-role=master"]), ServerArgs::default());
    }

    #[test]
    fn seed_slave_command_line() {
        let a = run(&[
            "-role",
            "slave",
            "-host",
            "127.0.0.1",
            "-port",
            "12301",
            "-event",
            "0",
        ]);
        assert_eq!(
            a,
            ServerArgs {
                event: Some(0),
                ..slave_of("127.0.0.1:12301")
            }
        );
        // The same as the double-dash and --master forms.
        assert_eq!(
            a,
            run(&[
                "--role",
                "slave",
                "--host",
                "127.0.0.1",
                "--port",
                "12301",
                "--event",
                "0"
            ])
        );
        assert_eq!(
            a,
            run(&[
                "--role",
                "slave",
                "--master",
                "127.0.0.1:12301",
                "--event",
                "0"
            ])
        );
    }

    #[test]
    fn every_long_flag_takes_one_dash() {
        assert_eq!(run(&["-config", "x.yaml"]).config, PathBuf::from("x.yaml"));
        assert_eq!(run(&["-config=x.yaml"]).config, PathBuf::from("x.yaml"));
        assert_eq!(run(&["-role", "slave", "-master", "h:1"]), slave_of("h:1"));
        assert_eq!(
            run(&["-role=slave", "-master=h:1", "-event=7"]).event,
            Some(7)
        );
        assert_eq!(run(&["-role=slave", "-host=h", "-port=2"]), slave_of("h:2"));
        assert_eq!(parse(&["-help"]).ok(), Some(Command::Help));
        assert_eq!(parse(&["-version"]).ok(), Some(Command::Version));
        assert_eq!(
            parse(&["-check", "-config", "c.yaml"]).ok(),
            Some(Command::Check {
                config: PathBuf::from("c.yaml")
            })
        );
        assert_eq!(
            parse(&["-repair"]).ok(),
            Some(Command::Repair {
                config: PathBuf::from(DEFAULT_CONFIG_PATH)
            })
        );
        // --host and --port are server flags too: not for an offline check.
        for args in [&["-check", "-host", "h"][..], &["-repair", "-port", "1"]] {
            assert!(
                matches!(parse(args), Err(CliError::OfflineOnly { .. })),
                "{args:?}"
            );
        }
        // One- and two-dash spellings mix, and count as the same flag.
        assert_eq!(run(&["--role", "slave", "-master", "h:1"]), slave_of("h:1"));
        assert!(matches!(
            err(&["-role", "master", "--role", "slave"]),
            CliError::Repeated { flag: "--role" }
        ));
        assert!(matches!(
            err(&["-host", "a", "-host", "b", "-role", "slave"]),
            CliError::Repeated { flag: "--host" }
        ));
    }

    #[test]
    fn one_dash_rewriting_leaves_values_and_short_flags_alone() {
        // A single-dash flag is still missing its value when another follows.
        assert!(matches!(
            err(&["-config", "-role", "slave"]),
            CliError::MissingValue { flag: "--config" }
        ));
        for flag in ["-config", "-role", "-master", "-event", "-host", "-port"] {
            let e = err(&[flag]);
            assert!(matches!(e, CliError::MissingValue { .. }), "{flag}: {e:?}");
        }
        // -1 is a value, not a flag.
        assert!(matches!(
            err(&["-role", "slave", "-master", "h:1", "-event", "-1"]),
            CliError::BadValue {
                flag: "--event",
                ..
            }
        ));
        // A value with a dash in an = form is kept as it is.
        assert_eq!(
            run(&["-config=-odd.yaml"]).config,
            PathBuf::from("-odd.yaml")
        );
        // Unknown flags are named as written.
        assert!(matches!(err(&["-foo"]), CliError::UnknownFlag(f) if f == "-foo"));
        assert!(matches!(err(&["-foo=1"]), CliError::UnknownFlag(f) if f == "-foo"));
        assert!(matches!(err(&["--foo"]), CliError::UnknownFlag(f) if f == "--foo"));
        assert!(matches!(err(&["-x"]), CliError::UnknownFlag(f) if f == "-x"));
        assert!(matches!(err(&["-Role"]), CliError::UnknownFlag(f) if f == "-R"));
        // -h and -V keep their meaning; nothing after -- is a flag.
        assert_eq!(parse(&["-h"]).ok(), Some(Command::Help));
        assert_eq!(parse(&["-V"]).ok(), Some(Command::Version));
        assert!(matches!(
            err(&["--", "-role"]),
            CliError::UnexpectedArgument(a) if a == "-role"
        ));
    }

    #[test]
    fn host_and_port_name_the_master() {
        assert_eq!(
            run(&[
                "--role",
                "slave",
                "--host",
                "db-1.example.com",
                "--port",
                "7"
            ]),
            slave_of("db-1.example.com:7")
        );
        // The port defaults to the protocol's.
        assert_eq!(
            run(&["-role", "slave", "-host", "10.0.0.2"]),
            slave_of("10.0.0.2:12301")
        );
        assert_eq!(DEFAULT_MASTER_PORT, 12301);
        // IPv6, bare or in brackets.
        assert_eq!(
            run(&["-role", "slave", "-host", "::1", "-port", "5"]),
            slave_of("[::1]:5")
        );
        assert_eq!(
            run(&["-role", "slave", "-host", "[::1]"]),
            slave_of("[::1]:12301")
        );
    }

    #[test]
    fn host_and_port_mistakes() {
        let slave = ["-role", "slave"];
        let with = |extra: &[&str]| err(&[&slave[..], extra].concat());
        for host in ["", "a b", "127.0.0.1:12301", "h/x", "[::1", "[nope]"] {
            let e = with(&["-host", host]);
            assert!(
                matches!(e, CliError::BadValue { flag: "--host", .. }),
                "{host:?}: {e:?}"
            );
            assert!(e.to_string().starts_with("--host "), "{e}");
        }
        assert!(
            with(&["-host", "127.0.0.1:12301"])
                .to_string()
                .contains("--port")
        );
        for port in ["0", "65536", "abc", "-1", ""] {
            let e = with(&["-host", "h", "-port", port]);
            assert!(
                matches!(e, CliError::BadValue { flag: "--port", .. }),
                "{port:?}: {e:?}"
            );
            assert!(e.to_string().contains("master's port"), "{e}");
        }
        // --port alone: the master's port needs its host.
        let e = with(&["-port", "12301"]);
        assert!(matches!(e, CliError::PortWithoutHost), "{e:?}");
        assert!(e.to_string().contains("needs --host"), "{e}");
        assert!(matches!(
            err(&["-role", "master", "-port", "12301"]),
            CliError::PortWithoutHost
        ));
        // Both forms at once.
        for extra in [
            &["-host", "h"][..],
            &["-port", "1"],
            &["-host", "h", "-port", "1"],
        ] {
            let e = with(&[&["-master", "h:1"][..], extra].concat());
            assert!(matches!(e, CliError::MasterTwice), "{extra:?}: {e:?}");
        }
        assert!(CliError::MasterTwice.to_string().contains("--master"));
        // Only a slave has a master.
        for args in [
            &["-host", "h"][..],
            &["-role", "master", "-host", "h", "-port", "1"],
        ] {
            let e = err(args);
            assert!(matches!(e, CliError::HostNotAllowed), "{args:?}: {e:?}");
            assert!(e.to_string().contains("--role slave"), "{e}");
        }
        // Neither form.
        let e = err(&slave);
        assert!(matches!(e, CliError::MasterRequired));
        assert!(e.to_string().contains("--host"), "{e}");
    }

    #[test]
    fn usage_shows_the_seed_forms() {
        for text in [
            "--host HOST",
            "--port PORT",
            "smss -role master",
            "smss -role slave -host 127.0.0.1 -port 12301 -event 0",
        ] {
            assert!(USAGE.contains(text), "USAGE lacks {text:?}");
        }
    }
}
