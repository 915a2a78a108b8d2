//! The event-id lease: a small file holding the highest event id the writer
//! may have handed out, so ids never repeat after a crash.
//!
//! Under `fsync: interval` or `never` a crash can lose records that were
//! written but not fsynced — and their ids may already have been seen by
//! clients. Before assigning an id above the lease, the writer durably
//! raises the lease by [`ID_LEASE_BLOCK`] (one atomic file write per block);
//! recovery resumes the sequence above it. A clean shutdown shrinks the
//! lease back to the last id, so a clean restart leaves no gap.
//!
//! Written by the writer thread only (and by recovery before it starts).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use crate::storage::{StoreError, sync_dir};

/// The lease file in the data directory.
pub const ID_LEASE_FILE: &str = "idlease";
/// Ids leased per write of [`ID_LEASE_FILE`].
pub(in crate::storage) const ID_LEASE_BLOCK: u64 = 1 << 20;

/// Writes the lease file atomically (temp, fsync, rename, fsync dir).
pub(in crate::storage) fn store_lease(dir: &Path, lease: u64) -> Result<(), StoreError> {
    let tmp = dir.join("idlease.tmp");
    let path = dir.join(ID_LEASE_FILE);
    let mut f = File::create(&tmp).map_err(|e| StoreError::io("create id lease", &tmp, e))?;
    f.write_all(format!("{lease}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io("write id lease", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename id lease", &path, e))?;
    sync_dir(dir)
}

/// Reads the lease file; 0 when there is none yet.
pub(in crate::storage) fn load_lease(dir: &Path) -> Result<u64, StoreError> {
    let path = dir.join(ID_LEASE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => t
            .trim()
            .parse()
            .map_err(|_| StoreError::corrupt(&path, 0, format!("not a number: {:?}", t.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::io("read id lease", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_lease_loads_back_and_a_missing_one_is_zero() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        assert_eq!(load_lease(dir.path())?, 0);
        store_lease(dir.path(), 1 << 20)?;
        assert_eq!(load_lease(dir.path())?, 1 << 20);
        std::fs::write(dir.path().join(ID_LEASE_FILE), "x\n")
            .map_err(|e| StoreError::io("write", dir.path(), e))?;
        assert!(
            load_lease(dir.path()).is_err(),
            "garbage is corruption, not 0"
        );
        Ok(())
    }
}
