#!/usr/bin/env bash
# The issue-12 probes against the release binary, on loopback: stalled bodies (RSS),
# one slow policy beside a fast one (wrk), and requests lost around SIGTERM (wrk).
# Needs wrk, python3, openssl, curl. Usage: host/benches/hostile/probes.sh [stall|fairness|sigterm]...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release -p policy-server --manifest-path "$repo/Cargo.toml" >/dev/null
binary="$repo/target/release/policy-server"
fast="$repo/examples/target/wasm32-wasip1/release/deny_latest_tag.wasm"
slow="$repo/tests/policies/target/wasm32-wasip1/release/misbehaving.wasm"
[ -f "$fast" ] && [ -f "$slow" ] || { echo "build the policies first: cargo test --workspace" >&2; exit 1; }
cat > "$work/policies.yml" <<YML
slow: {module: $slow, settings: {behaviour: loop}, timeoutEvalSeconds: 2}
fast: {module: $fast}
YML
python3 - "$work/review.json" <<'PY'
import json, sys
obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default", "labels": {"team": "a"}},
       "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
req = {"uid": "0000-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
       "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
       "name": "web", "namespace": "default", "userInfo": {"username": "admin"}, "object": obj}
json.dump({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}, open(sys.argv[1], "w"))
PY
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/tls.key" -out "$work/tls.crt" -days 1 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
export REVIEW="$work/review.json"
port=4400

start() { # start PORT [flags...]: prints the pid once ready
  local p=$1; shift
  "$binary" serve --addr 127.0.0.1 --port "$p" --policies "$work/policies.yml" --log-fmt json "$@" \
    > "$work/server-$p.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do
    curl -sk -o /dev/null "http://127.0.0.1:$p/readiness" && break
    curl -sk -o /dev/null "https://127.0.0.1:$p/readiness" && break
    sleep 0.1
  done
  echo "$pid"
}

stall() {
  for mode in plain tls; do
    port=$((port + 1))
    local flags=() scheme=http
    [ "$mode" = tls ] && flags=(--cert-file "$work/tls.crt" --key-file "$work/tls.key") && scheme=https
    pid=$(start $port "${flags[@]}")
    for _ in $(seq 1 20); do curl -sk -o /dev/null -X POST -H 'content-type: application/json' -d @"$REVIEW" "$scheme://127.0.0.1:$port/validate/fast"; done
    python3 "$here/stall_bodies.py" $port "$pid" $mode 500
    kill -TERM "$pid"
  done
}

fairness() {
  port=$((port + 1))
  pid=$(start $port --workers 2)
  run_fast() { wrk -t1 -c16 -d10s --latency -s "$here/post.lua" "http://127.0.0.1:$port/validate/fast" | grep -E "Requests/sec|  50%|  99%|Non-2xx" | tr -s ' \n' ' '; echo; }
  echo "fast alone: $(run_fast)"
  for n in 1 2 300; do
    wrk -t1 -c$n -d15s --timeout 14s -s "$here/post.lua" "http://127.0.0.1:$port/validate/slow?timeout=10s" > "$work/slow.txt" 2>&1 &
    sleep 2
    echo "fast beside $n slow clients: $(run_fast)"
    wait %%
  done
  kill -TERM "$pid"
}

sigterm() {
  for run in $(seq 1 10); do
    port=$((port + 1))
    pid=$(start $port --shutdown-drain-seconds 1 --shutdown-grace-seconds 5)
    (sleep 1; kill -TERM "$pid") &
    # "read" errors are requests sent and not answered; "write" errors are reconnections
    # refused once the listener closed (nothing was sent).
    echo "run $run: $(wrk -t2 -c16 -d4s -s "$here/post.lua" "http://127.0.0.1:$port/validate/fast" | grep -E "requests in|Socket errors" | tr -s ' \n' ' ')"
    wait
  done
}

for probe in "${@:-stall fairness sigterm}"; do
  for p in $probe; do "$p"; done
done
