"""receiver.py: serve the twin on a port until SIGINT/SIGTERM, for trying the senders by hand.

Usage: ``python3 receiver.py [--port 8443] [--bundle DIR ...] [--db receiver.sqlite3] [--verbose]``

Defaults need no setup: the test certificate for localhost from tests/certdata/ and the sample
bundle certs_credentials/ (both found from the package, not the working directory), so
``python3 post_https_sample.py`` talks to it out of the box. API keys and the TLINK secret are
never printed. The ThermaCore ``demo`` user's password goes to thermacore-credentials.json (0600)
beside the database (a temp folder, removed at exit, for ``--db :memory:``); its path is printed.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from ..bundle import read_secret_file
from ..errors import ConfigError, CredentialMissing, Interrupted
from ..user_paths import user_path
from .faults import DEFAULT_RANDOM_KINDS, FAULT_KINDS, check_kinds

PROG = "receiver.py"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = PROJECT_ROOT / "certs_credentials"
SECRET_FILE_ENV = "TLINK_WEBHOOK_SECRET_FILE"
KEEP_REQUESTS = 1000  # the in-memory request log of a long-running receiver stays bounded


@dataclass(frozen=True)
class ReceiverSettings:
    """Everything the receiver needs, decided once from the command line and environment."""

    host: Optional[str]  # None: both loopback addresses, 127.0.0.1 and ::1
    port: int
    tls: bool
    certfile: Path
    keyfile: Path
    bundles: Tuple[Path, ...]
    db_path: str
    tlink_secret_file: Optional[Path]
    fault_rate: float
    fault_kinds: Tuple[str, ...]
    fault_seed: Optional[int]
    retry_after: int
    max_body: int
    verbose: bool
    outage: Optional[Tuple[float, float]] = None  # (up seconds, down seconds), repeating
    fault_poison: Optional[str] = None  # POSTs whose body holds this text get 500
    head_timeout: float = 20.0  # seconds for a TLS handshake, and for each request head, in all
    idle_timeout: float = 10.0  # seconds any one read may wait (an idle kept-alive connection too)
    max_connections: int = 512  # open connections; more are closed at once
    client_ca: Optional[Path] = None  # require client certificates signed by this CA (mTLS)
    iotflow_limits: str = "default"  # IoTFlow's rate limits: default, off, or telemetry=N/S,heartbeat=N/S,...
    clock_offset: float = 0.0  # seconds added to the Date header (a test aid)


def _db_path(text: str) -> str:
    """--db: ``:memory:`` as it is, a file path with ``~`` expanded (cmd and PowerShell do not)."""
    return text if text == ":memory:" else str(user_path(text))


def _fault_kinds(text: str) -> Tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds:
        raise argparse.ArgumentTypeError("name at least one fault kind: %s" % ",".join(FAULT_KINDS))
    try:
        check_kinds(kinds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return kinds


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be a number from 0 to 1, not %r" % text)
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("must be a port number 0-65535 (0: any free port)")
    return int(text)


def _outage(text: str) -> Tuple[float, float]:
    up, sep, down = text.partition(":")
    try:
        cycle = (float(up), float(down))
    except ValueError:
        cycle = (-1.0, -1.0)
    if not sep or not all(0 < v <= 86400 for v in cycle):
        raise argparse.ArgumentTypeError("takes UP:DOWN in seconds, e.g. 30:10, not %r" % text)
    return cycle


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be seconds, more than 0 and at most 3600, not %r" % text)
    return value


def _iotflow_limits(text: str) -> str:
    from .iotflow import parse_rate_limits

    try:
        parse_rate_limits(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _offset(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -10 ** 9 <= value <= 10 ** 9:  # also refuses nan
        raise argparse.ArgumentTypeError("must be seconds (negative: behind), not %r" % text)
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return int(text)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The receiver's flags."""
    from ..argparser import ArgumentParser

    parser = ArgumentParser(
        prog=prog,
        description="Local twin of the TESAIoT, TLINK, IoTFlow and IoT Connectivity Layer device-facing HTTPS "
        "endpoints, for testing the senders.",
    )
    parser.add_argument("--host", default=None,
                        help="the one address to listen on (default: both 127.0.0.1 and ::1, so localhost "
                        "is fast whichever a client tries first)")
    parser.add_argument("--port", type=_port, default=8443, help="port (default 8443; 0 picks a free one)")
    parser.add_argument("--cert", type=user_path, default=None,
                        help="server certificate chain (PEM; default: the test-only certificate for localhost)")
    parser.add_argument("--key", type=user_path, default=None, help="server private key (PEM)")
    parser.add_argument("--client-ca", type=user_path, default=None, metavar="PEM",
                        help="require a client certificate signed by this CA (mTLS, as TESAIoT's port 9444)")
    parser.add_argument("--http", action="store_true",
                        help="serve plain HTTP instead of HTTPS (to test a sender's --allow-http)")
    parser.add_argument("--bundle", action="append", type=user_path, metavar="DIR",
                        help="register the device in this credential bundle (repeatable; default "
                        "certs_credentials/ beside receiver.py)")
    parser.add_argument("--db", type=_db_path, default="receiver.sqlite3", metavar="PATH",
                        help="sqlite3 database (default receiver.sqlite3 in the current folder; :memory: keeps nothing)")
    parser.add_argument("--tlink-secret-file", type=user_path, metavar="PATH",
                        help="require X-TLink-Signature made with the secret in this file "
                        "(default: $%s)" % SECRET_FILE_ENV)
    parser.add_argument("--fault-rate", type=_rate, default=0.0, help="share of POSTs that get a fault (0-1)")
    parser.add_argument("--fault-kinds", type=_fault_kinds, default=DEFAULT_RANDOM_KINDS,
                        help="comma-separated faults to draw from: %s, or any 4xx/5xx status (default %s)"
                        % (",".join(FAULT_KINDS), ",".join(DEFAULT_RANDOM_KINDS)))
    parser.add_argument("--fault-seed", type=int, help="seed for reproducible faults")
    parser.add_argument("--fault-poison", default=None, metavar="TEXT",
                        help="answer 500 to every POST whose body contains TEXT, and serve the rest "
                        "(a payload the platform can never store)")
    parser.add_argument("--retry-after", type=_positive_int, default=1, help="Retry-After seconds on 503/429 faults")
    parser.add_argument("--outage", type=_outage, metavar="UP:DOWN",
                        help="serve UP seconds, then refuse connections for DOWN seconds, repeating "
                        "(to watch senders' retries and spools ride out an outage)")
    parser.add_argument("--max-body", type=_positive_int, default=1_048_576,
                        help="largest body accepted, chunked or not (bytes; more is 413, before 100 Continue)")
    parser.add_argument("--head-timeout", type=_seconds, default=20.0, metavar="SECONDS",
                        help="the TLS handshake, and then each request's head and its body, must each be "
                        "done in this time or the connection is closed (default 20)")
    parser.add_argument("--idle-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                        help="close a connection that sends nothing for this long (default 10)")
    parser.add_argument("--max-connections", type=_positive_int, default=512, metavar="N",
                        help="open connections at most (one thread each); more are closed at once (default 512)")
    parser.add_argument("--iotflow-rate-limits", type=_iotflow_limits, default="default", metavar="SPEC",
                        help="IoTFlow's per-device limits: default (telemetry=100/60,heartbeat=30/60,register="
                        "10/300, as the real server with Redis), off, or any of those NAME=REQUESTS/SECONDS, "
                        "comma-separated")
    parser.add_argument("--clock-offset", type=_offset, default=0.0, metavar="SECONDS",
                        help="a test aid: answer with a Date header this many seconds off (negative: behind), "
                        "to see a client's clock check fail (iotpost doctor)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log each request to stderr (never API keys)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    return parser


def settings_from_args(ns: argparse.Namespace, environ: Optional[dict] = None) -> ReceiverSettings:
    """Arguments and environment -> frozen settings; nothing below this reads argparse."""
    env = os.environ if environ is None else environ
    secret_file = ns.tlink_secret_file
    if secret_file is None and env.get(SECRET_FILE_ENV, "").strip():
        secret_file = user_path(env[SECRET_FILE_ENV].strip())
    certfile, keyfile = ns.cert, ns.key
    if (certfile is None or keyfile is None) and not ns.http:
        from .demo_cert import demo_cert_pair

        demo_cert, demo_key = demo_cert_pair()
        certfile, keyfile = certfile or demo_cert, keyfile or demo_key
    # The sample bundle lives in a clone only (not in iotpost.pyz or an installed package).
    default_bundles = (DEFAULT_BUNDLE,) if DEFAULT_BUNDLE.is_dir() else ()
    return ReceiverSettings(
        host=ns.host, port=ns.port, tls=not ns.http, certfile=certfile or Path("-"), keyfile=keyfile or Path("-"),
        bundles=tuple(ns.bundle or default_bundles), db_path=ns.db, tlink_secret_file=secret_file,
        fault_rate=ns.fault_rate, fault_kinds=tuple(ns.fault_kinds), fault_seed=ns.fault_seed,
        retry_after=ns.retry_after, max_body=ns.max_body, verbose=ns.verbose, outage=ns.outage,
        fault_poison=ns.fault_poison or None, head_timeout=ns.head_timeout, idle_timeout=ns.idle_timeout,
        max_connections=ns.max_connections, client_ca=ns.client_ca, iotflow_limits=ns.iotflow_rate_limits,
        clock_offset=ns.clock_offset,
    )


def read_tlink_secret(path: Path) -> bytes:
    """The shared webhook secret: the file's bytes without surrounding whitespace."""
    return read_secret_file(path, "the TLINK secret file")


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise CredentialMissing("%s %s is missing, while starting the receiver" % (what, path),
                                hint="pass --cert and --key, or regenerate tests/certdata (see its README)")


def _start(s: ReceiverSettings, secrets: List[str]):  # -> TwinServer (imported lazily)
    import sqlite3
    import ssl

    from .faults import FaultPlan
    from .iotflow import parse_rate_limits
    from .server import read_bundle_device, start_twin

    devices = {}
    for folder in s.bundles:
        device_id, api_key = read_bundle_device(folder)
        secrets.append(api_key)
        devices[device_id] = api_key
    secret = read_tlink_secret(s.tlink_secret_file) if s.tlink_secret_file is not None else None
    if secret is not None:
        secrets.append(secret.decode("latin-1"))
    if s.tls:
        _check_file(s.certfile, "the certificate")
        _check_file(s.keyfile, "the private key")
        if s.client_ca is not None:
            _check_file(s.client_ca, "the client CA (--client-ca)")
    faults = None
    if s.fault_rate > 0 or s.fault_poison:
        faults = FaultPlan(rate=s.fault_rate, kinds=s.fault_kinds, seed=s.fault_seed, retry_after=s.retry_after,
                           poison=s.fault_poison.encode("utf-8") if s.fault_poison else None)
    try:
        return start_twin(
            devices=devices, certfile=s.certfile, keyfile=s.keyfile, db_path=s.db_path, host=s.host,
            port=s.port, tls=s.tls, faults=faults, tlink_secret=secret, max_body=s.max_body,
            log_stream=sys.stderr if s.verbose else None, keep_requests=KEEP_REQUESTS,
            head_timeout=s.head_timeout, handler_timeout=s.idle_timeout, max_connections=s.max_connections,
            client_ca=s.client_ca, iotflow_limits=parse_rate_limits(s.iotflow_limits), clock_offset=s.clock_offset,
        )
    except ssl.SSLError as exc:
        raise ConfigError("cannot use %s / %s as the server certificate (%s), while starting the receiver"
                          % (s.certfile, s.keyfile, exc.reason or exc),
                          hint="the key must match the certificate; both PEM") from None
    except sqlite3.Error as exc:
        raise ConfigError("cannot open the database %s (%s), while starting the receiver" % (s.db_path, exc),
                          hint="pass --db PATH in a writable folder") from None
    except OSError as exc:
        # The default listens on two addresses: the server names the one that failed.
        where = "%s port %d" % (getattr(exc, "host", None) or s.host or "localhost", s.port)
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError("%s is already in use, while starting the receiver" % where,
                              hint="stop the other receiver, or pass --port (0 picks a free one)") from None
        raise ConfigError("cannot listen on %s (%s), while starting the receiver"
                          % (where, exc.strerror or exc)) from None


def serve(args: List[str], secrets: List[str], prog: str = PROG) -> int:
    """The body run by cli_run.run: start, announce, wait for a signal, stop cleanly (exit 0)."""
    import threading
    import time

    from ..console import protect_std_streams
    from .iotflow import DEMO_USER_ID

    protect_std_streams()
    ns = build_parser(prog).parse_args(args)  # usage errors: argparse exits 2, run() passes it on
    settings = settings_from_args(ns)
    twin = _start(settings, secrets)
    demo_file = None
    try:
        demo_file = _thermacore_demo(twin.store, settings.db_path)
        sys.stderr.write("receiver: listening on %s (db %s)\n" % (twin.url, settings.db_path))
        sys.stderr.write("receiver: ThermaCore demo login (user demo) in %s\n" % demo_file)
        sys.stderr.write("receiver: IoTFlow/Connectivity demo user id %s (iotpost register --user-id)\n"
                         % DEMO_USER_ID)
        if settings.host is None and "::1" not in twin.addresses:
            sys.stderr.write("receiver: note: not listening on ::1 (no IPv6 here): 127.0.0.1 only\n")
        sys.stderr.flush()
        if not settings.bundles:
            sys.stderr.write("receiver: note: no bundle registered (no certs_credentials/ here): pass --bundle DIR\n")
        if settings.verbose:
            for device_id in twin.store.devices():
                sys.stderr.write("receiver: device %s registered\n" % device_id)
        forever = threading.Event()
        outage = settings.outage
        switch_at = time.monotonic() + outage[0] if outage else None
        while not forever.wait(0.1 if outage else 1.0):  # a timeout, so Ctrl-C is seen on Windows too
            if outage and switch_at is not None and time.monotonic() >= switch_at:
                if twin.is_up:
                    twin.go_down()
                    switch_at += outage[1]
                    sys.stderr.write("receiver: down (refusing connections) for %gs\n" % outage[1])
                else:
                    twin.come_back()
                    switch_at += outage[0]
                    sys.stderr.write("receiver: back up for %gs\n" % outage[0])
                sys.stderr.flush()
    except (Interrupted, KeyboardInterrupt):
        pass
    finally:
        twin.stop()
        if demo_file is not None and settings.db_path == ":memory:":
            import shutil

            shutil.rmtree(str(demo_file.parent), ignore_errors=True)  # its password died with the database
    return 0


def _thermacore_demo(store, db_path: str) -> Path:
    """The ThermaCore ``demo`` user's password file: beside the database (a temp folder for :memory:)."""
    from . import thermacore

    path = thermacore.default_credentials_file(db_path)
    try:
        return thermacore.ensure_demo_user(store, path)
    except OSError as exc:
        raise ConfigError("cannot write %s (%s), while making the ThermaCore demo user" % (path, exc.strerror or exc),
                          hint="pass --db PATH in a writable folder") from None


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    """Entry point of receiver.py and `iotpost receiver`."""
    from ..cli_run import run

    return run(lambda args, secrets: serve(args, secrets, prog), argv, prog=prog)
