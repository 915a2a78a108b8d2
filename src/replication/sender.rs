//! The master's side of replication (to come): one `repl-<peer>` thread per
//! connected slave. It will read committed records with pread up to the
//! writer's durable tail ([`crate::storage::tail`]), at its own pace like a
//! subscriber, so a slow slave never slows the writer, and track the
//! position each slave acknowledges.
