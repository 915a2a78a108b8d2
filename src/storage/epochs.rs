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
//! Runs on the writer thread; the range functions are pure.

use log::{info, warn};

use super::StoreError;
use super::now_ms;
use super::record::{self, Decoded, Kind, NO_TOPIC, Record};
use super::writer::Writer;

/// Bits of an event id below the epoch.
pub const EPOCH_ID_BITS: u32 = 48;
/// A master starts a new epoch itself when fewer ids than this are left in
/// its range (more than one request can take: MPUB takes at most
/// `limits.maxBatch` ≤ 100,000).
pub(super) const ROLLOVER_HEADROOM: u64 = 1 << 20;

/// The lowest id of `epoch`'s range (`u64::MAX` past the last epoch).
pub fn epoch_base(epoch: u64) -> u64 {
    if epoch >= 1 << (64 - EPOCH_ID_BITS) {
        return u64::MAX;
    }
    epoch << EPOCH_ID_BITS
}

/// The highest id the master of `epoch` may assign.
pub fn epoch_limit(epoch: u64) -> u64 {
    epoch_base(epoch.saturating_add(1)).saturating_sub(1)
}

impl Writer {
    /// A master close to the end of its epoch's ids starts the next but
    /// one epoch before assigning more (see the module docs).
    pub(super) fn keep_id_room(&mut self) -> Result<(), StoreError> {
        let epoch = self.epoch();
        if self.last_id.saturating_add(ROLLOVER_HEADROOM) < epoch_limit(epoch) {
            return Ok(());
        }
        warn!(
            "event ids of epoch {epoch} are nearly used up (last id {}): starting epoch {}",
            self.last_id,
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
            .last_id
            .max(self.id_lease)
            .max(epoch_base(epoch).saturating_sub(1))
            .saturating_add(1);
        if self.history == 0 {
            self.history = super::recovery::new_history_id();
        }
        let bytes = epoch_record(id, now_ms(), epoch, self.last_id, self.history);
        self.reserve_replicated(id, bytes.len())?;
        let pos = self.next_pos();
        self.buf.extend_from_slice(&bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint_and_epoch_zero_keeps_todays_ids() {
        assert_eq!(epoch_base(0), 0);
        assert_eq!(epoch_limit(0), (1 << 48) - 1);
        assert_eq!(epoch_base(1), 1 << 48);
        assert_eq!(epoch_limit(1), (2 << 48) - 1);
        for e in [0u64, 1, 2, 7, 1000] {
            assert!(epoch_limit(e) < epoch_base(e + 1));
            assert_eq!(epoch_base(e + 1) >> EPOCH_ID_BITS, e + 1);
            assert_eq!(epoch_limit(e) >> EPOCH_ID_BITS, e);
        }
        // The last epoch's range ends at u64::MAX; beyond it nothing.
        assert_eq!(epoch_limit(65535), u64::MAX - 1);
        assert_eq!(epoch_base(65536), u64::MAX);
        // Ids of epochs up to 31 stay below 2^53 (exact in a JSON double).
        assert!(epoch_limit(31) < 1 << 53);
    }
}
