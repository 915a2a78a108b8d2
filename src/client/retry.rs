//! Keyed publishes that survive a lost connection: [`Reconnecting`] holds
//! a way to make a connection and, when a keyed PUB, DPUB or MPUB fails
//! because the connection failed (the write may or may not have been
//! made), connects again and sends the same request with the same keys.
//! Within the server's `publish.dedupWindowMs` that writes each message at
//! most once: a repeat is answered with the first write's ids and `dup`.
//!
//! Only keyed writes are retried, and only after an I/O error: an `ERR`
//! from the server, or an argument refused before sending, is returned at
//! once (sending it again would get the same answer). An unkeyed write
//! cut off the same way cannot be retried safely, so there is no method
//! for one. Runs on the caller's thread; the backoff is a sleep between
//! attempts (nothing to wait for but time).

use std::time::Duration;

use super::keyed::{Keyed, KeyedRange};
use super::{Client, ClientError, Result};

/// The first pause after a failed attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A keyed publisher that reconnects; see the module docs.
pub struct Reconnecting<F: FnMut() -> Result<Client>> {
    connect: F,
    client: Option<Client>,
    attempts: u32,
}

impl<F: FnMut() -> Result<Client>> Reconnecting<F> {
    /// `connect` makes a ready connection (TLS, AUTH: whatever the
    /// application needs); it is called now and after each lost one. A
    /// request is tried at most 5 times unless [`Reconnecting::attempts`]
    /// says otherwise.
    pub fn new(connect: F) -> Reconnecting<F> {
        Reconnecting {
            connect,
            client: None,
            attempts: 5,
        }
    }

    /// How many times a request is tried in all (at least once).
    pub fn attempts(mut self, n: u32) -> Reconnecting<F> {
        self.attempts = n.max(1);
        self
    }

    /// The current connection, made if there is none.
    pub fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_none() {
            self.client = Some((self.connect)()?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| ClientError::Protocol("no connection".into()))
    }

    /// [`Client::publish_with_key`], retried on a new connection.
    pub fn publish_with_key(
        &mut self,
        topic: &str,
        key: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Keyed> {
        self.retry(|c| c.publish_with_key(topic, key, headers, payload))
    }

    /// [`Client::dpublish_with_key`], retried on a new connection.
    pub fn dpublish_with_key(
        &mut self,
        topic: &str,
        delay_ms: u64,
        key: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Keyed> {
        self.retry(|c| c.dpublish_with_key(topic, delay_ms, key, headers, payload))
    }

    /// [`Client::mpublish_with_keys`], retried on a new connection.
    pub fn mpublish_with_keys(
        &mut self,
        topic: &str,
        msgs: &[(&str, &[u8])],
    ) -> Result<KeyedRange> {
        self.retry(|c| c.mpublish_with_keys(topic, msgs))
    }

    fn retry<T>(&mut self, mut send: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let mut backoff = FIRST_BACKOFF;
        let mut tried = 0;
        loop {
            tried += 1;
            let res = self.client().and_then(&mut send);
            match res {
                // The connection failed (or could not be made): the write
                // may have been made or not; the same keys settle it.
                Err(ClientError::Io(e)) if tried < self.attempts => {
                    log::info!("keyed publish: {e}; connecting again in {backoff:?}");
                    self.client = None;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e @ (ClientError::Io(_) | ClientError::Protocol(_))) => {
                    // The framing is unknown after these: drop the connection.
                    self.client = None;
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}
