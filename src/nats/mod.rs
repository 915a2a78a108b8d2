//! A hand-written, synchronous NATS client with the JetStream calls the
//! bridge needs (DESIGN.md: small protocols are written by hand). It runs
//! on the caller's thread over one blocking socket (plain, or TLS with
//! feature `tls`), touches no channels or locks, and starts no threads.
//!
//! - [`conn`]: [`Conn`], one connection to one server of a list: INFO,
//!   CONNECT (auth, TLS), PUB/HPUB, MSG/HMSG, PING/PONG, a private reply
//!   inbox, requests one at a time or pipelined, reconnect to the next
//!   server.
//! - [`jetstream`]: [`JetStream`] over a `Conn`: stream info and create,
//!   chained pipelined publishes ([`JetStream::publish_chain`]: what a
//!   stream holds after a chain is always a prefix of the chain), and
//!   reading stored messages back.
//! - `socket` (TCP connect, the TLS handshake, the INFO fields kept),
//!   `proto` (the frames and header blocks, pure), [`json`] (a small JSON
//!   reader and string quoting) and [`base64`].
//!
//! One error type, [`NatsError`]; every message names the server, subject
//! or stream it is about. [`NatsError::is_retryable`] tells the errors
//! worth another try (on this or the next server) from permanent ones.

pub mod base64;
pub mod conn;
pub mod jetstream;
pub mod json;
mod options;
pub(crate) mod proto;
mod socket;

use std::fmt;

pub use conn::{Conn, Msg, Options};
pub use jetstream::{JetStream, PubAck, PubMsg, Publishable, StoredMsg, StreamConfig, StreamInfo};

/// Everything that can go wrong talking to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsError {
    /// No server of the list could be connected to; `reason` says what
    /// each one answered.
    Connect { servers: String, reason: String },
    /// The server refused our credentials (`-ERR 'Authorization Violation'`).
    Auth { server: String, message: String },
    /// TLS could not be set up or its handshake failed.
    Tls { server: String, reason: String },
    /// The connection broke (closed, reset, a write failed); call
    /// [`Conn::reconnect`].
    Disconnected { server: String, reason: String },
    /// No reply to a request on `subject` by its deadline.
    Timeout { server: String, subject: String },
    /// Nobody listens on `subject` (a status-503 reply): for JetStream,
    /// the stream has no leader right now, or does not exist.
    NoResponders { server: String, subject: String },
    /// The JetStream API answered with an error:
    /// `{"error":{"code":..,"err_code":..,"description":..}}`.
    Api {
        subject: String,
        code: u16,
        err_code: u64,
        description: String,
    },
    /// A message of `size` bytes (headers included) is above the server's
    /// `max_payload`; it was not sent and the connection is fine.
    TooBig {
        subject: String,
        size: usize,
        max: usize,
    },
    /// The server sent `-ERR` (other than an auth failure).
    Server { server: String, message: String },
    /// The server's bytes do not follow the protocol (the connection is
    /// dropped), or a reply is not the JSON expected.
    Protocol { server: String, reason: String },
    /// An argument we would have to send is malformed (a subject with a
    /// space, a header name with a colon, ...); nothing was sent.
    BadArgument(String),
}

/// JetStream's error code for "wrong last msg id" (a chained publish whose
/// predecessor is not the stream's last message).
pub const ERR_WRONG_LAST_MSG_ID: u64 = 10070;
/// "stream not found".
pub const ERR_STREAM_NOT_FOUND: u64 = 10059;
/// "no message found" (STREAM.MSG.GET).
pub const ERR_NO_MESSAGE_FOUND: u64 = 10037;

