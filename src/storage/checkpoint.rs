//! checkpoint (stub)
