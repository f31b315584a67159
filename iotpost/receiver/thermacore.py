"""The ThermaCore SCADA contract (JWT login, refresh, unit readings, health): routes and storage together.

Usage: ``path = ensure_demo_user(store, credentials_file); reply = dispatch("POST", "/api/v1/auth/login", ...)``

ThermaCore is read-only for a device tool: its readings come from its own collectors, so the twin
makes them up from the clock (one reading per sensor every few seconds, the same on every read)
instead of storing them. It answers as PROTOCOLS.md records the real Flask backend answering: an
expired or malformed token is a 422 VALIDATION_ERROR, not a 401; timestamps carry no zone. Tokens are
HS256 JWTs made with hmac/hashlib; the signing key is random per database and kept in its tables,
passwords are stored as scrypt (PBKDF2 where OpenSSL lacks scrypt). Every table is ``thermacore_*``,
made on first use through the shared store connection.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import uuid
import weakref
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

from .api_request import ApiRequest, media_type, parse_json_body, route
from .replies import Json, Reply
from .store import TelemetryStore

# What the real backend is configured with (PROTOCOLS.md); each can be changed per database (configure()).
DEFAULTS: Dict[str, float] = {
    "access_seconds": 86400,  # a login's access token ("expires_in": 86400)
    "remember_access_seconds": 2592000,  # ... with "keep_me_signed_in": true
    "refreshed_access_seconds": 3600,  # an access token from /auth/refresh
    "refresh_seconds": 2592000,  # the refresh token: 30 days
    "login_limit": 10,  # logins per window per client, then 429
    "login_window_seconds": 60,
}

# The seed's roles (README "Roles & Permissions").
ROLES: Dict[str, Tuple[int, List[str]]] = {
    "admin": (1, ["read_units", "write_units", "delete_units", "read_users", "write_users", "delete_users",
                  "admin_panel"]),
    "operator": (2, ["read_units", "write_units", "read_users"]),
    "viewer": (3, ["read_units", "read_users"]),
}

DEMO_USERNAME = "demo"
DEMO_UNIT_ID = "1"
READING_INTERVAL = 5.0  # seconds between two readings of one demo sensor
DEMO_HISTORY = 86400.0  # the demo unit has readings from a day before the database was made
MAX_READINGS = 1000
SERVICE = "ThermaCore SCADA API"

# (name, sensor_type, unit of measurement, min, max, base value, swing)
DEMO_SENSORS = [
    ("Supply temperature", "temperature", "\u00b0C", -20.0, 120.0, 65.0, 4.0),
    ("Loop pressure", "pressure", "bar", 0.0, 10.0, 2.4, 0.15),
    ("Flow rate", "flow_rate", "L/min", 0.0, 200.0, 42.0, 3.0),
    ("Supply voltage", "voltage", "V", 0.0, 260.0, 230.0, 2.5),
]

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS thermacore_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS thermacore_users (id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE,"
    " password_hash TEXT NOT NULL, role TEXT NOT NULL, permissions_json TEXT NOT NULL,"
    " created_at TEXT NOT NULL, last_login TEXT)",
    "CREATE TABLE IF NOT EXISTS thermacore_units (id TEXT PRIMARY KEY, name TEXT NOT NULL, location TEXT,"
    " status TEXT NOT NULL, created_at TEXT NOT NULL,"
    " epoch REAL NOT NULL, interval_seconds REAL NOT NULL)",  # readings at epoch + k * interval
    "CREATE TABLE IF NOT EXISTS thermacore_sensors (id INTEGER PRIMARY KEY, unit_id TEXT NOT NULL,"
    " name TEXT NOT NULL, sensor_type TEXT NOT NULL, unit_of_measurement TEXT NOT NULL,"
    " min_value REAL, max_value REAL, base REAL NOT NULL, swing REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS thermacore_logins (at REAL NOT NULL)",  # attempts, for the rate limit
]

_ready: "weakref.WeakSet[TelemetryStore]" = weakref.WeakSet()
_ready_lock = threading.Lock()


# -- storage ---------------------------------------------------------------------------------


def _tables(store: TelemetryStore) -> TelemetryStore:
    """Make the tables, the signing key and the demo unit once per store (CREATE IF NOT EXISTS)."""
    with _ready_lock:
        if store in _ready:
            return store
        with store._transaction() as db:
            for sql in _SCHEMA:
                db.execute(sql)
            db.execute("INSERT OR IGNORE INTO thermacore_settings (name, value) VALUES ('signing_key', ?)",
                       (secrets.token_hex(32),))
            if db.execute("SELECT 1 FROM thermacore_units").fetchone() is None:
                now = store.now()
                db.execute("INSERT INTO thermacore_units VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (DEMO_UNIT_ID, "Demo heat pump", "Twin lab", "online", naive_iso(now),
                            now - DEMO_HISTORY, READING_INTERVAL))
                for sensor in DEMO_SENSORS:
                    db.execute("INSERT INTO thermacore_sensors (unit_id, name, sensor_type, unit_of_measurement,"
                               " min_value, max_value, base, swing) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (DEMO_UNIT_ID,) + sensor)
        _ready.add(store)
    return store


def _setting(store: TelemetryStore, name: str) -> float:
    rows = _tables(store)._query("SELECT value FROM thermacore_settings WHERE name = ?", (name,))
    return float(rows[0][0]) if rows else DEFAULTS[name]


def configure(store: TelemetryStore, **settings: float) -> None:
    """Change token lifetimes or the login limit for this database (tests: a 0 s access token)."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError("unknown ThermaCore settings: %s" % ", ".join(sorted(unknown)))
    with _tables(store)._transaction() as db:
        for name, value in settings.items():
            db.execute("INSERT OR REPLACE INTO thermacore_settings (name, value) VALUES (?, ?)", (name, str(value)))


