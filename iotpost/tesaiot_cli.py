"""post_https_sample.py: send telemetry to TESAIoT in Server-TLS mode (HTTPS + X-API-KEY).

Usage: ``python3 post_https_sample.py [--certs-dir DIR] [--count N --interval S] [--data-file -]``

Loads and checks the credential bundle, builds a verifying TLS context from its CA, makes
payloads (generated medical sample, --data, or JSON Lines from --data-file) and hands them to
the shared sender. See README.md for every flag and exit code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Union

from . import __version__
from .argparser import ArgumentParser
from .bundle import CERTS_DIR_ENV, default_certs_dir, load_bundle
from .cli_common import (CommonSettings, TLSSettings, add_sending_arguments, add_tls_arguments, common_settings,
                         is_spool_command, make_reporter, make_ssl_context, refuse_tls_flags_over_http, send_all,
                         spool_report, tls_settings)
from .cli_run import run
from .console import protect_std_streams
from .data_input import DataItem, load_data_file, parse_data_arg, read_json_lines
from .environment import Environment, reading_time
from .errors import InputDataError, UsageError
from .payloads import MedicalSignals, encode, iso_utc, make_payload
from .profiles import TESAIOT, Credentials
from .schedule import paced
from .target import parse_target
from .user_paths import user_path, user_path_or_stdin

PROG = "post_https_sample.py"
SCRIPT_DIR = Path(__file__).resolve().parent.parent


class TesaSettings(NamedTuple):
    certs_dir: Path
    base_url: Optional[str]
    endpoint: str
    device_id: Optional[str]
    ca_file: Optional[Path]
    data: Optional[str]
    data_file: Optional[str]
    common: CommonSettings
    tls: TLSSettings = TLSSettings()


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Send telemetry to the TESAIoT platform over verified HTTPS (Server-TLS with X-API-KEY, "
        "or mTLS with the bundle's client certificate).",
        epilog="exit codes: 0 delivered, 2 usage, 65 bad data/rejected payload, 66 credential file "
        "missing, 75 temporary failure (retry later), 77 credentials rejected, 78 configuration or "
        "TLS certificate problem, 130/143 interrupted. See README.md.",
    )
    p.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
    b = p.add_argument_group("platform and bundle")
    b.add_argument("--certs-dir", type=user_path, default=None, metavar="DIR",
                   help="credential bundle folder (default: $%s, else certs_credentials/ beside this script)"
                   % CERTS_DIR_ENV)
    b.add_argument("--base-url", default=None, metavar="URL",
                   help="override the ingest base URL (default: from endpoints.json)")
    b.add_argument("--endpoint", default=TESAIOT.endpoint, metavar="PATH",
                   help="API endpoint path (default: %s)" % TESAIOT.endpoint)
    b.add_argument("--device-id", default=None, metavar="ID", help="override the device id (default: device_id.txt)")
    b.add_argument("--ca-file", type=user_path, default=None, metavar="PEM",
                   help="CA that verifies the platform's server (default: the bundle's ca-chain.pem, "
                   "which is then not needed)")
    d = p.add_argument_group("data (default: generated medical sample)")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, metavar="JSON", help="a JSON object to send as `data`")
    src.add_argument("--data-file", type=user_path_or_stdin, default=None, metavar="PATH",
                     help="a JSON object, or JSON Lines (one payload per line); '-' streams stdin line by line")
    add_tls_arguments(p)
    add_sending_arguments(p)
    return p


def settings_from_args(argv: List[str]) -> TesaSettings:
    ns = build_parser().parse_args(argv)
    common = common_settings(ns)
    if common.flush_spool and (ns.data or ns.data_file):
        raise UsageError("--flush-spool sends only what is spooled; it takes no --data/--data-file")
    return TesaSettings(
        certs_dir=ns.certs_dir if ns.certs_dir is not None else default_certs_dir(SCRIPT_DIR),
        base_url=ns.base_url,
        endpoint=ns.endpoint,
        device_id=ns.device_id,
        ca_file=ns.ca_file,
        data=ns.data,
        data_file=ns.data_file,
        common=common,
        tls=tls_settings(ns),
    )


def _payload(device_id: str, item: DataItem, env: Environment) -> bytes:
    return encode(make_payload(device_id, item.data, item.timestamp or iso_utc(reading_time(env))))


def body_source(s: TesaSettings, device_id: str):
    """Check the data options now (nothing sent if they are bad); return a factory of payloads."""
    c = s.common
    fixed: Optional[DataItem] = None
    lines: Optional[List[DataItem]] = None
    if s.data is not None:
        fixed = parse_data_arg(s.data)
    elif s.data_file is not None and s.data_file != "-":
        items, single = load_data_file(s.data_file)
        if single:
            fixed = items[0]
        else:
            lines = items

    def make(env: Environment) -> Iterator[Union[bytes, InputDataError]]:
        if s.data_file == "-":
            # Bytes, decoded line by line: one line of bad bytes must not end the stream.
            for item in read_json_lines(getattr(env.stdin, "buffer", env.stdin), "<stdin>"):
                yield item if isinstance(item, InputDataError) else _payload(device_id, item, env)
            return
        if lines is not None:
            for item in lines:
                yield _payload(device_id, item, env)
            return
        signals = MedicalSignals(c.seed)
        for _ in paced(c.count, c.interval, c.period_min * 60, env.monotonic, env.sleep):
            item = fixed if fixed is not None else DataItem(signals.next(), None, 0)
            yield _payload(device_id, item, env)

    return make


def _main(argv: List[str], secrets: List[str], env: Optional[Environment] = None) -> int:
    protect_std_streams()  # an ascii or cp874 console must not crash a run (argparse's help included)
    s = settings_from_args(argv)
    c = s.common
    env = env or Environment()
    reporter = make_reporter(PROG, c, env, secrets)
    if is_spool_command(c):
        return spool_report(c, reporter, env)
    bundle = load_bundle(s.certs_dir, device_id=s.device_id, base_url=s.base_url, ca_file=s.ca_file,
                         client_cert=s.tls.client_cert, client_key=s.tls.client_key)
    if bundle.api_key:
        secrets.append(bundle.api_key)  # the reporter redacts it from here on
    from .transport import proxy_secrets

    secrets.extend(proxy_secrets(c.proxy, os.environ))  # a proxy password, redacted the same way
    for warning in bundle.warnings:
        reporter.warn(warning)
    target = parse_target(bundle.base_url, s.endpoint, allow_http=c.allow_http, names=TESAIOT.names)
    refuse_tls_flags_over_http(target, s.tls)
    # A bad CA file, client certificate or key fails here, before anything is sent.
    ctx = make_ssl_context(bundle.ca_file, s.tls, bundle.client_cert, bundle.client_key, reporter, secrets)
    make_bodies = body_source(s, bundle.device_id)
    creds = Credentials(api_key=bundle.api_key)
    return send_all(c, TESAIOT, creds, target, bundle.ca_file, make_bodies, reporter, env, ctx)


def main(argv: Optional[List[str]] = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
