"""The TESAIoT device-facing contract: telemetry POST (one, or a batch), latest and history reads, health.

Usage: ``reply = post_telemetry(ApiRequest(store, {"Content-Type": "application/json", "X-API-KEY": key}, body))``

Each route is a plain function from an ``ApiRequest`` (plus the path's device id) to a ``Reply``.
The checks run in the platform's order (media type, API key, JSON, fields, identity,
Idempotency-Key) because a sender's exit code depends on which rejection comes first.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, List, NamedTuple, Optional, Tuple

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
from .clock import parse_iso8601, parse_start_time
from .store import IdempotencyKeyReused, TelemetryStore

MAX_IDEMPOTENCY_KEY = 255
MAX_BATCH = 1000  # payloads per POST /api/v1/telemetry/batch (PROTOCOLS.md)


def validate_telemetry(payload: Json) -> Optional[str]:
    """Why a TESAIoT payload is invalid (400 VALIDATION_ERROR), or None."""
    return _check_telemetry(payload)[0]


def _check_telemetry(payload: Json) -> Tuple[Optional[str], Optional[float]]:
    """(why the payload is invalid or None, its timestamp as epoch seconds or None): parsed once."""
    device_id = payload.get("device_id")
    if device_id is None or device_id == "":
        return "device_id is required", None
    if not isinstance(device_id, str):
        return "device_id must be a string", None
    data = payload.get("data")
    if data is None:
        return "data is required", None
    if not isinstance(data, dict):
        return "data must be an object", None
    if not data:
        return "data must not be empty", None
    stamp = payload.get("timestamp")
    if stamp is None:
        return None, None
    try:
        if not isinstance(stamp, str):
            raise ValueError(stamp)
        return None, parse_iso8601(stamp).timestamp()
    except ValueError:
        return "timestamp must be ISO 8601, like 2025-01-31T12:00:00Z", None


def get_health(request: ApiRequest) -> Reply:
    """GET /health: no credentials, so a sender can tell "twin is up" from "my key is wrong"."""
    return Reply(200, {"status": "healthy", "version": __version__})


def read_telemetry_post(request: ApiRequest) -> Tuple[Optional[Reply], Optional[str], Any]:
    """(refusal, device, JSON object): the checks every telemetry POST makes first, in the platform's
    order (media type 415, API key 401, JSON object 400). ``device`` is None for mTLS without a key."""
    headers = request.headers
    if media_type(headers.get("Content-Type")) != "application/json":
        return error_reply(415, "Content-Type must be application/json", "UNSUPPORTED_MEDIA_TYPE"), None, None
    key = headers.get("X-API-KEY")
    device = request.store.authenticate(key)
    if device is None and (key or not request.client_cert):
        return Reply(401, dict(INVALID_API_KEY)), None, None
    try:
        doc = parse_json_body(request.body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return error_reply(400, "Invalid JSON data", "INVALID_JSON"), None, None
    return None, device, doc


def post_telemetry(request: ApiRequest) -> Reply:
    """POST /api/v1/telemetry: store one reading, or replay the answer for a reused Idempotency-Key."""
    store, headers, body = request.store, request.headers, request.body
    refused, device, payload = read_telemetry_post(request)
    if refused is not None:
        return refused
    problem, epoch = _check_telemetry(payload)
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
                                       raw_body=body, idempotency_key=key, ts_epoch=epoch)
    except IdempotencyKeyReused:
        return error_reply(422, "Idempotency-Key reused with a different payload", "IDEMPOTENCY_KEY_REUSED")
    if result.replayed:
        return Reply(200, result.response, {"Idempotent-Replayed": "true"})
    rendered = result.response_json.encode("ascii") if result.response_json is not None else None
    return Reply(200, result.response, {}, rendered=rendered)


class BatchFaults(NamedTuple):
    """Test aids the real platform does not have, for the batch endpoint only (0/False: off).

    ``fail_every`` N: the Nth, 2Nth... payload of every batch (by position, so a replayed batch
    fails the same ones) is answered failed and not stored, and the answer does not say which;
    ``absent``: the endpoint answers 404, as on a platform without batches.
    """

    fail_every: int = 0
    absent: bool = False




def set_batch_faults(store: TelemetryStore, faults: BatchFaults) -> None:
    """Make this store's twin fail batch payloads, or lack the batch endpoint, from now on (see BatchFaults)."""
    store.platform_state["tesaiot_batch"] = faults  # one assignment: readers see the old faults or the new


def _batch_faults(store: TelemetryStore) -> BatchFaults:
    return store.platform_state.get("tesaiot_batch", BatchFaults())


