"""``iotpost readings --platform thermacore``: print a ThermaCore SCADA unit's readings (read-only).

Usage: ``THERMACORE_USERNAME=demo THERMACORE_PASSWORD=... python3 -m iotpost readings --platform thermacore
--base-url https://localhost:8443 --unit 1 --ca-file tests/certdata/ca.pem [--sensor-type T] [--hours H] [--json]``

A device tool only reads ThermaCore (its own collectors write the readings). The password comes from
the environment or --credentials-file, never from argv (``ps`` and shell history show argv); it and
the tokens are redacted from every line. Exit codes: 0 read, 2 usage, 66 credential file missing,
77 login refused, 78 configuration, TLS, or an unknown unit (404: the unit id is configuration, as a
wrong URL is), 75 server down or busy, 65 any other refusal.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

from . import __version__
from .argparser import ArgumentParser
from .cli_common import seconds_type
from .cli_run import run
from .errors import ConfigError, CredentialMissing
from .target import SettingNames, Target, parse_target
from .user_paths import user_path
from .records import Record

PROG = "iotpost readings"
USERNAME_ENV = "THERMACORE_USERNAME"
PASSWORD_ENV = "THERMACORE_PASSWORD"
NAMES = SettingNames(url="--base-url", ca="--ca-file", cleartext="the password and tokens would travel unencrypted",
                     example_url="https://thermacore.example.com")


class ReadingsSettings(Record):
    base_url: str
    unit: str
    sensor_type: Optional[str]
    hours: Optional[int]
    ca_file: Optional[Path]  # None: the system's trust store
    allow_http: bool
    credentials_file: Optional[Path]
    output: str  # "text" | "json"
    verbose: bool
    timeout: float


def _hours(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1 or int(text) > 87600:
        raise argparse.ArgumentTypeError("must be whole hours from 1 to 87600, not %r" % text)
    return int(text)


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Read a ThermaCore SCADA unit's sensor readings (newest first, at most 1000): log in with "
        "$%s/$%s or --credentials-file, refresh the token when it expires." % (USERNAME_ENV, PASSWORD_ENV),
        epilog="exit codes: 0 read, 2 usage, 66 credential file missing, 75 server down or busy (retry later), "
        "77 login refused, 78 configuration, TLS or unknown unit, 65 other refusal. See README.md.",
    )
    p.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
    p.add_argument("--platform", choices=["thermacore"], default="thermacore",
                   help="the platform to read from (this command: thermacore)")
    p.add_argument("--base-url", required=True, metavar="URL", help="the ThermaCore API, e.g. https://localhost:8443")
    p.add_argument("--unit", required=True, metavar="ID", help="the unit whose readings to print")
    p.add_argument("--sensor-type", default=None, metavar="TYPE",
                   help="only this sensor type (exact, case included: temperature, pressure, ...)")
    p.add_argument("--hours", type=_hours, default=None, metavar="H", help="readings of the last H hours (server default 24)")
    p.add_argument("--ca-file", type=user_path, default=None, metavar="PEM",
                   help="CA that verifies the server (default: the system's trust store)")
    p.add_argument("--allow-http", action="store_true",
                   help="permit a plain http:// URL to this machine only (local development servers)")
    p.add_argument("--credentials-file", type=user_path, default=None, metavar="PATH",
                   help='JSON {"username": ..., "password": ...} (default: $%s and $%s)' % (USERNAME_ENV, PASSWORD_ENV))
    p.add_argument("--timeout", type=seconds_type(0, 3600, low_inclusive=False), default=10.0, metavar="SECONDS",
                   help="network timeout per request (default: 10)")
    p.add_argument("--json", action="store_true", help="JSON Lines on stdout: one object per reading, then a summary")
    p.add_argument("--verbose", action="store_true",
                   help="also print each request line and headers on stderr (password and tokens redacted)")
    p.add_argument("--debug", action="store_true", help="show a traceback for internal errors")
    return p


def settings_from_args(argv: List[str], prog: str = PROG) -> ReadingsSettings:
    ns = build_parser(prog).parse_args(argv)
    return ReadingsSettings(base_url=ns.base_url.strip(), unit=ns.unit, sensor_type=ns.sensor_type, hours=ns.hours,
                            ca_file=ns.ca_file, allow_http=ns.allow_http, credentials_file=ns.credentials_file,
                            output="json" if ns.json else "text", verbose=ns.verbose, timeout=ns.timeout)


def load_credentials(path: Optional[Path], environ: Mapping[str, str], warnings: List[str]) -> Tuple[str, str]:
    """(username, password) from --credentials-file, else the environment; never argv.

    The file is checked like a bundle's key: world-writable is refused (78), group-readable warned about.
    """
    if path is None:
        username, password = environ.get(USERNAME_ENV, ""), environ.get(PASSWORD_ENV, "")
        if not username or not password:
            raise CredentialMissing("no ThermaCore credentials: set %s and %s, or pass --credentials-file"
                                    % (USERNAME_ENV, PASSWORD_ENV),
                                    hint='a credentials file holds {"username": "...", "password": "..."} (chmod 600)')
        return username, password
    from .bundle import key_permission_warning, read_secret_file

    text = read_secret_file(path, "the ThermaCore credentials file")  # missing 66, empty 78
    warning = key_permission_warning(path)  # world-writable: ConfigError
    if warning:
        warnings.append(warning)
    try:
        doc = json.loads(text.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    if not (isinstance(doc, dict) and isinstance(doc.get("username"), str) and doc["username"]
            and isinstance(doc.get("password"), str) and doc["password"]):
        raise ConfigError("%s is not a JSON object with \"username\" and \"password\" strings" % path,
                          hint='write it as {"username": "demo", "password": "..."}')
    return doc["username"], doc["password"]


def _ssl_context(s: ReadingsSettings, target: Target, reporter, secrets: List[str]):
    """Verified TLS: the --ca-file CA, else the system's trust store; None for --allow-http's http://."""
    if target.scheme != "https":
        return None
    if s.ca_file is not None:
        from .cli_common import TLSSettings, make_ssl_context

        return make_ssl_context(s.ca_file, TLSSettings(), None, None, reporter, secrets)
    import ssl

    from .tlsctx import ClientContext

    ctx = ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname, as build_ssl_context
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_default_certs()
    return ctx


