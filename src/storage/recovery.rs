//! recovery (stub)