def post_telemetry_batch(request: ApiRequest) -> Reply:
    """POST /api/v1/telemetry/batch: ``{"telemetry": [payload, ...]}``, each payload checked and stored alone.

    The answer is the documented ``{"success": true, "results": {"total", "successful", "failed",
    "errors", "telemetry_ids"}}``; ``errors`` are messages that do not say which payload failed, as
    the contract does not. A payload is de-duplicated like a single send, under its own key: item
    i's key from the body's ``"idempotency_keys"`` (what our senders add, so a payload sent again
    alone is recognised), else ``<batch Idempotency-Key>:i`` (a replayed batch stores nothing
    twice), else none. Its fingerprint is its own bytes within the body: the body a single send
    of it carries.
    """
    store, headers, body = request.store, request.headers, request.body
    faults = _batch_faults(store)
    if faults.absent:
        return error_reply(404, "Not found", "NOT_FOUND")  # as routes.dispatch answers an unknown path
    refused, device, doc = read_telemetry_post(request)
    if refused is not None:
        return refused
    items = doc.get("telemetry")
    if not isinstance(items, list) or not items:
        return validation_error("telemetry must be a non-empty list of payloads")
    if len(items) > MAX_BATCH:
        return validation_error("telemetry holds %d payloads; at most %d per batch" % (len(items), MAX_BATCH))
    batch_key = (headers.get("Idempotency-Key") or "").strip() or None
    if batch_key is not None and len(batch_key) > MAX_IDEMPOTENCY_KEY:
        return validation_error("Idempotency-Key must be at most %d characters" % MAX_IDEMPOTENCY_KEY)
    keys = doc.get("idempotency_keys")
    if keys is not None and not (isinstance(keys, list) and len(keys) == len(items) and all(
            isinstance(k, str) and 0 < len(k) <= MAX_IDEMPOTENCY_KEY for k in keys)):
        return validation_error("idempotency_keys must list one key (1 to %d characters) per payload"
                                % MAX_IDEMPOTENCY_KEY)
    raw = _telemetry_item_bytes(body)
    if raw is not None and len(raw) != len(items):
        raw = None  # cannot happen for a body json.loads read; then fingerprint the payloads as the store does
    errors: List[str] = []
    ids: List[str] = []
    replays = 0
    for i, item in enumerate(items):
        problem = validate_telemetry(item) if isinstance(item, dict) else "payload must be an object"
        if problem is not None:
            errors.append(problem)
            continue
        owner = device
        if owner is None:  # mTLS without a key, as in post_telemetry: the payload's registered device
            owner = item["device_id"] if store.is_registered(item["device_id"]) else None
        if item["device_id"] != owner:
            errors.append("Device identity mismatch")
            continue
        if faults.fail_every and (i + 1) % faults.fail_every == 0:
            errors.append("Failed to process telemetry data")
            continue
        item_key = keys[i] if keys is not None else ("%s:%d" % (batch_key, i) if batch_key else None)
        try:
            result = store.store_telemetry(owner, item["data"], timestamp=item.get("timestamp"),
                                           raw_body=raw[i] if raw is not None else None, idempotency_key=item_key)
        except IdempotencyKeyReused:
            errors.append("Idempotency-Key reused with a different payload")
            continue
        ids.append(result.response["telemetry_id"])
        replays += result.replayed
    results = {"total": len(items), "successful": len(ids), "failed": len(errors), "errors": errors,
               "telemetry_ids": ids}
    replayed = {"Idempotent-Replayed": "true"} if ids and replays == len(ids) else {}
    return Reply(200, {"success": True, "results": results}, replayed)


_JSON_SPACE = " \t\n\r"


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in _JSON_SPACE:
        i += 1
    return i


def _telemetry_item_bytes(body: bytes) -> Optional[List[bytes]]:
    """Each element of the top-level ``"telemetry"`` list as the exact bytes it was sent as.

    ``body`` already parsed as JSON; this walks it again with ``raw_decode`` to find where each
    element starts and ends (the last ``"telemetry"`` key wins, as in ``json.loads``). None if the
    walk finds no list there.
    """
    text = body.decode("utf-8")
    decoder = json.JSONDecoder()
    found: Optional[List[bytes]] = None
    i = _skip_space(text, 0)
    if text[i:i + 1] != "{":
        return None
    i = _skip_space(text, i + 1)
    while i < len(text) and text[i] != "}":
        name, i = decoder.raw_decode(text, i)
        i = _skip_space(text, _skip_space(text, i) + 1)  # past the colon
        if name == "telemetry" and text[i] == "[":
            found, i = [], _skip_space(text, i + 1)
            while text[i] != "]":
                _, end = decoder.raw_decode(text, i)
                found.append(text[i:end].encode("utf-8"))
                i = _skip_space(text, end)
                if text[i] == ",":
                    i = _skip_space(text, i + 1)
            i += 1
        else:
            _, i = decoder.raw_decode(text, i)
        i = _skip_space(text, i)
        if text[i:i + 1] == ",":
            i = _skip_space(text, i + 1)
    return found


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
    route("/api/v1/telemetry/batch", POST=post_telemetry_batch),  # before the reads: "batch" is no device
    route("/api/v1/telemetry/%s/latest" % _SEGMENT, GET=get_latest),
    route("/api/v1/telemetry/%s" % _SEGMENT, GET=get_history),
]
