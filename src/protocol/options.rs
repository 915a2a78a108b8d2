//! The `key=value` options of SUB and REPL: each known key once, names
//! case-insensitive for SUB; what each value must look like is
//! [`super::rules`]'.
//!
//! Pure: runs on whichever thread calls it (the connection threads), touches
//! no socket, channel, lock or clock. The parser ([`super::parse`]) checks a
//! command's arity and hands over the tokens after the required arguments.

use super::rules::{
    ack_ms_arg, bad, batch_arg, max_deliver_arg, name_arg, number, quote, sub_from_arg,
    sub_group_rule, topic_arg,
};
use super::{GroupMode, Limits, ProtoError, ReplArgs, SubArgs};

/// Splits a token at its first `=`.
pub(super) fn split_eq(tok: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = tok.iter().position(|&b| b == b'=')?;
    Some((tok.get(..at)?, tok.get(at + 1..)?))
}

/// `SUB <topic> <after> [batch=<n>] [ack=<ms>] [group=<name>]
/// [maxDeliver=<n>] [dlq=<topic>] [mode=exclusive|shared]`, given its two required tokens and the
/// rest.
pub(super) fn parse_sub<'a>(
    topic: &[u8],
    after: &[u8],
    options: impl Iterator<Item = &'a [u8]>,
    limits: &Limits,
) -> Result<SubArgs, ProtoError> {
    let mut sub = SubArgs {
        topic: topic_arg(topic)?,
        from: sub_from_arg(after)?,
        batch: None,
        ack_ms: None,
        group: None,
        max_deliver: None,
        dlq: None,
        mode: None,
    };
    for opt in options {
        let Some((key, value)) = split_eq(opt) else {
            return Err(bad(format!("SUB option '{}' is not key=value", quote(opt))));
        };
        let duplicate = || bad(format!("SUB option '{}' given twice", quote(key)));
        if key.eq_ignore_ascii_case(b"batch") {
            if sub.batch.is_some() {
                return Err(duplicate());
            }
            sub.batch = Some(batch_arg(value, limits.max_batch)?);
        } else if key.eq_ignore_ascii_case(b"ack") {
            if sub.ack_ms.is_some() {
                return Err(duplicate());
            }
            sub.ack_ms = Some(ack_ms_arg(value)?);
        } else if key.eq_ignore_ascii_case(b"group") {
            if sub.group.is_some() {
                return Err(duplicate());
            }
            sub.group = Some(name_arg(value, "group")?);
        } else if key.eq_ignore_ascii_case(b"maxdeliver") {
            if sub.max_deliver.is_some() {
                return Err(duplicate());
            }
            sub.max_deliver = Some(max_deliver_arg(value)?);
        } else if key.eq_ignore_ascii_case(b"dlq") {
            if sub.dlq.is_some() {
                return Err(duplicate());
            }
            sub.dlq = Some(name_arg(value, "dlq topic")?);
        } else if key.eq_ignore_ascii_case(b"mode") {
            if sub.mode.is_some() {
                return Err(duplicate());
            }
            sub.mode = Some(mode_arg(value)?);
        } else {
            return Err(bad(format!(
                "unknown SUB option '{}' (batch, ack, group, maxDeliver, dlq, mode)",
                quote(key)
            )));
        }
    }
    sub_group_rule(
        sub.from,
        sub.group.is_some(),
        sub.max_deliver.is_some() || sub.dlq.is_some() || sub.mode.is_some(),
    )?;
    if sub.dlq.as_deref() == Some(sub.topic.as_str()) {
        return Err(bad(
            "SUB dlq= must name another topic than the one subscribed",
        ));
    }
    Ok(sub)
}

/// `mode=exclusive|shared`, case-insensitive like the option names.
fn mode_arg(value: &[u8]) -> Result<GroupMode, ProtoError> {
    if value.eq_ignore_ascii_case(b"exclusive") {
        Ok(GroupMode::Exclusive)
    } else if value.eq_ignore_ascii_case(b"shared") {
        Ok(GroupMode::Shared)
    } else {
        Err(bad(format!(
            "invalid SUB mode '{}': expected exclusive or shared",
            quote(value)
        )))
    }
}

/// `REPL <after> [history=<hex>] [epoch=<n>] [empty=0|1] [node=<hex>]
/// [format=<n>] [early=0|1]`,
/// given its required token and the rest.
pub(super) fn parse_repl<'a>(
    after: &[u8],
    options: impl Iterator<Item = &'a [u8]>,
) -> Result<ReplArgs, ProtoError> {
    let mut r = ReplArgs {
        after: number(after, "event id")?,
        ..ReplArgs::default()
    };
    for opt in options {
        let Some((key, value)) = split_eq(opt) else {
            return Err(bad(format!(
                "REPL option '{}' is not key=value",
                quote(opt)
            )));
        };
        match key {
            b"history" => r.history = hex(value, "history")?,
            b"node" => r.node = hex(value, "node")?,
            b"epoch" => r.epoch = number(value, "REPL epoch")?,
            b"format" => {
                r.format = u32::try_from(number(value, "REPL format")?)
                    .map_err(|_| bad(format!("invalid REPL format '{}'", quote(value))))?
            }
            b"empty" => r.empty = flag(value, "empty")?,
            b"early" => r.early = flag(value, "early")?,
            _ => {
                return Err(bad(format!(
                    "unknown REPL option '{}' (history, epoch, empty, node, format, early)",
                    quote(key)
                )));
            }
        }
    }
    Ok(r)
}

