#!/usr/bin/env python3
"""Twin ingest against a no-op TLS server under the same kept-alive load: a load generator of our own.

Usage: python3 bench/loadgen.py [--conns 1,4,16] [--seconds 3] [--rounds 3] [--procs 2] [--quick]

``wrk`` is not everywhere, so the load comes from here: ``--procs`` worker processes (subprocesses of
sys.executable) share the connections; each keeps its share open (http.client, verified TLS with the
test CA, one thread per connection) and POSTs telemetry, each with its own Idempotency-Key, for
``--seconds``. Every server runs in a process of its own, started fresh for each measurement:

  noop        fifteen lines of http.server: TLS, Nagle off, reads the body, answers 200 with JSON
  twin-mem    the twin (start_twin) on an in-memory database
  twin-file   the twin on a file database in a temp dir (WAL): the durable one
  base-mem, base-file   the same from another checkout (--baseline DIR), for before/after in one run

``--instructions`` (where valgrind is installed) reports what this shared machine cannot blur: each
server's instructions per request, from callgrind, as the difference between serving 100 and 600
kept-alive POSTs on one connection (start-up cancels out), and the ratio to noop.

Reported per server and connection count: median requests/s over rounds, the ratio to noop, the
server's CPU (user+sys seconds per second of load; about 1.0 is one core, the GIL's ceiling) and the
load generator's own CPU (user+sys seconds of its children per second of load, from
resource.getrusage): near the machine's core count it is the load generator, not the server, that
limits.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

ROOT = Path(__file__).resolve().parent.parent
CERTS = ROOT / "tests" / "certdata"
DEVICE = "5a7c2e9d-1b3f-4d6a-8e0c-9f2b4d6a8c1e"
KEY = "tesa_ak_LOADGEN_0123456789abcdef"
PATH = "/api/v1/telemetry"
SERVERS = ("noop", "twin-mem", "twin-file")

NOOP_SERVER = r"""
import http.server, ssl, sys, threading
class Noop(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"success": true, "message": "Telemetry data stored successfully"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
"""


class Load(NamedTuple):
    """One measurement: requests completed, over how long, and the load generator's CPU seconds."""

    requests: int
    seconds: float
    cpu: float
    errors: int
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


# -- servers (each in its own process) ------------------------------------------------------

def serve(kind: str, db_dir: Optional[str], root: Optional[str] = None) -> None:
    """Run one server until stdin closes; print its port first. ``root``: the checkout whose twin to run."""
    sys.path.insert(0, root or str(ROOT))
    if kind == "noop":
        import http.server

        scope: Dict[str, object] = {}
        exec(NOOP_SERVER, scope)  # noqa: S102 - our own constant, shown in the docstring's spirit
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), scope["Noop"])  # type: ignore[arg-type]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(CERTS / "localhost.pem"), str(CERTS / "localhost.key"))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
    else:
        from iotpost.receiver.server import start_twin

        db = ":memory:" if kind.endswith("-mem") else os.path.join(db_dir or tempfile.gettempdir(), "ingest.sqlite3")
        twin = start_twin(devices={DEVICE: KEY}, certfile=CERTS / "localhost.pem",
                          keyfile=CERTS / "localhost.key", db_path=db, host="127.0.0.1",
                          keep_requests=100, max_connections=1000)
        port = twin.port
    print("PORT %d" % port, flush=True)
    for _ in sys.stdin:  # each line asks for our CPU so far; the parent closes stdin to stop us
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print("CPU %r" % (usage.ru_utime + usage.ru_stime), flush=True)
    if kind != "noop":
        print("STORED %d" % twin.store.count_telemetry(), flush=True)
        twin.stop()


