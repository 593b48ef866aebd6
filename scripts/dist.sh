#!/usr/bin/env bash
# `make dist`: the Debian package of databus, built with dpkg-deb from
#   /usr/bin/databus                      the release binary (OpenSSL and librdkafka linked in)
#   /etc/databus/databus.toml             the commented config (a conffile: upgrades keep your edits)
#   /lib/systemd/system/databus.service   the unit (packaging/databus.service)
#   /usr/share/doc/databus/               README.md, the other guides and docs/
#   /usr/share/databus/                   the Prometheus alert rules and the Grafana dashboard
# The maintainer scripts (packaging/postinst, prerm, postrm) add the system
# user `databus`, let it read the config, and reload systemd when it runs.
#
#   scripts/dist.sh     builds target/release/databus if needed and the package; prints the .deb path
#
# Environment (optional):
#   DATABUS_BIN   package this binary instead of building the release one (the
#                 tests package the debug build they already have)
#   DIST_DIR      where the .deb goes (default target/dist)
set -euo pipefail
cd "$(dirname "$0")/.."
ME=dist.sh
APT_LOG=${DATABUS_RUN_DIR:-$PWD/.run}/apt.log
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

umask 022
have dpkg-deb || apt_install dpkg
have objdump || apt_install binutils
bin=${DATABUS_BIN:-}
if [[ -z $bin ]]; then
	log "cargo build --release"
	cargo build --release --bin databus >&2
	bin=target/release/databus
fi
[[ -x $bin ]] || die "no executable at $bin"

version=$(sed -n -E 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary needs is its one dependency.
glibc=$(objdump -T "$bin" | { grep -o 'GLIBC_[0-9.]*' || true; } | sed 's/GLIBC_//' | sort -uV | tail -n 1)
[[ -n $glibc ]] || die "could not read the glibc versions $bin needs (objdump -T found none)"

out=${DIST_DIR:-target/dist}
stage=$(mktemp -d "${TMPDIR:-/tmp}/databus-dist.XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
install -D -m 0755 "$bin" "$stage/usr/bin/databus"
strip --strip-debug "$stage/usr/bin/databus" 2>/dev/null || true
install -D -m 0640 databus.toml "$stage/etc/databus/databus.toml"
install -D -m 0644 packaging/databus.service "$stage/lib/systemd/system/databus.service"
for doc in README.md ARCHITECTURE.md RELIABILITY.md BENCHMARKS.md FUZZING.md docs/*.md; do
	install -D -m 0644 "$doc" "$stage/usr/share/doc/databus/$doc"
done
install -D -m 0644 packaging/prometheus/databus-rules.yml "$stage/usr/share/databus/prometheus/databus-rules.yml"
install -D -m 0644 packaging/grafana/databus-dashboard.json "$stage/usr/share/databus/grafana/databus-dashboard.json"
mkdir -p "$stage/DEBIAN"
for script in postinst prerm postrm; do
	install -m 0755 "packaging/$script" "$stage/DEBIAN/$script"
done
echo /etc/databus/databus.toml >"$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: databus
Version: $version
Architecture: $arch
Maintainer: databus developers <databus@localhost>
Depends: libc6 (>= $glibc), libgcc-s1, adduser
Installed-Size: $size
Section: net
Priority: optional
Description: Kafka behind the Redis protocol
 A single binary that speaks the Redis protocol: services AUTH with
 key:secret@group/topic=T&role=pub|sub, publish with SET and consume with
 MGET, on Apache Kafka. Grants come from MySQL, Redis or the config file.
CONTROL
mkdir -p "$out"
deb="$out/databus_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >&2
log "built $deb"
echo "$deb"
