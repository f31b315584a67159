"""IoTFlow and the IoT Connectivity Layer it grew from: device registration, telemetry, heartbeat, reads.

Usage: ``reply = post_register(ApiRequest(store, {"Content-Type": "application/json"}, body))``

One module speaks both APIs, as IoTFlow's server does: routes and storage side by side, in tables
named ``iotflow_*`` created on first use through the shared store connection. The answers copy
what IoTFlow's code was observed to answer (../shared/PROTOCOLS.md "IoTFlow / IoT Connectivity
Layer"): 201 on register and telemetry, ``{"error": ...}`` bodies, stored times without a zone,
a 429 with ``retry_after`` in the body and no ``Retry-After`` header. API keys are kept hashed
(``store.key_digest``). Where the twin differs from the real server, ARCHITECTURE.md says so.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import string
import threading
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from .api_request import ApiRequest, parse_json_body, query_text, route
from .faults import nth_fault
from .replies import Json, Reply
from .store import TelemetryStore, key_digest

# The twin's one user, owner of every device registered against it (IoTFlow wants a known user's
# hex uuid as "user_id" in the register body). Fixed, so README commands can name it.
DEMO_USER_ID = "0d5e6f7a8b9c4d0e9f1a2b3c4d5e6f70"
DEMO_USERNAME = "demo"
DEMO_EMAIL = "demo@iotflow.twin.invalid"

API_KEY_LENGTH = 32
_KEY_ALPHABET = string.ascii_letters + string.digits
ONLINE_SECONDS = 300  # a device seen (telemetry or heartbeat) this recently is "is_online"
HEALTH = {"status": "healthy", "message": "IoT Connectivity Layer is running", "version": "1.0.0"}

# IoTFlow's read-back: history page size when none is asked for, and the cap.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
# The Connectivity Layer's GET /api/v1/devices/telemetry.
CONNECTIVITY_DEFAULT_LIMIT = 100
CONNECTIVITY_MAX_LIMIT = 1000
AGGREGATIONS = ("mean", "sum", "count", "min", "max", "first", "last", "median")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS iotflow_users (
        id         INTEGER PRIMARY KEY,
        user_id    TEXT NOT NULL UNIQUE,     -- hex uuid, as IoTFlow's users have
        username   TEXT NOT NULL,
        email      TEXT NOT NULL,
        is_active  INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS iotflow_devices (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        name             TEXT NOT NULL UNIQUE,
        description      TEXT,
        device_type      TEXT NOT NULL,
        key_sha256       BLOB NOT NULL UNIQUE,  -- the key itself is never stored
        status           TEXT NOT NULL,
        location         TEXT,
        firmware_version TEXT,
        hardware_version TEXT,
        user_id          INTEGER NOT NULL REFERENCES iotflow_users (id),
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        last_seen        REAL                   -- epoch seconds of the last telemetry or heartbeat
    )""",
    """CREATE TABLE IF NOT EXISTS iotflow_telemetry (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id     INTEGER NOT NULL REFERENCES iotflow_devices (id),
        ts_epoch      REAL NOT NULL,
        data_json     TEXT NOT NULL,
        metadata_json TEXT NOT NULL,
        data_type     TEXT,                     -- Connectivity's "type"; None for IoTFlow's endpoint
        api           TEXT NOT NULL             -- "iotflow" or "connectivity": which endpoint took it
    )""",
    "CREATE INDEX IF NOT EXISTS iotflow_telemetry_by_device ON iotflow_telemetry (device_id, ts_epoch)",
)


# -- settings and in-memory state per store (rate limits live in Redis on the real server) ----------

class RateLimit(NamedTuple):
    limit: int  # requests allowed ...
    window: int  # ... per this many seconds


class RateLimits(NamedTuple):
    """IoTFlow's limits with Redis (without Redis it has none): None turns one off."""

    telemetry: Optional[RateLimit] = RateLimit(100, 60)  # POST /api/v1/devices/telemetry, per device
    heartbeat: Optional[RateLimit] = RateLimit(30, 60)  # per device, the same counter as telemetry
    register: Optional[RateLimit] = RateLimit(10, 300)  # per client address on the real server


NO_LIMITS = RateLimits(None, None, None)


