//! Refused payload requests, discarded as they stream in: when the server will
//! refuse a PUB, MPUB or DPUB whatever its payload holds (`NOAUTH` before AUTH,
//! `READONLY` on a slave, anything but ACK/STOP/QUIT during a subscription), its
//! payload bytes are counted off as they arrive instead of being buffered whole, so
//! a client that may not write cannot make the server hold megabytes for it. The
//! framing is kept: the request's lines are still read (each bounded by
//! [`MAX_LINE_BYTES`](super::MAX_LINE_BYTES)), its byte counts checked against the
//! [`Limits`], and every payload must end in `\r\n`.
//!
//! [`next_request`] is [`parse_request`] with that added; the answers are the same
//! but for what a refused request gets: its own `BADREQ` if its lines are malformed
//! (as if it had been parsed whole), else the refusal. Pure like the parser: it runs
//! on the connection thread that owns the input buffer, and touches no socket.

use super::parse::{
    Kind, PayloadCmd, Stop, build_pub, lookup, mpub_line, msg_head, next_line, payload_len,
    split_pub, terminator, tokens,
};
use super::{Limits, Parsed, ProtoError, parse_request};

/// A refused payload request part way through its payloads.
#[derive(Debug, PartialEq, Eq)]
pub struct Skip {
    /// The reply: the request's own first error, else the refusal.
    answer: ProtoError,
    /// `answer` is the request's own error, which later ones do not replace.
    own_err: bool,
    /// MPUB: messages bring their own lines (PUB and DPUB have one payload).
    mpub: bool,
    /// The message being framed (from 1) and how many there are.
    index: usize,
    count: usize,
    /// MPUB: payload bytes declared so far, held to `limits.max_batch_bytes`.
    total: u64,
    at: At,
}

/// Where in the current message the input is.
#[derive(Debug, PartialEq, Eq)]
enum At {
    /// Before an MPUB message line.
    Line,
    /// Inside a payload, with this many bytes still to come.
    Payload(usize),
    /// After a payload: its `\r\n` (or `\n`) comes next.
    End,
}

/// Parses the next request from `buf` (the unread input), discarding a payload
/// request when `refuse` is given; `skip` carries one across calls (the caller keeps
/// it with its buffer, starting from `None`). Returns how many bytes to drop from the
/// front of `buf` with the answer: a skipped request's bytes are dropped as they come,
/// so here `NeedMore` may drop bytes too, and a skipped request's `Error` counts only
/// the bytes of its last call. `Fatal` drops nothing, as the connection closes.
pub fn next_request(
    skip: &mut Option<Skip>,
    buf: &[u8],
    limits: &Limits,
    refuse: Option<&ProtoError>,
) -> (usize, Parsed) {
    let mut used = 0;
    if skip.is_none() {
        let Some(refusal) = refuse else {
            return consumed(parse_request(buf, limits));
        };
        match payload_head(buf, limits) {
            Err(Stop::Fatal(err)) => return (0, Parsed::Fatal { err }),
            Err(Stop::NeedMore) | Ok(None) => return consumed(parse_request(buf, limits)),
            Ok(Some(head)) => {
                used = head.line_len;
                *skip = Some(Skip {
                    own_err: head.err.is_some(),
                    answer: head.err.unwrap_or_else(|| refusal.clone()),
                    mpub: head.n.is_none(),
                    index: 1,
                    count: head.count,
                    total: 0,
                    at: head.n.map_or(At::Line, At::Payload),
                });
            }
        }
    }
    let (n, res) = match skip.as_mut() {
        Some(s) => s.advance(buf.get(used..).unwrap_or_default(), limits),
        None => (0, Ok(false)),
    };
    let used = used + n;
    match (res, skip.take()) {
        (Ok(true), Some(done)) => (
            used,
            Parsed::Error {
                err: done.answer,
                consumed: used,
            },
        ),
        (Err(err), _) => (0, Parsed::Fatal { err }),
        (_, still) => {
            *skip = still;
            (used, Parsed::NeedMore)
        }
    }
}

/// A parser answer with the bytes it consumed.
fn consumed(parsed: Parsed) -> (usize, Parsed) {
    match parsed {
        Parsed::Request { consumed, .. } | Parsed::Error { consumed, .. } => (consumed, parsed),
        Parsed::NeedMore | Parsed::Fatal { .. } => (0, parsed),
    }
}

/// The first line of a payload request (PUB, MPUB, DPUB), read before its payloads.
struct PayloadHead {
    /// Bytes of the line, its end included.
    line_len: usize,
    /// PUB and DPUB: the payload's length. MPUB: `None`; `count` messages follow, each
    /// with its own line.
    n: Option<usize>,
    count: usize,
    /// The error the request gets for its line (topic, headers, delay, extra tokens);
    /// an MPUB message line may add one.
    err: Option<ProtoError>,
}

