//! The smss wire protocol, version 1: turns client bytes into [`Request`]s and server
//! replies into bytes. `/work/shared/PROTOCOL.md` (restated in docs/protocol.md) is the
//! contract; this module is its only implementation on the server side.
//!
//! The module is **pure**: no sockets, no I/O, no threads, no locks, no clocks. The
//! connection thread owns a growing input buffer and calls [`parse_request`] on its
//! unread part; the answer says how many bytes the request used:
//!
//! - [`Parsed::NeedMore`]: the buffer does not yet hold a whole request — a normal
//!   state, nothing is consumed; read more and call again from the same start.
//! - [`Parsed::Request`]: a whole, valid request of `consumed` bytes.
//! - [`Parsed::Error`]: a bad request whose framing is intact: reply `ERR`, drop
//!   `consumed` bytes, keep the connection.
//! - [`Parsed::Fatal`]: framing is lost (line over [`MAX_LINE_BYTES`], unparsable byte
//!   count or MPUB count, payload over the limit, payload not followed by CRLF): reply
//!   `ERR` and close the connection.
//!
//! Every line read is bounded by [`MAX_LINE_BYTES`], every declared length is checked
//! against [`Limits`] before anything is copied, and payloads are skipped by length, so
//! one call costs O(bytes of request lines), not O(payload bytes), until the whole
//! request is there and its payloads are copied once. No input can make it panic.
//!
//! The `encode_*` functions append reply lines (always ending in `\r\n`) to a caller's
//! `Vec<u8>` without allocating anything else.

use std::fmt;
use std::io::Write as _;

/// Longest request line, including its `\n` (and the `\r` before it, if any).
pub const MAX_LINE_BYTES: usize = 4096;
/// Most `key=value` headers one message may carry.
pub const MAX_HEADERS: usize = 32;
/// Longest header key.
pub const MAX_HEADER_KEY_BYTES: usize = 64;
/// Longest header value (a value may be empty).
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;
/// Longest topic or group name.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest error text [`encode_err`] writes; a longer text is cut, so an `ERR` line always
/// fits in [`MAX_LINE_BYTES`].
pub const MAX_ERR_TEXT_BYTES: usize = 1024;

/// How much of a client-supplied token is quoted back in an error text.
const QUOTE_BYTES: usize = 64;
const CRLF: &[u8] = b"\r\n";

/// The `CODE` of an `ERR <CODE> <text…>` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrCode {
    /// Malformed line, bad argument, bad name.
    BadReq,
    /// No such command.
    Unknown,
    /// The topic does not exist.
    NoTopic,
    /// The topic already exists.
    Exists,
    /// Payload over the configured maximum.
    TooBig,
    /// A write sent to a slave.
    ReadOnly,
    /// AUTH missing or wrong.
    NoAuth,
    /// Connection limit reached.
    Busy,
    /// The server failed; nothing was written.
    Internal,
}

impl ErrCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrCode::BadReq => "BADREQ",
            ErrCode::Unknown => "UNKNOWN",
            ErrCode::NoTopic => "NOTOPIC",
            ErrCode::Exists => "EXISTS",
            ErrCode::TooBig => "TOOBIG",
            ErrCode::ReadOnly => "READONLY",
            ErrCode::NoAuth => "NOAUTH",
            ErrCode::Busy => "BUSY",
            ErrCode::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error to send to the client as `ERR <code> <msg>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    pub code: ErrCode,
    pub msg: String,
}

impl ProtoError {
    pub fn new(code: ErrCode, msg: impl Into<String>) -> Self {
        ProtoError {
            code,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.msg.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.msg)
        }
    }
}

impl std::error::Error for ProtoError {}

/// Configured limits the parser enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload of one message, in bytes; a larger declared `<n>` is `TOOBIG`.
    pub max_payload: usize,
    /// Largest MPUB `<count>` and SUB `batch=`.
    pub max_batch: usize,
}

/// One message as published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The header tokens exactly as received, joined by single spaces ("k=v k2=v2"); empty when none.
    pub headers: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Where a subscription starts (SUB's `<after>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubFrom {
    /// `0` (from the oldest retained message) or a number N (event ids greater than N).
    After(u64),
    /// `$`: only messages written after the SUB.
    Latest,
    /// `-`: from the group's committed position (only with a group).
    Committed,
}

