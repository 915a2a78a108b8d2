//! Fencing by epoch: which role this server takes at start, and the look
//! at the other server of the pair that a master takes once a second while
//! running (on its `repl-receiver` thread, which idles on a master).
//!
//! A server knows its peer (`replication.peer`, or a slave's `--master`).
//! The server of the lower epoch never serves writes once it has seen a
//! master of a higher one: it stops taking writes at once (the role cell
//! turns to slave), records that in its role claim (`data/role`, through
//! the writer), and its `repl-receiver` follows the peer — the master plans
//! a divergence, so what this server wrote that the peer never had is moved
//! aside, then it copies the peer. The claim wins over `--role` at the next
//! start (see [`decide_role`]), so no unit file has to be edited after a
//! failover.
//!
//! The [`Watch`] asks the peer `ROLE` every [`PROBE_EVERY`] over a short
//! connection of its own (AUTH first when `auth.token` is set); it reads
//! the broker's published role, epoch and history and writes nothing but
//! through the writer.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::broker::Broker;
use crate::protocol::MAX_LINE_BYTES;
use crate::replication::dial::Dialer;
use crate::role::Role;
use crate::storage::ops::{WriteOk, WriteOp};
use crate::storage::role::RoleClaim;
use crate::writer_handle::CallError;

/// How often a master asks its peer.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A peer that does not answer within this is taken as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the writer may take to write a claim.
const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// What a peer said to `ROLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView {
    pub role: Role,
    pub epoch: u64,
    pub history: u64,
    pub last_id: u64,
}

/// The role to start in, and a line to log when the claim overrides the
/// command line.
pub fn decide_role(cli: Role, claim: Option<RoleClaim>, demote: bool) -> (Role, Option<String>) {
    let Some(claim) = claim else {
        return (cli, None);
    };
    match (claim.role, cli) {
        (Role::Master, Role::Slave) if demote => (
            Role::Slave,
            Some(format!(
                "--demote: this server, the master of epoch {} (data/role), becomes a slave",
                claim.epoch
            )),
        ),
        (Role::Master, Role::Slave) => (
            Role::Master,
            Some(format!(
                "this server was promoted to master of epoch {} (data/role says so): it stays \
                 the master although started with --role slave. To make it a slave on \
                 purpose, start it once with --role slave --master HOST:PORT --demote",
                claim.epoch
            )),
        ),
        (Role::Slave, Role::Master) => (
            Role::Slave,
            Some(format!(
                "this server stepped down for a master of epoch {} (data/role says so): it \
                 stays a slave of its peer although started with --role master. To make it \
                 the master on purpose, PROMOTE it (smss-cli promote)",
                claim.epoch
            )),
        ),
        (role, _) => (role, None),
    }
}

/// Asks `peer` for its role. `Err` says why there is no answer.
pub fn probe(dialer: &Dialer, peer: &str, token: &str) -> Result<PeerView, String> {
    let (io, _) = dialer.connect(peer, PROBE_TIMEOUT, PROBE_TIMEOUT)?;
    let mut w = io
        .try_clone()
        .map_err(|e| format!("setting up the socket to {peer}: {e}"))?;
    let mut r = BufReader::new(io);
    let mut ask = String::new();
    if !token.is_empty() {
        ask.push_str(&format!("AUTH {token}\r\n"));
    }
    ask.push_str("ROLE\r\nQUIT\r\n");
    w.write_all(ask.as_bytes())
        .and_then(|_| w.flush())
        .map_err(|e| format!("writing to {peer}: {e}"))?;
    let mut line = || -> Result<String, String> {
        let mut buf = Vec::new();
        (&mut r)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("reading from {peer}: {e}"))?;
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    };
    if !token.is_empty() {
        let ok = line()?;
        if ok != "OK" {
            return Err(format!("{peer} refused AUTH: {ok}"));
        }
    }
    let answer = line()?;
    parse_role(&answer).ok_or_else(|| format!("{peer} answered ROLE with {answer:?}"))
}

