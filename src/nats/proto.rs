//! The NATS client protocol's frames, pure: parse what the server sends
//! out of a byte buffer, encode what the client sends, and the
//! `NATS/1.0` header block both ways. No sockets: [`super::conn`] reads
//! into a buffer and calls [`parse_frame`] until it has a whole frame
//! ("need more bytes" is `Ok(None)`, a normal state), so a read that times
//! out in the middle of a frame loses nothing.
//!
//! Limits: a control line is at most [`MAX_LINE_BYTES`]; a message's
//! declared length is checked against the caller's limit before anything
//! is allocated for it, and the `\r\n` after the payload is required.

/// Longest control line accepted from a server. INFO is the long one: in
/// a cluster it lists `connect_urls`; 64 KiB is far above what any real
/// server sends and still bounds a garbage stream.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One message as it arrived in a `MSG` or `HMSG` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMsg {
    pub subject: String,
    pub sid: u64,
    pub reply: Option<String>,
    /// The header block (`NATS/1.0…\r\n\r\n`) of an HMSG.
    pub header: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The JSON text after `INFO `.
    Info(String),
    Msg(RawMsg),
    Ping,
    Pong,
    Ok,
    /// The text of `-ERR '...'`, quotes removed.
    Err(String),
}

/// The first whole frame in `buf` and how many bytes it took; `Ok(None)`
/// when more bytes are needed. `max_msg` bounds a message's declared total
/// length. `Err` means the stream is not NATS (or breaks a limit): the
/// connection's framing is lost.
pub fn parse_frame(buf: &[u8], max_msg: usize) -> Result<Option<(Frame, usize)>, String> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE_BYTES {
            return Err(format!(
                "a protocol line longer than {MAX_LINE_BYTES} bytes, starting {:?}",
                String::from_utf8_lossy(&buf[..80])
            ));
        }
        return Ok(None);
    };
    if nl > MAX_LINE_BYTES {
        return Err(format!(
            "a protocol line longer than {MAX_LINE_BYTES} bytes"
        ));
    }
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| {
        format!(
            "a protocol line that is not UTF-8: {:?}",
            lossy(&buf[..line_end])
        )
    })?;
    let after = nl + 1;
    let (verb, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    let simple = |f: Frame| Ok(Some((f, after)));
    match verb.to_ascii_uppercase().as_str() {
        "PING" if rest.is_empty() => simple(Frame::Ping),
        "PONG" if rest.is_empty() => simple(Frame::Pong),
        "+OK" if rest.is_empty() => simple(Frame::Ok),
        "-ERR" => {
            let text = rest.trim();
            let text = text
                .strip_prefix('\'')
                .and_then(|t| t.strip_suffix('\''))
                .unwrap_or(text);
            simple(Frame::Err(text.to_string()))
        }
        "INFO" => simple(Frame::Info(rest.trim().to_string())),
        "MSG" => msg(line, rest, false, &buf[after..], max_msg, after),
        "HMSG" => msg(line, rest, true, &buf[after..], max_msg, after),
        _ => Err(format!("unexpected protocol line {line:?}")),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn num(tok: &str, what: &str, line: &str) -> Result<usize, String> {
    if tok.is_empty() || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} {tok:?} in {line:?}"));
    }
    tok.parse()
        .map_err(|_| format!("{what} {tok:?} out of range in {line:?}"))
}

/// `MSG <subject> <sid> [reply] <len>` or
/// `HMSG <subject> <sid> [reply] <hdr_len> <total_len>`, then the bytes.
fn msg(
    line: &str,
    args: &str,
    with_headers: bool,
    body: &[u8],
    max_msg: usize,
    line_len: usize,
) -> Result<Option<(Frame, usize)>, String> {
    let toks: Vec<&str> = args.split_ascii_whitespace().collect();
    let n_lens = if with_headers { 2 } else { 1 };
    let reply = match toks.len().checked_sub(n_lens) {
        Some(2) => None,
        Some(3) => Some(toks[2].to_string()),
        _ => return Err(format!("wrong number of arguments in {line:?}")),
    };
    let lens = &toks[toks.len() - n_lens..];
    let total = num(lens[n_lens - 1], "length", line)?;
    let hdr_len = if with_headers {
        num(lens[0], "header length", line)?
    } else {
        0
    };
    if hdr_len > total {
        return Err(format!("header length above total length in {line:?}"));
    }
    if total > max_msg {
        return Err(format!(
            "a message of {total} bytes, above the limit of {max_msg}, in {line:?}"
        ));
    }
    let sid = num(toks[1], "sid", line)? as u64;
    // Checked against max_msg above, so this cannot overflow.
    if body.len() < total + 2 {
        return Ok(None);
    }
    if &body[total..total + 2] != b"\r\n" {
        return Err(format!("no \\r\\n after the {total} bytes of {line:?}"));
    }
    let header = with_headers.then(|| body[..hdr_len].to_vec());
    Ok(Some((
        Frame::Msg(RawMsg {
            subject: toks[0].to_string(),
            sid,
            reply,
            header,
            payload: body[hdr_len..total].to_vec(),
        }),
        line_len + total + 2,
    )))
}

