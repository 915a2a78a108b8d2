//! Built without the `tls` feature: a config that asks for TLS is refused
//! at start with a message saying so, not silently served in clear text.
#![cfg(not(feature = "tls"))]

mod common;

use common::{Opts, Server, tempdir, write_config};

#[test]
fn tls_keys_stop_a_server_built_without_tls() {
    let d = tempdir();
    let section = "tls:\n  cert: c.pem\n  key: k.pem\n";
    write_config(d.path(), &Opts::new().section(section));
    let (status, err) = Server::start_failing(d.path());
    assert!(!status.success());
    assert!(err.contains("built without TLS"), "{err}");
}

#[test]
fn replication_tls_stops_a_server_built_without_tls() {
    let d = tempdir();
    let section = "replication:\n  tls: true\n  tlsCa: ca.pem\n";
    write_config(d.path(), &Opts::new().section(section));
    let (status, err) = Server::start_failing(d.path());
    assert!(!status.success());
    assert!(err.contains("built without TLS"), "{err}");
    assert!(err.contains("replication.tls"), "{err}");
}
