//! Start-up, the acceptor, and shutdown.
//!
//! Threads started here: `writer` (the persistence thread), `acceptor` (one
//! connection thread per accepted client, each with a small stack, refused
//! with `ERR BUSY` past `limits.maxConnections`; with `auth.token`,
//! connections not yet authenticated are held to their own cap by
//! [`crate::preauth`], which makes room by closing one of them rather than
//! refusing), `signals` (SIGTERM and SIGINT) and, with `http.enabled`,
//! `http` ([`crate::http`]: metrics, health, status page). The main thread waits for a signal or for the writer to die;
//! on a signal it stops accepting, lets the writer finish and fsync what is
//! queued, writes a checkpoint and returns, so the process exits 0.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::{error, info, warn};

use crate::broker::Broker;
use crate::cli::ServerArgs;
use crate::config::Config;
use crate::connection;
use crate::error::Error;
use crate::fds::{self, FdBudget};
use crate::logging::init_logging;
use crate::preauth::{self, Admitted, Ticket};
use crate::protocol::{ErrCode, ProtoError, encode_err};
use crate::replication::{self, peer, receiver};
use crate::role::Role;
use crate::stats::Stats;
use crate::storage;
use crate::storage::engine::writer::Writer;
use crate::storage::ops::{self, TimerReceivers, WriteOk, WriteOp};
use crate::stream::Port;
use crate::timer;
use crate::writer_handle::CallError;

/// Stack of a connection thread: parsing and replies keep their buffers on
/// the heap, so little stack is touched.
const CONN_STACK_BYTES: usize = 128 << 10;
/// How long the acceptor spends telling an over-limit client `ERR BUSY`.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long shutdown waits for the writer's final fsync and checkpoint.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

