#!/usr/bin/env python3
"""One cold send, side by side, in instructions (valgrind callgrind): what a Raspberry Pi cron job pays.

Usage: python3 bench/bench_coldsend.py        (a real interpreter, not the pyenv shim; needs valgrind)

Every contender sends one 334-byte-class telemetry payload to the twin on 127.0.0.1 over verified
TLS, as a user's Pi starts it: `python -S` (no site-packages .pth importing extras), bytecode
warm in __pycache__ (PYTHONDONTWRITEBYTECODE unset, one warm-up run first). Instruction counts
repeat exactly on a noisy machine, unlike wall time. Printed: instructions beyond `python -S -c
pass` for the Python contenders (curl: its whole process), and the ratio to curl.

  curl             curl --cacert ... -H X-API-KEY ... --data ... (the floor for any tool)
  ssl-socket       ten lines of ssl + socket + json (the floor for Python)
  seed-urllib      the seed's approach: argparse, json, ssl, urllib.request, datetime, pathlib
  post_https       post_https_sample.py --certs-dir BUNDLE --quiet
  iotpost-send     iotpost.py send --certs-dir BUNDLE --quiet
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CERTDATA = ROOT / "tests" / "certdata"
DEVICE = "0b6c8f3e-5d2a-4e1b-9c7d-3f4a5b6c7d8e"
KEY = "tesa_ak_BENCH_0123456789abcdef"
BODY = json.dumps({"device_id": DEVICE, "timestamp": "2026-11-27T10:00:00+00:00",
                   "data": {"temperature": 21.5, "humidity": 40, "site": "bench"}})

SSL_SOCKET = r"""
import json, socket, ssl, sys
host, port, ca, key, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].encode()
ctx = ssl.create_default_context(cafile=ca)
with ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host) as s:
    s.sendall(b"POST /api/v1/telemetry HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-API-KEY: %s\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (host.encode(), key.encode(), len(body), body))
    answer = b"".join(iter(lambda: s.recv(65536), b""))
sys.exit(0 if answer.startswith(b"HTTP/1.1 2") else 1)
"""

SEED_URLLIB = r"""
import argparse, datetime, json, ssl, urllib.error, urllib.request
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("--certs-dir", type=Path)
ns = p.parse_args()
d = ns.certs_dir
device = (d / "device_id.txt").read_text().strip()
key = (d / "api_key.txt").read_text().strip()
base = json.loads((d / "endpoints.json").read_text())["ingest_base_url"]
ctx = ssl.create_default_context(cafile=str(d / "ca-chain.pem"))
payload = {"device_id": device, "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "data": {"temperature": 21.5, "humidity": 40, "site": "bench"}}
req = urllib.request.Request(base + "/api/v1/telemetry", data=json.dumps(payload).encode(), method="POST",
                             headers={"Content-Type": "application/json", "X-API-KEY": key})
try:
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
    raise SystemExit(1)
"""


def instructions(cmd, cwd: Path) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=str(cwd))
    found = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if not found or proc.returncode != 0:
        raise SystemExit("no count (exit %s) for %s:\n%s" % (proc.returncode, cmd, proc.stderr[-2000:]))
    return int(found.group(1))


def warm(cmd, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=str(cwd), check=True)


def main() -> int:
    if shutil.which("valgrind") is None or shutil.which("curl") is None:
        print("needs valgrind and curl on PATH: nothing measured")
        return 1
    from iotpost.receiver.server import start_twin

    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="bench-coldsend-"))
    twin = start_twin(devices={DEVICE: KEY}, certfile=CERTDATA / "localhost.pem", keyfile=CERTDATA / "localhost.key",
                      db_path=":memory:", host="127.0.0.1", port=0)
    try:
        bundle = tmp / "bundle"
        bundle.mkdir()
        (bundle / "device_id.txt").write_text(DEVICE + "\n")
        (bundle / "api_key.txt").write_text(KEY + "\n")
        os.chmod(str(bundle / "api_key.txt"), 0o600)
        shutil.copyfile(str(CERTDATA / "ca.pem"), str(bundle / "ca-chain.pem"))
        url = "https://localhost:%d" % twin.port
        (bundle / "endpoints.json").write_text(json.dumps({"ingest_base_url": url}))
        (tmp / "ssl_socket.py").write_text(SSL_SOCKET)
        (tmp / "seed_urllib.py").write_text(SEED_URLLIB)
        contenders = {
            "python -S -c pass": [py, "-S", "-c", "pass"],
            "curl": ["curl", "-sS", "-o", "/dev/null", "--cacert", str(CERTDATA / "ca.pem"), "-H",
                     "Content-Type: application/json", "-H", "X-API-KEY: " + KEY, "--data", BODY,
                     url + "/api/v1/telemetry"],
            "ssl-socket": [py, "-S", str(tmp / "ssl_socket.py"), "localhost", str(twin.port), str(CERTDATA / "ca.pem"),
                           KEY, BODY],
            "seed-urllib": [py, "-S", str(tmp / "seed_urllib.py"), "--certs-dir", str(bundle)],
            "post_https": [py, "-S", str(ROOT / "post_https_sample.py"), "--certs-dir", str(bundle), "--quiet"],
            "iotpost-send": [py, "-S", str(ROOT / "iotpost.py"), "send", "--certs-dir", str(bundle), "--quiet"],
        }
        for cmd in contenders.values():
            warm(cmd, tmp)  # bytecode into __pycache__, as on a user's second run
        counts = {name: instructions(cmd, tmp) for name, cmd in contenders.items()}
    finally:
        twin.stop()
        shutil.rmtree(str(tmp), ignore_errors=True)
    base = counts.pop("python -S -c pass")
    curl = counts["curl"]
    print("python %s; instructions beyond `python -S -c pass` (%.1f M); curl: its whole process"
          % (sys.version.split()[0], base / 1e6))
    print("%-14s %12s %10s" % ("contender", "M instr", "x curl"))
    for name, value in counts.items():
        extra = value if name == "curl" else value - base
        print("%-14s %12.1f %9.2fx" % (name, extra / 1e6, extra / curl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
