//! Publishing with a dedup key: PUB, MPUB and DPUB carrying the reserved
//! `msgid=<key>` header, and the reply's ` dup` flag ([`Keyed`],
//! [`KeyedRange`]). Kept beside the rest of [`Client`] so the keyed reply
//! format has one reader.
//!
//! Why a key: a publish whose connection drops before its `OK` may or may
//! not have been written. Sent again with the same key on a new connection
//! within the server's `publish.dedupWindowMs`, it is written at most once
//! and answered with the first one's id, `dup` set when it was a repeat.

use super::{Client, Result, check, expect_reply, parse_num, protocol, push_headers};

/// The answer to a keyed PUB or DPUB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed {
    /// The message's event id (the first publish's, for a repeat).
    pub id: u64,
    /// The key was seen within the window: nothing was written this time.
    pub dup: bool,
}

/// The answer to a keyed MPUB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedRange {
    pub first: u64,
    pub last: u64,
    /// The whole MPUB repeated an earlier one: nothing was written.
    pub dup: bool,
}

/// `OK <values…> [dup]` → the values and the flag (later fields allowed).
fn parse_keyed(line: &str, values: usize) -> Result<(Vec<&str>, bool)> {
    let toks = expect_reply(line, "OK")?;
    if toks.len() < values {
        return Err(protocol("missing event id", line));
    }
    let dup = toks.get(values) == Some(&"dup");
    Ok((toks, dup))
}

impl Client {
    /// `PUB <topic> <n> msgid=<key> [k=v …]` + payload.
    pub fn publish_with_key(
        &mut self,
        topic: &str,
        key: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Keyed> {
        check::topic(topic)?;
        let line = format!("PUB {topic} {}", payload.len());
        self.keyed_one(line, key, headers, payload)
    }

    /// `DPUB <topic> <delay_ms> <n> msgid=<key> [k=v …]` + payload; the id
    /// is the delayed-publish record's.
    pub fn dpublish_with_key(
        &mut self,
        topic: &str,
        delay_ms: u64,
        key: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Keyed> {
        check::topic(topic)?;
        check::delay_ms(delay_ms)?;
        let line = format!("DPUB {topic} {delay_ms} {}", payload.len());
        self.keyed_one(line, key, headers, payload)
    }

    fn keyed_one(
        &mut self,
        mut line: String,
        key: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Keyed> {
        check::dedup_key(key)?;
        let mut all = vec![("msgid", key)];
        all.extend_from_slice(headers);
        push_headers(&mut line, &all)?;
        self.send_frame(&line, payload)?;
        let reply = self.read_line()?;
        let (toks, dup) = parse_keyed(&reply, 1)?;
        let id = parse_num(toks.first(), "event id", &reply)?;
        Ok(Keyed { id, dup })
    }

    /// `MPUB` of (key, payload) pairs, each entry with its own key. A repeat
    /// of one earlier keyed MPUB (same keys, same order) answers its range
    /// with `dup`; an MPUB that shares only some keys with earlier ones is
    /// refused (`ERR BADREQ`), since an MPUB is written whole or not at all.
    pub fn mpublish_with_keys(
        &mut self,
        topic: &str,
        msgs: &[(&str, &[u8])],
    ) -> Result<KeyedRange> {
        check::topic(topic)?;
        check::mpub_count(msgs.len())?;
        let mut frames = Vec::with_capacity(msgs.len());
        for (key, payload) in msgs {
            check::dedup_key(key)?;
            frames.push((format!("{} msgid={key}", payload.len()), *payload));
        }
        self.write_all(format!("MPUB {topic} {}\r\n", msgs.len()).as_bytes())?;
        for (line, payload) in frames {
            self.send_frame(&line, payload)?;
        }
        let reply = self.read_line()?;
        let (toks, dup) = parse_keyed(&reply, 2)?;
        let first = parse_num(toks.first(), "first event id", &reply)?;
        let last = parse_num(toks.get(1), "last event id", &reply)?;
        Ok(KeyedRange { first, last, dup })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dup_flag_is_read_where_it_is() {
        assert_eq!(parse_keyed("OK 5", 1).map(|(_, d)| d).ok(), Some(false));
        assert_eq!(parse_keyed("OK 5 dup", 1).map(|(_, d)| d).ok(), Some(true));
        assert_eq!(
            parse_keyed("OK 5 7 dup x", 2).map(|(_, d)| d).ok(),
            Some(true)
        );
        assert!(parse_keyed("OK", 1).is_err());
        assert!(parse_keyed("ERR BADREQ no", 1).is_err());
    }
}
