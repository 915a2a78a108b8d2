//! Request parsing: the unread bytes of a connection's input buffer into one
//! [`Request`] and how many bytes it used (the contract is in the module docs of
//! [`crate::protocol`]).
//!
//! Pure: runs on whichever thread calls it (the connection threads), touches no
//! socket, channel, lock or clock, and no input can make it panic.
//!
//! This file owns framing and arity (how many arguments each command takes); what
//! one argument must look like is in [`super::rules`], shared with the client.

use super::options::{parse_repl, parse_sub, split_eq};
use super::rules::{
    DEDUP_HEADER, bad, dedup_key_arg, delay_ms_arg, header_arg, header_count, is_visible,
    life_ms_arg, mpub_count_arg, name_arg, parse_u64, quote, topic_arg, word_arg,
};
use super::{ErrCode, Limits, MAX_LINE_BYTES, Message, Parsed, ProtoError, Request};

/// Why parsing stopped before a request (valid or not) was complete.
pub(super) enum Stop {
    NeedMore,
    Fatal(ProtoError),
}

#[derive(Clone, Copy)]
pub(super) enum PayloadCmd {
    Pub,
    MPub,
    DPub,
}

#[derive(Clone, Copy)]
pub(super) enum SimpleCmd {
    Ping,
    Auth,
    Quit,
    Create,
    Delete,
    Info,
    List,
    Stats,
    Sub,
    Ack,
    Stop,
    Groups,
    GroupDel,
    Repl,
    Promote,
    Slaves,
    Role,
}

#[derive(Clone, Copy)]
pub(super) enum Kind {
    /// The line declares byte counts; payload bytes follow it.
    Payload(PayloadCmd),
    /// The request is exactly one line.
    Simple(SimpleCmd),
}

pub(super) struct CommandSpec {
    name: &'static str,
    pub(super) kind: Kind,
    usage: &'static str,
    /// Most arguments after the verb; [`VARIADIC`] for PUB and DPUB, whose headers
    /// are counted by their own rule.
    max_args: usize,
}

const VARIADIC: usize = usize::MAX;

const fn spec(name: &'static str, kind: Kind, usage: &'static str, max_args: usize) -> CommandSpec {
    CommandSpec {
        name,
        kind,
        usage,
        max_args,
    }
}

const COMMANDS: [CommandSpec; 20] = [
    spec("PING", Kind::Simple(SimpleCmd::Ping), "PING", 0),
    spec("AUTH", Kind::Simple(SimpleCmd::Auth), "AUTH <token>", 1),
    spec("QUIT", Kind::Simple(SimpleCmd::Quit), "QUIT", 0),
    spec(
        "CREATE",
        Kind::Simple(SimpleCmd::Create),
        "CREATE <topic> [<life_ms>]",
        2,
    ),
    spec(
        "DELETE",
        Kind::Simple(SimpleCmd::Delete),
        "DELETE <topic>",
        1,
    ),
    spec(
        "PUB",
        Kind::Payload(PayloadCmd::Pub),
        "PUB <topic> <n> [<key>=<value> ...]",
        VARIADIC,
    ),
    spec(
        "MPUB",
        Kind::Payload(PayloadCmd::MPub),
        "MPUB <topic> <count>",
        2,
    ),
    spec(
        "DPUB",
        Kind::Payload(PayloadCmd::DPub),
        "DPUB <topic> <delay_ms> <n> [<key>=<value> ...]",
        VARIADIC,
    ),
    spec("INFO", Kind::Simple(SimpleCmd::Info), "INFO <topic>", 1),
    spec("LIST", Kind::Simple(SimpleCmd::List), "LIST", 0),
    spec("STATS", Kind::Simple(SimpleCmd::Stats), "STATS", 0),
    spec(
        "SUB",
        Kind::Simple(SimpleCmd::Sub),
        "SUB <topic> <after> [batch=<n>] [ack=<ms>] [group=<name>] [maxDeliver=<n>] [dlq=<topic>]",
        7,
    ),
    spec("ACK", Kind::Simple(SimpleCmd::Ack), "ACK", 0),
    spec("STOP", Kind::Simple(SimpleCmd::Stop), "STOP", 0),
    spec(
        "GROUPS",
        Kind::Simple(SimpleCmd::Groups),
        "GROUPS <topic>",
        1,
    ),
    spec(
        "GROUPDEL",
        Kind::Simple(SimpleCmd::GroupDel),
        "GROUPDEL <topic> <group>",
        2,
    ),
    spec(
        "REPL",
        Kind::Simple(SimpleCmd::Repl),
        "REPL <after_event_id> [history=<hex>] [epoch=<n>] [empty=0|1] [node=<hex>] [format=<n>] \
         [early=0|1]",
        7,
    ),
    spec("PROMOTE", Kind::Simple(SimpleCmd::Promote), "PROMOTE", 0),
    spec("SLAVES", Kind::Simple(SimpleCmd::Slaves), "SLAVES", 0),
    spec("ROLE", Kind::Simple(SimpleCmd::Role), "ROLE", 0),
];

/// Exact, case-insensitive command lookup (no prefix matching).
pub(super) fn lookup(verb: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|spec| verb.eq_ignore_ascii_case(spec.name.as_bytes()))
}

fn is_space(b: &u8) -> bool {
    *b == b' '
}

type Tokens<'a> = std::slice::Split<'a, u8, fn(&u8) -> bool>;

pub(super) fn tokens(line: &[u8]) -> Tokens<'_> {
    line.split(is_space as fn(&u8) -> bool)
}

/// Parses one request from the start of `buf` (the unread part of a connection's input).
///
/// Never panics and never consumes on [`Parsed::NeedMore`]; see the module docs for
/// what each answer asks of the caller.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Parsed {
    match parse_inner(buf, limits) {
        Ok(parsed) => parsed,
        Err(Stop::NeedMore) => Parsed::NeedMore,
        Err(Stop::Fatal(err)) => Parsed::Fatal { err },
    }
}

fn parse_inner(buf: &[u8], limits: &Limits) -> Result<Parsed, Stop> {
    let (line, line_len) = next_line(buf)?;
    let verb = tokens(line).next().unwrap_or_default();
    let Some(spec) = lookup(verb) else {
        // Report a malformed line as such before calling its first token a command.
        let err = match check_line(line) {
            Err(err) => err,
            Ok(()) => ProtoError::new(
                ErrCode::Unknown,
                format!("unknown command '{}'", quote(verb)),
            ),
        };
        return Ok(Parsed::Error {
            err,
            consumed: line_len,
        });
    };
    match spec.kind {
        Kind::Payload(PayloadCmd::Pub) => parse_pub(buf, line, line_len, limits, spec, false),
        Kind::Payload(PayloadCmd::DPub) => parse_pub(buf, line, line_len, limits, spec, true),
        Kind::Payload(PayloadCmd::MPub) => parse_mpub(buf, line, line_len, limits, spec),
        Kind::Simple(cmd) => Ok(
            match check_line(line).and_then(|()| parse_simple(line, spec, cmd, limits)) {
                Ok(req) => Parsed::Request {
                    req,
                    consumed: line_len,
                },
                Err(err) => Parsed::Error {
                    err,
                    consumed: line_len,
                },
            },
        ),
    }
}

