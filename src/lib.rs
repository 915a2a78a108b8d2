//! smss — a small persistent message queue for one or two small machines.
//!
//! # Threads and channels
//!
//! ```text
//!  clients ──TCP──▶ acceptor ──spawn──▶ conn-<peer> (one per client, 128 KiB stack)
//!                                          │  WriteReq (bounded crossbeam channel,
//!  lifetime / delay / retention timers ────┤  worker.buffSize; full = ERR, not a hang)
//!                                          ▼
//!                                       writer (the ONE persistence thread)
//!                                          │ group commit: drain queue, append,
//!                                          │ one write + one fsync, publish, then
//!                                          │ the batch's answers ──▶ replier (or
//!                                          │ repl-sync), which writes them to the
//!                                          ▼ clients' sockets while the writer goes on
//!                 data/log/*.log  data/index/*.idx  data/checkpoint  data/idlease
//!  conn-<peer> and SUB loops read segments and indexes with pread, only up
//!  to what the writer has published (StoreView's topic states, DurableTail).
//! ```
//!
//! - [`server`]: start-up, the acceptor (connection cap, `ERR BUSY`), signals
//!   and shutdown. [`connection`] dispatches one client's commands over
//!   [`wire`] (frame I/O of one socket); its writes are answered on its
//!   socket through its [`reply_sink`]; [`subscription`] runs a SUB;
//!   [`group_sub`] a consumer-group SUB (standby, commit per ACK, failed
//!   deliveries, dead letters), [`group_shared`] a shared group's member
//!   over its [`dispatch`]er, [`group_admin`] GROUPS and GROUPDEL, over
//!   the registry of group subscribers in [`groups`];
//!   [`sub_batch`] reads and sends one batch in bounded chunks;
//!   [`auth`] checks tokens and paces wrong ones, per connection and per
//!   source address; [`preauth`] caps the connections not yet
//!   authenticated (the acceptor closes the oldest to make room).
//!   [`protocol`] is pure:
//!   parse requests (dropping the payload of one that will be refused),
//!   encode every reply line.
//! - [`storage`], in three layers: [`storage::log`] (segments, the record
//!   format, and the code that reads the log), [`storage::engine`] (the
//!   persistence thread [`storage::engine::writer`] and its parts, and
//!   recovery), [`storage::offline`] (`--check`, `--repair`); beside them the
//!   per-topic indexes, checkpoints and [`storage::ops`], the writer's
//!   contract (`WriteOp` in, `WriteResult` out). All files are created, appended, rolled, truncated
//!   and deleted by the writer only; timers and connections ask it.
//! - [`broker`]: the shared state readers see: storage's published view
//!   (topics, segments, last event id, durable tail), the role, counters; [`timer`]: lifetimes, delayed
//!   messages and retention, each asking the writer through the channel.
//!   [`writer_handle`] is the one way into that channel for every thread:
//!   a call or a pipeline of writes, `Busy`/`Gone`/`Timeout` told apart,
//!   and the one mapping from a failed call to the client's `ERR`.
//! - [`role`]: master or slave, imported by anyone, importing nothing.
//!   [`replication`]: the senders (on a master, a connection that sent
//!   REPL streams the durable log to its slave) and the slave's
//!   `repl-receiver` thread, which feeds the master's records to the same
//!   writer through the same channel (on a master with a peer it looks at
//!   the peer instead, and steps down for a master of a higher epoch; the
//!   role a server starts in is its data directory's, `data/role`, when it
//!   has one); event ids are assigned in the current epoch's range only
//!   ([`storage::ids`]), so two masters never share one; [`stats`] builds STATS from the
//!   counters and what the caller reads from the broker and replication;
//!   [`memory`] tunes glibc malloc and its `mem-trim` thread gives freed
//!   memory back to the OS.
//! - [`nats`]: the bridge's hand-written, synchronous NATS + JetStream client.
//! - [`tls`] (feature `tls`): certificates, the TLS port's handshakes, and a
//!   session split in two halves, so that the thread releasing a client's
//!   answers encrypts them while the connection thread reads, and a
//!   replication sender streams while its ACK reader reads; the slave's
//!   link dials its master through [`replication::dial`].
//! - [`http`]: the one `http` thread (`http:` in the config) serves
//!   `/metrics`, `/healthz` and the status page from published state only
//!   (counters, [`histogram`]s of fsync and publish latency, the broker,
//!   replication); it never talks to the writer.
//! - [`bridge`]: not part of the server: a client-side bridge (run by
//!   `smss-cli bridge`) that copies topics into an external durable sink
//!   through a consumer group, ACKing only what the sink stored.
//!
//! # Durability
//!
//! An `OK` to a write means its record is in the log and visible to INFO and
//! SUB; under `store.fsync: always` (the default) it was fsynced first. Every
//! record carries one global, increasing event id and a CRC32; live writes,
//! recovery and replication change state through one apply path. Recovery
//! loads the checkpoint, replays the log after it, cuts a torn tail, and
//! refuses to start on damage in the middle of the log, a hole in the
//! segment chain, or a log shorter than the checkpoint. A failed write or
//! fsync poisons the writer: writes are refused, never half-done. With
//! `replication.minSlaves` N ≥ 1 an `OK` also means N slaves have the
//! records durably: the writer waits for them after its own fsync and undoes
//! the batch (`ERR NOSLAVE`) when they do not answer in time
//! ([`replication::quorum`] counts their acknowledgements). Offline,
//! `smss --check` ([`storage::offline::check`]) verifies a data directory and
//! `smss --repair` ([`storage::offline::repair`]) cuts it back to its last good
//! record and rebuilds the indexes and the checkpoint.
#![deny(clippy::unwrap_used)]

pub(crate) mod auth;
pub mod bridge;
pub(crate) mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub(crate) mod connection;
pub(crate) mod dispatch;
pub mod error;
pub(crate) mod fds;
pub(crate) mod group_admin;
pub(crate) mod group_shared;
pub(crate) mod group_sub;
pub(crate) mod groups;
pub(crate) mod histogram;
pub(crate) mod http;
pub mod logging;
pub(crate) mod memory;
pub mod nats;
pub(crate) mod preauth;
pub(crate) mod protocol;
pub mod replication;
pub(crate) mod reply_sink;
pub mod role;
pub mod server;
pub(crate) mod stats;
pub mod storage;
pub(crate) mod stream;
pub(crate) mod sub_batch;
pub(crate) mod subscription;
pub(crate) mod timer;
#[cfg(feature = "tls")]
pub mod tls;
pub(crate) mod wire;
pub(crate) mod writer_handle;
