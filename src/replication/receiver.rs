//! The slave's side of replication (to come): one `repl-receiver` thread
//! that connects to the master, sends `REPL <last_id>`, and feeds every
//! record it receives to the slave's own writer through the same bounded
//! channel, where the one apply path ([`crate::storage::apply`]) applies it
//! with the master's event ids.