def hash_password(password: str) -> str:
    """scrypt (or PBKDF2-SHA256 where this OpenSSL has no scrypt) with a random salt; never the password."""
    salt = os.urandom(16)
    data = password.encode("utf-8")
    if hasattr(hashlib, "scrypt"):
        digest = hashlib.scrypt(data, salt=salt, n=2 ** 14, r=8, p=1, dklen=32)
        return "scrypt$16384$8$1$%s$%s" % (salt.hex(), digest.hex())
    digest = hashlib.pbkdf2_hmac("sha256", data, salt, 260000)
    return "pbkdf2_sha256$260000$%s$%s" % (salt.hex(), digest.hex())


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash_password() result, compared in constant time."""
    parts = stored.split("$")
    data = password.encode("utf-8")
    if parts[0] == "scrypt" and len(parts) == 6:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        digest = hashlib.scrypt(data, salt=bytes.fromhex(parts[4]), n=n, r=r, p=p, dklen=32)
        return hmac.compare_digest(digest, bytes.fromhex(parts[5]))
    if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
        digest = hashlib.pbkdf2_hmac("sha256", data, bytes.fromhex(parts[2]), int(parts[1]))
        return hmac.compare_digest(digest, bytes.fromhex(parts[3]))
    return False


def create_user(store: TelemetryStore, username: str, password: str, role: str = "viewer",
                permissions: Optional[List[str]] = None) -> int:
    """Add (or reset) a user; ``permissions`` overrides the role's. Returns the user's id."""
    perms = list(ROLES[role][1] if permissions is None else permissions)
    hashed = hash_password(password)
    with _tables(store)._transaction() as db:
        row = db.execute("SELECT id FROM thermacore_users WHERE username = ?", (username,)).fetchone()
        if row is not None:
            db.execute("UPDATE thermacore_users SET password_hash = ?, role = ?, permissions_json = ? WHERE id = ?",
                       (hashed, role, json.dumps(perms), row[0]))
            return int(row[0])
        cursor = db.execute("INSERT INTO thermacore_users (username, password_hash, role, permissions_json,"
                            " created_at) VALUES (?, ?, ?, ?, ?)",
                            (username, hashed, role, json.dumps(perms), naive_iso(store.now())))
        return int(cursor.lastrowid)


def default_credentials_file(db_path: str) -> Path:
    """Beside the database; for ``:memory:`` a fresh private temp folder (the database has no folder)."""
    if db_path == ":memory:" or db_path.startswith("file::memory:"):
        import tempfile

        return Path(tempfile.mkdtemp(prefix="iotpost-thermacore-")) / "thermacore-credentials.json"
    return Path(db_path).resolve().parent / "thermacore-credentials.json"


def ensure_demo_user(store: TelemetryStore, credentials_file: Path) -> Path:
    """The ``demo`` user with a random password, written 0600 to ``credentials_file`` as
    ``{"username", "password"}``. A file whose password still works is kept, so a restarted twin
    does not change a password the user already copied."""
    try:
        known = json.loads(credentials_file.read_text(encoding="utf-8"))
        password = known["password"] if known.get("username") == DEMO_USERNAME else None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        password = None
    user = _user_by_name(store, DEMO_USERNAME)
    if isinstance(password, str) and user is not None and check_password(password, user.password_hash):
        return credentials_file
    password = secrets.token_urlsafe(18)
    create_user(store, DEMO_USERNAME, password, role="viewer")
    text = json.dumps({"username": DEMO_USERNAME, "password": password}) + "\n"
    tmp = credentials_file.with_name(credentials_file.name + ".tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(str(tmp), 0o600)  # an old .tmp left with a wider mode keeps it through O_CREAT
    os.replace(str(tmp), str(credentials_file))
    return credentials_file


class User(NamedTuple):
    id: int
    username: str
    password_hash: str
    role: str
    permissions: List[str]
    created_at: str
    last_login: Optional[str]

    def as_json(self) -> Json:
        role_id = ROLES.get(self.role, (0, []))[0]
        return {"id": self.id, "username": self.username, "email": "%s@thermacore.local" % self.username,
                "first_name": None, "last_name": None, "is_active": True,
                "role": {"id": role_id, "name": self.role, "permissions": list(self.permissions)},
                "created_at": self.created_at, "last_login": self.last_login}


def _user(rows: List[tuple]) -> Optional[User]:
    if not rows:
        return None
    r = rows[0]
    return User(int(r[0]), r[1], r[2], r[3], json.loads(r[4]), r[5], r[6])


_USER_COLUMNS = "id, username, password_hash, role, permissions_json, created_at, last_login"


def _user_by_name(store: TelemetryStore, username: str) -> Optional[User]:
    return _user(_tables(store)._query("SELECT %s FROM thermacore_users WHERE username = ?" % _USER_COLUMNS,
                                       (username,)))


def _user_by_id(store: TelemetryStore, user_id: str) -> Optional[User]:
    if not user_id.isdigit():
        return None
    return _user(_tables(store)._query("SELECT %s FROM thermacore_users WHERE id = ?" % _USER_COLUMNS,
                                       (int(user_id),)))


# -- JWT (HS256) -------------------------------------------------------------------------------


class TokenError(Exception):
    """Why a token is refused, in flask-jwt-extended's words (the 422's field_errors.authorization)."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise TokenError("Invalid %s padding" % what) from None


