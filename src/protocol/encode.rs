//! Reply encoders: every line the server sends is built here. Each function
//! appends one reply line (always ending in `\r\n`; `MSG` also its payload) to
//! a caller's `Vec<u8>` without allocating anything else.
//!
//! Pure: runs on whichever thread calls it (connection threads, the acceptor
//! for `ERR BUSY`), touches no socket, channel or lock.

use super::{MAX_ERR_TEXT_BYTES, ProtoError};

const CRLF: &[u8] = b"\r\n";

/// Appends the decimal digits of `v` (by hand: the formatting machinery
/// showed in a drain's profile, three numbers per MSG line).
pub(super) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `OK` or `OK 1 2`.
pub fn encode_ok(out: &mut Vec<u8>, values: &[u64]) {
    out.extend_from_slice(b"OK");
    for &v in values {
        out.push(b' ');
        push_u64(out, v);
    }
    out.extend_from_slice(CRLF);
}

/// The answer to a publish whose dedup key was seen within the window:
/// `OK <id> dup` (PUB, DPUB) or `OK <first> <last> dup` (MPUB). The flag is
/// a field at the end of the line, so a client that reads only the ids
/// still reads them.
pub fn encode_dup(out: &mut Vec<u8>, values: &[u64]) {
    out.extend_from_slice(b"OK");
    for &v in values {
        out.push(b' ');
        push_u64(out, v);
    }
    out.extend_from_slice(b" dup");
    out.extend_from_slice(CRLF);
}

/// `ERR <CODE> <msg>`. The text is made safe for one line: bytes outside 0x20–0x7E
/// become `?` and it is cut at [`MAX_ERR_TEXT_BYTES`]; an empty text gives `ERR <CODE>`.
pub fn encode_err(out: &mut Vec<u8>, err: &ProtoError) {
    out.extend_from_slice(b"ERR ");
    out.extend_from_slice(err.code.as_str().as_bytes());
    if !err.msg.is_empty() {
        out.push(b' ');
        out.extend(
            err.msg
                .bytes()
                .take(MAX_ERR_TEXT_BYTES)
                .map(|b| if (0x20..=0x7e).contains(&b) { b } else { b'?' }),
        );
    }
    out.extend_from_slice(CRLF);
}

