"""``iotpost readings``: read back what the platform stored for the bundle's device.

Usage: ``iotpost readings --certs-dir DIR [--latest] [--limit N] [--start-time -1h] [--json]``
(``--start-time -1h`` and ``--start-time=-1h`` both work: a value starting with "-" is joined to its flag)
(``--platform thermacore ...`` reads a ThermaCore unit instead: see iotpost.thermacore_cli)

IoTFlow: ``GET /api/v1/telemetry/{id}/latest`` or ``/api/v1/telemetry/{id}?start_time=&limit=``;
the Connectivity Layer: ``GET /api/v1/devices/telemetry?start_time=&limit=``. Records come back
flat (data fields, ``meta_<key>`` for metadata); text output is one line per reading, newest
first; --json one record per line, then a summary.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional
from urllib.parse import quote, urlencode

from . import __version__
from .argparser import ArgumentParser
from .cli_run import run
from .console import protect_std_streams
from .device_bundle import add_device_arguments, check_timeout, open_device
from .environment import Environment
from .errors import TransientError, UsageError
from .output import Reporter
from .platforms import Platform

PROG = "iotpost readings"
MAX_LIMIT = 10000


def delegates_to_thermacore(argv: List[str]) -> bool:
    """``--platform thermacore`` (or ``--platform=thermacore``) anywhere: ThermaCore's own command answers."""
    for i, arg in enumerate(argv):
        if arg == "--platform=thermacore" or (arg == "--platform" and argv[i + 1:i + 2] == ["thermacore"]):
            return True
    return False


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description="Read back the bundle's device readings (IoTFlow, Connectivity; "
                       "--platform thermacore reads a ThermaCore unit).",
                       epilog="exit codes: 0 ok (also when nothing is stored), 2 usage, 66 credential file missing, "
                       "75 temporary failure (also: the platform's store is down), 77 key refused, 78 configuration or TLS. See README.md.")
    p.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
    add_device_arguments(p)
    p.add_argument("--latest", action="store_true", help="only the newest reading")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="at most N readings (the platform's default otherwise; IoTFlow caps at 10000)")
    p.add_argument("--start-time", default=None, metavar="T",
                   help="readings from T on: -Nh or -Nd (IoTFlow reads any other -... as -1h), or ISO 8601 "
                   "(default: the platform's, IoTFlow -1h, Connectivity -24h)")
    return p


def join_start_time(argv: List[str]) -> List[str]:
    """``--start-time -1h`` -> ``--start-time=-1h``: argparse takes a lone ``-1h`` for an option and fails
    with "expected one argument", yet relative times are how IoTFlow spells them."""
    out: List[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + argv[i:]
        if arg == "--start-time" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append("--start-time=" + argv[i + 1])
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def check_store_available(doc: Optional[Dict[str, Any]], doing: str) -> None:
    """IoTFlow answers reads with ``"iotdb_available": false`` when its time-series store is down: an
    empty answer then says nothing about what is stored, so it is a retry-later (75), not "no data"."""
    if isinstance(doc, dict) and doc.get("iotdb_available") is False:
        raise TransientError("the platform's time-series store (IoTDB) is not available, while %s" % doing,
                             hint="nothing could be read, which does not mean nothing is stored; retry later")


def read_path(platform: "Platform", device_id: str, latest: bool, limit: Optional[int], start_time: Optional[str]) -> str:
    """The read-back path and query for this platform."""
    query: Dict[str, Any] = {}
    if platform.name == "iotflow" and latest:
        return platform.latest_path(quote(device_id, safe=""))
    if start_time:
        query["start_time"] = start_time
    if latest:
        limit = 1
    if limit is not None:
        query["limit"] = limit
    path = platform.history_path(quote(device_id, safe=""))
    return path + ("?" + urlencode(query) if query else "")


def records_of(platform_name: str, doc: Dict[str, Any], latest: bool) -> List[Dict[str, Any]]:
    if platform_name == "iotflow":
        found = [doc.get("latest_data")] if latest else doc.get("data")
    else:
        found = doc.get("telemetry")
    return [r for r in (found or []) if isinstance(r, dict)]


def text_line(record: Dict[str, Any]) -> str:
    """``2026-11-27T10:00:00.000+00:00 temperature=23.5 humidity=65 meta_location="Living Room"``."""
    fields = ["%s=%s" % (k, json.dumps(v, ensure_ascii=False)) for k, v in record.items()
              if k not in ("timestamp", "device_id")]
    return " ".join([str(record.get("timestamp", "?"))] + fields)


def _main(argv: List[str], secrets: List[str], prog: str = PROG) -> int:
    from .device_api import DeviceCall

    protect_std_streams()
    ns = build_parser(prog).parse_args(join_start_time(argv))
    check_timeout(ns.timeout)
    if ns.limit is not None and not 1 <= ns.limit <= MAX_LIMIT:
        raise UsageError("--limit must be from 1 to %d" % MAX_LIMIT)
    if ns.latest and ns.limit is not None:
        raise UsageError("--latest and --limit cannot be used together")
    env = Environment()
    reporter = Reporter(prog, env.stdout, env.stderr, mode="json" if ns.json else "text", verbose=ns.verbose,
                        secrets=secrets)
    platform, bundle = open_device(ns.certs_dir, ns.platform, ns.base_url, ns.ca_file, reporter, secrets)
    path = read_path(platform, bundle.device_id, ns.latest, ns.limit, ns.start_time)
    call = DeviceCall.open(platform, bundle.base_url, path, allow_http=ns.allow_http, ca_file=bundle.ca_file,
                           reporter=reporter, timeout=ns.timeout)
    from .profiles import Credentials

    doing = "reading device %s's readings" % bundle.device_id
    ok = (404,) if platform.name == "iotflow" and ns.latest else ()  # 404: nothing stored yet
    response, doc = call.json("GET", platform.profile.auth(b"", Credentials(api_key=bundle.api_key)), b"", doing,
                              ok_statuses=ok)
    check_store_available(doc, doing)
    records = [] if response.status == 404 else records_of(platform.name, doc or {}, ns.latest)
    for record in records:
        if ns.json:
            reporter.json_line({"event": "reading", "platform": platform.name, "device_id": int(bundle.device_id),
                                "record": record})
        else:
            reporter.info(text_line(record))
    if ns.json:
        reporter.json_line({"event": "readings", "platform": platform.name, "device_id": int(bundle.device_id),
                            "count": len(records), "status": response.status})
    elif not records:
        reporter.info("no readings stored for device %s%s" % (bundle.device_id, "" if ns.latest else
                                                               " in that time range"))
    return 0


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if delegates_to_thermacore(args):
        try:
            import importlib

            thermacore_cli = importlib.import_module(__package__ + ".thermacore_cli")  # only a ThermaCore read
        except ModuleNotFoundError as exc:
            if exc.name != __package__ + ".thermacore_cli":
                raise
            from .console import write_safely

            write_safely(sys.stderr, "%s: error: this copy of iotpost has no ThermaCore support\n" % prog)
            return 2
        return int(thermacore_cli.main(args, prog))
    return run(lambda a, secrets: _main(a, secrets, prog=prog), args, prog, json_errors=True)


if __name__ == "__main__":
    sys.exit(main())
