"""The TLINK contract: the webhook POST a platform pushes to, and the read-back of what it stored.

Usage: ``reply = post_webhook(ApiRequest(store, {"X-TLink-Signature": sig}, body, tlink_secret=secret))``

Each route is a plain function from an ``ApiRequest`` (plus the path's ids) to a ``Reply``. The
read-back routes take no credentials, like the reference receiver they copy; errors carry no
``code``, as TLINK's do not. Two read-backs: seed 001's ``/api/users/{userId}/devices...`` and the
reference receiver's own ``/api/devices...`` (its shapes: camelCase, ``pagination``, ``history``).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from .api_request import (
    DEFAULT_HISTORY_LIMIT,
    MAX_HISTORY_LIMIT,
    ApiRequest,
    Query,
    parse_json_body,
    query_int,
    query_text,
    route,
)
from .faults import nth_fault
from .replies import Json, Reply, error_reply

# The reference's page and history sizes come from its .env; these are the twin's choices.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_REFERENCE_HISTORY = 10
MAX_PAGE = 10 ** 9  # so (page - 1) * pageSize stays a 64-bit sqlite OFFSET (a 20-digit page overflowed)
MAX_DEVICE_ID = 2 ** 63 - 1  # the reference keeps ids as signed 64-bit integers
_MAX_INT_TEXT = 4300  # int()'s digit limit (3.11+, 3.8.14+): longer text is junk on every version
from .store import TelemetryStore
from .tlink_limits import why_reference_fails
from .tlink_store import ReferenceWouldFail, id_out, parse_tlink_time, validate_tlink_push

# The reference's 500 is an unhandled database error; its body was not observed (Flask's default
# is an HTML page), so the twin answers a JSON error that says what the reference's log would.
DATABASE_ERROR = "Internal Server Error: the reference receiver's database refuses this push"


class TlinkFaults(NamedTuple):
    """Test aids the reference receiver does not have: a webhook that acknowledges what it does not keep.

    ``lose_every`` N: every Nth signed, valid push is answered 200 as usual but not stored;
    ``alter_every`` N: every Nth is stored with each numeric entry's (sensorsTypeId 1) ``value``
    plus 1. 0 is off. Set with ``set_tlink_faults``; the smoke's tests use them.
    """

    lose_every: int = 0
    alter_every: int = 0


class _FaultState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults = TlinkFaults()
        self.pushes = 0  # valid pushes since the faults were set (which ones lose_every/alter_every hit)


_FAULTS_LOCK = threading.Lock()  # creates a store's _FaultState (kept in its platform_state, as "tlink")


def set_tlink_faults(store: TelemetryStore, faults: TlinkFaults) -> None:
    """Make this store's twin lose or alter TLINK pushes from now on (see TlinkFaults)."""
    with _FAULTS_LOCK:
        state = store.platform_state.setdefault("tlink", _FaultState())
    with state.lock:
        state.faults = faults
        state.pushes = 0