enum Wake {
    Signal(i32),
    WriterExited,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Runs the server until SIGTERM/SIGINT (Ok) or a fatal error.
pub fn run(args: ServerArgs) -> Result<(), Error> {
    let config = Config::load(&args.config)?;
    init_logging(&config.log)?;
    if let Some(w) = config.token_file_warning(&args.config) {
        warn!("{w}");
    }
    crate::memory::tune().map_err(io_err("starting the mem-trim thread"))?;
    // A config written for the original smss: say what it sets that does nothing here.
    for key in &config.ignored {
        warn!("{key}");
    }
    let fds = fd_budget(config.limits.max_connections);
    let (tx, rx) = crossbeam_channel::bounded(config.worker.buff_size);
    let listen = config.listen_addr();
    // The role claim in the data directory wins over --role (see
    // replication::peer): decided before recovery, which depends on it.
    let claim = crate::storage::role::load_claim(&config.store.path)?;
    let (role, why) = peer::decide_role(args.role, claim, args.demote);
    if let Some(why) = why {
        warn!("{why}");
    }
    // A slave follows --master, else its peer; a master watches its peer,
    // else the master it was started with.
    let peer_addr = config.replication.peer.clone();
    let master = args.master.clone().or_else(|| peer_addr.clone());
    let peer_addr = peer_addr.or_else(|| args.master.clone());
    if role == Role::Slave && master.is_none() {
        return Err(Error::Startup(
            "this server is a slave (data/role) but has no master to follow: set \
             replication.peer or give --master HOST:PORT"
                .into(),
        ));
    }
    let broker = Arc::new(Broker::new(config, role, tx, fds.index_handles));
    (broker.stats.connections_max).store(fds.max_connections as u64, Ordering::Relaxed);
    let configured = broker.config.limits.max_unauthenticated;
    let preauth_max = preauth::effective_cap(configured, fds.max_connections);
    (broker.stats.connections_unauthenticated_max).store(preauth_max as u64, Ordering::Relaxed);
    if !broker.config.auth.token.is_empty() {
        if configured > preauth_max {
            warn!(
                "limits.maxUnauthenticated {configured} lowered to the connection cap \
                 {preauth_max}"
            );
        }
        info!("up to {preauth_max} connections not yet authenticated");
    }
    let (timer_tx, timer_rx) = ops::timer_channels();
    let (mut writer, _report) = Writer::open(&broker.config, broker.writer_links(), timer_tx)?;
    // Each committed batch's answers go to one thread that sends them while
    // the writer goes on; it ends when the writer drops the channel.
    let (held_tx, held_rx) = crossbeam_channel::unbounded();
    writer.set_releaser(held_tx);
    if broker.config.replication.sync && broker.config.replication.min_slaves == 0 {
        // Semi-sync: answers wait in `repl-sync` for a slave's ack.
        broker.repl.sync_active.store(true, Ordering::Relaxed);
        let b = Arc::clone(&broker);
        std::thread::Builder::new()
            .name("repl-sync".into())
            .spawn(move || replication::sync::run(held_rx, b))
            .map_err(io_err("starting the semi-sync thread"))?;
    } else {
        if broker.config.replication.min_slaves > 0 {
            // The writer itself waits for the slaves before it answers and
            // never falls back (storage::quorum): semi-sync always in force.
            broker.repl.sync_active.store(true, Ordering::Relaxed);
        }
        std::thread::Builder::new()
            .name("replier".into())
            .spawn(move || storage::reply::run(held_rx))
            .map_err(io_err("starting the replier thread"))?;
    }

    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<Wake>(4);
    let writer_wake = wake_tx.clone();
    let writer_thread = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            // Tell main when the writer ends, also when it panics.
            struct OnExit(crossbeam_channel::Sender<Wake>);
            impl Drop for OnExit {
                fn drop(&mut self) {
                    let _ = self.0.try_send(Wake::WriterExited);
                }
            }
            let _guard = OnExit(writer_wake);
            writer.run(rx);
        })
        .map_err(io_err("starting the writer thread"))?;

    if args.demote && claim.is_some_and(|c| c.role == Role::Master) {
        match broker.writer.call_within(WriteOp::Demote, SHUTDOWN_WAIT) {
            Ok(_) => {}
            Err(CallError::Write(e)) => {
                return Err(Error::Startup(format!("--demote failed: {e}")));
            }
            Err(_) => return Err(Error::WriterDied),
        }
    }
    // An old master restarted while its peer was promoted must not take a
    // single write: ask the peer before listening.
    // The link to the master or peer (TLS files read now, so a bad one
    // stops the start with its name).
    let dialer = Arc::new(
        crate::replication::dial::Dialer::from_config(&broker.config.replication)
            .map_err(Error::Startup)?,
    );
    if let Some(p) = &peer_addr {
        peer::check_once(&broker, &dialer, p);
    }

    let tls = tls_listener(&broker.config)?;
    let tls_local = match &tls {
        Some(t) => Some(
            t.listener
                .local_addr()
                .map_err(io_err("reading the TLS address"))?,
        ),
        None => None,
    };
    // `tls.only`: no plain listener; READY names the TLS port then.
    let listener = match tls_local {
        Some(_) if broker.config.tls.only => None,
        _ => Some(TcpListener::bind(listen).map_err(io_err(format!("binding {listen}")))?),
    };
    let local = match (&listener, tls_local) {
        (Some(l), _) => l
            .local_addr()
            .map_err(io_err("reading the listening address"))?,
        (None, Some(t)) => t,
        (None, None) => return Err(Error::Startup("no listener to start".into())),
    };
    if let Some(t) = tls_local {
        info!("TLS on {t}");
    }
    info!("listening on {local} as {}", broker.role().as_str());
    // Logged once bound: with `port: 0` only the listener knows the real port.
    for w in broker.config.warnings_for(local) {
        warn!("{w}");
    }
    // The monitoring port: a failure to bind it is logged, not fatal (the
    // queue matters more than its metrics; `/healthz` missing is itself
    // the alert).
    let http = broker.config.http.enabled.then(|| {
        let cfg = &broker.config.http;
        crate::http::bind(cfg)
            .inspect_err(|e| {
                error!(
                    "http: cannot listen on {}: {e}; no HTTP endpoints",
                    cfg.listen_addr()
                )
            })
            .ok()
    });
    // Before READY: a SIGHUP (or SIGTERM) sent the moment a script sees
    // READY must find the handlers, not the default action (exit).
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(io_err("installing signal handlers"))?;
    let signal_handle = signals.handle();
    // Before READY, so whoever waits for READY has it already.
    if let Some(t) = tls_local {
        println!("TLS {t}");
    }
    // Tests and scripts wait for this line instead of guessing when we are up.
    println!("READY {local}");
    if let Some(Some(l)) = http {
        let addr = l.local_addr().map_err(io_err("reading the HTTP address"))?;
        crate::http::spawn(l, Arc::clone(&broker)).map_err(io_err("starting the http thread"))?;
        info!("HTTP on {addr}: /metrics, /healthz, /");
        // Printed after READY, which scripts already wait for.
        println!("HTTP {addr}");
    }
    let _ = std::io::stdout().flush();

    let reload = tls.as_ref().map(TlsListener::reloader);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGHUP {
                    // A renewed certificate: taken by the next handshake.
                    if let Some(reload) = &reload {
                        reload();
                    }
                    // Log rotation: the stop signals are TERM and INT.
                    match crate::logging::reopen() {
                        Ok(Some(path)) => info!("SIGHUP: reopened the log {}", path.display()),
                        Ok(None) => info!("SIGHUP: logging to stdout, nothing to reopen"),
                        Err(e) => error!(
                            "SIGHUP: could not reopen the log ({e}); still writing the old one"
                        ),
                    }
                    continue;
                }
                let _ = wake_tx.try_send(Wake::Signal(sig));
                return;
            }
        })
        .map_err(io_err("starting the signal thread"))?;

    spawn_timers(&broker, timer_rx)?;
    // The receiver idles while this server is a master: it follows the
    // master (or the peer) once this server is, or becomes, a slave.
    // On a master it looks at the peer once a second instead.
    if let (Some(master), Some(peer)) = (master, peer_addr) {
        if broker.role() == Role::Slave {
            info!("a read-only slave of {master}");
        }
        let b = Arc::clone(&broker);
        let event = args.event;
        std::thread::Builder::new()
            .name("repl-receiver".into())
            .spawn(move || receiver::run(b, dialer, master, event, peer))
            .map_err(io_err("starting the replication receiver"))?;
    }

    let tls_port = tls_local.map(|a| a.port());
    // Two listeners, two acceptors; the caps count both ports together.
    let mut listeners = Vec::new();
    if let Some(l) = listener {
        listeners.push(("acceptor", l, Port::Plain { tls_port }));
    }
    if let Some(t) = tls {
        listeners.push(("acceptor-tls", t.listener, t.port));
    }
    for (name, l, port) in listeners {
        let acc_broker = Arc::clone(&broker);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || accept_loop(l, acc_broker, fds.max_connections, preauth_max, port))
            .map_err(io_err("starting the acceptor thread"))?;
    }

    let wake = wake_rx.recv().unwrap_or(Wake::WriterExited);
    signal_handle.close();
    match wake {
        Wake::Signal(sig) => {
            info!("signal {sig}: shutting down");
            shutdown(&broker, local);
            if let Some(t) = tls_local.filter(|t| *t != local) {
                wake_acceptor(t);
            }
            let _ = writer_thread.join();
            info!("bye");
            Ok(())
        }
        Wake::WriterExited => {
            error!("the persistence thread stopped; exiting");
            Err(Error::WriterDied)
        }
    }
}