/// `ROLE <master|slave> <epoch> <history hex> <last_event_id>`.
pub fn parse_role(line: &str) -> Option<PeerView> {
    let f: Vec<&str> = line.split(' ').collect();
    let ["ROLE", role, epoch, history, last_id] = f.as_slice() else {
        return None;
    };
    let role = match *role {
        "master" => Role::Master,
        "slave" => Role::Slave,
        _ => return None,
    };
    Some(PeerView {
        role,
        epoch: epoch.parse().ok()?,
        history: u64::from_str_radix(history, 16).ok()?,
        last_id: last_id.parse().ok()?,
    })
}

/// What a master does about what its peer said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do: the peer is a slave, or of a lower epoch.
    Keep,
    /// The peer is the master of a higher epoch of this history.
    StepDown { epoch: u64 },
    /// Both are masters of one epoch of one history: ids may collide.
    Conflict,
    /// The peer's data is another history: not this pair's business.
    Foreign,
}

/// The fencing rule, for a master of `epoch` in `history`.
pub fn judge(epoch: u64, history: u64, peer: &PeerView) -> Verdict {
    if peer.role != Role::Master {
        return Verdict::Keep;
    }
    // A master with no history yet has no records a peer could conflict with.
    if history != 0 && peer.history != history {
        return Verdict::Foreign;
    }
    match peer.epoch.cmp(&epoch) {
        std::cmp::Ordering::Greater => Verdict::StepDown { epoch: peer.epoch },
        std::cmp::Ordering::Equal => Verdict::Conflict,
        std::cmp::Ordering::Less => Verdict::Keep,
    }
}

/// Writes the role claim through the writer.
pub fn claim(broker: &Broker, role: Role, epoch: u64) -> Result<(), String> {
    let op = WriteOp::ClaimRole(RoleClaim { role, epoch });
    match broker.writer.call_within(op, CLAIM_WAIT) {
        Ok(WriteOk::Done) => Ok(()),
        Ok(_) => Ok(()),
        Err(CallError::Write(e)) => Err(e.to_string()),
        Err(_) => Err("the writer did not answer".into()),
    }
}

/// Stops taking writes at once and records it; the receiver then follows
/// the peer.
fn step_down(broker: &Broker, peer: &str, epoch: u64) {
    warn!(
        "{peer} is the master of epoch {epoch}, this server of epoch {}: this server stops \
         taking writes and follows {peer}; records it has that {peer} never had are moved to \
         data/diverged/",
        broker.repl.epoch()
    );
    broker.set_role(Role::Slave);
    if let Err(e) = claim(broker, Role::Slave, epoch) {
        error!(
            "could not record the step-down in data/role ({e}): a restart with --role master \
             would serve writes until it sees {peer} again"
        );
    }
}

/// One look at the peer: steps down when the rule says so. Returns the
/// verdict (also `Keep` when the peer does not answer or this is a slave).
pub fn check_once(broker: &Broker, dialer: &Dialer, peer: &str) -> Verdict {
    if broker.role() != Role::Master {
        return Verdict::Keep;
    }
    let view = match probe(dialer, peer, &broker.config.auth.token) {
        Ok(v) => v,
        Err(_) => return Verdict::Keep,
    };
    let verdict = judge(broker.repl.epoch(), broker.repl.history(), &view);
    if let Verdict::StepDown { epoch } = verdict {
        step_down(broker, peer, epoch);
    }
    verdict
}

/// The look at the peer that the `repl-receiver` thread takes while this
/// server is a master (that thread idles then): once every
/// [`PROBE_EVERY`], stepping down when the rule says so; each lasting
/// verdict is logged once, when it begins.
pub struct Watch {
    peer: String,
    dialer: Arc<Dialer>,
    said: Option<Verdict>,
    next: Instant,
}

