//! The rules one argument of a request must follow (names, tokens, headers,
//! numbers and their ranges), each as a function of the token as it would
//! appear on the wire. The server's parser ([`super::parse`]) applies them
//! after framing; the client ([`crate::client::check`]) applies the same
//! functions before it sends anything, so the two cannot drift apart.
//!
//! Pure: no I/O, no state; runs on whichever thread calls it. Every error is
//! a `BADREQ` [`ProtoError`] whose text names the argument and quotes the
//! offending token.

use super::{
    ErrCode, MAX_HEADER_KEY_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS, MAX_NAME_BYTES, ProtoError,
    SubFrom,
};

/// How much of a client-supplied token is quoted back in an error text.
const QUOTE_BYTES: usize = 64;

pub fn bad(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrCode::BadReq, msg)
}

/// Validates a topic or group name: 1–128 bytes of A-Z a-z 0-9 . _ -
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.iter().all(|&b| is_name_byte(b))
}

pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

pub fn is_visible(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

pub fn topic_arg(tok: &[u8]) -> Result<String, ProtoError> {
    name_arg(tok, "topic")
}

/// A topic or group name (`what` says which, for the error text).
pub fn name_arg(tok: &[u8], what: &str) -> Result<String, ProtoError> {
    if valid_name(tok) {
        Ok(ascii(tok))
    } else {
        Err(bad(format!(
            "invalid {what} name '{}': 1-{MAX_NAME_BYTES} bytes of A-Z a-z 0-9 . _ -",
            quote(tok)
        )))
    }
}

/// One free-form word such as AUTH's token: 1 or more bytes of visible ASCII.
pub fn word_arg(tok: &[u8], what: &str) -> Result<String, ProtoError> {
    if !tok.is_empty() && tok.iter().all(|&b| is_visible(b)) {
        Ok(ascii(tok))
    } else {
        Err(bad(format!(
            "invalid {what} '{}': one word of visible ASCII (no spaces)",
            quote(tok)
        )))
    }
}

/// One `key=value` header, already split at its first `=`.
pub fn header_arg(key: &[u8], value: &[u8]) -> Result<(), ProtoError> {
    if key.is_empty() || key.len() > MAX_HEADER_KEY_BYTES || !key.iter().all(|&b| is_name_byte(b)) {
        return Err(bad(format!(
            "invalid header key '{}': 1-{MAX_HEADER_KEY_BYTES} bytes of A-Z a-z 0-9 . _ -",
            quote(key)
        )));
    }
    if value.len() > MAX_HEADER_VALUE_BYTES || !value.iter().all(|&b| is_visible(b)) {
        return Err(bad(format!(
            "invalid value of header '{}': 0-{MAX_HEADER_VALUE_BYTES} bytes of visible ASCII",
            quote(key)
        )));
    }
    Ok(())
}

/// The reserved header that carries a publish's dedup key (NATS's
/// `Nats-Msg-Id`): it is stored with the message like any header, so the
/// log and replication carry it unchanged, and the writer's dedup table is
/// rebuilt from the records.
pub const DEDUP_HEADER: &[u8] = b"msgid";
/// Longest dedup key: the writer holds up to `publish.dedupMaxKeys` of
/// them, so this bounds its memory (a header value may be 1024 bytes).
pub const MAX_DEDUP_KEY_BYTES: usize = 128;

/// The dedup header's value: 1–[`MAX_DEDUP_KEY_BYTES`] bytes of visible
/// ASCII, at most once per message (`seen`: it came before), since two keys
/// would leave it unclear which one a retry must match.
pub fn dedup_key_arg(value: &[u8], seen: bool) -> Result<(), ProtoError> {
    if seen {
        return Err(bad(
            "header 'msgid' (the dedup key) may appear once per message",
        ));
    }
    if value.is_empty()
        || value.len() > MAX_DEDUP_KEY_BYTES
        || !value.iter().all(|&b| is_visible(b))
    {
        return Err(bad(format!(
            "invalid dedup key 'msgid={}': 1-{MAX_DEDUP_KEY_BYTES} bytes of visible ASCII",
            quote(value)
        )));
    }
    Ok(())
}

/// The dedup key of a message's headers as stored ("k=v k2=v2"), if any.
pub fn dedup_key(headers: &[u8]) -> Option<&[u8]> {
    headers
        .split(|&b| b == b' ')
        .find_map(|tok| tok.strip_prefix(DEDUP_HEADER)?.strip_prefix(b"="))
        .filter(|k| !k.is_empty())
}

/// How many headers one message may carry.
pub fn header_count(count: usize) -> Result<(), ProtoError> {
    if count > MAX_HEADERS {
        return Err(bad(format!("too many headers: at most {MAX_HEADERS}")));
    }
    Ok(())
}

/// CREATE's `<life_ms>`: 0 (no lifetime) or at least 1000.
pub fn life_ms_arg(tok: &[u8]) -> Result<u64, ProtoError> {
    let life_ms = number(tok, "life_ms")?;
    if life_ms != 0 && life_ms < 1000 {
        return Err(bad("CREATE life_ms must be 0 or at least 1000"));
    }
    Ok(life_ms)
}

/// DPUB's `<delay_ms>`: at least 1 (the configured maximum is the server's).
pub fn delay_ms_arg(tok: &[u8]) -> Result<u64, ProtoError> {
    let delay_ms = number(tok, "delay_ms")?;
    if delay_ms == 0 {
        return Err(bad("DPUB delay_ms must be at least 1"));
    }
    Ok(delay_ms)
}

/// "from 1 to N", or "at least 1" when the caller (the client) does not know the
/// server's limit and passes `usize::MAX`.
fn one_to(max: usize) -> String {
    if max == usize::MAX {
        "at least 1".to_string()
    } else {
        format!("from 1 to {max}")
    }
}

/// MPUB's `<count>`: from 1 to `max_batch`.
pub fn mpub_count_arg(tok: &[u8], max_batch: usize) -> Result<usize, ProtoError> {
    parse_u64(tok)
        .and_then(|c| usize::try_from(c).ok())
        .filter(|c| (1..=max_batch).contains(c))
        .ok_or_else(|| {
            bad(format!(
                "MPUB count '{}' is not a number {}",
                quote(tok),
                one_to(max_batch)
            ))
        })
}

/// SUB's `<after>`: `0`, an event id, `$` or `-`.
pub fn sub_from_arg(tok: &[u8]) -> Result<SubFrom, ProtoError> {
    Ok(match tok {
        b"$" => SubFrom::Latest,
        b"-" => SubFrom::Committed,
        tok => SubFrom::After(number(tok, "SUB position")?),
    })
}

/// SUB's `batch=<n>`: from 1 to `max_batch`.
pub fn batch_arg(tok: &[u8], max_batch: usize) -> Result<usize, ProtoError> {
    usize::try_from(number(tok, "batch")?)
        .ok()
        .filter(|b| (1..=max_batch).contains(b))
        .ok_or_else(|| bad(format!("batch must be {}", one_to(max_batch))))
}

/// SUB's `ack=<ms>`: at least 1.
pub fn ack_ms_arg(tok: &[u8]) -> Result<u64, ProtoError> {
    let ack_ms = number(tok, "ack")?;
    if ack_ms == 0 {
        return Err(bad("ack must be at least 1 ms"));
    }
    Ok(ack_ms)
}

/// SUB's `maxDeliver=<n>`: failed deliveries of one message before it is
/// given up on; 0 = unlimited.
pub fn max_deliver_arg(tok: &[u8]) -> Result<u32, ProtoError> {
    u32::try_from(number(tok, "maxDeliver")?)
        .map_err(|_| bad(format!("maxDeliver must be at most {}", u32::MAX)))
}

/// SUB `-` (from the group's position), `maxDeliver=` and `dlq=` need a
/// group.
pub fn sub_group_rule(
    from: SubFrom,
    has_group: bool,
    has_group_options: bool,
) -> Result<(), ProtoError> {
    if from == SubFrom::Committed && !has_group {
        return Err(bad("SUB position '-' needs group=<name>"));
    }
    if has_group_options && !has_group {
        return Err(bad(
            "SUB options maxDeliver=, dlq= and mode= need group=<name>",
        ));
    }
    Ok(())
}

pub fn number(tok: &[u8], what: &str) -> Result<u64, ProtoError> {
    parse_u64(tok).ok_or_else(|| {
        bad(format!(
            "invalid {what} '{}': expected an unsigned decimal number",
            quote(tok)
        ))
    })
}

/// Unsigned decimal digits only, fitting in u64 (leading zeros allowed).
pub fn parse_u64(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() {
        return None;
    }
    tok.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A String from bytes already known to be ASCII.
pub fn ascii(tok: &[u8]) -> String {
    tok.iter().map(|&b| char::from(b)).collect()
}

/// A client token for an error text: printable, at most [`QUOTE_BYTES`] bytes.
/// Spaces stay (a client's argument may hold one: that is often its mistake).
pub fn quote(tok: &[u8]) -> String {
    let mut s: String = tok
        .iter()
        .take(QUOTE_BYTES)
        .map(|&b| {
            if b == b' ' || is_visible(b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    if tok.len() > QUOTE_BYTES {
        s.push_str("...");
    }
    s
}
