//! The pre-auth cap: with `auth.token` set, how many connections that have
//! not authenticated yet may hold a slot, and which one makes room.
//!
//! Owns [`PreAuth`], the registry of waiting (unauthenticated) connections,
//! behind one mutex held only for a map update. The acceptor thread admits
//! ([`PreAuth::admit`]); each connection thread (`conn-<peer>`) leaves it
//! once its AUTH succeeds or it ends ([`PreAuth::leave`]). Updates the
//! `connections_unauthenticated` and `unauthenticated_evicted` counters of
//! [`Stats`]; without `auth.token` nothing here is used.
//!
//! The rule. A connection counts as unauthenticated from its accept until
//! its AUTH succeeds. At most `limits.maxUnauthenticated` of them hold a
//! slot (default: a quarter of the connection cap in force). A new
//! connection that would pass that cap — or the whole connection cap while
//! some slot is held by an unauthenticated one — is not refused: the
//! oldest unauthenticated connection of the source address that holds the
//! most of them is closed with `ERR BUSY` and the newcomer takes its slot.
//! Only when every slot is held by an authenticated client does a newcomer
//! get `ERR BUSY`. Why evict rather than refuse: a cap that refuses
//! newcomers would let idle sockets that never AUTH keep every real client
//! out until `timeout.auth` (the lock-out this cap exists to end); with
//! eviction a slot can only be held by authenticating, and a real client
//! keeps its place as long as `limits.maxUnauthenticated` newer
//! connections — from its own address first, since the busiest source
//! loses first — have not arrived before its AUTH. Authenticated clients
//! can therefore always use the connection cap, and one flooding address
//! cannot push out a client from another.
//!
//! Eviction is `shutdown(Read)` on the victim's socket: its thread's
//! blocked read returns, and dropping the registry entry disconnects the
//! thread's [`Ticket`] channel, which wakes it from an AUTH pause at once.
//! The victim thread then writes `ERR BUSY` and closes; its slot in the
//! connection count passed to the newcomer when it was evicted.
//!
//! Sources are IPv4 addresses or IPv6 /64 prefixes ([`source_of`]), so a
//! host with a /64 of its own counts as one.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::stats::Stats;

/// The unit a flood is counted in: an IPv4 address, or the /64 an IPv6
/// address belongs to (one host commonly has a whole /64). IPv4-mapped
/// IPv6 addresses count as their IPv4 address.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// The default pre-auth cap: a quarter of the connection cap in force, at
/// least 1; a configured cap (non-zero) is kept, but never above it.
pub fn effective_cap(configured: usize, max_connections: usize) -> usize {
    let cap = max_connections.max(1);
    match configured {
        0 => (cap / 4).max(1),
        n => n.min(cap),
    }
}

/// What the acceptor does with a new connection (with a token set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// Close one unauthenticated connection, then admit.
    EvictThenAdmit,
    /// Every slot is held by an authenticated client: `ERR BUSY`.
    Refuse,
}

/// The rule of the module docs, as a pure function: `waiting`
/// unauthenticated connections hold slots now (`max_waiting` allowed);
/// `over_total` says the newcomer would pass the connection cap.
pub fn decide(waiting: usize, max_waiting: usize, over_total: bool) -> Decision {
    if waiting < max_waiting && !over_total {
        Decision::Admit
    } else if waiting > 0 {
        Decision::EvictThenAdmit
    } else {
        Decision::Refuse
    }
}

/// The connection to close: the oldest one of the source holding the most
/// entries (ties: the source whose oldest is oldest). `entries` in
/// admission order, as `(id, source)`.
pub fn victim(entries: impl Iterator<Item = (u64, IpAddr)>) -> Option<u64> {
    let mut per_source: HashMap<IpAddr, (usize, u64)> = HashMap::new();
    for (id, source) in entries {
        per_source.entry(source).or_insert((0, id)).0 += 1;
    }
    per_source
        .into_values()
        .max_by_key(|&(count, oldest)| (count, std::cmp::Reverse(oldest)))
        .map(|(_, oldest)| oldest)
}

/// One waiting connection, as the registry keeps it.
struct Entry {
    source: IpAddr,
    /// A second handle on its socket, to shut its reading side.
    stream: TcpStream,
    /// Dropped on eviction (never sent on): wakes the connection's [`Ticket`].
    wake: Sender<()>,
}

#[derive(Default)]
struct Waiting {
    next_id: u64,
    /// By admission order, oldest first.
    entries: BTreeMap<u64, Entry>,
}

/// The registry of unauthenticated connections (see the module docs).
#[derive(Default)]
pub struct PreAuth {
    waiting: Mutex<Waiting>,
}

/// What [`PreAuth::admit`] did with a newcomer.
pub enum Admitted {
    /// It holds a slot; the connection count grew by one.
    Yes(Ticket),
    /// It took an evicted connection's slot: the caller gives back the one
    /// it counted for the newcomer.
    InPlaceOf(Ticket),
    /// `ERR BUSY`: every slot is held by an authenticated client.
    Refused,
}

/// A waiting connection's hold on its slot, kept by its thread.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    wake: Receiver<()>,
}

