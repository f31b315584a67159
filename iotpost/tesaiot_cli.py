"""post_https_sample.py: send telemetry to TESAIoT in Server-TLS mode (HTTPS + X-API-KEY).

Usage: ``python3 post_https_sample.py [--certs-dir DIR] [--count N --interval S] [--data-file -]``

Loads and checks the credential bundle, builds a verifying TLS context from its CA, makes
payloads (generated medical sample, --data, or JSON Lines from --data-file) and hands them to
the shared sender. See README.md for every flag and exit code.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Callable, Iterator, List, Optional, Tuple, Union

    from .data_input import DataItem

from . import __version__
from .argparser import ArgumentParser
from .bundle import CERTS_DIR_ENV, default_certs_dir, load_bundle
from .cli_common import (CommonSettings, TLSSettings, add_sending_arguments, add_tls_arguments, common_settings,
                         is_spool_command, make_reporter, make_ssl_context, refuse_tls_flags_over_http, send_all,
                         spool_report, tls_settings)
from .cli_run import run
from .console import protect_std_streams
from .environment import Environment, reading_time
from .errors import InputDataError, UsageError
from .payloads import BodyEncoder, MedicalSignals
from .platforms import DEFAULT as DEFAULT_PLATFORM
from .platforms import SENDING, Platform, load
from .profiles import Credentials
from .schedule import paced
from .target import parse_target
from .user_paths import user_path_or_stdin, user_path_text
from .records import Record

PROG = "post_https_sample.py"
SCRIPT_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # no pathlib on the cold path


class TesaSettings(Record):
    certs_dir: str  # paths spelled as str(Path(...)): see user_paths
    base_url: Optional[str]
    endpoint: Optional[str]  # None: the platform's own
    device_id: Optional[str]
    ca_file: Optional[str]
    data: Optional[str]
    data_file: Optional[str]
    common: CommonSettings
    tls: TLSSettings = TLSSettings()
    platform: Optional[str] = None  # None: the bundle's endpoints.json "platform", else tesaiot
    metadata: Optional[dict] = None
    check: bool = False  # --check: run the doctor's checks instead of sending


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Send telemetry over verified HTTPS: to TESAIoT (Server-TLS with X-API-KEY, or mTLS with the "
        "bundle's client certificate), IoTFlow or the IoT Connectivity Layer (X-API-Key).",
        epilog="exit codes: 0 delivered, 2 usage, 65 bad data/rejected payload, 66 credential file "
        "missing, 75 temporary failure (retry later), 77 credentials rejected, 78 configuration or "
        "TLS certificate problem, 130/143 interrupted. See README.md.",
    )
    p.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
    p.add_argument("--check", action="store_true",
                   help="send nothing: check the bundle, DNS, TCP, proxy, TLS and certificate expiry, the clock "
                   "and the key, one line each, as `iotpost doctor` (exit: the first failing check's code)")
    b = p.add_argument_group("platform and bundle")
    b.add_argument("--platform", choices=SENDING, default=None,
                   help="payload shape, endpoint and auth header (default: the bundle's endpoints.json "
                   "\"platform\", else %s)" % DEFAULT_PLATFORM)
    b.add_argument("--certs-dir", type=user_path_text, default=None, metavar="DIR",
                   help="credential bundle folder (default: $%s, else certs_credentials/ beside this script)"
                   % CERTS_DIR_ENV)
    where = b.add_mutually_exclusive_group()
    where.add_argument("--base-url", default=None, metavar="URL",
                       help="override the ingest base URL (default: from endpoints.json)")
    where.add_argument("--url", default=None, metavar="URL",
                       help="the whole telemetry URL, base and path in one (as iotpost tlink takes it); "
                       "replaces --base-url and --endpoint")
    b.add_argument("--endpoint", default=None, metavar="PATH",
                   help="API endpoint path (default: the platform's: /api/v1/telemetry; connectivity "
                   "/api/v1/devices/telemetry)")
    b.add_argument("--device-id", default=None, metavar="ID", help="override the device id (default: device_id.txt)")
    b.add_argument("--ca-file", type=user_path_text, default=None, metavar="PEM",
                   help="CA that verifies the platform's server (default: the bundle's ca-chain.pem, "
                   "which is then not needed)")
    d = p.add_argument_group("data (default: generated medical sample)")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, metavar="JSON", help="a JSON object to send as `data`")
    src.add_argument("--data-file", type=user_path_or_stdin, default=None, metavar="PATH",
                     help="a JSON object, or JSON Lines (one payload per line); '-' streams stdin line by line")
    d.add_argument("--metadata", default=None, metavar="JSON",
                   help="a JSON object sent as every payload's `metadata` (iotflow, connectivity)")
    add_tls_arguments(p)
    add_sending_arguments(p)
    return p


def settings_from_args(argv: List[str], prog: str = PROG) -> TesaSettings:
    ns = build_parser(prog).parse_args(argv)
    common = common_settings(ns)
    base_url, endpoint = ns.base_url, ns.endpoint
    if ns.url is not None:
        if ns.endpoint is not None:
            raise UsageError("--url is the whole URL: give it without --endpoint (or use --base-url and --endpoint)")
        base_url, endpoint = split_url(ns.url)
    if common.flush_spool and (ns.data or ns.data_file):
        raise UsageError("--flush-spool sends only what is spooled; it takes no --data/--data-file")
    return TesaSettings(
        certs_dir=ns.certs_dir if ns.certs_dir is not None else default_certs_dir(SCRIPT_DIR),
        base_url=base_url,
        endpoint=endpoint,
        device_id=ns.device_id,
        ca_file=ns.ca_file,
        data=ns.data,
        data_file=ns.data_file,
        common=common,
        tls=tls_settings(ns),
        platform=ns.platform,
        metadata=_metadata(ns.metadata),
        check=ns.check,
    )


def split_url(url: str) -> Tuple[str, Optional[str]]:
    """--url https://host/api/v1/telemetry -> ("https://host", "/api/v1/telemetry"); no path: the platform's."""
    from urllib.parse import urlsplit

    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return text, None  # parse_target reports it with the usual wording
    if parts.fragment or text.endswith("#"):
        raise UsageError("--url %s has a #fragment, which is never sent to a server: leave it out" % text)
    if not parts.scheme or not parts.netloc:
        return text, None  # parse_target says what is wrong with it
    base = "%s://%s" % (parts.scheme, parts.netloc)
    path = parts.path + ("?" + parts.query if parts.query else "")
    return base, (None if path in ("", "/") else path)


