//! broker (stub)
