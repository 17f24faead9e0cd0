#!/usr/bin/env python3
"""Adds up `cargo xtask calibrate` runs (docs/perf-gate.md): the calibration tables of several
directories as one, and the pair-to-pair noise of the same-against-same runs.

Running the calibration in short rounds (`--runs 1`, each under its own exclusive slot on a
shared machine) and adding them up here gives the same table as one long `--runs N`, except that
each round sized its injected costs from its own base measurement (the table shows their range).

Usage: docs/perf-gate-calibration.py CALIBRATION_DIR...
"""

import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

VERDICTS = ["slower", "no_change", "faster", "inconclusive"]


def main() -> None:
    conditions = defaultdict(list)
    costs = defaultdict(list)
    bases = []
    same = []
    for directory in sys.argv[1:]:
        calibration = json.loads((Path(directory) / "calibration.json").read_text())
        if calibration.get("base_cpu_per_message_us"):
            bases.append(calibration["base_cpu_per_message_us"])
        same.extend(calibration.get("same_slowdowns", []))
        for condition in calibration["conditions"]:
            conditions[condition["rise"]].extend(condition["runs"])
            costs[condition["rise"]].append(condition["cost_per_64_bytes_ns"])
    if not conditions:
        sys.exit("no calibration.json found")
    print(
        f"{len(sys.argv) - 1} calibration directories; base CPU per message "
        f"{min(bases):.2f}–{max(bases):.2f} µs (median {statistics.median(bases):.2f})\n"
    )
    print(
        "| candidate | extra CPU per 64 B | runs | slower | no change | faster | inconclusive "
        "| rate of `slower` | median pairs | median time | median detectable rise |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rise in sorted(conditions):
        runs = conditions[rise]
        counts = {v: sum(1 for r in runs if r.get("verdict") == v) for v in VERDICTS}
        detectable = [r["minimum_detectable"] for r in runs if r.get("minimum_detectable")]
        nonzero = [c for c in costs[rise] if c]
        cost = f"{min(nonzero)}–{max(nonzero)} ns" if nonzero else "0 ns"
        print(
            f"| {'itself' if rise == 0 else f'itself +{rise * 100:.0f}%'} | {cost} | {len(runs)} "
            f"| {counts['slower']} | {counts['no_change']} | {counts['faster']} "
            f"| {counts['inconclusive']} "
            f"| {counts['slower'] / len(runs) * 100:.0f}% "
            f"({'false alarms' if rise == 0 else 'detected'}) "
            f"| {statistics.median(r['pairs_run'] for r in runs):.0f} "
            f"| {statistics.median(r['seconds'] for r in runs):.0f} s "
            f"| {statistics.median(detectable) * 100:.1f}% |"
            if detectable
            else f"| {rise} | {cost} | {len(runs)} | (no detectable figure) |"
        )
    if len(same) > 1:
        middle = statistics.median(same)
        mad = statistics.median(abs(x - middle) for x in same)
        print(
            f"\nsame-against-same pairs: {len(same)}; slowdown ln(cost ratio) median "
            f"{middle * 100:+.2f}%, robust SD (1.4826 × MAD) {1.4826 * mad * 100:.2f}%, "
            f"SD {statistics.stdev(same) * 100:.2f}%, range {min(same) * 100:+.2f}% … "
            f"{max(same) * 100:+.2f}%"
        )
        print("values (for the gate's simulation test):")
        print(", ".join(f"{x:.4f}" for x in same))
    print(f"\n(exp of a slowdown minus 1 is the rise: {math.expm1(0.05) * 100:.2f}% for 0.05)")


if __name__ == "__main__":
    main()