/// The arguments of a SUB request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubArgs {
    pub topic: String,
    pub from: SubFrom,
    /// `batch=<n>`, 1..=max_batch; `None` means the configured default.
    pub batch: Option<usize>,
    /// `ack=<ms>`, at least 1; `None` means the configured default.
    pub ack_ms: Option<u64>,
    /// `group=<name>`.
    pub group: Option<String>,
}

/// One parsed, validated client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Auth {
        token: String,
    },
    Quit,
    Create {
        topic: String,
        life_ms: u64,
    }, // life_ms absent -> 0
    Delete {
        topic: String,
    },
    Pub {
        topic: String,
        msg: Message,
    },
    MPub {
        topic: String,
        msgs: Vec<Message>,
    },
    DPub {
        topic: String,
        delay_ms: u64,
        msg: Message,
    },
    Info {
        topic: String,
    },
    List,
    Stats,
    Sub(SubArgs),
    Ack,
    Stop,
    Groups {
        topic: String,
    },
    Repl {
        after: u64,
    },
    Promote,
}

impl Request {
    /// The command's canonical (upper-case) name, for logs and error texts.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "PING",
            Request::Auth { .. } => "AUTH",
            Request::Quit => "QUIT",
            Request::Create { .. } => "CREATE",
            Request::Delete { .. } => "DELETE",
            Request::Pub { .. } => "PUB",
            Request::MPub { .. } => "MPUB",
            Request::DPub { .. } => "DPUB",
            Request::Info { .. } => "INFO",
            Request::List => "LIST",
            Request::Stats => "STATS",
            Request::Sub(_) => "SUB",
            Request::Ack => "ACK",
            Request::Stop => "STOP",
            Request::Groups { .. } => "GROUPS",
            Request::Repl { .. } => "REPL",
            Request::Promote => "PROMOTE",
        }
    }
}

/// The result of one [`parse_request`] call.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The buffer does not yet hold a whole request.
    NeedMore,
    /// A whole request; `consumed` bytes of the buffer belong to it (line + payloads + their CRLFs).
    Request { req: Request, consumed: usize },
    /// A bad request whose framing is intact: reply with the error, drop `consumed` bytes, keep the connection.
    Error { err: ProtoError, consumed: usize },
    /// Framing is lost: reply with the error and close the connection.
    Fatal { err: ProtoError },
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Why parsing stopped before a request (valid or not) was complete.
enum Stop {
    NeedMore,
    Fatal(ProtoError),
}

#[derive(Clone, Copy)]
enum PayloadCmd {
    Pub,
    MPub,
    DPub,
}

#[derive(Clone, Copy)]
enum SimpleCmd {
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
    Repl,
    Promote,
}

#[derive(Clone, Copy)]
enum Kind {
    /// The line declares byte counts; payload bytes follow it.
    Payload(PayloadCmd),
    /// The request is exactly one line.
    Simple(SimpleCmd),
}

struct CommandSpec {
    name: &'static str,
    kind: Kind,
    usage: &'static str,
}

const fn spec(name: &'static str, kind: Kind, usage: &'static str) -> CommandSpec {
    CommandSpec { name, kind, usage }
}