/// Finds the line at the start of `buf`: returns it without its `\n` / `\r\n`, and its
/// length including the line end.
pub(super) fn next_line(buf: &[u8]) -> Result<(&[u8], usize), Stop> {
    let window = buf.get(..MAX_LINE_BYTES).unwrap_or(buf);
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let raw = window.get(..end).unwrap_or_default();
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            Ok((line, end + 1))
        }
        None if buf.len() >= MAX_LINE_BYTES => Err(Stop::Fatal(bad(format!(
            "line too long: at most {MAX_LINE_BYTES} bytes including the line end (a PUB's, \
             DPUB's or MPUB message's headers are on its line and count towards it)"
        )))),
        None => Err(Stop::NeedMore),
    }
}

/// Checks a line's shape: non-empty, visible ASCII tokens separated by single spaces.
fn check_line(line: &[u8]) -> Result<(), ProtoError> {
    if line.is_empty() {
        return Err(bad("empty line"));
    }
    if let Some(at) = line.iter().position(|&b| b != b' ' && !is_visible(b)) {
        let byte = line.get(at).copied().unwrap_or_default();
        return Err(bad(format!(
            "byte 0x{byte:02x} at offset {at} is not visible ASCII"
        )));
    }
    if line.first() == Some(&b' ') || line.last() == Some(&b' ') {
        return Err(bad("leading or trailing space"));
    }
    if line.windows(2).any(|w| w == b"  ") {
        return Err(bad("tokens must be separated by single spaces"));
    }
    Ok(())
}

/// A PUB or DPUB line's tokens up to its byte count, the byte count, the header part.
pub(super) type PubLine<'a> = ([&'a [u8]; 4], &'a [u8], &'a [u8]);

/// Splits a PUB or DPUB line; `None` when the byte count is missing.
pub(super) fn split_pub(line: &[u8], delayed: bool) -> Option<PubLine<'_>> {
    let n_at = if delayed { 3 } else { 2 };
    let mut parts = line.splitn(n_at + 2, is_space);
    let mut fixed: [&[u8]; 4] = [&[]; 4];
    for slot in fixed.iter_mut().take(n_at + 1) {
        *slot = parts.next()?;
    }
    let header_part = parts.next();
    let n_tok = fixed.get(n_at).copied().unwrap_or_default();
    if n_tok.is_empty() && header_part.is_none() {
        // "PUB t " — a trailing space, no byte count: nothing follows.
        return None;
    }
    Some((fixed, n_tok, header_part.unwrap_or_default()))
}

/// PUB and DPUB: the byte count fixes the framing; everything else is checked only
/// once the payload and its terminator are there, so a bad request still consumes them.
fn parse_pub(
    buf: &[u8],
    line: &[u8],
    line_len: usize,
    limits: &Limits,
    spec: &CommandSpec,
    delayed: bool,
) -> Result<Parsed, Stop> {
    let Some((fixed, n_tok, headers)) = split_pub(line, delayed) else {
        return Ok(usage_error(spec, line_len));
    };
    let n = payload_len(n_tok, limits)?;
    let (payload, consumed) = frame_payload(buf, line_len, n)?;
    Ok(match build_pub(line, &fixed, headers, payload, delayed) {
        Ok(req) => Parsed::Request { req, consumed },
        Err(err) => Parsed::Error { err, consumed },
    })
}

pub(super) fn build_pub(
    line: &[u8],
    fixed: &[&[u8]; 4],
    headers: &[u8],
    payload: &[u8],
    delayed: bool,
) -> Result<Request, ProtoError> {
    check_line(line)?;
    let [_, topic, delay, _] = *fixed;
    let topic = topic_arg(topic)?;
    let msg = message(headers, payload)?;
    if !delayed {
        return Ok(Request::Pub { topic, msg });
    }
    let delay_ms = delay_ms_arg(delay)?;
    Ok(Request::DPub {
        topic,
        delay_ms,
        msg,
    })
}

/// An MPUB line's count and its topic, or what is wrong with the line.
pub(super) type MPubLine = (usize, Result<String, ProtoError>);

/// MPUB's line: `None` without a count (nothing follows), else the count, which fixes
/// the framing (unusable: fatal), and the topic or what is wrong with the line.
pub(super) fn mpub_line(
    line: &[u8],
    limits: &Limits,
    spec: &CommandSpec,
) -> Result<Option<MPubLine>, Stop> {
    let mut parts = line.splitn(4, is_space);
    let _verb = parts.next();
    let topic = parts.next().unwrap_or_default();
    let count_tok = parts.next();
    let extra = parts.next();
    let count_tok = match count_tok {
        Some(tok) if !tok.is_empty() || extra.is_some() => tok,
        _ => return Ok(None),
    };
    let count = mpub_count_arg(count_tok, limits.max_batch).map_err(Stop::Fatal)?;
    let checked = check_line(line)
        .and_then(|()| topic_arg(topic))
        .and_then(|topic| match extra {
            Some(_) => Err(too_many(spec)),
            None => Ok(topic),
        });
    Ok(Some((count, checked)))
}

/// One MPUB message line at the start of `buf`.
pub(super) struct MsgHead<'a> {
    /// Bytes of the line, its end included.
    pub line_len: usize,
    pub headers: &'a [u8],
    /// The payload length it declares.
    pub n: usize,
    /// What is wrong with the line, naming message `index`.
    pub err: Option<ProtoError>,
}

/// Reads message `index`'s line and adds its byte count to `total`, the batch's
/// declared payload bytes so far: over a limit (one payload, or the batch) is fatal.
pub(super) fn msg_head<'a>(
    buf: &'a [u8],
    index: usize,
    total: &mut u64,
    limits: &Limits,
) -> Result<MsgHead<'a>, Stop> {
    let (msg_line, line_len) = next_line(buf)?;
    let mut msg_parts = msg_line.splitn(2, is_space);
    let n_tok = msg_parts.next().unwrap_or_default();
    let headers = msg_parts.next().unwrap_or_default();
    let n = payload_len(n_tok, limits)?;
    *total = total.saturating_add(n as u64);
    if *total > limits.max_batch_bytes {
        return Err(Stop::Fatal(ProtoError::new(
            ErrCode::TooBig,
            format!(
                "MPUB payloads total more than the maximum of {} bytes",
                limits.max_batch_bytes
            ),
        )));
    }
    let err = check_line(msg_line)
        .and_then(|()| check_headers(headers))
        .err()
        .map(|err| bad(format!("message {index}: {}", err.msg)));
    Ok(MsgHead {
        line_len,
        headers,
        n,
        err,
    })
}

