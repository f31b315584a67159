#!/usr/bin/env python3
"""A burst over one kept-alive TLS connection: the sender vs raw http.client vs curl, against nginx.

Usage: python3 bench/bench_burst.py [--count 1000] [--rounds 5] [--no-instructions]
       (a real interpreter, not the pyenv shim; nginx and valgrind are used when installed)

The server is nginx on 127.0.0.1 answering ``return 200`` JSON over TLS with the test certificate
(an independent server: what the issue-12 budget is measured against); without nginx, the twin.
Three contenders send ``--count`` payloads over one connection each:

  post_https_sample.py   --count N --interval 0 --quiet (generated payloads, spool, retries, records)
  raw http.client        one HTTPSConnection, the same request bytes N times (the floor for http.client)
  curl                   one process chaining N requests with --next (reuses its connection)

Reported: wall-clock throughput (medians of interleaved rounds; noisy on a shared machine), and,
where valgrind exists, callgrind instructions PER PAYLOAD: (run of SMALL+N payloads - run of SMALL)
/ N, which cancels start-up and the handshake and repeats exactly. With nginx, the connections each
contender used (from nginx's access log) are shown too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

CERTS = ROOT / "tests" / "certdata"
DEVICE = "0b6c8f3e-5d2a-4e1b-9c7d-3f4a5b6c7d8e"
KEY = "tesa_ak_BENCH_0123456789abcdef"
PATH = "/api/v1/telemetry"
ANSWER = '{"status":"ok","message":"stored"}'

RAW_HTTP_CLIENT = r"""
import http.client, ssl, sys
port, ca, key, body, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode(), int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
headers = {"User-Agent": "raw", "Content-Type": "application/json", "X-API-KEY": key,
           "Idempotency-Key": "00000000-0000-4000-8000-000000000000"}
for _ in range(count):
    conn.request("POST", "/api/v1/telemetry", body, headers)
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        sys.exit(1)
conn.close()
"""

NGINX_CONF = """worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    log_format conns '$connection $connection_requests';
    access_log {dir}/access.log conns buffer=64k flush=1s;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ default_type application/json; return 200 '{answer}'; }}
    }}
}}
"""


def find_nginx() -> Optional[str]:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """nginx (preferred) or the twin, serving PATH on 127.0.0.1 with the test certificate."""

    def __init__(self, tmp: Path, prefer_nginx: bool = True) -> None:
        self.tmp = tmp
        self.kind = "twin"
        self._proc: Optional[subprocess.Popen] = None
        self._twin = None
        nginx = find_nginx() if prefer_nginx else None
        if nginx is not None:
            self._start_nginx(nginx)
        else:
            from iotpost.receiver.server import start_twin

            self._twin = start_twin(devices={DEVICE: KEY}, certfile=CERTS / "localhost.pem",
                                    keyfile=CERTS / "localhost.key", db_path=":memory:", keep_requests=100)
            self.port = self._twin.port

    def _start_nginx(self, nginx: str) -> None:
        folder = self.tmp / "nginx"
        folder.mkdir()
        self.port = free_port()
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=folder, port=self.port, cert=CERTS / "localhost.pem",
                                          key=CERTS / "localhost.key", answer=ANSWER))
        self._proc = subprocess.Popen([nginx, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log"),
                                       "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self._proc.poll() is not None:
                    raise SystemExit("nginx did not start: %s" % self._proc.stderr.read().decode()[-2000:])
                time.sleep(0.05)
        self.kind = "nginx"
        self.access_log = folder / "access.log"

    @property
    def url(self) -> str:
        return "https://localhost:%d" % self.port

    def connections_since(self, offset: int) -> Tuple[int, int, int]:
        """(connections, requests, new offset) in nginx's access log since ``offset`` (nginx only)."""
        if self._proc is None:
            return (0, 0, offset)
        self._proc.send_signal(signal.SIGUSR1)  # reopen logs: flushes the buffered access log
        time.sleep(0.2)
        with open(str(self.access_log), "rb") as f:
            f.seek(offset)
            lines = f.read().split(b"\n")
            end = f.tell()
        conns = {line.split()[0] for line in lines if line.strip()}
        return (len(conns), sum(1 for line in lines if line.strip()), end)

    def log_size(self) -> int:
        if self._proc is None:
            return 0
        self._proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, master exits
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._twin is not None:
            self._twin.stop()


