"""TESAIoT, Server-TLS mode: ``POST /api/v1/telemetry`` ``{"device_id", "timestamp", "data"}`` with ``X-API-KEY``."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Optional

from ..bundle import parse_device_id
from ..payloads import make_payload
from ..profiles import TESAIOT
from . import Json, Platform


def make_body(device_id: str, data: Json, metadata: Optional[Json], timestamp: str) -> Json:
    """The seed's body; TESAIoT's contract has no metadata (the CLI refuses --metadata for it)."""
    return make_payload(device_id, data, timestamp)


PLATFORM = Platform(
    name="tesaiot",
    profile=TESAIOT,
    make_body=make_body,
    parse_device_id=parse_device_id,
    takes_metadata=False,
    batches=True,  # POST /api/v1/telemetry/batch, {"telemetry": [...]} (PROTOCOLS.md)
    # No documented health check or device read API (the twin's /health and /api/v1/telemetry/{id}
    # reads are test aids only).
)
