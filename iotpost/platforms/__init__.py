"""The platforms a device sends telemetry to: one module each, named here and loaded on demand.

Usage: ``platform = load("iotflow"); body = platform.make_body(device_id, data, metadata, timestamp)``

A platform module says what differs: its endpoint, body shape, auth header (its ``Profile``), what
its device ids look like, whether its servers sit behind a public CA, and its other device paths
(register, heartbeat, status, read-back). Bundles, TLS, retries, the spool and output are shared.
Adding a platform is one module here and its name in ``SENDING``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

from ..errors import ConfigError, UsageError
from ..payloads import Json, iso_utc
from ..profiles import Profile
from ..records import Record


# Platforms `post_https_sample.py` / `iotpost send` can send to (TLINK has its own command).
SENDING = ("tesaiot", "iotflow", "connectivity")
DEFAULT = "tesaiot"


class Platform(Record):
    name: str
    profile: Profile  # endpoint, auth header, the wording of hints
    make_body: Callable[[str, Json, Optional[Json], str], Json]  # (device_id, data, metadata, timestamp)
    parse_device_id: Callable[[str, str], str]  # (text, where it came from) -> the id, or ConfigError
    public_ca: bool = False  # a bundle without ca-chain.pem trusts the system's store (still verified)
    takes_metadata: bool = True
    register_path: Optional[str] = None
    heartbeat_path: Optional[str] = None
    status_path: Optional[str] = None  # proves a key works without storing anything
    health_path: Optional[str] = None
    latest_path: Optional[Callable[[str], str]] = None  # device id -> read-back of the newest reading
    history_path: Optional[Callable[[str], str]] = None  # device id -> read-back of recent readings
    readback_query: str = ""  # appended to history_path for the smoke's read-back
    readback_records: str = "data"  # the key of the answer's list of records
    readback_rules: Any = None  # smoke.ReadbackRules: what the platform documents it changes on the way
    stamp: Callable[[float], str] = iso_utc  # epoch seconds -> the timestamp a generated reading carries
    unique_times: bool = False  # the platform keeps one reading per device and timestamp (warn on a repeat)
    batches: bool = False  # documents {endpoint}/batch (--batch-size above 1 is refused for the others)


def load(name: str) -> Platform:
    """The platform called ``name`` (one of SENDING); its module is imported only now."""
    if name not in SENDING:
        raise UsageError("unknown platform %r (choose from %s)" % (name, ", ".join(SENDING)))
    module = __import__("iotpost.platforms." + name, fromlist=["PLATFORM"])
    return module.PLATFORM


def platform_from_endpoints(doc: Any, source: str) -> Optional[str]:
    """The ``"platform"`` key of an endpoints.json document, checked; None when it has none."""
    if not isinstance(doc, dict) or doc.get("platform") in (None, ""):
        return None
    value = doc["platform"]
    if not isinstance(value, str) or value.strip().lower() not in SENDING:
        raise ConfigError('%s: "platform" is %s; it must be one of %s, while loading the credential bundle'
                          % (source, _shown(value), ", ".join(SENDING)),
                          hint="fix the file, or pass --platform to say which platform this bundle is for")
    return value.strip().lower()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def integer_device_id(title: str) -> Callable[[str, str], str]:
    """A device id that is a positive integer (IoTFlow and the Connectivity Layer number their devices)."""

    def parse(text: str, source: str) -> str:
        value = text.strip()
        if not (value.isdigit() and value.isascii() and int(value) > 0 and len(value) <= 18):
            raise ConfigError("%s does not hold an %s device id (a positive whole number), while loading the "
                              "credential bundle" % (source, title),
                              hint="`iotpost register` writes a bundle holding the id %s gave the device"
                              % title)
        return str(int(value))

    return parse
