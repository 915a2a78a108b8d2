//! The offline tools, run with the data directory locked and no server:
//! `smss --check` ([`check`], read-only) and `smss --repair` ([`repair`],
//! the one writer of the data directory besides the persistence thread).

pub mod check;
pub mod repair;
