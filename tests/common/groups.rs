//! Consumer-group test helpers.

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