const COMMANDS: [CommandSpec; 17] = [
    spec("PING", Kind::Simple(SimpleCmd::Ping), "PING"),
    spec("AUTH", Kind::Simple(SimpleCmd::Auth), "AUTH <token>"),
    spec("QUIT", Kind::Simple(SimpleCmd::Quit), "QUIT"),
    spec(
        "CREATE",
        Kind::Simple(SimpleCmd::Create),
        "CREATE <topic> [<life_ms>]",
    ),
    spec("DELETE", Kind::Simple(SimpleCmd::Delete), "DELETE <topic>"),
    spec(
        "PUB",
        Kind::Payload(PayloadCmd::Pub),
        "PUB <topic> <n> [<key>=<value> ...]",
    ),
    spec(
        "MPUB",
        Kind::Payload(PayloadCmd::MPub),
        "MPUB <topic> <count>",
    ),
    spec(
        "DPUB",
        Kind::Payload(PayloadCmd::DPub),
        "DPUB <topic> <delay_ms> <n> [<key>=<value> ...]",
    ),
    spec("INFO", Kind::Simple(SimpleCmd::Info), "INFO <topic>"),
    spec("LIST", Kind::Simple(SimpleCmd::List), "LIST"),
    spec("STATS", Kind::Simple(SimpleCmd::Stats), "STATS"),
    spec(
        "SUB",
        Kind::Simple(SimpleCmd::Sub),
        "SUB <topic> <after> [batch=<n>] [ack=<ms>] [group=<name>]",
    ),
    spec("ACK", Kind::Simple(SimpleCmd::Ack), "ACK"),
    spec("STOP", Kind::Simple(SimpleCmd::Stop), "STOP"),
    spec("GROUPS", Kind::Simple(SimpleCmd::Groups), "GROUPS <topic>"),
    spec(
        "REPL",
        Kind::Simple(SimpleCmd::Repl),
        "REPL <after_event_id>",
    ),
    spec("PROMOTE", Kind::Simple(SimpleCmd::Promote), "PROMOTE"),
];

/// Exact, case-insensitive command lookup (no prefix matching).
fn lookup(verb: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|spec| verb.eq_ignore_ascii_case(spec.name.as_bytes()))
}

fn is_space(b: &u8) -> bool {
    *b == b' '
}

type Tokens<'a> = std::slice::Split<'a, u8, fn(&u8) -> bool>;

