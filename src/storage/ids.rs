//! Event-id ranges of epochs, pure arithmetic: the epoch is the high 16
//! bits of an event id, so the master of epoch `E` assigns ids in
//! `[E << 48, (E + 1) << 48)` only (epoch 0: `1 ..`, the ids smss always
//! had). See [`super::engine::epochs`] for how a new epoch starts.
//!
//! Imports nothing: the writer, STATS and the replication lag use it.

/// Bits of an event id below the epoch.
pub const EPOCH_ID_BITS: u32 = 48;

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

/// The first id of the epoch range `id` lies in.
pub fn range_start(id: u64) -> u64 {
    (id >> EPOCH_ID_BITS) << EPOCH_ID_BITS
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
        assert_eq!(range_start(epoch_base(3) + 17), epoch_base(3));
        assert_eq!(range_start(5), 0);
    }
}
