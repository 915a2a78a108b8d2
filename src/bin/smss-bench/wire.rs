//! The bench's own wire code for the three protocols it speaks: smss, RESP
//! (Redis) and beanstalkd. Pure encoders and incremental parsers (they take
//! the bytes read so far and answer "need more" with `Ok(None)`), plus a
//! buffered blocking connection that feeds them. Hot-path parsers do not
//! allocate; only error replies and the general RESP value parser do.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use smss::client::stream::Io;

/// A TLS client configuration (`--tls-ca`).
#[cfg(feature = "tls")]
pub type Tls = std::sync::Arc<rustls::ClientConfig>;
/// Without the `tls` feature there is none.
#[cfg(not(feature = "tls"))]
pub enum Tls {}
use std::ops::Range;
use std::time::Duration;

use super::error::BenchError;

/// Deepest RESP nesting the general parser accepts.
const RESP_MAX_DEPTH: usize = 16;
/// Initial size of a connection's read buffer.
const READ_BUF_BYTES: usize = 64 << 10;

fn proto(msg: impl Into<String>) -> BenchError {
    BenchError::Protocol(msg.into())
}

/// Unsigned decimal, no sign, no spaces, no overflow.
pub fn parse_u64(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() || tok.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in tok {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn parse_i64(tok: &[u8]) -> Option<i64> {
    match tok.split_first() {
        Some((b'-', rest)) => parse_u64(rest)
            .and_then(|v| i64::try_from(v).ok())
            .map(|v| -v),
        _ => parse_u64(tok).and_then(|v| i64::try_from(v).ok()),
    }
}

/// One line ending in `\n` (an optional `\r` before it is dropped):
/// the line and how many bytes it took, or `None` when incomplete.
pub fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let i = buf.iter().position(|&b| b == b'\n')?;
    let l = &buf[..i];
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    Some((l, i + 1))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------- smss

/// One smss reply frame (for `MSG`, the payload is part of the frame).
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `OK` with up to two numbers (`OK`, `OK id`, `OK first last`).
    Ok(Option<u64>, Option<u64>),
    Pong,
    /// `ERR <CODE> <text>`: the whole line.
    Err(String),
    Batch(u64),
    /// `MSG id ts n …` + payload; `payload` indexes the parsed buffer.
    Msg {
        id: u64,
        ts_ms: u64,
        payload: Range<usize>,
    },
    Alive,
    End(String),
    /// `STATS n`, `TOPICS n`, `STAT …`, `TOPIC …` and anything else: the line.
    Other(String),
}

/// Parses one smss reply frame from the front of `buf`.
pub fn smss_frame(buf: &[u8]) -> Result<Option<(Reply, usize)>, BenchError> {
    let Some((l, n)) = line(buf) else {
        return Ok(None);
    };
    let mut toks = l.split(|&b| b == b' ');
    let word = toks.next().unwrap_or_default();
    let reply = match word {
        b"OK" => {
            let a = toks.next().and_then(parse_u64);
            let b = toks.next().and_then(parse_u64);
            Reply::Ok(a, b)
        }
        b"PONG" => Reply::Pong,
        b"ERR" => Reply::Err(text(l)),
        b"BATCH" => Reply::Batch(
            toks.next()
                .and_then(parse_u64)
                .ok_or_else(|| proto(format!("bad BATCH line {:?}", text(l))))?,
        ),
        b"MSG" => {
            let bad = || proto(format!("bad MSG line {:?}", text(l)));
            let id = toks.next().and_then(parse_u64).ok_or_else(bad)?;
            let ts_ms = toks.next().and_then(parse_u64).ok_or_else(bad)?;
            let len = toks.next().and_then(parse_u64).ok_or_else(bad)? as usize;
            let end = n + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(proto("MSG payload not followed by CRLF"));
            }
            return Ok(Some((
                Reply::Msg {
                    id,
                    ts_ms,
                    payload: n..end,
                },
                end + 2,
            )));
        }
        b"ALIVE" => Reply::Alive,
        b"END" => Reply::End(text(l)),
        _ => Reply::Other(text(l)),
    };
    Ok(Some((reply, n)))
}