def _metadata(text: Optional[str]) -> Optional[dict]:
    """--metadata: a JSON object, checked before anything is sent (2 when it is not one)."""
    if text is None:
        return None
    from .data_input import json_object_arg

    return json_object_arg(text, "--metadata")


def body_source(s: TesaSettings, device_id: str, platform: Platform,
                warn: Callable[[str], None] = lambda message: None):
    """Check the data options now (nothing sent if they are bad); return a factory of payloads."""
    c = s.common
    fixed: Optional[DataItem] = None
    lines: Optional[List[DataItem]] = None
    if s.data is not None:
        from .data_input import parse_data_arg  # only with --data or --data-file: not a generated send's cost

        fixed = parse_data_arg(s.data)
    elif s.data_file is not None and not is_stream(s.data_file):
        from .data_input import load_data_file

        items, single = load_data_file(s.data_file)
        if single:
            fixed = items[0]
        else:
            lines = items

    seen_times: set = set()
    encode_body = BodyEncoder(platform.make_body, device_id, s.metadata)  # a burst's keys are encoded once

    def _payload(data: dict, timestamp: Optional[str], env: Environment) -> bytes:
        stamp = timestamp or platform.stamp(reading_time(env))
        if platform.unique_times:
            if stamp in seen_times:
                warn("two readings of this run carry the timestamp %s: %s keeps one reading per device and "
                     "millisecond, so the later one replaces the earlier" % (stamp, platform.name))
            seen_times.add(stamp)
        return encode_body(data, stamp)

    def make(env: Environment) -> Iterator[Union[bytes, InputDataError]]:
        if s.data_file is not None and is_stream(s.data_file):
            from .data_input import read_json_lines

            # Bytes, decoded line by line: one line of bad bytes must not end the stream.
            if s.data_file == "-":
                stream, name = getattr(env.stdin, "buffer", env.stdin), "<stdin>"
            else:
                stream, name = open_stream(s.data_file), s.data_file
            try:
                for item in read_json_lines(stream, name):
                    yield item if isinstance(item, InputDataError) else _payload(item.data, item.timestamp, env)
            finally:
                if stream is not getattr(env.stdin, "buffer", env.stdin):
                    stream.close()
            return
        if lines is not None:
            for item in lines:
                yield _payload(item.data, item.timestamp, env)
            return
        signals = MedicalSignals(c.seed)
        for _ in paced(c.count, c.interval, c.period_min * 60, env.monotonic, env.sleep):
            if fixed is not None:
                yield _payload(fixed.data, fixed.timestamp, env)
            else:
                yield _payload(signals.next(), None, env)

    return make


