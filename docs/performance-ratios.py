#!/usr/bin/env python3
"""Ratios against a reference server from one `cargo xtask bench` run (docs/performance.md).

Reads RUN_DIR/trials.json and each trial's loadgen report; per (server, connections) cell prints
the median messages/s, its ratio to the reference's median at the same connection count, the
median of per-round ratios (trial k of the cell against trial k of the reference: the rounds are
interleaved, so each pair shares the machine's state), the server's and loadgen's CPU µs per
message and loadgen's busy fraction (the CPU split: both share the same 2 cores).

Usage: docs/performance-ratios.py RUN_DIR [REFERENCE]   (default reference: c-epoll)
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main() -> None:
    run = Path(sys.argv[1])
    reference = sys.argv[2] if len(sys.argv) > 2 else "c-epoll"
    trials = json.loads((run / "trials.json").read_text())["trials"]
    cells = defaultdict(dict)
    for t in trials:
        if t.get("failure") or not t.get("figures"):
            continue
        c = t["cell"]
        report = json.loads((run / t["loadgen_json"]).read_text())
        cells[(c["server"], c["connections"], c["size_bytes"])][t["trial"]] = {
            "mps": t["figures"]["messages_per_s"],
            "p50": t["figures"]["p50_us"],
            "server_cpu": t.get("server_cpu_per_message_us") or float("nan"),
            "loadgen_cpu": report["loadgen"]["cpu_per_message_us"],
            "busy": report["loadgen"]["busy_fraction"],
            "rss": t.get("server_peak_rss_kib") or 0,
        }
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(
        f"{'server':<11} {'conns':>6} {'msg/s':>9} {'÷ref':>6} {'paired':>7} "
        f"{'srv µs/msg':>10} {'÷ref':>6} {'lg µs/msg':>9} {'lg busy':>7} {'p50 µs':>7} {'n':>2}"
    )
    for key in sorted(cells, key=lambda k: (k[1], k[2], k[0])):
        server, conns, size = key
        ts = cells[key]
        ref = cells.get((reference, conns, size), {})
        mps = med([t["mps"] for t in ts.values()])
        ref_mps = med([t["mps"] for t in ref.values()])
        paired = med([ts[k]["mps"] / ref[k]["mps"] for k in ts if k in ref and ref[k]["mps"]])
        cpu = med([t["server_cpu"] for t in ts.values()])
        ref_cpu = med([t["server_cpu"] for t in ref.values()])
        print(
            f"{server:<11} {conns:>6} {mps:>9.0f} {mps / ref_mps:>6.2f} {paired:>7.2f} "
            f"{cpu:>10.2f} {cpu / ref_cpu:>6.2f} "
            f"{med([t['loadgen_cpu'] for t in ts.values()]):>9.2f} "
            f"{med([t['busy'] for t in ts.values()]):>7.2f} "
            f"{med([t['p50'] for t in ts.values()]):>7.0f} {len(ts):>2}"
        )


if __name__ == "__main__":
    main()
