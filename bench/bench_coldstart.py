#!/usr/bin/env python3
"""Cold-start cost of a one-off run, side by side: what a Raspberry Pi cron job pays per start.

Usage: python3 bench/bench_coldstart.py [--runs 20]

Contenders, interleaved run by run so machine noise hits them alike:
  python-bare       `python -c pass` (the floor)
  seed-imports      the seed sample's imports (argparse, json, ssl, urllib.request)
  iotpost-dry-run   post_https_sample.py --dry-run (bundle checks, TLS context, one payload)
  iotpost-help      post_https_sample.py --help

Also prints the heaviest imports of the dry run (from -X importtime). Reports medians and
ratios to the bare interpreter.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def once(cmd) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    ns = p.parse_args()
    py = sys.executable
    sender = str(ROOT / "post_https_sample.py")
    contenders = {
        "python-bare": [py, "-c", "pass"],
        "seed-imports": [py, "-c", "import argparse, datetime, json, ssl, urllib.request, urllib.parse, urllib.error"],
        "iotpost-dry-run": [py, sender, "--dry-run", "--quiet"],
        "iotpost-help": [py, sender, "--help"],
    }
    times = {k: [] for k in contenders}
    for _ in range(ns.runs):
        for name, cmd in contenders.items():
            times[name].append(once(cmd))
    base = statistics.median(times["python-bare"])
    print("runs: %d, python: %s" % (ns.runs, sys.version.split()[0]))
    print("%-16s %10s %8s" % ("contender", "ms", "ratio"))
    for name, values in times.items():
        med = statistics.median(values)
        print("%-16s %10.1f %7.2fx" % (name, med * 1000, med / base))
    proc = subprocess.run([py, "-X", "importtime", sender, "--dry-run", "--quiet"], capture_output=True,
                          text=True, cwd=str(ROOT))
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print("heaviest imports of the dry run (cumulative us):")
    for cum, name in sorted(rows, reverse=True)[:8]:
        print("  %8d %s" % (cum, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