def _apply_faults(store: TelemetryStore, push: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The push to store (altered by TlinkFaults), or None when it is to be lost."""
    state = store.platform_state.get("tlink")
    if state is None:
        return push
    with state.lock:
        faults = state.faults
        if faults == TlinkFaults():
            return push
        state.pushes += 1
        n = state.pushes
    fault = nth_fault(n, faults.lose_every, faults.alter_every)
    if fault == "lose":
        return None
    if fault == "alter":
        entries = []
        for entry in push["sensorsDates"]:
            entry = dict(entry) if isinstance(entry, dict) else entry
            if isinstance(entry, dict) and entry.get("sensorsTypeId", entry.get("sensorTypeId")) == 1:
                try:
                    entry["value"] = "%g" % (float(entry.get("value")) + 1)
                except (TypeError, ValueError):
                    pass
            entries.append(entry)
        return dict(push, sensorsDates=entries)
    return push


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
    kept = _apply_faults(request.store, push)
    # TlinkFaults.lose_every: acknowledged as the reference would (a push it would fail still fails), not stored
    if kept is None and why_reference_fails(push) is None:
        processed = sum(1 for e in push["sensorsDates"] if isinstance(e, dict) and e.get("sensorsId") is not None)
        return Reply(200, {"status": "ok", "storedReadings": processed, "newReadings": processed})
    try:
        stored = request.store.store_tlink_push(kept if kept is not None else push)
    except ReferenceWouldFail as exc:
        if request.log is not None:
            request.log("TLINK push deviceId=%s answered 500, as the reference would: %s"
                        % (push.get("deviceId"), exc))
        return error_reply(500, "%s (%s)" % (DATABASE_ERROR, exc))
    # storedReadings as the reference counts (entries processed); newReadings is the twin's own
    return Reply(200, {"status": "ok", "storedReadings": stored.processed, "newReadings": stored.new})


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


def _lenient_int(query: Query, name: str, default: Optional[int]) -> Optional[int]:
    """A query integer the way Flask's ``args.get(name, default, type=int)`` reads it: junk is the default."""
    text = query_text(query, name)
    if text is None or len(text) > _MAX_INT_TEXT:
        return default
    try:
        return int(text)
    except ValueError:
        return default


def _device_number(text: str) -> Optional[int]:
    """A path's device id (digits) as a number the reference could hold, or None: no such device.

    Checked before int(), which refuses 5,000 digits, and before sqlite, which refuses 2 ** 63.
    """
    digits = text.lstrip("0")
    if not digits or len(digits) > len(str(MAX_DEVICE_ID)):
        return None
    number = int(digits)
    return number if number <= MAX_DEVICE_ID else None


def _lenient_time(query: Query, name: str) -> Optional[str]:
    """A time filter the reference reads (``YYYY-MM-DD HH:MM:SS`` and two cousins); junk is no filter."""
    from .tlink_store import parse_push_time

    text = query_text(query, name)
    try:
        return parse_push_time(text) if text else None
    except ValueError:
        return None


def _owner_missing(query: Query) -> Optional[Reply]:
    """``ownerId`` names one of the reference's local accounts; the twin has none, so any is unknown."""
    if query_text(query, "ownerId"):
        return error_reply(404, "User not found")
    return None


def get_reference_devices(request: ApiRequest) -> Reply:
    """GET /api/devices: the reference's paginated device list, each sensor with its newest readings.

    Lenient like the reference: a bad ``page``/``pageSize``/``historyLimit``/``deviceId`` is its
    default (a bad ``deviceId`` lists every device), a number out of range is clamped (a ``deviceId``
    is compared as text, so a huge one finds nothing), and a bad time is no filter.
    """
    query = request.query
    missing = _owner_missing(query)
    if missing is not None:
        return missing
    page = min(max(_lenient_int(query, "page", 1) or 1, 1), MAX_PAGE)
    page_size = max(1, min(_lenient_int(query, "pageSize", DEFAULT_PAGE_SIZE) or DEFAULT_PAGE_SIZE,
                           MAX_PAGE_SIZE))
    history_limit = min(max(1, _lenient_int(query, "historyLimit", DEFAULT_REFERENCE_HISTORY)
                            or DEFAULT_REFERENCE_HISTORY), MAX_HISTORY_LIMIT)
    total, devices = request.store.tlink_devices_page(
        device_id=_lenient_int(query, "deviceId", None), page=page, page_size=page_size,
        start=_lenient_time(query, "startTime"), end=_lenient_time(query, "endTime"),
        history_limit=history_limit)
    pages = (total + page_size - 1) // page_size
    return Reply(200, {"pagination": {"page": page, "pageSize": page_size, "total": total, "pages": pages},
                       "devices": devices})


def get_reference_latest(request: ApiRequest, device_id: str) -> Reply:
    """GET /api/devices/{deviceId}/latest: the device and each sensor's newest stored reading."""
    return _one_device(request, device_id, request.store.tlink_device_latest)


def get_reference_history(request: ApiRequest, device_id: str) -> Reply:
    """GET /api/devices/{deviceId}/history: the reference's pull-sync log; empty for pushed data."""
    return _one_device(request, device_id, request.store.tlink_device_sync_history)


def _one_device(request: ApiRequest, device_id: str, read: Callable[[int], Optional[Json]]) -> Reply:
    """What ``read`` answers for one device by id, or the reference's 404 (an unknown or impossible id)."""
    missing = _owner_missing(request.query)
    if missing is not None:
        return missing
    number = _device_number(device_id)
    answer = None if number is None else read(number)
    return error_reply(404, "Device not found") if answer is None else Reply(200, answer)


_SEGMENT = r"([^/]+)"
ROUTES = [
    route("/api/webhooks/tlink", flask_json=True, POST=post_webhook),
    route("/api/users/%s/devices" % _SEGMENT, flask_json=True, GET=get_devices),
    route("/api/users/%s/devices/%s/latest" % (_SEGMENT, _SEGMENT), flask_json=True, GET=get_latest),
    route("/api/users/%s/devices/%s/history" % (_SEGMENT, _SEGMENT), flask_json=True, GET=get_history),
    route("/api/devices", flask_json=True, GET=get_reference_devices),
    # \d+ as Flask's <int:deviceId>: anything else (a sign, a letter) is not this route, so a 404
    route(r"/api/devices/(\d+)/latest", flask_json=True, GET=get_reference_latest),
    route(r"/api/devices/(\d+)/history", flask_json=True, GET=get_reference_history),
]
