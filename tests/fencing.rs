//! Failover that cannot go wrong, with real binaries: a new epoch's ids lie
//! above everything the old master could assign (also ids its slave never
//! heard of), the role survives a restart with the old unit's flags, and a
//! server that sees a master of a higher epoch stops taking writes and
//! follows it (a split brain ends with one master and no id on two
//! messages); `--demote` undoes a PROMOTE on purpose.
//!
//! Every server has its own port and directory and is stopped by PID when
//! its `Server` drops. A slave's progress is awaited by polling STATS in
//! bounded loops (it has no other signal).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::repl::{
    assert_stepped_down, diverged, free_port, id_lease, last_id, messages, pair_with_topic,
    poll_until, role, slave_args, start_slave, wait_caught_up, wait_for_id,
};
use common::{Opts, Server, WAIT, tempdir};
use smss::client::Client;

const EPOCH_1: u64 = 1 << 48;

/// A config whose `replication.peer` is `peer`.
fn with_peer(peer: &str) -> Opts {
    Opts::new().section(&format!("replication:\n  peer: \"{peer}\"\n"))
}

/// What `data/role` says, if anything.
fn claim(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("data/role"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn wait_role(s: &Server, want: &str) {
    let mut c = s.client();
    let ok = poll_until(WAIT, || role(&mut c) == want);
    assert!(
        ok,
        "{} never became {want}; its log:\n{}",
        s.addr,
        s.log_text()
    );
}

/// Every message id of every topic, with its payload.
fn all_messages(c: &mut Client) -> HashMap<u64, Vec<u8>> {
    let mut out = HashMap::new();
    for t in c.list().expect("LIST") {
        for m in messages(c, &t.name) {
            out.insert(m.0, m.3);
        }
    }
    out
}

#[test]
fn a_new_epoch_starts_above_ids_the_slave_never_heard_of() {
    let (md, sd) = (tempdir(), tempdir());
    let (m, s) = pair_with_topic(md.path(), &Opts::new(), sd.path(), &Opts::new(), b"shared");
    let heard = id_lease(sd.path());
    // The slave goes down; the master runs far past the lease the slave
    // heard of (as after a million writes: a crash resumes above the lease).
    assert!(s.sigterm().success());
    m.kill9();
    std::fs::write(
        md.path().join("data/idlease"),
        format!("{}\n", heard + 5_000_000),
    )
    .expect("write the master's lease");
    let m = Server::start(md.path());
    let mut mc = m.client();
    let mut old = HashMap::new();
    for i in 0..5 {
        let body = format!("old-{i}");
        let id = mc.publish("t", body.as_bytes()).expect("PUB");
        assert!(id > heard + 5_000_000 && id < EPOCH_1, "{id}");
        old.insert(id, body.into_bytes());
    }
    m.kill9();
    // The slave comes back, its master is gone: PROMOTE.
    let closed = format!("127.0.0.1:{}", free_port());
    let s = Server::start_with_args(sd.path(), &Opts::new(), &slave_args(&closed, &[]));
    let mut sc = s.client();
    let epoch_id = sc.promote().expect("PROMOTE");
    assert_eq!(
        epoch_id, EPOCH_1,
        "epoch 1 starts at the bottom of its range"
    );
    let mut new = Vec::new();
    for i in 0..5 {
        new.push(sc.publish("t", format!("new-{i}").as_bytes()).expect("PUB"));
    }
    assert!(new.iter().all(|id| *id > EPOCH_1 && !old.contains_key(id)));
    assert_eq!(common::stat(&mut sc, "epoch"), 1);
    assert_eq!(claim(sd.path()).as_deref(), Some("master 1"));
    // `smss-cli dump` shows the EPOCH record with its fields.
    let seg = common::segments(sd.path()).pop().expect("a segment");
    let (ok, out, err) = common::repl::cli_dump(&seg);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains("kind=EPOCH"))
        .unwrap_or_else(|| panic!("no EPOCH line in:\n{out}"));
    assert!(
        line.contains(&format!("id={EPOCH_1} ")) && line.contains(" epoch=1 prev_last_id="),
        "{line}"
    );
}

#[test]
fn a_promoted_server_restarted_with_its_old_unit_stays_the_master() {
    let (md, sd) = (tempdir(), tempdir());
    let (m, s) = pair_with_topic(md.path(), &Opts::new(), sd.path(), &Opts::new(), b"before");
    let old_master = m.addr.clone();
    m.kill9();
    s.client().promote().expect("PROMOTE");
    // Rebooted with the unit that still says slave of the old master.
    assert!(s.sigterm().success());
    let s = start_slave(sd.path(), &Opts::new(), &old_master);
    let mut sc = s.client();
    assert_eq!(role(&mut sc), "master");
    let log = s.log_text();
    assert!(
        log.contains("stays the master") && log.contains("--demote"),
        "{log}"
    );
    let id = sc
        .publish("t", b"after the reboot")
        .expect("PUB on the promoted server");
    assert!(id > EPOCH_1);
    assert_eq!(messages(&mut sc, "t").len(), 2);
}

#[test]
fn an_old_master_restarted_by_its_unit_follows_the_promoted_peer() {
    let (md, sd) = (tempdir(), tempdir());
    let s_port = free_port();
    let s_addr = format!("127.0.0.1:{s_port}");
    let m_opts = with_peer(&s_addr);
    let s_opts = Opts::new().port(s_port);
    let (m, s) = pair_with_topic(md.path(), &m_opts, sd.path(), &s_opts, b"shared");
    m.kill9();
    let mut sc = s.client();
    sc.promote().expect("PROMOTE");
    let during = sc
        .publish("t", b"while the old master was down")
        .expect("PUB");

    // The old master's unit says master: it asks its peer before serving.
    let m = Server::start_with(md.path(), &m_opts);
    let mut mc = assert_stepped_down(&m, during);
    assert_eq!(claim(md.path()).as_deref(), Some("slave 1"));
    assert_eq!(all_messages(&mut mc), all_messages(&mut sc));
    // It had nothing the new master lacks (ids it leased before the kill
    // have no records): it streams on, no full resync, nothing moved aside.
    assert_eq!(
        common::stat(&mut mc, "repl_full_syncs"),
        0,
        "{}",
        m.log_text()
    );
    assert!(diverged(md.path()).is_empty());
    // Its next reboot keeps it a slave, even with the peer down.
    assert!(m.sigterm().success());
    assert!(s.sigterm().success());
    let m = Server::start_with(md.path(), &m_opts);
    let mut mc = m.client();
    assert_eq!(role(&mut mc), "slave");
    assert!(m.log_text().contains("PROMOTE it"), "{}", m.log_text());
}

#[test]
fn a_split_brain_ends_with_one_master_and_no_id_on_two_messages() {
    let (md, sd) = (tempdir(), tempdir());
    // The old master's peer address is where the slave will listen after
    // the partition heals; until then nothing answers there.
    let healed_port = free_port();
    let healed = format!("127.0.0.1:{healed_port}");
    let m = Server::start_with(md.path(), &with_peer(&healed));
    let mut mc = m.client();
    mc.create("t", 0).expect("CREATE");
    for i in 0..3 {
        mc.publish("t", format!("shared-{i}").as_bytes())
            .expect("PUB");
    }
    let s = start_slave(sd.path(), &Opts::new(), &m.addr);
    wait_caught_up(&m, &s, None);

    // Partition: the slave is promoted while the old master takes writes.
    let mut sc = s.client();
    sc.promote().expect("PROMOTE");
    let mut loser = HashMap::new();
    let mut winner = HashMap::new();
    for i in 0..20 {
        let (a, b) = (format!("old-{i}"), format!("new-{i}"));
        loser.insert(mc.publish("t", a.as_bytes()).expect("PUB old"), a);
        winner.insert(sc.publish("t", b.as_bytes()).expect("PUB new"), b);
    }
    assert!(
        loser.keys().all(|id| !winner.contains_key(id)),
        "ids disjoint"
    );
    assert!(loser.keys().all(|id| *id < EPOCH_1) && winner.keys().all(|id| *id > EPOCH_1));

    // The partition heals: the promoted server is reachable at the peer
    // address (restarted there; its claim keeps it the master).
    assert!(s.sigterm().success());
    let s = start_slave(sd.path(), &Opts::new().port(healed_port), &m.addr);
    let mut sc = s.client();
    assert_eq!(role(&mut sc), "master");
    wait_role(&m, "slave");
    let top = last_id(&mut sc);
    wait_for_id(&m, None, top);
    let mut mc = m.client();
    assert_eq!(role(&mut sc), "master");
    let served = all_messages(&mut mc);
    assert_eq!(
        served,
        all_messages(&mut sc),
        "the old master follows the new one"
    );
    assert!(loser.keys().all(|id| !served.contains_key(id)));
    assert!(
        winner
            .iter()
            .all(|(id, b)| served.get(id) == Some(&b.clone().into_bytes()))
    );
    // The loser's writes are in its diverged file, under their own ids.
    let aside = diverged(md.path());
    for (id, body) in &loser {
        assert_eq!(aside.get(id), Some(&body.clone().into_bytes()), "id {id}");
    }
    assert!(
        aside.keys().all(|id| !served.contains_key(id)),
        "no id on two messages"
    );
    assert!(
        m.log_text().contains("stops taking writes"),
        "{}",
        m.log_text()
    );
}

#[test]
fn demote_makes_a_promoted_server_a_slave_on_purpose() {
    let (md, sd) = (tempdir(), tempdir());
    let (m, s) = pair_with_topic(md.path(), &Opts::new(), sd.path(), &Opts::new(), b"shared");
    let mut mc = m.client();
    // Promoted by mistake; it took a write the master never had.
    let mut sc = s.client();
    sc.promote().expect("PROMOTE");
    let mistaken = sc.publish("t", b"mistake").expect("PUB");
    let kept = mc.publish("t", b"on the real master").expect("PUB");
    assert!(s.sigterm().success());
    let s = Server::start_with_args(sd.path(), &Opts::new(), &slave_args(&m.addr, &["--demote"]));
    let mut sc = s.client();
    assert_eq!(role(&mut sc), "slave");
    wait_for_id(&s, None, kept);
    assert_eq!(all_messages(&mut sc), all_messages(&mut mc));
    assert_eq!(claim(sd.path()).as_deref(), Some("slave 1"));
    assert_eq!(
        diverged(sd.path()).get(&mistaken).map(|b| b.as_slice()),
        Some(&b"mistake"[..])
    );
}

#[test]
fn role_answers_what_a_peer_compares() {
    let d = tempdir();
    let m = Server::start(d.path());
    let mut r = m.raw();
    r.send(b"ROLE\r\n");
    let line = r.line();
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 5, "{line}");
    assert_eq!((f[0], f[1], f[2]), ("ROLE", "master", "0"));
    assert_eq!(f[3].len(), 16, "history in hex: {line}");
    r.send(b"ROLE x\r\n");
    assert!(r.line().starts_with("ERR BADREQ"));
}
