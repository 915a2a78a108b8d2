//! The bench's command line: its modes, the options of one measurement and
//! of the suites (`matrix`, `peers`), their parsing and validation, and the
//! `smss-bench --help` text.

use std::ffi::OsString;

use super::error::BenchError;

/// Text of `smss-bench --help`.
pub const USAGE: &str = "\
usage: smss-bench pub|sub|e2e|delay|takeover [options]
                                                one measurement, one key=value line
       smss-bench matrix [--smss PATH] [--max-secs X] [--restart-gib G]
                         [--client-threads T] [--repl-backlog N]
                         [--repl-rounds R]
       smss-bench bridge [--smss PATH]  (the matrix's bridge figures alone:
                         smss -> NATS JetStream; needs nats-server)
       smss-bench footprint [--smss PATH]  (the matrix's RSS rows with
                         300 silent and 100 idle subscribers, alone)
       smss-bench peers  [--smss PATH] [--max-secs X] [--client-threads T]
                         [--rounds R]   (R rounds over all servers; each
                         row shows its median round: the machine is noisy)

options of one measurement:
  --host H              server host (127.0.0.1)
  --port P              server port (12301 smss, 6379 resp, 11300 beanstalk)
  --protocol NAME       smss | resp | beanstalk (smss)
  --conns C             client connections (1)
  --threads T           pub only: client threads the connections are spread
                        over, each driving its share in lockstep; at most C
                        (default: one thread per connection)
  --count N             messages (10000)
  --size S              payload bytes (200)
  --pipeline P          requests in flight per connection (1)
  --mpub B              smss only: B messages per MPUB request (off)
  --key                 pub, smss only: each PUB carries a unique dedup key
                        (msgid=<16 hex digits>), to measure the dedup table
  --tls-ca FILE         smss only: connect over TLS (--port is the TLS port),
                        checking the server's certificate against this CA
  --batch B             sub: messages per batch/XREAD COUNT/reserve group (256)
  --group G             sub, smss only: drain as consumer group G (each ACK
                        is a durable commit of the group's position)
  --shared              sub --group: the group is shared (mode=shared) and
                        --members connections drain it together
  --members M           sub --shared: members of the shared group (1)
  --work-us W           sub --shared: each member waits W µs per message of a
                        batch before its ACK (simulated work; 0)
  --topic T             topic / stream key / tube (fresh bench-<pid>-<n>)
  --delay-ms D          delay: how far ahead at least the due second lies (2000)
  --max-secs X          stop after X seconds and report truncated=1 (60)
  --server-pid PID      also report the server's CPU time (server_cpu_s,
                        server_us_per_msg) from /proc/PID/stat

takeover (smss only): --count rounds of a group's active subscriber closing
its connection with a batch unacknowledged while a standby waits; the
latency figures are connection end -> first batch at the standby.

The line has client_cpu_s and client_us_per_msg: CPU time (user+system) of
the bench itself during the timed part, from /proc/self/stat; a pub line
also has threads=, the client threads used.

options of matrix and peers:
  --client-threads T    client threads of every pub row (0 = one per
                        connection, the default)
  --repl-backlog N      matrix: messages of the backlog a fresh slave copies
                        in the replication catch-up row (1000000; 0 skips it)
  --repl-rounds R       matrix: rounds over the no-slave, async and semi-sync
                        masters; each throughput row shows its median (3)
";

/// Which wire protocol the bench speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smss,
    Resp,
    Beanstalk,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smss => "smss",
            Protocol::Resp => "resp",
            Protocol::Beanstalk => "beanstalk",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Protocol::Smss => 12301,
            Protocol::Resp => 6379,
            Protocol::Beanstalk => 11300,
        }
    }
}

/// Kind of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pub,
    Sub,
    E2e,
    Delay,
    Takeover,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pub => "pub",
            Mode::Sub => "sub",
            Mode::E2e => "e2e",
            Mode::Delay => "delay",
            Mode::Takeover => "takeover",
        }
    }
}

