//! Log rotation: SIGHUP reopens the log file under its configured name (a
//! rotation renamed the old one), the server keeps serving, and SIGTERM is
//! still the graceful stop.

mod common;

use std::process::Command;

use common::repl::poll_until;
use common::{Server, WAIT, tempdir};

#[test]
fn sighup_reopens_a_renamed_log_file_and_the_server_goes_on() {
    let d = tempdir();
    let s = Server::start(d.path());
    let log = d.path().join("smss.log");
    let rotated = d.path().join("smss.log.1");
    std::fs::rename(&log, &rotated).expect("rotate the log");
    let ok = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success());
    let reopened = poll_until(WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("SIGHUP: reopened the log"))
    });
    assert!(reopened, "a new log file under the configured name");
    let mut c = s.client();
    c.create("t", 0).expect("still serving after SIGHUP");
    let old = std::fs::read_to_string(&rotated).expect("the rotated file");
    assert!(old.contains("listening on"), "{old}");
    assert!(
        !old.contains("SIGHUP"),
        "nothing more goes to the old file: {old}"
    );
    drop(c);
    assert!(s.sigterm().success(), "SIGTERM stops it cleanly");
    let new = std::fs::read_to_string(&log).expect("the new file");
    assert!(new.contains("writer stopped cleanly"), "{new}");
}