fn tokens(line: &[u8]) -> Tokens<'_> {
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
fn next_line(buf: &[u8]) -> Result<(&[u8], usize), Stop> {
    let window = buf.get(..MAX_LINE_BYTES).unwrap_or(buf);
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let raw = window.get(..end).unwrap_or_default();
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            Ok((line, end + 1))
        }
        None if buf.len() >= MAX_LINE_BYTES => Err(Stop::Fatal(bad(format!(
            "line too long: at most {MAX_LINE_BYTES} bytes including the line end"
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
    let n_at = if delayed { 3 } else { 2 };
    let mut parts = line.splitn(n_at + 2, is_space);
    let mut fixed: [&[u8]; 4] = [&[]; 4];
    for slot in fixed.iter_mut().take(n_at + 1) {
        match parts.next() {
            Some(part) => *slot = part,
            None => return Ok(usage_error(spec, line_len)),
        }
    }
    let header_part = parts.next();
    let n_tok = fixed.get(n_at).copied().unwrap_or_default();
    if n_tok.is_empty() && header_part.is_none() {
        // "PUB t " — a trailing space, no byte count: nothing follows.
        return Ok(usage_error(spec, line_len));
    }
    let n = payload_len(n_tok, limits)?;
    let (payload, consumed) = frame_payload(buf, line_len, n)?;
    let built = build_pub(
        line,
        &fixed,
        header_part.unwrap_or_default(),
        payload,
        delayed,
    );
    Ok(match built {
        Ok(req) => Parsed::Request { req, consumed },
        Err(err) => Parsed::Error { err, consumed },
    })
}

fn build_pub(
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
    let delay_ms = number(delay, "delay_ms")?;
    if delay_ms == 0 {
        return Err(bad("DPUB delay_ms must be at least 1"));
    }
    Ok(Request::DPub {
        topic,
        delay_ms,
        msg,
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
    let mut parts = line.splitn(4, is_space);
    let _verb = parts.next();
    let topic = parts.next().unwrap_or_default();
    let count_tok = parts.next();
    let extra = parts.next();
    let count_tok = match count_tok {
        Some(tok) if !tok.is_empty() || extra.is_some() => tok,
        _ => return Ok(usage_error(spec, line_len)),
    };
    let count = parse_u64(count_tok)
        .and_then(|c| usize::try_from(c).ok())
        .filter(|c| (1..=limits.max_batch).contains(c))
        .ok_or_else(|| {
            Stop::Fatal(bad(format!(
                "MPUB count '{}' is not a number from 1 to {}",
                quote(count_tok),
                limits.max_batch
            )))
        })?;

    let mut pos = line_len;
    let mut frames: Vec<(&[u8], &[u8])> = Vec::new();
    let mut first_err: Option<ProtoError> = None;
    for index in 1..=count {
        let (msg_line, msg_line_len) = next_line(buf.get(pos..).unwrap_or_default())?;
        let mut msg_parts = msg_line.splitn(2, is_space);
        let n_tok = msg_parts.next().unwrap_or_default();
        let headers = msg_parts.next().unwrap_or_default();
        let n = payload_len(n_tok, limits)?;
        let (payload, end) = frame_payload(buf, pos + msg_line_len, n)?;
        if first_err.is_none()
            && let Err(err) = check_line(msg_line).and_then(|()| check_headers(headers))
        {
            first_err = Some(bad(format!("message {index}: {}", err.msg)));
        }
        frames.push((headers, payload));
        pos = end;
    }
    let consumed = pos;

    let checked = check_line(line)
        .and_then(|()| topic_arg(topic))
        .and_then(|topic| match (extra, first_err) {
            (Some(_), _) => Err(usage(spec)),
            (None, Some(err)) => Err(err),
            (None, None) => Ok(topic),
        });
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
fn payload_len(tok: &[u8], limits: &Limits) -> Result<usize, Stop> {
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

/// The `n` payload bytes at `start` and the offset just past their terminator
/// (`\r\n`, or a bare `\n`). Checks lengths only; copies nothing.
fn frame_payload(buf: &[u8], start: usize, n: usize) -> Result<(&[u8], usize), Stop> {
    let not_crlf = || Stop::Fatal(bad("payload not followed by CRLF"));
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
        Some(b'\n') => Ok((payload, end + 1)),
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
    for (index, tok) in tokens(raw).enumerate() {
        if index >= MAX_HEADERS {
            return Err(bad(format!("too many headers: at most {MAX_HEADERS}")));
        }
        let Some((key, value)) = split_eq(tok) else {
            return Err(bad(format!("header '{}' is not key=value", quote(tok))));
        };
        if key.is_empty()
            || key.len() > MAX_HEADER_KEY_BYTES
            || !key.iter().all(|&b| is_name_byte(b))
        {
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
    let mut args = Args { spec, toks };
    let req = match cmd {
        SimpleCmd::Ping => Request::Ping,
        SimpleCmd::Auth => Request::Auth {
            token: ascii(args.required()?),
        },
        SimpleCmd::Quit => Request::Quit,
        SimpleCmd::Create => {
            let topic = topic_arg(args.required()?)?;
            let life_ms = match args.optional() {
                None => 0,
                Some(tok) => number(tok, "life_ms")?,
            };
            if life_ms != 0 && life_ms < 1000 {
                return Err(bad("CREATE life_ms must be 0 or at least 1000"));
            }
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
        SimpleCmd::Sub => Request::Sub(parse_sub(&mut args, limits)?),
        SimpleCmd::Ack => Request::Ack,
        SimpleCmd::Stop => Request::Stop,
        SimpleCmd::Groups => Request::Groups {
            topic: topic_arg(args.required()?)?,
        },
        SimpleCmd::Repl => Request::Repl {
            after: number(args.required()?, "event id")?,
        },
        SimpleCmd::Promote => Request::Promote,
    };
    args.finish()?;
    Ok(req)
}

fn parse_sub(args: &mut Args<'_>, limits: &Limits) -> Result<SubArgs, ProtoError> {
    let topic = topic_arg(args.required()?)?;
    let from = match args.required()? {
        b"$" => SubFrom::Latest,
        b"-" => SubFrom::Committed,
        tok => SubFrom::After(number(tok, "SUB position")?),
    };
    let mut sub = SubArgs {
        topic,
        from,
        batch: None,
        ack_ms: None,
        group: None,
    };
    while let Some(opt) = args.optional() {
        let Some((key, value)) = split_eq(opt) else {
            return Err(bad(format!("SUB option '{}' is not key=value", quote(opt))));
        };
        let duplicate = || bad(format!("SUB option '{}' given twice", quote(key)));
        if key.eq_ignore_ascii_case(b"batch") {
            if sub.batch.is_some() {
                return Err(duplicate());
            }
            let batch = usize::try_from(number(value, "batch")?)
                .ok()
                .filter(|b| (1..=limits.max_batch).contains(b))
                .ok_or_else(|| bad(format!("batch must be from 1 to {}", limits.max_batch)))?;
            sub.batch = Some(batch);
        } else if key.eq_ignore_ascii_case(b"ack") {
            if sub.ack_ms.is_some() {
                return Err(duplicate());
            }
            let ack_ms = number(value, "ack")?;
            if ack_ms == 0 {
                return Err(bad("ack must be at least 1 ms"));
            }
            sub.ack_ms = Some(ack_ms);
        } else if key.eq_ignore_ascii_case(b"group") {
            if sub.group.is_some() {
                return Err(duplicate());
            }
            sub.group = Some(name_arg(value, "group")?);
        } else {
            return Err(bad(format!(
                "unknown SUB option '{}' (batch, ack, group)",
                quote(key)
            )));
        }
    }
    if sub.from == SubFrom::Committed && sub.group.is_none() {
        return Err(bad("SUB position '-' needs group=<name>"));
    }
    Ok(sub)
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

    /// Rejects extra arguments.
    fn finish(mut self) -> Result<(), ProtoError> {
        match self.toks.next() {
            None => Ok(()),
            Some(_) => Err(usage(self.spec)),
        }
    }
}

fn usage(spec: &CommandSpec) -> ProtoError {
    bad(format!(
        "wrong number of arguments for {}: usage: {}",
        spec.name, spec.usage
    ))
}

fn usage_error(spec: &CommandSpec, consumed: usize) -> Parsed {
    Parsed::Error {
        err: usage(spec),
        consumed,
    }
}

fn bad(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrCode::BadReq, msg)
}

/// Validates a topic or group name: 1–128 bytes of A-Z a-z 0-9 . _ -
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.iter().all(|&b| is_name_byte(b))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn is_visible(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

fn topic_arg(tok: &[u8]) -> Result<String, ProtoError> {
    name_arg(tok, "topic")
}

fn name_arg(tok: &[u8], what: &str) -> Result<String, ProtoError> {
    if valid_name(tok) {
        Ok(ascii(tok))
    } else {
        Err(bad(format!(
            "invalid {what} name '{}': 1-{MAX_NAME_BYTES} bytes of A-Z a-z 0-9 . _ -",
            quote(tok)
        )))
    }
}

fn number(tok: &[u8], what: &str) -> Result<u64, ProtoError> {
    parse_u64(tok).ok_or_else(|| {
        bad(format!(
            "invalid {what} '{}': expected an unsigned decimal number",
            quote(tok)
        ))
    })
}

/// Unsigned decimal digits only, fitting in u64 (leading zeros allowed).
fn parse_u64(tok: &[u8]) -> Option<u64> {
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

/// Splits a token at its first `=`.
fn split_eq(tok: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = tok.iter().position(|&b| b == b'=')?;
    Some((tok.get(..at)?, tok.get(at + 1..)?))
}

/// A String from bytes already known to be ASCII.
fn ascii(tok: &[u8]) -> String {
    tok.iter().map(|&b| char::from(b)).collect()
}

/// A client token for an error text: printable, at most [`QUOTE_BYTES`] bytes.
fn quote(tok: &[u8]) -> String {
    let mut s: String = tok
        .iter()
        .take(QUOTE_BYTES)
        .map(|&b| if is_visible(b) { char::from(b) } else { '?' })
        .collect();
    if tok.len() > QUOTE_BYTES {
        s.push_str("...");
    }
    s
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Appends the decimal digits of `v`.
fn push_u64(out: &mut Vec<u8>, v: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
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

/// `GROUP <name> <committed_id> <active: 0|1> <standby_count>`.
pub fn encode_group(
    out: &mut Vec<u8>,
    name: &str,
    committed_id: u64,
    active: bool,
    standby_count: u64,
) {
    out.extend_from_slice(b"GROUP ");
    out.extend_from_slice(name.as_bytes());
    for v in [committed_id, u64::from(active), standby_count] {
        out.push(b' ');
        push_u64(out, v);
    }
    out.extend_from_slice(CRLF);
}

/// A keyword and a count: `BATCH 3`, `TOPICS 2`, `GROUPS 1`, `STATS 9`.
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

/// Any simple line (`PONG`, `ALIVE`, `STANDBY`, `END deleted`, …) plus `\r\n`. The
/// caller passes server-made text without line ends.
pub fn encode_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(CRLF);
}