/// A parsed header block: the status of its first line (`NATS/1.0 503`),
/// the description after the status, and the headers in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers {
    pub status: Option<u16>,
    pub description: String,
    pub headers: Vec<(String, String)>,
}

/// Parses `NATS/1.0[ status[ description]]\r\nKey: Value\r\n...\r\n`.
pub fn parse_headers(block: &[u8]) -> Result<Headers, String> {
    let text = std::str::from_utf8(block)
        .map_err(|_| format!("a header block that is not UTF-8: {:?}", lossy(block)))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let rest = first
        .strip_prefix("NATS/1.0")
        .ok_or_else(|| format!("a header block not starting with NATS/1.0: {first:?}"))?;
    let mut h = Headers::default();
    let rest = rest.trim();
    if !rest.is_empty() {
        let (code, desc) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad status {code:?} in {first:?}"));
        }
        h.status = code.parse().ok();
        h.description = desc.trim().to_string();
    }
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("a header line without ':': {line:?}"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("a header line without a name: {line:?}"));
        }
        h.headers.push((k.to_string(), v.trim().to_string()));
    }
    Ok(h)
}

/// The header block for `headers` (none: `None`). A name must be a
/// non-empty token without `:`, spaces or control characters; a value must
/// not hold `\r` or `\n` (they would end the line).
pub fn encode_headers(headers: &[(&str, &str)]) -> Result<Option<Vec<u8>>, String> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut out = b"NATS/1.0\r\n".to_vec();
    for (k, v) in headers {
        if k.is_empty() || k.bytes().any(|b| b == b':' || b <= b' ' || b == 0x7f) {
            return Err(format!("bad header name {k:?}"));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(format!("header {k:?}: value {v:?} holds a line break"));
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(out))
}

/// A subject or reply subject we send: non-empty, no whitespace or
/// control characters (they would split the protocol line).
pub fn check_subject(s: &str) -> Result<(), String> {
    if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("bad subject {s:?}"));
    }
    Ok(())
}

