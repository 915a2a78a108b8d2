//! `--json`: what `stats`, `list`, `info`, `groups` and `slaves` print, as
//! one JSON document on one line, for scripts (`jq`) instead of `awk`.
//!
//! Written by hand (the shapes are flat); strings are escaped as JSON
//! requires, numbers stay numbers.

use smss::client::{GroupInfo, SlaveInfo, TopicInfo};

/// A JSON value of the flat shapes printed here.
pub enum Val<'a> {
    Num(u64),
    Str(&'a str),
    Bool(bool),
}

/// `"…"` with JSON's escapes (the library's quoting, also the NATS
/// client's).
fn string(s: &str, out: &mut String) {
    out.push_str(&smss::nats::json::quote(s));
}

/// One object from its fields, in order.
pub fn object(fields: &[(&str, Val<'_>)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(k, &mut out);
        out.push(':');
        match v {
            Val::Num(n) => out.push_str(&n.to_string()),
            Val::Str(s) => string(s, &mut out),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push('}');
    out
}

fn array(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

/// STATS: numbers as numbers, the rest (role, master, repl_state) as
/// strings; `history` is hex, a string even when its digits are all 0-9.
pub fn stats(pairs: &[(String, String)]) -> String {
    let fields: Vec<(&str, Val<'_>)> = pairs
        .iter()
        .map(|(k, v)| {
            let val = if k == "history" {
                Val::Str(v.as_str())
            } else {
                v.parse().map_or(Val::Str(v.as_str()), Val::Num)
            };
            (k.as_str(), val)
        })
        .collect();
    object(&fields)
}

pub fn topic(t: &TopicInfo) -> String {
    object(&[
        ("name", Val::Str(&t.name)),
        ("created_ms", Val::Num(t.created_ms)),
        ("expires_ms", Val::Num(t.expires_ms)),
        ("messages", Val::Num(t.messages)),
        ("first_id", Val::Num(t.first_id)),
        ("last_id", Val::Num(t.last_id)),
    ])
}

pub fn topics(ts: &[TopicInfo]) -> String {
    array(ts.iter().map(topic))
}

pub fn groups(gs: &[GroupInfo]) -> String {
    array(gs.iter().map(|g| {
        let mut fields = vec![
            ("name", Val::Str(&g.name)),
            ("committed_id", Val::Num(g.committed_id)),
            ("active", Val::Bool(g.active)),
            ("standbys", Val::Num(g.standby_count)),
            ("lag", Val::Num(g.lag)),
        ];
        // A shared group with members also says so, with its members and
        // the messages they hold unacknowledged.
        if let Some((members, pending)) = g.shared {
            fields.push(("mode", Val::Str("shared")));
            fields.push(("members", Val::Num(members)));
            fields.push(("pending", Val::Num(pending)));
        }
        object(&fields)
    }))
}

pub fn slaves(ss: &[SlaveInfo]) -> String {
    array(ss.iter().map(|s| {
        object(&[
            ("addr", Val::Str(&s.addr)),
            ("acked_event_id", Val::Num(s.acked_event_id)),
            ("lag_events", Val::Num(s.lag_events)),
            ("lag_ms", Val::Num(s.lag_ms)),
            ("state", Val::Str(&s.state)),
        ])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_objects_with_escapes_and_numbers() {
        let pairs = vec![
            ("role".to_string(), "master".to_string()),
            ("last_event_id".to_string(), "42".to_string()),
        ];
        assert_eq!(stats(&pairs), r#"{"role":"master","last_event_id":42}"#);
        let hex = vec![("history".to_string(), "0000000000001234".to_string())];
        assert_eq!(stats(&hex), r#"{"history":"0000000000001234"}"#);
        assert_eq!(
            object(&[("a\"b", Val::Str("x\ny\u{1}")), ("t", Val::Bool(true))]),
            r#"{"a\"b":"x\ny\u0001","t":true}"#
        );
        assert_eq!(topics(&[]), "[]");
    }
}