impl NatsError {
    /// Worth another try with the same message ids: a timeout, no
    /// responders, a dropped connection or a failed connect, an API 503
    /// (no leader, cluster busy) or a broken chain (10070, because an
    /// earlier message failed), a `-ERR` that closed the connection.
    /// Everything else (auth, TLS, a permissions error, a message too big,
    /// a bad argument, a malformed reply, a permanent API error) will
    /// fail again.
    pub fn is_retryable(&self) -> bool {
        match self {
            NatsError::Timeout { .. }
            | NatsError::NoResponders { .. }
            | NatsError::Disconnected { .. }
            | NatsError::Connect { .. } => true,
            NatsError::Api { code, err_code, .. } => {
                *code == 503 || *code == 408 || *err_code == ERR_WRONG_LAST_MSG_ID
            }
            // After any -ERR but a permissions one the server closes the
            // connection (stale, slow consumer, too many connections):
            // another connection may well work.
            NatsError::Server { message, .. } => !message
                .to_ascii_lowercase()
                .starts_with("permissions violation"),
            _ => false,
        }
    }
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsError::Connect { servers, reason } => {
                write!(f, "cannot connect to NATS ({servers}): {reason}")
            }
            NatsError::Auth { server, message } => {
                write!(f, "NATS server {server} refused our credentials: {message}")
            }
            NatsError::Tls { server, reason } => {
                write!(f, "TLS with NATS server {server}: {reason}")
            }
            NatsError::Disconnected { server, reason } => {
                write!(f, "connection to NATS server {server} lost: {reason}")
            }
            NatsError::Timeout { server, subject } => {
                write!(f, "no reply on {subject} from NATS server {server} in time")
            }
            NatsError::NoResponders { server, subject } => write!(
                f,
                "no responders on {subject} (NATS server {server}): no stream leader, or no such stream"
            ),
            NatsError::Api {
                subject,
                code,
                err_code,
                description,
            } => write!(
                f,
                "JetStream {subject}: error {code}/{err_code}: {description}"
            ),
            NatsError::TooBig { subject, size, max } => write!(
                f,
                "message on {subject} of {size} bytes is above the server's max_payload of {max}; not sent"
            ),
            NatsError::Server { server, message } => {
                write!(f, "NATS server {server}: -ERR {message}")
            }
            NatsError::Protocol { server, reason } => {
                write!(f, "NATS server {server}: protocol error: {reason}")
            }
            NatsError::BadArgument(s) => write!(f, "{s}; nothing was sent"),
        }
    }
}

impl std::error::Error for NatsError {}

pub type Result<T> = std::result::Result<T, NatsError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Random and mangled input into every parser: errors, never a panic.
    #[test]
    fn parsers_never_panic_on_garbage() {
        let seeds: [&[u8]; 6] = [
            b"HMSG a.b 1 _INBOX.x.1 22 27\r\nNATS/1.0 503 No\r\nA: b\r\n\r\nhello\r\n",
            b"MSG a 1 5\r\nhello\r\nPING\r\n-ERR 'x'\r\n",
            br#"{"a":[1,-2,3.5e2,"\u00e9\ud83d\ude00",{"b":null}],"c":true}"#,
            b"INFO {\"max_payload\":1024}\r\n",
            b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n",
            b"Zm9vYmFy",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const ALPHA: &[u8] = b"\r\n \"{[\\:0";
        for _ in 0..20_000 {
            let seed = seeds[(next() % seeds.len() as u64) as usize];
            let mut b = seed.to_vec();
            for _ in 0..(next() % 4) {
                let i = (next() as usize) % (b.len() + 1);
                match next() % 3 {
                    0 if i < b.len() => b[i] = next() as u8,
                    1 => b.truncate(i),
                    _ => b.insert(
                        i.min(b.len()),
                        ALPHA[(next() % ALPHA.len() as u64) as usize],
                    ),
                }
            }
            let _ = proto::parse_frame(&b, 64);
            let _ = proto::parse_headers(&b);
            let _ = json::parse(&b);
            let _ = base64::decode(&String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn retryable_or_permanent() {
        let s = || "127.0.0.1:4222".to_string();
        let api = |code, err_code| NatsError::Api {
            subject: "x".into(),
            code,
            err_code,
            description: String::new(),
        };
        let server = |m: &str| NatsError::Server {
            server: s(),
            message: m.into(),
        };
        let retry = [
            NatsError::Timeout {
                server: s(),
                subject: "x".into(),
            },
            NatsError::NoResponders {
                server: s(),
                subject: "x".into(),
            },
            NatsError::Disconnected {
                server: s(),
                reason: "reset".into(),
            },
            api(503, 10008),
            api(400, ERR_WRONG_LAST_MSG_ID),
            server("Stale Connection"),
        ];
        let permanent = [
            NatsError::Auth {
                server: s(),
                message: "Authorization Violation".into(),
            },
            NatsError::TooBig {
                subject: "x".into(),
                size: 2,
                max: 1,
            },
            api(400, 10058),
            server("Permissions Violation for Publish to \"x\""),
            NatsError::BadArgument("x".into()),
        ];
        for e in retry {
            assert!(e.is_retryable(), "{e}");
        }
        for e in permanent {
            assert!(!e.is_retryable(), "{e}");
            assert!(!e.to_string().is_empty());
        }
    }
}
