"""The bundle, platform and connection a device command (heartbeat, readings) works with.

Usage: ``device = open_device(certs_dir, platform=None, base_url=None, ca_file=None, ...)``

The platform is --platform, else the bundle's endpoints.json "platform"; only platforms with a
device API (IoTFlow, the Connectivity Layer) qualify. The bundle is read and checked the way
`iotpost send` reads it (`bundle.load_bundle` with the platform's device-id rule and public CA).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

from .bundle import Bundle, bundle_platform, load_bundle
from .errors import UsageError
from .output import Reporter
from .platforms import Platform, load

DEVICE_PLATFORMS = ("iotflow", "connectivity")


class Device(NamedTuple):
    platform: Platform
    bundle: Bundle


def choose_device_platform(certs_dir: Path, name: Optional[str]) -> Platform:
    """--platform, else the bundle's; a bundle for a platform without a device API is a usage error."""
    chosen = name or bundle_platform(certs_dir)
    if chosen not in DEVICE_PLATFORMS:
        said = "the bundle's endpoints.json names %s" % chosen if chosen else "the bundle names no platform"
        raise UsageError("this command speaks IoTFlow and the IoT Connectivity Layer, and %s" % said,
                         hint="pass --platform iotflow or --platform connectivity")
    return load(chosen)


def open_device(certs_dir: Path, platform: Optional[str], base_url: Optional[str], ca_file: Optional[Path],
                reporter: Reporter, secrets: List[str]) -> Device:
    """Load the bundle; its key joins ``secrets`` (redacted everywhere) before anything can print it."""
    chosen = choose_device_platform(certs_dir, platform)
    bundle = load_bundle(certs_dir, base_url=base_url, ca_file=ca_file,
                         device_id_parser=chosen.parse_device_id, public_ca=chosen.public_ca)
    if bundle.api_key:
        secrets.append(bundle.api_key)
    for warning in bundle.warnings:
        reporter.warn(warning)
    return Device(chosen, bundle)


def add_device_arguments(p: "argparse.ArgumentParser", platforms: Tuple[str, ...] = DEVICE_PLATFORMS) -> None:
    """The flags every device command shares, spelled as `iotpost send` spells them."""
    from .cli_common import seconds_type
    from .user_paths import user_path

    p.add_argument("--certs-dir", type=user_path, required=True, metavar="DIR",
                   help="the device's bundle (as `iotpost register` writes it)")
    p.add_argument("--platform", choices=platforms, default=None,
                   help="default: the bundle's endpoints.json \"platform\"")
    p.add_argument("--base-url", default=None, metavar="URL", help="override the bundle's endpoints.json")
    p.add_argument("--ca-file", type=user_path, default=None, metavar="PEM",
                   help="CA that verifies the server (default: the bundle's ca-chain.pem, else the system's store)")
    p.add_argument("--allow-http", action="store_true",
                   help="permit a plain http:// URL to this machine only (local development servers)")
    p.add_argument("--timeout", type=seconds_type(0, 3600, low_inclusive=False), default=10.0, metavar="SECONDS",
                   help="network timeout (default 10)")
    p.add_argument("--json", action="store_true", help="JSON Lines output (each record has \"schema\")")
    p.add_argument("--verbose", "-v", action="store_true", help="show request and answer headers (never the key)")
    p.add_argument("--debug", action="store_true", help="show a traceback for internal errors")


def check_timeout(seconds: float) -> None:
    if not 0 < seconds <= 600:
        raise UsageError("--timeout must be more than 0 and at most 600 seconds")
