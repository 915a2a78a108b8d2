//! Pure HTTP/1.x request-head parsing: the request line, the headers the
//! server cares about (`Authorization`), the path and its query string.
//! No sockets here; [`super`] reads the bytes (bounded in size and time)
//! and hands over the head once it holds an empty line.
//!
//! Runs on the `http` thread.

/// Largest request head (request line and headers) accepted; larger is
/// `431` and the connection closes.
pub const MAX_HEAD_BYTES: usize = 8 << 10;
/// Most query parameters kept (more are ignored).
const MAX_PARAMS: usize = 16;

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string, percent-decoding not applied
    /// (the server's paths need none).
    pub path: String,
    /// `name=value` pairs of the query string, percent-decoded.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where the head ends: the index just past its empty line (`\r\n\r\n`,
/// or a bare `\n\n` from a lax client), if the bytes hold it.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    for i in 0..buf.len() {
        if buf[i] != b'\n' {
            continue;
        }
        if buf.get(i + 1) == Some(&b'\n') {
            return Some(i + 2);
        }
        if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
            return Some(i + 3);
        }
    }
    None
}

/// Parses a complete head; the error is the `400` reason.
pub fn parse(head: &[u8]) -> Result<Request, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().ok_or("empty request")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not METHOD TARGET VERSION");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("bad method");
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err("only HTTP/1.0 and HTTP/1.1");
    }
    if !target.starts_with('/') {
        return Err("the target must be a path");
    }
    let mut authorization = None;
    for l in lines {
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').ok_or("a header line without ':'")?;
        if name.is_empty() || name.contains(' ') {
            return Err("bad header name");
        }
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim().to_string());
        }
    }
    let (path, qs) = target.split_once('?').unwrap_or((target, ""));
    let query = qs
        .split('&')
        .filter(|p| !p.is_empty())
        .take(MAX_PARAMS)
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        authorization,
    })
}

/// Percent-decoding and `+` as space; a malformed escape stays as written.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_with_query_and_auth() {
        let h = b"GET /healthz?maxGroupLag=10&x=a%20b+c HTTP/1.1\r\nHost: x\r\nauthorization:  Bearer t0k \r\n\r\n";
        assert_eq!(head_end(h), Some(h.len()));
        let r = parse(h).expect("parse");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/healthz");
        assert_eq!(r.param("maxGroupLag"), Some("10"));
        assert_eq!(r.param("x"), Some("a b c"));
        assert_eq!(r.param("y"), None);
        assert_eq!(r.authorization.as_deref(), Some("Bearer t0k"));
    }

    #[test]
    fn heads_end_at_the_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nxx"), Some(16));
        let r = parse(b"GET / HTTP/1.0\n\n").expect("lax");
        assert_eq!(r.path, "/");
    }

    #[test]
    fn bad_heads_are_refused() {
        for h in [
            &b"GET /\r\n\r\n"[..],
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"\xff / HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(h).is_err(), "{:?}", String::from_utf8_lossy(h));
        }
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\n\r\n").expect("post").method,
            "POST"
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(decode("%41%4a%"), "AJ%");
        assert_eq!(decode("%zz1"), "%zz1");
        assert_eq!(decode("a%2"), "a%2");
    }
}
