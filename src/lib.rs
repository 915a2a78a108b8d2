//! smss — a small persistent message queue.
#![deny(clippy::unwrap_used)]

pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod storage;
pub mod subscription;
pub mod timer;
pub mod wire;
