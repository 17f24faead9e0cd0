#!/usr/bin/env python3
"""The fairness budget (`--reads-per-turn`) by measurement (docs/performance.md, issue 11).

For each budget, in interleaved trials: a release echo-server (`--workers 2`, pinned to CPU 0)
serves, at the same time, 4 streaming connections (1 MiB messages, 2 in flight each) and 64
ping-pong connections (64-byte messages, depth 1), from two loadgen processes pinned to CPU 1
(1 thread each, 0.5 s warm-up, 2 s measured). A budget that is too large lets the streams hold
a worker for long turns (ping-pong latency rises); one that is too small costs the streams
queue round trips. Prints each trial and the medians per budget.

Usage: docs/performance-budget.py STRATEGY BUDGETS TRIALS
  e.g. docs/performance-budget.py reactor-pool 1,4,16,64 4
Needs target/release/{echo-server,loadgen} (cargo build --release -p echo-server -p loadgen).
"""

import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(__file__).resolve().parent.parent / "target" / "release"


def trial(strategy: str, budget: int, out: Path) -> dict:
    server = subprocess.Popen(
        ["taskset", "-c", "0", BIN / "echo-server", "--addr", "127.0.0.1:0",
         "--strategy", strategy, "--workers", "2", "--reads-per-turn", str(budget)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = server.stdout.readline().split()[-1]
        base = ["taskset", "-c", "1", BIN / "loadgen", "--target", addr, "--quiet",
                "--threads", "1", "--duration", "2s", "--warmup", "500ms", "--timeout", "20s"]
        streams = subprocess.Popen(
            base + ["--connections", "4", "--size", "1048576", "--depth", "2",
                    "--json", out / "streams.json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(base + ["--connections", "64", "--size", "64", "--json",
                               out / "ping.json"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        streams.wait()
    finally:
        server.terminate()
        server.wait()
    s = json.loads((out / "streams.json").read_text())
    p = json.loads((out / "ping.json").read_text())
    return {
        "stream_mib_s": s["throughput"]["bytes_per_s"] / 2**20,
        "ping_msg_s": p["throughput"]["messages_per_s"],
        "ping_p50_us": p["latency_us"]["p50"],
        "ping_p99_us": p["latency_us"]["p99"],
        "errors": s["errors"]["total"] + p["errors"]["total"],
    }


def main() -> None:
    strategy, budgets, trials = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], int(sys.argv[3])
    results: dict[int, list[dict]] = {b: [] for b in budgets}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(trials):
            order = budgets[:]
            random.shuffle(order)
            for budget in order:
                r = trial(strategy, budget, Path(tmp))
                results[budget].append(r)
                print(budget, r, flush=True)
    print("--- medians")
    for budget in budgets:
        rs = results[budget]
        med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
        print(f"{strategy} --reads-per-turn {budget:4}: streams {med('stream_mib_s'):7.1f} MiB/s; "
              f"ping-pong {med('ping_msg_s'):8.0f} msg/s, p50 {med('ping_p50_us'):6.0f} µs, "
              f"p99 {med('ping_p99_us'):6.0f} µs; errors {sum(r['errors'] for r in rs)}")


if __name__ == "__main__":
    main()