impl Watch {
    pub fn new(peer: String, dialer: Arc<Dialer>) -> Watch {
        Watch {
            peer,
            dialer,
            said: None,
            next: Instant::now() + PROBE_EVERY,
        }
    }

    /// One look when one is due; returns at once otherwise.
    pub fn tick(&mut self, broker: &Broker) {
        if Instant::now() < self.next {
            return;
        }
        let verdict = check_once(broker, &self.dialer, &self.peer);
        self.next = Instant::now() + PROBE_EVERY;
        if self.said == Some(verdict) {
            return;
        }
        let peer = &self.peer;
        match verdict {
            Verdict::Conflict => error!(
                "{peer} is a master of epoch {} too: both may assign the same ids; PROMOTE one \
                 of them to fence the other",
                broker.repl.epoch()
            ),
            Verdict::Foreign => warn!(
                "{peer} holds data of another history: it is not this server's pair; not \
                 comparing epochs with it"
            ),
            Verdict::Keep if matches!(self.said, Some(Verdict::Conflict | Verdict::Foreign)) => {
                info!("{peer}: no conflict of roles now")
            }
            Verdict::StepDown { .. } | Verdict::Keep => {}
        }
        self.said = Some(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_of(role: Role, epoch: u64) -> Option<RoleClaim> {
        Some(RoleClaim { role, epoch })
    }

    #[test]
    fn the_claim_wins_over_the_command_line_except_for_demote() {
        assert_eq!(decide_role(Role::Slave, None, false), (Role::Slave, None));
        assert_eq!(decide_role(Role::Master, None, false), (Role::Master, None));
        let (r, why) = decide_role(Role::Slave, claim_of(Role::Master, 2), false);
        assert_eq!(r, Role::Master);
        assert!(why.is_some_and(|w| w.contains("--demote") && w.contains("epoch 2")));
        let (r, why) = decide_role(Role::Master, claim_of(Role::Slave, 3), false);
        assert_eq!(r, Role::Slave);
        assert!(why.is_some_and(|w| w.contains("PROMOTE")));
        let (r, why) = decide_role(Role::Slave, claim_of(Role::Master, 2), true);
        assert_eq!(r, Role::Slave);
        assert!(why.is_some());
        assert_eq!(
            decide_role(Role::Master, claim_of(Role::Master, 1), false),
            (Role::Master, None)
        );
    }

    #[test]
    fn role_lines_parse_and_bad_ones_do_not() {
        assert_eq!(
            parse_role("ROLE master 2 00000000000000ff 99"),
            Some(PeerView {
                role: Role::Master,
                epoch: 2,
                history: 255,
                last_id: 99
            })
        );
        for bad in [
            "",
            "ROLE",
            "ROLE boss 1 ff 1",
            "ROLE master x ff 1",
            "ROLE master 1 zz 1",
            "ROLE master 1 ff 1 extra",
            "ERR UNKNOWN no such command",
        ] {
            assert_eq!(parse_role(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_lower_epoch_steps_down_and_equal_masters_conflict() {
        let peer = |role, epoch, history| PeerView {
            role,
            epoch,
            history,
            last_id: 0,
        };
        assert_eq!(
            judge(1, 7, &peer(Role::Master, 2, 7)),
            Verdict::StepDown { epoch: 2 }
        );
        assert_eq!(judge(2, 7, &peer(Role::Master, 1, 7)), Verdict::Keep);
        assert_eq!(judge(2, 7, &peer(Role::Slave, 9, 7)), Verdict::Keep);
        assert_eq!(judge(1, 7, &peer(Role::Master, 1, 7)), Verdict::Conflict);
        assert_eq!(judge(1, 7, &peer(Role::Master, 5, 8)), Verdict::Foreign);
        assert_eq!(
            judge(0, 0, &peer(Role::Master, 5, 8)),
            Verdict::StepDown { epoch: 5 }
        );
    }
}
