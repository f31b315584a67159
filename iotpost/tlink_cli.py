"""tlink_push.py: send TLINK push-protocol payloads to a webhook, HMAC-signed when a secret is set.

Usage: ``python3 tlink_push.py --url https://hooks.example.com/api/webhooks/tlink --secret-file s.txt``

For teams exercising their TLINK webhook before pointing the TLINK cloud at it, or replaying
what TLINK sent (--replay). Same TLS rules, exit codes, output modes, retries and spool as
post_https_sample.py: both run through iotpost.cli_common.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Tuple

from . import __version__
from .argparser import ArgumentParser
from .bundle import CA_FILE, default_certs_dir, key_permission_warning, read_secret_file
from .cli_common import (CommonSettings, add_sending_arguments, common_settings, is_spool_command,
                         make_reporter, send_all, spool_report)
from .cli_run import run
from .console import protect_std_streams
from .environment import Environment, reading_time
from .errors import InputDataError, UsageError
from .profiles import TLINK, Credentials
from .schedule import paced
from .target import parse_target
from .tlink import DEFAULT_SENSORS, SensorSpec, TlinkPushes, encode_push, load_replay, parse_sensor

PROG = "tlink_push.py"
SCRIPT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_URL = "https://localhost:8443" + TLINK.endpoint
URL_ENV = "TLINK_WEBHOOK_URL"
SECRET_ENV = "TLINK_WEBHOOK_SECRET"


class TlinkSettings(NamedTuple):
    url: str
    ca_file: Path
    secret_file: Optional[Path]
    device_id: int
    user_id: int
    parent_user_id: str
    sensors: Tuple[SensorSpec, ...]
    replay: Optional[str]
    common: CommonSettings


def _sensor(text: str) -> SensorSpec:
    try:
        return parse_sensor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Send TLINK push-protocol payloads to a webhook over verified HTTPS, signed with "
        "HMAC-SHA256 (X-TLink-Signature) when a secret is set.",
        epilog="secret: --secret-file PATH or the %s environment variable (never a flag). "
        "Exit codes as post_https_sample.py: 0 delivered, 65 bad replay file or rejected push, "
        "75 retry later, 77 signature rejected, 78 configuration/TLS." % SECRET_ENV,
    )
    p.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
    w = p.add_argument_group("webhook")
    w.add_argument("--url", default=None, metavar="URL",
                   help="webhook URL (default: $%s, else the local twin %s)" % (URL_ENV, DEFAULT_URL))
    w.add_argument("--ca-file", type=Path, default=None, metavar="PEM",
                   help="CA that verifies the webhook's server (default: the bundle's %s)" % CA_FILE)
    w.add_argument("--secret-file", type=Path, default=None, metavar="PATH",
                   help="file holding the HMAC secret (or set %s); without one, pushes are unsigned" % SECRET_ENV)
    d = p.add_argument_group("push content")
    d.add_argument("--device-id", type=int, default=2864, metavar="N", help="TLINK deviceId (default: 2864)")
    d.add_argument("--user-id", type=int, default=385, metavar="N", help="deviceUserid (default: 385)")
    d.add_argument("--parent-user-id", default="217", metavar="ID", help="parentUserId (default: 217)")
    d.add_argument("--sensor", type=_sensor, action="append", default=None, metavar="ID[:TYPE[:UNIT]]",
                   help="a sensor to report, repeatable; TYPE is TLINK's sensorsTypeId (1 numeric, 2/5 switch, "
                   "3 location, 4 image, 6 level, 7 video, 8 string). Default: 11922:1:°C 11923:1:%%RH 11924:2")
    d.add_argument("--replay", default=None, metavar="PATH",
                   help="send recorded pushes byte-for-byte: a JSON object or JSON Lines ('-' = stdin)")
    add_sending_arguments(p)
    return p


def read_secret(path: Optional[Path], environ: dict) -> Optional[bytes]:
    """The HMAC secret from a file (trailing newline stripped) or the environment; never from argv."""
    if path is not None:
        return read_secret_file(path, "webhook secret file")
    value = environ.get(SECRET_ENV, "").strip()
    return value.encode("utf-8") if value else None


def settings_from_args(argv: List[str], environ: Optional[dict] = None) -> TlinkSettings:
    env = os.environ if environ is None else environ
    ns = build_parser().parse_args(argv)
    common = common_settings(ns, env)
    if ns.replay and common.flush_spool:
        raise UsageError("--replay and --flush-spool cannot be used together")
    ca = ns.ca_file if ns.ca_file is not None else default_certs_dir(SCRIPT_DIR, env) / CA_FILE
    return TlinkSettings(
        url=ns.url or env.get(URL_ENV, "").strip() or DEFAULT_URL,
        ca_file=ca,
        secret_file=ns.secret_file,
        device_id=ns.device_id,
        user_id=ns.user_id,
        parent_user_id=ns.parent_user_id,
        sensors=tuple(ns.sensor) if ns.sensor else DEFAULT_SENSORS,
        replay=ns.replay,
        common=common,
    )


def _read_replay(name: str, env: Environment) -> List[bytes]:
    if name == "-":
        stream = getattr(env.stdin, "buffer", None)
        data = stream.read() if stream is not None else env.stdin.read().encode("utf-8")
        return load_replay(data, "<stdin>")
    try:
        with open(name, "rb") as fh:
            return load_replay(fh.read(), name)
    except OSError as exc:
        raise InputDataError("replay file %s cannot be read (%s)" % (name, exc.strerror or exc)) from None


def _main(argv: List[str], secrets: List[str], env: Optional[Environment] = None) -> int:
    protect_std_streams()  # an ascii or cp874 console must not crash a run (argparse's help included)
    s = settings_from_args(argv)
    c = s.common
    env = env or Environment()
    reporter = make_reporter(PROG, c, env, secrets)
    if is_spool_command(c):
        return spool_report(c, reporter, env)
    secret = read_secret(s.secret_file, os.environ)
    if secret:
        secrets.append(secret.decode("utf-8", "replace"))  # the reporter redacts it from here on
    from .transport import proxy_secrets

    secrets.extend(proxy_secrets(c.proxy, os.environ))  # a proxy password, redacted the same way
    warning = key_permission_warning(s.secret_file) if s.secret_file is not None else None
    if warning:
        reporter.warn(warning)
    target = parse_target(s.url, "", allow_http=c.allow_http, names=TLINK.names)
    from .tlsctx import build_ssl_context

    ctx = build_ssl_context(s.ca_file) if target.scheme == "https" else None
    replayed = _read_replay(s.replay, env) if s.replay else None  # checked whole, before any send
    if c.count > 1 and c.interval < 1 and replayed is None and c.output != "quiet":
        reporter.warn("pushes less than 1 s apart share TLINK's one-second time stamp; a webhook that "
                      "de-duplicates on it (as the reference does) stores them once")

    def make(run_env: Environment) -> Iterator[bytes]:
        if replayed is not None:
            yield from replayed
            return
        gen = TlinkPushes(s.device_id, s.user_id, s.parent_user_id, s.sensors, seed=c.seed)
        for _ in paced(c.count, c.interval, c.period_min * 60, run_env.monotonic, run_env.sleep):
            yield encode_push(gen.next(reading_time(run_env)))

    creds = Credentials(hmac_secret=secret)
    return send_all(c, TLINK, creds, target, s.ca_file, make, reporter, env, ctx)


def main(argv: Optional[List[str]] = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
