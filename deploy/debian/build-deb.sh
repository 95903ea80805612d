#!/bin/sh
# Builds the Debian package dstack-gateway from a gateway binary with
# dpkg-deb alone (no cargo-deb to compile in CI): the binary with its debug
# info split off, the example configuration as a conffile, the hardened
# systemd unit, and the maintainer scripts beside this file.
#
#   sh deploy/debian/build-deb.sh BINARY VERSION OUTDIR    # prints the .deb's path
#
# `cargo xtask package` runs it on the release build; tests/package_deb.rs on
# the test build, then installs the package in a container.
set -eu

binary="$1"
version="$2"
outdir="$3"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
arch=$(dpkg --print-architecture)
name=dstack-gateway

stage=$(mktemp -d "${TMPDIR:-/tmp}/deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
root="$stage/root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/etc/dstack-gateway" "$root/lib/systemd/system" "$root/usr/share/doc/$name"

# The package carries no debug info; `gateway.debug` stays in OUTDIR for
# whoever needs symbols (gdb finds it through the debuglink).
objcopy --only-keep-debug "$binary" "$outdir/gateway.debug"
objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$outdir/gateway.debug" "$binary" "$root/usr/bin/gateway"
chmod 0755 "$root/usr/bin/gateway"

install -m 0644 "$repo/config/gateway.toml" "$root/etc/dstack-gateway/gateway.toml"
install -m 0644 "$repo/deploy/systemd/dstack-gateway.service" "$root/lib/systemd/system/dstack-gateway.service"
install -m 0755 "$here/postinst" "$root/DEBIAN/postinst"
install -m 0755 "$here/prerm" "$root/DEBIAN/prerm"
install -m 0755 "$here/postrm" "$root/DEBIAN/postrm"
printf '/etc/dstack-gateway/gateway.toml\n' >"$root/DEBIAN/conffiles"
cat >"$root/usr/share/doc/$name/README" <<EOF
dstack WireGuard gateway $version

  /etc/dstack-gateway/gateway.toml   the configuration (GATEWAY_<SECTION>_<KEY> overrides it)
  gateway node keygen --out /etc/dstack-gateway/wireguard.key
  gateway run --check-config         checks the configuration and the key file
  systemctl enable --now dstack-gateway
  journalctl -u dstack-gateway       JSON log lines
  /var/lib/dstack-gateway/           registry.json, audit.jsonl

See docs/OPERATIONS.md in the source repository.
EOF
printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: %s\nLicense: Apache-2.0\n' "$name" \
  >"$root/usr/share/doc/$name/copyright"

# Shared libraries the binary links against, as Debian packages.
depends=$(objdump -p "$root/usr/bin/gateway" | awk '/NEEDED/ {print $2}' | while read -r lib; do
  case "$lib" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*) echo "libc6 (>= 2.34)" ;;
    libgcc_s.so.*) echo "libgcc-s1" ;;
    *) echo "unknown:$lib" ;;
  esac
done | sort -u | paste -sd, - | sed 's/,/, /g')
case "$depends" in *unknown:*) echo "build-deb: no package known for a library: $depends" >&2; exit 1 ;; esac
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)

cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: dstack gateway maintainers <noreply@localhost>
Installed-Size: $size
Depends: $depends
Recommends: bpftool, wireguard-tools
Section: net
Priority: optional
Description: eBPF-gated userspace WireGuard gateway whose peer list is an NFT contract
 Nodes join a private WireGuard network only while their key is bound to an
 active access NFT on an Ethereum chain. The gateway follows the contract,
 runs the WireGuard data plane in userspace and fronts it with an XDP
 program that drops revoked peers' packets in the kernel.
EOF

deb="$outdir/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
echo "$deb"