def make_bundle(folder: Path, base_url: str, device: str = DEVICE, key: str = KEY) -> Path:
    """A credential bundle for the test CA's server at ``base_url`` (the other benchmarks use it too)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "device_id.txt").write_text(device + "\n")
    (folder / "api_key.txt").write_text(key + "\n")
    os.chmod(str(folder / "api_key.txt"), 0o600)
    shutil.copyfile(str(CERTS / "ca.pem"), str(folder / "ca-chain.pem"))
    (folder / "endpoints.json").write_text(json.dumps({"ingest_base_url": base_url}))
    return folder


def sample_body() -> str:
    """A payload as the sender generates it (same size and shape), for raw http.client and curl."""
    from iotpost.payloads import MedicalSignals, encode, iso_utc, make_payload

    return encode(make_payload(DEVICE, MedicalSignals(1).next(), iso_utc(time.time()))).decode("ascii")


def clean_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}


class Contenders:
    """The three commands, for any payload count."""

    def __init__(self, tmp: Path, server: Server, bundle: Path, body: str, have_curl: bool,
                 no_site: bool = False) -> None:
        self.py = [sys.executable] + (["-S"] if no_site else [])
        self.server = server
        self.bundle = bundle
        self.body = body
        self.raw_script = tmp / "raw_http_client.py"
        self.raw_script.write_text(RAW_HTTP_CLIENT)
        self.have_curl = have_curl

    def commands(self, n: int) -> Dict[str, List[str]]:
        cmds = {
            "post_https_sample.py": self.py + [str(ROOT / "post_https_sample.py"), "--certs-dir", str(self.bundle),
                                     "--quiet", "--count", str(n), "--interval", "0"],
            "raw http.client": self.py + [str(self.raw_script), str(self.server.port), str(CERTS / "ca.pem"), KEY,
                                self.body, str(n)],
        }
        if self.have_curl:
            one = ["-sS", "-o", "/dev/null", "--cacert", str(CERTS / "ca.pem"), "-H", "Content-Type: application/json",
                   "-H", "X-API-KEY: " + KEY, "-H", "Idempotency-Key: 00000000-0000-4000-8000-000000000000",
                   "--data", self.body, self.server.url + PATH]
            chained = ["curl"] + one
            for _ in range(n - 1):
                chained += ["--next"] + one
            cmds["curl --next"] = chained
        return cmds


def run(cmd: List[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
                   cwd=str(ROOT))
    return time.perf_counter() - start


def instructions(cmd: List[str]) -> int:
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=str(ROOT))
    found = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if not found or proc.returncode != 0:
        raise SystemExit("no count (exit %s) for %s:\n%s" % (proc.returncode, cmd[:4], proc.stderr[-2000:]))
    return int(found.group(1))


def wall_rows(c: Contenders, n: int, rounds: int) -> Dict[str, Tuple[float, int]]:
    """name -> (median seconds for n payloads, connections used in the last round (nginx; else 0))."""
    cmds = c.commands(n)
    for cmd in c.commands(2).values():
        run(cmd)  # bytecode into __pycache__, files into the page cache
    seen: Dict[str, List[float]] = {name: [] for name in cmds}
    conns: Dict[str, int] = {}
    for _ in range(rounds):
        for name, cmd in cmds.items():
            offset = c.server.log_size()
            seen[name].append(run(cmd))
            conns[name] = c.server.connections_since(offset)[0]
    return {name: (statistics.median(times), conns.get(name, 0)) for name, times in seen.items()}


def per_payload_instructions(c: Contenders, small: int, extra: int) -> Dict[str, float]:
    """name -> instructions per payload: (count small+extra - count small) / extra, one callgrind run each."""
    few, many = c.commands(small), c.commands(small + extra)
    return {name: (instructions(many[name]) - instructions(few[name])) / extra for name in few}


def measure(n: int, rounds: int, with_instructions: bool, small: int = 100, extra: int = 1000,
            on_twin: bool = False, no_site: bool = False
            ) -> Tuple[str, Dict[str, Tuple[float, int]], Optional[Dict[str, float]]]:
    """(server kind, wall results, per-payload instructions or None): the rows run_all.py prints too."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    server = Server(tmp, prefer_nginx=not on_twin)
    try:
        bundle = make_bundle(tmp / "bundle", server.url)
        c = Contenders(tmp, server, bundle, sample_body(), shutil.which("curl") is not None, no_site)
        walls = wall_rows(c, n, rounds)
        counts = None
        if with_instructions and shutil.which("valgrind") is not None:
            counts = per_payload_instructions(c, small, extra)
        return server.kind, walls, counts
    finally:
        server.stop()
        shutil.rmtree(str(tmp), ignore_errors=True)


