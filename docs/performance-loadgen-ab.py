#!/usr/bin/env python3
"""Two (or more) loadgen binaries against one echo server, in one run, alternating.

Usage: docs/performance-loadgen-ab.py 'SERVER_CMD {port}' ROUNDS LABEL=LOADGEN_BIN... -- LOADGEN_ARGS...
  e.g. docs/performance-loadgen-ab.py 'OUTDIR/epoll_echo {port}' 2 old=/tmp/loadgen.old \\
           new=target/release/loadgen -- --connections 16 --size 65536 --warmup 0.5s --duration 2s

The server starts once ({port} = 0; it must print 'listening on HOST:PORT'), pinned to CPU 0.
Each round runs every binary once, pinned to CPU 1 with --threads 1 (the order alternates
between rounds, so drift of a shared machine spreads over all binaries). LOADGEN_ARGS must
include --warmup and --duration. Per trial it prints: verified messages/s, connections opened
per second, loadgen CPU per message and its user-space share (loadgen.utime_s; '-' for binaries
that do not report it), the server's CPU per message over the same window (/proc/PID/stat at
the window's start and end, clock-tick resolution), their ratio, the loadgen's busy fraction,
connections per loadgen CPU-second (churn), the loadgen's peak RSS, and whether the run was
valid. Every byte is verified by the loadgen as usual; a trial with errors says so.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time


def seconds(args, flag):
    value = args[args.index(flag) + 1]
    if value.endswith("ms"):
        return float(value[:-2]) / 1000
    return float(value.rstrip("s"))


def main():
    args = sys.argv[1:]
    if "--" not in args or len(args) < 4:
        sys.exit(__doc__)
    sep = args.index("--")
    server_cmd, rounds = args[0], int(args[1])
    binaries = [b.split("=", 1) for b in args[2:sep]]
    lg_args = args[sep + 1:]
    warmup, duration = seconds(lg_args, "--warmup"), seconds(lg_args, "--duration")
    tick = os.sysconf("SC_CLK_TCK")
    server = subprocess.Popen(
        ["taskset", "-c", "0", "bash", "-c", "exec " + server_cmd.replace("{port}", "0")],
        stdout=subprocess.PIPE, text=True)
    port = re.search(r":(\d+)", server.stdout.readline()).group(1)

    def server_cpu_s():
        fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"# {time.strftime('%H:%M:%S', time.gmtime())} UTC, load average {load}, server port {port}")
    print(f"{'round':>5} {'loadgen':<8} {'msg/s':>9} {'conn/s':>8} {'lg µs/msg':>9} {'user%':>5} "
          f"{'srv µs/msg':>10} {'lg/srv':>6} {'busy':>5} {'conn/lg-cpu-s':>13} {'RSS MiB':>7} valid")
    try:
        for r in range(rounds):
            for label, binary in (binaries if r % 2 == 0 else binaries[::-1]):
                fd, out = tempfile.mkstemp(suffix=".json")
                os.close(fd)
                marks = {}
                timers = [threading.Timer(at, lambda k=k: marks.__setitem__(k, server_cpu_s()))
                          for k, at in (("start", warmup), ("end", warmup + duration))]
                for t in timers:
                    t.start()
                child = subprocess.Popen(
                    ["taskset", "-c", "1", binary, "--target", f"127.0.0.1:{port}", "--threads", "1",
                     "--quiet", "--json", out] + lg_args,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                _, status, usage = os.wait4(child.pid, 0)
                for t in timers:
                    t.join()
                try:
                    with open(out) as f:
                        report = json.load(f)
                except (OSError, ValueError):
                    print(f"{r:>5} {label:<8} no report (exit status {status})")
                    continue
                finally:
                    os.unlink(out)
                verified = report["messages"]["verified"]
                cost = report["loadgen"]
                server_us = (marks["end"] - marks["start"]) * 1e6 / verified if verified else 0.0
                user = cost.get("utime_s")
                user_pct = f"{100 * user / cost['cpu_s']:5.1f}" if user is not None and cost["cpu_s"] else "    -"
                opened = report["connections"]["opened"]
                per_cpu_s = verified / cost["cpu_s"] if cost["cpu_s"] else 0.0
                ratio = cost["cpu_per_message_us"] / server_us if server_us else 0.0
                reasons = ", ".join(report.get("invalid_reasons", []))
                print(f"{r:>5} {label:<8} {report['throughput']['messages_per_s']:>9.0f} "
                      f"{opened / report['duration_s']:>8.0f} {cost['cpu_per_message_us']:>9.2f} {user_pct} "
                      f"{server_us:>10.2f} {ratio:>6.2f} {cost['busy_fraction']:>5.2f} {per_cpu_s:>13.0f} "
                      f"{usage.ru_maxrss / 1024:>7.1f} {report['valid']} "
                      f"{report['errors']['total']} errors {reasons[:60]}", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
