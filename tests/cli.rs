//! `smss-cli` against a real server: every subcommand, its output and exit code.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{Opts, Server};

fn cli(s: &Server, args: &[&str]) -> Output {
    let port = s.addr.rsplit(':').next().expect("port");
    Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["--port", port, "--timeout", "20000"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run smss-cli")
}

fn cli_stdin(s: &Server, args: &[&str], input: &[u8]) -> Output {
    let port = s.addr.rsplit(':').next().expect("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["--port", port])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smss-cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf8 stdout")
}

#[test]
fn create_pub_sub_list_info_stats() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let created: u64 = ok(&cli(&s, &["create", "orders"]))
        .trim()
        .parse()
        .expect("id");
    assert_eq!(created, 1);
    let a: u64 = ok(&cli(&s, &["pub", "orders", "hello"]))
        .trim()
        .parse()
        .expect("id");
    let b: u64 = ok(&cli(
        &s,
        &["pub", "orders", "--header", "k=v", "with header"],
    ))
    .trim()
    .parse()
    .expect("id");
    let c: u64 = ok(&cli_stdin(&s, &["pub", "orders"], b"from\nstdin"))
        .trim()
        .parse()
        .expect("id");
    assert!(a < b && b < c);

    let out = ok(&cli(&s, &["sub", "orders", "--count", "3"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with(&format!("{a} ")) && lines[0].ends_with(" hello"));
    assert!(lines[1].starts_with(&format!("{b} ")) && lines[1].ends_with(" k=v with header"));
    // One message, one line: the newline in the payload is escaped.
    assert!(out.ends_with(" from\\nstdin\n"), "escaped payload: {out:?}");
    assert_eq!(lines.len(), 3, "{out:?}");

    let raw = ok(&cli(
        &s,
        &[
            "sub",
            "orders",
            "--from",
            &a.to_string(),
            "--count",
            "1",
            "--raw",
        ],
    ));
    assert_eq!(raw, "with header\n");

    let list = ok(&cli(&s, &["list"]));
    assert!(list.starts_with("name created_ms expires_ms messages first_id last_id\n"));
    let row: Vec<&str> = list.lines().nth(1).expect("row").split(' ').collect();
    assert_eq!(row[0], "orders");
    assert_eq!(row[3..].join(" "), format!("3 {a} {c}"));
    assert_eq!(ok(&cli(&s, &["info", "orders"])), list);

    let stats = ok(&cli(&s, &["stats"]));
    assert!(stats.lines().any(|l| l == format!("last_event_id {c}")));
    assert!(stats.lines().any(|l| l == "role master"));
    assert_eq!(ok(&cli(&s, &["ping"])).trim(), "PONG");
}

#[test]
fn delayed_publish_and_delete() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    ok(&cli(&s, &["create", "later", "--life", "600000"]));
    let info = ok(&cli(&s, &["info", "later"]));
    let row: Vec<u64> = info
        .lines()
        .nth(1)
        .expect("row")
        .split(' ')
        .skip(1)
        .map(|x| x.parse().expect("number"))
        .collect();
    assert_eq!(row[1], row[0] + 600_000, "expires = created + life");
    let dpub: u64 = ok(&cli(&s, &["pub", "later", "--delay", "200", "soon"]))
        .trim()
        .parse()
        .expect("id");
    // `sub` waits for the delivery: the read itself is the signal.
    let out = ok(&cli(&s, &["sub", "later", "--count", "1"]));
    let id: u64 = out.split(' ').next().expect("id").parse().expect("id");
    assert!(id > dpub, "a fired message gets a new event id");
    assert!(out.ends_with(" soon\n"));
    ok(&cli(&s, &["delete", "later"]));
    let gone = cli(&s, &["info", "later"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NOTOPIC"));
}

#[test]
fn dump_prints_every_record_and_flags_corruption() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    ok(&cli(&s, &["create", "t"]));
    ok(&cli_stdin(
        &s,
        &["pub", "t", "--header", "a=1"],
        b"payload\r\nwith\0bytes",
    ));
    let seg = dir.path().join("data/log/00000000000000000000.log");
    let out = ok(&cli(&s, &["dump", seg.to_str().expect("path")]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("@0 id=1 ") && lines[0].contains("kind=CREATE"));
    assert!(lines[1].contains("kind=PUB") && lines[1].contains("headers=\"a=1\""));
    assert!(
        lines[1].contains("payload\\x0d\\x0awith\\x00bytes"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "records=2 end=clean");
    drop(s);

    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[50] ^= 0xff; // inside the PUB record
    let bad = dir.path().join("bad.log");
    std::fs::write(&bad, &bytes).expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["dump", bad.to_str().expect("path")])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("records=1 end=CORRUPT at "), "{out}");
}

#[test]
fn usage_and_connection_errors_have_distinct_exit_codes() {
    let o = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["frobnicate"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "usage error");
    let o = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["pub"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "missing topic");
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let o = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["--port", &port.to_string(), "ping"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "connection failure");
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("smss-cli: "));
}

#[test]
fn server_flags_help_version_and_bad_config() {
    let smss = env!("CARGO_BIN_EXE_smss");
    let o = Command::new(smss).arg("--help").output().expect("run");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("--config"));
    let o = Command::new(smss).arg("--version").output().expect("run");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("smss "));
    let o = Command::new(smss).arg("--bogus").output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--bogus"));

    let dir = common::tempdir();
    let missing = dir.path().join("nope.yaml");
    let o = Command::new(smss)
        .arg("--config")
        .arg(&missing)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.yaml"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "store:\n  fsink: always\n").expect("write");
    let o = Command::new(smss)
        .arg("--config")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("fsink"),
        "names the key"
    );
}