/// `PUB <topic> <n>\r\n<payload>\r\n`.
pub fn smss_pub(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    out.extend_from_slice(format!("PUB {topic} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `PUB <topic> <n> msgid=<16 zeros>` + payload, and where the key's
/// digits start (the sender writes a unique key there per request).
pub fn smss_pub_keyed(out: &mut Vec<u8>, topic: &str, payload: &[u8]) -> usize {
    out.extend_from_slice(format!("PUB {topic} {} msgid=", payload.len()).as_bytes());
    let at = out.len();
    out.extend_from_slice(b"0000000000000000\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    at
}

/// `MPUB <topic> <count>` then `count` times `<n>\r\n<payload>\r\n`.
pub fn smss_mpub(out: &mut Vec<u8>, topic: &str, payload: &[u8], count: usize) {
    out.extend_from_slice(format!("MPUB {topic} {count}\r\n").as_bytes());
    for _ in 0..count {
        out.extend_from_slice(format!("{}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }
}

/// `DPUB <topic> <delay_ms> <n>\r\n<payload>\r\n`.
pub fn smss_dpub(out: &mut Vec<u8>, topic: &str, delay_ms: u64, payload: &[u8]) {
    out.extend_from_slice(format!("DPUB {topic} {delay_ms} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------- RESP

/// A parsed RESP value (general parser, used off the hot path and in tests).
#[derive(Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// Appends a request: an array of bulk strings.
pub fn resp_encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A value's header at `pos`: type byte and the rest of its line.
/// `None` when the line is incomplete.
/// A RESP header: type byte, the rest of its line, and where the value's body starts.
type Header<'a> = (u8, &'a [u8], usize);

fn resp_header(buf: &[u8], pos: usize) -> Result<Option<Header<'_>>, BenchError> {
    let Some(rest) = buf.get(pos..) else {
        return Ok(None);
    };
    let Some((l, n)) = line(rest) else {
        return Ok(None);
    };
    let (&t, body) = l.split_first().ok_or_else(|| proto("empty RESP line"))?;
    Ok(Some((t, body, pos + n)))
}

fn resp_len(body: &[u8]) -> Result<i64, BenchError> {
    parse_i64(body).ok_or_else(|| proto(format!("bad RESP length {:?}", text(body))))
}

/// Skips one complete value at `pos` without allocating: its end, or `None`.
/// The first element tells whether the value is an error reply.
pub fn resp_skip_at(buf: &[u8], mut pos: usize) -> Result<Option<(bool, usize)>, BenchError> {
    let mut pending: u64 = 1;
    let mut first_is_error = None;
    while pending > 0 {
        let Some((t, body, next)) = resp_header(buf, pos)? else {
            return Ok(None);
        };
        first_is_error.get_or_insert(t == b'-');
        pending -= 1;
        pos = next;
        match t {
            b'+' | b'-' | b':' => {}
            b'$' => {
                let n = resp_len(body)?;
                if n >= 0 {
                    let end = pos + n as usize;
                    if buf.len() < end + 2 {
                        return Ok(None);
                    }
                    pos = end + 2;
                }
            }
            b'*' => {
                let n = resp_len(body)?;
                if n > 0 {
                    pending += n as u64;
                }
            }
            _ => return Err(proto(format!("bad RESP type byte {t:#04x}"))),
        }
    }
    Ok(Some((first_is_error.unwrap_or(false), pos)))
}

/// One complete value from the front of `buf`; see [`resp_skip_at`].
pub fn resp_skip(buf: &[u8]) -> Result<Option<(bool, usize)>, BenchError> {
    resp_skip_at(buf, 0)
}

/// Parses one complete RESP value (bounded-depth recursion).
pub fn resp_parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, BenchError> {
    resp_parse_at(buf, 0, 0)
}

fn resp_parse_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
) -> Result<Option<(Resp, usize)>, BenchError> {
    if depth > RESP_MAX_DEPTH {
        return Err(proto("RESP nesting too deep"));
    }
    let Some((t, body, mut pos)) = resp_header(buf, pos)? else {
        return Ok(None);
    };
    let v = match t {
        b'+' => Resp::Simple(body.to_vec()),
        b'-' => Resp::Error(body.to_vec()),
        b':' => Resp::Int(resp_len(body)?),
        b'$' => {
            let n = resp_len(body)?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let end = pos + n as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(proto("bulk string not followed by CRLF"));
                }
                let v = buf[pos..end].to_vec();
                pos = end + 2;
                Resp::Bulk(Some(v))
            }
        }
        b'*' => {
            let n = resp_len(body)?;
            if n < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                for _ in 0..n {
                    let Some((item, next)) = resp_parse_at(buf, pos, depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    pos = next;
                }
                Resp::Array(Some(items))
            }
        }
        _ => return Err(proto(format!("bad RESP type byte {t:#04x}"))),
    };
    Ok(Some((v, pos)))
}

/// What one `XREAD COUNT n STREAMS key id` reply held.
#[derive(Debug, PartialEq, Eq)]
pub struct XRead {
    pub entries: usize,
    /// The last entry's id (indexes the parsed buffer), if any.
    pub last_id: Option<Range<usize>>,
}

/// Parses an XREAD reply for one stream without allocating:
/// `*-1` (nothing) or `*1 [*2 [key, *N [*2 [id, *2k fields…]]…]]`.
pub fn xread_frame(buf: &[u8]) -> Result<Option<(XRead, usize)>, BenchError> {
    macro_rules! hdr {
        ($pos:expr) => {
            match resp_header(buf, $pos)? {
                Some(h) => h,
                None => return Ok(None),
            }
        };
    }
    let expect_array = |t: u8, body: &[u8]| -> Result<i64, BenchError> {
        if t == b'-' {
            return Err(BenchError::Server(format!("XREAD: {}", text(body))));
        }
        if t != b'*' {
            return Err(proto(format!(
                "XREAD reply: expected an array, got {:?}",
                t as char
            )));
        }
        resp_len(body)
    };
    let (t, body, pos) = hdr!(0);
    let streams = expect_array(t, body)?;
    let none = XRead {
        entries: 0,
        last_id: None,
    };
    if streams <= 0 {
        return Ok(Some((none, pos)));
    }
    if streams != 1 {
        return Err(proto("XREAD reply: expected one stream"));
    }
    let (t, body, pos) = hdr!(pos);
    if expect_array(t, body)? != 2 {
        return Err(proto("XREAD reply: stream is not [key, entries]"));
    }
    let Some((_, pos)) = resp_skip_at(buf, pos)? else {
        return Ok(None);
    };
    let (t, body, mut pos) = hdr!(pos);
    let n = expect_array(t, body)?.max(0) as usize;
    let mut last_id = None;
    for _ in 0..n {
        let (t, body, next) = hdr!(pos);
        if expect_array(t, body)? != 2 {
            return Err(proto("XREAD reply: entry is not [id, fields]"));
        }
        let (t, body, next) = hdr!(next);
        if t != b'$' {
            return Err(proto("XREAD reply: entry id is not a bulk string"));
        }
        let len = resp_len(body)?.max(0) as usize;
        if buf.len() < next + len + 2 {
            return Ok(None);
        }
        last_id = Some(next..next + len);
        let Some((_, next)) = resp_skip_at(buf, next + len + 2)? else {
            return Ok(None);
        };
        pos = next;
    }
    Ok(Some((
        XRead {
            entries: n,
            last_id,
        },
        pos,
    )))
}

// ---------------------------------------------------------------- beanstalkd

/// One beanstalkd reply frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Bean {
    Inserted(u64),
    Reserved {
        id: u64,
        payload: Range<usize>,
    },
    TimedOut,
    Deleted,
    Using,
    Watching(u64),
    /// Anything else (errors such as `NOT_FOUND`, `JOB_TOO_BIG`, `BURIED id`).
    Other(String),
}

/// `put <pri> <delay> <ttr> <bytes>\r\n<data>\r\n`.
pub fn bean_put(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("put 0 0 60 {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Parses one beanstalkd reply frame from the front of `buf`.
pub fn bean_frame(buf: &[u8]) -> Result<Option<(Bean, usize)>, BenchError> {
    let Some((l, n)) = line(buf) else {
        return Ok(None);
    };
    let mut toks = l.split(|&b| b == b' ');
    let word = toks.next().unwrap_or_default();
    let num = |t: Option<&[u8]>| {
        t.and_then(parse_u64)
            .ok_or_else(|| proto(format!("bad beanstalkd reply {:?}", text(l))))
    };
    let v = match word {
        b"INSERTED" => Bean::Inserted(num(toks.next())?),
        b"RESERVED" => {
            let id = num(toks.next())?;
            let len = num(toks.next())? as usize;
            let end = n + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(proto("RESERVED job not followed by CRLF"));
            }
            return Ok(Some((
                Bean::Reserved {
                    id,
                    payload: n..end,
                },
                end + 2,
            )));
        }
        b"TIMED_OUT" => Bean::TimedOut,
        b"DELETED" => Bean::Deleted,
        b"USING" => Bean::Using,
        b"WATCHING" => Bean::Watching(num(toks.next())?),
        _ => Bean::Other(text(l)),
    };
    Ok(Some((v, n)))
}

// ---------------------------------------------------------------- connection

/// A blocking TCP connection (or a TLS session over one, `--tls-ca`) with
/// a read buffer that the frame parsers above consume from. One per bench
/// thread.
pub struct Conn {
    stream: Io,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    pub fn connect(addr: &str, timeout: Duration) -> Result<Conn, BenchError> {
        Conn::connect_with(addr, timeout, None)
    }

    /// [`Conn::connect`], over TLS when `tls` is given (the server's
    /// certificate checked against its CA for 127.0.0.1).
    pub fn connect_with(
        addr: &str,
        timeout: Duration,
        tls: Option<&Tls>,
    ) -> Result<Conn, BenchError> {
        let io = |source| BenchError::Io {
            what: format!("connecting to {addr}"),
            source,
        };
        let sa = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| BenchError::Usage(format!("{addr} resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&sa, timeout).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let stream = match tls {
            None => Io::Plain(stream),
            #[cfg(feature = "tls")]
            Some(cfg) => {
                let host = smss::tls::host_of(addr);
                let s = smss::tls::connect(std::sync::Arc::clone(cfg), host, stream).map_err(io)?;
                Io::Tls(std::sync::Arc::new(std::sync::Mutex::new(s)))
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        };
        Ok(Conn {
            stream,
            buf: vec![0; READ_BUF_BYTES],
            start: 0,
            end: 0,
        })
    }

    pub fn set_read_timeout(&mut self, d: Duration) -> Result<(), BenchError> {
        self.stream
            .set_read_timeout(Some(d))
            .map_err(|source| BenchError::Io {
                what: "setting a read timeout".into(),
                source,
            })
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|source| BenchError::Io {
                what: "sending".into(),
                source,
            })
    }

    /// Reads more bytes; `Ok(false)` on a read timeout.
    fn fill(&mut self) -> Result<bool, BenchError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(BenchError::Protocol(
                "the server closed the connection".into(),
            )),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(source) => Err(BenchError::Io {
                what: "reading a reply".into(),
                source,
            }),
        }
    }

    /// The next frame; `Ok(None)` when the read timeout passes first.
    /// `f` sees the buffered bytes and may use ranges into them.
    pub fn try_frame<T>(
        &mut self,
        mut f: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, BenchError>,
    ) -> Result<Option<T>, BenchError> {
        loop {
            if let Some((v, n)) = f(&self.buf[self.start..self.end])? {
                self.start += n;
                return Ok(Some(v));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// The next frame; a read timeout is an error.
    pub fn frame<T>(
        &mut self,
        f: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, BenchError>,
    ) -> Result<T, BenchError> {
        self.try_frame(f)?
            .ok_or_else(|| BenchError::Protocol("timed out waiting for a reply".into()))
    }

    pub fn smss(&mut self) -> Result<Reply, BenchError> {
        self.frame(smss_frame)
    }

    pub fn resp(&mut self) -> Result<Resp, BenchError> {
        self.frame(resp_parse)
    }

    pub fn bean(&mut self) -> Result<Bean, BenchError> {
        self.frame(bean_frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_encoder_exact_bytes() {
        let mut out = Vec::new();
        resp_encode(&mut out, &[b"XADD", b"k", b"*", b"d", b"hello"]);
        assert_eq!(
            out,
            b"*5\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n$1\r\nd\r\n$5\r\nhello\r\n"
        );
        out.clear();
        resp_encode(&mut out, &[b"PING"]);
        assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
        out.clear();
        resp_encode(&mut out, &[b""]);
        assert_eq!(out, b"*1\r\n$0\r\n\r\n");
    }

    #[test]
    fn resp_parser_scalars() {
        assert_eq!(
            resp_parse(b"+PONG\r\nrest").expect("test"),
            Some((Resp::Simple(b"PONG".to_vec()), 7))
        );
        assert_eq!(
            resp_parse(b"-ERR no\r\n").expect("test"),
            Some((Resp::Error(b"ERR no".to_vec()), 9))
        );
        assert_eq!(
            resp_parse(b":-42\r\n").expect("test"),
            Some((Resp::Int(-42), 6))
        );
        assert_eq!(
            resp_parse(b"$-1\r\n").expect("test"),
            Some((Resp::Bulk(None), 5))
        );
        assert_eq!(
            resp_parse(b"*-1\r\n").expect("test"),
            Some((Resp::Array(None), 5))
        );
        assert_eq!(
            resp_parse(b"$4\r\na\r\nb\r\n").expect("test"),
            Some((Resp::Bulk(Some(b"a\r\nb".to_vec())), 10))
        );
        assert!(resp_parse(b"?x\r\n").is_err());
        assert!(resp_parse(b"$x\r\n").is_err());
        assert_eq!(resp_skip(b"-ERR x\r\n").expect("test"), Some((true, 8)));
        assert_eq!(
            resp_skip(b"$15\r\n1700000000000-0\r\n").expect("test"),
            Some((false, 22))
        );
    }

    const XREAD: &[u8] = b"*1\r\n*2\r\n$1\r\nk\r\n*2\r\n\
        *2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$3\r\nabc\r\n\
        *2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nd\r\n$2\r\nxy\r\n";

    #[test]
    fn resp_parser_xread_reply_nested() {
        let (v, n) = resp_parse(XREAD).expect("test").expect("test");
        assert_eq!(n, XREAD.len());
        let entry = |id: &[u8], val: &[u8]| {
            Resp::Array(Some(vec![
                Resp::Bulk(Some(id.to_vec())),
                Resp::Array(Some(vec![
                    Resp::Bulk(Some(b"d".to_vec())),
                    Resp::Bulk(Some(val.to_vec())),
                ])),
            ]))
        };
        assert_eq!(
            v,
            Resp::Array(Some(vec![Resp::Array(Some(vec![
                Resp::Bulk(Some(b"k".to_vec())),
                Resp::Array(Some(vec![entry(b"1-0", b"abc"), entry(b"1-1", b"xy")])),
            ]))]))
        );
        assert_eq!(resp_skip(XREAD).expect("test"), Some((false, XREAD.len())));
        let (x, n) = xread_frame(XREAD).expect("test").expect("test");
        assert_eq!(n, XREAD.len());
        assert_eq!(x.entries, 2);
        assert_eq!(&XREAD[x.last_id.expect("test")], b"1-1");
        let (x, n) = xread_frame(b"*-1\r\n").expect("test").expect("test");
        assert_eq!((x.entries, x.last_id, n), (0, None, 5));
        assert!(xread_frame(b"-ERR wrong\r\n").is_err());
    }

    #[test]
    fn resp_parsers_wait_for_partial_input() {
        for cut in 0..XREAD.len() {
            let part = &XREAD[..cut];
            assert_eq!(resp_parse(part).expect("test"), None, "cut {cut}");
            assert_eq!(resp_skip(part).expect("test"), None, "cut {cut}");
            assert_eq!(xread_frame(part).expect("test"), None, "cut {cut}");
        }
        assert_eq!(resp_parse(b"$5\r\nab").expect("test"), None);
    }

    #[test]
    fn resp_parser_depth_is_bounded() {
        let deep = b"*1\r\n".repeat(RESP_MAX_DEPTH + 2);
        assert!(resp_parse(&deep).is_err());
    }

    #[test]
    fn beanstalk_replies() {
        assert_eq!(
            bean_frame(b"INSERTED 17\r\n").expect("test"),
            Some((Bean::Inserted(17), 13))
        );
        let r = b"RESERVED 5 3\r\nabc\r\nTIMED_OUT\r\n";
        let (v, n) = bean_frame(r).expect("test").expect("test");
        assert_eq!(
            v,
            Bean::Reserved {
                id: 5,
                payload: 14..17
            }
        );
        assert_eq!(n, 19);
        assert_eq!(
            bean_frame(&r[n..]).expect("test"),
            Some((Bean::TimedOut, 11))
        );
        assert_eq!(bean_frame(b"RESERVED 5 3\r\nab").expect("test"), None);
        assert!(bean_frame(b"RESERVED 5 3\r\nabcXY").is_err());
        assert_eq!(
            bean_frame(b"DELETED\r\n").expect("test"),
            Some((Bean::Deleted, 9))
        );
        assert_eq!(
            bean_frame(b"USING t\r\n").expect("test"),
            Some((Bean::Using, 9))
        );
        assert_eq!(
            bean_frame(b"WATCHING 2\r\n").expect("test"),
            Some((Bean::Watching(2), 12))
        );
        assert_eq!(
            bean_frame(b"JOB_TOO_BIG\r\n").expect("test"),
            Some((Bean::Other("JOB_TOO_BIG".into()), 13))
        );
        assert_eq!(bean_frame(b"INSERTED 1").expect("test"), None);
        assert!(bean_frame(b"INSERTED x\r\n").is_err());
        let mut out = Vec::new();
        bean_put(&mut out, b"hi");
        assert_eq!(out, b"put 0 0 60 2\r\nhi\r\n");
    }

    #[test]
    fn smss_replies() {
        assert_eq!(
            smss_frame(b"OK 42\r\n").expect("test"),
            Some((Reply::Ok(Some(42), None), 7))
        );
        assert_eq!(
            smss_frame(b"OK 3 9\r\n").expect("test"),
            Some((Reply::Ok(Some(3), Some(9)), 8))
        );
        assert_eq!(
            smss_frame(b"OK\n").expect("test"),
            Some((Reply::Ok(None, None), 3))
        );
        assert_eq!(
            smss_frame(b"PONG\r\n").expect("test"),
            Some((Reply::Pong, 6))
        );
        assert_eq!(
            smss_frame(b"ERR EXISTS topic t\r\n").expect("test"),
            Some((Reply::Err("ERR EXISTS topic t".into()), 20))
        );
        assert_eq!(smss_frame(b"OK 4").expect("test"), None);

        let b = b"BATCH 2\r\nMSG 7 1000 3\r\na\r\n\r\nMSG 9 1001 0 k=v\r\n\r\nALIVE\r\n";
        let (v, mut pos) = smss_frame(b).expect("test").expect("test");
        assert_eq!(v, Reply::Batch(2));
        let (v, n) = smss_frame(&b[pos..]).expect("test").expect("test");
        let Reply::Msg { id, ts_ms, payload } = v else {
            panic!("not a MSG: {v:?}");
        };
        assert_eq!((id, ts_ms), (7, 1000));
        assert_eq!(&b[pos..][payload], b"a\r\n");
        pos += n;
        let (v, n) = smss_frame(&b[pos..]).expect("test").expect("test");
        assert_eq!(
            v,
            Reply::Msg {
                id: 9,
                ts_ms: 1001,
                payload: 18..18
            }
        );
        pos += n;
        assert_eq!(
            smss_frame(&b[pos..]).expect("test"),
            Some((Reply::Alive, 7))
        );
        // A MSG whose payload has not fully arrived is incomplete, not an error.
        assert_eq!(smss_frame(b"MSG 7 1000 3\r\na\r").expect("test"), None);
        assert!(smss_frame(b"MSG 7 1000 3\r\nabcde").is_err());
        assert!(smss_frame(b"MSG x 1 1\r\n").is_err());
        assert!(smss_frame(b"BATCH\r\n").is_err());
    }

    #[test]
    fn smss_encoders() {
        let mut out = Vec::new();
        smss_pub(&mut out, "t", b"ab");
        assert_eq!(out, b"PUB t 2\r\nab\r\n");
        out.clear();
        smss_mpub(&mut out, "t", b"ab", 2);
        assert_eq!(out, b"MPUB t 2\r\n2\r\nab\r\n2\r\nab\r\n");
        out.clear();
        smss_dpub(&mut out, "t", 1500, b"ab");
        assert_eq!(out, b"DPUB t 1500 2\r\nab\r\n");
    }
}
