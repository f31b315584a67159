#!/usr/bin/env python3
"""Keep-alive latency: a stock http.server handler against the twin's, side by side in one run.

Usage: python3 bench/bench_keepalive.py [--requests 50] [--rounds 3]

A stock BaseHTTPRequestHandler writes headers and body in separate segments; with Nagle on,
the body waits for the client's delayed ACK (~40 ms) on every kept-alive response. The twin sets
``disable_nagle_algorithm``. Both serve the same JSON answer over verified TLS to the same
http.client connection loop; reported: median ms per request and the ratio.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iotpost.receiver.server import start_twin  # noqa: E402

CERTS = ROOT / "tests" / "certdata"


class StockHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server naming
        body = json.dumps({"status": "healthy"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_stock():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StockHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(CERTS / "localhost.pem"), str(CERTS / "localhost.key"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def per_request(port: int, n: int) -> float:
    ctx = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    conn.request("GET", "/health")
    conn.getresponse().read()  # handshake outside the timing
    start = time.perf_counter()
    for _ in range(n):
        conn.request("GET", "/health")
        conn.getresponse().read()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    ns = p.parse_args()
    stock, stock_port = start_stock()
    with tempfile.TemporaryDirectory() as tmp:
        twin = start_twin(certfile=CERTS / "localhost.pem", keyfile=CERTS / "localhost.key",
                          db_path=str(Path(tmp) / "k.sqlite3"))
        results = {"stock-handler": [], "twin-handler": []}
        for _ in range(ns.rounds):
            results["stock-handler"].append(per_request(stock_port, ns.requests))
            results["twin-handler"].append(per_request(twin.port, ns.requests))
        twin.stop()
    stock.shutdown()
    base = statistics.median(results["twin-handler"])
    print("keep-alive requests per round: %d, rounds: %d, python %s" % (ns.requests, ns.rounds,
                                                                        sys.version.split()[0]))
    for name, values in results.items():
        med = statistics.median(values)
        print("%-14s %8.2f ms/request %7.1fx" % (name, med * 1000, med / base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