#[test]
fn open_bind_warning_names_the_bound_port() {
    let dir = common::tempdir();
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "port: 0\nbind: 0.0.0.0\nlog:\n  path: {}\n  level: info\nstore:\n  path: {}\n",
        dir.path().join("smss.log").display(),
        dir.path().join("data").display()
    );
    std::fs::write(&config, yaml).expect("write config");
    // Nothing connects: the test only reads what the server logged before READY.
    let s = Server::start_config(dir.path(), &config);
    let port = s.addr.rsplit(':').next().expect("port").to_string();
    assert_ne!(port, "0", "READY shows the bound port");
    let log = s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("not loopback"))
        .unwrap_or_else(|| panic!("no open-bind warning in the log: {log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("0.0.0.0:{port}")), "{line}");
    assert!(line.contains(&format!("port {port} ")), "{line}");
    assert!(!line.contains("port 0 "), "{line}");
}

#[test]
fn dump_refuses_a_file_that_is_not_a_segment() {
    let dump = |path: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_smss-cli"))
            .arg("dump")
            .arg(path)
            .output()
            .expect("run")
    };
    let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let o = dump(&readme);
    assert_eq!(o.status.code(), Some(1), "not a segment is an error");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("smss-cli: ") && err.contains("README.md is not a segment file"),
        "{err}"
    );
    let dir = common::tempdir();
    let text = dir.path().join("00000000000000000000.log");
    std::fs::write(&text, "hello, this is text\n").expect("write");
    let o = dump(&text);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("first record"));
    // Zero fill with data after it is not a segment either.
    let mut bytes = vec![0u8; 100];
    bytes[60] = 1;
    std::fs::write(&text, &bytes).expect("write");
    assert_eq!(dump(&text).status.code(), Some(1));
    // An empty segment, or one that is all zero fill, is valid and empty.
    for len in [0, 3, 4096] {
        std::fs::write(&text, vec![0u8; len]).expect("write");
        let o = dump(&text);
        assert_eq!(ok(&o), "records=0 end=clean\n", "{len} zero bytes");
    }
}

/// smss-cli with exactly these arguments (no --port added), stdin empty.
fn cli_bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run smss-cli")
}

fn bench_bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smss-bench"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run smss-bench")
}

#[test]
fn bad_arguments_are_refused_before_connecting() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    ok(&cli(&s, &["create", "t"]));
    // A port nothing listens on: a refusal there proves nothing connected.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let cases: [(&[&str], &str); 8] = [
        (&["create", "inj 60000"], "invalid topic name 'inj 60000'"),
        (&["create", "t2", "--life", "500"], "life_ms"),
        (&["delete", "a/b"], "invalid topic name 'a/b'"),
        (&["info", ""], "invalid topic name ''"),
        (&["pub", "t", "x", "--header", "k=a b"], "header 'k'"),
        (&["pub", "t", "x", "--delay", "0"], "delay_ms"),
        (&["sub", "t", "--from", "-"], "needs group"),
        (&["sub", "t", "--group", "g 1"], "invalid group name 'g 1'"),
    ];
    for (args, want) in cases {
        for o in [cli(&s, args), {
            let mut a = vec!["--port", free.as_str()];
            a.extend_from_slice(args);
            cli_bare(&a)
        }] {
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: {err}");
            assert!(!err.contains("connecting"), "{args:?}: {err}");
            assert!(o.stdout.is_empty(), "{args:?}");
        }
    }
    let o = cli_bare(&["--port", &free, "--token", "two words", "ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid token 'two words'"));
    // Nothing reached the server: only `t` exists and nothing was published.
    let list = ok(&cli(&s, &["list"]));
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.lines().nth(1).expect("row").starts_with("t "),
        "{list}"
    );
    assert!(ok(&cli(&s, &["stats"])).contains("\nlast_event_id 1\n"));
}

