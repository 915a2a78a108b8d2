//! What the engine's unit tests share: a real writer on a directory (no
//! sockets, no threads) and the requests they run through it.

use std::path::Path;

use super::links::WriterLinks;
use super::writer::Writer;
use crate::config::Config;
use crate::storage::ops::Reply;
use crate::storage::ops::{WriteError, WriteOp, WriteReq, WriteResult, timer_channels};

/// A master's writer on `dir` with `handles` index handles; `tune` sets
/// what the test needs beyond the defaults.
pub(super) fn open(dir: &Path, handles: usize, tune: impl FnOnce(&mut Config)) -> Writer {
    let mut cfg = Config::default();
    cfg.store.path = dir.to_path_buf();
    tune(&mut cfg);
    let links = WriterLinks::detached(&cfg.store.path.join("index"), handles);
    let (timers, _timer_rx) = timer_channels();
    match Writer::open(&cfg, links, timers) {
        Ok((w, _)) => w,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

/// Runs `ops` as one batch (one group commit) and returns their answers.
pub(super) fn batch(w: &mut Writer, ops: Vec<WriteOp>) -> Vec<WriteResult> {
    let mut reqs = Vec::new();
    let mut replies = Vec::new();
    for op in ops {
        let (tx, rx) = crossbeam_channel::bounded(1);
        reqs.push(WriteReq {
            op,
            reply: Reply::Chan(tx),
        });
        replies.push(rx);
    }
    w.run_batch(&mut reqs);
    replies
        .iter()
        .map(|r| r.try_recv().unwrap_or(Err(WriteError::ShuttingDown)))
        .collect()
}

/// Runs one op as its own group commit.
pub(super) fn one(w: &mut Writer, op: WriteOp) -> WriteResult {
    batch(w, vec![op])
        .pop()
        .unwrap_or(Err(WriteError::ShuttingDown))
}

/// PUB of `body` to `t`, without headers.
pub(super) fn publish(t: &str, body: &str) -> WriteOp {
    WriteOp::Pub {
        topic: t.into(),
        msg: crate::protocol::Message {
            headers: Vec::new(),
            payload: body.as_bytes().to_vec(),
        },
    }
}

/// CREATE of a topic without a lifetime.
pub(super) fn create(t: &str) -> WriteOp {
    WriteOp::Create {
        topic: t.into(),
        life_ms: 0,
    }
}