class Server:
    """A server subprocess: started, asked for its port, stopped by closing its stdin."""

    def __init__(self, kind: str, db_dir: Optional[str], baseline: Optional[str] = None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", kind]
        if kind.startswith("base-"):
            cmd += ["--root", str(baseline)]
        if db_dir:
            cmd += ["--db-dir", db_dir]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            self.proc.kill()
            raise SystemExit("server %s did not start: %r" % (kind, line))
        self.port = int(line.split()[1])

    def cpu(self) -> float:
        """The server's user+sys CPU seconds so far."""
        self.proc.stdin.write("cpu\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return float(self.proc.stdout.readline().split()[1])  # type: ignore[union-attr]

    def stop(self) -> Optional[int]:
        """Stop the server; for a twin, how many rows it stored."""
        out, _ = self.proc.communicate("", timeout=30)
        for line in out.splitlines():
            if line.startswith("STORED "):
                return int(line.split()[1])
        return None


# -- load (each worker a process of its own) -----------------------------------------------

def work(port: int, conns: int, start_at: float, seconds: float, tag: str) -> None:
    """Keep ``conns`` connections busy from ``start_at`` for ``seconds``; print requests and errors as JSON."""
    ctx = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
    counts = [0] * conns
    errors = [0] * conns
    end = start_at + seconds

    def one(slot: int) -> None:
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
        conn.connect()  # handshake before the clock starts: we measure ingest, not handshakes
        prefix = "%s-%d-" % (tag, slot)
        # Headers and the body's shape built once; only the key and a reading change per request.
        headers = {"Content-Type": "application/json", "X-API-KEY": KEY, "Idempotency-Key": ""}
        head = '{"device_id": "%s", "timestamp": "2026-11-27T10:00:00Z", "data": {"temperature": ' % DEVICE
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        i = 0
        while time.time() < end:
            i += 1
            headers["Idempotency-Key"] = prefix + str(i)
            conn.request("POST", PATH, body=(head + "%d.5}}" % (i % 40)).encode(), headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status == 200:
                counts[slot] += 1
            else:
                errors[slot] += 1
        conn.close()

    threads = [threading.Thread(target=one, args=(slot,)) for slot in range(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"requests": sum(counts), "errors": sum(errors)}), flush=True)


def load(port: int, conns: int, seconds: float, procs: int) -> Load:
    """Spread ``conns`` connections over up to ``procs`` worker processes; sum what they did."""
    procs = max(1, min(procs, conns))
    shares = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    start_at = time.time() + 0.5 + 0.05 * conns  # room for every worker to start and handshake
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--work", str(port), str(share),
                                 repr(start_at), repr(seconds), "w%d" % i],
                                stdout=subprocess.PIPE, text=True) for i, share in enumerate(shares)]
    done = [json.loads(w.communicate(timeout=seconds + 60)[0]) for w in workers]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Load(sum(d["requests"] for d in done), seconds, cpu, sum(d["errors"] for d in done))


# -- instructions per request (callgrind) --------------------------------------------------------

def send_n(port: int, n: int, tag: str) -> None:
    """POST ``n`` payloads over one kept-alive connection, each answered 200 (else exit non-zero)."""
    ctx = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=300)
    headers = {"Content-Type": "application/json", "X-API-KEY": KEY, "Idempotency-Key": ""}
    head = '{"device_id": "%s", "timestamp": "2026-11-27T10:00:00Z", "data": {"temperature": ' % DEVICE
    for i in range(n):
        headers["Idempotency-Key"] = "%s-%d" % (tag, i)
        conn.request("POST", PATH, body=(head + "%d.5}}" % (i % 40)).encode(), headers=headers)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit("request %d answered %d" % (i, answer.status))
    conn.close()


