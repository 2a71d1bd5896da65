#!/usr/bin/env bash
# Builds the example policies and serves them on http://127.0.0.1:3000, with the cluster
# state of examples/cluster-snapshot.yaml (no cluster needed).
# Extra arguments go to `policy-server serve`, e.g. --port 8443 --cert-file ... --key-file ...
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip1 wasm32-unknown-unknown wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip1 -p required-labels -p deny-latest-tag \
  -p unique-ingress-host -p service-namespace-label -p unique-service-selector \
  -p namespace-label -p tenant-namespace-limit -p pod-privileged
cargo build --release --target wasm32-unknown-unknown -p default-labels
cargo build --release --target wasm32-wasip2 -p service-namespace-label-component \
  -p unique-ingress-host-component -p default-labels-component \
  -p unique-service-selector-component -p tenant-namespace-limit-component
cd ..
exec cargo run -p policy-server -- serve --addr 127.0.0.1 --port 3000 \
  --policies examples/policies.yml --cluster-snapshot examples/cluster-snapshot.yaml "$@"
