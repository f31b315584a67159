#!/usr/bin/env python3
"""A day's backlog over a slow link: 2,000 spooled payloads drained batched vs one by one.

Usage: python3 bench/bench_backlog.py [--payloads 2000] [--batch-size 500] [--delay 0.1] [--rounds 1]
       (a real interpreter, not the pyenv shim)

The twin (in this process, on 127.0.0.1 over verified TLS) adds ``--delay`` seconds to every POST
(FaultPlan "delay": what a high-latency link or a slow platform costs per request). Each contender
drains a copy of the same spool with ``post_https_sample.py --flush-spool --quiet``: once with
``--batch-size N``, once with the default (one request per payload). Printed: seconds per drain
(median of rounds), requests the twin saw, and the ratio; each drain is checked to leave the spool
empty and to store every payload exactly once. The issue's target: 2,000 at --batch-size 500 in
<= 10 s through a twin taking 100 ms per request.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iotpost.payloads import encode, iso_utc, make_payload  # noqa: E402
from iotpost.receiver.faults import FaultPlan  # noqa: E402
from iotpost.receiver.server import start_twin  # noqa: E402
from iotpost.spool import SqliteSpool  # noqa: E402

CERTS = ROOT / "tests" / "certdata"
DEVICE = "0c4f6a2e-9d1b-4f3e-8a5c-2b7d9e1f3a6c"
KEY = "tesa_ak_bench_" + "b" * 24


def make_bundle(folder: Path, url: str) -> Path:
    from bench_burst import make_bundle as make  # bench/ is on sys.path: this script's folder

    return make(folder, url, DEVICE, KEY)


def make_spool(path: Path, count: int) -> None:
    """``count`` medical-sample-sized readings, as a day offline leaves them (one transaction each, as sent)."""
    spool = SqliteSpool(path)
    try:
        for n in range(count):
            data = {"spo2": 97, "spo2_unit": "%", "temperature": 36.6 + (n % 10) / 10, "heart_rate": 70 + n % 20,
                    "heart_rate_bpm": 70 + n % 20, "perfusion_index": 4.2, "motion": False, "signal_quality": 95,
                    "rhythm": "sinus", "rr_interval_ms": 850, "qt_interval_ms": 390, "site": "bench", "n": n}
            spool.put("tesaiot", encode(make_payload(DEVICE, data, iso_utc(1790000000 + n))), "bench-%05d" % n, 0.0)
    finally:
        spool.close()


def pending(path: Path) -> int:
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT count(*) FROM spool").fetchone()[0]
    finally:
        db.close()


def drain(template: Path, work: Path, count: int, delay: float, extra: list) -> tuple:
    """One drain of a fresh copy of the spool into a fresh twin; (seconds, requests), every payload checked
    to have arrived exactly once."""
    spool = work / "spool.sqlite3"
    shutil.copy(str(template), str(spool))
    twin = start_twin(certfile=CERTS / "localhost.pem", keyfile=CERTS / "localhost.key", keep_requests=10,
                      faults=FaultPlan.random(rate=1.0, kinds=("delay",), delay=delay), max_body=4 * 1_048_576)
    try:
        twin.register_device(DEVICE, KEY)
        bundle = make_bundle(work / "bundle", twin.url)
        cmd = [sys.executable, str(ROOT / "post_https_sample.py"), "--certs-dir", str(bundle), "--spool",
               str(spool), "--flush-spool", "--quiet"] + extra
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit("drain %s failed (%d): %s" % (extra, proc.returncode, proc.stderr))
        keys = [r.idempotency_key for r in twin.store.all_telemetry(DEVICE)]
        if len(keys) != count or len(set(keys)) != count or pending(spool) != 0:
            raise SystemExit("drain %s: %d stored (%d distinct), %d left in the spool"
                             % (extra, len(keys), len(set(keys)), pending(spool)))
        return seconds, twin.requests.total
    finally:
        twin.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--payloads", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--delay", type=float, default=0.1, help="seconds the twin adds to every POST (default 0.1)")
    p.add_argument("--rounds", type=int, default=1)
    ns = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template = work / "template.sqlite3"
        make_spool(template, ns.payloads)
        contenders = {"batched (--batch-size %d)" % ns.batch_size: ["--batch-size", str(ns.batch_size)],
                      "one by one": []}
        results = {name: [] for name in contenders}
        for _ in range(ns.rounds):
            for name, extra in contenders.items():  # interleaved: drift hits both alike
                results[name].append(drain(template, work, ns.payloads, ns.delay, extra))
    batched = statistics.median(s for s, _ in results[next(iter(contenders))])
    print("%d spooled payloads, twin adds %g ms per request, rounds: %d, python %s"
          % (ns.payloads, ns.delay * 1000, ns.rounds, sys.version.split()[0]))
    print("| drain | seconds | requests | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        print("| %s | %.2f | %d | %.1fx |" % (name, seconds, runs[-1][1], seconds / batched))
    return 0


if __name__ == "__main__":
    sys.exit(main())
