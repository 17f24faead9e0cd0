#!/usr/bin/env bash
# System calls per message of an echo server under a bounded load (docs/performance.md):
# `strace -c -f` attached to the server while loadgen sends a fixed number of 64-byte messages
# (closed loop, depth 1) over C connections. strace slows the server a lot, so this counts calls;
# it does not time them.
#
# Usage: docs/performance-syscalls.sh CONNECTIONS MESSAGES NAME='CMD … {port}'…
#   e.g. docs/performance-syscalls.sh 128 50000 event-loop='target/release/echo-server --strategy event-loop --addr 127.0.0.1:{port}' c-epoll='/tmp/peers/epoll_echo {port}'
set -euo pipefail
cd "$(dirname "$0")/.."
connections=$1
messages=$2
shift 2
for spec in "$@"; do
    name=${spec%%=*}
    template=${spec#*=}
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cmd=${template//\{port\}/$port}
    taskset -c 0 bash -c "exec $cmd" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    out=$(mktemp)
    strace -c -f -o "$out" -p "$pid" 2>/dev/null &
    st=$!
    sleep 1 # strace attached to every thread
    taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" --connections "$connections" \
        --threads 1 --messages "$messages" --warmup 0s --timeout 60s --quiet >/dev/null
    kill -INT "$st"
    wait "$st" || true
    kill -TERM "$pid"
    wait "$pid" || true
    echo "== $name: $connections connections, $messages messages; calls per message:"
    awk -v m="$messages" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
            printf "  %-16s %8.3f\n", $NF, $4 / m; total += $4 }
        END { printf "  %-16s %8.3f\n", "total", total / m }' "$out"
    rm -f "$out"
done