def parse_rate_limits(text: str) -> RateLimits:
    """``off``, ``default`` or ``telemetry=100/60,heartbeat=30/60,register=10/300`` (any subset); ValueError."""
    text = text.strip().lower()
    if text == "off":
        return NO_LIMITS
    limits = RateLimits()
    if text == "default":
        return limits
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        count, slash, window = value.partition("/")
        if not sep or name not in RateLimits._fields:
            raise ValueError("name telemetry, heartbeat or register, like heartbeat=30/60, not %r" % part)
        if value == "off":
            limits = limits._replace(**{name: None})
            continue
        if not (slash and count.isdigit() and window.isdigit() and int(count) > 0 and 0 < int(window) <= 86400):
            raise ValueError("%s takes REQUESTS/SECONDS, like %s=30/60, not %r" % (name, name, value))
        limits = limits._replace(**{name: RateLimit(int(count), int(window))})
    return limits


class _State:
    """What the twin keeps beside its tables for one store: tables made, limits, rate counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tables = False
        self.limits = RateLimits()
        self.counters: Dict[str, List[int]] = {}  # key -> [count, window slot]
        self.faults = DataFaults()
        self.stored = 0  # readings accepted since the faults were set (which ones lose_every/alter_every hit)
        self.visible_at: Dict[int, float] = {}  # seq -> store clock time it may be read back (read_lag)
        self.iotdb_available = True  # set_iotdb_available: False plays IoTDB being down
        # SHA-256 of every device key, or None until read: most keys on the shared TESAIoT paths are
        # no IoTFlow device's, and asking the table each time costs a query (and the store's lock).
        self.digests: Optional[FrozenSet[bytes]] = None


class DataFaults(NamedTuple):
    """Test aids the real server does not have: a platform that acknowledges what it does not keep as sent.

    ``lose_every`` N: every Nth accepted reading is answered 201 but not stored; ``alter_every`` N:
    every Nth is stored with its first numeric value (by key, markers aside) plus 1; ``read_lag``:
    a stored reading shows in read-backs only this many seconds after it arrived. 0 is off.
    """

    lose_every: int = 0
    alter_every: int = 0
    read_lag: float = 0.0


def set_data_faults(store: TelemetryStore, faults: DataFaults) -> None:
    """Make this store's twin lose, alter or delay readings from now on (see DataFaults)."""
    state = _state(store)
    with state.lock:
        state.faults = faults
        state.stored = 0
        state.visible_at.clear()


def set_iotdb_available(store: TelemetryStore, available: bool) -> None:
    """Test aid: play IoTDB down (False) or up again. Down, writes answer the real 500s and reads find
    nothing, saying ``"iotdb_available": false`` where the real server says it."""
    state = _state(store)
    with state.lock:
        state.iotdb_available = available


def _iotdb_available(store: TelemetryStore) -> bool:
    return _state(store).iotdb_available


def _apply_data_faults(store: TelemetryStore, data: Json) -> Optional[Json]:
    """The data to store (altered by DataFaults), or None when this reading is to be lost."""
    state = _state(store)
    with state.lock:
        faults = state.faults
        if faults == DataFaults():
            return data
        state.stored += 1
        n = state.stored
    fault = nth_fault(n, faults.lose_every, faults.alter_every)
    if fault == "lose":
        return None
    if fault == "alter":
        for key in sorted(data):
            value = data[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.startswith("smoke_"):
                return dict(data, **{key: value + 1})
    return data


_STATES_LOCK = threading.Lock()


def _state(store: TelemetryStore) -> _State:
    """This store's IoTFlow state, kept on the store itself: every request on a shared path asks, so
    the usual case is one dict lookup, without a lock."""
    state = store.platform_state.get("iotflow")
    if state is None:
        with _STATES_LOCK:
            state = store.platform_state.setdefault("iotflow", _State())
    return state


def set_rate_limits(store: TelemetryStore, limits: RateLimits) -> None:
    """The limits this store's twin enforces from now on (counters start again)."""
    state = _state(store)
    with state.lock:
        state.limits = limits
        state.counters.clear()


def _ensure_tables(store: TelemetryStore) -> None:
    state = _state(store)
    if state.tables:
        return
    with state.lock:
        if state.tables:
            return
        with store._transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO iotflow_users (id, user_id, username, email, is_active, created_at)"
                       " VALUES (1, ?, ?, ?, 1, ?)", (DEMO_USER_ID, DEMO_USERNAME, DEMO_EMAIL, _naive(store.now())))
        state.tables = True


