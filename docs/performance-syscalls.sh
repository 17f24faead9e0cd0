#!/usr/bin/env bash
# System calls and context switches per message of an echo server under a bounded load
# (docs/performance.md): `strace -c -f` attached to the server while loadgen sends a fixed number
# of 64-byte messages (closed loop, depth 1) over C connections; then, without strace (which
# stops the threads at every call), the same load again, reading the server's context switches
# (voluntary + involuntary, summed over its threads, /proc/PID/task/*/status) and its CPU time
# (utime + stime, /proc/PID/stat) before and after. strace slows the server a lot, so the first
# run counts calls; it does not time them. Server on CPU 0, loadgen on CPU 1.
#
# Usage: docs/performance-syscalls.sh CONNECTIONS MESSAGES NAME='CMD … {port}'…
#   e.g. docs/performance-syscalls.sh 128 50000 event-loop='target/release/echo-server --strategy event-loop --addr 127.0.0.1:{port}' c-epoll='OUTDIR/epoll_echo {port}'
set -euo pipefail
cd "$(dirname "$0")/.."
connections=$1
messages=$2
shift 2
# Starts the server of a spec on a free port (CPU 0); sets $pid and $port.
start_server() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    local cmd=${1//\{port\}/$port}
    taskset -c 0 bash -c "exec $cmd" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}
load() {
    taskset -c 1 target/release/loadgen --target "127.0.0.1:$port" --connections "$connections" \
        --threads 1 --messages "$messages" --warmup 0s --timeout 60s --quiet >/dev/null
}
stop_server() {
    kill -TERM "$pid"
    wait "$pid" || true
}
# Context switches summed over the server's threads, and its CPU ticks.
switches() { cat /proc/"$pid"/task/*/status | awk '/ctxt_switches/ { n += $2 } END { print n }'; }
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' /proc/"$pid"/stat; }
for spec in "$@"; do
    name=${spec%%=*}
    template=${spec#*=}
    start_server "$template"
    out=$(mktemp)
    strace -c -f -o "$out" -p "$pid" 2>/dev/null &
    st=$!
    sleep 1 # strace attached to every thread
    load
    kill -INT "$st"
    wait "$st" || true
    stop_server
    echo "== $name: $connections connections, $messages messages; calls per message:"
    awk -v m="$messages" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
            printf "  %-16s %8.3f\n", $NF, $4 / m; total += $4 }
        END { printf "  %-16s %8.3f\n", "total", total / m }' "$out"
    rm -f "$out"
    start_server "$template"
    load # warm-up, not counted
    s0=$(switches); c0=$(cpu_ticks)
    load
    s1=$(switches); c1=$(cpu_ticks)
    stop_server
    awk -v s="$((s1 - s0))" -v c="$((c1 - c0))" -v m="$messages" -v hz="$(getconf CLK_TCK)" 'BEGIN {
            printf "  without strace: %.3f context switches, %.2f µs server CPU per message\n",
                s / m, c / hz * 1e6 / m }'
done
