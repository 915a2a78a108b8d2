//! The client's replication commands: `PROMOTE` and `SLAVES`, and the
//! parser of a `SLAVE` line ([`SlaveInfo`]). Kept beside the rest of
//! [`Client`] so the reply format has one reader here, independent of the
//! server's encoder.

use super::{Client, Result, expect_reply, parse_count, parse_num, parse_ok_id, protocol};

/// One `SLAVE` line of `SLAVES`: a slave connected to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveInfo {
    /// The slave's address as the master sees it (host:port).
    pub addr: String,
    /// The last event id it has acknowledged durably.
    pub acked_event_id: u64,
    /// The event ids the master has after `acked_event_id` (the jump to a
    /// new epoch's id range not counted).
    pub lag_events: u64,
    /// 0 when caught up; else how old (master clock) the oldest record the
    /// slave lacks is, among those the master has durably.
    pub lag_ms: u64,
    /// `connecting`, `syncing` or `streaming`.
    pub state: String,
}

/// `SLAVE <addr> <acked_event_id> <lag_events> <lag_ms> <state>`; fields
/// after these are allowed (the protocol only adds at the end).
fn parse_slave_line(line: &str) -> Result<SlaveInfo> {
    let t = expect_reply(line, "SLAVE")?;
    let addr = t
        .first()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| protocol("missing slave address", line))?;
    let state = t
        .get(4)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| protocol("missing slave state", line))?;
    Ok(SlaveInfo {
        addr: addr.to_string(),
        acked_event_id: parse_num(t.get(1), "acked_event_id", line)?,
        lag_events: parse_num(t.get(2), "lag_events", line)?,
        lag_ms: parse_num(t.get(3), "lag_ms", line)?,
        state: state.to_string(),
    })
}

impl Client {
    /// `PROMOTE` (on a slave) → the event id where its new epoch starts.
    pub fn promote(&mut self) -> Result<u64> {
        self.send_line("PROMOTE")?;
        let line = self.read_line()?;
        parse_ok_id(&line)
    }

    /// `SLAVES` → the slaves connected to this master (none on a slave).
    pub fn slaves(&mut self) -> Result<Vec<SlaveInfo>> {
        self.send_line("SLAVES")?;
        let line = self.read_line()?;
        let n = parse_count(&line, "SLAVES")?;
        let mut out = Vec::new();
        for _ in 0..n {
            let line = self.read_line()?;
            out.push(parse_slave_line(&line)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientError;

    #[test]
    fn slave_lines() {
        let s = parse_slave_line("SLAVE 127.0.0.1:40112 17 3 250 streaming").expect("a slave");
        assert_eq!(
            s,
            SlaveInfo {
                addr: "127.0.0.1:40112".into(),
                acked_event_id: 17,
                lag_events: 3,
                lag_ms: 250,
                state: "streaming".into(),
            }
        );
        let more = parse_slave_line("SLAVE [::1]:5 1 0 0 syncing extra").expect("extra fields");
        assert_eq!(
            (more.addr.as_str(), more.state.as_str()),
            ("[::1]:5", "syncing")
        );
        for bad in [
            "SLAVE",
            "SLAVE a 1 2 3",
            "SLAVE a x 2 3 streaming",
            "SLAVE a 1 -2 3 streaming",
            "SLAVES 1",
        ] {
            assert!(
                matches!(parse_slave_line(bad), Err(ClientError::Protocol(_))),
                "{bad}"
            );
        }
        let e = parse_slave_line("ERR UNKNOWN no").expect_err("an ERR");
        assert_eq!(e.code(), Some("UNKNOWN"));
    }
}
