//! connection (stub)
