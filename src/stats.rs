//! stats (stub)