def _hit(store: TelemetryStore, key: str, rule: Optional[RateLimit]) -> Optional[Reply]:
    """Count one request in ``key``'s fixed window; the 429 once the window's count reached the limit.

    Windows are wall-clock slots (``int(now) // window``), as the real server's Redis keys are, so
    ``retry_after`` is the seconds to the slot's end, not to a window opened by the first request;
    a refused request is not counted. Heartbeat and Connectivity telemetry share one counter per
    device, each with its own limit, as they share one Redis key on the real server.
    """
    if rule is None:
        return None
    state = _state(store)
    now = int(store.now())
    slot = now // rule.window
    with state.lock:
        counter = state.counters.get(key)
        if counter is None or counter[1] != slot:
            counter = state.counters[key] = [0, slot]
        if counter[0] >= rule.limit:
            return Reply(429, {"error": "Rate limit exceeded",
                               "message": "Maximum %d requests per %d seconds" % (rule.limit, rule.window),
                               "retry_after": rule.window - now % rule.window,
                               "limit": rule.limit, "window": rule.window})
        counter[0] += 1
    return None


# -- time --------------------------------------------------------------------------------------------

def _naive(epoch: float) -> str:
    """A stored time as IoTFlow answers it: ISO 8601 UTC without a zone."""
    return _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).replace(tzinfo=None).isoformat()


def _utc(epoch: float) -> str:
    """The heartbeat's clock, with its +00:00."""
    return _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).isoformat()


def _millis(epoch: float) -> int:
    """The time-series store's key: whole milliseconds, truncated as ``int(ts.timestamp() * 1000)``."""
    return int(epoch * 1000)


def _record_time(epoch: float) -> str:
    """A read-back record's time as the real server renders it: ``isoformat()`` of the UTC time in ms,
    so ``...:15.367000+00:00``, or ``...:13+00:00`` on a whole second (stored times are whole ms already:
    rounding undoes the float's last bit)."""
    return _dt.datetime.fromtimestamp(round(epoch * 1000) / 1000, tz=_dt.timezone.utc).isoformat()


# -- devices -----------------------------------------------------------------------------------------

class Device(NamedTuple):
    id: int
    name: str
    description: Optional[str]
    device_type: str
    status: str
    location: Optional[str]
    firmware_version: Optional[str]
    hardware_version: Optional[str]
    user_id: int
    created_at: str
    updated_at: str
    last_seen: Optional[float]


_DEVICE_COLUMNS = ("id, name, description, device_type, status, location, firmware_version, hardware_version,"
                   " user_id, created_at, updated_at, last_seen")


def device_by_key(store: TelemetryStore, api_key: Optional[str]) -> Optional[Device]:
    """The device this key belongs to (looked up by its SHA-256), or None."""
    return device_by_digest(store, key_digest(api_key)) if api_key else None


def device_by_digest(store: TelemetryStore, digest: bytes) -> Optional[Device]:
    """``device_by_key`` for a key whose SHA-256 the caller already has."""
    _ensure_tables(store)
    state = _state(store)
    digests = state.digests
    if digests is None:
        with state.lock:  # register_device drops the set under this lock after its insert commits
            digests = state.digests = frozenset(bytes(r[0]) for r in store._query("SELECT key_sha256 FROM iotflow_devices"))
    if digest not in digests:
        return None
    rows = store._query("SELECT %s FROM iotflow_devices WHERE key_sha256 = ?" % _DEVICE_COLUMNS, (digest,))
    return Device(*rows[0]) if rows else None


def set_device_status(store: TelemetryStore, device_id: int, status: str) -> None:
    """Mark a device active or inactive (IoTFlow's admin API does this; tests call it directly)."""
    _ensure_tables(store)
    with store._transaction() as db:
        db.execute("UPDATE iotflow_devices SET status = ?, updated_at = ? WHERE id = ?",
                   (status, _naive(store.now()), device_id))


def telemetry_rows(store: TelemetryStore, device_id: int) -> List[Tuple[float, Json, Json, Optional[str], str]]:
    """(ts_epoch, data, metadata, data_type, api) of every stored reading, in arrival order (for tests)."""
    _ensure_tables(store)
    rows = store._query("SELECT ts_epoch, data_json, metadata_json, data_type, api FROM iotflow_telemetry"
                        " WHERE device_id = ? ORDER BY seq", (device_id,))
    return [(r[0], json.loads(r[1]), json.loads(r[2]), r[3], r[4]) for r in rows]


def _key(request: ApiRequest) -> Optional[str]:
    return request.headers.get("X-API-Key")


