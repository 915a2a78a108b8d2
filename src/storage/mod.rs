//! storage (stub)
pub mod checkpoint;
pub mod index;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod writer;
