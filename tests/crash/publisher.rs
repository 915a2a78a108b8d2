//! The publishers of a round: each runs a bounded list of operations drawn
//! from its seed, one at a time, and writes every reply to its journal as
//! it arrives, so the round knows what was acknowledged and what was in
//! flight when the server died.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use smss::client::{Client, ClientError};

use crate::{LONG_DELAY_MS, PERM_TOPICS, Rng, SHORT_DELAY_MS};

/// Scratch topics one publisher may create in a round.
const MAX_CREATES: u64 = 3;

pub(crate) type Headers = Vec<(String, String)>;

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Pub {
        topic: String,
        headers: Headers,
        payload: Vec<u8>,
    },
    MPub {
        topic: String,
        payloads: Vec<Vec<u8>>,
    },
    DPub {
        topic: String,
        delay_ms: u64,
        headers: Headers,
        payload: Vec<u8>,
    },
    Create(String),
    Delete(String),
}

/// The reply to an acknowledged operation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Acked {
    Id(u64),
    Range(u64, u64),
}

/// One publisher's record, written as each reply arrives.
#[derive(Default)]
pub(crate) struct Journal {
    pub(crate) acked: Vec<(Op, Acked)>,
    /// Sent and not answered: the kill came first.
    pub(crate) in_flight: Option<Op>,
    /// An ERR or protocol error (a failure), or when the connection died.
    pub(crate) error: Option<String>,
    pub(crate) died_at: Option<Instant>,
}

pub(crate) fn lock(j: &Mutex<Journal>) -> MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Spec {
    pub(crate) round: u64,
    pub(crate) t: u64,
    pub(crate) seed: u64,
    pub(crate) budget: u64,
    /// Scratch topics this publisher may publish to and delete.
    pub(crate) scratch: Vec<String>,
}

fn payload(rng: &mut Rng, tag: String) -> Vec<u8> {
    // The tag makes every payload unique; the rest is any bytes, CRLF and
    // NUL included.
    let mut p = tag.into_bytes();
    p.push(b'|');
    for _ in 0..rng.below(200) {
        p.push(rng.next() as u8);
    }
    p
}

fn headers(rng: &mut Rng, tag: &str) -> Headers {
    if rng.chance(25) {
        vec![("h".into(), tag.into()), ("empty".into(), String::new())]
    } else {
        Vec::new()
    }
}

fn next_op(rng: &mut Rng, spec: &Spec, i: u64, scratch: &mut Vec<String>, creates: u64) -> Op {
    let tag = |kind: &str| format!("{kind}{}.{}.{i}", spec.round, spec.t);
    let perm = PERM_TOPICS[rng.below(PERM_TOPICS.len() as u64) as usize].to_string();
    match rng.below(100) {
        0..=2 if creates < MAX_CREATES => {
            Op::Create(format!("s{}-{}-{creates}", spec.round, spec.t))
        }
        3..=5 if !scratch.is_empty() => {
            let k = rng.below(scratch.len() as u64) as usize;
            Op::Delete(scratch.swap_remove(k))
        }
        6..=12 if !scratch.is_empty() => {
            let topic = scratch[rng.below(scratch.len() as u64) as usize].clone();
            let t = tag("S");
            Op::Pub {
                topic,
                headers: headers(rng, &t),
                payload: payload(rng, t),
            }
        }
        13..=32 => Op::MPub {
            topic: perm,
            payloads: (0..rng.range((2, 5)))
                .map(|k| payload(rng, format!("{}.{k}", tag("M"))))
                .collect(),
        },
        33..=42 => {
            let delay_ms = if rng.chance(20) {
                rng.range(LONG_DELAY_MS)
            } else {
                rng.range(SHORT_DELAY_MS)
            };
            let t = tag("D");
            Op::DPub {
                topic: perm,
                delay_ms,
                headers: headers(rng, &t),
                payload: payload(rng, t),
            }
        }
        _ => {
            let t = tag("P");
            Op::Pub {
                topic: perm,
                headers: headers(rng, &t),
                payload: payload(rng, t),
            }
        }
    }
}

fn pairs(h: &Headers) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn send(c: &mut Client, op: &Op) -> Result<Acked, ClientError> {
    Ok(match op {
        Op::Pub {
            topic,
            headers,
            payload,
        } => Acked::Id(c.publish_with_headers(topic, &pairs(headers), payload)?),
        Op::MPub { topic, payloads } => {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let (first, last) = c.mpublish(topic, &refs)?;
            Acked::Range(first, last)
        }
        Op::DPub {
            topic,
            delay_ms,
            headers,
            payload,
        } => Acked::Id(c.dpublish_with_headers(topic, *delay_ms, &pairs(headers), payload)?),
        Op::Create(t) => Acked::Id(c.create(t, 0)?),
        Op::Delete(t) => Acked::Id(c.delete(t)?),
    })
}

/// Runs up to `spec.budget` operations, one at a time, until the server dies.
/// Sends one `()` on `acks` per acknowledged write.
pub(crate) fn publisher(
    mut c: Client,
    spec: Spec,
    journal: Arc<Mutex<Journal>>,
    acks: mpsc::Sender<()>,
) {
    let mut rng = Rng(spec.seed);
    let mut scratch = spec.scratch.clone();
    let mut creates = 0;
    for i in 0..spec.budget {
        let op = next_op(&mut rng, &spec, i, &mut scratch, creates);
        if let Op::Create(_) = op {
            creates += 1;
        }
        lock(&journal).in_flight = Some(op.clone());
        match send(&mut c, &op) {
            Ok(a) => {
                if let Op::Create(t) = &op {
                    scratch.push(t.clone());
                }
                let mut j = lock(&journal);
                j.in_flight = None;
                j.acked.push((op, a));
                drop(j);
                let _ = acks.send(());
            }
            Err(ClientError::Io(e)) => {
                // The kill (checked by the caller: not before it).
                let mut j = lock(&journal);
                j.died_at = Some(Instant::now());
                j.error = Some(format!("connection failed: {e}"));
                return;
            }
            Err(e) => {
                let mut j = lock(&journal);
                j.in_flight = None;
                j.error = Some(format!("{op:?} got {e}"));
                j.died_at = None;
                return;
            }
        }
    }
}