/// Options of one measurement (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct Opts {
    pub mode: Mode,
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
    pub conns: usize,
    pub count: u64,
    pub size: usize,
    pub pipeline: usize,
    /// Messages per MPUB request; 0 = plain PUB.
    pub mpub: usize,
    /// `pub --key`: every PUB carries a unique dedup key.
    pub key: bool,
    pub batch: usize,
    pub topic: Option<String>,
    /// `sub`: drain as this consumer group.
    pub group: Option<String>,
    /// `sub --group`: as a shared group of `members` connections, each
    /// waiting `work_us` per message before its ACK.
    pub shared: bool,
    pub members: usize,
    pub work_us: u64,
    pub delay_ms: u64,
    pub max_secs: f64,
    /// `pub`: client threads the connections are spread over; 0 = one per
    /// connection. Clamped to the number of connections.
    pub threads: usize,
    /// The server's PID, to report its CPU time; `None` = unknown.
    pub server_pid: Option<u32>,
    /// `--tls-ca FILE`: connect over TLS, trusting this CA (smss only).
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Opts {
    pub fn new(mode: Mode, protocol: Protocol, port: u16) -> Opts {
        Opts {
            mode,
            host: "127.0.0.1".into(),
            port,
            protocol,
            conns: 1,
            count: 10_000,
            size: 200,
            pipeline: 1,
            mpub: 0,
            key: false,
            batch: 256,
            topic: None,
            group: None,
            shared: false,
            members: 1,
            work_us: 0,
            delay_ms: 2000,
            max_secs: 60.0,
            threads: 0,
            server_pid: None,
            tls_ca: None,
        }
    }
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Options of `bench matrix` and `bench peers`.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteOpts {
    /// The smss server binary; `None` = `smss` next to the running executable.
    pub smss: Option<std::path::PathBuf>,
    pub max_secs: f64,
    /// Size of the log for the restart row in GiB; 0 skips it.
    pub restart_gib: f64,
    /// Client threads of every `pub` row; 0 = one per connection.
    pub client_threads: usize,
    /// `peers`: rounds over all systems; each row reports its median round.
    pub rounds: usize,
    /// `matrix`: messages in the backlog of the replication catch-up row;
    /// 0 skips that row.
    pub repl_backlog: u64,
    /// `matrix`: rounds of the replication throughput rows (median shown).
    pub repl_rounds: usize,
}

/// A parsed `bench` command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    One(Opts),
    Matrix(SuiteOpts),
    Peers(SuiteOpts),
    Footprint(SuiteOpts),
    /// The matrix's bridge figures alone.
    Bridge(SuiteOpts),
    Help,
}