/// MPUB: the count and each message's byte count fix the framing; a bad topic or header
/// anywhere consumes all `count` messages and gives one error.
fn parse_mpub(
    buf: &[u8],
    line: &[u8],
    line_len: usize,
    limits: &Limits,
    spec: &CommandSpec,
) -> Result<Parsed, Stop> {
    let Some((count, checked)) = mpub_line(line, limits, spec)? else {
        return Ok(usage_error(spec, line_len));
    };
    let mut pos = line_len;
    let mut total = 0;
    let mut frames: Vec<(&[u8], &[u8])> = Vec::new();
    let mut first_err: Option<ProtoError> = None;
    for index in 1..=count {
        let head = msg_head(
            buf.get(pos..).unwrap_or_default(),
            index,
            &mut total,
            limits,
        )?;
        let (payload, end) = frame_payload(buf, pos + head.line_len, head.n)?;
        if first_err.is_none() {
            first_err = head.err;
        }
        frames.push((head.headers, payload));
        pos = end;
    }
    let consumed = pos;
    let checked = checked.and_then(|topic| first_err.map_or(Ok(topic), Err));
    Ok(match checked {
        Ok(topic) => {
            let msgs = frames
                .into_iter()
                .map(|(headers, payload)| Message {
                    headers: headers.to_vec(),
                    payload: payload.to_vec(),
                })
                .collect();
            Parsed::Request {
                req: Request::MPub { topic, msgs },
                consumed,
            }
        }
        Err(err) => Parsed::Error { err, consumed },
    })
}

/// A declared payload length: unparsable → fatal BADREQ, over the limit → fatal TOOBIG.
pub(super) fn payload_len(tok: &[u8], limits: &Limits) -> Result<usize, Stop> {
    let n = parse_u64(tok)
        .ok_or_else(|| Stop::Fatal(bad(format!("unparsable byte count '{}'", quote(tok)))))?;
    match usize::try_from(n) {
        Ok(n) if n <= limits.max_payload => Ok(n),
        _ => Err(Stop::Fatal(ProtoError::new(
            ErrCode::TooBig,
            format!(
                "payload of {n} bytes exceeds the maximum of {} bytes",
                limits.max_payload
            ),
        ))),
    }
}

/// The length of the payload terminator at the start of `buf`.
pub(super) fn terminator(buf: &[u8]) -> Result<usize, Stop> {
    frame_payload(buf, 0, 0).map(|(_, end)| end)
}

/// The `n` payload bytes at `start` and the offset just past their `\r\n`.
/// Exactly CRLF: unlike a line, a payload may not end in a bare `\n`, so a
/// length off by one is lost framing, never a payload silently cut or
/// grown by a `\r`. Checks lengths only; copies nothing.
fn frame_payload(buf: &[u8], start: usize, n: usize) -> Result<(&[u8], usize), Stop> {
    let not_crlf = || {
        Stop::Fatal(bad(
            "payload not followed by CRLF (exactly <n> bytes, then \\r\\n)",
        ))
    };
    let Some(end) = start.checked_add(n) else {
        return Err(Stop::Fatal(ProtoError::new(
            ErrCode::TooBig,
            "payload length overflows",
        )));
    };
    let Some(payload) = buf.get(start..end) else {
        return Err(Stop::NeedMore);
    };
    match buf.get(end) {
        None => Err(Stop::NeedMore),
        Some(b'\r') => match buf.get(end + 1) {
            None => Err(Stop::NeedMore),
            Some(b'\n') => Ok((payload, end + 2)),
            Some(_) => Err(not_crlf()),
        },
        Some(_) => Err(not_crlf()),
    }
}

fn message(headers: &[u8], payload: &[u8]) -> Result<Message, ProtoError> {
    check_headers(headers)?;
    Ok(Message {
        headers: headers.to_vec(),
        payload: payload.to_vec(),
    })
}

/// Checks the raw header part of a line (the tokens after `<n>`, possibly none).
fn check_headers(raw: &[u8]) -> Result<(), ProtoError> {
    if raw.is_empty() {
        return Ok(());
    }
    let mut keyed = false;
    for (index, tok) in tokens(raw).enumerate() {
        header_count(index + 1)?;
        let Some((key, value)) = split_eq(tok) else {
            return Err(bad(format!("header '{}' is not key=value", quote(tok))));
        };
        header_arg(key, value)?;
        if key == DEDUP_HEADER {
            dedup_key_arg(value, keyed)?;
            keyed = true;
        }
    }
    Ok(())
}

/// The one-line commands. `line` has passed [`check_line`].
fn parse_simple(
    line: &[u8],
    spec: &'static CommandSpec,
    cmd: SimpleCmd,
    limits: &Limits,
) -> Result<Request, ProtoError> {
    let mut toks = tokens(line);
    let _verb = toks.next();
    // Arity before content: `CREATE a b c` is too many arguments, not a bad life_ms.
    if toks.clone().count() > spec.max_args {
        return Err(too_many(spec));
    }
    let mut args = Args { spec, toks };
    let req = match cmd {
        SimpleCmd::Ping => Request::Ping,
        SimpleCmd::Auth => Request::Auth {
            token: word_arg(args.required()?, "token")?,
        },
        SimpleCmd::Quit => Request::Quit,
        SimpleCmd::Create => {
            let topic = topic_arg(args.required()?)?;
            let life_ms = match args.optional() {
                None => 0,
                Some(tok) => life_ms_arg(tok)?,
            };
            Request::Create { topic, life_ms }
        }
        SimpleCmd::Delete => Request::Delete {
            topic: topic_arg(args.required()?)?,
        },
        SimpleCmd::Info => Request::Info {
            topic: topic_arg(args.required()?)?,
        },
        SimpleCmd::List => Request::List,
        SimpleCmd::Stats => Request::Stats,
        SimpleCmd::Sub => {
            let topic = args.required()?;
            let after = args.required()?;
            Request::Sub(parse_sub(topic, after, &mut args.toks, limits)?)
        }
        SimpleCmd::Ack => Request::Ack,
        SimpleCmd::Stop => Request::Stop,
        SimpleCmd::Groups => Request::Groups {
            topic: topic_arg(args.required()?)?,
        },
        SimpleCmd::Repl => {
            let after = args.required()?;
            Request::Repl(parse_repl(after, &mut args.toks)?)
        }
        SimpleCmd::GroupDel => Request::GroupDel {
            topic: topic_arg(args.required()?)?,
            group: name_arg(args.required()?, "group")?,
        },
        SimpleCmd::Promote => Request::Promote,
        SimpleCmd::Slaves => Request::Slaves,
        SimpleCmd::Role => Request::Role,
    };
    args.finish()?;
    Ok(req)
}

/// The arguments after the verb, with arity errors that name the command.
struct Args<'a> {
    spec: &'static CommandSpec,
    toks: Tokens<'a>,
}

impl<'a> Args<'a> {
    fn required(&mut self) -> Result<&'a [u8], ProtoError> {
        self.toks.next().ok_or_else(|| usage(self.spec))
    }

    fn optional(&mut self) -> Option<&'a [u8]> {
        self.toks.next()
    }

    /// Rejects extra arguments (counted up front already; kept so no command can
    /// silently ignore one).
    fn finish(mut self) -> Result<(), ProtoError> {
        match self.toks.next() {
            None => Ok(()),
            Some(_) => Err(too_many(self.spec)),
        }
    }
}

fn usage(spec: &CommandSpec) -> ProtoError {
    bad(format!(
        "wrong number of arguments for {}: usage: {}",
        spec.name, spec.usage
    ))
}

fn too_many(spec: &CommandSpec) -> ProtoError {
    let most = match spec.max_args {
        0 => "none".to_string(),
        n => format!("at most {n}"),
    };
    bad(format!(
        "too many arguments for {} ({most}): usage: {}",
        spec.name, spec.usage
    ))
}