def claims(request: ApiRequest) -> bool:
    """The shared paths (POST /api/v1/telemetry, its reads) are IoTFlow's when the key is an IoTFlow device's."""
    return device_by_key(request.store, _key(request)) is not None


def claims_telemetry_post(request: ApiRequest) -> bool:
    """POST /api/v1/telemetry is IoTFlow's for an IoTFlow key, and for a body shaped like IoTFlow's.

    IoTFlow-shaped: the key is no TESAIoT device's and the body is a JSON object without
    ``device_id``, which every TESAIoT payload carries (its validation requires it). So ``{}``
    or ``{"data": ...}`` with a wrong key gets IoTFlow's 400/401 as the real server answers it,
    while a TESAIoT request keeps TESAIoT's answers. Header names cannot tell the two apart
    (``X-API-KEY`` and ``X-API-Key`` are one header).
    """
    key = _key(request)
    if key:
        digest = key_digest(key)  # once, for both platforms' key lookups
        if device_by_digest(request.store, digest) is not None:
            return True
        if request.store.device_for_digest(digest) is not None:
            return False
    payload = _json_object(request.body)
    return payload is not None and "device_id" not in payload


def _authenticate(request: ApiRequest, explained: bool = True,
                  check_active: bool = True) -> Tuple[Optional[Device], Optional[Reply]]:
    """The device of the X-API-Key, or the 401/403 IoTFlow answers (``explained``: with its "message").

    ``check_active``: the Connectivity routes refuse an inactive device; IoTFlow's telemetry
    routes (POST /api/v1/telemetry and its reads) do not look at the status.
    """
    key = _key(request)
    if not key:
        body: Json = {"error": "API key required"}
        if explained:
            body["message"] = "Please provide API key in X-API-Key header"
        return None, Reply(401, body)
    device = device_by_key(request.store, key)
    if device is None:
        body = {"error": "Invalid API key"}
        if explained:
            body["message"] = "The provided API key is not valid"
        return None, Reply(401, body)
    if check_active and device.status != "active":
        return None, Reply(403, {"error": "Device inactive", "message": "Device is currently %s" % device.status})
    return device, None


def _touch(store: TelemetryStore, device: Device) -> None:
    with store._transaction() as db:
        db.execute("UPDATE iotflow_devices SET last_seen = ? WHERE id = ?", (store.now(), device.id))


def _json_object(body: bytes) -> Optional[Json]:
    try:
        value = parse_json_body(body) if body.strip() else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _text_field(payload: Json, name: str) -> str:
    """An optional text field; unset is ``""``, as the real server stores and answers it."""
    value = payload.get(name)
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# -- registration ------------------------------------------------------------------------------------

REQUIRED_REGISTER_FIELDS = ("name", "device_type", "user_id")


def post_register(request: ApiRequest) -> Reply:
    """POST /api/v1/devices/register: a device of a known user, its key shown once in the 201."""
    store = request.store
    _ensure_tables(store)
    limited = _hit(store, "register", _state(store).limits.register)
    if limited is not None:
        return limited
    payload = _json_object(request.body)
    if payload is None:
        return Reply(400, {"error": "No data provided"})
    missing = [f for f in REQUIRED_REGISTER_FIELDS if payload.get(f) in (None, "")]
    if missing:
        return Reply(400, {"error": "Missing required fields", "message": "Required fields: " + ", ".join(missing)})
    user = store._query("SELECT id, username, email FROM iotflow_users WHERE user_id = ? AND is_active = 1",
                        (str(payload["user_id"]),))
    if not user:
        return Reply(401, {"error": "Authentication failed", "message": "Invalid or inactive user"})
    user_pk, username, email = user[0]
    name = str(payload["name"]).strip()
    api_key = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(API_KEY_LENGTH))
    now = _naive(store.now())
    fields = {f: _text_field(payload, f) for f in ("description", "location", "firmware_version", "hardware_version")}
    with store._transaction() as db:
        if db.execute("SELECT 1 FROM iotflow_devices WHERE name = ?", (name,)).fetchone():
            return Reply(409, {"error": "Device name already exists",
                               "message": "Please choose a different device name"})
        cursor = db.execute(
            "INSERT INTO iotflow_devices (name, description, device_type, key_sha256, status, location,"
            " firmware_version, hardware_version, user_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?)",
            (name, fields["description"], str(payload["device_type"]), key_digest(api_key), fields["location"],
             fields["firmware_version"], fields["hardware_version"], user_pk, now, now))
        device_id = cursor.lastrowid
    state = _state(store)
    with state.lock:
        state.digests = None  # after the commit: a set read since then is read again
    device = {"id": device_id, "name": name, "description": fields["description"],
              "device_type": str(payload["device_type"]), "api_key": api_key, "status": "active",
              "location": fields["location"], "firmware_version": fields["firmware_version"],
              "hardware_version": fields["hardware_version"], "user_id": user_pk, "created_at": now,
              "updated_at": now, "last_seen": None, "owner": {"username": username, "email": email}}
    if request.log is not None:
        request.log("iotflow: device %d %r registered" % (device_id, name))  # never the key
    return Reply(201, {"message": "Device registered successfully", "device": device})


