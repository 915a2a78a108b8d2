//! Which side of replication this server is: [`Role`], and [`RoleCell`],
//! the role as the broker holds it — an atomic, so PROMOTE can turn a slave
//! into a master at run time while connection threads read it without a
//! lock.
//!
//! At the bottom of the house: it imports nothing of smss, so storage,
//! stats, cli, the broker and replication can all name the role without
//! pointing at each other. Runs on no thread of its own.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// Which side of replication this server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Slave,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The current role, readable from any thread.
#[derive(Debug)]
pub struct RoleCell(AtomicU8);

impl RoleCell {
    pub fn new(role: Role) -> RoleCell {
        RoleCell(AtomicU8::new(role as u8))
    }

    pub fn get(&self) -> Role {
        if self.0.load(Ordering::Acquire) == Role::Slave as u8 {
            Role::Slave
        } else {
            Role::Master
        }
    }

    /// PROMOTE: a slave becomes a master.
    pub fn set(&self, role: Role) {
        self.0.store(role as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cell_holds_the_role_it_was_given() {
        let c = RoleCell::new(Role::Slave);
        assert_eq!(c.get(), Role::Slave);
        c.set(Role::Master);
        assert_eq!(c.get(), Role::Master);
        assert_eq!(Role::Slave.to_string(), "slave");
    }
}