def server_instructions(kind: str, requests: int, baseline: Optional[str] = None) -> int:
    """Instructions a server process executes from start to stop, serving ``requests`` POSTs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    db_dir = tempfile.mkdtemp(prefix="loadgen-")
    try:
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                                 str(Path(__file__).resolve()), "--serve", kind, "--db-dir", db_dir]
                                + (["--root", baseline] if kind.startswith("base-") and baseline else []),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            proc.kill()
            raise SystemExit("server %s did not start under valgrind: %r" % (kind, line))
        send_n(int(line.split()[1]), requests, "i%d" % requests)
        _, err = proc.communicate("", timeout=300)
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)
    found = re.search(r"Collected\s*:\s*(\d+)", err)
    if not found:
        raise SystemExit("no instruction count for %s:\n%s" % (kind, err[-2000:]))
    return int(found.group(1))


def instructions_per_request(servers=SERVERS, few: int = 100, many: int = 600, runs: int = 2,
                             baseline: Optional[str] = None) -> Dict[str, float]:
    """Each server's instructions per request: (serving ``many`` - serving ``few``) / (many - few).

    The fewest of ``runs`` counts each: the same work repeats to within 0.1 %, but now and then a
    run does something extra (a thread's timed wake-up, a collection), and that only ever adds.
    """
    def fewest(kind: str, requests: int) -> int:
        return min(server_instructions(kind, requests, baseline) for _ in range(runs))

    return {kind: (fewest(kind, many) - fewest(kind, few)) / (many - few) for kind in servers}


def instructions_report(per_request: Dict[str, float]) -> str:
    lines = ["| server | instructions per request | x noop |", "| --- | ---: | ---: |"]
    base = per_request.get("noop")
    for kind, count in per_request.items():
        lines.append("| %s | %.0f K | %s |" % (kind, count / 1000, "%.2f" % (count / base) if base else "-"))
    return "\n".join(lines)


# -- the comparison ----------------------------------------------------------------------------

def compare(conn_counts: List[int], seconds: float, rounds: int, procs: int,
            servers=SERVERS, baseline: Optional[str] = None) -> Dict[str, Dict[int, List[Load]]]:
    """Every server at every connection count, interleaved round by round: noise hits all alike."""
    results: Dict[str, Dict[int, List[Load]]] = {s: {c: [] for c in conn_counts} for s in servers}
    for _ in range(rounds):
        for conns in conn_counts:
            for kind in servers:
                db_dir = tempfile.mkdtemp(prefix="loadgen-") if kind.endswith("-file") else None
                server = Server(kind, db_dir, baseline)
                try:
                    before = server.cpu()
                    result = load(server.port, conns, seconds, procs)
                    result = result._replace(server_cpu=server.cpu() - before)
                finally:
                    stored = server.stop()
                    if db_dir:
                        shutil.rmtree(db_dir, ignore_errors=True)
                if stored is not None and stored != result.requests:
                    raise SystemExit("%s stored %d rows but answered %d requests with 200"
                                     % (kind, stored, result.requests))
                results[kind][conns].append(result)
    return results


def median_rate(loads: List[Load]) -> float:
    return statistics.median(load.rate for load in loads)


def report(results: Dict[str, Dict[int, List[Load]]], seconds: float) -> str:
    """A markdown table: requests/s, ratio to noop, the load generator's CPU per second."""
    conn_counts = sorted(next(iter(results.values())))
    lines = ["| server | conns | requests/s | x noop | server CPU s/s | loadgen CPU s/s | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for conns in conn_counts:
        base = median_rate(results["noop"][conns]) if "noop" in results else None
        for kind, by_conns in results.items():
            loads = by_conns[conns]
            rate = median_rate(loads)
            cpu = statistics.median(load.cpu / load.seconds for load in loads)
            server_cpu = statistics.median(load.server_cpu / load.seconds for load in loads)
            lines.append("| %s | %d | %.0f | %s | %.2f | %.2f | %d |" % (
                kind, conns, rate, "%.2f" % (rate / base) if base else "-", server_cpu, cpu,
                sum(load.errors for load in loads)))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conns", default="1,4,16", help="connection counts, comma-separated")
    p.add_argument("--seconds", type=float, default=3.0, help="load per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--procs", type=int, default=2, help="load generator processes")
    p.add_argument("--quick", action="store_true", help="one round of 1 s (a smoke run)")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--baseline", metavar="DIR",
                   help="another checkout (say, `git archive` of an older commit): its twin runs too, as base-mem and"
                        " base-file, interleaved with ours")
    p.add_argument("--instructions", action="store_true",
                   help="instructions per request under callgrind instead of requests/s (needs valgrind)")
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--db-dir", help=argparse.SUPPRESS)
    p.add_argument("--work", nargs=5, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.serve:
        serve(ns.serve, ns.db_dir, ns.root)
        return 0
    if ns.work:
        port, conns, start_at, seconds, tag = ns.work
        work(int(port), int(conns), float(start_at), float(seconds), tag)
        return 0
    servers = tuple(ns.servers.split(",")) + (("base-mem", "base-file") if ns.baseline else ())
    if ns.instructions:
        if shutil.which("valgrind") is None:
            print("valgrind is not installed: no instruction counts")
            return 0
        per_request = instructions_per_request(servers, baseline=ns.baseline)
        print("python %s, instructions per kept-alive POST (callgrind; serving 600 minus serving 100)"
              % sys.version.split()[0])
        print(instructions_report(per_request))
        return 0
    conn_counts = [int(c) for c in ns.conns.split(",")]
    if ns.quick:
        ns.seconds, ns.rounds = 1.0, 1
    results = compare(conn_counts, ns.seconds, ns.rounds, ns.procs, servers, ns.baseline)
    print("python %s, %d load processes, %.1f s x %d rounds, medians"
          % (sys.version.split()[0], ns.procs, ns.seconds, ns.rounds))
    print(report(results, ns.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
