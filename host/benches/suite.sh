#!/usr/bin/env bash
# Runs the benchmark suite (host/benches/suite/) on a release build and writes
# target/bench-report.json. Installs what it needs: wrk, the load generator (Debian), and
# the wasm targets the example policies build for. Arguments go to the suite: section
# names (evaluation host_call e2e startup memory freshness) or --quick.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v wrk >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq wrk
fi
rustup target add wasm32-wasip1 wasm32-unknown-unknown wasm32-wasip2

exec cargo bench -p policy-server --bench suite -- "$@"
