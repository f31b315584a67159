"""The twin: a local HTTPS server that speaks the TESAIoT and TLINK device-facing contracts.

Usage: ``with start_twin(certfile=cert, keyfile=key, devices={dev: key}) as twin: post to twin.url``

http.server's ThreadingHTTPServer (daemon threads) over the sqlite3 ``TelemetryStore``. TLS
handshakes happen in each connection's own thread, so a slow or hostile client never blocks the
accept loop; a failed handshake only increments ``tls_failures``. Every request is recorded in
``requests`` before anything else happens to it, then a ``FaultPlan`` may spoil the answer (POSTs
only). An exception in a handler is answered with 500 and the server carries on.

Routes: POST /api/v1/telemetry; GET /api/v1/telemetry/{device_id}[/latest]; GET /health;
POST /api/webhooks/tlink; GET /api/users/{userId}/devices[/{deviceId}/latest|/history].
The TLINK read-back routes take no credentials, like the reference receiver they copy.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import http.server
import io
import json
import re
import selectors
import socket
import socketserver
import ssl
import struct
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from .. import __version__
from .faults import FaultPlan, status_fault
from .store import IdempotencyKeyReused, TelemetryStore, parse_iso8601, parse_start_time
from .tlink_store import id_out, parse_tlink_time, validate_tlink_push

Json = Dict[str, Any]
PathLike = Union[str, Path]

PROCESSING_ERROR = {"error": "Failed to process telemetry data", "code": "PROCESSING_ERROR"}
INVALID_API_KEY = {"error": "Invalid API key", "code": "INVALID_API_KEY"}
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
_LINGER_SECONDS = 2.0  # how long to drain an unread body after an early answer (413, 411)
_LINGER_BYTES = 64 * 1024 * 1024  # ...and how much of it, at most (read and dropped, never kept)
_MALFORMED = b"\x00\x17garbage: this is not an HTTP response\r\n\r\n"


class SeenRequest(NamedTuple):
    """One request as it arrived, recorded before faults or processing touch it."""

    method: str
    path: str  # the request target, query string included
    headers: Dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    received_at: float  # time.monotonic()
    wall_time: float  # time.time()
    client_port: int = 0  # the client's source port: one value per kept-alive connection

    def json(self) -> Any:
        """The body parsed as JSON (tests)."""
        return json.loads(self.body.decode("utf-8"))


class SeenRequests:
    """The thread-safe list of requests a twin received, in arrival order.

    ``limit`` keeps only the newest N (a long-running receiver.py must not grow forever);
    ``total`` counts every request ever recorded.
    """

    def __init__(self, limit: Optional[int] = None) -> None:
        self._items: List[SeenRequest] = []
        self._cond = threading.Condition()
        self.limit = limit
        self.total = 0

    def append(self, item: SeenRequest) -> None:
        with self._cond:
            self._items.append(item)
            self.total += 1
            if self.limit is not None and len(self._items) > self.limit:
                del self._items[: len(self._items) - self.limit]
            self._cond.notify_all()

    def snapshot(self) -> List[SeenRequest]:
        """A copy, safe to iterate while requests keep arriving."""
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        """Forget what was seen (``total`` restarts too)."""
        with self._cond:
            del self._items[:]
            self.total = 0

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` requests were seen in all (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.total >= count, timeout)

    def for_path(self, path: str, method: Optional[str] = None) -> List[SeenRequest]:
        """Requests whose path (without query) is ``path``."""
        return [r for r in self.snapshot()
                if r.path.split("?", 1)[0] == path and (method is None or r.method == method)]

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[SeenRequest]:
        return iter(self.snapshot())

    def __eq__(self, other: object) -> bool:
        """Compares with a list too, so a test can say ``twin.requests == []``."""
        if isinstance(other, SeenRequests):
            other = other.snapshot()
        if isinstance(other, (list, tuple)):
            return self.snapshot() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, index: Any) -> Any:
        with self._cond:
            return self._items[index]

    def __repr__(self) -> str:
        return "SeenRequests(%d)" % len(self)


class Reply(NamedTuple):
    status: int
    body: Json
    headers: Dict[str, str] = {}


class InjectedFault(RuntimeError):
    """Raised inside a handler by the "error" fault, to exercise the 500 path."""


class _ClientGone(Exception):
    """The client closed or stalled mid-request: nothing to answer."""


def _error(status: int, message: str, code: Optional[str] = None, **headers: str) -> Reply:
    body: Json = {"error": message}
    if code is not None:
        body["code"] = code
    return Reply(status, body, dict(headers))


def _validation(message: str) -> Reply:
    return _error(400, message, "VALIDATION_ERROR")


def media_type(content_type: Optional[str]) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


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


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def _parse_json_body(body: bytes) -> Any:
    """Strict JSON from UTF-8 bytes (no NaN/Infinity); raises ValueError."""
    return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)


class _Route(NamedTuple):
    pattern: "re.Pattern[str]"
    methods: Dict[str, str]  # method -> handler method name


def _route(pattern: str, **methods: str) -> _Route:
    return _Route(re.compile("^" + pattern + "$"), methods)


_SEGMENT = r"([^/]+)"
ROUTES = [
    _route("/health", GET="_get_health"),
    _route("/api/v1/telemetry", POST="_post_telemetry"),
    _route("/api/v1/telemetry/%s/latest" % _SEGMENT, GET="_get_latest"),
    _route("/api/v1/telemetry/%s" % _SEGMENT, GET="_get_history"),
    _route("/api/webhooks/tlink", POST="_post_tlink"),
    _route("/api/users/%s/devices" % _SEGMENT, GET="_get_tlink_devices"),
    _route("/api/users/%s/devices/%s/latest" % (_SEGMENT, _SEGMENT), GET="_get_tlink_latest"),
    _route("/api/users/%s/devices/%s/history" % (_SEGMENT, _SEGMENT), GET="_get_tlink_history"),
]


def _int_param(query: Dict[str, List[str]], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter; below ``low`` or not a number is an error, above ``high`` is clamped."""
    values = query.get(name)
    if not values:
        return default
    text = values[-1].strip()
    if not re.match(r"^\d+$", text, re.ASCII) or int(text) < low:
        raise ValueError("%s must be an integer >= %d" % (name, low))
    return min(int(text), high)