fn value<T: std::str::FromStr>(
    p: &mut lexopt::Parser,
    name: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, BenchError> {
    let raw = p
        .value()
        .map_err(|e| BenchError::Usage(format!("{name}: {e}")))?;
    let s = raw
        .to_str()
        .ok_or_else(|| BenchError::Usage(format!("{name}: not UTF-8")))?;
    s.parse::<T>()
        .ok()
        .filter(|v| ok(v))
        .ok_or_else(|| BenchError::Usage(format!("{name}: bad value {s:?}")))
}

/// Parses the arguments after `bench`.
pub fn parse_args(args: Vec<OsString>) -> Result<Command, BenchError> {
    use lexopt::prelude::*;
    let usage = |m: String| BenchError::Usage(m);
    let mut p = lexopt::Parser::from_args(args);
    let first = match p.next().map_err(|e| usage(e.to_string()))? {
        Some(Value(v)) => v
            .into_string()
            .map_err(|_| usage("the mode is not UTF-8".into()))?,
        Some(Long("help")) | Some(Short('h')) => return Ok(Command::Help),
        Some(other) => return Err(usage(format!("expected a mode first, got {other:?}"))),
        None => {
            return Err(usage(
                "missing mode (pub, sub, e2e, delay, takeover, matrix, peers, footprint, bridge)"
                    .into(),
            ));
        }
    };
    if first == "help" {
        return Ok(Command::Help);
    }
    if ["matrix", "peers", "footprint", "bridge"].contains(&first.as_str()) {
        let mut s = SuiteOpts {
            smss: None,
            max_secs: 10.0,
            restart_gib: if first == "matrix" { 1.0 } else { 0.0 },
            client_threads: 0,
            rounds: 1,
            repl_backlog: if first == "matrix" { 1_000_000 } else { 0 },
            repl_rounds: if first == "matrix" { 3 } else { 0 },
        };
        while let Some(arg) = p.next().map_err(|e| usage(e.to_string()))? {
            match arg {
                Long("smss") => s.smss = Some(value::<String>(&mut p, "--smss", |_| true)?.into()),
                Long("max-secs") => {
                    s.max_secs = value(&mut p, "--max-secs", |v: &f64| *v > 0.0 && *v <= 3600.0)?
                }
                Long("restart-gib") => {
                    s.restart_gib =
                        value(&mut p, "--restart-gib", |v: &f64| (0.0..=16.0).contains(v))?
                }
                Long("client-threads") => {
                    s.client_threads = value(&mut p, "--client-threads", |v: &usize| *v <= 10_000)?
                }
                Long("repl-backlog") if first == "matrix" => {
                    s.repl_backlog = value(&mut p, "--repl-backlog", |v: &u64| *v <= 100_000_000)?
                }
                Long("repl-rounds") if first == "matrix" => {
                    s.repl_rounds =
                        value(&mut p, "--repl-rounds", |v: &usize| (1..=20).contains(v))?
                }
                Long("rounds") if first == "peers" => {
                    s.rounds = value(&mut p, "--rounds", |v: &usize| (1..=20).contains(v))?
                }
                Long("help") => return Ok(Command::Help),
                other => return Err(usage(format!("bench {first}: unexpected {other:?}"))),
            }
        }
        return Ok(if first == "matrix" {
            Command::Matrix(s)
        } else if first == "footprint" {
            Command::Footprint(s)
        } else if first == "bridge" {
            Command::Bridge(s)
        } else {
            Command::Peers(s)
        });
    }
    let mode = match first.as_str() {
        "pub" => Mode::Pub,
        "sub" => Mode::Sub,
        "e2e" => Mode::E2e,
        "delay" => Mode::Delay,
        "takeover" => Mode::Takeover,
        m => return Err(usage(format!("unknown bench mode {m:?}"))),
    };
    let mut o = Opts::new(mode, Protocol::Smss, 0);
    let mut port = None;
    while let Some(arg) = p.next().map_err(|e| usage(e.to_string()))? {
        match arg {
            Long("host") => o.host = value(&mut p, "--host", |s: &String| !s.is_empty())?,
            Long("port") => port = Some(value(&mut p, "--port", |v: &u16| *v > 0)?),
            Long("protocol") => {
                let s: String = value(&mut p, "--protocol", |_| true)?;
                o.protocol = match s.as_str() {
                    "smss" => Protocol::Smss,
                    "resp" | "redis" => Protocol::Resp,
                    "beanstalk" | "beanstalkd" => Protocol::Beanstalk,
                    _ => return Err(usage(format!("--protocol: unknown {s:?}"))),
                };
            }
            Long("conns") => {
                o.conns = value(&mut p, "--conns", |v: &usize| (1..=10_000).contains(v))?
            }
            Long("threads") => {
                o.threads = value(&mut p, "--threads", |v: &usize| (1..=10_000).contains(v))?
            }
            Long("server-pid") => {
                o.server_pid = Some(value(&mut p, "--server-pid", |v: &u32| *v > 0)?)
            }
            Long("count") => o.count = value(&mut p, "--count", |v: &u64| *v >= 1)?,
            Long("size") => o.size = value(&mut p, "--size", |v: &usize| *v <= 64 << 20)?,
            Long("pipeline") => {
                o.pipeline = value(&mut p, "--pipeline", |v: &usize| (1..=4096).contains(v))?
            }
            Long("mpub") => o.mpub = value(&mut p, "--mpub", |v: &usize| *v <= 100_000)?,
            Long("batch") => {
                o.batch = value(&mut p, "--batch", |v: &usize| (1..=100_000).contains(v))?
            }
            Long("topic") => {
                o.topic = Some(value(&mut p, "--topic", |s: &String| {
                    !s.is_empty()
                        && s.len() <= 128
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                })?)
            }
            Long("group") => {
                o.group = Some(value(&mut p, "--group", |s: &String| {
                    !s.is_empty()
                        && s.len() <= 128
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                })?)
            }
            Long("shared") => o.shared = true,
            Long("key") => o.key = true,
            Long("tls-ca") => {
                let v = p.value().map_err(|e| usage(format!("--tls-ca: {e}")))?;
                o.tls_ca = Some(v.into());
            }
            Long("members") => {
                o.members = value(&mut p, "--members", |v: &usize| (1..=256).contains(v))?
            }
            Long("work-us") => o.work_us = value(&mut p, "--work-us", |v: &u64| *v <= 1_000_000)?,
            Long("delay-ms") => o.delay_ms = value(&mut p, "--delay-ms", |v: &u64| *v >= 1)?,
            Long("max-secs") => {
                o.max_secs = value(&mut p, "--max-secs", |v: &f64| *v > 0.0 && *v <= 86_400.0)?
            }
            Long("help") => return Ok(Command::Help),
            other => return Err(usage(format!("bench {first}: unexpected {other:?}"))),
        }
    }
    o.port = port.unwrap_or(o.protocol.default_port());
    if o.mpub > 0 && o.protocol != Protocol::Smss {
        return Err(usage("--mpub is for --protocol smss only".into()));
    }
    if o.tls_ca.is_some() && o.protocol != Protocol::Smss {
        return Err(usage("--tls-ca is for --protocol smss only".into()));
    }
    if o.key && (o.protocol != Protocol::Smss || o.mpub > 0 || mode != Mode::Pub) {
        return Err(usage(
            "--key is for pub --protocol smss without --mpub".into(),
        ));
    }
    // Only `pub` has many connections to spread; elsewhere it would be a
    // silent no-op.
    if o.threads > 0 && mode != Mode::Pub {
        return Err(usage(format!(
            "--threads is for bench pub only, not {first}"
        )));
    }
    if o.group.is_some() && (mode != Mode::Sub || o.protocol != Protocol::Smss) {
        return Err(usage(
            "--group is for bench sub --protocol smss only".into(),
        ));
    }
    if o.shared && o.group.is_none() {
        return Err(usage("--shared needs --group".into()));
    }
    if !o.shared && (o.members != 1 || o.work_us != 0) {
        return Err(usage("--members and --work-us are for sub --shared".into()));
    }
    if matches!(mode, Mode::E2e | Mode::Delay | Mode::Takeover) && o.protocol != Protocol::Smss {
        return Err(usage(format!("bench {first} is for --protocol smss only")));
    }
    Ok(Command::One(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, BenchError> {
        parse_args(s.split_whitespace().map(OsString::from).collect())
    }

    #[test]
    fn defaults() {
        let Command::One(o) = parse("pub").expect("test") else {
            panic!("not one")
        };
        assert_eq!(o, Opts::new(Mode::Pub, Protocol::Smss, 12301));
        assert_eq!(o.addr(), "127.0.0.1:12301");
        let Command::One(o) = parse("sub --protocol resp").expect("test") else {
            panic!("not one")
        };
        assert_eq!((o.mode, o.port, o.batch), (Mode::Sub, 6379, 256));
        let Command::One(o) = parse("pub --protocol beanstalk").expect("test") else {
            panic!("not one")
        };
        assert_eq!(o.port, 11300);
        assert_eq!(
            parse("matrix").expect("test"),
            Command::Matrix(SuiteOpts {
                smss: None,
                max_secs: 10.0,
                restart_gib: 1.0,
                client_threads: 0,
                rounds: 1,
                repl_backlog: 1_000_000,
                repl_rounds: 3
            })
        );
        assert_eq!(
            parse("peers --max-secs 5").expect("test"),
            Command::Peers(SuiteOpts {
                smss: None,
                max_secs: 5.0,
                restart_gib: 0.0,
                client_threads: 0,
                rounds: 1,
                repl_backlog: 0,
                repl_rounds: 0
            })
        );
        assert_eq!(parse("--help").expect("test"), Command::Help);
    }

    #[test]
    fn all_options() {
        let c = parse(
            "pub --host h --port 9 --protocol smss --conns 16 --count 5 --size 7 \
             --pipeline 32 --mpub 4 --batch 8 --topic t1 --delay-ms 3 --max-secs 1.5",
        )
        .expect("test");
        let Command::One(o) = c else {
            panic!("not one")
        };
        assert_eq!(
            (
                o.host.as_str(),
                o.port,
                o.conns,
                o.count,
                o.size,
                o.pipeline,
                o.mpub,
                o.batch
            ),
            ("h", 9, 16, 5, 7, 32, 4, 8)
        );
        assert_eq!(
            (o.topic.as_deref(), o.delay_ms, o.max_secs),
            (Some("t1"), 3, 1.5)
        );
    }

    #[test]
    fn threads_server_pid_and_client_threads() {
        let one = |s: &str| match parse(s).expect("test") {
            Command::One(o) => o,
            other => panic!("{s:?} gave {other:?}"),
        };
        let o = one("pub --conns 256 --threads 16 --server-pid 4242");
        assert_eq!((o.conns, o.threads, o.server_pid), (256, 16, Some(4242)));
        // More threads than connections is accepted; the run clamps it.
        assert_eq!(one("pub --conns 2 --threads 8").threads, 8);
        assert_eq!(one("pub").threads, 0);
        assert_eq!(one("pub").server_pid, None);
        // --server-pid works for every mode.
        assert_eq!(one("sub --server-pid 1").server_pid, Some(1));
        assert_eq!(
            parse("matrix --client-threads 16").expect("test"),
            Command::Matrix(SuiteOpts {
                smss: None,
                max_secs: 10.0,
                restart_gib: 1.0,
                client_threads: 16,
                rounds: 1,
                repl_backlog: 1_000_000,
                repl_rounds: 3
            })
        );
        let Command::Peers(s) = parse("peers --client-threads 0").expect("test") else {
            panic!("not peers")
        };
        assert_eq!((s.client_threads, s.rounds), (0, 1));
        let Command::Peers(s) = parse("peers --rounds 3").expect("test") else {
            panic!("not peers")
        };
        assert_eq!(s.rounds, 3);
        let Command::Matrix(s) = parse("matrix --repl-backlog 20000").expect("test") else {
            panic!("not matrix")
        };
        assert_eq!(s.repl_backlog, 20_000);
        let Command::Matrix(s) = parse("matrix --repl-backlog 0").expect("test") else {
            panic!("not matrix")
        };
        assert_eq!(s.repl_backlog, 0);
        let Command::Matrix(s) = parse("matrix --repl-rounds 1").expect("test") else {
            panic!("not matrix")
        };
        assert_eq!((s.repl_rounds, s.repl_backlog), (1, 1_000_000));
        for bad in [
            "peers --rounds 0",
            "peers --rounds 21",
            "matrix --rounds 3",
            "peers --repl-backlog 10",
            "matrix --repl-backlog -1",
            "matrix --repl-backlog 1e6",
            "matrix --repl-backlog 100000001",
            "matrix --repl-backlog",
            "matrix --repl-rounds 0",
            "matrix --repl-rounds 21",
            "peers --repl-rounds 2",
        ] {
            assert!(matches!(parse(bad), Err(BenchError::Usage(_))), "{bad}");
        }
        // The usage error names the option.
        match parse("pub --threads 0") {
            Err(BenchError::Usage(m)) => assert!(m.contains("--threads"), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse("sub --threads 2") {
            Err(BenchError::Usage(m)) => assert!(m.contains("pub only"), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse("matrix --client-threads x") {
            Err(BenchError::Usage(m)) => assert!(m.contains("--client-threads"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn group_drain_and_takeover() {
        let Command::One(o) = parse("sub --group g1").expect("test") else {
            panic!("not one")
        };
        assert_eq!((o.mode, o.group.as_deref()), (Mode::Sub, Some("g1")));
        let Command::One(o) =
            parse("sub --group g --shared --members 4 --work-us 50").expect("test")
        else {
            panic!("one measurement");
        };
        assert_eq!((o.shared, o.members, o.work_us), (true, 4, 50));
        let Command::One(o) = parse("takeover --count 5").expect("test") else {
            panic!("not one")
        };
        assert_eq!((o.mode, o.count, o.group), (Mode::Takeover, 5, None));
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            "",
            "fly",
            "pub --conns 0",
            "pub --conns x",
            "pub --count 0",
            "pub --pipeline 0",
            "pub --port 0",
            "pub --port 70000",
            "pub --protocol kafka",
            "pub --max-secs 0",
            "pub --max-secs -1",
            "pub --topic a/b",
            "pub --protocol resp --mpub 8",
            "e2e --protocol resp",
            "pub --frobnicate",
            "pub extra",
            "pub --conns",
            "matrix --restart-gib -1",
            "matrix --conns 3",
            "pub --threads 0",
            "pub --threads -2",
            "pub --threads x",
            "pub --threads 10001",
            "pub --threads",
            "sub --threads 4",
            "e2e --threads 2",
            "delay --threads 1",
            "pub --server-pid 0",
            "pub --server-pid -5",
            "pub --server-pid abc",
            "pub --server-pid 4294967296",
            "pub --server-pid",
            "matrix --server-pid 7",
            "matrix --threads 4",
            "matrix --client-threads -1",
            "matrix --client-threads many",
            "matrix --client-threads 10001",
            "peers --client-threads",
            "pub --client-threads 4",
            "pub --group g",
            "sub --group a/b",
            "sub --protocol resp --group g",
            "sub --shared",
            "sub --group g --members 2",
            "sub --group g --shared --members 0",
            "takeover --protocol resp",
        ] {
            let r = parse(bad);
            assert!(matches!(r, Err(BenchError::Usage(_))), "{bad:?} gave {r:?}");
        }
    }
}
