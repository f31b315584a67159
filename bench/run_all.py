#!/usr/bin/env python3
"""Every benchmark in bench/, side by side in one run: one markdown table of medians and ratios.

Usage: python3 bench/run_all.py [--quick] [--rounds 5]      (a real interpreter, not the pyenv shim)

One twin (this process, a file database in a temp dir, verified TLS) serves the sends; each row's
contenders run interleaved round by round, so machine noise hits them alike. Rows:

  cold send      one payload per process: curl, the seed's urllib approach (bench_coldsend.SEED_URLLIB),
                 post_https_sample.py; wall-time medians, and callgrind instructions beyond
                 `python -S -c pass` where valgrind is installed (they repeat exactly on a noisy machine)
  burst          bench_burst.py (python -S), against nginx (return 200) where installed, else the twin: N payloads
                 (1,000; --quick 200) by post_https_sample.py --count N --interval 0, a raw http.client
                 keep-alive loop, and one curl process chaining N requests with --next over one
                 connection; throughput and connections used, and (not with --quick) callgrind
                 instructions per payload, (1,100 - 100 payloads) / 1,000, where valgrind is installed
  twin ingest    bench/loadgen.py: the twin on a file db (durable) and in memory vs a no-op TLS
                 http.server, at 1/4/16 kept-alive connections
  peak RSS       post_https_sample.py --count N --interval 0 for N = 1, 1,000, 10,000 (--quick: 1, 100,
                 1,000): ru_maxrss of that child alone (os.wait4)
  backlog drain  bench/bench_backlog.py, if present: its own output, appended as it printed it

Ratios say "x curl" (or "x noop", "x 1 send"; the burst rows' last column: x raw http.client): above
1 is slower or bigger, except the burst and ingest throughput rows (above 1 is faster). No row asserts
anything: it reports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import bench_coldsend  # noqa: E402  (its contenders' scripts and its callgrind helpers)
import loadgen  # noqa: E402
from iotpost.receiver.server import start_twin  # noqa: E402

CERTS = ROOT / "tests" / "certdata"
DEVICE = bench_coldsend.DEVICE
KEY = bench_coldsend.KEY
BODY = bench_coldsend.BODY
Row = List[str]


def clean_env() -> Dict[str, str]:
    """As a user's machine runs us: bytecode may be written, nothing of ours on PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}


