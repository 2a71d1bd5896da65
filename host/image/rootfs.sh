#!/usr/bin/env bash
# Assembles the root file system of the server's image (see host/Dockerfile):
#   rootfs.sh BINARY DIR [MODULE.wasm...]
# BINARY and the shared libraries it links (as ldd lists them), a non-root user
# (65532, as distroless images have it), the system's CA bundle, and the modules in
# /policies.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BINARY DIR [MODULE.wasm...]" >&2
  exit 2
fi
binary=$1 root=$2
shift 2
mkdir -p "$root/etc" "$root/policies" "$root/tmp"
chmod 1777 "$root/tmp"
install -m 0755 "$binary" "$root/policy-server"
# Debug information is most of a release binary's size (it is built with it, for perf).
if command -v strip > /dev/null; then
  strip --strip-debug "$root/policy-server"
fi
# Each library at the path the dynamic loader looks for it.
ldd "$binary" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | while read -r library; do
  mkdir -p "$root$(dirname "$library")"
  cp -L "$library" "$root$library"
done
# The system's certificate authorities, so policies pull from public registries over
# verified TLS (a private registry's CA goes in sources.yml).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
echo 'nonroot:x:65532:65532:nonroot:/:/sbin/nologin' > "$root/etc/passwd"
echo 'nonroot:x:65532:' > "$root/etc/group"
for module in "$@"; do
  install -m 0644 "$module" "$root/policies/"
done
