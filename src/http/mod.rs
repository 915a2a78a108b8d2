//! The monitoring listener: a minimal HTTP/1.1 GET server on its own port
//! (`http:` in the config) serving `/metrics` (Prometheus text format),
//! `/healthz` (200 `ok` or 503 with a one-line reason) and `/` (the status
//! page).
//!
//! One thread, `http`, owns the listener and handles one request at a time:
//! it polls the listener, accepts, reads the request head (at most
//! [`request::MAX_HEAD_BYTES`], within [`READ_TIMEOUT`] in all), answers,
//! and closes (`Connection: close`). Between requests it samples the
//! counters every few seconds into the page's [`history::History`]. It only
//! reads published state — the broker's topics and groups, the counters
//! ([`crate::stats`]), the replication state — never the writer channel, so
//! a slow or hostile HTTP client costs at most the read timeout of this one
//! thread and never stalls STATS, the protocol port or a write.
//!
//! With `auth.token` set, `/metrics` and `/` need `Authorization: Bearer
//! <token>` (401 otherwise); `/healthz` too with `http.healthAuth: true`.
//! Wrong tokens are paced per source address like AUTH
//! ([`crate::auth::SourcePacer`]): past the burst, `429` unchecked.

mod health;
mod history;
mod metrics;
mod page;
pub(crate) mod request;
mod view;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};

use self::health::Thresholds;
use self::history::{History, SAMPLE_EVERY};
use self::request::{MAX_HEAD_BYTES, Request};
use self::view::View;
use crate::auth::{self, Verdict};
use crate::broker::Broker;
use crate::config::HttpConfig;

/// Longest a client may take to send its whole request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a client may take to read the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After answering, how long unread input is drained so the close does
/// not turn into a reset that eats the answer.
const DRAIN: Duration = Duration::from_millis(100);
/// Most bytes drained after an answer.
const DRAIN_BYTES: usize = 64 << 10;

/// Binds the HTTP listener (before `READY`, so a bad address is known at
/// start).
pub fn bind(cfg: &HttpConfig) -> io::Result<TcpListener> {
    let l = TcpListener::bind(cfg.listen_addr())?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Starts the `http` thread; it runs until the process exits.
pub fn spawn(listener: TcpListener, broker: Arc<Broker>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("http".into())
        .stack_size(256 << 10)
        .spawn(move || run(listener, &broker))?;
    Ok(())
}

fn run(listener: TcpListener, b: &Broker) {
    let mut history = History::default();
    let mut next_sample = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_sample {
            history.tick(b, now);
            next_sample = now + SAMPLE_EVERY;
        }
        if !readable(&listener, next_sample - now) {
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = serve(stream, b, &history) {
                    debug!("http {peer}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // Out of descriptors, say: do not spin on it.
                warn!("http: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Waits up to `wait` for a connection to accept.
fn readable(l: &TcpListener, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, 60_000) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    n > 0 && fd.revents & libc::POLLIN != 0
}

/// An answer: status, content type, body, extra header lines.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    extra: &'static str,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Answer {
        let mut body = body.into();
        body.push('\n');
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            extra: "",
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn serve(mut stream: TcpStream, b: &Broker, history: &History) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let answer = match read_head(&mut stream)? {
        Head::Complete(buf) => match request::parse(&buf) {
            Ok(req) => {
                let source = stream.peer_addr().map(|a| a.ip());
                answer(b, history, &req, source.ok())
            }
            Err(why) => Answer::text(400, why),
        },
        Head::TooLarge => Answer::text(431, format!("request head over {MAX_HEAD_BYTES} bytes")),
        Head::TimedOut => Answer::text(408, "request not received in time"),
        Head::Closed => return Ok(()),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n{}\r\n",
        answer.status,
        reason(answer.status),
        answer.content_type,
        answer.body.len(),
        answer.extra
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(answer.body.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream);
    Ok(())
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    TimedOut,
    Closed,
}

/// Reads up to the end of the request head, within [`READ_TIMEOUT`] in all
/// and [`MAX_HEAD_BYTES`].
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(Head::TimedOut);
        };
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::TimedOut);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = request::head_end(&buf) {
            if end > MAX_HEAD_BYTES {
                return Ok(Head::TooLarge);
            }
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
    }
}

fn drain(stream: &mut TcpStream) {
    let deadline = Instant::now() + DRAIN;
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || total > DRAIN_BYTES || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

fn answer(
    b: &Broker,
    history: &History,
    req: &Request,
    source: Option<std::net::IpAddr>,
) -> Answer {
    if req.method != "GET" {
        let mut a = Answer::text(405, "only GET");
        a.extra = "Allow: GET\r\n";
        return a;
    }
    let needs_token = match req.path.as_str() {
        "/metrics" | "/" => true,
        "/healthz" => b.config.http.health_auth,
        _ => return Answer::text(404, "not found: try /, /metrics or /healthz"),
    };
    let token = &b.config.auth.token;
    if needs_token && !token.is_empty() {
        let got = req
            .authorization
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        let verdict = match (got, source) {
            (None, _) => Verdict::Wrong,
            (Some(got), Some(ip)) => b.auth_pacer.attempt(ip, auth::token_matches(token, got)),
            (Some(got), None) => {
                if auth::token_matches(token, got) {
                    Verdict::Accepted
                } else {
                    Verdict::Wrong
                }
            }
        };
        match verdict {
            Verdict::Accepted => {}
            Verdict::Wrong => {
                let mut a = Answer::text(401, "Authorization: Bearer <auth.token> required");
                a.extra = "WWW-Authenticate: Bearer realm=\"smss\"\r\n";
                return a;
            }
            Verdict::Wait(d) => {
                return Answer::text(
                    429,
                    format!("too many wrong tokens; retry in {} s", d.as_secs() + 1),
                );
            }
        }
    }
    let view = View::read(b);
    match req.path.as_str() {
        "/metrics" => Answer {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: metrics::render(b, &view),
            extra: "",
        },
        "/healthz" => {
            let th = match Thresholds::parse(
                req.param("maxSlaveLagSeconds"),
                req.param("maxGroupLag"),
            ) {
                Ok(t) => t,
                Err(why) => return Answer::text(400, why),
            };
            match health::check(&view, b.config.replication.min_slaves, th) {
                Ok(()) => Answer::text(200, "ok"),
                Err(why) => Answer::text(503, why),
            }
        }
        _ => {
            let h = health::check(
                &view,
                b.config.replication.min_slaves,
                Thresholds::default(),
            );
            Answer {
                status: 200,
                content_type: page::CONTENT_TYPE,
                body: page::render(&view, &b.stats, history, &h, Instant::now()),
                extra: "",
            }
        }
    }
}