def is_stream(path: str) -> bool:
    """``-``, or a file that is not a regular one (a pipe, a FIFO, /dev/stdin): read line by line as it
    arrives, each reading sent at once, instead of whole before the first send."""
    return path == "-" or (os.path.exists(path) and not os.path.isfile(path))


def open_stream(path: str):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputDataError("cannot read %s (%s)" % (path, exc.strerror or exc)) from None


def choose_platform(s: TesaSettings) -> Platform:
    """--platform, else the bundle's endpoints.json "platform", else TESAIoT; --metadata only where it fits."""
    from .bundle import bundle_platform

    name = s.platform or bundle_platform(s.certs_dir)
    platform = load(name or DEFAULT_PLATFORM)
    if s.metadata is not None and not platform.takes_metadata:
        raise UsageError("--metadata is not part of %s's telemetry contract" % platform.name,
                         hint="choose --platform iotflow or connectivity, or put the values in --data")
    return platform


def _main(argv: List[str], secrets: List[str], env: Optional[Environment] = None, prog: str = PROG) -> int:
    protect_std_streams()  # an ascii or cp874 console must not crash a run (argparse's help included)
    s = settings_from_args(argv, prog)
    c = s.common
    env = env or Environment()
    reporter = make_reporter(prog, c, env, secrets)
    if is_spool_command(c):
        return spool_report(c, reporter, env)
    if s.check:
        return _check(s, reporter, secrets, env)
    platform = choose_platform(s)
    if not platform.batches:
        from .cli_common import refuse_batches

        refuse_batches(platform.name, c.batch_size, "%s documents no batch endpoint (only TESAIoT's telemetry "
                       "has one), so every payload is a request of its own" % platform.name)
    profile = platform.profile
    bundle = load_bundle(s.certs_dir, device_id=s.device_id, base_url=s.base_url, ca_file=s.ca_file,
                         client_cert=s.tls.client_cert, client_key=s.tls.client_key,
                         device_id_parser=None if platform.name == DEFAULT_PLATFORM else platform.parse_device_id,
                         public_ca=platform.public_ca)
    if bundle.api_key:
        secrets.append(bundle.api_key)  # the reporter redacts it from here on
    from .transport import proxy_secrets

    secrets.extend(proxy_secrets(c.proxy, os.environ))  # a proxy password, redacted the same way
    for warning in bundle.warnings:
        reporter.warn(warning)
    target = parse_target(bundle.base_url, s.endpoint or profile.endpoint, allow_http=c.allow_http,
                          names=profile.names)
    refuse_tls_flags_over_http(target, s.tls)
    # A bad CA file, client certificate or key fails here, before anything is sent.
    ctx = make_ssl_context(bundle.ca_file, s.tls, bundle.client_cert, bundle.client_key, reporter, secrets)
    make_bodies = body_source(s, bundle.device_id, platform, reporter.warn)
    creds = Credentials(api_key=bundle.api_key)
    # A live stream (stdin, a pipe or FIFO named as a file) sends each reading as it arrives: only the
    # backlog goes in batches then. Generated readings and a regular file's lines may wait for a batch.
    return send_all(c, profile, creds, target, bundle.ca_file, make_bodies, reporter, env, ctx,
                    gather=s.data_file is None or not is_stream(s.data_file))


def _check(s: TesaSettings, reporter, secrets: List[str], env: Environment) -> int:
    """--check: the doctor's checks with this command's bundle, URL, CA and proxy settings."""
    from .doctor import DoctorSettings
    from .doctor_cli import doctor

    c = s.common
    settings = DoctorSettings(certs_dir=s.certs_dir, platform=s.platform, base_url=s.base_url, endpoint=s.endpoint,
                              device_id=s.device_id, ca_file=s.ca_file, client_cert=s.tls.client_cert,
                              client_key=s.tls.client_key, proxy=c.proxy, noproxy=c.noproxy, timeout=c.timeout,
                              allow_http=c.allow_http)
    return doctor(settings, reporter, secrets, env)


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    return run(lambda args, secrets: _main(args, secrets, prog=prog), argv, prog)


if __name__ == "__main__":
    sys.exit(main())