/// The head of the request at the start of `buf` if it is a payload request (`None`
/// otherwise, also for a PUB line without a byte count: nothing follows it).
fn payload_head(buf: &[u8], limits: &Limits) -> Result<Option<PayloadHead>, Stop> {
    let (line, line_len) = next_line(buf)?;
    let verb = tokens(line).next().unwrap_or_default();
    let Some(spec) = lookup(verb) else {
        return Ok(None);
    };
    let (n, count, err) = match spec.kind {
        Kind::Payload(PayloadCmd::MPub) => match mpub_line(line, limits, spec)? {
            Some((count, checked)) => (None, count, checked.err()),
            None => return Ok(None),
        },
        Kind::Payload(cmd) => {
            let delayed = matches!(cmd, PayloadCmd::DPub);
            let Some((fixed, n_tok, headers)) = split_pub(line, delayed) else {
                return Ok(None);
            };
            let n = payload_len(n_tok, limits)?;
            let err = build_pub(line, &fixed, headers, &[], delayed).err();
            (Some(n), 1, err)
        }
        Kind::Simple(_) => return Ok(None),
    };
    Ok(Some(PayloadHead {
        line_len,
        n,
        count,
        err,
    }))
}

impl Skip {
    /// Counts off what `buf` holds of the request: the bytes used, and whether the
    /// request is over (`Ok(true)`), or the fatal error that lost its framing.
    fn advance(&mut self, buf: &[u8], limits: &Limits) -> (usize, Result<bool, ProtoError>) {
        let mut pos = 0;
        // Every step moves `at` on, and each round of Line/Payload/End uses bytes.
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            match self.at {
                At::Line => match msg_head(rest, self.index, &mut self.total, limits) {
                    Err(Stop::NeedMore) => return (pos, Ok(false)),
                    Err(Stop::Fatal(err)) => return (pos, Err(err)),
                    Ok(head) => {
                        if let Some(err) = head.err
                            && !self.own_err
                        {
                            self.answer = err;
                            self.own_err = true;
                        }
                        pos += head.line_len;
                        self.at = At::Payload(head.n);
                    }
                },
                At::Payload(left) => {
                    let take = left.min(rest.len());
                    pos += take;
                    if take < left {
                        self.at = At::Payload(left - take);
                        return (pos, Ok(false));
                    }
                    self.at = At::End;
                }
                At::End => match terminator(rest) {
                    Err(Stop::NeedMore) => return (pos, Ok(false)),
                    Err(Stop::Fatal(err)) => return (pos, Err(err)),
                    Ok(len) => {
                        pos += len;
                        if self.index >= self.count || !self.mpub {
                            return (pos, Ok(true));
                        }
                        self.index += 1;
                        self.at = At::Line;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrCode, Request};

    const LIM: Limits = Limits {
        max_payload: 1 << 20,
        max_batch: 100,
        max_batch_bytes: 1 << 30,
    };

    fn refusal() -> ProtoError {
        ProtoError::new(ErrCode::NoAuth, "authenticate first")
    }

    use crate::protocol::test_rng::Rng;

    /// `consumed` differs by design (a skipped request's bytes are dropped
    /// as they come); everything else must not.
    fn normal(p: Parsed) -> Parsed {
        match p {
            Parsed::Request { req, .. } => Parsed::Request { req, consumed: 0 },
            Parsed::Error { err, .. } => Parsed::Error { err, consumed: 0 },
            other => other,
        }
    }

    /// What the whole-request parser says, with every payload request that
    /// parsed turned into the refusal: what skipping must give.
    fn expected(input: &[u8], limits: &Limits) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            match parse_request(&input[start..], limits) {
                Parsed::NeedMore => return out,
                Parsed::Fatal { err } => {
                    out.push(Parsed::Fatal { err });
                    return out;
                }
                Parsed::Request { req, consumed } => {
                    start += consumed;
                    out.push(match req {
                        Request::Pub { .. } | Request::MPub { .. } | Request::DPub { .. } => {
                            Parsed::Error {
                                err: refusal(),
                                consumed: 0,
                            }
                        }
                        req => Parsed::Request { req, consumed: 0 },
                    });
                }
                Parsed::Error { err, consumed } => {
                    start += consumed;
                    out.push(Parsed::Error { err, consumed: 0 });
                }
            }
        }
    }

    /// Feeds `input` in chunks the way a connection does, refusing payload
    /// requests; returns the answers and the most unread bytes ever held.
    fn driven(
        input: &[u8],
        limits: &Limits,
        mut chunk: impl FnMut() -> usize,
    ) -> (Vec<Parsed>, usize) {
        let refuse = refusal();
        let mut skip = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut held = 0;
        let mut out = Vec::new();
        loop {
            let (used, parsed) = next_request(&mut skip, &buf, limits, Some(&refuse));
            buf.drain(..used);
            match parsed {
                Parsed::NeedMore => {
                    if fed == input.len() {
                        return (out, held);
                    }
                    let n = chunk().min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                    held = held.max(buf.len());
                }
                Parsed::Fatal { err } => {
                    out.push(Parsed::Fatal { err });
                    return (out, held);
                }
                other => out.push(normal(other)),
            }
        }
    }

    fn assert_same_as_whole(input: &[u8], limits: &Limits, seed: u64) {
        let want = expected(input, limits);
        let show = String::from_utf8_lossy(input);
        assert_eq!(
            driven(input, limits, || 1).0,
            want,
            "byte at a time: {show:?}"
        );
        assert_eq!(
            driven(input, limits, || input.len() + 1).0,
            want,
            "whole: {show:?}"
        );
        let mut rng = Rng(seed);
        for max in [2, 7, 64, 5000] {
            let got = driven(input, limits, || 1 + rng.below(max)).0;
            assert_eq!(got, want, "chunks up to {max}: {show:?}");
        }
    }

    #[test]
    fn a_skipped_request_gets_what_a_parsed_one_would() {
        let inputs: [&[u8]; 8] = [
            b"PING\r\nPUB t 5 a=b\r\nhe\r\nl\r\nMPUB t 3\r\n3 k=v\r\nabc\r\n0\r\n\r\n4 x=1\r\n\0\r\n\n\r\nACK\r\n",
            b"pub t 0\n\r\ndpub t 10 2 h=1\n\r\n\r\nmpub t 1\n0\n\r\ninfo t\n",
            // Its own BADREQ: bad topic, header, delay, extra token, message line.
            b"PUB bad/t 3\r\nabc\r\nPUB t 1 k\r\nx\r\nDPUB t 0 1\r\nx\r\nMPUB t 2 x\r\n1\r\na\r\n1\r\nb\r\nPING\r\n",
            b"MPUB t 3\r\n1\r\na\r\n2 k\r\nbc\r\n1 =v\r\nc\r\nMPUB bad/t 2\r\n1 k\r\na\r\n1\r\nb\r\n",
            // Framing lost: no CRLF after a payload; TOOBIG; bad MPUB count.
            b"PUB t 3\r\nabcXYZ\r\nPING\r\n",
            b"PUB t 2000000\r\nabc",
            b"MPUB t 0\r\n",
            b"MPUB t 2\r\n1\r\na\r\nx\r\n",
        ];
        for (i, input) in inputs.iter().enumerate() {
            assert_same_as_whole(input, &LIM, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
        }
        // Not refused: exactly the parser.
        let mut skip = None;
        let (used, parsed) = next_request(&mut skip, b"PUB t 1\r\nx\r\n", &LIM, None);
        assert_eq!(used, 12);
        assert!(matches!(
            parsed,
            Parsed::Request {
                req: Request::Pub { .. },
                consumed: 12
            }
        ));
    }

    #[test]
    fn the_batch_limit_holds_while_skipping() {
        let small = Limits {
            max_payload: 10,
            max_batch: 3,
            max_batch_bytes: 25,
        };
        let over = b"MPUB t 3\r\n10\r\naaaaaaaaaa\r\n10\r\n0123456789\r\n6\r\nabcdef\r\n";
        let (got, _) = driven(over, &small, || 3);
        assert!(
            matches!(&got[..], [Parsed::Fatal { err }] if err.code == ErrCode::TooBig),
            "{got:?}"
        );
        assert_same_as_whole(over, &small, 7);
    }

    #[test]
    fn a_refused_payload_is_never_held_whole() {
        // 4 MiB declared, fed 4 KiB at a time: the unread input never holds
        // more than one chunk (plus a line), and the connection goes on.
        let n = 4 << 20;
        let mut input = format!("PUB t {n}\r\n").into_bytes();
        input.resize(input.len() + n, b'x');
        input.extend_from_slice(b"\r\nMPUB t 2\r\n");
        for _ in 0..2 {
            input.extend_from_slice(format!("{n}\r\n").as_bytes());
            input.resize(input.len() + n, b'y');
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b"PING\r\n");
        let limits = Limits {
            max_payload: n,
            max_batch_bytes: 2 * n as u64,
            ..LIM
        };
        let (got, held) = driven(&input, &limits, || 4096);
        assert_eq!(
            got,
            vec![
                Parsed::Error {
                    err: refusal(),
                    consumed: 0
                },
                Parsed::Error {
                    err: refusal(),
                    consumed: 0
                },
                Parsed::Request {
                    req: Request::Ping,
                    consumed: 0
                },
            ]
        );
        assert!(
            held <= 4096 + 64,
            "held {held} bytes of a refused 4 MiB payload"
        );
    }

    #[test]
    fn random_input_skips_like_it_parses() {
        const FRAGMENTS: [&[u8]; 24] = [
            b"PUB ",
            b"MPUB ",
            b"DPUB ",
            b"t ",
            b"t",
            b"bad/t ",
            b"3",
            b"0",
            b"1 ",
            b"2",
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"k=v",
            b"k",
            b"=",
            b"abc",
            b"\0",
            b"10",
            b"PING",
            b"99999999999999999999",
            b"\xff",
            b"ACK",
        ];
        let limits = Limits {
            max_payload: 16,
            max_batch: 3,
            max_batch_bytes: 25,
        };
        let mut rng = Rng(0x5eed_1234_abcd_0002);
        for _ in 0..3000 {
            let input: Vec<u8> = (0..rng.below(60))
                .flat_map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())].iter().copied())
                .collect();
            let seed = rng.next();
            assert_same_as_whole(&input, &limits, seed);
        }
    }
}