def wall(cmd: Sequence[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(list(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=clean_env(), cwd=str(cwd))
    return time.perf_counter() - start


def interleaved(contenders: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, float]:
    """Median of each contender over rounds, run one after the other in every round."""
    seen: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            seen[name].append(run())
    return {name: statistics.median(values) for name, values in seen.items()}


def curl_cmd(url: str) -> List[str]:
    return ["curl", "-sS", "-o", "/dev/null", "--cacert", str(CERTS / "ca.pem"), "-H", "Content-Type: application/json",
            "-H", "X-API-KEY: " + KEY, "--data", BODY, url]


# -- rows ------------------------------------------------------------------------------------

def cold_send(tmp: Path, bundle: Path, url: str, rounds: int, have_curl: bool) -> List[Row]:
    py = sys.executable
    (tmp / "seed_urllib.py").write_text(bench_coldsend.SEED_URLLIB)
    cmds = {"python -S -c pass": [py, "-S", "-c", "pass"],
            "seed-urllib": [py, "-S", str(tmp / "seed_urllib.py"), "--certs-dir", str(bundle)],
            "post_https_sample.py": [py, "-S", str(ROOT / "post_https_sample.py"), "--certs-dir", str(bundle),
                                     "--quiet"]}
    if have_curl:
        cmds["curl"] = curl_cmd(url + "/api/v1/telemetry")
    for cmd in cmds.values():
        bench_coldsend.warm(cmd, tmp)  # bytecode into __pycache__, as on a user's second run
    times = interleaved({name: (lambda c=cmd: wall(c, tmp)) for name, cmd in cmds.items()}, rounds)
    rows: List[Row] = []
    for name in ("curl", "seed-urllib", "post_https_sample.py", "python -S -c pass"):
        if name in times:
            rows.append(["cold send (wall)", name, "%.1f ms" % (times[name] * 1000),
                         ratio(times[name], times.get("curl")), ratio(times[name], times["seed-urllib"])])
    if shutil.which("valgrind") is None:
        rows.append(["cold send (instructions)", "-", "valgrind not installed", "-", "-"])
        return rows
    counts = {name: bench_coldsend.instructions(cmd, tmp) for name, cmd in cmds.items()}
    bare = counts.pop("python -S -c pass")
    extra = {name: (n if name == "curl" else n - bare) for name, n in counts.items()}
    for name in ("curl", "seed-urllib", "post_https_sample.py"):
        if name in extra:
            what = "whole process" if name == "curl" else "beyond python -S -c pass"
            rows.append(["cold send (instructions)", name, "%.1f M (%s)" % (extra[name] / 1e6, what),
                         ratio(extra[name], extra.get("curl")), ratio(extra[name], extra["seed-urllib"])])
    return rows


def burst(n: int, rounds: int, quick: bool) -> List[Row]:
    """bench_burst.py's rows: against nginx (the twin without it), wall clock and, with valgrind, instructions
    per payload ((100 + N) - 100 payloads) / N; --quick leaves the instructions out (minutes under callgrind)."""
    import bench_burst

    # python -S, as the cold send's rows: a site-packages .pth of this machine (30 ms of imports at every
    # start here) is not what a user's Pi starts with
    return bench_burst.rows(n, rounds, with_instructions=not quick, small=100, extra=1000, no_site=True)


def ingest(conns: List[int], seconds: float, rounds: int) -> List[Row]:
    results = loadgen.compare(conns, seconds, rounds, procs=2)
    rows: List[Row] = []
    for count in conns:
        base = loadgen.median_rate(results["noop"][count])
        for kind in loadgen.SERVERS:
            rate = loadgen.median_rate(results[kind][count])
            rows.append(["twin ingest, %d conn%s (throughput)" % (count, "" if count == 1 else "s"), kind,
                         "%.0f requests/s" % rate, "-", "%.2fx noop" % (rate / base)])
    return rows


def peak_rss(bundle: Path, counts: List[int]) -> List[Row]:
    """Each count in a child of its own; its peak RSS alone, from os.wait4 (not the children's maximum)."""
    peaks: Dict[int, int] = {}
    for n in counts:
        proc = subprocess.Popen([sys.executable, str(ROOT / "post_https_sample.py"), "--certs-dir", str(bundle),
                                 "--quiet", "--count", str(n), "--interval", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = status  # reaped here; tell Popen so it does not wait again
        if status != 0:
            raise SystemExit("the %d-send run failed (wait status %d)" % (n, status))
        kib = usage.ru_maxrss // (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux
        peaks[n] = kib
    one = peaks[counts[0]]
    return [["peak RSS", "%d send%s" % (n, "" if n == 1 else "s"), "%.1f MiB" % (kib / 1024),
             "-", "%.2fx 1 send" % (kib / one)] for n, kib in peaks.items()]


def backlog(quick: bool) -> Optional[str]:
    """bench_backlog.py's own output, or None if there is no such bench (yet)."""
    script = BENCH / "bench_backlog.py"
    if not script.exists():
        return None
    cmd = [sys.executable, str(script)]
    if quick:
        helptext = subprocess.run(cmd + ["--help"], capture_output=True, text=True).stdout
        if "--quick" in helptext:
            cmd.append("--quick")
    done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=str(ROOT))
    return (done.stdout + ("" if done.returncode == 0 else "\n(exit %d) %s" % (done.returncode, done.stderr[-2000:])))


def ratio(value: float, base: Optional[float]) -> str:
    return "%.2fx" % (value / base) if base else "-"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds, smaller bursts, shorter loads (a smoke run)")
    p.add_argument("--rounds", type=int, help="rounds per row (default 5; --quick 3)")
    p.add_argument("--skip", default="", help="rows to leave out, comma-separated: cold,burst,ingest,rss,backlog")
    ns = p.parse_args(argv)
    quick = ns.quick
    rounds = ns.rounds or (3 if quick else 5)
    burst_n = 200 if quick else 1000
    rss_counts = [1, 100, 1000] if quick else [1, 1000, 10000]
    skip = set(filter(None, ns.skip.split(",")))
    have_curl = shutil.which("curl") is not None
    rows: List[Row] = []
    backlog_text = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-all-"))
    twin = start_twin(devices={DEVICE: KEY}, certfile=CERTS / "localhost.pem", keyfile=CERTS / "localhost.key",
                      db_path=str(tmp / "twin.sqlite3"), keep_requests=100)
    try:
        import bench_burst

        bundle = bench_burst.make_bundle(tmp / "bundle", twin.url, DEVICE, KEY)
        if "cold" not in skip:
            rows += cold_send(tmp, bundle, twin.url, rounds, have_curl)
        if "burst" not in skip:
            rows += burst(burst_n, rounds, quick)  # its own server: nginx where installed
        if "rss" not in skip:
            rows += peak_rss(bundle, rss_counts)
    finally:
        twin.stop()
        shutil.rmtree(str(tmp), ignore_errors=True)
    if "ingest" not in skip:  # after the twin above has stopped: its own servers, nothing else serving
        rows += ingest([1, 4, 16], 1.5 if quick else 3.0, 1 if quick else 3)
    if "backlog" not in skip:
        backlog_text = backlog(quick)
    print("python %s (%s), %d rounds per row%s, medians; curl %s" % (
        sys.version.split()[0], sys.executable, rounds, ", --quick" if quick else "",
        "found" if have_curl else "not found: its rows are missing"))
    print()
    print("| bench | contender | median | x curl | x seed / other |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    if "backlog" in skip:
        pass
    elif backlog_text is None:
        print("backlog drain: bench/bench_backlog.py is not here yet; skipped")
    else:
        print("backlog drain (bench/bench_backlog.py):\n")
        print(backlog_text.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
