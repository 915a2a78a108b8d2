//! Event-id ranges of epochs, and starting a new epoch.
//!
//! The epoch is the high bits of an event id: the master of epoch `E`
//! assigns ids in `[E << 48, (E + 1) << 48)` only (epoch 0: `1 ..`, today's
//! ids). A PROMOTE starts epoch `E + 1` at the bottom of its range, so
//! whatever a slave knew or missed of its master's ids (its last lease, a
//! backlog it never received), the new master's ids are above every id the
//! old one can assign, and two masters of different epochs running at once
//! (a split brain) never assign the same id. 2^48 ids per epoch last 89
//! years at 100k ids/s; a master that nevertheless comes within
//! [`ROLLOVER_HEADROOM`] of its range's end starts a new epoch itself,
//! skipping one number so that a slave that missed it and gets promoted
//! takes an epoch of its own.
//!
//! Data written before ids had ranges (epochs started by an older release
//! at ids just above the old master's lease) stays valid: such an epoch's
//! ids are all below `1 << 48`, and the next PROMOTE still jumps above them.
//!
//! Runs on the writer thread; the range arithmetic is in [`crate::storage::ids`].

use log::{info, warn};

use super::writer::Writer;
use crate::storage::StoreError;
use crate::storage::ids::{epoch_base, epoch_limit};
use crate::storage::log::record::{self, Decoded, Kind, NO_TOPIC, Record};
use crate::storage::now_ms;

/// A master starts a new epoch itself when fewer ids than this are left in
/// its range (more than one request can take: MPUB takes at most
/// `limits.maxBatch` ≤ 100,000).
pub(super) const ROLLOVER_HEADROOM: u64 = 1 << 20;

impl Writer {
    /// A master close to the end of its epoch's ids starts the next but
    /// one epoch before assigning more (see the module docs).
    pub(super) fn keep_id_room(&mut self) -> Result<(), StoreError> {
        let epoch = self.epoch();
        if self.state.last_id().saturating_add(ROLLOVER_HEADROOM) < epoch_limit(epoch) {
            return Ok(());
        }
        warn!(
            "event ids of epoch {epoch} are nearly used up (last id {}): starting epoch {}",
            self.state.last_id(),
            epoch + 2
        );
        self.start_epoch(epoch + 2).map(|_| ())
    }

    /// Refuses an id the master of the current epoch may not assign.
    pub(super) fn check_id_in_range(&self, id: u64) -> Result<(), StoreError> {
        let epoch = self.epoch();
        if id > epoch_limit(epoch) {
            return Err(StoreError::IdsExhausted { epoch, id });
        }
        Ok(())
    }

    /// Appends the EPOCH record that starts `epoch`, at the bottom of its
    /// id range (or above every id this server has seen or leased, should
    /// any be higher). Returns its id.
    pub(super) fn start_epoch(&mut self, epoch: u64) -> Result<u64, StoreError> {
        let id = self
            .state
            .last_id()
            .max(self.state.id_lease())
            .max(epoch_base(epoch).saturating_sub(1))
            .saturating_add(1);
        if self.state.history() == 0 {
            self.state.start_history(super::recovery::new_history_id());
        }
        let bytes = epoch_record(
            id,
            now_ms(),
            epoch,
            self.state.last_id(),
            self.state.history(),
        );
        self.reserve_replicated(id, bytes.len())?;
        let pos = self.log.append_bytes(&bytes);
        if let Decoded::Record { rec, len } = record::decode(&bytes) {
            self.apply(&rec, pos, len)?;
        }
        info!("epoch {epoch} starts at event id {id}");
        Ok(id)
    }
}

/// An EPOCH record.
pub(super) fn epoch_record(
    id: u64,
    ts: u64,
    epoch: u64,
    prev_last_id: u64,
    history: u64,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(24);
    body.extend_from_slice(&epoch.to_le_bytes());
    body.extend_from_slice(&prev_last_id.to_le_bytes());
    body.extend_from_slice(&history.to_le_bytes());
    let mut out = Vec::new();
    record::encode(
        &mut out,
        &Record {
            event_id: id,
            timestamp_ms: ts,
            kind: Kind::Epoch,
            flags: 0,
            topic: NO_TOPIC,
            headers: b"",
            body: &body,
        },
    );
    out
}