fn spawn_timers(broker: &Arc<Broker>, rx: TimerReceivers) -> Result<(), Error> {
    let b = Arc::clone(broker);
    std::thread::Builder::new()
        .name("lifetime".into())
        .spawn(move || timer::run_lifetime(rx.lifetime, b))
        .map_err(io_err("starting the lifetime thread"))?;
    let b = Arc::clone(broker);
    std::thread::Builder::new()
        .name("delay".into())
        .spawn(move || timer::run_delay(rx.delay, b))
        .map_err(io_err("starting the delay thread"))?;
    // Slaves too: retention is local (it writes no record), and each side
    // keeps what its own readers and slaves still need.
    let b = Arc::clone(broker);
    std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || timer::run_retention(b))
        .map_err(io_err("starting the retention thread"))?;
    Ok(())
}

/// Stops accepting and lets the writer drain, fsync and checkpoint.
fn shutdown(broker: &Broker, local: SocketAddr) {
    broker.begin_shutdown();
    wake_acceptor(local);
    match broker.writer.call_within(WriteOp::Shutdown, SHUTDOWN_WAIT) {
        Ok(WriteOk::Done) => {}
        Err(CallError::Busy | CallError::Gone) => {
            warn!("the writer did not take the shutdown request")
        }
        other => warn!("the writer did not confirm shutdown: {other:?}"),
    }
}