# -- telemetry ---------------------------------------------------------------------------------------

def _store_reading(store: TelemetryStore, device: Device, ts_epoch: float, data: Json, metadata: Json,
                   data_type: Optional[str], api: str) -> None:
    """Keep one reading, keyed as the time-series store keys rows: by device, store and millisecond.

    A second reading of the same device at the same millisecond in the same store replaces the
    first (both were answered 201), as a write to an existing IoTDB row does. ``api`` names the
    store: IoTFlow's endpoint and the Connectivity Layer's write under different device paths.
    """
    kept = _apply_data_faults(store, data)
    ts_epoch = _millis(ts_epoch) / 1000
    with store._transaction() as db:
        if kept is not None:
            db.execute("DELETE FROM iotflow_telemetry WHERE device_id = ? AND api = ? AND ts_epoch = ?",
                       (device.id, api, ts_epoch))
            cursor = db.execute("INSERT INTO iotflow_telemetry (device_id, ts_epoch, data_json, metadata_json,"
                                " data_type, api) VALUES (?, ?, ?, ?, ?, ?)",
                                (device.id, ts_epoch, json.dumps(kept, ensure_ascii=False),
                                 json.dumps(metadata, ensure_ascii=False), data_type, api))
            lag = _state(store).faults.read_lag
            if lag:
                with _state(store).lock:
                    _state(store).visible_at[cursor.lastrowid] = store.now() + lag
        db.execute("UPDATE iotflow_devices SET last_seen = ? WHERE id = ?", (store.now(), device.id))


