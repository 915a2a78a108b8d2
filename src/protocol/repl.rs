//! The frames of a replication stream, after `REPL`: the master's answer,
//! its `RECS`, `SYNCED`, `LEASE`, `HB` and `DUR` frames, and the slave's
//! `ACK`.
//! A pure codec like the rest of this module (no sockets, no clocks): the
//! sender (`repl-<peer>` thread) encodes what the receiver
//! (`repl-receiver` thread) parses, and the other way round for `ACK`.
//! The exchange is documented in README (Replication, The REPL exchange).
//!
//! `RECS` has two forms. The short one, `RECS <count> <n>`, is what slaves
//! that do not name themselves in `REPL` (no `node=`: an older slave) get,
//! because they take the last token of a batched frame's line as its byte
//! count. A slave that sends `node=` gets the long form, which carries
//! where the master stands ([`MasterPos`]) so the slave can tell its lag
//! under load, not only from heartbeats.

const CRLF: &[u8] = b"\r\n";

/// Where the master stood when it sent a frame: what a slave needs to
/// know how far behind it is (see `stats::Lag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MasterPos {
    /// The master's last event id.
    pub last_id: u64,
    /// The master's clock (Unix ms) when it sent the frame.
    pub now_ms: u64,
    /// Timestamp (master clock) of the first record after this frame's
    /// last one, when the master already had it durably; 0 when not (the
    /// slave then lacks no record the master could have sent).
    pub next_ts_ms: u64,
}

/// A frame the master sends after the `OK` to `REPL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `RECS <count> <n> [<last_id> <now_ms> <next_ts_ms>]`: `n` bytes of
    /// `count` whole log records follow, then `\r\n`.
    Recs {
        count: u64,
        len: usize,
        at: Option<MasterPos>,
    },
    /// `SYNCED <after_id>`: the state of a full resync is complete.
    Synced { after_id: u64 },
    /// `LEASE <id>`: the master's id lease grew.
    Lease { lease: u64 },
    /// `HB <last_event_id> <now_ms>`: a heartbeat; the master has sent
    /// every record it has durably.
    Hb { last_id: u64, now_ms: u64 },
    /// `DUR <event_id>`: the master's log is durable up to this id. Sent
    /// only on an early stream (the `early` answer), whose `RECS` may run
    /// ahead of it; the slave shows its readers nothing above it.
    Dur { id: u64 },
}

/// How the master serves a slave: the last word of its `OK` to `REPL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `stream`: the records after the slave's id follow.
    Stream,
    /// `full`: the state, `SYNCED`, then the records.
    Full,
    /// `diverged <keep_id>`: the slave holds records after `keep_id` that
    /// this history never had; the master closes the connection.
    Diverged { keep_id: u64 },
}

/// The master's `OK <history> <epoch> <answer> [early]` to `REPL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplOk {
    pub history: u64,
    pub epoch: u64,
    pub answer: Answer,
    /// `early` (only to a slave that asked with `early=1`, and never with
    /// `diverged`): `RECS` may carry records the master has not made
    /// durable yet; `DUR` frames say how far it has.
    pub early: bool,
}

use super::encode::push_u64;

/// `RECS` + the bytes of `count` whole log records, in the long form when
/// `at` is given.
pub fn encode_recs(out: &mut Vec<u8>, count: usize, records: &[u8], at: Option<&MasterPos>) {
    out.extend_from_slice(b"RECS ");
    push_u64(out, count as u64);
    out.push(b' ');
    push_u64(out, records.len() as u64);
    if let Some(p) = at {
        for v in [p.last_id, p.now_ms, p.next_ts_ms] {
            out.push(b' ');
            push_u64(out, v);
        }
    }
    out.extend_from_slice(CRLF);
    out.extend_from_slice(records);
    out.extend_from_slice(CRLF);
}

/// Any frame but `RECS` (whose payload the caller has at hand).
pub fn encode_frame(out: &mut Vec<u8>, frame: &Frame) {
    let line = match *frame {
        Frame::Recs { count, len, at } => {
            // The line alone, for tests; `encode_recs` adds the payload.
            let mut s = format!("RECS {count} {len}");
            if let Some(p) = at {
                s.push_str(&format!(" {} {} {}", p.last_id, p.now_ms, p.next_ts_ms));
            }
            s
        }
        Frame::Synced { after_id } => format!("SYNCED {after_id}"),
        Frame::Lease { lease } => format!("LEASE {lease}"),
        Frame::Hb { last_id, now_ms } => format!("HB {last_id} {now_ms}"),
        Frame::Dur { id } => format!("DUR {id}"),
    };
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(CRLF);
}

