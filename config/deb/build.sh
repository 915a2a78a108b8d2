#!/bin/sh
# Builds the Debian package smss_<version>_<arch>.deb with dpkg-deb alone
# (no other packaging tools): `make deb`, or the test that inspects it.
#
#   config/deb/build.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds the built smss and smss-cli; the version is Cargo.toml's.
# Layout: /usr/bin/smss, /usr/bin/smss-cli, /etc/smss/config.yaml and
# /etc/smss/slave.yaml (conffiles; postinst gives them mode 0640, group
# smss), /lib/systemd/system/smss.service, data under /var/lib/smss (the
# unit's working directory, so the config's `store.path: data` is
# /var/lib/smss/data), a system user smss made by postinst.
set -eu
bin=${1:?usage: build.sh BIN_DIR OUT_DIR}
out=${2:?usage: build.sh BIN_DIR OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n 1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/etc/smss" \
    "$stage/lib/systemd/system" "$stage/var/lib/smss" "$stage/usr/share/doc/smss"
install -m 0755 "$bin/smss" "$bin/smss-cli" "$stage/usr/bin/"
# The release profile keeps debug info for profiling; a package need not.
if command -v strip >/dev/null; then
    strip --strip-debug "$stage/usr/bin/smss" "$stage/usr/bin/smss-cli"
fi
install -m 0640 "$top/config/config.yaml" "$top/config/slave.yaml" "$stage/etc/smss/"
install -m 0644 "$top/README.md" "$stage/usr/share/doc/smss/README.md"
# The repository's unit, with the package's paths.
sed -e 's|/opt/smss/smss|/usr/bin/smss|g' \
    -e 's|/opt/smss/config/|/etc/smss/|g' \
    -e 's|^WorkingDirectory=.*|WorkingDirectory=/var/lib/smss|' \
    -e 's|^ReadWritePaths=.*|ReadWritePaths=/var/lib/smss|' \
    -e 's|^Documentation=.*|Documentation=file:///usr/share/doc/smss/README.md|' \
    -e '/^# /d' -e '/^#$/d' \
    "$top/config/smss.service" > "$stage/lib/systemd/system/smss.service"
chmod 0644 "$stage/lib/systemd/system/smss.service"
# The bridge's unit: installed, not enabled (its ExecStart names the NATS
# servers to edit first, with `systemctl edit smss-bridge`).
sed -e 's|/opt/smss/smss-cli|/usr/bin/smss-cli|g' \
    -e 's|/opt/smss/config/|/etc/smss/|g' \
    -e 's|^WorkingDirectory=.*|WorkingDirectory=/var/lib/smss|' \
    -e 's|^Documentation=.*|Documentation=file:///usr/share/doc/smss/README.md|' \
    -e '/^# /d' -e '/^#$/d' \
    "$top/config/smss-bridge.service" > "$stage/lib/systemd/system/smss-bridge.service"
chmod 0644 "$stage/lib/systemd/system/smss-bridge.service"

size=$(du -sk "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: smss
Version: $version
Architecture: $arch
Maintainer: smss developers <smss@localhost>
Installed-Size: $size
Depends: adduser, libc6
Section: net
Priority: optional
Description: small persistent message queue
 One binary, one config file and one data directory: topics with
 lifetimes, persistent messages with one global event id, batch and
 delayed publish, subscriptions with acks, consumer groups, and
 master-slave replication with fencing by epoch.
CONTROL
printf '/etc/smss/config.yaml\n/etc/smss/slave.yaml\n' > "$stage/DEBIAN/conffiles"
for f in postinst prerm postrm; do
    install -m 0755 "$here/$f" "$stage/DEBIAN/$f"
done
mkdir -p "$out"
dpkg-deb --root-owner-group --build "$stage" "$out/smss_${version}_${arch}.deb" >/dev/null
echo "$out/smss_${version}_${arch}.deb"
