//! Delayed messages in the writer: the pending set (DPUB records waiting
//! for their due time) and firing them as FIRE records.
//!
//! Runs on the writer thread, asked by the `delay` timer thread
//! ([`crate::timer`]). A pending message's payload stays in its DPUB
//! record in the log; only its position is kept here and in the checkpoint.

use super::writer::Writer;
use crate::storage::StoreError;
use crate::storage::log::record::{self, Decoded, Kind, Record};

impl Writer {
    /// Appends a Fire record for each id still pending, in the given order.
    pub(super) fn fire(&mut self, ids: &[u64], now: u64) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for &id in ids {
            let Some(p) = self.state.pending().get(&id).cloned() else {
                continue; // fired already, or its topic was deleted
            };
            // A topic whose life is over first ends, dropping what is
            // pending for it: the message is due for a topic already gone.
            if self.expire_if_due(p.topic(), now)? {
                continue; // dropped (and counted) with its topic
            }
            if !self.state.has_topic(p.topic()) {
                self.state.drop_pending(id);
                continue;
            }
            buf.resize(p.record_len() as usize, 0);
            self.read_log(&mut buf, p.pos())?;
            let (headers, payload) = match record::decode(&buf) {
                Decoded::Record { rec, .. } if rec.event_id == id && rec.kind == Kind::DPub => {
                    (rec.headers.to_vec(), rec.payload().to_vec())
                }
                _ => {
                    return Err(StoreError::corrupt(
                        self.log.path(),
                        p.pos(),
                        format!("the DPUB record of event {id} is not where the writer put it"),
                    ));
                }
            };
            let mut body = Vec::with_capacity(8 + payload.len());
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&payload);
            let fired = self.state.next_id();
            self.append(&Record {
                event_id: fired,
                timestamp_ms: now,
                kind: Kind::Fire,
                flags: 0,
                topic: p.topic(),
                headers: &headers,
                body: &body,
            })?;
            self.count_published(p.topic(), fired, 1);
        }
        Ok(())
    }

    /// Reads log bytes at a global position, from the file or from the
    /// part of the batch not yet written.
    pub(super) fn read_log(&self, buf: &mut [u8], pos: u64) -> Result<(), StoreError> {
        self.log.read(buf, pos, &self.store.segments)
    }
}