/// `0` or `1`, as REPL's `empty=` and `early=` take them.
fn flag(value: &[u8], what: &str) -> Result<bool, ProtoError> {
    match value {
        b"0" => Ok(false),
        b"1" => Ok(true),
        _ => Err(bad(format!("invalid REPL {what} '{}'", quote(value)))),
    }
}

/// 1–16 hex digits, as REPL's `history=` and `node=` take them.
fn hex(value: &[u8], what: &str) -> Result<u64, ProtoError> {
    std::str::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 16)
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| bad(format!("invalid REPL {what} '{}'", quote(value))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrCode, SubFrom};

    const LIM: Limits = Limits {
        max_payload: 1 << 20,
        max_batch: 100,
        max_batch_bytes: 1 << 30,
    };

    fn sub(line: &str) -> Result<SubArgs, ProtoError> {
        let mut toks = line.split(' ').map(str::as_bytes);
        let topic = toks.next().unwrap_or_default();
        let after = toks.next().unwrap_or_default();
        parse_sub(topic, after, toks, &LIM)
    }

    fn refused(line: &str) -> String {
        match sub(line) {
            Err(e) => {
                assert_eq!(e.code, ErrCode::BadReq, "{line}");
                e.msg
            }
            Ok(s) => panic!("{line:?} parsed as {s:?}"),
        }
    }

    #[test]
    fn group_options_parse_with_any_case() -> Result<(), ProtoError> {
        let s = sub("t - group=g MAXDELIVER=3 Dlq=dead batch=7")?;
        assert_eq!(s.from, SubFrom::Committed);
        assert_eq!(s.group.as_deref(), Some("g"));
        assert_eq!(s.max_deliver, Some(3));
        assert_eq!(s.dlq.as_deref(), Some("dead"));
        assert_eq!(s.batch, Some(7));
        assert_eq!(s.mode, None);
        let s = sub("t - group=g mode=SHARED")?;
        assert_eq!(s.mode, Some(GroupMode::Shared));
        let s = sub("t - group=g Mode=exclusive")?;
        assert_eq!(s.mode, Some(GroupMode::Exclusive));
        let s = sub("t 5 group=g maxDeliver=0")?;
        assert_eq!(
            (s.from, s.max_deliver, s.dlq),
            (SubFrom::After(5), Some(0), None)
        );
        let s = sub("t $")?;
        assert_eq!((s.group, s.max_deliver, s.dlq), (None, None, None));
        Ok(())
    }

    #[test]
    fn group_options_are_checked() {
        assert!(refused("t 0 maxDeliver=3").contains("need group="));
        assert!(refused("t 0 dlq=d").contains("need group="));
        assert!(refused("t - batch=2").contains("needs group="));
        assert!(refused("t 0 group=g maxDeliver=x").contains("maxDeliver"));
        assert!(refused("t 0 group=g maxDeliver=-1").contains("maxDeliver"));
        assert!(refused("t 0 group=g maxDeliver=4294967296").contains("maxDeliver"));
        assert!(refused("t 0 group=g dlq=a/b").contains("dlq topic name"));
        assert!(refused("t 0 group=g dlq=").contains("dlq topic name"));
        assert!(refused("t 0 group=g dlq=t").contains("another topic"));
        assert!(refused("t 0 group=g maxDeliver=1 maxdeliver=2").contains("twice"));
        assert!(refused("t 0 group=g dlq=a DLQ=b").contains("twice"));
        assert!(refused("t 0 mode=shared").contains("need group="));
        assert!(refused("t - group=g mode=fair").contains("exclusive or shared"));
        assert!(refused("t - group=g mode=shared MODE=shared").contains("twice"));
        assert!(refused("t 0 group=g lease=5").contains("maxDeliver, dlq"));
        assert!(refused("t 0 group=g/x").contains("group name"));
    }

    #[test]
    fn repl_options() -> Result<(), ProtoError> {
        let r = parse_repl(
            b"7",
            [&b"history=ff"[..], b"epoch=2", b"empty=1"].into_iter(),
        )?;
        assert_eq!(
            r,
            ReplArgs {
                after: 7,
                history: 255,
                epoch: 2,
                empty: true,
                node: 0,
                format: 0,
                early: false,
            }
        );
        let r = parse_repl(b"7", [&b"node=00c0ffee"[..], b"empty=0"].into_iter())?;
        assert_eq!((r.node, r.empty), (0xc0ffee, false));
        assert!(parse_repl(b"1", [&b"node="[..]].into_iter()).is_err());
        assert!(parse_repl(b"1", [&b"node=12345678901234567"[..]].into_iter()).is_err());
        assert!(parse_repl(b"1", [&b"node=g"[..]].into_iter()).is_err());
        assert!(parse_repl(b"x", std::iter::empty()).is_err());
        let r = parse_repl(b"7", [&b"format=3"[..]].into_iter())?;
        assert_eq!(r.format, 3);
        assert!(parse_repl(b"1", [&b"format=4294967296"[..]].into_iter()).is_err());
        assert!(parse_repl(b"1", [&b"format=x"[..]].into_iter()).is_err());
        assert!(parse_repl(b"1", [&b"history=xyz"[..]].into_iter()).is_err());
        assert!(parse_repl(b"1", [&b"empty=2"[..]].into_iter()).is_err());
        assert!(parse_repl(b"1", [&b"early=1"[..]].into_iter())?.early);
        assert!(!parse_repl(b"1", [&b"early=0"[..]].into_iter())?.early);
        assert!(!parse_repl(b"1", std::iter::empty())?.early);
        assert!(parse_repl(b"1", [&b"early=yes"[..]].into_iter()).is_err());
        assert!(parse_repl(b"1", [&b"Epoch=2"[..]].into_iter()).is_err());
        Ok(())
    }
}