fn usage_error(spec: &CommandSpec, consumed: usize) -> Parsed {
    Parsed::Error {
        err: usage(spec),
        consumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The round-trip test checks a payload survives parse and encode byte for byte.
    use crate::protocol::encode_msg;
    use crate::protocol::rules::valid_name;
    use crate::protocol::{
        MAX_HEADER_KEY_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS, MAX_NAME_BYTES, ReplArgs,
        SubArgs, SubFrom,
    };

    const LIM: Limits = Limits {
        max_payload: 1 << 20,
        max_batch: 100,
        max_batch_bytes: 1 << 30,
    };

    use crate::protocol::test_rng::Rng;

    fn show(input: &[u8]) -> String {
        String::from_utf8_lossy(input).into_owned()
    }

    /// The input must be exactly one valid request.
    fn req(input: &[u8]) -> Request {
        req_with(input, &LIM)
    }

    fn req_with(input: &[u8], limits: &Limits) -> Request {
        match parse_request(input, limits) {
            Parsed::Request { req, consumed } => {
                assert_eq!(consumed, input.len(), "consumed for {:?}", show(input));
                req
            }
            other => panic!("{:?}: expected a request, got {other:?}", show(input)),
        }
    }

    /// The input must give a non-fatal error; returns its code and consumed.
    fn error(input: &[u8]) -> (ErrCode, usize) {
        error_with(input, &LIM)
    }

    fn error_with(input: &[u8], limits: &Limits) -> (ErrCode, usize) {
        match parse_request(input, limits) {
            Parsed::Error { err, consumed } => {
                assert!(!err.msg.is_empty());
                (err.code, consumed)
            }
            other => panic!("{:?}: expected Error, got {other:?}", show(input)),
        }
    }

    /// The input must be exactly one bad request with intact framing, code BADREQ.
    fn badreq(input: &[u8]) {
        assert_eq!(
            error(input),
            (ErrCode::BadReq, input.len()),
            "{:?}",
            show(input)
        );
    }

    fn fatal(input: &[u8]) -> ErrCode {
        fatal_with(input, &LIM)
    }

    fn fatal_with(input: &[u8], limits: &Limits) -> ErrCode {
        match parse_request(input, limits) {
            Parsed::Fatal { err } => err.code,
            other => panic!("{:?}: expected Fatal, got {other:?}", show(input)),
        }
    }

    fn msg(headers: &[u8], payload: &[u8]) -> Message {
        Message {
            headers: headers.to_vec(),
            payload: payload.to_vec(),
        }
    }

    fn sub(topic: &str, from: SubFrom) -> SubArgs {
        SubArgs {
            topic: topic.to_string(),
            from,
            batch: None,
            ack_ms: None,
            group: None,
            max_deliver: None,
            dlq: None,
            mode: None,
        }
    }

    /// Feeds `input` to the parser in chunks of the sizes `chunk` picks, the way a
    /// connection does, and returns every result that is not NeedMore, ending with the
    /// Fatal (if any) or with NeedMore once the input is exhausted.
    fn drive(input: &[u8], limits: &Limits, mut chunk: impl FnMut() -> usize) -> Vec<Parsed> {
        let mut buf = Vec::new();
        let mut start = 0;
        let mut fed = 0;
        let mut results = Vec::new();
        loop {
            let parsed = parse_request(&buf[start..], limits);
            let consumed = match &parsed {
                Parsed::NeedMore => None,
                Parsed::Fatal { .. } => {
                    results.push(parsed);
                    return results;
                }
                Parsed::Request { consumed, .. } | Parsed::Error { consumed, .. } => {
                    Some(*consumed)
                }
            };
            match consumed {
                Some(consumed) => {
                    assert!(consumed > 0 && consumed <= buf.len() - start);
                    start += consumed;
                    results.push(parsed);
                }
                None if fed == input.len() => {
                    results.push(Parsed::NeedMore);
                    return results;
                }
                None => {
                    let n = chunk().clamp(1, input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    fn whole(input: &[u8], limits: &Limits) -> Vec<Parsed> {
        drive(input, limits, || usize::MAX)
    }

    fn assert_chunking_invariant(input: &[u8], limits: &Limits, seed: u64) {
        let expected = whole(input, limits);
        assert_eq!(drive(input, limits, || 1), expected, "byte at a time");
        let mut rng = Rng(seed);
        for max in [2, 7, 64, 5000] {
            let got = drive(input, limits, || 1 + rng.below(max));
            assert_eq!(got, expected, "chunks up to {max}, input {:?}", show(input));
        }
    }

    // ----- line framing -------------------------------------------------------------

    #[test]
    fn every_request_kind_parses() {
        assert_eq!(req(b"PING\r\n"), Request::Ping);
        assert_eq!(req(b"ping\r\n"), Request::Ping);
        assert_eq!(req(b"PiNg\n"), Request::Ping);
        assert_eq!(
            req(b"AUTH s3cr=t!\r\n"),
            Request::Auth {
                token: "s3cr=t!".into()
            }
        );
        assert_eq!(req(b"QUIT\r\n"), Request::Quit);
        assert_eq!(
            req(b"CREATE orders\r\n"),
            Request::Create {
                topic: "orders".into(),
                life_ms: 0
            }
        );
        assert_eq!(
            req(b"create a.b_c-D9 60000\r\n"),
            Request::Create {
                topic: "a.b_c-D9".into(),
                life_ms: 60000
            }
        );
        assert_eq!(req(b"DELETE t\r\n"), Request::Delete { topic: "t".into() });
        assert_eq!(
            req(b"PUB t 5\r\nhello\r\n"),
            Request::Pub {
                topic: "t".into(),
                msg: msg(b"", b"hello")
            }
        );
        assert_eq!(
            req(b"PUB t 0 a=1 b=\r\n\r\n"),
            Request::Pub {
                topic: "t".into(),
                msg: msg(b"a=1 b=", b"")
            }
        );
        assert_eq!(
            req(b"MPUB t 2\r\n1\r\na\r\n2 k=v\r\nbc\r\n"),
            Request::MPub {
                topic: "t".into(),
                msgs: vec![msg(b"", b"a"), msg(b"k=v", b"bc")]
            }
        );
        assert_eq!(
            req(b"DPUB t 1500 3 x=y\r\nabc\r\n"),
            Request::DPub {
                topic: "t".into(),
                delay_ms: 1500,
                msg: msg(b"x=y", b"abc")
            }
        );
        assert_eq!(req(b"INFO t\r\n"), Request::Info { topic: "t".into() });
        assert_eq!(req(b"LIST\r\n"), Request::List);
        assert_eq!(req(b"STATS\r\n"), Request::Stats);
        assert_eq!(
            req(b"SUB t 0\r\n"),
            Request::Sub(sub("t", SubFrom::After(0)))
        );
        assert_eq!(
            req(b"SUB t 42 batch=10 ack=500 group=g1\r\n"),
            Request::Sub(SubArgs {
                batch: Some(10),
                ack_ms: Some(500),
                group: Some("g1".into()),
                ..sub("t", SubFrom::After(42))
            })
        );
        assert_eq!(
            req(b"SUB t $ ack=1\r\n"),
            Request::Sub(SubArgs {
                ack_ms: Some(1),
                ..sub("t", SubFrom::Latest)
            })
        );
        assert_eq!(
            req(b"SUB t - group=g batch=100\r\n"),
            Request::Sub(SubArgs {
                batch: Some(100),
                group: Some("g".into()),
                ..sub("t", SubFrom::Committed)
            })
        );
        assert_eq!(req(b"ACK\r\n"), Request::Ack);
        assert_eq!(req(b"STOP\r\n"), Request::Stop);
        assert_eq!(req(b"GROUPS t\r\n"), Request::Groups { topic: "t".into() });
        assert_eq!(
            req(b"groupdel t g-1\r\n"),
            Request::GroupDel {
                topic: "t".into(),
                group: "g-1".into()
            }
        );
        badreq(b"GROUPDEL t\r\n");
        badreq(b"GROUPDEL t g x\r\n");
        badreq(b"GROUPDEL t bad/g\r\n");
        badreq(b"GROUPDEL bad/t g\r\n");
        assert_eq!(
            req(b"SUB t - group=g maxDeliver=3 dlq=dead\r\n"),
            Request::Sub(SubArgs {
                group: Some("g".into()),
                max_deliver: Some(3),
                dlq: Some("dead".into()),
                ..sub("t", SubFrom::Committed)
            })
        );
        assert_eq!(
            req(b"REPL 18446744073709551615\r\n"),
            Request::Repl(ReplArgs {
                after: u64::MAX,
                ..ReplArgs::default()
            })
        );
        assert_eq!(
            req(b"REPL 007\r\n"),
            Request::Repl(ReplArgs {
                after: 7,
                ..ReplArgs::default()
            })
        );
        assert_eq!(
            req(b"REPL 5 history=00ff epoch=2 empty=1\r\n"),
            Request::Repl(ReplArgs {
                after: 5,
                history: 0xff,
                epoch: 2,
                empty: true,
                ..ReplArgs::default()
            })
        );
        assert_eq!(req(b"PROMOTE\r\n"), Request::Promote);
        assert_eq!(req(b"role\r\n"), Request::Role);
        assert_eq!(req(b"SLAVES\r\n"), Request::Slaves);
        assert_eq!(req(b"slaves\n"), Request::Slaves);
    }

    #[test]
    fn request_kinds() {
        assert_eq!(req(b"PING\r\n"), Request::Ping);
        assert!(matches!(
            req(b"MPUB t 1\r\n0\r\n\r\n"),
            Request::MPub { .. }
        ));
        assert!(matches!(req(b"sub t $\r\n"), Request::Sub(_)));
    }

    #[test]
    fn payloads_round_trip_byte_exact() {
        let payload: &[u8] = b"\r\n\0a\r\nPING\r\n\0\xff\n\r";
        let mut input = format!("PUB t {}\r\n", payload.len()).into_bytes();
        input.extend_from_slice(payload);
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            req(&input),
            Request::Pub {
                topic: "t".into(),
                msg: msg(b"", payload)
            }
        );

        let mut input = format!("DPUB t 1 {} h=\0\r\n", payload.len()).into_bytes();
        // A NUL in a header is a bad header, but the framing holds.
        input.extend_from_slice(payload);
        input.extend_from_slice(b"\r\n");
        assert_eq!(error(&input), (ErrCode::BadReq, input.len()));

        let mut input = format!("DPUB t 1 {}\n", payload.len()).into_bytes();
        input.extend_from_slice(payload);
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            req(&input),
            Request::DPub {
                topic: "t".into(),
                delay_ms: 1,
                msg: msg(b"", payload)
            }
        );

        let mut input = b"MPUB t 2\r\n".to_vec();
        for headers in ["", " a=b"] {
            input.extend_from_slice(format!("{}{headers}\r\n", payload.len()).as_bytes());
            input.extend_from_slice(payload);
            input.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            req(&input),
            Request::MPub {
                topic: "t".into(),
                msgs: vec![msg(b"", payload), msg(b"a=b", payload)]
            }
        );

        let mut out = Vec::new();
        encode_msg(&mut out, 7, 8, b"a=b", payload);
        let mut expected = format!("MSG 7 8 {} a=b\r\n", payload.len()).into_bytes();
        expected.extend_from_slice(payload);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn a_bare_newline_ends_a_line_but_never_a_payload() {
        assert_eq!(req(b"STATS\n"), Request::Stats);
        assert_eq!(
            req(b"PUB t 2\nab\r\n"),
            Request::Pub {
                topic: "t".into(),
                msg: msg(b"", b"ab")
            }
        );
        assert_eq!(
            req(b"MPUB t 2\n1\na\r\n1 k=v\nb\r\n"),
            Request::MPub {
                topic: "t".into(),
                msgs: vec![msg(b"", b"a"), msg(b"k=v", b"b")]
            }
        );
        // A payload followed by anything but CRLF is lost framing: a length
        // off by one never stores the wrong bytes.
        for bad in [
            &b"PUB t 2\r\nab\n"[..],
            b"PUB t 4\r\nabc\r\n",
            b"PUB t 3\r\nabc\n",
            b"PUB t 2\r\nabc\r\n",
            b"DPUB t 5 3\r\nabc\n",
            b"MPUB t 1\r\n3\r\nabc\n",
            b"MPUB t 2\r\n1\r\na\n1\r\nb\r\n",
        ] {
            let show = String::from_utf8_lossy(bad);
            match parse_request(bad, &LIM) {
                Parsed::Fatal { err, .. } => {
                    assert_eq!(err.code, ErrCode::BadReq, "{show:?}");
                    assert!(err.msg.contains("CRLF"), "{show:?}: {}", err.msg);
                }
                other => panic!("{show:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn line_length_limit() {
        // Exactly 4096 bytes including CRLF: a line.
        let mut line = b"AUTH ".to_vec();
        line.resize(MAX_LINE_BYTES - 2, b'a');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), MAX_LINE_BYTES);
        assert!(matches!(req(&line), Request::Auth { token } if token.len() == 4089));

        // Exactly 4096 bytes including a bare LF.
        let mut line = b"AUTH ".to_vec();
        line.resize(MAX_LINE_BYTES - 1, b'a');
        line.push(b'\n');
        assert!(matches!(req(&line), Request::Auth { .. }));

        // A 4096-byte line that is a bad request is still a line (Error, not Fatal).
        let mut line = b"INFO ".to_vec();
        line.resize(MAX_LINE_BYTES - 2, b'a');
        line.extend_from_slice(b"\r\n");
        badreq(&line);

        // 4097 bytes including CRLF: fatal, whether or not the LF has arrived.
        let mut line = b"AUTH ".to_vec();
        line.resize(MAX_LINE_BYTES - 1, b'a');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), MAX_LINE_BYTES + 1);
        assert_eq!(fatal(&line), ErrCode::BadReq);
        assert_eq!(fatal(&line[..MAX_LINE_BYTES]), ErrCode::BadReq);
        assert_eq!(
            parse_request(&line[..MAX_LINE_BYTES - 1], &LIM),
            Parsed::NeedMore
        );
        assert_eq!(fatal(&[b'x'; 10_000]), ErrCode::BadReq);

        // The limit applies to MPUB message lines too.
        let mut input = b"MPUB t 1\r\n0 ".to_vec();
        input.resize(10 + MAX_LINE_BYTES, b'a');
        assert_eq!(fatal(&input), ErrCode::BadReq);
        assert_eq!(
            parse_request(&input[..input.len() - 1], &LIM),
            Parsed::NeedMore
        );
    }

    #[test]
    fn malformed_lines_keep_the_connection() {
        badreq(b"\r\n");
        badreq(b"\n");
        badreq(b" PING\r\n");
        badreq(b"PING \r\n");
        badreq(b"INFO  t\r\n");
        badreq(b"INFO\tt\r\n");
        badreq(b"PING\0\r\n");
        badreq(b"INFO t\x01\r\n");
        badreq(b"AUTH caf\xc3\xa9\r\n");
        badreq(b"PI\rNG\r\n");
        badreq(b"PING\r\r\n");
        badreq(b"\x7f\r\n");
        // Only the line is consumed; the next request follows.
        assert_eq!(error(b"PING \r\nPING\r\n"), (ErrCode::BadReq, 7));
    }

    #[test]
    fn commands_match_exactly() {
        for input in [
            &b"FOO\r\n"[..],
            b"PIN\r\n",
            b"PINGX\r\n",
            b"P\r\n",
            b"SUBS t 0\r\n",
        ] {
            assert_eq!(error(input), (ErrCode::Unknown, input.len()));
        }
        match parse_request(b"frob x\r\n", &LIM) {
            Parsed::Error { err, .. } => assert!(err.msg.contains("frob"), "{err}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_arity_names_the_command() {
        for input in [
            &b"PING x\r\n"[..],
            b"QUIT now\r\n",
            b"LIST all\r\n",
            b"STATS x\r\n",
            b"ACK 1\r\n",
            b"STOP 1\r\n",
            b"PROMOTE x\r\n",
            b"SLAVES x\r\n",
            b"ROLE x\r\n",
            b"AUTH\r\n",
            b"AUTH a b\r\n",
            b"CREATE\r\n",
            b"CREATE t 1000 x\r\n",
            b"DELETE\r\n",
            b"DELETE a b\r\n",
            b"INFO\r\n",
            b"INFO a b\r\n",
            b"GROUPS\r\n",
            b"GROUPS a b\r\n",
            b"REPL\r\n",
            b"REPL 1 2\r\n",
            b"SUB\r\n",
            b"SUB t\r\n",
        ] {
            badreq(input);
            let verb = show(
                input
                    .split(|&b| b == b' ' || b == b'\r')
                    .next()
                    .unwrap_or_default(),
            );
            match parse_request(input, &LIM) {
                Parsed::Error { err, .. } => assert!(err.msg.contains(&verb), "{err}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn numbers_and_names() {
        badreq(b"REPL -1\r\n");
        badreq(b"REPL +1\r\n");
        badreq(b"REPL 1.5\r\n");
        badreq(b"REPL 0x10\r\n");
        badreq(b"REPL 18446744073709551616\r\n");
        badreq(b"REPL 99999999999999999999999999\r\n");
        badreq(b"INFO a/b\r\n");
        badreq(b"INFO a:b\r\n");
        badreq(b"DELETE a=b\r\n");
        let long = format!("INFO {}\r\n", "n".repeat(MAX_NAME_BYTES));
        assert!(matches!(req(long.as_bytes()), Request::Info { .. }));
        badreq(format!("INFO {}\r\n", "n".repeat(MAX_NAME_BYTES + 1)).as_bytes());
        assert!(valid_name(b"Az09._-"));
        assert!(!valid_name(b""));
        assert!(!valid_name(b"a b"));
        assert!(!valid_name("é".as_bytes()));
    }

    #[test]
    fn create_life() {
        badreq(b"CREATE t 999\r\n");
        badreq(b"CREATE t 1\r\n");
        badreq(b"CREATE t x\r\n");
        badreq(b"CREATE bad/t\r\n");
        for (input, life_ms) in [
            (&b"CREATE t 0\r\n"[..], 0),
            (b"CREATE t 1000\r\n", 1000),
            (b"CREATE t\r\n", 0),
        ] {
            assert_eq!(
                req(input),
                Request::Create {
                    topic: "t".into(),
                    life_ms
                }
            );
        }
    }

    #[test]
    fn pub_framing_errors() {
        let small = Limits {
            max_payload: 10,
            max_batch: 3,
            max_batch_bytes: 25,
        };
        // Byte count missing: nothing follows.
        badreq(b"PUB\r\n");
        badreq(b"PUB t\r\n");
        badreq(b"PUB t \r\n");
        badreq(b"DPUB t 5\r\n");
        // Unparsable byte count: framing lost.
        assert_eq!(fatal(b"PUB t x\r\nabc\r\n"), ErrCode::BadReq);
        assert_eq!(fatal(b"PUB t -1\r\n"), ErrCode::BadReq);
        assert_eq!(fatal(b"PUB t 99999999999999999999\r\n"), ErrCode::BadReq);
        assert_eq!(fatal(b"PUB t  5\r\nhello\r\n"), ErrCode::BadReq);
        assert_eq!(fatal(b"DPUB t 5 x\r\n"), ErrCode::BadReq);
        // Over the limit: fatal TOOBIG, before any payload arrives.
        assert_eq!(fatal_with(b"PUB t 11\r\n", &small), ErrCode::TooBig);
        assert_eq!(fatal_with(b"DPUB t 1 11\r\n", &small), ErrCode::TooBig);
        assert_eq!(fatal(b"PUB t 18446744073709551615\r\n"), ErrCode::TooBig);
        assert!(matches!(
            req_with(b"PUB t 10\r\n0123456789\r\n", &small),
            Request::Pub { .. }
        ));
        // Bad terminator.
        assert_eq!(fatal(b"PUB t 3\r\nabcXY"), ErrCode::BadReq);
        assert_eq!(fatal(b"PUB t 3\r\nabc\rX"), ErrCode::BadReq);
        assert_eq!(fatal(b"PUB t 3\r\nabc\r\r\n"), ErrCode::BadReq);
        assert_eq!(fatal(b"PUB t 3\r\nabcd\r\n"), ErrCode::BadReq);
        // Incomplete: wait.
        for input in [
            &b"PUB t 3\r\n"[..],
            b"PUB t 3\r\nab",
            b"PUB t 3\r\nabc",
            b"PUB t 3\r\nabc\r",
        ] {
            assert_eq!(parse_request(input, &LIM), Parsed::NeedMore);
        }
    }

    #[test]
    fn pub_bad_arguments_consume_the_payload() {
        badreq(b"PUB bad/topic 3\r\nabc\r\n");
        badreq(b"PUB t 3 nokey\r\nabc\r\n");
        badreq(b"PUB t 3 =v\r\nabc\r\n");
        badreq(b"PUB t 3 k!=v\r\nabc\r\n");
        badreq(b"PUB t 3 k=v \r\nabc\r\n");
        badreq(b"PUB t 3 k=v  j=w\r\nabc\r\n");
        badreq(b"PUB t 3 k=\xff\r\nabc\r\n");
        badreq(b"PUB  3\r\nabc\r\n");
        badreq(b"DPUB t 0 3\r\nabc\r\n");
        badreq(b"DPUB t x 3\r\nabc\r\n");
        badreq(b"DPUB bad/t 1 3\r\nabc\r\n");
        // The error waits for the payload, so it is not parsed as commands.
        assert_eq!(
            parse_request(b"PUB bad/topic 3\r\nab", &LIM),
            Parsed::NeedMore
        );
        assert_eq!(
            error(b"PUB bad/topic 3\r\nabc\r\nPING\r\n"),
            (ErrCode::BadReq, 22)
        );
    }

    #[test]
    fn header_limits() {
        let headers = |n: usize| -> String {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let pub_with = |h: &str| format!("PUB t 1 {h}\r\nx\r\n").into_bytes();

        let h32 = headers(MAX_HEADERS);
        assert_eq!(
            req(&pub_with(&h32)),
            Request::Pub {
                topic: "t".into(),
                msg: msg(h32.as_bytes(), b"x")
            }
        );
        badreq(&pub_with(&headers(MAX_HEADERS + 1)));

        let key64 = "k".repeat(MAX_HEADER_KEY_BYTES);
        assert!(matches!(
            req(&pub_with(&format!("{key64}=v"))),
            Request::Pub { .. }
        ));
        badreq(&pub_with(&format!("{key64}k=v")));

        let value1024 = "v".repeat(MAX_HEADER_VALUE_BYTES);
        assert!(matches!(
            req(&pub_with(&format!("k={value1024}"))),
            Request::Pub { .. }
        ));
        badreq(&pub_with(&format!("k={value1024}v")));

        // The first '=' splits; later ones belong to the value. Empty values are fine.
        assert_eq!(
            req(b"PUB t 1 url=a=b==c e=\r\nx\r\n"),
            Request::Pub {
                topic: "t".into(),
                msg: msg(b"url=a=b==c e=", b"x")
            }
        );
        // Keys may repeat; headers are kept verbatim.
        assert!(
            matches!(req(b"PUB t 1 a=1 a=2\r\nx\r\n"), Request::Pub { msg, .. } if msg.headers == b"a=1 a=2")
        );

        // The same limits inside MPUB and DPUB.
        let mut mpub = b"MPUB t 1\r\n".to_vec();
        mpub.extend_from_slice(format!("1 {}\r\nx\r\n", headers(MAX_HEADERS + 1)).as_bytes());
        badreq(&mpub);
        badreq(format!("DPUB t 5 1 {key64}k=v\r\nx\r\n").as_bytes());
    }

    #[test]
    fn mpub_errors() {
        let small = Limits {
            max_payload: 10,
            max_batch: 3,
            max_batch_bytes: 25,
        };
        // No count: nothing follows.
        badreq(b"MPUB\r\n");
        badreq(b"MPUB t\r\n");
        badreq(b"MPUB t \r\n");
        // A count that does not tell how many lines follow: framing lost.
        assert_eq!(fatal_with(b"MPUB t 0\r\n", &small), ErrCode::BadReq);
        assert_eq!(fatal_with(b"MPUB t 4\r\n", &small), ErrCode::BadReq);
        assert_eq!(fatal_with(b"MPUB t x\r\n", &small), ErrCode::BadReq);
        assert_eq!(fatal_with(b"MPUB t -1\r\n", &small), ErrCode::BadReq);
        // A double space shifts the count position: it cannot be trusted.
        assert_eq!(fatal_with(b"MPUB  t 2\r\n", &small), ErrCode::BadReq);
        // The batch's declared bytes in all: 25 fit, 26 do not, and that is known
        // from the lines alone, before any payload byte past the limit arrives.
        let mut fits = b"MPUB t 3\r\n10\r\n".to_vec();
        fits.extend_from_slice(&[b'a'; 10]);
        fits.extend_from_slice(b"\r\n10\r\n0123456789\r\n5\r\nabcde\r\n");
        assert!(matches!(
            parse_request(&fits, &small),
            Parsed::Request { req: Request::MPub { ref msgs, .. }, consumed } if msgs.len() == 3 && consumed == fits.len()
        ));
        let over = b"MPUB t 3\r\n10\r\naaaaaaaaaa\r\n10\r\n0123456789\r\n6\r\n";
        match parse_request(over, &small) {
            Parsed::Fatal { err } => {
                assert_eq!(err.code, ErrCode::TooBig);
                assert!(err.msg.contains("maximum of 25 bytes"), "{err}");
            }
            other => panic!("{other:?}"),
        }
        // Message framing.
        assert_eq!(
            fatal_with(b"MPUB t 2\r\n1\r\na\r\nx\r\n", &small),
            ErrCode::BadReq
        );
        assert_eq!(
            fatal_with(b"MPUB t 2\r\n1\r\na\r\n\r\n", &small),
            ErrCode::BadReq
        );
        assert_eq!(
            fatal_with(b"MPUB t 2\r\n1\r\na\r\n11\r\n", &small),
            ErrCode::TooBig
        );
        assert_eq!(fatal_with(b"MPUB t 2\r\n1\r\naXY", &small), ErrCode::BadReq);
        assert_eq!(
            fatal_with(b"MPUB t 2\r\n1\r\na\r\n1\r\nb\rZ", &small),
            ErrCode::BadReq
        );
        // Bad topic, headers or extra tokens: everything consumed, one error.
        let rest = b"1\r\na\r\n2 k=v\r\nbc\r\n";
        for line in [
            &b"MPUB bad/t 2\r\n"[..],
            b"MPUB t 2 x\r\n",
            b"MPUB t 2 \r\n",
        ] {
            let mut input = line.to_vec();
            input.extend_from_slice(rest);
            assert_eq!(error_with(&input, &small), (ErrCode::BadReq, input.len()));
            // And it waits for all of it first.
            assert_eq!(
                parse_request(&input[..input.len() - 1], &small),
                Parsed::NeedMore
            );
        }
        for bad_msg in [
            &b"2 k\r\nbc\r\n"[..],
            b"2 k=v \r\nbc\r\n",
            b"2  k=v\r\nbc\r\n",
            b"2 k=\x01\r\nbc\r\n",
        ] {
            let mut input = b"MPUB t 3\r\n1\r\na\r\n".to_vec();
            input.extend_from_slice(bad_msg);
            input.extend_from_slice(b"0\r\n\r\nPING\r\n");
            match parse_request(&input, &small) {
                Parsed::Error { err, consumed } => {
                    assert_eq!(err.code, ErrCode::BadReq);
                    assert!(err.msg.starts_with("message 2:"), "{err}");
                    assert_eq!(consumed, input.len() - 6);
                }
                other => panic!("{:?}: {other:?}", show(&input)),
            }
        }
    }

    /// The error text of a request that must be a non-fatal BADREQ consuming all of it.
    fn badreq_text(input: &[u8]) -> String {
        match parse_request(input, &LIM) {
            Parsed::Error { err, consumed } => {
                assert_eq!((err.code, consumed), (ErrCode::BadReq, input.len()));
                err.msg
            }
            other => panic!("{:?}: expected Error, got {other:?}", show(input)),
        }
    }

    #[test]
    fn too_many_arguments_is_said_for_every_command() {
        let msg = badreq_text(b"CREATE a b c\r\n");
        assert!(
            msg.starts_with("too many arguments for CREATE (at most 2): usage: CREATE <topic>"),
            "{msg}"
        );
        // Arity is checked before content: not "invalid life_ms 'b'", not a bad name.
        for input in [&b"CREATE bad/t 1 2\r\n"[..], b"INFO a/b c\r\n"] {
            let msg = badreq_text(input);
            assert!(msg.starts_with("too many arguments"), "{msg}");
        }
        assert!(badreq_text(b"PING x\r\n").starts_with("too many arguments for PING (none)"));
        for spec in &COMMANDS {
            if spec.max_args == VARIADIC {
                continue;
            }
            let args = " x".repeat(spec.max_args + 1);
            let mut input = format!("{}{args}\r\n", spec.name).into_bytes();
            if matches!(spec.kind, Kind::Payload(PayloadCmd::MPub)) {
                // MPUB t 1 x: the count fixes the framing, so the message follows.
                input = b"MPUB t 1 x\r\n0\r\n\r\n".to_vec();
            }
            let msg = badreq_text(&input);
            let want = format!("too many arguments for {}", spec.name);
            assert!(msg.starts_with(&want), "{:?}: {msg}", show(&input));
            assert!(msg.ends_with(spec.usage), "{msg}");
            // One argument fewer is not an arity error.
            let fewer = format!("{}{}\r\n", spec.name, " x".repeat(spec.max_args));
            if let Parsed::Error { err, .. } = parse_request(fewer.as_bytes(), &LIM) {
                assert!(!err.msg.starts_with("too many"), "{fewer:?}: {err}");
            }
        }
        // SUB takes at most five options.
        let msg = badreq_text(b"SUB t 0 batch=1 ack=5 group=g maxDeliver=1 dlq=d x\r\n");
        assert!(
            msg.starts_with("too many arguments for SUB (at most 7)"),
            "{msg}"
        );
        // Too few still says so.
        let msg = badreq_text(b"CREATE\r\n");
        assert!(
            msg.starts_with("wrong number of arguments for CREATE"),
            "{msg}"
        );
    }

    #[test]
    fn sub_errors() {
        badreq(b"SUB t x\r\n");
        badreq(b"SUB t -1\r\n");
        badreq(b"SUB bad/t 0\r\n");
        badreq(b"SUB t -\r\n");
        badreq(b"SUB t - batch=5\r\n");
        badreq(b"SUB t 0 batch=0\r\n");
        badreq(b"SUB t 0 batch=101\r\n");
        badreq(b"SUB t 0 batch=x\r\n");
        badreq(b"SUB t 0 batch=\r\n");
        badreq(b"SUB t 0 ack=0\r\n");
        badreq(b"SUB t 0 ack=-5\r\n");
        badreq(b"SUB t 0 group=bad/g\r\n");
        badreq(b"SUB t 0 group=\r\n");
        badreq(b"SUB t 0 batch=1 batch=2\r\n");
        badreq(b"SUB t 0 ack=1 ack=1\r\n");
        badreq(b"SUB t 0 group=a group=b\r\n");
        badreq(b"SUB t 0 color=red\r\n");
        badreq(b"SUB t 0 batch\r\n");
        badreq(b"SUB t 0 10\r\n");
        assert_eq!(
            req(b"SUB t 0 group=g ack=9 batch=1\r\n"),
            Request::Sub(SubArgs {
                batch: Some(1),
                ack_ms: Some(9),
                group: Some("g".into()),
                ..sub("t", SubFrom::After(0))
            })
        );
    }

    // ----- partial reads ------------------------------------------------------------

    fn pipelines() -> Vec<Vec<u8>> {
        let mut long_auth = b"AUTH ".to_vec();
        long_auth.resize(MAX_LINE_BYTES - 2, b'z');
        long_auth.extend_from_slice(b"\r\nPING\r\n");
        vec![
            b"PING\r\nPUB t 5 a=b\r\nhe\r\nl\r\nMPUB t 3\r\n3 k=v\r\nabc\r\n0\r\n\r\n4 x=1 y=2=3\r\n\0\r\n\n\r\nSUB t 0 batch=5\r\nACK\r\nSTOP\r\n".to_vec(),
            b"AUTH tok\nCREATE t 1000\nDPUB t 10 2 h=1\n\r\n\nmpub t 1\n0\n\ninfo t\nLIST\r\nGROUPS t\r\nSTATS\r\nREPL 0\r\nPROMOTE\r\nSLAVES\r\nQUIT\r\n".to_vec(),
            // Errors that keep the connection, then a fatal one.
            b"PUB bad/t 3\r\nabc\r\nFOO\r\n\r\nPING  \r\nMPUB t 2\r\n1 k\r\na\r\n1\r\nb\r\nDELETE t\r\nPUB t 3\r\nabcXYZ\r\nPING\r\n".to_vec(),
            // Ends mid-request.
            b"PING\r\nMPUB t 3\r\n1 a=b\r\nx\r\n2\r\nyy\r\n".to_vec(),
            b"SUB t $\r\nPUB t 2000000\r\n".to_vec(),
            long_auth,
        ]
    }

    #[test]
    fn partial_reads_give_the_same_results() {
        let inputs = pipelines();
        let first = whole(&inputs[0], &LIM);
        assert_eq!(first.len(), 7, "{first:?}");
        assert!(
            matches!(&first[2], Parsed::Request { req: Request::MPub { msgs, .. }, .. } if msgs.len() == 3 && msgs[2] == msg(b"x=1 y=2=3", b"\0\r\n\n"))
        );
        let third = whole(&inputs[2], &LIM);
        assert!(
            matches!(third.last(), Some(Parsed::Fatal { .. })),
            "{third:?}"
        );
        assert_eq!(
            third
                .iter()
                .filter(|p| matches!(p, Parsed::Error { .. }))
                .count(),
            5
        );
        for (i, input) in inputs.iter().enumerate() {
            assert_chunking_invariant(input, &LIM, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
        }
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        for input in [
            &b"MPUB t 3\r\n3 k=v\r\nabc\r\n0\r\n\r\n2 x=1\r\nhi\r\n"[..],
            b"PUB t 4 a=b\r\n\r\n\r\n\r\n",
            b"DPUB bad/t 1 2\r\nab\r\n",
            b"SUB t - group=g\r\n",
        ] {
            let expected = parse_request(input, &LIM);
            assert!(!matches!(expected, Parsed::NeedMore | Parsed::Fatal { .. }));
            for cut in 0..input.len() {
                assert_eq!(
                    parse_request(&input[..cut], &LIM),
                    Parsed::NeedMore,
                    "prefix {:?}",
                    show(&input[..cut])
                );
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        const FRAGMENTS: [&[u8]; 30] = [
            b"PUB ",
            b"MPUB ",
            b"DPUB ",
            b"SUB ",
            b"CREATE ",
            b"AUTH ",
            b"PING",
            b"t ",
            b"t",
            b"3",
            b"0",
            b"1 ",
            b"2",
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"k=v",
            b"=",
            b"abc",
            b"\0",
            b"batch=2",
            b"group=g",
            b"$ ",
            b"- ",
            b"99999999999999999999",
            b"\xff",
            b"ACK",
            b"REPL ",
            b"1000",
        ];
        let limits = Limits {
            max_payload: 16,
            max_batch: 3,
            max_batch_bytes: 25,
        };
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for round in 0..2000 {
            let len = rng.below(200);
            let input: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                (0..len / 4)
                    .flat_map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())].iter().copied())
                    .collect()
            };
            let seed = rng.next();
            assert_chunking_invariant(&input, &limits, seed);
        }
    }
}