def _param(query: Dict[str, List[str]], name: str) -> Optional[str]:
    values = query.get(name)
    return values[-1] if values else None


class TwinRequestHandler(http.server.BaseHTTPRequestHandler):
    """One connection's requests; the twin's state lives on ``self.server.twin``."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the senders reuse one connection
    disable_nagle_algorithm = True  # otherwise delayed ACK stalls each kept-alive answer ~40 ms
    server_version = "iotpost-twin/" + __version__
    sys_version = ""
    default_request_version = "HTTP/1.1"  # so even an unparseable request gets a status line
    server: "_TwinHTTPServer"

    def setup(self) -> None:
        self.timeout = self.server.twin.handler_timeout
        super().setup()

    # -- HTTP methods: every one goes through _serve, so unknown paths get JSON 404/405 ----------

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    # -- quiet logging ---------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        self.server.twin.log("%s - %s" % (self.address_string(), format % args))

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """The base class's errors (bad request line, 414, 431, 501...) as JSON too."""
        short = self.responses.get(code, ("Error",))[0]
        self.close_connection = True
        try:
            self.wfile.write(self._render(Reply(code, {"error": message or short}, {"Connection": "close"})))
        except OSError:
            pass

    # -- the request cycle -----------------------------------------------------------------

    def _serve(self) -> None:
        twin = self.server.twin
        try:
            body, early = self._read_body()
        except (OSError, _ClientGone):
            self.close_connection = True
            return
        twin.requests.append(SeenRequest(self.command, self.path, self._header_dict(), body, time.monotonic(),
                                         time.time(), self.client_address[1]))
        if early is not None:
            self._deliver(self._render(early), None)
            self._lingering_close()
            return
        plan = twin.faults
        fault = plan.draw() if (plan is not None and self.command == "POST") else None
        try:
            reply = self._answer(body, fault, plan)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:  # the receiver survives its handlers: log, answer 500, keep serving
            twin.log("error handling %s %s:\n%s" % (self.command, self.path, traceback.format_exc()))
            reply = Reply(500, PROCESSING_ERROR)
        if reply is not None:
            self._deliver(self._render(reply), fault)

    def _read_body(self) -> Tuple[bytes, Optional[Reply]]:
        """The body by Content-Length, or an early answer when we must not read it."""
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding") is not None or self.command in ("POST", "PUT", "PATCH"):
                return b"", _error(411, "Content-Length required", "LENGTH_REQUIRED", Connection="close")
            return b"", None
        if not re.match(r"^\d+$", length.strip(), re.ASCII):
            return b"", _error(400, "Invalid Content-Length", "BAD_REQUEST", Connection="close")
        size = int(length.strip())
        if size > self.server.twin.max_body:
            return b"", _error(413, "Payload too large", "PAYLOAD_TOO_LARGE", Connection="close")
        body = self.rfile.read(size) if size else b""
        if len(body) < size:
            raise _ClientGone()
        return body, None

    def _header_dict(self) -> Dict[str, str]:
        headers: Dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = headers[key] + ", " + value if key in headers else value
        return headers

    def _answer(self, body: bytes, fault: Optional[str], plan: Optional[FaultPlan]) -> Optional[Reply]:
        """Apply a before-processing fault, or route the request."""
        status = status_fault(fault)
        if plan is not None and status is not None:
            retry = str(plan.retry_after)
            if status == 503:
                return _error(503, "Service temporarily unavailable", "SERVICE_UNAVAILABLE",
                              **{"Retry-After": retry})
            if status == 429:
                reply = _error(429, "Rate limit exceeded", "RATE_LIMITED", **{"Retry-After": retry})
                reply.body["retry_after"] = int(retry) if retry.isdigit() else retry
                return reply
            if status == 500:
                return Reply(500, dict(PROCESSING_ERROR))
            phrase = self.responses.get(status, ("Injected fault",))[0]
            return _error(status, "%s (injected fault)" % phrase, "INJECTED_FAULT")
        if fault == "error":
            raise InjectedFault("injected fault: error")
        if fault == "drop":
            self._abort()
            return None
        if plan is not None and fault == "delay":
            self.server.twin.pause(plan.delay)
        return self._route(body)

    def _route(self, body: bytes) -> Reply:
        split = urlsplit(self.path)
        path = split.path
        for route in ROUTES:
            match = route.pattern.match(path)
            if match is None:
                continue
            name = route.methods.get(self.command)
            if name is None:
                allow = ", ".join(sorted(route.methods))
                return _error(405, "Method not allowed", "METHOD_NOT_ALLOWED", Allow=allow)
            args = [unquote(g) for g in match.groups()]
            query = parse_qs(split.query, keep_blank_values=False)
            return getattr(self, name)(body, query, *args)
        return _error(404, "Not found", "NOT_FOUND")

    # -- response writing ------------------------------------------------------------------

    def _render(self, reply: Reply) -> bytes:
        """The whole response as bytes (one write, and faults can spoil it afterwards)."""
        body = json.dumps(reply.body).encode("utf-8")
        real, buffer = self.wfile, io.BytesIO()
        self.wfile = buffer  # send_response/end_headers write here, through public API only
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                buffer.write(body)
        finally:
            self.wfile = real
        return buffer.getvalue()

    def _deliver(self, data: bytes, fault: Optional[str]) -> None:
        """Write the response, or lose it the way ``fault`` says."""
        twin = self.server.twin
        try:
            if fault == "reset":
                self._abort()
            elif fault == "empty":
                self.close_connection = True
            elif fault == "malformed":
                self.close_connection = True
                self.wfile.write(_MALFORMED)
            elif fault == "dribble":
                plan = twin.faults
                seconds = plan.dribble_seconds if plan is not None else 0.5
                pieces = max(1, min(len(data), 16))
                step = -(-len(data) // pieces)
                for start in range(0, len(data), step):
                    self.wfile.write(data[start:start + step])
                    if twin.pause(seconds / pieces):
                        break
            else:
                self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _abort(self) -> None:
        """Reset the connection (SO_LINGER 0): the client gets ECONNRESET and no answer."""
        self.close_connection = True
        connection = self.connection
        try:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rfile.close()  # the socket only really closes once its makefile() readers are gone
        connection.close()

    def _lingering_close(self) -> None:
        """After an early answer, read and drop what the client still sends, then close.

        Closing with unread data makes the kernel send RST, and the client may lose our 413
        before reading it; draining briefly (never storing) lets it read the answer first.
        """
        self.close_connection = True
        connection = self.connection
        budget = max(16 * self.server.twin.max_body, _LINGER_BYTES)
        deadline = time.monotonic() + _LINGER_SECONDS
        try:
            socket.socket.shutdown(connection, socket.SHUT_WR)  # raw FIN; leaves the TLS object alone
            while budget > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                connection.settimeout(left)
                chunk = socket.socket.recv(connection, 65536)  # raw bytes: we only discard them
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    # -- TESAIoT ---------------------------------------------------------------------------

    def _get_health(self, body: bytes, query: Dict[str, List[str]]) -> Reply:
        return Reply(200, {"status": "healthy", "version": __version__})

    def _post_telemetry(self, body: bytes, query: Dict[str, List[str]]) -> Reply:
        store = self.server.twin.store
        if media_type(self.headers.get("Content-Type")) != "application/json":
            return _error(415, "Content-Type must be application/json", "UNSUPPORTED_MEDIA_TYPE")
        device = store.authenticate(self.headers.get("X-API-KEY"))
        if device is None:
            return Reply(401, dict(INVALID_API_KEY))
        try:
            payload = _parse_json_body(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _error(400, "Invalid JSON data", "INVALID_JSON")
        problem = validate_telemetry(payload)
        if problem is not None:
            return _validation(problem)
        if payload["device_id"] != device:
            return _error(403, "Device identity mismatch", "DEVICE_ID_MISMATCH")
        key = (self.headers.get("Idempotency-Key") or "").strip() or None
        if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
            return _validation("Idempotency-Key must be at most %d characters" % MAX_IDEMPOTENCY_KEY)
        try:
            result = store.store_telemetry(device, payload["data"], timestamp=payload.get("timestamp"),
                                           raw_body=body, idempotency_key=key)
        except IdempotencyKeyReused:
            return _error(422, "Idempotency-Key reused with a different payload", "IDEMPOTENCY_KEY_REUSED")
        return Reply(200, result.response, {"Idempotent-Replayed": "true"} if result.replayed else {})

    def _reader_device(self, device_id: str) -> Optional[Reply]:
        """401/403 unless the caller's key belongs to ``device_id``."""
        device = self.server.twin.store.authenticate(self.headers.get("X-API-KEY"))
        if device is None:
            return Reply(401, dict(INVALID_API_KEY))
        if device != device_id:
            return Reply(403, {"error": "Forbidden: device mismatch"})
        return None

    def _get_latest(self, body: bytes, query: Dict[str, List[str]], device_id: str) -> Reply:
        denied = self._reader_device(device_id)
        if denied is not None:
            return denied
        record = self.server.twin.store.latest(device_id)
        if record is None:
            return _error(404, "No telemetry for this device")
        return Reply(200, {"device_id": device_id, "telemetry": record.as_json()})

    def _get_history(self, body: bytes, query: Dict[str, List[str]], device_id: str) -> Reply:
        denied = self._reader_device(device_id)
        if denied is not None:
            return denied
        store = self.server.twin.store
        try:
            limit = _int_param(query, "limit", DEFAULT_HISTORY_LIMIT, 1, MAX_HISTORY_LIMIT)
            start_text = _param(query, "start_time")
            now = _dt.datetime.fromtimestamp(store.now(), tz=_dt.timezone.utc)
            start = parse_start_time(start_text, now) if start_text else None
        except ValueError as exc:
            return _validation(str(exc) if "limit" in str(exc) else
                               "start_time must be ISO 8601 or relative like -1h, -30m, -7d, -90s")
        records = store.history(device_id, limit=limit, start=start)
        return Reply(200, {"device_id": device_id, "count": len(records),
                           "telemetry": [r.as_json() for r in records]})

    # -- TLINK -----------------------------------------------------------------------------

    def _post_tlink(self, body: bytes, query: Dict[str, List[str]]) -> Reply:
        twin = self.server.twin
        try:
            push = _parse_json_body(body)
        except ValueError:
            push = None
        if not isinstance(push, dict) or not push:
            return _error(400, "Invalid or empty JSON body")
        if twin.tlink_secret is not None:
            presented = self.headers.get("X-TLink-Signature") or ""
            expected = "sha256=" + hmac.new(twin.tlink_secret, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("ascii")):
                return _error(401, "Invalid webhook signature")
        problem = validate_tlink_push(push)
        if problem is not None:
            return _error(400, problem)
        return Reply(200, {"status": "ok", "storedReadings": twin.store.store_tlink_push(push)})

    def _tlink_window(self, query: Dict[str, List[str]]) -> Tuple[Optional[str], Optional[str]]:
        start, end = _param(query, "startTime"), _param(query, "endTime")
        try:
            return (parse_tlink_time(start) if start else None, parse_tlink_time(end) if end else None)
        except ValueError:
            raise ValueError("startTime and endTime must be YYYY-MM-DD HH:MM:SS or ISO 8601") from None

    def _get_tlink_devices(self, body: bytes, query: Dict[str, List[str]], user_id: str) -> Reply:
        store = self.server.twin.store
        try:
            page = _int_param(query, "page", 1, 1, 10 ** 9)
            page_size = _int_param(query, "pageSize", 20, 1, 100)
            history_limit = _int_param(query, "historyLimit", 10, 0, MAX_HISTORY_LIMIT)
            start, end = self._tlink_window(query)
        except ValueError as exc:
            return _error(400, str(exc))
        if not store.tlink_user_exists(user_id):
            return _error(404, "User not found")
        total, devices = store.tlink_user_devices(
            user_id, page=page, page_size=page_size, device_id=_param(query, "deviceId"),
            start=start, end=end, history_limit=history_limit)
        return Reply(200, {"userId": id_out(user_id), "page": page, "pageSize": page_size,
                           "total": total, "devices": devices})

    def _tlink_device_check(self, user_id: str, device_id: str) -> Optional[Reply]:
        store = self.server.twin.store
        if not store.tlink_user_exists(user_id):
            return _error(404, "User not found")
        if store.tlink_device_owner(device_id) != user_id:
            return _error(404, "Device not found")
        return None

    def _get_tlink_latest(self, body: bytes, query: Dict[str, List[str]], user_id: str,
                          device_id: str) -> Reply:
        missing = self._tlink_device_check(user_id, device_id)
        if missing is not None:
            return missing
        return Reply(200, {"userId": id_out(user_id), "deviceId": id_out(device_id),
                           "sensors": self.server.twin.store.tlink_latest(user_id, device_id)})

    def _get_tlink_history(self, body: bytes, query: Dict[str, List[str]], user_id: str,
                           device_id: str) -> Reply:
        try:
            limit = _int_param(query, "limit", DEFAULT_HISTORY_LIMIT, 1, MAX_HISTORY_LIMIT)
            start, end = self._tlink_window(query)
        except ValueError as exc:
            return _error(400, str(exc))
        missing = self._tlink_device_check(user_id, device_id)
        if missing is not None:
            return missing
        readings = self.server.twin.store.tlink_history(user_id, device_id, start=start, end=end, limit=limit)
        return Reply(200, {"userId": id_out(user_id), "deviceId": id_out(device_id),
                           "count": len(readings), "readings": readings})


class _TwinHTTPServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that hands each accepted socket to its TwinServer (TLS and all)."""

    daemon_threads = True
    request_queue_size = 64
    allow_reuse_address = True  # come_back() re-binds the same port at once

    def __init__(self, twin: "TwinServer", address: Tuple[str, int], family: int) -> None:
        self.twin = twin
        self.address_family = family
        self._stop_requested = False
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            super().__init__(address, TwinRequestHandler)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve(self, ready: threading.Event) -> None:
        """serve_forever(), except that stop_serving() wakes it at once instead of after a poll."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                ready.set()
                while not self._stop_requested:
                    for key, _ in selector.select():
                        if key.fileobj is self and not self._stop_requested:
                            self._handle_request_noblock()  # what serve_forever calls
        finally:
            self._stopped.set()

    def stop_serving(self) -> None:
        """Stop the loop in serve() and wait for it."""
        self._stop_requested = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.twin._serve_connection(self, request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.twin.log("unexpected error from %s:\n%s" % (client_address, traceback.format_exc()))


class TwinServer:
    """A running (or stopped) twin: its URL, store, seen requests, TLS failures and fault plan."""

    def __init__(
        self,
        *,
        store: TelemetryStore,
        owns_store: bool,
        host: str,
        port: int,
        ssl_context: Optional[ssl.SSLContext],
        faults: Optional[FaultPlan] = None,
        tlink_secret: Optional[bytes] = None,
        max_body: int = 1_048_576,
        handler_timeout: float = 10.0,
        log_stream: Optional[IO[str]] = None,
        keep_requests: Optional[int] = None,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.faults = faults
        self.tlink_secret = tlink_secret
        self.max_body = max_body
        self.handler_timeout = handler_timeout
        self.log_stream = log_stream
        self.requests = SeenRequests(limit=keep_requests)
        self.tls_failures = 0
        self.tls_failure_reasons: List[str] = []
        self.connections_accepted = 0  # TCP connections, to check that a sender keeps one alive
        self._owns_store = owns_store
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._log_lock = threading.Lock()
        self._connections: Set[socket.socket] = set()
        self._stopping = threading.Event()
        self._stopped = False
        self._httpd: Optional[_TwinHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> "TwinServer":
        """Bind (port 0: any free port) and serve in a background thread; returns once listening."""
        self._bind_and_serve(self.port)
        return self

    def _bind_and_serve(self, port: int) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        httpd = _TwinHTTPServer(self, (self.host, port), family)
        self.port = httpd.server_address[1]
        ready = threading.Event()

        thread = threading.Thread(target=httpd.serve, args=(ready,), name="twin-%d" % self.port, daemon=True)
        self._httpd, self._thread = httpd, thread
        thread.start()
        ready.wait(5.0)

    def _take_down(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.stop_serving()
            if thread is not None:
                thread.join()
            httpd.server_close()
        self._cut_connections()

    @property
    def is_up(self) -> bool:
        """Listening right now (False after go_down() or stop())."""
        return self._httpd is not None

    def go_down(self) -> None:
        """Close the listening socket and open connections: new connections are REFUSED."""
        self._take_down()

    def come_back(self) -> None:
        """Listen again on the same port, with the same store, faults and request log."""
        if self._stopped:
            raise RuntimeError("a stopped twin cannot come back; start a new one")
        if self._httpd is None:
            self._bind_and_serve(self.port)

    def stop(self) -> None:
        """Shut down, join, close the listening socket and connections, close an owned store. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._take_down()
        with self._idle:
            self._idle.wait_for(lambda: not self._connections, timeout=2.0)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> "TwinServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pause(self, seconds: float) -> bool:
        """Sleep for a fault, cut short by stop(); True if the twin is stopping."""
        return self._stopping.wait(seconds)

    # -- what tests and the CLI use ----------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self._ssl_context is not None

    @property
    def url(self) -> str:
        """https://localhost:PORT (the name in the test certificate), https://[::1]:PORT, or http://127.0.0.1:PORT."""
        host = self.host
        if ":" in host:
            name = "[::1]" if host in ("::", "::1") else "[%s]" % host
        elif host in ("", "0.0.0.0", "127.0.0.1", "localhost"):
            name = "localhost" if self.tls else "127.0.0.1"
        else:
            name = host
        return "%s://%s:%d" % ("https" if self.tls else "http", name, self.port)

    def register_device(self, device_id: str, api_key: str) -> None:
        """Accept ``api_key`` for ``device_id``."""
        self.store.register_device(device_id, api_key)

    def log(self, line: str) -> None:
        """One line to log_stream, if there is one (never headers, so never an API key)."""
        stream = self.log_stream
        if stream is None:
            return
        with self._log_lock:
            try:
                stream.write("receiver: " + line.rstrip("\n") + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass

    # -- per-connection work (runs in the connection's own thread) ---------------------------

    def _track(self, sock: socket.socket, new: bool = False) -> None:
        with self._lock:
            self._connections.add(sock)
            if new:
                self.connections_accepted += 1

    def _untrack(self, *socks: socket.socket) -> None:
        with self._idle:
            for sock in socks:
                self._connections.discard(sock)
            self._idle.notify_all()

    def _cut_connections(self) -> None:
        with self._lock:
            for sock in list(self._connections):
                try:
                    # The plain socket method: SSLSocket.shutdown would drop its TLS state under
                    # the thread still using it. The handler then sees EOF and ends quietly.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve_connection(self, httpd: _TwinHTTPServer, sock: socket.socket, address: Any) -> None:
        self._track(sock, new=True)
        conn = sock
        try:
            if self._ssl_context is not None:
                sock.settimeout(self.handler_timeout)  # bounds the handshake too
                try:
                    conn = self._ssl_context.wrap_socket(sock, server_side=True,
                                                         do_handshake_on_connect=False)
                    self._track(conn)
                    conn.do_handshake()
                except (OSError, ValueError) as exc:
                    self._tls_failed(exc)
                    conn.close()
                    return
            try:
                TwinRequestHandler(conn, address, httpd)
            except OSError:
                pass  # resets, timeouts, TLS errors mid-stream: the client's problem, quietly
        finally:
            self._untrack(sock, conn)
            if conn is not sock:
                httpd.shutdown_request(conn)

    def _tls_failed(self, exc: BaseException) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            self.tls_failures += 1
            self.tls_failure_reasons.append(getattr(exc, "reason", None) or str(exc) or type(exc).__name__)
        self.log("TLS handshake failed: %s" % exc)


def read_bundle_device(bundle_dir: PathLike) -> Tuple[str, str]:
    """(device_id, api_key) from a credential bundle, normalised exactly as the senders read them."""
    from ..bundle import API_KEY_FILE, DEVICE_ID_FILE, parse_api_key, parse_device_id
    from ..errors import CredentialMissing

    folder = Path(bundle_dir)
    texts = []
    for name in (DEVICE_ID_FILE, API_KEY_FILE):
        try:
            texts.append((folder / name).read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialMissing(
                "cannot read %s (%s), while registering the bundle %s"
                % (folder / name, getattr(exc, "strerror", None) or exc, folder),
                hint="pass --bundle DIR for a folder holding device_id.txt and api_key.txt") from None
    device_id = parse_device_id(texts[0], str(folder / DEVICE_ID_FILE))
    api_key = parse_api_key(texts[1], str(folder / API_KEY_FILE))
    return device_id, api_key


def build_server_context(certfile: PathLike, keyfile: Optional[PathLike] = None) -> ssl.SSLContext:
    """The twin's TLS: TLS 1.2 minimum, our certificate chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
    return context


def start_twin(
    *,
    bundles: Iterable[PathLike] = (),
    devices: Optional[Dict[str, str]] = None,
    certfile: Optional[PathLike] = None,
    keyfile: Optional[PathLike] = None,
    db_path: PathLike = ":memory:",
    store: Optional[TelemetryStore] = None,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: bool = True,
    faults: Optional[FaultPlan] = None,
    tlink_secret: Optional[bytes] = None,
    max_body: int = 1_048_576,
    handler_timeout: float = 10.0,
    log_stream: Optional[IO[str]] = None,
    keep_requests: Optional[int] = None,
) -> TwinServer:
    """Start a twin in a background thread and return it once it is listening.

    ``bundles`` (credential folders) and ``devices`` ({device_id: api_key}) are registered.
    ``keep_requests`` bounds ``twin.requests`` to the newest N (None: keep all, for tests).
    A ``store`` passed in stays open after stop(); one made from ``db_path`` is closed by it.
    """
    context = None
    if tls:
        if certfile is None:
            raise ValueError("tls=True needs certfile (and keyfile unless the key is inside it)")
        context = build_server_context(certfile, keyfile)
    owns_store = store is None
    the_store = TelemetryStore(db_path) if store is None else store
    try:
        for folder in bundles:
            the_store.register_device(*read_bundle_device(folder))
        for device_id, api_key in (devices or {}).items():
            the_store.register_device(device_id, api_key)
        twin = TwinServer(store=the_store, owns_store=owns_store, host=host, port=port,
                          ssl_context=context, faults=faults, tlink_secret=tlink_secret,
                          max_body=max_body, handler_timeout=handler_timeout,
                          log_stream=log_stream, keep_requests=keep_requests)
        return twin.start()
    except BaseException:
        if owns_store:
            the_store.close()
        raise
