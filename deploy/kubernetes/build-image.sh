#!/usr/bin/env bash
# Builds the container image `hanse:TAG` (default: dev) from the release binary:
# stages rootfs/ (the binary, the libraries `ldd` says it loads, busybox) and runs
# `buildah bud` on Containerfile. Needs Debian's buildah and busybox-static:
#   apt-get install buildah busybox-static
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
tag=${1:-dev}
source scripts/env.sh
cargo build --release -p hanse-cli
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/rootfs"
mkdir -p "$root/usr/local/bin" "$root/usr/lib/hanse" "$root/bin" "$root/tmp" \
  "$root/var/lib/hanse" "$root/run/hanse"
cp target/release/hanse "$root/usr/local/bin/hanse"
# Every library the binary loads, and the loader itself where it expects it.
ldd target/release/hanse | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
  cp -L "$lib" "$root/usr/lib/hanse/"
done
loader=$(ldd target/release/hanse | awk '/ld-linux/ { print $1 }')
mkdir -p "$root$(dirname "$loader")"
cp -L "$loader" "$root$loader"
cp /bin/busybox "$root/bin/busybox"
for tool in sh cat mkdir install; do ln -s busybox "$root/bin/$tool"; done
chown -R 10001:10001 "$root/tmp" "$root/var/lib/hanse" "$root/run/hanse"
chmod 1777 "$root/tmp"
cp deploy/kubernetes/Containerfile "$stage/"
buildah bud --storage-driver vfs --isolation chroot -f "$stage/Containerfile" -t "hanse:$tag" "$stage"
echo "built hanse:$tag"
