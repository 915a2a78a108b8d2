//! The Python client (src/clients/python/smss.py) against the real server:
//! runs its unittest suite (test_smss.py) with `python3`, with a server
//! started here as every integration test starts one (tests/common). The
//! suite gets that server's address (SMSS_ADDR) and the binary (SMSS_BIN)
//! for the cases that need servers of their own: auth, restarts, kill -9, a
//! slave. Skipped, with a printed reason, only where python3 is missing.
//! The server also has a TLS port (certificates made here with rcgen): the
//! suite gets it as SMSS_TLS_ADDR and the CA file as SMSS_TLS_CA.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Opts, Server, tempdir, wait_timeout};

/// The whole suite takes a few seconds; this bounds a hang.
const SUITE_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn python_client_suite() {
    let python = match Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => "python3",
        _ => {
            eprintln!("SKIP: python3 is not installed; the Python client suite did not run");
            return;
        }
    };
    let dir = tempdir();
    // ALIVE every 200 ms, so the suite sees heartbeats without waiting; a
    // small payload cap, so it can provoke ERR TOOBIG cheaply.
    let (ca, tls) = tls_files(dir.path());
    let server = Server::start_with(
        dir.path(),
        &Opts::new()
            .section("timeout:\n  server:\n    alive: 200")
            .section("limits:\n  maxPayload: 65536")
            .section(&tls),
    );
    let client_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/clients/python");
    let mut child = Command::new(python)
        .args(["-m", "unittest", "-v", "test_smss"])
        .current_dir(&client_dir)
        .env("SMSS_ADDR", &server.addr)
        .env("SMSS_BIN", common::bin())
        .env("SMSS_TLS_ADDR", server.tls_addr.clone().unwrap_or_default())
        .env("SMSS_TLS_CA", &ca)
        // No __pycache__ in the source tree from a test run.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Its own process group: if the suite hangs, the servers and workers
        // it started go with it (killed by the group's id, which is its pid).
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    // Both pipes are drained by threads so a chatty suite never blocks on a
    // full pipe while this waits for it.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = wait_timeout(&mut child, SUITE_LIMIT);
    if status.is_none() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(format!("-{}", child.id()))
            .status();
    }
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => {
            // unittest prints its summary on stderr; keep it visible with --nocapture.
            eprintln!("{err}");
        }
        other => panic!(
            "the Python client suite failed ({other:?}; None = killed after {SUITE_LIMIT:?})\n\
             --- stdout ---\n{out}\n--- stderr ---\n{err}\n--- server log ---\n{}",
            server.log_text()
        ),
    }
}

/// A CA and a server certificate for 127.0.0.1, written into `dir`; returns
/// the CA file and the config's `tls:` section.
fn tls_files(dir: &std::path::Path) -> (PathBuf, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // OpenSSL (Python's ssl) matches issuer to subject by name: an empty
    // name would not find its CA.
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "smss python test CA");
    let ca = params.self_signed(&ca_key).expect("CA cert");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("sign");
    let (ca_file, cert, key_file) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    std::fs::write(&cert, leaf.pem()).expect("write cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    let section = format!(
        "tls:\n  port: 0\n  cert: {}\n  key: {}",
        cert.display(),
        key_file.display()
    );
    (ca_file, section)
}
