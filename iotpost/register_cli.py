"""``iotpost register``: register a device on IoTFlow or the IoT Connectivity Layer and write its bundle.

Usage: ``iotpost register --platform iotflow --base-url URL --name NAME --device-type sensor
--user-id HEX --bundle-out DIR [--ca-file PEM]``

The bundle has the layout `post_https_sample.py --certs-dir` reads: device_id.txt (the platform's
number), api_key.txt (0600, in a 0700 folder), endpoints.json naming the platform, and ca-chain.pem
copied from --ca-file. An existing --bundle-out is refused before any request (exit 78), so a
device's only copy of its key is never overwritten. The key is never printed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Tuple

from . import __version__
from .argparser import ArgumentParser
from .bundle import API_KEY_FILE, CA_FILE, DEVICE_ID_FILE, ENDPOINTS_FILE, parse_api_key
from .cli_run import run
from .console import protect_std_streams
from .environment import Environment
from .errors import ConfigError, InputDataError, TransientError, UsageError
from .output import Reporter
from .user_paths import user_path

if TYPE_CHECKING:
    from .device_api import DeviceCall
    from .transport import Response

PROG = "iotpost register"
PLATFORMS = ("iotflow", "connectivity")
OPTIONAL_FIELDS = ("description", "location", "firmware_version", "hardware_version")


class RegisterSettings(NamedTuple):
    platform: str
    base_url: str
    name: str
    device_type: str
    user_id: Optional[str]
    fields: dict  # description, location, firmware/hardware version: only those given
    ca_file: Optional[Path]
    bundle_out: Path
    allow_http: bool
    timeout: float
    output: str  # "text" | "json"
    verbose: bool


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Register a device on IoTFlow or the IoT Connectivity Layer and write a credential bundle "
        "for it (device_id.txt, api_key.txt, endpoints.json, ca-chain.pem) that `iotpost send --certs-dir` uses.",
        epilog="exit codes: 0 registered, 2 usage, 65 refused (a duplicate name: 409), 66 --ca-file missing, "
        "75 temporary failure (retry later), 77 owner or request refused (401/403), 78 configuration or TLS "
        "(also: --bundle-out exists). See README.md.",
    )
    p.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
    p.add_argument("--platform", choices=PLATFORMS, required=True, help="which platform's register API")
    p.add_argument("--base-url", required=True, metavar="URL", help="the platform, e.g. https://iotflow.example.com")
    p.add_argument("--name", required=True, help="the device's name (unique on the platform)")
    p.add_argument("--device-type", required=True, metavar="TYPE", help="e.g. sensor")
    p.add_argument("--description", default=None)
    p.add_argument("--location", default=None)
    p.add_argument("--firmware-version", default=None, metavar="V")
    p.add_argument("--hardware-version", default=None, metavar="V")
    p.add_argument("--user-id", default=None, metavar="ID",
                   help="the owner's user id (hex uuid), sent as \"user_id\"; required for iotflow")
    p.add_argument("--ca-file", type=user_path, default=None, metavar="PEM",
                   help="CA that verifies the platform's server, copied into the bundle as ca-chain.pem "
                   "(default: the system's trust store)")
    p.add_argument("--bundle-out", type=user_path, required=True, metavar="DIR",
                   help="the bundle folder to create (refused if it exists)")
    p.add_argument("--allow-http", action="store_true",
                   help="permit a plain http:// URL to this machine only (local development servers)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="network timeout (default 10)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--verbose", "-v", action="store_true", help="show the request and answer headers (never the key)")
    p.add_argument("--debug", action="store_true", help="show a traceback for internal errors")
    return p


def settings_from_args(argv: List[str], prog: str = PROG) -> RegisterSettings:
    ns = build_parser(prog).parse_args(argv)
    user_id = (ns.user_id or "").strip() or None
    if ns.platform == "iotflow" and user_id is None:
        raise UsageError("--platform iotflow needs --user-id: IoTFlow registers a device for a known user",
                         hint="pass the owner's user id (a hex uuid); the local twin prints its demo user id at start")
    for flag, value in (("--name", ns.name), ("--device-type", ns.device_type)):
        if not value.strip():
            raise UsageError("%s is empty" % flag)
    if not 0 < ns.timeout <= 600:
        raise UsageError("--timeout must be more than 0 and at most 600 seconds")
    fields = {f: getattr(ns, f) for f in OPTIONAL_FIELDS if getattr(ns, f) is not None}
    return RegisterSettings(platform=ns.platform, base_url=ns.base_url.strip(), name=ns.name.strip(),
                            device_type=ns.device_type.strip(), user_id=user_id, fields=fields, ca_file=ns.ca_file,
                            bundle_out=ns.bundle_out, allow_http=ns.allow_http, timeout=ns.timeout,
                            output="json" if ns.json else "text", verbose=ns.verbose)


def request_body(s: RegisterSettings) -> bytes:
    """The register body: name and device_type, the optional fields given, and the owner as "user_id"."""
    doc = {"name": s.name, "device_type": s.device_type}
    doc.update(s.fields)
    if s.user_id is not None:
        doc["user_id"] = s.user_id
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def refuse_existing(folder: Path) -> None:
    """An existing --bundle-out (folder, file or link) is never touched."""
    if os.path.lexists(str(folder)):
        raise ConfigError("%s already exists; refusing to overwrite a credential bundle, while registering"
                          % folder, hint="pass a new --bundle-out folder (a device's key exists only in its bundle)")


def write_bundle(folder: Path, device_id: str, api_key: str, endpoints: dict, ca_file: Optional[Path]) -> None:
    """Create the bundle folder (0700, must not exist) and its files; api_key.txt is 0600 from the start."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(str(folder), 0o700)  # fails if something appeared since refuse_existing: nothing overwritten
    if os.name == "posix":
        os.chmod(str(folder), 0o700)
    _write_new(folder / DEVICE_ID_FILE, device_id + "\n", 0o644)
    _write_new(folder / API_KEY_FILE, api_key + "\n", 0o600)
    _write_new(folder / ENDPOINTS_FILE, json.dumps(endpoints, indent=2) + "\n", 0o644)
    if ca_file is not None:
        shutil.copyfile(str(ca_file), str(folder / CA_FILE))


