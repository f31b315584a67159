"""ThermaCore SCADA's read API over one connection: log in, keep the JWTs in memory, refresh once when
the access token has expired.

Usage::

    client = ThermaCoreClient(transport, base_path="", username=user, password=pw, secrets=secrets)
    rows = client.readings("1", hours=24, sensor_type="temperature")

The real API answers an expired access token with 422 VALIDATION_ERROR whose
``field_errors.authorization`` says "Token has expired" (PROTOCOLS.md), not with 401: a client that
refreshes only on 401 never refreshes. So both count as "expired" here; the request is then sent
once more after ``POST /api/v1/auth/refresh`` (the refresh token as Bearer), or after a fresh login
when the refresh token itself is refused. Tokens never leave this object except in the
Authorization header; each is appended to ``secrets`` so every output line redacts it.
"""

from __future__ import annotations

import json
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import quote, urlencode

from .errors import ConfigError, CredentialsRefused, RequestRejected, TransientError
from .exitcodes import ExitStatus, for_http_status
from .output import short_message
from .profiles import USER_AGENT
from .transport import Response, Transport

LOGIN_PATH = "/api/v1/auth/login"
REFRESH_PATH = "/api/v1/auth/refresh"
HEALTH_PATH = "/health"


def readings_path(unit: str, hours: Optional[int] = None, sensor_type: Optional[str] = None) -> str:
    """``/api/v1/units/{id}/readings?hours=&sensor_type=`` with the unit id percent-encoded."""
    query = [(k, v) for k, v in (("hours", hours), ("sensor_type", sensor_type)) if v is not None]
    path = "/api/v1/units/%s/readings" % quote(unit, safe="")
    return path + ("?" + urlencode(query) if query else "")


def token_expired(status: int, doc: Any) -> bool:
    """An answer a refresh can fix: 401, or the 422 the real API gives an expired access token."""
    if status == 401:
        return True
    if status != 422 or not isinstance(doc, dict):
        return False
    error = doc.get("error")
    details = error.get("details") if isinstance(error, dict) else None
    fields = details.get("field_errors") if isinstance(details, dict) else None
    messages = fields.get("authorization") if isinstance(fields, dict) else None
    return isinstance(messages, list) and any(isinstance(m, str) and "expired" in m.lower() for m in messages)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _field_errors(doc: Any) -> str:
    """`` (authorization: Token has expired)`` from a VALIDATION_ERROR's details, else ""."""
    error = doc.get("error") if isinstance(doc, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    fields = details.get("field_errors") if isinstance(details, dict) else None
    if not isinstance(fields, dict) or not fields:
        return ""
    parts = ["%s: %s" % (name, "; ".join(str(m) for m in (value if isinstance(value, list) else [value])))
             for name, value in sorted(fields.items())]
    text = "".join(ch if ch.isprintable() else " " for ch in ", ".join(parts))  # the server's text, one line
    return " (%s)" % (text[:117] + "..." if len(text) > 120 else text)


class ThermaCoreClient:
    """One user's session with one ThermaCore server; ``on_event("login"|"refresh")`` is told of each."""

    def __init__(self, transport: Transport, base_path: str, username: str, password: str, secrets: List[str],
                 on_event: Optional[Callable[[str], None]] = None,
                 on_request: Optional[Callable[[str, str, List[Tuple[str, str]], bytes], None]] = None) -> None:
        self._transport = transport
        self._base = base_path.rstrip("/")
        self._username = username
        self._password = password
        self._secrets = secrets
        self._on_event = on_event or (lambda name: None)
        self._on_request = on_request
        self._access: Optional[str] = None
        self._refresh: Optional[str] = None
        self.refreshes = 0  # how many times the access token was renewed (tests, --json summary)

    def _send(self, method: str, path: str, token: Optional[str], body: Optional[bytes] = None) -> Response:
        headers = [("User-Agent", USER_AGENT), ("Accept", "application/json")]
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        if token is not None:
            headers.append(("Authorization", "Bearer " + token))
        if self._on_request is not None:
            self._on_request(method, self._base + path, headers, body or b"")
        return self._transport.send(method, self._base + path, headers, body or b"")

    def _keep(self, token: Any, what: str) -> str:
        if not isinstance(token, str) or not token:
            raise TransientError("the server's answer to %s holds no token" % what,
                                 hint="is this URL a ThermaCore API? try again later if it is")
        self._secrets.append(token)  # redacted from every line from now on
        return token

    def login(self) -> None:
        """POST /api/v1/auth/login; 401/403 is CredentialsRefused (77)."""
        body = json.dumps({"username": self._username, "password": self._password}).encode("utf-8")
        response = self._send("POST", LOGIN_PATH, None, body)
        if response.status != 200:
            raise self._failure(response, "logging in as %s" % self._username)
        doc = _json(response.body)
        data = doc.get("data") if isinstance(doc, dict) else None
        data = data if isinstance(data, dict) else {}
        self._access = self._keep(data.get("access_token"), "the login")
        self._refresh = self._keep(data.get("refresh_token"), "the login")
        self._on_event("login")

    def refresh(self) -> bool:
        """POST /api/v1/auth/refresh with the refresh token as Bearer; False when it is refused (log in again)."""
        if self._refresh is None:
            return False
        response = self._send("POST", REFRESH_PATH, self._refresh)
        doc = _json(response.body)
        if response.status in (401, 422):
            return False
        if response.status != 200:
            raise self._failure(response, "refreshing the access token")
        data = doc.get("data") if isinstance(doc, dict) else None
        self._access = self._keep(data.get("access_token") if isinstance(data, dict) else None, "the refresh")
        self.refreshes += 1
        self._on_event("refresh")
        return True

    def get(self, path: str, what: str) -> Any:
        """GET ``path`` with the access token; on an expired token refresh (or log in) once and ask again."""
        if self._access is None:
            self.login()
        response = self._send("GET", path, self._access)
        if token_expired(response.status, _json(response.body)):
            if not self.refresh():
                self.login()
            response = self._send("GET", path, self._access)
        if response.status != 200:
            raise self._failure(response, what)
        doc = _json(response.body)
        if doc is None:
            raise TransientError("the answer to %s is not JSON" % what,
                                 hint="is this URL a ThermaCore API? try again later if it is")
        return doc

    def readings(self, unit: str, hours: Optional[int] = None, sensor_type: Optional[str] = None) -> List[Any]:
        """The unit's readings, newest first (the server sends at most 1000)."""
        doc = self.get(readings_path(unit, hours, sensor_type), "reading unit %s" % unit)
        if not isinstance(doc, list):
            raise TransientError("the answer to reading unit %s is not a list of readings" % unit)
        return doc

    def _failure(self, response: Response, what: str) -> Exception:
        """The error for a final non-200 answer, with the exit code its status means (77, 78, 75, 65)."""
        message = short_message(response.body) or response.reason
        text = "HTTP %d %s%s, while %s" % (response.status, message, _field_errors(_json(response.body)), what)
        code = for_http_status(response.status)
        if code is ExitStatus.NOPERM:
            hint = ("check THERMACORE_USERNAME/THERMACORE_PASSWORD or --credentials-file"
                    if what.startswith("logging in") else "the user may lack the read_units permission")
            return CredentialsRefused(text, hint=hint)
        if response.status == 404:
            return ConfigError(text, hint="check --unit and --base-url")
        if code is ExitStatus.TEMPFAIL:
            return TransientError(text, hint="try again later")
        if code is ExitStatus.CONFIG:
            return ConfigError(text, hint="check --base-url")
        return RequestRejected(text)