def _print_table(reporter, readings: List[Any]) -> None:
    reporter.info("%-26s  %-22s  %-12s  %10s  %-6s  %s" % ("TIMESTAMP (UTC)", "SENSOR", "TYPE", "VALUE", "UNIT", "QUALITY"))
    for r in readings:
        sensor = r.get("sensor") if isinstance(r.get("sensor"), dict) else {}
        reporter.info("%-26s  %-22s  %-12s  %10s  %-6s  %s" % (
            r.get("timestamp", ""), sensor.get("name", ""), sensor.get("sensor_type", ""), r.get("value", ""),
            sensor.get("unit_of_measurement", ""), r.get("quality", "")))


def _record(unit: str, r: Any) -> dict:
    sensor = r.get("sensor") if isinstance(r.get("sensor"), dict) else {}
    return {"event": "reading", "platform": "thermacore", "unit": unit, "id": r.get("id"),
            "timestamp": r.get("timestamp"), "value": r.get("value"), "quality": r.get("quality"),
            "sensor_id": sensor.get("id"), "sensor": sensor.get("name"), "sensor_type": sensor.get("sensor_type"),
            "unit_of_measurement": sensor.get("unit_of_measurement")}


def _main(argv: List[str], secrets: List[str], prog: str = PROG, environ: Optional[Mapping[str, str]] = None) -> int:
    from .console import protect_std_streams
    from .output import Reporter, write_line

    protect_std_streams()
    s = settings_from_args(argv, prog)
    env = os.environ if environ is None else environ
    if s.output == "json":
        from .console import lf_line_endings

        lf_line_endings(sys.stdout)
    reporter = Reporter(prog, sys.stdout, sys.stderr, mode=s.output, verbose=s.verbose, secrets=secrets)
    warnings: List[str] = []
    username, password = load_credentials(s.credentials_file, env, warnings)
    secrets.append(password)  # redacted from every line from here on
    for warning in warnings:
        reporter.warn(warning)
    target = parse_target(s.base_url, "", allow_http=s.allow_http, names=NAMES)
    if target.scheme != "https":
        reporter.warn("plain http:// to this machine (--allow-http): the password travels unencrypted")
    ctx = _ssl_context(s, target, reporter, secrets)

    from .thermacore_client import ThermaCoreClient
    from .transport import Transport

    def note(event: str) -> None:
        if s.verbose:
            line = "* logged in as %s" % username if event == "login" else "* access token expired: refreshed"
            write_line(reporter.stderr, reporter.redact(line) + "\n")

    transport = Transport(target, ctx, s.timeout, cafile=s.ca_file)
    base_path = target.path.split("?", 1)[0].rstrip("/")
    client = ThermaCoreClient(transport, base_path, username, password, secrets, on_event=note,
                              on_request=lambda m, p, h, b: reporter.request(m, "%s://%s%s" % (target.scheme, target.netloc, p), h, b))
    try:
        readings = client.readings(s.unit, hours=s.hours, sensor_type=s.sensor_type)
    finally:
        transport.close()
    if s.output == "json":
        for r in readings:
            reporter.json_line(_record(s.unit, r if isinstance(r, dict) else {}))
        reporter.json_line({"event": "summary", "platform": "thermacore", "unit": s.unit, "count": len(readings),
                            "refreshes": client.refreshes, "exit_code": 0})
    else:
        _print_table(reporter, [r for r in readings if isinstance(r, dict)])
        reporter.info("%s: %d readings of unit %s%s" % (prog, len(readings), s.unit,
                                                       " (%s)" % s.sensor_type if s.sensor_type else ""))
    return 0


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    return run(lambda args, secrets: _main(args, secrets, prog=prog), argv, prog)


if __name__ == "__main__":
    sys.exit(main())
