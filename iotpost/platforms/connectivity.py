"""IoT Connectivity Layer: ``POST /api/v1/devices/telemetry`` ``{"data", "metadata", "type"}`` with ``X-API-Key``.

The layer IoTFlow grew from (IoTFlow still serves this API). Its body has no timestamp: the
platform stamps arrival, so the reading's own time goes in ``metadata["reading_time"]`` (unless
the caller's metadata already has that key) and a backlog sent late still says when it was read.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Optional

from . import Json, Platform, integer_device_id
from .iotflow import AUTH_HINT, NAMES
from ..profiles import Profile, api_key_header
from ..smoke import ReadbackRules

PROFILE = Profile("connectivity", "/api/v1/devices/telemetry", api_key_header("X-API-Key"), auth_hint=AUTH_HINT,
                  names=NAMES, refused="the platform rejected the API key")
DATA_TYPE = "telemetry"


def make_body(device_id: str, data: Json, metadata: Optional[Json], timestamp: str) -> Json:
    meta = dict(metadata or {})
    meta.setdefault("reading_time", timestamp)
    return {"data": data, "metadata": meta, "type": DATA_TYPE}


PLATFORM = Platform(
    name="connectivity",
    profile=PROFILE,
    make_body=make_body,
    parse_device_id=integer_device_id("IoT Connectivity Layer"),
    public_ca=True,
    register_path="/api/v1/devices/register",
    heartbeat_path="/api/v1/devices/heartbeat",
    status_path="/api/v1/devices/status",
    health_path="/health",
    history_path=lambda device_id: "/api/v1/devices/telemetry",
    readback_query="start_time=-1h&limit=1000",
    readback_records="telemetry",
    # Records as IoTFlow's (flat, meta_<key>); the timestamp is the arrival, so the reading's own time is
    # compared as meta_reading_time (the body's metadata), not as "timestamp".
    readback_rules=ReadbackRules(data_at_top=True, meta_prefix="meta_", timestamp_key=None,
                                 text_parsed_as_json=True),
)
