//! What the writer shares with the rest of the server ([`WriterLinks`]):
//! the view it publishes to readers, the STATS counters it adds to, the
//! role it reads, and the replication state it publishes to and waits on
//! (`replication.minSlaves`). A narrow set instead of the whole broker:
//! storage names no broker.
//!
//! Built once (by the broker for the server, by `smss --repair` for its
//! own offline writer) and moved into the writer thread; every part is
//! shared through an `Arc`.

use std::sync::Arc;

use crate::replication::state::ReplState;
use crate::role::{Role, RoleCell};
use crate::stats::Stats;
use crate::storage::view::StoreView;

#[derive(Clone)]
pub struct WriterLinks {
    /// Topics, last event id, segments, durable tail, index handles.
    pub store: Arc<StoreView>,
    pub stats: Arc<Stats>,
    /// Master or slave; PROMOTE changes it.
    pub role: Arc<RoleCell>,
    /// Slaves' acknowledgements (the write quorum, retention's holds) and
    /// the history, epoch and lease the writer publishes.
    pub repl: Arc<ReplState>,
}

impl WriterLinks {
    /// Links of a writer nobody else reads (`smss --repair`, the engine's
    /// unit tests): a master
    /// with `index_handles` open index files at most under `index_dir`.
    pub fn detached(index_dir: &std::path::Path, index_handles: usize) -> WriterLinks {
        WriterLinks {
            store: Arc::new(StoreView::new(index_dir, index_handles)),
            stats: Arc::default(),
            role: Arc::new(RoleCell::new(Role::Master)),
            repl: Arc::default(),
        }
    }
}
