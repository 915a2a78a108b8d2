//! The Debian package (`make deb`, config/deb/build.sh) built from this
//! build's binaries and inspected without installing it: contents and
//! modes, control fields, conffiles, the unit's paths, and maintainer
//! scripts that parse. Skipped, with the reason printed, where dpkg-deb is
//! missing (it is on every Debian machine).

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build(out: &Path) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_smss"))
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/deb/build.sh");
    let printed = run(Command::new("sh").arg(&script).arg(&bin).arg(out));
    PathBuf::from(printed.trim())
}

#[test]
fn the_package_holds_the_server_its_private_config_and_its_unit() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        println!("SKIP the package test: dpkg-deb is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build(dir.path());
    let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("smss_{version}_")) && name.ends_with(".deb"),
        "{name}"
    );

    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mode_of = |path: &str| -> String {
        contents
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"))
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(mode_of("./usr/bin/smss"), "-rwxr-xr-x");
    assert_eq!(mode_of("./usr/bin/smss-cli"), "-rwxr-xr-x");
    // The config may hold auth.token: not readable by every user.
    assert_eq!(mode_of("./etc/smss/config.yaml"), "-rw-r-----");
    assert_eq!(mode_of("./etc/smss/slave.yaml"), "-rw-r-----");
    assert_eq!(mode_of("./lib/systemd/system/smss.service"), "-rw-r--r--");
    assert!(contents.contains("./var/lib/smss/"), "{contents}");
    assert!(
        contents.lines().all(|l| l.contains("root/root")),
        "{contents}"
    );

    let field = |f: &str| run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f));
    assert_eq!(field("Package").trim(), "smss");
    assert_eq!(field("Version").trim(), version);
    assert!(field("Depends").contains("adduser"));

    let x = dir.path().join("x");
    run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(&x));
    let conffiles = std::fs::read_to_string(x.join("DEBIAN/conffiles")).expect("conffiles");
    assert_eq!(conffiles, "/etc/smss/config.yaml\n/etc/smss/slave.yaml\n");
    for script in ["postinst", "prerm", "postrm"] {
        let path = x.join("DEBIAN").join(script);
        run(Command::new("sh").arg("-n").arg(&path));
        let text = std::fs::read_to_string(&path).expect("script");
        assert!(text.starts_with("#!/bin/sh"), "{script}");
    }
    let postinst = std::fs::read_to_string(x.join("DEBIAN/postinst")).expect("postinst");
    assert!(postinst.contains("adduser --system") && postinst.contains("chmod 0640"));
    let unit = std::fs::read_to_string(x.join("lib/systemd/system/smss.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/smss --config /etc/smss/config.yaml"),
        "{unit}"
    );
    assert!(unit.contains("WorkingDirectory=/var/lib/smss"), "{unit}");
    assert!(unit.contains("ReadWritePaths=/var/lib/smss"), "{unit}");
    assert!(!unit.contains("/opt/smss"), "{unit}");
    let bridge = std::fs::read_to_string(x.join("lib/systemd/system/smss-bridge.service"))
        .expect("the bridge's unit");
    assert!(
        bridge.contains("ExecStart=/usr/bin/smss-cli bridge --nats"),
        "{bridge}"
    );
    assert!(!bridge.contains("/opt/smss"), "{bridge}");
    assert_eq!(
        mode_of("./lib/systemd/system/smss-bridge.service"),
        "-rw-r--r--"
    );
    // The packaged config is the repository's: data under the working dir.
    let cfg = std::fs::read_to_string(x.join("etc/smss/config.yaml")).expect("config");
    assert!(cfg.contains("path: data"), "{cfg}");
}
