//! The config file as a secret: a file that holds `auth.token` and that
//! other users may read gives the token away. [`Config::token_file_warning`]
//! says so once at start (the file, its mode and the fix); nothing refuses
//! to start, since the operator may have reasons (a container with one
//! user).
//!
//! Read once at start on the main thread; touches only the file's metadata.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::Config;

/// Mode bits that let users other than the owner and the group read or
/// write the file. Group read is fine: the install steps give the file to
/// the service's group with mode 0640.
const OTHERS_RW: u32 = 0o006;

impl Config {
    /// A warning when this config holds a non-empty `auth.token` and the
    /// file at `path` it was read from is readable or writable by others.
    /// `None` without a token, for a private file, or when the file's mode
    /// cannot be read (loading it just worked, so that is a race to ignore).
    pub fn token_file_warning(&self, path: &Path) -> Option<String> {
        if self.auth.token.is_empty() {
            return None;
        }
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        mode_warning(path, mode)
    }
}

fn mode_warning(path: &Path, mode: u32) -> Option<String> {
    if mode & OTHERS_RW == 0 {
        return None;
    }
    let how = match (mode & 0o004 != 0, mode & 0o002 != 0) {
        (true, true) => "readable and writable",
        (true, false) => "readable",
        _ => "writable",
    };
    let p = path.display();
    Some(format!(
        "config file {p} holds auth.token and is {how} by every user of this machine \
         (mode {:04o}): anyone here can read or change the token; fix: chmod 600 {p} \
         (or chmod 640 with the service's group as the file's group)",
        mode & 0o7777
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_others_can_read_or_write_are_named() {
        let p = Path::new("/etc/smss/config.yaml");
        for private in [0o100600, 0o100640, 0o100400, 0o100660] {
            assert_eq!(mode_warning(p, private), None, "{private:o}");
        }
        let w = mode_warning(p, 0o100644).expect("0644 warns");
        assert!(w.contains("/etc/smss/config.yaml"), "{w}");
        assert!(w.contains("mode 0644"), "{w}");
        assert!(w.contains("chmod 600 /etc/smss/config.yaml"), "{w}");
        assert!(w.contains("is readable by"), "{w}");
        let w = mode_warning(p, 0o100666).expect("0666 warns");
        assert!(w.contains("readable and writable"), "{w}");
        let w = mode_warning(p, 0o100602).expect("0602 warns");
        assert!(w.contains("is writable by"), "{w}");
    }

    #[test]
    fn no_token_no_warning() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let mut c = Config::default();
        assert_eq!(c.token_file_warning(&path), None);
        c.auth.token = "s3cret".into();
        assert!(c.token_file_warning(&path).is_some());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        assert_eq!(c.token_file_warning(&path), None);
        Ok(())
    }
}
