"""One twin connection's request cycle: read the head and body, record, apply a fault, route, write.

Usage: ``TwinRequestHandler(conn, address, httpd)``  (TwinServer does this for each accepted socket)

The head is read here, not by http.server, because the twin must hold up against hostile
clients: it must end in a blank line (a head cut short by EOF or by the server's head deadline
is dropped unanswered and never recorded), stay within line, count and size limits (414/431),
and say how long its body is in exactly one way (one Content-Length, or ``chunked`` alone:
anything else is 400/501 and the connection is closed, so leftovers are never a second request).
The body must then arrive within a deadline of its own (the server's ``head_timeout`` again).
Every request is recorded in ``twin.requests`` before anything else happens to it, then the
twin's ``FaultPlan`` may spoil the answer (POSTs only): answer instead of processing, or process
and then lose the answer on the wire. The answer itself comes from ``routes.dispatch``; an
exception there is answered with 500 (``routes.server_error``: in the words of the route's
platform) and the connection carries on. Responses are rendered to bytes first and written in
one go, so a fault can reset, truncate or dribble them afterwards.
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
from typing import Any, Dict, List, Optional, Protocol, TextIO, Tuple, Union
from urllib.parse import unquote, urlsplit

from .. import __version__
from .faults import FaultPlan, status_fault
from .replies import Reply, error_reply
from .request_log import SeenRequest, SeenRequests
from .routes import dispatch, server_error


class TwinState(Protocol):
    """What a handler reads from the twin that owns it (server.TwinServer is one). Declared here, so the
    handler does not import the server back."""

    clock_offset: float  # added to the Date header
    faults: FaultPlan
    handler_timeout: float
    head_timeout: float
    max_body: int
    requests: SeenRequests
    store: Any  # store.TelemetryStore
    tlink_secret: Optional[bytes]
    log_stream: Optional[TextIO]  # where log() writes; None: the twin is quiet

    def log(self, line: str) -> None: ...

    def pause(self, seconds: float) -> bool: ...

    def watch(self, sock: socket.socket, deadline: float) -> None: ...

    def unwatch(self, sock: socket.socket) -> None: ...


class TwinHTTPServer(Protocol):
    """The http.server instance a handler is given: it carries the twin."""

    twin: TwinState

_LINGER_SECONDS = 2.0  # how long to drain an unread body after an early answer (413, 400)
_LINGER_BYTES = 64 * 1024 * 1024  # ...and how much of it, at most (read and dropped, never kept)
_MALFORMED = b"\x00\x17garbage: this is not an HTTP response\r\n\r\n"

# Limits on a request head, as nginx's defaults roughly are: larger is refused, never buffered.
MAX_REQUEST_LINE = 8192  # bytes, CRLF included -> 414
MAX_HEADER_LINE = 8192  # bytes per header or trailer line -> 431
MAX_HEADERS = 100  # header (or trailer) lines -> 431
MAX_HEAD_BYTES = 32 * 1024  # request line and headers together -> 431
_MAX_BLANK_LINES = 4  # CRLFs tolerated before a request line (RFC 9112 2.2 robustness)
_TOKEN_COLON = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:")  # a field name, no space before the colon
_CHUNK_SIZE = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
_LINE_ENDS = (b"\r\n", b"\n")
# Printable ASCII words (no whitespace of any kind), one space apart; the path must not start with //.
_PLAIN_REQUEST_LINE = re.compile(rb"([\x21-\x7e]+) (/(?!/)[\x21-\x7e]*) HTTP/1\.([01])\r?\n\Z")
_DATE_CACHE: List[Tuple[int, str]] = [(-1, "")]  # (whole second, its Date header): shared by all handlers
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")  # in a request target: 400
_HIDDEN_IN_SEGMENT = re.compile(r"[/\\\x00]")  # in a decoded path segment: 404


class _FirstValues(Dict[str, str]):
    """Request headers by case-insensitive name, first value of each, as ``Message.get`` answers.

    Built once per request: routes ask for a header about ten times, and each ``Message.get``
    lowercases every header name again (a tenth of a request's CPU at the twin's ingest rate).
    """

    def __init__(self, items: Any) -> None:
        super().__init__()
        joined: Dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            if key in joined:
                joined[key] = joined[key] + ", " + value
            else:
                joined[key] = self[key] = value
        self.joined = joined  # every value of a repeated header, joined with ", " (the request log's view)

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:  # type: ignore[override]
        return dict.get(self, name.lower(), default)


class InjectedFault(RuntimeError):
    """Raised inside a handler by the "error" fault, to exercise the 500 path."""


class _ClientGone(Exception):
    """The client closed or stalled mid-request: nothing to answer."""


class _HeadRefused(Exception):
    """The request head breaks a limit or the syntax: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TwinRequestHandler(http.server.BaseHTTPRequestHandler):
    """One connection's requests; the twin's state lives on ``self.server.twin``."""

    _fields: Optional[List[Tuple[str, str]]] = None  # this request's headers, when split here
    _first: "Optional[_FirstValues]" = None  # ...and by lower-case name, first value of each
    _message: Any = None  # self.headers, once made (see the property)
    _client_cert: Optional[bool] = None  # whether this connection's peer presented a verified certificate

    protocol_version = "HTTP/1.1"  # keep-alive, as the senders reuse one connection
    disable_nagle_algorithm = True  # otherwise delayed ACK stalls each kept-alive answer ~40 ms
    server_version = "iotpost-twin/" + __version__
    sys_version = ""
    default_request_version = "HTTP/1.1"  # so even an unparseable request gets a status line
    server: TwinHTTPServer  # type: ignore[assignment]

    def setup(self) -> None:
        self.timeout = self.server.twin.handler_timeout
        super().setup()

    def _serve(self) -> None:
        """Read, record, then answer (or fail to, on purpose) one request."""
        twin = self.server.twin
        # The body gets a deadline of its own, as long as the head's: with per-read idle timeouts
        # alone, a byte every few seconds would hold the connection (and its --max-connections
        # slot) for ever. A cut body reads short, so it is dropped unrecorded, nothing stored.
        twin.watch(self.connection, time.monotonic() + twin.head_timeout)
        try:
            body, early = self._read_body()
        except (OSError, _ClientGone):
            self.close_connection = True
            return
        finally:
            twin.unwatch(self.connection)
        if early is not None:
            self._answer_early(early)
            return
        self._record(body)
        refused = target_reply(self.path)
        if refused is not None:
            self._deliver(self._render(refused), None)
            return
        plan = twin.faults
        fault = plan.draw(body) if (plan is not None and self.command == "POST") else None
        try:
            reply = self._answer(body, fault, plan)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:  # the receiver survives its handlers: log, answer 500, keep serving
            twin.log("error handling %s %s:\n%s" % (self.command, self.path, traceback.format_exc()))
            reply = server_error(self.path)
        if reply is not None:
            self._deliver(self._render(reply), fault)

    # Every method goes through _serve, so unknown paths get JSON 404/405 (HEAD stays the base's 501).
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def handle_one_request(self) -> None:
        """One request: the head within the twin's head deadline, then its method (base class loop)."""
        twin = self.server.twin
        self.close_connection = True
        twin.watch(self.connection, time.monotonic() + twin.head_timeout)
        try:
            head = self._read_head()
        except _HeadRefused as refused:
            self.command, self.request_version, self.requestline = "", "HTTP/1.1", ""
            self.send_error(refused.status, refused.message)
            self._lingering_close()
            return
        except OSError:  # a read timed out (idle timeout) or the head deadline cut the socket
            return
        finally:
            twin.unwatch(self.connection)
        if head is None:  # EOF, or cut off before the blank line: nothing to answer, nothing to log
            return
        self.raw_requestline, fields = head
        # http.client refuses a head of 100 lines (the blank one counted) with 431: that stays its to say.
        items = _split_fields(fields) if len(fields) < MAX_HEADERS else None
        self._fields = items  # None: read them from self.headers
        self._first = None
        self._message = None
        if items is not None and self._plain_request_line():
            pass  # self.headers is made from items only if something asks for it
        else:
            real = self.rfile
            # parse_request reads the already-checked fields from here. Where they split simply (no bare
            # CR, the usual case) it is given none: email's parser costs a quarter of a request's CPU, and
            # the same (name, value) pairs are added below, then its Connection/Expect checks run on them.
            self.rfile = io.BytesIO(b"\r\n" if items is not None else b"".join(fields) + b"\r\n")
            try:
                parsed = self.parse_request()
            finally:
                self.rfile = real
            if not parsed:
                return
        if items is not None:
            if self._message is not None:  # parse_request's (empty) message: the fields go in it
                for name, value in items:
                    self._message.set_raw(name, value)
            self._first = _FirstValues(items)
            if not self._connection_and_expect():
                return
        method = getattr(self, "do_" + self.command, None)
        if method is None:
            self.send_error(501, "Unsupported method")
            return
        try:
            method()
            self.wfile.flush()
        except OSError:  # the base class logs timeouts; a dead socket needs no log line
            self.close_connection = True

    @property  # type: ignore[override]
    def headers(self) -> Any:
        """The request's headers as http.server's message; for the usual request, made on first use.

        Routes read ``_first`` and the request log reads ``_fields``; building an email message that
        nothing reads cost every request a few microseconds.
        """
        message = self._message
        if message is None:
            message = self._message = self.MessageClass()  # what email's parser makes of an empty head
            for name, value in self._fields or ():
                message.set_raw(name, value)
        return message

    @headers.setter
    def headers(self, message: Any) -> None:  # parse_request sets it
        self._message = message

    def _plain_request_line(self) -> bool:
        """Take the usual request line, ``METHOD /path HTTP/1.1`` (or 1.0), as parse_request would.

        Nothing else is taken here (False): every other line, ``//path`` too, goes to parse_request,
        whose checks differ between Python versions; for these lines they all agree.
        """
        match = _PLAIN_REQUEST_LINE.match(self.raw_requestline)
        if match is None:
            return False
        command, path, minor = match.groups()
        self.command, self.path = command.decode("ascii"), path.decode("ascii")
        self.request_version = "HTTP/1." + minor.decode("ascii")
        self.requestline = self.raw_requestline.decode("ascii").rstrip("\r\n")
        # parse_request keeps HTTP/1.1 alive when this handler speaks 1.1 (it does), closes HTTP/1.0
        self.close_connection = not (minor == b"1" and self.protocol_version >= "HTTP/1.1")
        return True

    def _connection_and_expect(self) -> bool:
        """What http.server's parse_request does with the Connection and Expect headers, word for word."""
        first = self._first  # Message.get's answers, without its lowercasing every name again
        assert first is not None
        conntype = first.get("Connection", "")
        if conntype.lower() == "close":
            self.close_connection = True
        elif conntype.lower() == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = first.get("Expect", "")
        if (expect.lower() == "100-continue" and self.protocol_version >= "HTTP/1.1"
                and self.request_version >= "HTTP/1.1"):
            return self.handle_expect_100()
        return True

    def _read_head(self) -> Optional[Tuple[bytes, List[bytes]]]:
        """(request line, header lines), or None when the client stops before the end."""
        line = b""
        for _ in range(_MAX_BLANK_LINES + 1):
            line = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if line not in _LINE_ENDS:
                break
        if len(line) > MAX_REQUEST_LINE:
            raise _HeadRefused(414, "Request line too long")
        if not line.endswith(b"\n"):
            return None
        fields: List[bytes] = []
        size = len(line)
        while True:
            field = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(field) > MAX_HEADER_LINE:
                raise _HeadRefused(431, "Header line too long")
            if not field.endswith(b"\n"):
                return None
            size += len(field)
            if field in _LINE_ENDS:
                break
            if len(fields) >= MAX_HEADERS or size > MAX_HEAD_BYTES:
                raise _HeadRefused(431, "Too many or too large headers")
            if not _TOKEN_COLON.match(field):  # also obsolete line folding, which could hide a header
                raise _HeadRefused(400, "Malformed header line")
            fields.append(field)
        return line, fields

    def handle_expect_100(self) -> bool:
        """Refuse (413, 400, 501...) before ``100 Continue`` invites a body we would not take."""
        framing = self._framing()
        if isinstance(framing, Reply):
            self._answer_early(framing)
            return False
        return super().handle_expect_100()

    def _framing(self) -> Union[Reply, Tuple[str, int]]:
        """How the body is delimited, ("chunked", 0) or ("length", n), or the error answer.

        Ambiguous framing is refused as nginx does (RFC 9112 6.3): a server that picks one of two
        framings while a proxy picks the other lets a client smuggle a second request.
        """
        lengths: List[str] = []
        codings: List[str] = []
        for name, value in self._header_items():  # as Message.get_all would find them, in one pass
            key = name.lower()
            if key == "content-length":
                lengths.append(value)
            elif key == "transfer-encoding":
                codings.append(value)
        if codings:
            if lengths:
                return _close(400, "Content-Length and Transfer-Encoding together", "BAD_REQUEST")
            if self.request_version == "HTTP/1.0":
                return _close(400, "Transfer-Encoding in an HTTP/1.0 request", "BAD_REQUEST")
            if len(codings) != 1 or codings[0].strip().lower() != "chunked":
                return _close(501, "Only Transfer-Encoding: chunked is supported", "NOT_IMPLEMENTED")
            return "chunked", 0
        if len(lengths) > 1:
            return _close(400, "More than one Content-Length", "BAD_REQUEST")
        if not lengths:
            # No Content-Length and no Transfer-Encoding: the request has no body (RFC 9112 6.3), for a
            # POST too (``curl -X POST``'s heartbeat; IoTFlow's Flask and nginx take it). A 411 here
            # would refuse a request HTTP/1.1 defines as complete.
            return "length", 0
        text = lengths[0].strip()
        if not (text.isascii() and text.isdigit()):  # ASCII digits only, as nginx takes them
            return _close(400, "Invalid Content-Length", "BAD_REQUEST")
        digits = text.lstrip("0") or "0"
        if len(digits) > 18 or int(digits) > self.server.twin.max_body:  # int() of 5,000 digits raises
            return _close(413, "Payload too large", "PAYLOAD_TOO_LARGE")
        return "length", int(digits)

    def _read_body(self) -> Tuple[bytes, Optional[Reply]]:
        """The body by Content-Length or chunked, or an early answer when we must not read it."""
        framing = self._framing()
        if isinstance(framing, Reply):
            return b"", framing
        kind, size = framing
        if kind == "chunked":
            return self._read_chunked()
        body = self.rfile.read(size) if size else b""
        if len(body) < size:
            raise _ClientGone()
        return body, None

    def _read_chunked(self) -> Tuple[bytes, Optional[Reply]]:
        """A chunked body (RFC 9112 7.1): extensions ignored, trailers read and dropped, --max-body kept."""
        limit = self.server.twin.max_body
        body = bytearray()  # not a list of parts: a million 1-byte chunks would cost ~100 bytes each
        while True:
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                return b"", _close(400, "Chunk size line too long", "BAD_REQUEST")
            if not line.endswith(b"\n"):
                raise _ClientGone()
            size_text = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.match(size_text):
                return b"", _close(400, "Invalid chunk size", "BAD_REQUEST")
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > limit:
                return b"", _close(413, "Payload too large", "PAYLOAD_TOO_LARGE")
            data = self.rfile.read(size)
            if len(data) < size:
                raise _ClientGone()
            body += data
            end = self.rfile.readline(3)
            if end not in _LINE_ENDS:
                if len(end) < 3 and not end.endswith(b"\n"):
                    raise _ClientGone()
                return b"", _close(400, "Chunk data longer than its size", "BAD_REQUEST")
        for _ in range(MAX_HEADERS + 1):  # trailers: read and dropped
            trailer = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(trailer) > MAX_HEADER_LINE:
                return b"", _close(431, "Trailer line too long", "HEADERS_TOO_LARGE")
            if not trailer.endswith(b"\n"):
                raise _ClientGone()
            if trailer in _LINE_ENDS:
                return bytes(body), None
        return b"", _close(431, "Too many trailer lines", "HEADERS_TOO_LARGE")

    def _record(self, body: bytes) -> None:
        self.server.twin.requests.append(SeenRequest(self.command, self.path, self._header_dict(), body,
                                                     time.monotonic(), time.time(), self.client_address[1]))

    def _answer_early(self, reply: Reply) -> None:
        """Record the request (without a body), answer, and close without reading what follows."""
        self._record(b"")
        self._deliver(self._render(reply), None)
        self._lingering_close()

    def _header_items(self) -> List[Tuple[str, str]]:
        """The request's headers as (name, value) in order, as ``self.headers.items()`` gives them."""
        return self._fields if self._fields is not None else self.headers.items()

    def _header_dict(self) -> Dict[str, str]:
        if self._first is not None:
            return self._first.joined  # made in the same pass as _first
        headers: Dict[str, str] = {}
        for name, value in self._header_items():
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
                return server_error(self.path)
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
        headers = self._first if self._first is not None else _FirstValues(self._header_items())
        return dispatch(self.command, self.path, body=body, headers=headers, store=twin.store,
                        tlink_secret=twin.tlink_secret, log=twin.log, client_cert=self._verified_client_cert())

    def _verified_client_cert(self) -> bool:
        """A client certificate was presented and verified (only asked for with --client-ca).

        Asked once per connection: TLS 1.3 has no renegotiation, and the twin's context refuses it
        in TLS 1.2 (OP_NO_RENEGOTIATION), so the peer cannot change.
        """
        known = self._client_cert
        if known is None:
            getpeercert = getattr(self.connection, "getpeercert", None)
            try:
                known = bool(getpeercert()) if getpeercert is not None else False
            except (ValueError, OSError):  # not connected any more: no certificate to speak of
                return False
            self._client_cert = known
        return known

    def _render(self, reply: Reply) -> bytes:
        """The whole response as bytes (one write, and faults can spoil it afterwards).

        The same bytes send_response, send_header and end_headers would buffer, and the same side
        effects (the request is logged; a Connection header sets close_connection), built in one
        string: those calls cost a tenth of a request's CPU at the twin's ingest rate.
        """
        if reply.flask_json:
            body = (json.dumps(reply.body, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
        elif reply.rendered is not None:
            body = reply.rendered
        else:
            body = json.dumps(reply.body).encode("utf-8")
        code = reply.status
        self.log_request(code)
        message = self.responses[code][0] if code in self.responses else ""
        lines = ["%s %d %s\r\nServer: %s\r\nDate: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 % (self.protocol_version, code, message, self.version_string(), self.date_time_string(), len(body))]
        for name, value in reply.headers.items():
            lines.append("%s: %s\r\n" % (name, value))
            if name.lower() == "connection":  # as send_header does
                if value.lower() == "close":
                    self.close_connection = True
                elif value.lower() == "keep-alive":
                    self.close_connection = False
        if self.request_version == "HTTP/1.0" and not self.close_connection and "Connection" not in reply.headers:
            # an HTTP/1.0 client that asked for keep-alive reuses the connection only if told so
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        # an HTTP/0.9 client gets the body alone, as from http.server
        head = "".join(lines).encode("latin-1", "strict") if self.request_version != "HTTP/0.9" else b""
        return head + body if self.command != "HEAD" else head

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

    def date_time_string(self, timestamp: Optional[float] = None) -> str:
        """The Date header, off by the twin's clock_offset (a test aid for clients' clock checks)."""
        if timestamp is None:
            timestamp = time.time() + self.server.twin.clock_offset
        # One formatting per second, not per answer. Only well inside a second: formatdate rounds to
        # the microsecond, so its last microsecond may already print as the next one.
        second = int(timestamp)
        cached = _DATE_CACHE[0]
        if cached[0] == second and timestamp - second < 0.999:
            return cached[1]
        text = super().date_time_string(timestamp)
        if timestamp - second < 0.999:
            _DATE_CACHE[0] = (second, text)
        return text

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        """Quiet by default: lines go to the twin's log_stream, if it has one (else not even formatted)."""
        twin = self.server.twin
        if twin.log_stream is not None:
            twin.log("%s - %s" % (self.address_string(), format % args))

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """The base class's errors (bad request line, 414, 431, 501...) as JSON too."""
        short = self.responses.get(code, ("Error",))[0]
        self.close_connection = True
        try:
            self.wfile.write(self._render(Reply(code, {"error": message or short}, {"Connection": "close"})))
        except OSError:
            pass


def _split_fields(fields: List[bytes]) -> Optional[List[Tuple[str, str]]]:
    """Checked header lines as (name, value), exactly as email's compat32 parser makes them, or None
    when a line holds a bare CR (that parser splits lines there too: it is left to do so)."""
    items = []
    for field in fields:
        text = field.decode("iso-8859-1")  # as http.client decodes a head
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
        if "\r" in text:
            return None
        name, value = text.split(":", 1)
        items.append((name, value.lstrip(" \t")))
    return items


def _close(status: int, message: str, code: str) -> Reply:
    """An error answered just before the connection closes (the rest of the request is not read)."""
    return error_reply(status, message, code, Connection="close")


def target_reply(target: str) -> Optional[Reply]:
    """400 for a target that is not printable ASCII; 404 for a path hiding a slash, NUL or dot segment.

    The twin serves no files, so ``..`` reaches nothing today; refusing it (and ``%2f``, ``%00``)
    before routing keeps a later route from ever seeing a path id that is not one segment.
    """
    if _NOT_PRINTABLE.search(target):
        return _close(400, "Bad request target", "BAD_REQUEST")
    if target.startswith("/") and "%" not in target and "\\" not in target and "/." not in target:
        return None  # nothing to decode, no backslash, and every dot segment follows a slash: the usual target
    for segment in urlsplit(target).path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or _HIDDEN_IN_SEGMENT.search(decoded):
            return error_reply(404, "Not found", "NOT_FOUND")
    return None