/// `OK <history, 16 hex> <epoch> stream|full|diverged <keep_id>`, then
/// ` early` on an early stream.
pub fn encode_repl_ok(out: &mut Vec<u8>, ok: &ReplOk) {
    let early = if ok.early { " early" } else { "" };
    let answer = match ok.answer {
        Answer::Stream => format!("stream{early}"),
        Answer::Full => format!("full{early}"),
        Answer::Diverged { keep_id } => format!("diverged {keep_id}"),
    };
    let line = format!("OK {:016x} {} {answer}", ok.history, ok.epoch);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(CRLF);
}

fn num(tok: Option<&str>, what: &str, line: &str) -> Result<u64, String> {
    tok.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("bad {what} in {line:?}"))
}

/// Parses one frame line (without its line end). `max_len` bounds a
/// `RECS` byte count, checked before the caller allocates for it.
pub fn parse_frame(line: &str, max_len: usize) -> Result<Frame, String> {
    let t: Vec<&str> = line.split(' ').collect();
    let get = |i: usize| t.get(i).copied();
    let frame = match (t[0], t.len()) {
        ("RECS", 3 | 6) => {
            let len = num(get(2), "byte count", line)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&n| n <= max_len)
                .ok_or_else(|| format!("RECS of {len} bytes is over {max_len}: {line:?}"))?;
            let at = if t.len() == 6 {
                Some(MasterPos {
                    last_id: num(get(3), "master event id", line)?,
                    now_ms: num(get(4), "master time", line)?,
                    next_ts_ms: num(get(5), "next record time", line)?,
                })
            } else {
                None
            };
            Frame::Recs {
                count: num(get(1), "record count", line)?,
                len,
                at,
            }
        }
        ("SYNCED", 2) => Frame::Synced {
            after_id: num(get(1), "event id", line)?,
        },
        ("LEASE", 2) => Frame::Lease {
            lease: num(get(1), "lease", line)?,
        },
        ("HB", 3) => Frame::Hb {
            last_id: num(get(1), "master event id", line)?,
            now_ms: num(get(2), "master time", line)?,
        },
        ("DUR", 2) => Frame::Dur {
            id: num(get(1), "durable event id", line)?,
        },
        _ => return Err(format!("unexpected line from the master: {line:?}")),
    };
    Ok(frame)
}

