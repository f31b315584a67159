"""One twin connection's request cycle: read the body, record it, apply a fault, route, write.

Usage: ``TwinRequestHandler(conn, address, httpd)``  (TwinServer does this for each accepted socket)

Every request is recorded in ``twin.requests`` before anything else happens to it, then the
twin's ``FaultPlan`` may spoil the answer (POSTs only): answer instead of processing, or process
and then lose the answer on the wire. The answer itself comes from ``routes.dispatch``; an
exception there is answered with 500 and the connection carries on. Responses are rendered to
bytes first and written in one go, so a fault can reset, truncate or dribble them afterwards.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import socket
import struct
import time
import traceback
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from .. import __version__
from .faults import FaultPlan, status_fault
from .replies import PROCESSING_ERROR, Reply, error_reply
from .request_log import SeenRequest
from .routes import dispatch

if TYPE_CHECKING:
    from .server import _TwinHTTPServer

_LINGER_SECONDS = 2.0  # how long to drain an unread body after an early answer (413, 411)
_LINGER_BYTES = 64 * 1024 * 1024  # ...and how much of it, at most (read and dropped, never kept)
_MALFORMED = b"\x00\x17garbage: this is not an HTTP response\r\n\r\n"


class InjectedFault(RuntimeError):
    """Raised inside a handler by the "error" fault, to exercise the 500 path."""


class _ClientGone(Exception):
    """The client closed or stalled mid-request: nothing to answer."""


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

    def _serve(self) -> None:
        """Read, record, then answer (or fail to, on purpose) one request."""
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
        fault = plan.draw(body) if (plan is not None and self.command == "POST") else None
        try:
            reply = self._answer(body, fault, plan)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:  # the receiver survives its handlers: log, answer 500, keep serving
            twin.log("error handling %s %s:\n%s" % (self.command, self.path, traceback.format_exc()))
            reply = Reply(500, PROCESSING_ERROR)
        if reply is not None:
            self._deliver(self._render(reply), fault)

    # Every method goes through _serve, so unknown paths get JSON 404/405 (HEAD stays the base's 501).
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _read_body(self) -> Tuple[bytes, Optional[Reply]]:
        """The body by Content-Length, or an early answer when we must not read it."""
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding") is not None or self.command in ("POST", "PUT", "PATCH"):
                return b"", error_reply(411, "Content-Length required", "LENGTH_REQUIRED", Connection="close")
            return b"", None
        if not re.match(r"^\d+$", length.strip(), re.ASCII):
            return b"", error_reply(400, "Invalid Content-Length", "BAD_REQUEST", Connection="close")
        size = int(length.strip())
        if size > self.server.twin.max_body:
            return b"", error_reply(413, "Payload too large", "PAYLOAD_TOO_LARGE", Connection="close")
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
                return error_reply(503, "Service temporarily unavailable", "SERVICE_UNAVAILABLE",
                                   **{"Retry-After": retry})
            if status == 429:
                reply = error_reply(429, "Rate limit exceeded", "RATE_LIMITED", **{"Retry-After": retry})
                reply.body["retry_after"] = int(retry) if retry.isdigit() else retry
                return reply
            if status == 500:
                return Reply(500, dict(PROCESSING_ERROR))
            phrase = self.responses.get(status, ("Injected fault",))[0]
            return error_reply(status, "%s (injected fault)" % phrase, "INJECTED_FAULT")
        if fault == "error":
            raise InjectedFault("injected fault: error")
        if fault == "drop":
            self._abort()
            return None
        if plan is not None and fault == "delay":
            self.server.twin.pause(plan.delay)
        twin = self.server.twin
        return dispatch(self.command, self.path, body=body, headers=self.headers, store=twin.store,
                        tlink_secret=twin.tlink_secret, log=twin.log)

    def _render(self, reply: Reply) -> bytes:
        """The whole response as bytes (one write, and faults can spoil it afterwards)."""
        if reply.flask_json:
            body = (json.dumps(reply.body, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
        else:
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        """Quiet by default: lines go to the twin's log_stream, if it has one."""
        self.server.twin.log("%s - %s" % (self.address_string(), format % args))

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """The base class's errors (bad request line, 414, 431, 501...) as JSON too."""
        short = self.responses.get(code, ("Error",))[0]
        self.close_connection = True
        try:
            self.wfile.write(self._render(Reply(code, {"error": message or short}, {"Connection": "close"})))
        except OSError:
            pass