/// Appends `PUB`/`HPUB subject [reply] [hdr_len] total\r\n` and the bytes.
pub fn encode_pub(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    header: Option<&[u8]>,
    payload: &[u8],
) {
    let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
    match header {
        Some(h) => {
            let line = format!(
                "HPUB {subject}{reply} {} {}\r\n",
                h.len(),
                h.len() + payload.len()
            );
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(h);
        }
        None => {
            out.extend_from_slice(format!("PUB {subject}{reply} {}\r\n", payload.len()).as_bytes())
        }
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Frame {
        match parse_frame(buf, 1 << 20) {
            Ok(Some((f, n))) => {
                assert_eq!(n, buf.len(), "consumed all of {:?}", lossy(buf));
                f
            }
            other => panic!("{:?}: {other:?}", lossy(buf)),
        }
    }

    #[test]
    fn control_frames() {
        assert_eq!(one(b"PING\r\n"), Frame::Ping);
        assert_eq!(one(b"pong\r\n"), Frame::Pong);
        assert_eq!(one(b"+OK\r\n"), Frame::Ok);
        assert_eq!(
            one(b"-ERR 'Authorization Violation'\r\n"),
            Frame::Err("Authorization Violation".into())
        );
        assert_eq!(one(b"INFO {\"a\":1} \r\n"), Frame::Info("{\"a\":1}".into()));
    }

    #[test]
    fn msg_and_hmsg() {
        assert_eq!(
            one(b"MSG a.b 7 _INBOX.x.1 5\r\nhello\r\n"),
            Frame::Msg(RawMsg {
                subject: "a.b".into(),
                sid: 7,
                reply: Some("_INBOX.x.1".into()),
                header: None,
                payload: b"hello".to_vec(),
            })
        );
        let f = one(b"HMSG s 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        let Frame::Msg(m) = f else {
            panic!("not a msg")
        };
        assert_eq!(m.reply, None);
        assert_eq!(m.header.as_deref(), Some(&b"NATS/1.0\r\n\r\n"[..]));
        assert_eq!(m.payload, b"hi");
        // Two frames in one buffer: the first one, and where the next starts.
        let buf = b"PING\r\nMSG s 1 0\r\n\r\n";
        let (f, n) = parse_frame(buf, 100).expect("ok").expect("whole");
        assert_eq!((f, n), (Frame::Ping, 6));
        assert!(matches!(
            parse_frame(&buf[n..], 100),
            Ok(Some((Frame::Msg(_), 13)))
        ));
    }

    #[test]
    fn partial_frames_need_more_bytes() {
        let whole = b"HMSG s 1 _R 12 17\r\nNATS/1.0\r\n\r\nhello\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_frame(&whole[..cut], 100), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        let bad: &[&[u8]] = &[
            b"FOO\r\n",
            b"PING x\r\n",
            b"MSG s 1\r\n",
            b"MSG s 1 a b 2\r\n",
            b"MSG s x 2\r\nhi\r\n",
            b"MSG s 1 -2\r\nhi\r\n",
            b"MSG s 1 2\r\nhiXX",
            b"MSG s 1 99999999999999999999999\r\n",
            b"HMSG s 1 5 2\r\nhello\r\n",
            b"MSG s 1 101\r\n",
            b"\xff\xfe\r\n",
        ];
        for b in bad {
            assert!(parse_frame(b, 100).is_err(), "{:?}", lossy(b));
        }
        let long = vec![b'A'; MAX_LINE_BYTES + 2];
        assert!(parse_frame(&long, 100).is_err());
    }

    #[test]
    fn header_blocks() {
        let h = parse_headers(b"NATS/1.0 503\r\n\r\n").expect("ok");
        assert_eq!((h.status, h.description.as_str()), (Some(503), ""));
        let h = parse_headers(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n\r\n")
            .expect("ok");
        assert_eq!(h.status, Some(408));
        assert_eq!(h.description, "Request Timeout");
        assert_eq!(
            h.headers,
            vec![("Nats-Pending-Messages".into(), "1".into())]
        );
        let enc = encode_headers(&[("Nats-Msg-Id", "a:1"), ("k", "v with: colon")])
            .expect("ok")
            .expect("some");
        let h = parse_headers(&enc).expect("round trip");
        assert_eq!(h.status, None);
        assert_eq!(
            h.headers,
            vec![
                ("Nats-Msg-Id".into(), "a:1".into()),
                ("k".into(), "v with: colon".into())
            ]
        );
        assert_eq!(encode_headers(&[]), Ok(None));
        for bad in [
            &b"HTTP/1.1\r\n\r\n"[..],
            b"NATS/1.0 5x3\r\n",
            b"NATS/1.0\r\nnocolon\r\n",
            b"NATS/1.0\r\n: v\r\n",
            b"\xff",
        ] {
            assert!(parse_headers(bad).is_err(), "{:?}", lossy(bad));
        }
        assert!(encode_headers(&[("a b", "v")]).is_err());
        assert!(encode_headers(&[("a:b", "v")]).is_err());
        assert!(encode_headers(&[("a", "v\r\nX: y")]).is_err());
    }

    #[test]
    fn pub_encoding() {
        let mut out = Vec::new();
        encode_pub(&mut out, "s", None, None, b"hi");
        encode_pub(
            &mut out,
            "s",
            Some("_R.1"),
            Some(b"NATS/1.0\r\n\r\n"),
            b"hi",
        );
        assert_eq!(
            out,
            b"PUB s 2\r\nhi\r\nHPUB s _R.1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n".to_vec()
        );
        assert!(check_subject("a.b").is_ok());
        assert!(check_subject("a b").is_err() && check_subject("").is_err());
    }
}