def encode_jwt(key: bytes, claims: Json) -> str:
    header = _b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = ("%s.%s" % (header, payload)).encode("ascii")
    return "%s.%s.%s" % (header, payload, _b64encode(hmac.new(key, signing_input, hashlib.sha256).digest()))


def decode_jwt(key: bytes, token: str, now: int) -> Json:
    """The claims of a valid token; raises TokenError in PyJWT's order: shape, signature, then times."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("Not enough segments")
    try:
        header = json.loads(_b64decode(parts[0], "header").decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise TokenError("Invalid header string") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("The specified alg value is not allowed")
    try:
        claims = json.loads(_b64decode(parts[1], "payload").decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise TokenError("Invalid payload string") from None
    signature = _b64decode(parts[2], "crypto")
    expected = hmac.new(key, ("%s.%s" % (parts[0], parts[1])).encode("ascii", "replace"), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise TokenError("Signature verification failed")
    if not isinstance(claims, dict):
        raise TokenError("Invalid payload string")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp <= now:  # PyJWT: expired when exp <= now (whole seconds)
        raise TokenError("Token has expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and nbf > now:
        raise TokenError("The token is not yet valid (nbf)")
    return claims


def _signing_key(store: TelemetryStore) -> bytes:
    rows = _tables(store)._query("SELECT value FROM thermacore_settings WHERE name = 'signing_key'")
    return bytes.fromhex(rows[0][0])


def _issue(store: TelemetryStore, user_id: int, kind: str, lifetime: float) -> str:
    now = int(store.now())
    claims = {"fresh": kind == "access", "iat": now, "jti": str(uuid.uuid4()), "type": kind,
              "sub": str(user_id), "nbf": now, "exp": now + int(lifetime)}
    return encode_jwt(_signing_key(store), claims)


# -- answers ---------------------------------------------------------------------------------


def naive_iso(epoch: float) -> str:
    """UTC without a zone, always with microseconds: how the real backend writes times."""
    stamp = _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).replace(tzinfo=None)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _envelope(store: TelemetryStore, body: Json) -> Json:
    body["request_id"] = str(uuid.uuid4())
    body["timestamp"] = naive_iso(store.now())
    return body


def _error(store: TelemetryStore, status: int, code: str, message: str, details: Optional[Json] = None,
           **headers: str) -> Reply:
    return Reply(status, _envelope(store, {"success": False, "error": {
        "code": code, "message": message, "details": details if details is not None else {}}}), dict(headers))


def _validation(store: TelemetryStore, field_errors: Dict[str, List[str]], location: str) -> Reply:
    return _error(store, 422, "VALIDATION_ERROR", "Request data validation failed",
                  {"field_errors": field_errors, "location": location})


def _token_user(request: ApiRequest, kind: str) -> Tuple[Optional[User], Optional[Reply]]:
    """The user a valid ``kind`` token names, or the answer refusing the token (401/422) or its user (401)."""
    claims, refused = _token_claims(request, kind)
    if refused is not None:
        return None, refused
    assert claims is not None
    user = _user_by_id(request.store, str(claims.get("sub")))
    if user is None:
        return None, _error(request.store, 401, "AUTHENTICATION_ERROR", "User not found")
    return user, None


def _token_claims(request: ApiRequest, kind: str) -> Tuple[Optional[Json], Optional[Reply]]:
    """The bearer token's claims, or the answer refusing it: 401 without a Bearer header, 422 for
    anything wrong with the token itself (expired too: the real API's observed behaviour)."""
    store = request.store
    header = request.headers.get("Authorization")
    if not header:
        return None, _error(store, 401, "AUTHENTICATION_ERROR", "Missing Authorization Header")
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token.strip():  # case-sensitive, as flask-jwt-extended
        return None, _error(store, 401, "AUTHENTICATION_ERROR",
                            "Missing 'Bearer' type in 'Authorization' header. Expected 'Authorization: Bearer <JWT>'")
    try:
        claims = decode_jwt(_signing_key(store), token.strip(), int(store.now()))
        if claims.get("type") != kind:
            raise TokenError("Only refresh tokens are allowed" if kind == "refresh"
                             else "Only non-refresh tokens are allowed")
    except TokenError as exc:
        return None, _validation(store, {"authorization": [str(exc)]}, "headers")
    return claims, None


def post_login(request: ApiRequest) -> Reply:
    """POST /api/v1/auth/login: tokens for a username and password (10 attempts a minute, then 429)."""
    store = _tables(request.store)
    if _over_login_limit(store):
        limit, window = int(_setting(store, "login_limit")), int(_setting(store, "login_window_seconds"))
        return _error(store, 429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded: %d per %d seconds" % (limit, window),
                      {"retry_after": window})
    try:
        payload = parse_json_body(request.body) if media_type(request.headers.get("Content-Type")) == \
            "application/json" else None
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return _validation(store, {"_schema": ["Invalid input type."]}, "json")
    problems: Dict[str, List[str]] = {}
    for name in ("username", "password"):
        if name not in payload:
            problems[name] = ["Missing data for required field."]
        elif not isinstance(payload[name], str) or not payload[name]:
            problems[name] = ["Not a valid string."]
    remember = payload.get("keep_me_signed_in", False)
    if not isinstance(remember, bool):
        problems["keep_me_signed_in"] = ["Not a valid boolean."]
    for name in sorted(set(payload) - {"username", "password", "keep_me_signed_in"}):
        problems[name] = ["Unknown field."]
    if problems:
        return _validation(store, problems, "json")
    user = _user_by_name(store, payload["username"])
    if user is None:
        hash_password(payload["password"])  # as slow as a wrong password: no hint which usernames exist
        return _error(store, 401, "AUTHENTICATION_ERROR", "Authentication failed. Please check your credentials.")
    if not check_password(payload["password"], user.password_hash):
        return _error(store, 401, "AUTHENTICATION_ERROR", "Authentication failed. Please check your credentials.")
    lifetime = _setting(store, "remember_access_seconds" if remember else "access_seconds")
    access = _issue(store, user.id, "access", lifetime)
    refresh = _issue(store, user.id, "refresh", _setting(store, "refresh_seconds"))
    with store._transaction() as db:
        db.execute("UPDATE thermacore_users SET last_login = ? WHERE id = ?", (naive_iso(store.now()), user.id))
    user = user._replace(last_login=naive_iso(store.now()))
    return Reply(200, _envelope(store, {"success": True, "data": {
        "access_token": access, "refresh_token": refresh, "expires_in": int(lifetime), "user": user.as_json()},
        "message": "Login successful"}))


def _over_login_limit(store: TelemetryStore) -> bool:
    """Count this attempt; True past the limit. One bucket per twin: it listens on loopback only, so
    every caller is the same client address to it (the real server counts per IP)."""
    now = store.now()
    window = _setting(store, "login_window_seconds")
    limit = _setting(store, "login_limit")
    with store._transaction() as db:
        db.execute("DELETE FROM thermacore_logins WHERE at <= ?", (now - window,))
        count = db.execute("SELECT COUNT(*) FROM thermacore_logins").fetchone()[0]
        if count >= limit:
            return True
        db.execute("INSERT INTO thermacore_logins (at) VALUES (?)", (now,))
    return False


def post_refresh(request: ApiRequest) -> Reply:
    """POST /api/v1/auth/refresh: a new access token (1 h) for the refresh token in the header; no new
    refresh token."""
    store = _tables(request.store)
    user, refused = _token_user(request, "refresh")
    if refused is not None:
        return refused
    lifetime = _setting(store, "refreshed_access_seconds")
    access = _issue(store, user.id, "access", lifetime)
    return Reply(200, _envelope(store, {"success": True, "message": "Token refreshed successfully",
                                        "data": {"access_token": access, "expires_in": float(lifetime)}}))


def _hours(text: Optional[str]) -> int:
    """Flask's ``request.args.get("hours", 24, type=int)``: anything int() refuses is the default."""
    try:
        return int(text) if text is not None else 24
    except ValueError:
        return 24


def get_readings(request: ApiRequest, unit_id: str) -> Reply:
    """GET /api/v1/units/{id}/readings?hours=&sensor_type=: a bare array, newest first, at most 1000."""
    store = _tables(request.store)
    user, refused = _token_user(request, "access")
    if refused is not None:
        return refused
    if "read_units" not in user.permissions:
        return _error(store, 403, "AUTHORIZATION_ERROR", "Permission 'read_units' required")
    units = store._query("SELECT id, name, location, status, created_at, epoch, interval_seconds"
                         " FROM thermacore_units WHERE id = ?", (unit_id,))
    if not units:
        return _error(store, 404, "NOT_FOUND_ERROR", "Unit not found")
    hours_values = request.query.get("hours")
    hours = _hours(hours_values[-1] if hours_values else None)
    types = request.query.get("sensor_type")
    return Reply(200, generate_readings(store, units[0], hours, types[-1] if types else None))  # type: ignore[arg-type]


def generate_readings(store: TelemetryStore, unit: tuple, hours: int, sensor_type: Optional[str]) -> List[Json]:
    """The readings a collector would have stored: one per sensor at epoch + k * interval, up to now.

    The same instant always gives the same id and value, so two reads agree where they overlap.
    """
    unit_id, name, location, status, created_at, epoch, interval = unit
    unit_json = {"id": unit_id, "name": name, "location": location, "status": status, "created_at": created_at}
    sql = ("SELECT id, name, sensor_type, unit_of_measurement, min_value, max_value, base, swing"
           " FROM thermacore_sensors WHERE unit_id = ?")
    params: tuple = (unit_id,)
    if sensor_type is not None:
        sql += " AND sensor_type = ?"  # exact, case included (sqlite's = is case-sensitive for TEXT)
        params += (sensor_type,)
    sensors = store._query(sql + " ORDER BY id DESC", params)
    now = store.now()
    if not sensors or now < epoch:
        return []
    since = max(now - hours * 3600.0, epoch)
    newest = int(math.floor((now - epoch) / interval))
    oldest = int(math.ceil((since - epoch) / interval))
    readings: List[Json] = []
    k = newest
    while k >= oldest and len(readings) < MAX_READINGS:
        at = epoch + k * interval
        for s in sensors:
            if len(readings) >= MAX_READINGS:
                break
            sid, sname, stype, uom, low, high, base, swing = s
            wave = math.sin(2 * math.pi * (at % 600.0) / 600.0 + sid)  # a 10-minute cycle
            jitter = (int(hashlib.sha256(b"%d:%d" % (sid, k)).hexdigest()[:4], 16) / 65535.0 - 0.5) * swing * 0.2
            readings.append({
                "id": k * 1000 + sid, "timestamp": naive_iso(at), "value": round(base + swing * wave + jitter, 2),
                "quality": "GOOD",
                "sensor": {"id": sid, "name": sname, "sensor_type": stype, "unit_of_measurement": uom,
                           "unit_id": unit_id, "min_value": low, "max_value": high, "is_active": True,
                           "unit": dict(unit_json)},
            })
        k -= 1
    return readings


def health_fields(request: ApiRequest) -> Json:
    """ThermaCore's part of GET /health (fixed: the real one does not check the database)."""
    return {"service": SERVICE, "timestamp": naive_iso(request.store.now())}


def get_api_health(request: ApiRequest) -> Reply:
    """GET /api/v1/health: checks the database (503 "degraded" when it does not answer)."""
    import sqlite3

    store = request.store
    try:
        store._query("SELECT 1")
        connected = True
    except sqlite3.Error:
        connected = False
    body = {"status": "operational" if connected else "degraded",
            "database": {"status": "healthy" if connected else "unhealthy", "connected": connected},
            "timestamp": naive_iso(store.now())}
    return Reply(200 if connected else 503, body)


ROUTES = [
    route("/api/v1/auth/login", POST=post_login),
    route("/api/v1/auth/refresh", POST=post_refresh),
    route("/api/v1/units/([^/]+)/readings", GET=get_readings),
    route("/api/v1/health", GET=get_api_health),
]
