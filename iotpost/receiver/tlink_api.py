"""The TLINK contract: the webhook POST a platform pushes to, and the read-back of what it stored.

Usage: ``reply = post_webhook(ApiRequest(store, {"X-TLink-Signature": sig}, body, tlink_secret=secret))``

Each route is a plain function from an ``ApiRequest`` (plus the path's ids) to a ``Reply``. The
read-back routes take no credentials, like the reference receiver they copy; errors carry no
``code``, as TLINK's do not.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Optional, Tuple

from .api_request import (
    DEFAULT_HISTORY_LIMIT,
    MAX_HISTORY_LIMIT,
    ApiRequest,
    Query,
    parse_json_body,
    query_int,
    query_text,
)
from .replies import Reply, error_reply
from .store import TelemetryStore
from .tlink_store import id_out, parse_tlink_time, validate_tlink_push


def post_webhook(request: ApiRequest) -> Reply:
    """POST /api/webhooks/tlink: check the HMAC signature (when a secret is set), then store the push."""
    body = request.body
    try:
        push = parse_json_body(body)
    except ValueError:
        push = None
    if not isinstance(push, dict) or not push:
        return error_reply(400, "Invalid or empty JSON body")
    if request.tlink_secret is not None:
        presented = request.headers.get("X-TLink-Signature") or ""
        expected = "sha256=" + hmac.new(request.tlink_secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("ascii")):
            return error_reply(401, "Invalid webhook signature")
    problem = validate_tlink_push(push)
    if problem is not None:
        return error_reply(400, problem)
    return Reply(200, {"status": "ok", "storedReadings": request.store.store_tlink_push(push)})


def _time_window(query: Query) -> Tuple[Optional[str], Optional[str]]:
    """(startTime, endTime) as stored text; one message for both, as either may be the bad one."""
    start, end = query_text(query, "startTime"), query_text(query, "endTime")
    try:
        return (parse_tlink_time(start) if start else None, parse_tlink_time(end) if end else None)
    except ValueError:
        raise ValueError("startTime and endTime must be YYYY-MM-DD HH:MM:SS or ISO 8601") from None


def get_devices(request: ApiRequest, user_id: str) -> Reply:
    """GET /api/users/{userId}/devices: a page of the user's devices, each with recent readings."""
    store, query = request.store, request.query
    try:
        page = query_int(query, "page", 1, 1, 10 ** 9)
        page_size = query_int(query, "pageSize", 20, 1, 100)
        history_limit = query_int(query, "historyLimit", 10, 0, MAX_HISTORY_LIMIT)
        start, end = _time_window(query)
    except ValueError as exc:
        return error_reply(400, str(exc))
    if not store.tlink_user_exists(user_id):
        return error_reply(404, "User not found")
    total, devices = store.tlink_user_devices(
        user_id, page=page, page_size=page_size, device_id=query_text(query, "deviceId"),
        start=start, end=end, history_limit=history_limit)
    return Reply(200, {"userId": id_out(user_id), "page": page, "pageSize": page_size,
                       "total": total, "devices": devices})


def _missing_device(store: TelemetryStore, user_id: str, device_id: str) -> Optional[Reply]:
    """404 unless the user exists and owns the device; the user first, so each 404 names what is missing."""
    if not store.tlink_user_exists(user_id):
        return error_reply(404, "User not found")
    if store.tlink_device_owner(device_id) != user_id:
        return error_reply(404, "Device not found")
    return None


def get_latest(request: ApiRequest, user_id: str, device_id: str) -> Reply:
    """GET /api/users/{userId}/devices/{deviceId}/latest: each sensor's newest reading."""
    missing = _missing_device(request.store, user_id, device_id)
    if missing is not None:
        return missing
    return Reply(200, {"userId": id_out(user_id), "deviceId": id_out(device_id),
                       "sensors": request.store.tlink_latest(user_id, device_id)})


def get_history(request: ApiRequest, user_id: str, device_id: str) -> Reply:
    """GET /api/users/{userId}/devices/{deviceId}/history: newest first; a bad parameter is a 400 before any 404."""
    query = request.query
    try:
        limit = query_int(query, "limit", DEFAULT_HISTORY_LIMIT, 1, MAX_HISTORY_LIMIT)
        start, end = _time_window(query)
    except ValueError as exc:
        return error_reply(400, str(exc))
    missing = _missing_device(request.store, user_id, device_id)
    if missing is not None:
        return missing
    readings = request.store.tlink_history(user_id, device_id, start=start, end=end, limit=limit)
    return Reply(200, {"userId": id_out(user_id), "deviceId": id_out(device_id),
                       "count": len(readings), "readings": readings})
