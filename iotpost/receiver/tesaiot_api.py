"""The TESAIoT device-facing contract: telemetry POST, latest and history reads, health.

Usage: ``reply = post_telemetry(ApiRequest(store, {"Content-Type": "application/json", "X-API-KEY": key}, body))``

Each route is a plain function from an ``ApiRequest`` (plus the path's device id) to a ``Reply``.
The checks run in the platform's order (media type, API key, JSON, fields, identity,
Idempotency-Key) because a sender's exit code depends on which rejection comes first.
"""

from __future__ import annotations

import datetime as _dt
from typing import Optional

from .. import __version__
from .api_request import (
    DEFAULT_HISTORY_LIMIT,
    MAX_HISTORY_LIMIT,
    ApiRequest,
    media_type,
    parse_json_body,
    query_int,
    query_text,
    route,
)
from .replies import INVALID_API_KEY, Json, Reply, error_reply, validation_error
from .store import IdempotencyKeyReused, parse_iso8601, parse_start_time

MAX_IDEMPOTENCY_KEY = 255


def validate_telemetry(payload: Json) -> Optional[str]:
    """Why a TESAIoT payload is invalid (400 VALIDATION_ERROR), or None."""
    device_id = payload.get("device_id")
    if device_id is None or device_id == "":
        return "device_id is required"
    if not isinstance(device_id, str):
        return "device_id must be a string"
    data = payload.get("data")
    if data is None:
        return "data is required"
    if not isinstance(data, dict):
        return "data must be an object"
    if not data:
        return "data must not be empty"
    stamp = payload.get("timestamp")
    if stamp is not None:
        try:
            if not isinstance(stamp, str):
                raise ValueError(stamp)
            parse_iso8601(stamp)
        except ValueError:
            return "timestamp must be ISO 8601, like 2025-01-31T12:00:00Z"
    return None


def get_health(request: ApiRequest) -> Reply:
    """GET /health: no credentials, so a sender can tell "twin is up" from "my key is wrong"."""
    return Reply(200, {"status": "healthy", "version": __version__})


def post_telemetry(request: ApiRequest) -> Reply:
    """POST /api/v1/telemetry: store one reading, or replay the answer for a reused Idempotency-Key."""
    store, headers, body = request.store, request.headers, request.body
    if media_type(headers.get("Content-Type")) != "application/json":
        return error_reply(415, "Content-Type must be application/json", "UNSUPPORTED_MEDIA_TYPE")
    key = headers.get("X-API-KEY")
    device = store.authenticate(key)
    if device is None and (key or not request.client_cert):
        return Reply(401, dict(INVALID_API_KEY))
    try:
        payload = parse_json_body(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return error_reply(400, "Invalid JSON data", "INVALID_JSON")
    problem = validate_telemetry(payload)
    if problem is not None:
        return validation_error(problem)
    if device is None:
        # mTLS without a key: the verified client certificate is the credential. The twin does not
        # bind a certificate to one device (TESAIoT would); it takes the payload's registered device.
        device = payload["device_id"] if store.is_registered(payload["device_id"]) else None
        if device is None:
            return Reply(401, dict(INVALID_API_KEY))
    if payload["device_id"] != device:
        return error_reply(403, "Device identity mismatch", "DEVICE_ID_MISMATCH")
    key = (headers.get("Idempotency-Key") or "").strip() or None
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        return validation_error("Idempotency-Key must be at most %d characters" % MAX_IDEMPOTENCY_KEY)
    try:
        result = store.store_telemetry(device, payload["data"], timestamp=payload.get("timestamp"),
                                       raw_body=body, idempotency_key=key)
    except IdempotencyKeyReused:
        return error_reply(422, "Idempotency-Key reused with a different payload", "IDEMPOTENCY_KEY_REUSED")
    return Reply(200, result.response, {"Idempotent-Replayed": "true"} if result.replayed else {})


def _deny_reader(request: ApiRequest, device_id: str) -> Optional[Reply]:
    """401/403 unless the caller's key belongs to ``device_id``: a device reads only its own data."""
    device = request.store.authenticate(request.headers.get("X-API-KEY"))
    if device is None:
        return Reply(401, dict(INVALID_API_KEY))
    if device != device_id:
        return Reply(403, {"error": "Forbidden: device mismatch"})
    return None


def get_latest(request: ApiRequest, device_id: str) -> Reply:
    """GET /api/v1/telemetry/{device_id}/latest: the newest reading by payload timestamp."""
    denied = _deny_reader(request, device_id)
    if denied is not None:
        return denied
    record = request.store.latest(device_id)
    if record is None:
        return error_reply(404, "No telemetry for this device")
    return Reply(200, {"device_id": device_id, "telemetry": record.as_json()})


def get_history(request: ApiRequest, device_id: str) -> Reply:
    """GET /api/v1/telemetry/{device_id}?limit=&start_time=: newest first, ``start_time`` may be relative."""
    denied = _deny_reader(request, device_id)
    if denied is not None:
        return denied
    store, query = request.store, request.query
    try:
        limit = query_int(query, "limit", DEFAULT_HISTORY_LIMIT, 1, MAX_HISTORY_LIMIT)
        start_text = query_text(query, "start_time")
        now = _dt.datetime.fromtimestamp(store.now(), tz=_dt.timezone.utc)
        start = parse_start_time(start_text, now) if start_text else None
    except ValueError as exc:
        return validation_error(str(exc) if "limit" in str(exc) else
                                "start_time must be ISO 8601 or relative like -1h, -30m, -7d, -90s")
    records = store.history(device_id, limit=limit, start=start)
    return Reply(200, {"device_id": device_id, "count": len(records),
                       "telemetry": [r.as_json() for r in records]})


_SEGMENT = r"([^/]+)"
ROUTES = [
    route("/health", GET=get_health),
    route("/api/v1/telemetry", POST=post_telemetry),
    route("/api/v1/telemetry/%s/latest" % _SEGMENT, GET=get_latest),
    route("/api/v1/telemetry/%s" % _SEGMENT, GET=get_history),
]