/// Parses the master's answer to `REPL`; `Err` holds the refusal or why
/// the answer is not understood.
pub fn parse_repl_ok(line: &str) -> Result<ReplOk, String> {
    let t: Vec<&str> = line.split(' ').collect();
    if t[0] != "OK" {
        return Err(format!("REPL refused: {line}"));
    }
    let bad = || format!("bad REPL answer {line:?}");
    let history = t
        .get(1)
        .filter(|h| !h.is_empty() && h.len() <= 16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(bad)?;
    let epoch = num(t.get(2).copied(), "epoch", line)?;
    let early = t.len() == 5 && t[4] == "early";
    let answer = match (t.get(3).copied(), t.len()) {
        (Some("stream"), 4) => Answer::Stream,
        (Some("full"), 4) => Answer::Full,
        (Some("stream"), 5) if early => Answer::Stream,
        (Some("full"), 5) if early => Answer::Full,
        (Some("diverged"), 5) => Answer::Diverged {
            keep_id: num(t.get(4).copied(), "event id", line)?,
        },
        _ => return Err(bad()),
    };
    Ok(ReplOk {
        history,
        epoch,
        answer,
        early,
    })
}

/// `ACK <event_id>`: the slave has every record up to the id durably.
pub fn encode_ack(out: &mut Vec<u8>, id: u64) {
    out.extend_from_slice(b"ACK ");
    push_u64(out, id);
    out.extend_from_slice(CRLF);
}

/// Parses a slave's line (its end already trimmed): `Some(id)` for a
/// well-formed `ACK`.
pub fn parse_ack(line: &str) -> Option<u64> {
    let id = line.strip_prefix("ACK ")?;
    num(Some(id), "event id", line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn recs_in_both_forms() {
        let at = MasterPos {
            last_id: 90,
            now_ms: 1_700_000_000_500,
            next_ts_ms: 1_700_000_000_000,
        };
        assert_eq!(
            text(|o| encode_recs(o, 2, b"abc", None)),
            "RECS 2 3\r\nabc\r\n"
        );
        assert_eq!(
            text(|o| encode_recs(o, 2, b"abc", Some(&at))),
            "RECS 2 3 90 1700000000500 1700000000000\r\nabc\r\n"
        );
        assert_eq!(
            parse_frame("RECS 2 3", 10),
            Ok(Frame::Recs {
                count: 2,
                len: 3,
                at: None
            })
        );
        let long = parse_frame("RECS 2 3 90 1700000000500 1700000000000", 10);
        assert_eq!(
            long,
            Ok(Frame::Recs {
                count: 2,
                len: 3,
                at: Some(at)
            })
        );
        // What a frame encodes, a frame parses to.
        for f in [
            Frame::Recs {
                count: 1,
                len: 0,
                at: Some(MasterPos::default()),
            },
            Frame::Synced { after_id: 7 },
            Frame::Lease { lease: 1 << 20 },
            Frame::Hb {
                last_id: u64::MAX,
                now_ms: 5,
            },
            Frame::Dur { id: 42 },
        ] {
            let line = text(|o| encode_frame(o, &f));
            assert_eq!(parse_frame(line.trim_end(), 10), Ok(f), "{line}");
        }
    }

    #[test]
    fn bad_frames_are_refused_with_the_line() {
        for line in [
            "",
            "RECS",
            "RECS 1",
            "RECS 1 2 3",
            "RECS 1 2 3 4",
            "RECS 1 2 3 4 5 6",
            "RECS x 2",
            "RECS 1 -2",
            "RECS 1 +2",
            "RECS 1 2 3 x 5",
            "SYNCED",
            "SYNCED 1 2",
            "LEASE ",
            "HB 1",
            "HB 1 2 3",
            "DUR",
            "DUR x",
            "DUR 1 2",
            "recs 1 2",
            "PING",
        ] {
            assert!(parse_frame(line, 100).is_err(), "{line:?}");
        }
        let e = parse_frame("RECS 1 101", 100).expect_err("too long");
        assert!(e.contains("over 100"), "{e}");
        assert!(parse_frame("RECS 1 99999999999999999999999", 100).is_err());
    }

    #[test]
    fn repl_answers() {
        for (answer, early) in [
            (Answer::Stream, false),
            (Answer::Full, false),
            (Answer::Diverged { keep_id: 12 }, false),
            (Answer::Stream, true),
            (Answer::Full, true),
        ] {
            let ok = ReplOk {
                history: 0xabc,
                epoch: 3,
                answer,
                early,
            };
            let line = text(|o| encode_repl_ok(o, &ok));
            assert!(line.starts_with("OK 0000000000000abc 3 "), "{line}");
            assert_eq!(line.contains(" early"), early, "{line}");
            assert_eq!(parse_repl_ok(line.trim_end()), Ok(ok));
        }
        let refused = parse_repl_ok("ERR BADREQ another history").expect_err("refused");
        assert_eq!(refused, "REPL refused: ERR BADREQ another history");
        for bad in [
            "OK",
            "OK zz 1 stream",
            "OK 1 x stream",
            "OK 1 1",
            "OK 1 1 streaming",
            "OK 1 1 stream 5",
            "OK 1 1 diverged",
            "OK 1 1 diverged x",
            "OK 1 1 diverged early",
            "OK 1 1 stream late",
            "OK 1 1 stream early 1",
            "OK 12345678901234567 1 full",
        ] {
            assert!(parse_repl_ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn acks() {
        assert_eq!(text(|o| encode_ack(o, 42)), "ACK 42\r\n");
        assert_eq!(parse_ack("ACK 42"), Some(42));
        for bad in [
            "ACK", "ACK ", "ACK x", "ACK 1 2", "ack 1", "NACK 1", "ACK -1",
        ] {
            assert_eq!(parse_ack(bad), None, "{bad}");
        }
    }
}