def rows(n: int, rounds: int, with_instructions: bool, small: int = 100, extra: int = 1000,
         no_site: bool = False) -> List[List[str]]:
    """run_all.py's table rows: | bench | contender | median | x curl | x raw http.client |."""
    kind, walls, counts = measure(n, rounds, with_instructions, small, extra, no_site=no_site)
    if no_site:
        kind += ", python -S"
    out: List[List[str]] = []
    curl = walls.get("curl --next", (None, 0))[0]
    raw = walls["raw http.client"][0]
    for name, (seconds, conns) in sorted(walls.items(), key=lambda kv: kv[1][0]):
        used = " over %d connection%s" % (conns, "" if conns == 1 else "s") if conns else ""
        out.append(["burst of %d, %s (throughput)" % (n, kind), name, "%.0f payloads/s%s" % (n / seconds, used),
                    "%.2fx" % (curl / seconds) if curl else "-", "%.2fx" % (raw / seconds)])
    if counts is None:
        out.append(["burst, %s (instructions/payload)" % kind, "-", "not counted (--quick, or no valgrind)", "-", "-"])
        return out
    for name, per in sorted(counts.items(), key=lambda kv: kv[1]):
        out.append(["burst, %s (instructions/payload)" % kind, name,
                    "%.0f k (%d vs %d payloads)" % (per / 1e3, small + extra, small),
                    "%.2fx" % (per / counts["curl --next"]) if "curl --next" in counts else "-",
                    "%.2fx" % (per / counts["raw http.client"])])
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000, help="payloads per wall-clock run (default 1000)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved wall-clock rounds (default 5)")
    p.add_argument("--small", type=int, default=100, help="payloads in the smaller callgrind run (default 100)")
    p.add_argument("--extra", type=int, default=1000, help="payloads the larger callgrind run adds (default 1000)")
    p.add_argument("--no-instructions", action="store_true", help="wall clock only (callgrind takes minutes)")
    p.add_argument("--twin", action="store_true", help="serve with the twin even when nginx is installed")
    p.add_argument("--no-site", action="store_true",
                   help="python -S for both Python contenders (as bench_coldsend.py): no site-packages .pth at start")
    ns = p.parse_args(argv)
    kind, walls, counts = measure(ns.count, ns.rounds, not ns.no_instructions, ns.small, ns.extra, ns.twin,
                                  ns.no_site)
    curl = walls.get("curl --next", (None, 0))[0]
    print("python %s%s; server %s; %d payloads x %d rounds, medians" % (
        sys.version.split()[0], " -S" if ns.no_site else "", kind, ns.count, ns.rounds))
    print("%-22s %12s %8s %6s" % ("contender", "payloads/s", "x curl", "conns"))
    for name, (seconds, conns) in walls.items():
        print("%-22s %12.0f %7s %6s" % (name, ns.count / seconds, "%.2fx" % (curl / seconds) if curl else "-",
                                       conns or "-"))
    if counts is not None:
        print("instructions per payload ((%d - %d payloads) / %d):" % (ns.small + ns.extra, ns.small, ns.extra))
        for name, per in counts.items():
            print("%-22s %10.0f k %7s" % (name, per / 1e3, "%.2fx" % (per / counts["curl --next"])
                                          if "curl --next" in counts else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
