//! What the command line takes from the user's habits rather than from
//! flags: `SMSS_HOST`, `SMSS_PORT`, `SMSS_TOKEN` and `--token-file`, a
//! `host:port` in one argument, and the nearest command to a misspelt one.
//!
//! Pure functions over strings (and one file read); [`super::args`] calls
//! them while it parses.

use std::path::Path;

use crate::error::{CliError, Result, usage};

/// The environment variables that set the global options' defaults.
pub const ENV_HOST: &str = "SMSS_HOST";
pub const ENV_PORT: &str = "SMSS_PORT";
pub const ENV_TOKEN: &str = "SMSS_TOKEN";

/// `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address: the
/// host, and the port when one is given.
pub fn host_port(v: &str, what: &str) -> Result<(String, Option<u16>)> {
    if v.is_empty() {
        return Err(usage(format!("{what}: empty host")));
    }
    if let Some(rest) = v.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(usage(format!(
                "{what}: no ']' after the IPv6 address in {v:?}"
            )));
        };
        return match after {
            "" => Ok((host.to_string(), None)),
            p => match p.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()) {
                Some(port) => Ok((host.to_string(), Some(port))),
                None => Err(usage(format!("{what}: expected [ADDR]:PORT, got {v:?}"))),
            },
        };
    }
    match v.matches(':').count() {
        0 => Ok((v.to_string(), None)),
        // One colon: HOST:PORT. More: a bare IPv6 address, no port.
        1 => {
            let (host, port) = v.split_once(':').unwrap_or((v, ""));
            match port.parse::<u16>() {
                Ok(p) if !host.is_empty() => Ok((host.to_string(), Some(p))),
                _ => Err(usage(format!(
                    "{what}: expected HOST or HOST:PORT (PORT 0-65535), got {v:?}"
                ))),
            }
        }
        _ => Ok((v.to_string(), None)),
    }
}

/// A port from `SMSS_PORT` or `--port`.
pub fn port(v: &str, what: &str) -> Result<u16> {
    v.parse().map_err(|_| {
        usage(format!(
            "{what}: expected a port number (0-65535), got {v:?}"
        ))
    })
}

/// The token in `path`: its first line, without the line end. A token
/// file keeps the secret out of `ps` and shell history.
pub fn token_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("reading the token file {}", path.display()),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(usage(format!(
            "--token-file: {} holds no token on its first line",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// The command closest to `name`, when it is close enough to be a typo
/// (at most two edits, and fewer than half its letters).
pub fn nearest<'a>(name: &str, commands: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    commands
        .map(|c| (edits(name, c), c))
        .filter(|&(d, _)| d <= 2 && d * 2 < name.len().max(2))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_in_one_argument() {
        let hp = |v: &str| host_port(v, "--host").ok();
        assert_eq!(hp("10.0.0.5"), Some(("10.0.0.5".into(), None)));
        assert_eq!(hp("h:12302"), Some(("h".into(), Some(12302))));
        assert_eq!(hp("::1"), Some(("::1".into(), None)));
        assert_eq!(hp("[::1]"), Some(("::1".into(), None)));
        assert_eq!(hp("[::1]:5"), Some(("::1".into(), Some(5))));
        for bad in ["", "h:", ":5", "h:99999", "h:x", "[::1", "[::1]x"] {
            assert!(host_port(bad, "--host").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_typo_finds_its_command_and_nonsense_finds_none() {
        let cmds = [
            "create", "delete", "pub", "sub", "stats", "slaves", "promote",
        ];
        assert_eq!(nearest("pubb", cmds.into_iter()), Some("pub"));
        assert_eq!(nearest("creat", cmds.into_iter()), Some("create"));
        assert_eq!(nearest("stat", cmds.into_iter()), Some("stats"));
        assert_eq!(nearest("xyzzy", cmds.into_iter()), None);
        assert_eq!(nearest("p", cmds.into_iter()), None);
        assert_eq!(edits("kitten", "sitting"), 3);
    }

    #[test]
    fn a_token_file_gives_its_first_line() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("smss-cli-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| CliError::Io {
            what: "mkdir".into(),
            source,
        })?;
        let f = dir.join("token");
        std::fs::write(&f, "s3cret \nignored\n").map_err(|source| CliError::Io {
            what: "write".into(),
            source,
        })?;
        assert_eq!(token_file(&f)?, "s3cret");
        std::fs::write(&f, "\n").map_err(|source| CliError::Io {
            what: "write".into(),
            source,
        })?;
        assert!(token_file(&f).is_err());
        assert!(token_file(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
