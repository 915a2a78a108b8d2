//! The durable role claim: `data/role`, which says whether this data
//! directory's server is the master of an epoch (it was promoted) or a
//! slave that stepped down to follow a master of a higher epoch.
//!
//! The claim wins over the command line's `--role`, so a reboot with the
//! unit file written for the pair's first days cannot undo a failover: a
//! promoted server stays the master, an old master that stepped down stays
//! a slave. A data directory without the file (new, or from an older
//! release) takes the command line's role. One line, `master <epoch>` or
//! `slave <epoch>`, written atomically (temp, fsync, rename, fsync dir) by
//! the writer thread after the epoch it names is durable; read once at
//! start.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use super::{StoreError, sync_dir};
use crate::role::Role;

/// The claim file in the data directory.
pub const ROLE_FILE: &str = "role";

/// What `data/role` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleClaim {
    pub role: Role,
    /// For a master: the epoch it was promoted to. For a slave: the epoch
    /// of the master it stepped down for.
    pub epoch: u64,
}

impl RoleClaim {
    fn line(&self) -> String {
        format!("{} {}\n", self.role.as_str(), self.epoch)
    }

    fn parse(text: &str) -> Option<RoleClaim> {
        let mut f = text.split_whitespace();
        let role = match f.next()? {
            "master" => Role::Master,
            "slave" => Role::Slave,
            _ => return None,
        };
        let epoch = f.next()?.parse().ok()?;
        f.next().is_none().then_some(RoleClaim { role, epoch })
    }
}

/// Reads the claim; `None` when the directory has none.
pub fn load_claim(dir: &Path) -> Result<Option<RoleClaim>, StoreError> {
    let path = dir.join(ROLE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => RoleClaim::parse(&t).map(Some).ok_or_else(|| {
            StoreError::corrupt(
                &path,
                0,
                format!(
                    "expected `master <epoch>` or `slave <epoch>`, found {:?}",
                    t.trim()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read role claim", &path, e)),
    }
}

/// Writes the claim atomically.
pub(super) fn store_claim(dir: &Path, claim: RoleClaim) -> Result<(), StoreError> {
    let tmp = dir.join("role.tmp");
    let path = dir.join(ROLE_FILE);
    let mut f = File::create(&tmp).map_err(|e| StoreError::io("create role claim", &tmp, e))?;
    f.write_all(claim.line().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io("fsync role claim", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename role claim", &path, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_round_trips_and_a_bad_one_is_corruption() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::io("tempdir", Path::new("/tmp"), e))?;
        assert_eq!(load_claim(dir.path())?, None);
        for claim in [
            RoleClaim {
                role: Role::Master,
                epoch: 3,
            },
            RoleClaim {
                role: Role::Slave,
                epoch: 4,
            },
        ] {
            store_claim(dir.path(), claim)?;
            assert_eq!(load_claim(dir.path())?, Some(claim));
        }
        for bad in ["", "master", "leader 1", "master x", "slave 1 2"] {
            std::fs::write(dir.path().join(ROLE_FILE), bad)
                .map_err(|e| StoreError::io("write", dir.path(), e))?;
            assert!(load_claim(dir.path()).is_err(), "{bad:?}");
        }
        Ok(())
    }
}