def _bad_json_500(body: bytes) -> Reply:
    """IoTFlow's answer to a body that is not JSON: Flask's 400 caught by the route's ``except Exception``."""
    reason = "not JSON"
    try:
        json.loads(body.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError too
        reason = str(exc)
    return Reply(500, {"error": "Internal server error: 400 Bad Request: Failed to decode JSON object: %s" % reason})


def post_telemetry(request: ApiRequest) -> Reply:
    """POST /api/v1/telemetry (IoTFlow): an empty body is refused before the key is looked at.

    The device's status is not checked (the real route does not); a body that is not JSON is a 500.
    """
    store = request.store
    if request.body.strip():
        try:
            json.loads(request.body.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError too
            return _bad_json_500(request.body)
    payload = _json_object(request.body)
    if not payload:
        return Reply(400, {"error": "No data provided"})
    device, denied = _authenticate(request, explained=False, check_active=False)
    if denied is not None:
        return denied
    assert device is not None
    data = payload.get("data")
    if not isinstance(data, dict) or not data:
        return Reply(400, {"error": "Telemetry data is required"})
    metadata = payload.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    stamp = payload.get("timestamp")
    try:
        from ..payloads import parse_iso8601

        # A time without a zone stays naive in the echo, as the real server's fromisoformat leaves it;
        # it is stored as UTC (the real server would take its own local time).
        moment = parse_iso8601(stamp, default_tz=None) if stamp else _dt.datetime.fromtimestamp(
            store.now(), tz=_dt.timezone.utc)
    except (ValueError, TypeError):
        return Reply(400, {"error": "Invalid timestamp format. Use ISO 8601 format."})
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.timezone.utc)
    if not _iotdb_available(store):
        return Reply(500, {"error": "Failed to store telemetry data",
                           "message": "IoTDB may not be available. Check logs for details."})
    _store_reading(store, device, aware.timestamp(), data, metadata, None, "iotflow")
    return Reply(201, {"message": "Telemetry data stored successfully", "device_id": device.id,
                       "device_name": device.name, "timestamp": moment.isoformat()})


def post_devices_telemetry(request: ApiRequest) -> Reply:
    """POST /api/v1/devices/telemetry (Connectivity): key first, then the per-device limit, then the body.

    A body that is not JSON escapes the route as an exception, answered 500 by the metrics wrapper.
    """
    store = request.store
    device, denied = _limited_device(request, _state(store).limits.telemetry)
    if denied is not None:
        return denied
    try:
        payload = json.loads(request.body.decode("utf-8")) if request.body.strip() else None
    except ValueError:
        return Reply(500, {"error": "Internal server error"})
    if not payload:
        return Reply(400, {"error": "Invalid JSON", "message": "Request body must contain valid JSON"})
    if not isinstance(payload, dict):
        return Reply(500, {"error": "Internal server error"})
    if "data" not in payload:
        return Reply(400, {"error": "Missing required fields", "message": "Required fields: data"})
    data = payload["data"]
    metadata = payload.get("metadata")
    if not isinstance(data, dict) or not (metadata is None or isinstance(metadata, dict)):
        return Reply(400, {"error": "Invalid data format", "message": "Telemetry data must be a JSON object"})
    if not _iotdb_available(store):
        return Reply(500, {"error": "Telemetry storage failed", "message": "Failed to store telemetry data in IoTDB"})
    data_type = payload.get("type")
    now = store.now()
    _store_reading(store, device, now, data, metadata or {}, data_type if isinstance(data_type, str) else None,
                   "connectivity")
    return Reply(201, {"message": "Telemetry data received successfully", "device_id": device.id,
                       "device_name": device.name, "timestamp": _utc(now), "stored_in_iotdb": True})


def post_heartbeat(request: ApiRequest) -> Reply:
    """POST /api/v1/devices/heartbeat: no body; marks the device seen."""
    store = request.store
    device, denied = _limited_device(request, _state(store).limits.heartbeat)
    if denied is not None:
        return denied
    _touch(store, device)
    return Reply(200, {"device_id": device.id, "message": "Heartbeat received", "status": "online",
                       "timestamp": _utc(store.now())})


def get_status(request: ApiRequest) -> Reply:
    """GET /api/v1/devices/status: the read-only way to prove a key works."""
    store = request.store
    device, denied = _authenticate(request)
    if denied is not None:
        return denied
    assert device is not None
    count = store._query("SELECT COUNT(*) FROM iotflow_telemetry WHERE device_id = ?", (device.id,))[0][0]
    online = device.last_seen is not None and store.now() - device.last_seen <= ONLINE_SECONDS
    return Reply(200, {"status": "success", "device": {
        "id": device.id, "name": device.name, "description": device.description,
        "device_type": device.device_type, "status": device.status, "location": device.location,
        "firmware_version": device.firmware_version, "hardware_version": device.hardware_version,
        "user_id": device.user_id, "created_at": device.created_at, "updated_at": device.updated_at,
        "last_seen": _naive(device.last_seen) if device.last_seen is not None else None,
        "telemetry_count": count, "is_online": online}})


# -- read-back ---------------------------------------------------------------------------------------

def _from_text(value: Any) -> Any:
    """A value as the real read-back returns it: text is parsed as JSON when it parses (``"101"`` -> 101,
    ``"true"`` -> true), ``"nan"`` is null, anything else stays as it was. NaN and Infinity stay text
    (the real server would answer them as bare NaN, which is not JSON)."""
    if not isinstance(value, str):
        return value
    if value == "nan":
        return None
    try:
        return json.loads(value, parse_constant=lambda name: value)
    except ValueError:
        return value


def _record(device: Device, api: str, ts_epoch: float, data: Json, metadata: Json) -> Json:
    """One flat record, as IoTFlow's time-series store gives it back: data fields, then meta_<key>.

    The Connectivity store's records also carry ``meta_user_id`` (the owner's number, written as
    text, so read back as a number).
    """
    record: Json = {"timestamp": _record_time(ts_epoch), "device_id": str(device.id)}
    for key, value in data.items():
        record[key] = _from_text(value)
    for key, value in metadata.items():
        record["meta_" + key] = _from_text(value)
    record["meta_device_type"] = device.device_type
    if api == "connectivity":
        record["meta_user_id"] = _from_text(str(device.user_id))
    return record


# A start_time that matches nothing: the real query fails and is answered as an empty result.
NOTHING = _dt.datetime.max.replace(tzinfo=_dt.timezone.utc)


def parse_iotflow_start(text: str, now: _dt.datetime) -> _dt.datetime:
    """``start_time`` as the real server reads it: ``-Nh`` or ``-Nd`` (N by ``int()``), any other ``-...``
    one hour back (``-30m`` too), else ISO 8601; what does not parse matches NOTHING (200, no records).

    A time without a zone is taken as UTC (the real server would take its own local time).
    """
    try:
        if text.startswith("-"):
            bare = text.replace("-", "")
            if "h" in text:
                return now - _dt.timedelta(hours=int(bare.replace("h", "")))
            if "d" in text:
                return now - _dt.timedelta(days=int(bare.replace("d", "")))
            return now - _dt.timedelta(hours=1)
        from ..payloads import parse_iso8601

        return parse_iso8601(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return NOTHING


def _readings(store: TelemetryStore, device: Device, api: str, start: Optional[_dt.datetime], limit: int,
              data_type: Optional[str] = None) -> List[Tuple[float, Json, Json]]:
    """(ts_epoch, data, metadata) from one store (``api``), newest first; none while IoTDB is down."""
    if start is NOTHING or not _iotdb_available(store):
        return []
    sql = "SELECT ts_epoch, data_json, metadata_json, seq FROM iotflow_telemetry WHERE device_id = ? AND api = ?"
    params: list = [device.id, api]
    if start is not None:
        sql += " AND ts_epoch >= ?"
        params.append(start.timestamp())
    if data_type is not None:
        sql += " AND data_type = ?"
        params.append(data_type)
    sql += " ORDER BY ts_epoch DESC, seq DESC LIMIT ?"
    params.append(limit)
    rows = store._query(sql, tuple(params))
    state = _state(store)
    if state.visible_at:  # DataFaults.read_lag: not yet readable
        now = store.now()
        with state.lock:
            rows = [r for r in rows if state.visible_at.get(r[3], 0.0) <= now]
    return [(r[0], json.loads(r[1]), json.loads(r[2])) for r in rows]


def _limited_device(request: ApiRequest, limit: Optional[RateLimit]) -> Tuple[Device, Optional[Reply]]:
    """The key's device within its rate limit, or the 401/403/429 the Connectivity routes answer (in that order)."""
    device, denied = _authenticate(request)
    if denied is not None:
        return device, denied
    assert device is not None
    return device, _hit(request.store, "device:%d" % device.id, limit)


def _reader(request: ApiRequest, device_id: str) -> Tuple[Optional[Device], Optional[Reply]]:
    device, denied = _authenticate(request, explained=False, check_active=False)
    if denied is not None:
        return None, denied
    assert device is not None
    if str(device.id) != device_id.strip():
        return None, Reply(403, {"error": "Forbidden: device mismatch"})
    return device, None


def _start(request: ApiRequest, default: str) -> Tuple[str, _dt.datetime]:
    text = query_text(request.query, "start_time") or default
    now = _dt.datetime.fromtimestamp(request.store.now(), tz=_dt.timezone.utc)
    return text, parse_iotflow_start(text, now)


def _limit(request: ApiRequest, default: int, cap: int) -> int:
    text = (query_text(request.query, "limit") or "").strip()
    if not text:
        return default
    if not text.isdigit() or not text.isascii() or int(text) < 1:
        raise ValueError("limit must be a positive integer")
    return min(int(text[:12]), cap)


def _bad_query(exc: ValueError) -> Reply:
    return Reply(400, {"error": "Invalid query parameter", "message": str(exc)})


def get_latest(request: ApiRequest, device_id: str) -> Reply:
    """GET /api/v1/telemetry/{id}/latest."""
    device, denied = _reader(request, device_id)
    if denied is not None:
        return denied
    assert device is not None
    available = _iotdb_available(request.store)
    rows = _readings(request.store, device, "iotflow", None, 1)
    if not rows:
        return Reply(404, {"device_id": device.id, "device_name": device.name, "message": "No telemetry data found",
                           "iotdb_available": available})
    return Reply(200, {"device_id": device.id, "device_name": device.name, "device_type": device.device_type,
                       "latest_data": _record(device, "iotflow", *rows[0]), "iotdb_available": available})


def get_history(request: ApiRequest, device_id: str) -> Reply:
    """GET /api/v1/telemetry/{id}?start_time=-1h&limit=1000: newest first."""
    device, denied = _reader(request, device_id)
    if denied is not None:
        return denied
    assert device is not None
    try:
        limit = _limit(request, DEFAULT_LIMIT, MAX_LIMIT)
    except ValueError as exc:
        return _bad_query(exc)
    start_text, start = _start(request, "-1h")
    records = [_record(device, "iotflow", *row) for row in _readings(request.store, device, "iotflow", start, limit)]
    return Reply(200, {"device_id": device.id, "device_name": device.name, "device_type": device.device_type,
                       "start_time": start_text, "data": records, "count": len(records),
                       "iotdb_available": _iotdb_available(request.store)})


_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _window_seconds(text: str) -> int:
    number, unit = text[:-1], text[-1:]
    if unit not in _WINDOW_UNITS or not number.isdigit() or not number.isascii() or int(number) < 1:
        raise ValueError(text)
    return int(number) * _WINDOW_UNITS[unit]


def _aggregate(values: List[Any], how: str) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if how == "count":
        return len(values)
    if how == "first":
        return values[0]
    if how == "last":
        return values[-1]
    if not numbers:
        return None
    if how == "sum":
        return sum(numbers)
    if how == "mean":
        return sum(numbers) / len(numbers)
    if how == "min":
        return min(numbers)
    if how == "max":
        return max(numbers)
    ordered = sorted(numbers)  # median
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def get_aggregated(request: ApiRequest, device_id: str) -> Reply:
    """GET /api/v1/telemetry/{id}/aggregated?field=temperature&aggregation=mean&window=1h&start_time=-24h."""
    device, denied = _reader(request, device_id)
    if denied is not None:
        return denied
    assert device is not None
    field = query_text(request.query, "field") or "temperature"  # the real server's default
    how = query_text(request.query, "aggregation") or "mean"
    if how not in AGGREGATIONS:
        return Reply(400, {"error": "Invalid aggregation function", "valid_functions": list(AGGREGATIONS)})
    window = query_text(request.query, "window") or "1h"
    try:
        seconds = _window_seconds(window)
    except ValueError:
        return Reply(400, {"error": "Invalid window", "message": "use a number and s, m, h, d or w, like 1h"})
    start_text, start = _start(request, "-24h")
    buckets: Dict[int, List[Any]] = {}
    for ts_epoch, data, _meta in reversed(_readings(request.store, device, "iotflow", start, MAX_LIMIT * 10)):
        if field in data:
            buckets.setdefault(int(ts_epoch // seconds) * seconds, []).append(_from_text(data[field]))
    points = [{"timestamp": _record_time(bucket), "value": _aggregate(values, how)}
              for bucket, values in sorted(buckets.items())]
    return Reply(200, {"device_id": device.id, "device_name": device.name, "device_type": device.device_type,
                       "field": field, "aggregation": how, "window": window, "start_time": start_text,
                       "data": points, "count": len(points), "iotdb_available": _iotdb_available(request.store)})


def get_devices_telemetry(request: ApiRequest) -> Reply:
    """GET /api/v1/devices/telemetry (Connectivity): the device's own readings, newest first."""
    store = request.store
    device, denied = _authenticate(request)
    if denied is not None:
        return denied
    assert device is not None
    try:
        limit = _limit(request, CONNECTIVITY_DEFAULT_LIMIT, CONNECTIVITY_MAX_LIMIT)
    except ValueError as exc:
        return _bad_query(exc)
    start_text, start = _start(request, "-24h")
    rows = _readings(store, device, "connectivity", start, limit, query_text(request.query, "type"))
    records = [_record(device, "connectivity", *row) for row in rows]
    return Reply(200, {"status": "success", "telemetry": records, "count": len(records), "limit": limit,
                       "start_time": start_text})


_SEGMENT = r"([^/]+)"
# First in routes.ROUTES: the shared TESAIoT paths are claimed only for an IoTFlow device's key.
ROUTES = [
    route("/api/v1/devices/register", POST=post_register),
    route("/api/v1/devices/telemetry", GET=get_devices_telemetry, POST=post_devices_telemetry),
    route("/api/v1/devices/heartbeat", POST=post_heartbeat),
    route("/api/v1/devices/status", GET=get_status),
    route("/api/v1/telemetry", claims=claims_telemetry_post, POST=post_telemetry),
    route("/api/v1/telemetry/%s/latest" % _SEGMENT, claims=claims, GET=get_latest),
    route("/api/v1/telemetry/%s/aggregated" % _SEGMENT, GET=get_aggregated),
    route("/api/v1/telemetry/%s" % _SEGMENT, claims=claims, GET=get_history),
]
