//! README's tour runs as printed: every `$ ./target/release/smss-cli …`
//! line of the "With smss-cli" tour is run against a fresh server (its
//! port from `SMSS_PORT`, in its directory so `data/log/…` paths hold) and
//! its output compared with README's, timestamps (13-digit numbers),
//! `uptime_ms` and the `history` id aside. README cannot drift from what smss-cli prints.

mod common;

use std::process::Command;

use common::{Server, tempdir};

/// (command, expected output lines) of README's tour, in order.
fn tour() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("### With smss-cli")
        .expect("the tour's smss-cli part");
    // The tour ends where the retention example begins; later examples each
    // assume data of their own.
    let end = start
        + readme[start..]
            .find("Retention is set in the config file")
            .expect("its end");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_console = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```console") {
            in_console = true;
        } else if line.starts_with("```") {
            in_console = false;
        } else if in_console {
            if let Some(cmd) = line.strip_prefix("$ ") {
                steps.push((cmd.to_string(), Vec::new()));
            } else if let Some(last) = steps.last_mut() {
                last.1.push(line.to_string());
            }
        }
    }
    steps
}

/// Timestamps, the uptime and the history id differ from run to run.
fn normal(line: &str) -> String {
    if line.starts_with("uptime_ms ") {
        return "uptime_ms <ms>".into();
    }
    if line.starts_with("history ") {
        return "history <hex>".into();
    }
    let mut out = String::new();
    let mut digits = String::new();
    for c in line.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if digits.len() == 13 {
            out.push_str("<ms>");
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_readme_tour_prints_what_readme_says() {
    let steps = tour();
    assert!(steps.len() >= 10, "the tour was found: {steps:?}");
    let d = tempdir();
    let s = Server::start(d.path());
    let port = s.addr.rsplit(':').next().expect("port").to_string();
    let cli = env!("CARGO_BIN_EXE_smss-cli");
    for (cmd, want) in steps {
        let run = cmd.replace("./target/release/smss-cli", cli);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&run)
            .current_dir(d.path())
            .env("SMSS_PORT", &port)
            .env_remove("SMSS_HOST")
            .env_remove("SMSS_TOKEN")
            .output()
            .expect("run a tour command");
        let got = String::from_utf8_lossy(&out.stdout);
        let got: Vec<String> = got.lines().map(normal).collect();
        let want: Vec<String> = want.iter().map(|l| normal(l)).collect();
        assert_eq!(
            got,
            want,
            "README's `{cmd}` printed something else (stderr: {})",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
