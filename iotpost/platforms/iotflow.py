"""IoTFlow: ``POST /api/v1/telemetry`` ``{"data", "metadata", "timestamp"}`` with ``X-API-Key``.

Devices are registered with ``POST /api/v1/devices/register`` (the owner as ``"user_id"`` in the
body) and numbered by the platform; the key alone says which device sends. Facts in
../shared/PROTOCOLS.md ("IoTFlow / IoT Connectivity Layer").
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Optional

from ..payloads import iso_utc_ms
from ..profiles import Profile, api_key_header
from ..smoke import ReadbackRules
from ..target import SettingNames
from . import Json, Platform, integer_device_id

NAMES = SettingNames(url="--base-url / endpoints.json", ca="--ca-file / the bundle's ca-chain.pem",
                     endpoint="--endpoint", cleartext="the API key would travel unencrypted",
                     example_url="https://iotflow.example.com",
                     url_credentials_hint="credentials belong in the bundle, not in the URL")
AUTH_HINT = ("check api_key.txt: is it this device's current key? (`iotpost register` writes a bundle with it; "
             "a device the platform marked inactive is refused with 403)")

PROFILE = Profile("iotflow", "/api/v1/telemetry", api_key_header("X-API-Key"), auth_hint=AUTH_HINT, names=NAMES,
                  refused="the platform rejected the API key")


def make_body(device_id: str, data: Json, metadata: Optional[Json], timestamp: str) -> Json:
    return {"data": data, "metadata": dict(metadata or {}), "timestamp": timestamp}


PLATFORM = Platform(
    name="iotflow",
    profile=PROFILE,
    make_body=make_body,
    parse_device_id=integer_device_id("IoTFlow"),
    public_ca=True,
    register_path="/api/v1/devices/register",
    heartbeat_path="/api/v1/devices/heartbeat",
    status_path="/api/v1/devices/status",
    health_path="/health",
    latest_path=lambda device_id: "/api/v1/telemetry/%s/latest" % device_id,
    history_path=lambda device_id: "/api/v1/telemetry/%s" % device_id,
    stamp=iso_utc_ms,  # its store keys readings by (device, millisecond): a second's resolution would merge them
    unique_times=True,
    readback_query="start_time=-1h&limit=1000",
    readback_records="data",
    # A record is flat: data fields at its top, metadata as meta_<key>, the timestamp in UTC to the millisecond.
    readback_rules=ReadbackRules(data_at_top=True, meta_prefix="meta_", timestamp_resolution_ms=1,
                                 text_parsed_as_json=True),
)
