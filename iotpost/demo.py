"""demo.py: the out-of-the-box run: start the local twin in-process, send to it, show what it stored.

Usage: ``python3 demo.py [--count N] [--interval S]``

Uses the sample bundle (certs_credentials/) and the test certificate, so it proves on a fresh
clone, with nothing installed, that sending works over real, verified TLS. The sender is the
real post_https_sample.py main; only the base URL points at the twin's ephemeral port.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from .bundle import load_bundle
from .cli_run import run

PROG = "demo.py"
ROOT = Path(__file__).resolve().parent.parent


def _main(argv: List[str], secrets: List[str]) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Send telemetry to a local twin over verified TLS and "
                                "show what it stored (uses certs_credentials/, contacts nothing else).")
    p.add_argument("--count", type=int, default=3, help="payloads to send (default: 3)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between payloads (default: 1)")
    ns = p.parse_args(argv)
    from . import tesaiot_cli
    from .receiver.server import start_twin

    bundle_dir = ROOT / "certs_credentials"
    bundle = load_bundle(bundle_dir)
    secrets.append(bundle.api_key)
    certs = ROOT / "tests" / "certdata"
    with tempfile.TemporaryDirectory(prefix="iotpost-demo-") as tmp:
        twin = start_twin(bundles=[bundle_dir], certfile=certs / "localhost.pem", keyfile=certs / "localhost.key",
                          db_path=str(Path(tmp) / "twin.sqlite3"))
        try:
            print("demo: local twin listening on %s (TLS certificate signed by the bundle's CA)" % twin.url)
            print("demo: running post_https_sample.py --base-url %s --count %d --interval %g\n"
                  % (twin.url, ns.count, ns.interval))
            code = tesaiot_cli.main(["--base-url", twin.url, "--count", str(ns.count),
                                     "--interval", str(ns.interval)])
            rows = twin.store.all_telemetry(bundle.device_id)
            print("\ndemo: the twin stored %d payload(s) for device %s:" % (len(rows), bundle.device_id))
            for row in rows:
                data = row["data"]
                print("  %s  spo2=%s%s  temperature=%s%s  heart_rate=%s  key=%s" % (
                    row["timestamp"], data.get("spo2"), data.get("spo2_unit", ""), data.get("temperature"),
                    data.get("temperature_unit", ""), data.get("heart_rate"), row["idempotency_key"]))
            if rows:
                print("\ndemo: latest payload as stored:\n" + json.dumps(rows[-1]["data"], ensure_ascii=False,
                                                                          indent=2))
        finally:
            twin.stop()
    return code


def main(argv: Optional[List[str]] = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
