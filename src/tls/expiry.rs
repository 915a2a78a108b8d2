//! The validity period of a certificate, read from its DER just far enough
//! to find `notBefore` and `notAfter` (X.509: Certificate → tbsCertificate
//! → validity), so the server can warn at start about a certificate that
//! clients will refuse. A full X.509 parser would be a dependency for two
//! dates; what cannot be read here is simply not warned about.

/// A warning when the certificate is not valid at `now_secs` (Unix time).
pub fn warning(cert_der: &[u8], now_secs: u64) -> Option<String> {
    let (not_before, not_after) = validity(cert_der)?;
    if now_secs > not_after.0 {
        Some(format!(
            "the certificate EXPIRED on {} (clients will refuse it)",
            not_after.1
        ))
    } else if now_secs < not_before.0 {
        Some(format!(
            "the certificate is not valid before {} (clients will refuse it)",
            not_before.1
        ))
    } else {
        None
    }
}

/// One DER element: (tag, contents, the rest after it).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

type Time = (u64, String);

/// (notBefore, notAfter) as (Unix seconds, the text as written).
fn validity(der: &[u8]) -> Option<(Time, Time)> {
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let mut rest = tbs;
    // [0] version is optional; then serial, signature, issuer.
    let (tag, _, r) = element(rest)?;
    rest = if tag == 0xa0 { element(r)?.2 } else { r };
    for _ in 0..2 {
        rest = element(rest)?.2;
    }
    let (_, validity, _) = element(rest)?;
    let (t1, before, r) = element(validity)?;
    let (t2, after, _) = element(r)?;
    Some((time(t1, before)?, time(t2, after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, bytes: &[u8]) -> Option<Time> {
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if digits.len() == 12 => {
            let yy: u64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        0x18 if digits.len() == 14 => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let n = |i: usize| rest.get(i..i + 2)?.parse::<u64>().ok();
    let (month, day, h, m, s) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    let days = days_from_civil(year, month, day)?;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    let shown = format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC");
    Some((secs, shown))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm); `None` before 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(
            time(0x17, b"000301000000Z").map(|t| t.0),
            Some(11_017 * 86_400)
        );
        assert_eq!(
            time(0x18, b"20000301000001Z").map(|t| t.0),
            Some(11_017 * 86_400 + 1)
        );
        assert!(time(0x17, b"garbage").is_none());
        assert!(warning(b"\x30\x00", 0).is_none());
    }
}
