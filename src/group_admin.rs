//! GROUPS and GROUPDEL: a topic's consumer groups as the writer last
//! published them (positions, lag by index search) with the registry's
//! active and standby counts, and the removal of a group, which ends its
//! subscribers.
//!
//! Runs on the connection thread that got the request, with no write of
//! that connection in flight. Reads the topic's published groups and index
//! (pread) and the broker's group registry; GROUPDEL asks the writer
//! through the broker's [`crate::writer_handle::WriterHandle`] and waits for
//! its answer.

use crate::broker::Broker;
use crate::groups::GroupKey;
use crate::protocol::{
    ErrCode, ProtoError, encode_count, encode_err, encode_group, encode_ok, encode_shared_tail,
};
use crate::role::Role;
use crate::storage::index;
use crate::storage::ops::{WriteOk, WriteOp};
use crate::writer_handle::{self, Asked};

/// `GROUPS <topic>`: every group with its committed position, whether it
/// has an active subscriber, how many standbys, and its lag (retained
/// messages after the position); a shared group with members adds
/// `shared <members> <pending>`.
pub fn put_groups(out: &mut Vec<u8>, broker: &Broker, topic: &str) {
    let Some(t) = broker.topic(topic) else {
        let e = ProtoError::new(ErrCode::NoTopic, format!("no topic {topic}"));
        return encode_err(out, &e);
    };
    let groups = t.groups();
    let st = t.state();
    let mut lines = Vec::new();
    if !groups.is_empty() {
        let file = match broker.index_of(&t) {
            Ok(f) => f,
            Err(e) => {
                let msg = format!("reading the index of {topic}: {e}");
                return encode_err(out, &ProtoError::new(ErrCode::Internal, msg));
            }
        };
        for (name, g) in &groups {
            let lag = match index::search_after(&*file, st.first_entry, st.entries, g.committed) {
                Ok(i) => st.entries - i,
                Err(e) => {
                    let msg = format!("reading the index of {topic}: {e}");
                    return encode_err(out, &ProtoError::new(ErrCode::Internal, msg));
                }
            };
            let key = GroupKey {
                topic: t.name.clone(),
                create_id: t.create_id,
                group: name.clone(),
            };
            let (active, standbys) = broker.group_subs.counts(&key);
            encode_group(&mut lines, name, g.committed, active, standbys as u64, lag);
            if let Some((members, pending)) = broker.group_subs.shared(&key) {
                // Fields at the end of the line, for shared groups only:
                // an exclusive group's line is as it always was.
                encode_shared_tail(&mut lines, members as u64, pending);
            }
        }
    }
    encode_count(out, "GROUPS", groups.len() as u64);
    out.extend_from_slice(&lines);
}

/// `GROUPDEL <topic> <group>` → `OK <event_id>`; the group's subscribers,
/// active and standby, get `END deleted`.
pub fn groupdel(out: &mut Vec<u8>, broker: &Broker, topic: &str, group: &str) {
    if broker.role() == Role::Slave {
        let e = ProtoError::new(
            ErrCode::ReadOnly,
            "this server is a slave; write to the master",
        );
        return encode_err(out, &e);
    }
    let op = WriteOp::GroupDel {
        topic: topic.to_string(),
        group: group.to_string(),
    };
    match broker.writer.call(op) {
        Ok(WriteOk::Id(id)) => {
            encode_ok(out, &[id]);
            if let Some(t) = broker.topic(topic) {
                broker.group_subs.end_group(&GroupKey {
                    topic: t.name.clone(),
                    create_id: t.create_id,
                    group: group.to_string(),
                });
            }
        }
        Ok(_) => encode_ok(out, &[]),
        Err(e) => encode_err(out, &writer_handle::reply(&e, Asked::GroupDel)),
    }
}
