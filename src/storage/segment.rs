//! segment (stub)
