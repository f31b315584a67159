#!/usr/bin/env python3
"""Side-by-side send benchmark against the local twin: ratios, not absolute times.

Usage: python3 bench/bench_send.py [--payloads 100] [--rounds 3]

Every contender sends the same number of payloads to the same twin (in this process, on an
ephemeral port, over verified TLS) in one run, so machine noise hits them alike:

  iotpost-run      one post_https_sample.py run, --count N (one reused TLS connection)
  curl-keepalive   one curl process, N requests chained with --next (curl reuses the connection)
  naive-urllib     one Python process, urllib.request.urlopen per payload (the seed's approach:
                   a new TCP + TLS handshake every time)
  curl-per-send    N curl processes (a shell loop)
  iotpost-per-send N post_https_sample.py processes (a cron job per payload)

Reports the median over rounds of the per-payload time and its ratio to iotpost-run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iotpost.receiver.server import start_twin  # noqa: E402

CERTS = ROOT / "tests" / "certdata"
DEVICE = "0c4f6a2e-9d1b-4f3e-8a5c-2b7d9e1f3a6c"
KEY = "tesa_ak_bench_" + "b" * 24

NAIVE = r"""
import json, ssl, sys, urllib.request
url, ca, key, device, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
for i in range(n):
    ctx = ssl.create_default_context(cafile=ca)
    body = json.dumps({"device_id": device, "timestamp": "2025-01-01T00:00:00+00:00", "data": {"i": i}}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", "X-API-KEY": key})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        r.read()
"""


def make_bundle(folder: Path, url: str) -> Path:
    from bench_burst import make_bundle as make  # bench/ is on sys.path: this script's folder

    return make(folder, url, DEVICE, KEY)


def timed(cmds) -> float:
    start = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--payloads", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    ns = p.parse_args()
    n = ns.payloads
    py = sys.executable
    curl = shutil.which("curl")
    with tempfile.TemporaryDirectory() as tmp:
        twin = start_twin(certfile=CERTS / "localhost.pem", keyfile=CERTS / "localhost.key",
                          db_path=str(Path(tmp) / "bench.sqlite3"), keep_requests=10)
        twin.register_device(DEVICE, KEY)
        url = twin.url + "/api/v1/telemetry"
        bundle = make_bundle(Path(tmp) / "bundle", twin.url)
        body = Path(tmp) / "body.json"
        body.write_text(json.dumps({"device_id": DEVICE, "timestamp": "2025-01-01T00:00:00+00:00",
                                    "data": {"temperature": 21.5}}))
        sender = [py, str(ROOT / "post_https_sample.py"), "--certs-dir", str(bundle), "--quiet"]
        curl_one = [curl, "-sS", "-o", "/dev/null", "--cacert", str(CERTS / "ca.pem"), "-H",
                    "Content-Type: application/json", "-H", "X-API-KEY: " + KEY, "--data-binary", "@" + str(body),
                    url] if curl else None
        contenders = {
            "iotpost-run": lambda: timed([sender + ["--count", str(n), "--interval", "0"]]),
            "naive-urllib": lambda: timed([[py, "-c", NAIVE, url, str(CERTS / "ca.pem"), KEY, DEVICE, str(n)]]),
            "iotpost-per-send": lambda: timed([sender] * n),
        }
        if curl_one:
            chained = list(curl_one)
            for _ in range(n - 1):
                chained += ["--next"] + curl_one[1:]
            contenders["curl-keepalive"] = lambda: timed([chained])
            contenders["curl-per-send"] = lambda: timed([curl_one] * n)
        results = {name: [] for name in contenders}
        for _ in range(ns.rounds):
            for name, run in contenders.items():  # interleaved: drift hits every contender alike
                results[name].append(run() / n)
        stored = twin.store.count_telemetry(DEVICE)
        twin.stop()
    base = statistics.median(results["iotpost-run"])
    print("payloads per contender: %d, rounds: %d, python: %s" % (n, ns.rounds, sys.version.split()[0]))
    print("%-18s %12s %10s" % ("contender", "ms/payload", "ratio"))
    for name, values in sorted(results.items(), key=lambda kv: statistics.median(kv[1])):
        med = statistics.median(values)
        print("%-18s %12.2f %9.1fx" % (name, med * 1000, med / base))
    print("twin stored %d payloads in total" % stored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