/// Wakes an acceptor out of accept() so it sees the shutdown flag.
fn wake_acceptor(listening: SocketAddr) {
    let mut wake_addr = listening;
    if wake_addr.ip().is_unspecified() {
        wake_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let _ = TcpStream::connect_timeout(&wake_addr, Duration::from_secs(1));
}

/// The TLS listener and what its connections need.
struct TlsListener {
    listener: TcpListener,
    port: Port,
}

impl TlsListener {
    /// What SIGHUP runs: reads the certificate and key again; a bad new
    /// file leaves the old ones in force.
    fn reloader(&self) -> Box<dyn Fn() + Send> {
        match &self.port {
            #[cfg(feature = "tls")]
            Port::Tls(t) => {
                let t = Arc::clone(t);
                Box::new(move || match t.reload() {
                    Ok(w) => {
                        info!("SIGHUP: reloaded the TLS certificate and key");
                        if let Some(w) = w {
                            warn!("{w}");
                        }
                    }
                    Err(e) => error!("SIGHUP: TLS not reloaded, the old certificate stays: {e}"),
                })
            }
            Port::Plain { .. } => Box::new(|| {}),
        }
    }
}

/// Reads the certificate and key (an error names the file) and binds the
/// TLS port, when `tls.cert` is set.
#[cfg(feature = "tls")]
fn tls_listener(config: &Config) -> Result<Option<TlsListener>, Error> {
    if !config.tls.enabled() {
        return Ok(None);
    }
    let (tls, warning) = crate::tls::ServerTls::load(&config.tls)
        .map_err(|e| Error::Startup(format!("TLS: {e}")))?;
    if let Some(w) = warning {
        warn!("TLS: {w}");
    }
    let addr = SocketAddr::new(config.bind, config.tls.port);
    let listener =
        TcpListener::bind(addr).map_err(io_err(format!("binding the TLS port {addr}")))?;
    Ok(Some(TlsListener {
        listener,
        port: Port::Tls(Arc::new(tls)),
    }))
}

/// Built without TLS: a config that asks for it is refused, not ignored.
#[cfg(not(feature = "tls"))]
fn tls_listener(config: &Config) -> Result<Option<TlsListener>, Error> {
    if config.tls.enabled() {
        return Err(Error::Startup(
            "this smss was built without TLS (cargo feature `tls`): remove tls.cert and \
             tls.key from the config, or build with the default features"
                .into(),
        ));
    }
    Ok(None)
}

/// Raises the descriptor limit and splits it (see [`fds`]); logs both.
fn fd_budget(configured_connections: usize) -> FdBudget {
    let limit = match fds::raise_nofile_limit() {
        Ok((before, now, hard)) => {
            info!("{}", fds::describe_limit(before, now, hard));
            now
        }
        Err(e) => {
            // Plan with the conservative default every Linux starts with.
            warn!("cannot read or raise the file-descriptor limit ({e}); assuming 1024");
            1024
        }
    };
    let budget = fds::plan(limit, configured_connections);
    if budget.capped {
        warn!(
            "limits.maxConnections {configured_connections} lowered to {} by the file-descriptor \
             limit {limit} (raise it with LimitNOFILE= or ulimit -n)",
            budget.max_connections
        );
    }
    info!(
        "up to {} connections, {} open index files",
        budget.max_connections, budget.index_handles
    );
    budget
}

fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    max_connections: usize,
    preauth_max: usize,
    port: Port,
) {
    let max = max_connections as u64;
    let token_set = !broker.config.auth.token.is_empty();
    for conn in listener.incoming() {
        if broker.is_shutting_down() {
            return;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let stats = &broker.stats;
        let n = stats
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let peer_addr = stream.peer_addr().ok();
        let mut ticket = None;
        if token_set {
            // Every newcomer is unauthenticated: the pre-auth cap decides.
            let ip = peer_addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
            match broker
                .preauth
                .admit(stats, &stream, ip, preauth_max, n > max)
            {
                Ok(Admitted::Yes(t)) => ticket = Some(t),
                Ok(Admitted::InPlaceOf(t)) => {
                    // The evicted connection's slot is this one's.
                    Stats::sub(&stats.connections, 1);
                    ticket = Some(t);
                }
                Ok(Admitted::Refused) => {
                    Stats::sub(&stats.connections, 1);
                    // Counted before the client can read the refusal and ask STATS.
                    Stats::add(&stats.rejected_busy, 1);
                    refuse_busy(stream, "too many connections");
                    continue;
                }
                Err(e) => {
                    Stats::sub(&stats.connections, 1);
                    warn!("cannot track a new connection: {e}");
                    // Counted before the client can read the refusal and ask STATS.
                    Stats::add(&stats.rejected_busy, 1);
                    refuse_busy(stream, "the server cannot track another connection");
                    continue;
                }
            }
        } else if n > max {
            Stats::sub(&stats.connections, 1);
            // Counted before the client can read the refusal and ask STATS.
            Stats::add(&stats.rejected_busy, 1);
            refuse_busy(stream, "too many connections");
            continue;
        }
        let peer = peer_addr.map_or_else(|| "?".into(), |a| a.to_string());
        let b = Arc::clone(&broker);
        let spare = stream.try_clone().ok();
        let ticket_id = ticket.as_ref().map(Ticket::id);
        let port = port.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{peer}"))
            .stack_size(CONN_STACK_BYTES)
            .spawn(move || connection::serve(stream, b, ticket, port));
        if let Err(e) = spawned {
            warn!("cannot start a thread for {peer}: {e}");
            // Unless it was evicted meanwhile (its slot went on then).
            if ticket_id.is_none_or(|id| broker.preauth.leave(stats, id)) {
                Stats::sub(&stats.connections, 1);
            }
            if let Some(s) = spare {
                refuse_busy(s, "the server cannot start another thread");
            }
        }
    }
}

fn refuse_busy(mut stream: TcpStream, why: &str) {
    let mut line = Vec::new();
    encode_err(&mut line, &ProtoError::new(ErrCode::Busy, why));
    let _ = stream.set_write_timeout(Some(BUSY_WRITE_TIMEOUT));
    let _ = stream.write_all(&line);
    let _ = stream.shutdown(Shutdown::Write);
}
