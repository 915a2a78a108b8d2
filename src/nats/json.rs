//! A small JSON reader and the one string-quoting function the request
//! writers need, for the JetStream API (no serde_json in the tree, see
//! DESIGN.md: small protocols are written by hand).
//!
//! Owns [`Json`] (a parsed value) and [`parse`]. Pure: no I/O, no state.
//! Objects keep their members in document order as a `Vec` (JetStream
//! replies have a few dozen members at most, so a linear lookup is cheaper
//! than a map). Nesting is limited to [`MAX_DEPTH`] so hostile input cannot
//! overflow the stack; every error says where in the text it is.

/// Deeper nesting than this is refused (JetStream replies nest 4 or 5 deep).
pub const MAX_DEPTH: usize = 64;

/// A JSON number, kept exact when it is an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A non-negative integer that fits a u64.
    U(u64),
    /// A negative integer that fits an i64.
    I(i64),
    /// Anything else (a fraction, an exponent, or too large an integer).
    F(f64),
}

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The member `key` of an object (the first one, should it repeat).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer (or a float holding one exactly).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Num(Number::U(n)) => Some(*n),
            Json::Num(Number::F(f)) if *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19 => {
                Some(*f as u64)
            }
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Num(Number::U(n)) => i64::try_from(*n).ok(),
            Json::Num(Number::I(n)) => Some(*n),
            Json::Num(Number::F(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(Number::U(n)) => Some(*n as f64),
            Json::Num(Number::I(n)) => Some(*n as f64),
            Json::Num(Number::F(f)) => Some(*f),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(items) => Some(items),
            _ => None,
        }
    }
}

/// Parses one JSON document (surrounding whitespace allowed, nothing
/// else after it). `Err` says what was wrong and at which byte.
pub fn parse(text: &[u8]) -> Result<Json, String> {
    let mut p = Parser { s: text, pos: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("extra text after the JSON value"));
    }
    Ok(v)
}

/// `s` as a JSON string literal, quotes included: `"`, `\` and control
/// characters escaped, everything else (UTF-8 included) as is.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("bad JSON at byte {}: {what}", self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.pos += 1; // '{'
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a member name"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            self.ws();
            let v = self.value(depth + 1)?;
            members.push((key, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Obj(members));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.err("bad \\u escape"))?;
        let n = u32::from_str_radix(text, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.pos += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        self.pos += 1; // '"'
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode()?,
                        _ => return Err(self.err("unknown escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return Err(self.err("control character in a string")),
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))
    }

    /// The character of a `\uXXXX` escape (its `\u` read), joining a
    /// UTF-16 surrogate pair written as two escapes.
    fn unicode(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.s[self.pos..].starts_with(b"\\u") {
                return Err(self.err("lone high surrogate"));
            }
            self.pos += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("bad low surrogate"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("escape is not a character"))
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == digits_start {
            return Err(self.err("expected digits"));
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            let f = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == f {
                return Err(self.err("expected digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let e = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == e {
                return Err(self.err("expected exponent digits"));
            }
        }
        // Only ASCII digits, signs, '.' and 'e' were consumed.
        let text =
            std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.err("bad number"))?;
        if integer {
            if let Ok(n) = text.parse::<u64>() {
                return Ok(Json::Num(Number::U(n)));
            }
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Json::Num(Number::I(n)));
            }
        }
        text.parse::<f64>()
            .map(|f| Json::Num(Number::F(f)))
            .map_err(|_| self.err("bad number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_jetstream_reply() {
        let v = parse(
            br#" {"type":"io.nats.jetstream.api.v1.pub_ack","stream":"S","seq":18446744073709551615,
                 "duplicate":true,"neg":-5,"f":1.5e3,"n":null,"a":[1,"x",[]],"o":{}} "#,
        )
        .expect("valid");
        assert_eq!(v.get("stream").and_then(Json::as_str), Some("S"));
        assert_eq!(v.get("seq").and_then(Json::as_u64), Some(u64::MAX));
        assert_eq!(v.get("duplicate").and_then(Json::as_bool), Some(true));
        assert_eq!(v.get("neg").and_then(Json::as_i64), Some(-5));
        assert_eq!(v.get("neg").and_then(Json::as_u64), None);
        assert_eq!(v.get("f").and_then(Json::as_f64), Some(1500.0));
        assert_eq!(v.get("f").and_then(Json::as_u64), Some(1500));
        assert_eq!(v.get("n"), Some(&Json::Null));
        assert_eq!(
            v.get("a").and_then(Json::as_array).map(<[Json]>::len),
            Some(3)
        );
        assert_eq!(v.get("o"), Some(&Json::Obj(vec![])));
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn string_escapes() {
        let v = parse(br#""a\"b\\c\/d\n\t\u00e9\ud83d\ude00\u0001""#).expect("valid");
        assert_eq!(v.as_str(), Some("a\"b\\c/d\n\té\u{1F600}\u{1}"));
        // quote() and parse() round-trip anything.
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}\u{1f}\r\n",
            "é😀",
        ] {
            assert_eq!(
                parse(quote(s).as_bytes()).expect("quoted").as_str(),
                Some(s)
            );
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bad: &[&[u8]] = &[
            b"",
            b"{",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"[1,]",
            b"[1 2]",
            b"\"abc",
            b"\"\\u12\"",
            b"\"\\uZZZZ\"",
            b"\"\\ud800\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\x\"",
            b"\"\x01\"",
            b"\"\xff\"",
            b"-",
            b"1.",
            b"1e",
            b"tru",
            b"nul",
            b"1 2",
            b"{1:2}",
            b"\\",
        ];
        for b in bad {
            assert!(
                parse(b).is_err(),
                "{:?} should not parse",
                String::from_utf8_lossy(b)
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 5);
        assert!(parse(deep.as_bytes()).is_err());
        let ok_deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok_deep.as_bytes()).is_ok());
    }
}
