//! Reading the server's reply lines: `ERR` lines into errors, `OK`,
//! `TOPIC`, `GROUP`, `MSG` lines and counts into values, and the headers a
//! request carries. Pure; the client's own parser, sharing no code with the
//! server's (so it checks the reply format independently).

use std::fmt;
use std::io;

use super::{ClientError, GroupInfo, Result, TopicInfo, check};

/// An io::Error with what the client was doing prefixed; a read timeout
/// (`WouldBlock` on Unix) is reported as `TimedOut`.
pub(super) fn io_err(e: io::Error, what: impl fmt::Display) -> ClientError {
    let kind = match e.kind() {
        io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut,
        k => k,
    };
    let detail = if kind == io::ErrorKind::TimedOut {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    ClientError::Io(io::Error::new(kind, format!("{what}: {detail}")))
}

pub(super) fn protocol(what: &str, line: &str) -> ClientError {
    ClientError::Protocol(format!("{what}: {line:?}"))
}

/// Turns an `ERR <CODE> <msg>` line into a [`ClientError::Server`].
pub(super) fn parse_err(line: &str) -> Option<ClientError> {
    let rest = line.strip_prefix("ERR")?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = rest.trim_start_matches(' ');
    let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(ClientError::Server {
        code: code.to_string(),
        msg: msg.to_string(),
    })
}

/// Checks a reply line for `ERR`, then that its first token is `keyword`;
/// returns the remaining tokens.
pub(super) fn expect_reply<'a>(line: &'a str, keyword: &str) -> Result<Vec<&'a str>> {
    if let Some(e) = parse_err(line) {
        return Err(e);
    }
    let mut toks = line.split(' ');
    if toks.next() != Some(keyword) {
        return Err(protocol(&format!("expected {keyword}"), line));
    }
    Ok(toks.collect())
}

pub(super) fn parse_num(tok: Option<&&str>, what: &str, line: &str) -> Result<u64> {
    let tok = tok.ok_or_else(|| protocol(&format!("missing {what}"), line))?;
    if tok.is_empty() || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return Err(protocol(&format!("bad {what} {tok:?}"), line));
    }
    tok.parse()
        .map_err(|_| protocol(&format!("{what} {tok:?} out of range"), line))
}

/// `OK <n> …` → n (extra trailing fields are allowed by the protocol).
pub(super) fn parse_ok_id(line: &str) -> Result<u64> {
    let toks = expect_reply(line, "OK")?;
    parse_num(toks.first(), "event id", line)
}

/// `OK` with nothing after it that we need.
pub(super) fn parse_ok(line: &str) -> Result<()> {
    expect_reply(line, "OK").map(|_| ())
}

/// `TOPIC <name> <created_ms> <expires_ms> <messages> <first_id> <last_id>`.
pub(super) fn parse_topic_line(line: &str) -> Result<TopicInfo> {
    let t = expect_reply(line, "TOPIC")?;
    let name = t
        .first()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| protocol("missing topic name", line))?;
    Ok(TopicInfo {
        name: name.to_string(),
        created_ms: parse_num(t.get(1), "created_ms", line)?,
        expires_ms: parse_num(t.get(2), "expires_ms", line)?,
        messages: parse_num(t.get(3), "messages", line)?,
        first_id: parse_num(t.get(4), "first_id", line)?,
        last_id: parse_num(t.get(5), "last_id", line)?,
    })
}

/// `GROUP <name> <committed_id> <active: 0|1> <standby_count> <lag>`.
pub(super) fn parse_group_line(line: &str) -> Result<GroupInfo> {
    let t = expect_reply(line, "GROUP")?;
    let name = t
        .first()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| protocol("missing group name", line))?;
    let active = match t.get(2) {
        Some(&"0") => false,
        Some(&"1") => true,
        _ => return Err(protocol("bad active flag", line)),
    };
    Ok(GroupInfo {
        name: name.to_string(),
        committed_id: parse_num(t.get(1), "committed_id", line)?,
        active,
        standby_count: parse_num(t.get(3), "standby_count", line)?,
        lag: parse_num(t.get(4), "lag", line)?,
        shared: match t.get(5) {
            Some(&"shared") => Some((
                parse_num(t.get(6), "members", line)?,
                parse_num(t.get(7), "pending", line)?,
            )),
            _ => None,
        },
    })
}

/// Splits `key=value` at the first `=`.
pub(super) fn split_header(tok: &str) -> Option<(String, String)> {
    let (k, v) = tok.split_once('=')?;
    if k.is_empty() {
        return None;
    }
    Some((k.to_string(), v.to_string()))
}

/// The line of a `MSG` frame; the payload follows.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MsgLine {
    pub(super) event_id: u64,
    pub(super) timestamp_ms: u64,
    pub(super) len: usize,
    pub(super) headers: Vec<(String, String)>,
}

/// `MSG <event_id> <timestamp_ms> <n> [<key>=<value> …]`.
pub(super) fn parse_msg_line(line: &str) -> Result<MsgLine> {
    let t = expect_reply(line, "MSG")?;
    let event_id = parse_num(t.first(), "event id", line)?;
    let timestamp_ms = parse_num(t.get(1), "timestamp", line)?;
    let len = parse_num(t.get(2), "byte count", line)?;
    let len = usize::try_from(len).map_err(|_| protocol("byte count too large", line))?;
    let headers = t
        .get(3..)
        .unwrap_or_default()
        .iter()
        .map(|tok| split_header(tok).ok_or_else(|| protocol(&format!("bad header {tok:?}"), line)))
        .collect::<Result<Vec<_>>>()?;
    Ok(MsgLine {
        event_id,
        timestamp_ms,
        len,
        headers,
    })
}

/// A count line such as `TOPICS <n>`, `STATS <n>`, `BATCH <n>`.
pub(super) fn parse_count(line: &str, keyword: &str) -> Result<u64> {
    let t = expect_reply(line, keyword)?;
    parse_num(t.first(), "count", line)
}

/// Appends ` k=v k=v` for the headers, after checking them.
pub(super) fn push_headers(line: &mut String, headers: &[(&str, &str)]) -> Result<()> {
    check::headers(headers)?;
    for (k, v) in headers {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(v);
    }
    Ok(())
}
