"""The local twin of the platforms' device-facing HTTPS contracts, for end-to-end tests.

Usage: ``from iotpost.receiver import start_twin; twin = start_twin(certfile=..., keyfile=...)``
or from a shell: ``python3 receiver.py`` (see ``iotpost.receiver.cli``).

Senders never import this package: it pulls in http.server and sqlite3.
"""

from __future__ import annotations

from .faults import FAULT_KINDS, FaultPlan
from .request_log import SeenRequest, SeenRequests
from .server import TwinServer, read_bundle_device, start_twin
from .store import IdempotencyKeyReused, StoreResult, TelemetryRecord, TelemetryStore

__all__ = [
    "FAULT_KINDS",
    "FaultPlan",
    "IdempotencyKeyReused",
    "SeenRequest",
    "SeenRequests",
    "StoreResult",
    "TelemetryRecord",
    "TelemetryStore",
    "TwinServer",
    "read_bundle_device",
    "start_twin",
]
