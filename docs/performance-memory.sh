#!/usr/bin/env bash
# Server memory per connection at 10,000 persistent connections (issue 6), as in
# docs/performance.md. For each strategy: start a release echo-server (pinned to core 0), warm it
# with 16 connections, read its VmRSS (the baseline), then hold 10,000 connections from one
# loadgen process (pinned to core 1) at a low open-loop rate so every connection is served
# (about one echo every 5 s each) and read VmRSS while they are open and VmHWM at the end.
# Per connection = (VmHWM - baseline) / 10,000.
#
# Usage: docs/performance-memory.sh [STRATEGY…]   (default: event-loop thread async uring)
# Needs target/release/{echo-server,loadgen} (cargo build --release -p echo-server -p loadgen).
# Client ports are spread over 127.0.0.2-127.0.0.9 so that 10,000 closed connections per
# strategy do not exhaust the ephemeral ports while they sit in TIME_WAIT.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
strategies=("$@")
[ ${#strategies[@]} -gt 0 ] || strategies=(event-loop thread async uring)
connections=10000
kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

printf '%-11s %12s %12s %12s %14s %s\n' strategy baseline_KiB rss_10k_KiB hwm_KiB KiB_per_conn "loadgen result"
for s in "${strategies[@]}"; do
    log=$(mktemp)
    taskset -c 0 "$bin/echo-server" --addr 127.0.0.1:0 --strategy "$s" \
        --max-connections 20000 --idle-timeout 60s >"$log" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
    addr=$(sed -n 's/^listening on //p' "$log" | head -1)
    taskset -c 1 "$bin/loadgen" --target "$addr" --connections 16 --threads 1 \
        --duration 1s --warmup 0s --quiet >/dev/null
    base=$(kib "$pid" VmRSS)
    json=$(mktemp)
    taskset -c 1 "$bin/loadgen" --target "$addr" --connections "$connections" --threads 1 \
        --rate 2000 --duration 6s --warmup 2s --timeout 20s --quiet \
        --source-addrs 127.0.0.2-127.0.0.9 --json "$json" >/dev/null &
    lg=$!
    sleep 6 # connections open, inside the measured window
    rss=$(kib "$pid" VmRSS)
    wait "$lg" || true
    hwm=$(kib "$pid" VmHWM)
    result=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("opened", r["connections"]["opened"], "verified", r["messages"]["verified"], "errors", r["errors"]["total"])' "$json" 2>/dev/null || echo "no report")
    kill -TERM "$pid"
    wait "$pid" || true
    awk -v s="$s" -v b="$base" -v r="$rss" -v h="$hwm" -v n="$connections" -v res="$result" \
        'BEGIN { printf "%-11s %12d %12d %12d %14.2f %s\n", s, b, r, h, (h - b) / n, res }'
    rm -f "$log" "$json"
done
