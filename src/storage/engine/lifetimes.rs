//! Topic lifetimes in the writer: a topic past its life does not exist.
//!
//! The `lifetime` timer thread asks for each expiry when it falls due, but
//! the writer does not rely on it being on time: a write to a topic whose
//! life is over is refused (`NOTOPIC`) without writing anything, a CREATE
//! of its name first ends it, and a delayed message falling due for it
//! ends it (the same DELETE record, reason expired, the timer would have
//! caused) and is dropped with it. Recovery ends every topic whose life ended while the server was
//! down before it serves anything or fires any delayed message, and so
//! does PROMOTE on a slave (whose timers waited for the master). A delayed
//! message due for a topic already gone is dropped and counted, whichever
//! of the two deadlines came first.
//!
//! Runs on the writer thread (and in recovery, before it starts).

use log::{info, warn};

use super::writer::Writer;
use crate::storage::StoreError;
use crate::storage::log::record::{DeleteReason, Kind, Record};

impl Writer {
    /// Appends the DELETE record of `topic` and applies it. Returns its id.
    pub(super) fn append_delete(
        &mut self,
        topic: &str,
        reason: DeleteReason,
        now: u64,
    ) -> Result<u64, StoreError> {
        let id = self.state.next_id();
        self.append(&Record {
            event_id: id,
            timestamp_ms: now,
            kind: Kind::Delete,
            flags: 0,
            topic,
            headers: b"",
            body: &[reason as u8],
        })?;
        if reason == DeleteReason::Expired {
            info!("topic {topic} expired (event id {id})");
            self.state.count_expired();
        }
        Ok(id)
    }

    /// Whether `topic` exists and its life is over at `now`.
    pub(super) fn past_life(&self, topic: &str, now: u64) -> bool {
        self.state
            .topic(topic)
            .is_some_and(|t| t.shared().expires_ms != 0 && t.shared().expires_ms <= now)
    }

    /// Ends `topic` if its life is over at `now`. True when it did.
    pub(super) fn expire_if_due(&mut self, topic: &str, now: u64) -> Result<bool, StoreError> {
        let due = self.past_life(topic, now);
        if due {
            self.append_delete(topic, DeleteReason::Expired, now)?;
        }
        Ok(due)
    }

    /// Ends every topic whose life is over at `now`, oldest end first (at
    /// start, and at PROMOTE). A failure is left to the lifetime timer,
    /// which retries; the writer's own checks still keep the topic unused.
    pub(super) fn expire_ended(&mut self, now: u64) {
        let mut due: Vec<(u64, String)> = self
            .state
            .topics()
            .values()
            .filter(|t| t.shared().expires_ms != 0 && t.shared().expires_ms <= now)
            .map(|t| (t.shared().expires_ms, t.shared().name.clone()))
            .collect();
        due.sort();
        for (_, name) in due {
            if let Err(e) = self.append_delete(&name, DeleteReason::Expired, now) {
                warn!("topic {name}'s life is over but it could not be ended now: {e}");
                return;
            }
        }
    }
}