def _write_new(path: Path, text: str, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(str(path), flags, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode("utf-8"))


def _main(argv: List[str], secrets: List[str], prog: str = PROG) -> int:
    from .device_api import DeviceCall
    from .platforms import load

    protect_std_streams()
    s = settings_from_args(argv, prog)
    env = Environment()
    reporter = Reporter(prog, env.stdout, env.stderr, mode=s.output, verbose=s.verbose, secrets=secrets)
    platform = load(s.platform)
    refuse_existing(s.bundle_out)
    if s.ca_file is not None and not s.ca_file.is_file():
        from .errors import CredentialMissing

        raise CredentialMissing("--ca-file %s is missing, while registering" % s.ca_file)
    assert platform.register_path is not None
    call = DeviceCall.open(platform, s.base_url, platform.register_path, allow_http=s.allow_http,
                           ca_file=s.ca_file, reporter=reporter, timeout=s.timeout)
    doing = "registering %r" % s.name
    response, doc = _register(call, s, doing)
    device = doc.get("device") if isinstance(doc, dict) else None
    if not isinstance(device, dict) or not isinstance(device.get("api_key"), str):
        raise TransientError("the platform answered %d without the new device and its key, while %s"
                             % (response.status, doing), hint="check the device list on the platform")
    secrets.append(device["api_key"])  # redacted from here on, whatever goes wrong
    api_key = parse_api_key(device["api_key"], "the platform's answer")
    device_id = platform.parse_device_id(str(device.get("id", "")), "the platform's answer")
    endpoints = {"platform": platform.name, "api_base_url": s.base_url, "ingest_base_url": s.base_url}
    try:
        write_bundle(s.bundle_out, device_id, api_key, endpoints, s.ca_file)
    except OSError as exc:
        raise ConfigError("device %s %r was registered, but its bundle could not be written to %s (%s)"
                          % (device_id, s.name, s.bundle_out, exc.strerror or exc),
                          hint="the key is lost with this run: register again under another --name, "
                          "with a writable --bundle-out") from None
    if s.output == "json":
        reporter.json_line({"event": "register", "platform": platform.name, "device_id": int(device_id),
                            "name": s.name, "status": response.status, "bundle": str(s.bundle_out)})
    else:
        reporter.info("registered device %s %r on %s; bundle written to %s (the key is in %s)"
                      % (device_id, s.name, platform.name, s.bundle_out, API_KEY_FILE))
        reporter.info("send with: python3 -m iotpost send --certs-dir %s" % s.bundle_out)
    return 0


def _register(call: "DeviceCall", s: RegisterSettings, doing: str) -> Tuple["Response", Optional[dict]]:
    """POST the register body; a duplicate name (409) is exit 65, naming the name; 401 is the owner (77)."""
    response, doc = call.json("POST", [("Content-Type", "application/json")], request_body(s), doing,
                              ok_statuses=(409, 401))
    if response.status == 401:  # register sends no key: the platform refused the owner, not a key file
        from .device_api import answer_text
        from .errors import IotPostError
        from .exitcodes import for_http_status

        err = IotPostError("the platform refused the device's owner (%s), while %s" % (answer_text(response), doing),
                           hint="check --user-id %s: is it an active user's user_id (a hex uuid) on this platform? "
                           "The local twin prints its demo user id at start" % (s.user_id or "(none)"))
        err.exit_code = for_http_status(401)
        raise err
    if response.status == 409:
        raise InputDataError("the platform already has a device named %r (409 %s), while registering"
                             % (s.name, (doc or {}).get("error") or "Conflict"),
                             hint="choose another --name; nothing was written")
    return response, doc


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    return run(lambda args, secrets: _main(args, secrets, prog=prog), argv, prog, json_errors=True)


if __name__ == "__main__":
    sys.exit(main())
