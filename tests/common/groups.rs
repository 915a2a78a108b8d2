//! Consumer-group test helpers.

use std::time::Duration;

use smss::client::{Client, GroupInfo, SubEvent};

/// The ids of the next batch, passing over ALIVE and STANDBY (bounded;
/// every read has a timeout).
pub fn batch(c: &mut Client) -> Vec<u64> {
    for _ in 0..200 {
        match c.next_event().expect("event") {
            SubEvent::Batch(ms) => return ms.iter().map(|m| m.event_id).collect(),
            SubEvent::Alive | SubEvent::Standby => {}
            SubEvent::End(r) => panic!("END {r} instead of a batch"),
        }
    }
    panic!("no batch");
}

/// The topic's only group.
pub fn one_group(c: &mut Client, topic: &str) -> GroupInfo {
    let gs = c.groups(topic).expect("GROUPS");
    assert_eq!(gs.len(), 1, "{gs:?}");
    gs.into_iter().next().expect("one group")
}

/// Waits (bounded) until the topic's groups have no active subscriber: the
/// server has seen the last one's connection end and counted what it left
/// (the member leaves only after the failed delivery's write is answered).
pub fn wait_inactive(c: &mut Client, topic: &str) {
    for _ in 0..400 {
        if c.groups(topic).expect("GROUPS").iter().all(|g| !g.active) {
            return;
        }
        // Nothing to wait on from outside the server: poll.
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the group of {topic} stayed active");
}

/// Polls the slave's GROUPS (bounded) until `want` holds.
pub fn wait_slave_groups(slave: &mut Client, topic: &str, want: impl Fn(&[GroupInfo]) -> bool) {
    let mut seen = None;
    for _ in 0..400 {
        match slave.groups(topic) {
            Ok(gs) if want(&gs) => return,
            other => seen = Some(other),
        }
        // Replication has no signal a client can wait on: poll.
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the slave never showed the group; last {seen:?}");
}