/// `MSG <event_id> <timestamp_ms> <n>[ <headers>]\r\n` + payload + `\r\n`.
pub fn encode_msg(
    out: &mut Vec<u8>,
    event_id: u64,
    timestamp_ms: u64,
    headers: &[u8],
    payload: &[u8],
) {
    out.reserve(40 + headers.len() + payload.len());
    out.extend_from_slice(b"MSG ");
    push_u64(out, event_id);
    out.push(b' ');
    push_u64(out, timestamp_ms);
    out.push(b' ');
    push_u64(out, payload.len() as u64);
    if !headers.is_empty() {
        out.push(b' ');
        out.extend_from_slice(headers);
    }
    out.extend_from_slice(CRLF);
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// `TOPIC <name> <created_ms> <expires_ms> <messages> <first_id> <last_id>`.
pub fn encode_topic(
    out: &mut Vec<u8>,
    name: &str,
    created_ms: u64,
    expires_ms: u64,
    messages: u64,
    first_id: u64,
    last_id: u64,
) {
    out.extend_from_slice(b"TOPIC ");
    out.extend_from_slice(name.as_bytes());
    for v in [created_ms, expires_ms, messages, first_id, last_id] {
        out.push(b' ');
        push_u64(out, v);
    }
    out.extend_from_slice(CRLF);
}

/// `GROUP <name> <committed_id> <active: 0|1> <standby_count> <lag>`.
pub fn encode_group(
    out: &mut Vec<u8>,
    name: &str,
    committed_id: u64,
    active: bool,
    standby_count: u64,
    lag: u64,
) {
    out.extend_from_slice(b"GROUP ");
    out.extend_from_slice(name.as_bytes());
    for v in [committed_id, u64::from(active), standby_count, lag] {
        out.push(b' ');
        push_u64(out, v);
    }
    out.extend_from_slice(CRLF);
}

/// Appends ` shared <members> <pending>` to the `GROUP` line
/// [`encode_group`] just wrote (a shared group with members).
pub fn encode_shared_tail(out: &mut Vec<u8>, members: u64, pending: u64) {
    if out.ends_with(CRLF) {
        out.truncate(out.len() - CRLF.len());
    }
    out.extend_from_slice(b" shared");
    for v in [members, pending] {
        out.push(b' ');
        push_u64(out, v);
    }
    out.extend_from_slice(CRLF);
}

/// A keyword and a count: `BATCH 3`, `TOPICS 2`, `STATS 9`, `GROUPS 1`.
pub fn encode_count(out: &mut Vec<u8>, keyword: &str, count: u64) {
    out.extend_from_slice(keyword.as_bytes());
    out.push(b' ');
    push_u64(out, count);
    out.extend_from_slice(CRLF);
}

/// `STAT <name> <value>` with a text value (e.g. `role master`).
pub fn encode_stat(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(CRLF);
}

/// `STAT <name> <value>` with a numeric value.
pub fn encode_stat_u64(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    push_u64(out, value);
    out.extend_from_slice(CRLF);
}

/// `SLAVE <addr> <acked_event_id> <lag_events> <lag_ms> <state>`: one line
/// of a `SLAVES` reply.
pub fn encode_slave(
    out: &mut Vec<u8>,
    addr: &str,
    acked_event_id: u64,
    lag_events: u64,
    lag_ms: u64,
    state: &str,
) {
    out.extend_from_slice(b"SLAVE ");
    out.extend_from_slice(addr.as_bytes());
    for v in [acked_event_id, lag_events, lag_ms] {
        out.push(b' ');
        push_u64(out, v);
    }
    out.push(b' ');
    out.extend_from_slice(state.as_bytes());
    out.extend_from_slice(CRLF);
}

/// `END <reason>`: the subscribed topic went away (`deleted`, `expired`).
pub fn encode_end(out: &mut Vec<u8>, reason: &str) {
    out.extend_from_slice(b"END ");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(CRLF);
}

/// Any simple line (`PONG`, `ALIVE`, `STANDBY`, `END deleted`, …) plus `\r\n`. The
/// caller passes server-made text without line ends.
/// `ROLE <role> <epoch> <history, 16 hex digits> <last_event_id>`.
pub fn encode_role(out: &mut Vec<u8>, role: &str, epoch: u64, history: u64, last_id: u64) {
    encode_line(
        out,
        &format!("ROLE {role} {epoch} {history:016x} {last_id}"),
    );
}

pub fn encode_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(CRLF);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrCode;

    #[test]
    fn numbers_are_written_as_their_decimal_digits() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            1_700_000_000_123,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, v);
            assert_eq!(out, format!("x{v}").into_bytes());
        }
    }

    #[test]
    fn encoders_produce_exact_bytes() {
        let mut out = Vec::new();
        encode_ok(&mut out, &[]);
        encode_ok(&mut out, &[1, 2]);
        encode_ok(&mut out, &[0, u64::MAX]);
        assert_eq!(out, b"OK\r\nOK 1 2\r\nOK 0 18446744073709551615\r\n");

        let mut out = Vec::new();
        encode_err(&mut out, &ProtoError::new(ErrCode::BadReq, "empty line"));
        encode_err(&mut out, &ProtoError::new(ErrCode::NoTopic, "no topic 't'"));
        encode_err(&mut out, &ProtoError::new(ErrCode::Internal, ""));
        encode_err(&mut out, &ProtoError::new(ErrCode::Busy, "a\r\nb\u{e9}"));
        assert_eq!(
            out,
            b"ERR BADREQ empty line\r\nERR NOTOPIC no topic 't'\r\nERR INTERNAL\r\nERR BUSY a??b??\r\n"
        );
        let mut out = Vec::new();
        encode_err(
            &mut out,
            &ProtoError::new(ErrCode::BadReq, "x".repeat(10_000)),
        );
        assert_eq!(out.len(), "ERR BADREQ ".len() + MAX_ERR_TEXT_BYTES + 2);

        let mut out = Vec::new();
        encode_msg(&mut out, 12, 1_700_000_000_000, b"", b"hi");
        encode_msg(&mut out, 13, 5, b"k=v a=b", b"");
        assert_eq!(
            out,
            b"MSG 12 1700000000000 2\r\nhi\r\nMSG 13 5 0 k=v a=b\r\n\r\n"
        );

        let mut out = Vec::new();
        encode_topic(&mut out, "orders", 1000, 0, 3, 4, 9);
        encode_group(&mut out, "workers", 42, true, 2, 7);
        encode_group(&mut out, "idle", 0, false, 0, 0);
        encode_count(&mut out, "BATCH", 3);
        encode_stat(&mut out, "role", "master");
        encode_stat_u64(&mut out, "topics", 7);
        encode_line(&mut out, "PONG");
        encode_line(&mut out, "END deleted");
        encode_end(&mut out, "expired");
        assert_eq!(
            out,
            b"TOPIC orders 1000 0 3 4 9\r\nGROUP workers 42 1 2 7\r\nGROUP idle 0 0 0 0\r\nBATCH 3\r\nSTAT role master\r\nSTAT topics 7\r\nPONG\r\nEND deleted\r\nEND expired\r\n"
        );

        let mut out = Vec::new();
        encode_count(&mut out, "SLAVES", 2);
        encode_slave(&mut out, "127.0.0.1:40112", 17, 0, 0, "streaming");
        encode_slave(&mut out, "[::1]:5", 3, 14, 1200, "syncing");
        assert_eq!(
            out,
            b"SLAVES 2\r\nSLAVE 127.0.0.1:40112 17 0 0 streaming\r\nSLAVE [::1]:5 3 14 1200 syncing\r\n"
        );
    }
}