impl Ticket {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True once the acceptor closed this connection to make room.
    pub fn evicted(&self) -> bool {
        matches!(self.wake.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Waits `d`, or less if the connection is evicted meanwhile: false then.
    pub fn pause(&self, d: Duration) -> bool {
        !matches!(
            self.wake.recv_timeout(d),
            Err(RecvTimeoutError::Disconnected)
        )
    }
}

impl PreAuth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `stream` from `peer` under the pre-auth cap `max_waiting`;
    /// `over_total`: the newcomer passes the connection cap. An error (no
    /// descriptor for the registry's handle) admits nothing.
    pub fn admit(
        &self,
        stats: &Stats,
        stream: &TcpStream,
        peer: IpAddr,
        max_waiting: usize,
        over_total: bool,
    ) -> io::Result<Admitted> {
        let handle = stream.try_clone()?;
        let mut w = self.lock();
        let decision = decide(w.entries.len(), max_waiting, over_total);
        let evicted = match decision {
            Decision::Refuse => return Ok(Admitted::Refused),
            Decision::Admit => None,
            Decision::EvictThenAdmit => {
                let id = victim(w.entries.iter().map(|(id, e)| (*id, e.source)));
                id.and_then(|id| w.entries.remove(&id))
            }
        };
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let id = w.next_id;
        w.next_id += 1;
        let entry = Entry {
            source: source_of(peer),
            stream: handle,
            wake: wake_tx,
        };
        w.entries.insert(id, entry);
        stats
            .connections_unauthenticated
            .store(w.entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        drop(w);
        let ticket = Ticket { id, wake: wake_rx };
        match evicted {
            Some(old) => {
                // First its ticket disconnects, then its thread's read
                // returns: the thread must see why its socket closed.
                let Entry { stream, wake, .. } = old;
                drop(wake);
                let _ = stream.shutdown(Shutdown::Read);
                Stats::add(&stats.unauthenticated_evicted, 1);
                Ok(Admitted::InPlaceOf(ticket))
            }
            None => Ok(Admitted::Yes(ticket)),
        }
    }

    /// The connection of ticket `id` authenticated or ended: its pre-auth
    /// slot is free. False if it had been evicted (its connection slot
    /// went to the connection admitted in its place).
    pub fn leave(&self, stats: &Stats, id: u64) -> bool {
        let mut w = self.lock();
        let held = w.entries.remove(&id).is_some();
        stats
            .connections_unauthenticated
            .store(w.entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn the_default_cap_is_a_quarter_of_the_connection_cap() {
        assert_eq!(effective_cap(0, 1024), 256);
        assert_eq!(effective_cap(0, 3), 1, "at least one");
        assert_eq!(effective_cap(10, 1024), 10);
        assert_eq!(effective_cap(2000, 1024), 1024, "never above the cap");
        assert_eq!(effective_cap(0, 0), 1);
    }

    #[test]
    fn newcomers_evict_unauthenticated_ones_and_only_a_full_house_refuses() {
        assert_eq!(decide(0, 4, false), Decision::Admit);
        assert_eq!(decide(3, 4, false), Decision::Admit);
        assert_eq!(decide(4, 4, false), Decision::EvictThenAdmit);
        // The connection cap is full but one slot is someone's pre-auth.
        assert_eq!(decide(1, 4, true), Decision::EvictThenAdmit);
        // Every slot is authenticated.
        assert_eq!(decide(0, 4, true), Decision::Refuse);
    }

    #[test]
    fn the_busiest_source_loses_its_oldest_first() {
        let entries = [(1, v4(1)), (2, v4(2)), (3, v4(2)), (4, v4(1)), (5, v4(2))];
        assert_eq!(victim(entries.into_iter()), Some(2));
        // One address alone: the oldest.
        let one = [(7, v4(9)), (8, v4(9))];
        assert_eq!(victim(one.into_iter()), Some(7));
        // A tie: the source whose oldest is older.
        let tie = [(1, v4(1)), (2, v4(2)), (3, v4(2)), (4, v4(1))];
        assert_eq!(victim(tie.into_iter()), Some(1));
        assert_eq!(victim(std::iter::empty()), None);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("addr");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("addr");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("addr");
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(source_of(mapped), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(source_of(v4(3)), v4(3));
    }

    #[test]
    fn eviction_wakes_the_ticket_and_frees_nothing_twice() -> io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stats = Stats::default();
        let pre = PreAuth::default();
        let ip = v4(1);
        let _c1 = TcpStream::connect(addr)?;
        let (s1, _) = listener.accept()?;
        let _c2 = TcpStream::connect(addr)?;
        let (s2, _) = listener.accept()?;
        let Admitted::Yes(t1) = pre.admit(&stats, &s1, ip, 1, false)? else {
            panic!("the first is admitted");
        };
        assert!(!t1.evicted());
        let Admitted::InPlaceOf(t2) = pre.admit(&stats, &s2, ip, 1, false)? else {
            panic!("the second takes the first one's place");
        };
        assert!(t1.evicted());
        assert!(!t1.pause(Duration::from_secs(5)), "woken at once");
        assert_eq!(Stats::get(&stats.unauthenticated_evicted), 1);
        assert_eq!(Stats::get(&stats.connections_unauthenticated), 1);
        assert!(!pre.leave(&stats, t1.id()), "the evicted one holds nothing");
        assert!(pre.leave(&stats, t2.id()));
        assert!(!pre.leave(&stats, t2.id()), "left once");
        assert_eq!(Stats::get(&stats.connections_unauthenticated), 0);
        Ok(())
    }
}