#[test]
fn help_per_command_and_global_options_after_the_command() {
    let global = ok(&cli_bare(&["help"]));
    // The bench is its own binary; the global help points to it.
    assert!(global.contains("smss-bench --help"), "{global}");
    assert!(global.contains("\n  help [<command>]"), "{global}");
    assert_eq!(ok(&cli_bare(&["--help"])), global);
    let sub = ok(&cli_bare(&["help", "sub"]));
    assert!(
        sub.starts_with("usage: smss-cli [global options] sub <topic> [--from"),
        "{sub}"
    );
    assert!(sub.contains("where to start (default 0)"), "{sub}");
    assert!(sub.contains("--raw"), "{sub}");
    assert_eq!(ok(&cli_bare(&["sub", "--help"])), sub);
    assert_eq!(ok(&cli_bare(&["sub", "t", "-h"])), sub);
    let pubh = ok(&cli_bare(&["pub", "--help"]));
    assert!(pubh.contains("--lines"), "{pubh}");
    assert_ne!(pubh, global);
    for cmd in [
        "create", "delete", "list", "info", "stats", "ping", "slaves", "promote", "dump", "groups",
        "groupdel",
    ] {
        let h = ok(&cli_bare(&["help", cmd]));
        assert!(h.starts_with("usage: smss-cli "), "{cmd}: {h}");
        assert!(h.contains(&format!(" {cmd}")), "{cmd}: {h}");
        assert_eq!(ok(&cli_bare(&[cmd, "--help"])), h, "{cmd}");
    }
    let bench = ok(&bench_bare(&["--help"]));
    assert!(bench.starts_with("usage: smss-bench "), "{bench}");
    // `smss-cli bench …` and `smss-cli help bench`: one line pointing there, exit 2.
    for args in [
        &["bench", "pub", "--count", "1"][..],
        &["help", "bench"],
        &["bench"],
    ] {
        let o = cli_bare(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("smss-bench"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    let o = cli_bare(&["help", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));

    // --host, --port, --token and --timeout after the command.
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    let port = s.addr.rsplit(':').next().expect("port");
    let o = cli_bare(&["ping", "--port", port, "--timeout", "20000"]);
    assert_eq!(ok(&o), "PONG\n");
    let o = cli_bare(&[
        "--timeout",
        "20000",
        "create",
        "--host",
        "127.0.0.1",
        "x",
        "--port",
        port,
    ]);
    assert_eq!(ok(&o), "1\n");
    let o = cli_bare(&["info", "x", "--port", port, "--token", "unused"]);
    assert!(ok(&o).contains("\nx "));
}

#[test]
fn sub_group_resumes_and_groups_and_groupdel_show_and_remove_it() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    ok(&cli(&s, &["create", "t"]));
    let ids: Vec<u64> = (0..4)
        .map(|i| {
            ok(&cli(&s, &["pub", "t", &format!("m{i}")]))
                .trim()
                .parse()
                .expect("id")
        })
        .collect();
    // Batches of two, each ACKed once printed: two messages, then two more.
    let out = ok(&cli(
        &s,
        &["sub", "t", "--group", "g", "--batch", "2", "--count", "2"],
    ));
    assert_eq!(out.lines().count(), 2);
    assert!(out.starts_with(&format!("{} ", ids[0])), "{out}");
    let out = ok(&cli(&s, &["groups", "t"]));
    assert_eq!(
        out,
        format!(
            "name committed_id active standbys lag\ng {} 0 0 2\n",
            ids[1]
        )
    );
    // The next run resumes where the group is.
    let out = ok(&cli(
        &s,
        &["sub", "t", "--group", "g", "--count", "1", "--raw"],
    ));
    assert_eq!(out, "m2\n");
    // --count ended inside a batch: that batch was not ACKed.
    let out = ok(&cli(&s, &["groups", "t"]));
    assert!(out.ends_with(&format!("g {} 0 0 2\n", ids[1])), "{out}");
    let del: u64 = ok(&cli(&s, &["groupdel", "t", "g"]))
        .trim()
        .parse()
        .expect("id");
    assert!(del > ids[3]);
    assert_eq!(
        ok(&cli(&s, &["groups", "t"])),
        "name committed_id active standbys lag\n"
    );
    let o = cli(&s, &["groupdel", "t", "g"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("BADREQ"));
    let o = cli(&s, &["groupdel", "t", "bad/g"]);
    assert_eq!(o.status.code(), Some(2), "checked before connecting");
    let o = cli(&s, &["sub", "t", "--max-deliver", "3"]);
    assert_eq!(o.status.code(), Some(2), "--max-deliver needs --group");
}

#[test]
fn sub_escapes_payloads_unless_raw() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    ok(&cli(&s, &["create", "t"]));
    let payload = b"a\nb\r\tc\\d \x01\xc3\xa9";
    ok(&cli_stdin(&s, &["pub", "t", "--header", "k=v"], payload));
    ok(&cli(&s, &["pub", "t", "k=x"]));
    let out = ok(&cli(&s, &["sub", "t", "--count", "2"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(
        lines[0].ends_with(r" k=v a\nb\r\tc\\d \x01\xc3\xa9"),
        "{:?}",
        lines[0]
    );
    let raw = cli(&s, &["sub", "t", "--count", "1", "--raw"]);
    assert!(raw.status.success());
    let mut want = payload.to_vec();
    want.push(b'\n');
    assert_eq!(raw.stdout, want, "--raw prints the bytes as they are");
}

#[test]
fn pub_lines_publishes_each_line_over_one_connection_in_batches() {
    let dir = common::tempdir();
    let s = Server::start(dir.path());
    ok(&cli(&s, &["create", "t"]));
    let commits_before = common::stat(&mut s.client(), "commits");
    let input: String = (1..=10_000).map(|i| format!("{i}\n")).collect();
    let out = ok(&cli_stdin(&s, &["pub", "t", "--lines"], input.as_bytes()));
    let ids: Vec<u64> = out
        .split_whitespace()
        .map(|x| x.parse().expect("id"))
        .collect();
    assert_eq!(ids.len(), 2, "prints the first and last id: {out:?}");
    assert_eq!(ids[1] - ids[0] + 1, 10_000, "{out:?}");
    let mut c = s.client();
    let info = c.info("t").expect("info");
    assert_eq!(
        (info.messages, info.first_id, info.last_id),
        (10_000, ids[0], ids[1])
    );
    // 100 lines per MPUB, each one group commit at most: not 10000 PUBs.
    let commits = common::stat(&mut c, "commits") - commits_before;
    assert!(commits <= 110, "{commits} commits for 10000 lines");
    let first = ok(&cli(&s, &["sub", "t", "--count", "3", "--raw"]));
    assert_eq!(first, "1\n2\n3\n");
    let last = ok(&cli(
        &s,
        &[
            "sub",
            "t",
            "--from",
            &(ids[1] - 1).to_string(),
            "--count",
            "1",
            "--raw",
        ],
    ));
    assert_eq!(last, "10000\n");

    // CRLF line ends, a last line without one, an empty line, headers, --batch.
    let out = ok(&cli_stdin(
        &s,
        &[
            "pub", "t", "--lines", "--header", "src=file", "--batch", "2",
        ],
        b"a\r\n\nb",
    ));
    let ids: Vec<u64> = out
        .split_whitespace()
        .map(|x| x.parse().expect("id"))
        .collect();
    assert_eq!(ids[1] - ids[0], 2, "{out:?}");
    let got = ok(&cli(
        &s,
        &[
            "sub",
            "t",
            "--from",
            &(ids[0] - 1).to_string(),
            "--count",
            "3",
        ],
    ));
    let tails: Vec<&str> = got
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).expect("rest"))
        .collect();
    assert_eq!(tails, ["src=file a", "src=file ", "src=file b"], "{got:?}");
    // Nothing on stdin publishes nothing.
    let o = cli_stdin(&s, &["pub", "t", "--lines"], b"");
    assert!(o.status.success() && o.stdout.is_empty());
    assert_eq!(c.info("t").expect("info").messages, 10_003);
    // --lines takes no payload and no --delay.
    assert_eq!(
        cli(&s, &["pub", "t", "x", "--lines"]).status.code(),
        Some(2)
    );
    assert_eq!(
        cli(&s, &["pub", "t", "--lines", "--delay", "5"])
            .status
            .code(),
        Some(2)
    );
}

/// Runs `smss-cli` with `args` until its stdout satisfies `done`, for at
/// most [`common::WAIT`]: replication has no reply to wait on.
fn poll_cli(s: &Server, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let out = ok(&cli(s, args));
        if done(&out) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "smss-cli {args:?}: last output {out:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn slaves_table_and_promote() {
    const HEADER: &str = "addr acked_event_id lag_events lag_ms state\n";
    let (mdir, sdir) = (common::tempdir(), common::tempdir());
    let m = Server::start(mdir.path());
    assert_eq!(ok(&cli(&m, &["slaves"])), HEADER, "no slaves yet");
    let id: u64 = ok(&cli(&m, &["create", "orders"]))
        .trim()
        .parse()
        .expect("id");
    let s = Server::start_with_args(
        sdir.path(),
        &Opts::new(),
        &["--role", "slave", "--master", &m.addr],
    );
    let table = poll_cli(&m, &["slaves"], |out| {
        out.lines()
            .nth(1)
            .is_some_and(|row| row.ends_with(&format!(" {id} 0 0 streaming")))
    });
    assert!(table.starts_with(HEADER), "{table}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].starts_with("127.0.0.1:"), "{table}");
    // A slave has no slaves; its stats say whose slave it is.
    assert_eq!(ok(&cli(&s, &["slaves"])), HEADER);
    let stats = ok(&cli(&s, &["stats"]));
    assert!(stats.contains(&format!("\nmaster {}\n", m.addr)), "{stats}");
    assert!(stats.contains("\nrepl_state "), "{stats}");

    // A master refuses promote; a slave takes it and prints where its epoch starts.
    let o = cli(&m, &["promote"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("BADREQ") && err.contains("master"), "{err}");
    let start: u64 = ok(&cli(&s, &["promote"])).trim().parse().expect("id");
    assert!(start > id, "{start} after {id}");
    let stats = ok(&cli(&s, &["stats"]));
    assert!(stats.starts_with("role master\n"), "{stats}");
    assert!(
        stats.contains(&format!("\nlast_event_id {start}\n")),
        "{stats}"
    );
    let written: u64 = ok(&cli(&s, &["pub", "orders", "after"]))
        .trim()
        .parse()
        .expect("id");
    assert_eq!(written, start + 1);
    assert_eq!(
        ok(&cli(&m, &["promote", "--help"])),
        ok(&cli_bare(&["help", "promote"]))
    );
}

/// smss-cli with no flags but the environment given.
fn cli_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smss-cli"));
    cmd.env_remove("SMSS_HOST")
        .env_remove("SMSS_PORT")
        .env_remove("SMSS_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run smss-cli")
}

#[test]
fn habits_environment_token_file_host_port_and_helpful_usage_errors() {
    let d = common::tempdir();
    let s = Server::start_with(d.path(), &Opts::new().section("auth:\n  token: s3cret"));
    let port = s.addr.rsplit(':').next().expect("port").to_string();
    // SMSS_HOST as host:port, SMSS_TOKEN: no flag at all.
    let o = cli_env(
        &[("SMSS_HOST", s.addr.as_str()), ("SMSS_TOKEN", "s3cret")],
        &["create", "envtopic"],
    );
    assert!(ok(&o).trim().parse::<u64>().is_ok());
    // SMSS_PORT with the default host; the token from a file.
    let tf = d.path().join("token");
    std::fs::write(&tf, "s3cret\n").expect("token file");
    let tf = tf.to_str().expect("path");
    let o = cli_env(
        &[("SMSS_PORT", &port)],
        &["--token-file", tf, "info", "envtopic"],
    );
    assert!(ok(&o).contains("envtopic"));
    // A flag wins over the environment; --host takes host:port too.
    let o = cli_env(
        &[("SMSS_HOST", "127.0.0.1:1"), ("SMSS_TOKEN", "wrong")],
        &["--host", &s.addr, "--token-file", tf, "ping"],
    );
    assert_eq!(ok(&o).trim(), "PONG");
    // A typo gets the nearest command; a command's bad argument its help.
    let o = cli_env(&[], &["pubb", "t", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did you mean \"pub\"?"), "{err}");
    let o = cli_env(&[], &["pub", "t", "x", "--delay"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("try 'smss-cli pub --help'"), "{err}");
    assert!(
        !err.contains("commands:"),
        "no list of every command: {err}"
    );
    // help --help is help, not an error.
    let o = cli_env(&[], &["help", "--help"]);
    assert!(ok(&o).contains("usage: smss-cli help"));
    let o = cli_env(&[], &["--token-file", "/nonexistent/smss-token", "ping"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/smss-token"));
}

#[test]
fn sub_ends_soon_after_its_reader_goes_away_even_with_nothing_new() {
    use std::io::{BufRead, BufReader};
    let d = common::tempdir();
    let s = Server::start(d.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    c.publish("t", b"one").expect("PUB");
    c.publish("t", b"two").expect("PUB");
    let port = s.addr.rsplit(':').next().expect("port");
    // As `smss-cli sub t | head -1`: the reader takes a line and leaves.
    let mut child = Command::new(env!("CARGO_BIN_EXE_smss-cli"))
        .args(["--port", port, "sub", "t"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn smss-cli sub");
    let mut r = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    r.read_line(&mut line).expect("a line");
    assert!(line.ends_with(" one\n"), "{line:?}");
    drop(r);
    // Nothing more is published: only the closed pipe can end it.
    let status = common::wait_timeout(&mut child, std::time::Duration::from_secs(5));
    let _ = child.kill();
    let status = status.expect("sub ended within 5 s of its reader leaving");
    assert!(status.success(), "{status:?}");
}

#[test]
fn json_output_for_scripts() {
    let d = common::tempdir();
    let s = Server::start(d.path());
    let mut c = s.client();
    c.create("t", 0).expect("CREATE");
    c.publish("t", b"x").expect("PUB");
    let stats = ok(&cli(&s, &["stats", "--json"]));
    assert!(
        stats.starts_with("{\"role\":\"master\",\"last_event_id\":2,"),
        "{stats}"
    );
    assert!(
        stats.trim_end().ends_with('}') && stats.lines().count() == 1,
        "{stats}"
    );
    let list = ok(&cli(&s, &["--json", "list"]));
    assert_eq!(
        list.trim(),
        format!(
            "[{{\"name\":\"t\",\"created_ms\":{},\"expires_ms\":0,\"messages\":1,\"first_id\":2,\"last_id\":2}}]",
            c.info("t").expect("INFO").created_ms
        )
    );
    let info = ok(&cli(&s, &["info", "t", "--json"]));
    assert_eq!(
        info.trim(),
        list.trim().trim_start_matches('[').trim_end_matches(']')
    );
    assert_eq!(ok(&cli(&s, &["groups", "t", "--json"])).trim(), "[]");
    assert_eq!(ok(&cli(&s, &["slaves", "--json"])).trim(), "[]");
    // A shared group with a member holding the one message.
    let mut member = s.client();
    let opts = smss::client::SubOptions {
        group: Some("pool".into()),
        shared: true,
        ..Default::default()
    };
    member.subscribe("t", "-", &opts).expect("SUB shared");
    assert!(matches!(
        member.next_event().expect("batch"),
        smss::client::SubEvent::Batch(_)
    ));
    assert_eq!(
        ok(&cli(&s, &["groups", "t", "--json"])).trim(),
        "[{\"name\":\"pool\",\"committed_id\":1,\"active\":true,\"standbys\":0,\"lag\":1,\
         \"mode\":\"shared\",\"members\":1,\"pending\":1}]"
    );
}

#[test]
fn health_says_ok_warning_or_critical_with_the_exit_status() {
    let d = common::tempdir();
    let m = Server::start(d.path());
    let o = cli(&m, &["health"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("OK: master"));
    let o = cli(&m, &["health", "--min-slaves", "1"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("WARNING: 0 slave(s)"));
    // A slave whose master is gone: not streaming.
    let sd = common::tempdir();
    let closed = format!("127.0.0.1:{}", common::repl::free_port());
    let s = Server::start_with_args(
        sd.path(),
        &Opts::new(),
        &common::repl::slave_args(&closed, &[]),
    );
    let o = cli(&s, &["health"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("CRITICAL: replication is"));
    // Nothing listening: critical too, not a usage error.
    let o = cli_env(
        &[("SMSS_HOST", closed.as_str())],
        &["health", "--timeout", "2000"],
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("CRITICAL: no answer"));
}
