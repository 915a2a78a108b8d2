//! The checks a [`Client`](super::Client) runs on every argument before it
//! sends a request: the server's own rules ([`crate::protocol::rules`]),
//! applied to each argument as the token it would become on the wire. An
//! argument the server would refuse, or one that would change the request's
//! framing (a topic `inj 60000` would become CREATE's second argument), is
//! refused here with [`ClientError::BadArgument`] and nothing is sent.
//!
//! Public so a program (like `smss-cli`) can check its input before it
//! connects. Pure; runs on the caller's thread.
//!
//! Limits that are the server's configuration (`limits.maxBatch`,
//! `limits.maxPayload`, `limits.maxDelayMs`) are not known here; the server
//! checks those.

use super::{ClientError, Result, SubOptions};
use crate::protocol::ProtoError;
use crate::protocol::rules;

fn arg<T>(r: std::result::Result<T, ProtoError>) -> Result<()> {
    r.map(|_| ()).map_err(|e| ClientError::BadArgument(e.msg))
}

/// A topic name: 1–128 bytes of `A-Z a-z 0-9 . _ -`.
pub fn topic(name: &str) -> Result<()> {
    arg(rules::topic_arg(name.as_bytes()))
}

/// A consumer group name: the same rule as a topic's.
pub fn group(name: &str) -> Result<()> {
    arg(rules::name_arg(name.as_bytes(), "group"))
}

/// An AUTH token: one word of visible ASCII.
pub fn token(token: &str) -> Result<()> {
    arg(rules::word_arg(token.as_bytes(), "token"))
}

/// One header: a key of 1–64 bytes of `A-Z a-z 0-9 . _ -` (so no `=`), a
/// value of 0–1024 bytes of visible ASCII (no spaces).
pub fn header(key: &str, value: &str) -> Result<()> {
    arg(rules::header_arg(key.as_bytes(), value.as_bytes()))
}

/// The headers of one message: each valid, at most 32.
pub fn headers(headers: &[(&str, &str)]) -> Result<()> {
    let mut keyed = false;
    for (k, v) in headers {
        header(k, v)?;
        if k.as_bytes() == rules::DEDUP_HEADER {
            arg(rules::dedup_key_arg(v.as_bytes(), keyed))?;
            keyed = true;
        }
    }
    arg(rules::header_count(headers.len()))
}

/// A publish's dedup key (sent as the `msgid=` header): 1–128 bytes of
/// visible ASCII.
pub fn dedup_key(key: &str) -> Result<()> {
    arg(rules::dedup_key_arg(key.as_bytes(), false))
}

/// CREATE's lifetime: 0 (none) or at least 1000 ms.
pub fn life_ms(ms: u64) -> Result<()> {
    arg(rules::life_ms_arg(ms.to_string().as_bytes()))
}

/// DPUB's delay: at least 1 ms.
pub fn delay_ms(ms: u64) -> Result<()> {
    arg(rules::delay_ms_arg(ms.to_string().as_bytes()))
}

/// MPUB's message count: at least 1.
pub fn mpub_count(count: usize) -> Result<()> {
    arg(rules::mpub_count_arg(
        count.to_string().as_bytes(),
        usize::MAX,
    ))
}

/// SUB's start and options: `from` is `0`, an event id, `$`, or `-` (which
/// needs a group); `batch` and `ack_ms` at least 1; a valid group name;
/// `max_deliver` and `dlq` (a valid topic name) only with a group.
pub fn subscription(from: &str, opts: &SubOptions) -> Result<()> {
    let start =
        rules::sub_from_arg(from.as_bytes()).map_err(|e| ClientError::BadArgument(e.msg))?;
    if let Some(b) = opts.batch {
        arg(rules::batch_arg(b.to_string().as_bytes(), usize::MAX))?;
    }
    if let Some(a) = opts.ack_ms {
        arg(rules::ack_ms_arg(a.to_string().as_bytes()))?;
    }
    if let Some(g) = &opts.group {
        group(g)?;
    }
    if let Some(d) = &opts.dlq {
        arg(rules::name_arg(d.as_bytes(), "dlq topic"))?;
    }
    arg(rules::sub_group_rule(
        start,
        opts.group.is_some(),
        opts.max_deliver.is_some() || opts.dlq.is_some() || opts.shared,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<()>) -> String {
        match r {
            Err(ClientError::BadArgument(m)) => m,
            other => panic!("expected BadArgument, got {other:?}"),
        }
    }

    #[test]
    fn names_and_tokens() {
        assert!(topic("a.b_c-D9").is_ok());
        let m = refused(topic("inj 60000"));
        assert!(m.contains("topic name 'inj 60000'"), "{m}");
        refused(topic(""));
        refused(topic(&"n".repeat(129)));
        refused(topic("a\r\nPING"));
        refused(topic("bad name!"));
        assert!(group("g1").is_ok());
        assert!(refused(group("g 1")).contains("group name 'g 1'"));
        assert!(token("s3cr=t!").is_ok());
        assert!(refused(token("two words")).contains("token 'two words'"));
        refused(token(""));
    }

    #[test]
    fn headers_and_numbers() {
        assert!(headers(&[("k", "v"), ("e", ""), ("url", "x=y")]).is_ok());
        refused(header("k k", "v"));
        refused(header("k", "a b"));
        refused(header("k", "a\r\n"));
        assert!(refused(header("k=", "v")).contains("header key 'k='"));
        refused(header("", "v"));
        let many: Vec<(&str, &str)> = vec![("k", "v"); 33];
        assert!(refused(headers(&many)).contains("too many headers"));
        assert!(headers(&many[..32]).is_ok());
        assert!(life_ms(0).is_ok() && life_ms(1000).is_ok());
        assert!(refused(life_ms(999)).contains("life_ms"));
        assert!(delay_ms(1).is_ok());
        refused(delay_ms(0));
        assert!(mpub_count(1).is_ok());
        assert!(refused(mpub_count(0)).contains("at least 1"));
    }

    #[test]
    fn subscriptions() {
        let none = SubOptions::default();
        for from in ["0", "42", "$"] {
            assert!(subscription(from, &none).is_ok(), "{from}");
        }
        assert!(refused(subscription("-", &none)).contains("needs group"));
        let g = SubOptions {
            group: Some("g".into()),
            ..SubOptions::default()
        };
        assert!(subscription("-", &g).is_ok());
        let md = SubOptions {
            max_deliver: Some(3),
            ..SubOptions::default()
        };
        assert!(refused(subscription("0", &md)).contains("need group"));
        let bad_dlq = SubOptions {
            dlq: Some("a b".into()),
            ..g.clone()
        };
        assert!(refused(subscription("0", &bad_dlq)).contains("dlq topic name"));
        let ok = SubOptions {
            max_deliver: Some(3),
            dlq: Some("dead".into()),
            ..g.clone()
        };
        assert!(subscription("-", &ok).is_ok());
        refused(subscription("x", &none));
        refused(subscription("1 2", &none));
        let b0 = SubOptions {
            batch: Some(0),
            ..SubOptions::default()
        };
        assert!(refused(subscription("0", &b0)).contains("batch must be at least 1"));
        let a0 = SubOptions {
            ack_ms: Some(0),
            ..SubOptions::default()
        };
        refused(subscription("0", &a0));
    }
}
