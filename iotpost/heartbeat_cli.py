"""``iotpost heartbeat``: tell IoTFlow or the IoT Connectivity Layer the device is online.

Usage: ``iotpost heartbeat --certs-dir DIR`` (a cron line: ``*/5 * * * * iotpost heartbeat --certs-dir DIR``)

One ``POST /api/v1/devices/heartbeat`` with the bundle's X-API-Key and no body. No retries: the
next cron run is the retry; the exit code says what happened (0 ok, 75 later, 77 key refused).
"""

from __future__ import annotations

import sys
from typing import List, Optional

from . import __version__
from .argparser import ArgumentParser
from .cli_run import run
from .console import protect_std_streams
from .device_bundle import add_device_arguments, check_timeout, open_device
from .environment import Environment
from .output import Reporter

PROG = "iotpost heartbeat"


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description="Post a heartbeat for the bundle's device (IoTFlow, Connectivity).",
                       epilog="exit codes: 0 online, 2 usage, 66 credential file missing, 75 temporary failure "
                       "(429 rate limit too), 77 key refused, 78 configuration or TLS. See README.md.")
    p.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
    add_device_arguments(p)
    return p


def _main(argv: List[str], secrets: List[str], prog: str = PROG) -> int:
    from .device_api import DeviceCall

    protect_std_streams()
    ns = build_parser(prog).parse_args(argv)
    check_timeout(ns.timeout)
    env = Environment()
    reporter = Reporter(prog, env.stdout, env.stderr, mode="json" if ns.json else "text", verbose=ns.verbose,
                        secrets=secrets)
    device = open_device(ns.certs_dir, ns.platform, ns.base_url, ns.ca_file, reporter, secrets)
    platform, bundle = device
    assert platform.heartbeat_path is not None
    call = DeviceCall.open(platform, bundle.base_url, platform.heartbeat_path, allow_http=ns.allow_http,
                           ca_file=bundle.ca_file, reporter=reporter, timeout=ns.timeout)
    response, doc = call.json("POST", platform.profile.auth(b"", _creds(bundle.api_key)), b"",
                              "sending the heartbeat of device %s" % bundle.device_id)
    state = (doc or {}).get("status") if isinstance((doc or {}).get("status"), str) else None
    if ns.json:
        reporter.json_line({"event": "heartbeat", "platform": platform.name, "device_id": int(bundle.device_id),
                            "status": response.status, "device_status": state,
                            "timestamp": (doc or {}).get("timestamp")})
    else:
        reporter.info("heartbeat: device %s %s (%d %s)" % (bundle.device_id, state or "accepted", response.status,
                                                           (doc or {}).get("message") or response.reason))
    return 0


def _creds(api_key: Optional[str]):
    from .profiles import Credentials

    return Credentials(api_key=api_key)


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    return run(lambda args, secrets: _main(args, secrets, prog=prog), argv, prog, json_errors=True)


if __name__ == "__main__":
    sys.exit(main())
