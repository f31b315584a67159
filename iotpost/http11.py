"""A small HTTP/1.1 client connection: what the senders need of http.client, without its start-up cost.

Usage::

    conn = Connection(open_socket, "platform.example", 443, ssl_context)   # open_socket() -> a TCP socket
    conn.connect()                                                       # TCP, then TLS (verified by the context)
    conn.send_request("POST", "/api/v1/telemetry", [("Content-Type", "application/json")], body)
    answer = conn.read_response(limit=1 << 20)                           # status, reason, headers, body

Why not http.client: importing it loads the ``email`` package to parse headers, about 39 M
instructions of a one-off send's ~220 M (bench/bench_coldsend.py), paid on every cron start of a
Raspberry Pi. A client sends one kind of request and reads one answer at a time, so this reads
exactly what RFC 9112 asks of one: a status line, header fields (latin-1, at most 100 of 64 KiB),
1xx answers skipped, and a body framed by ``Transfer-Encoding: chunked``, ``Content-Length`` or the
connection's close; none for HEAD, 1xx, 204 and 304. Anything else is ``MalformedResponse``.
"""

from __future__ import annotations

import socket
import ssl

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

MAX_LINE = 65536  # as http.client: longer status or header lines are refused
MAX_HEADERS = 100


class MalformedResponse(Exception):
    """The server's answer is not HTTP/1.x as RFC 9112 frames it."""


class RemoteDisconnected(ConnectionResetError):
    """The server closed the connection before any answer: on a kept-alive connection, it closed it while idle."""


class Answer:
    """One response: status, reason, headers (lower-case names, the last of a repeated one), body."""

    __slots__ = ("status", "reason", "headers", "header_list", "body", "will_close", "truncated")

    def __init__(self, status: int, reason: str, header_list: List[Tuple[str, str]], body: bytes,
                 will_close: bool, truncated: bool) -> None:
        self.status = status
        self.reason = reason
        self.header_list = header_list
        self.headers: Dict[str, str] = {name.lower(): value for name, value in header_list}
        self.body = body
        self.will_close = will_close  # the server closes (or we must, to stay in step) after this answer
        self.truncated = truncated  # the body was longer than the limit: the rest was not read


def host_header(host: str, port: int, tls: bool) -> str:
    """``Host`` as http.client writes it: IPv6 in brackets, the default port left out."""
    shown = "[%s]" % host if ":" in host and not host.startswith("[") else host
    return shown if port == (443 if tls else 80) else "%s:%d" % (shown, port)


class Connection:
    """One TCP (and TLS) connection to one server; requests go one after another on it."""

    def __init__(self, open_socket: Callable[[], socket.socket], host: str, port: int,
                 ssl_context: Optional[ssl.SSLContext]) -> None:
        self._open_socket = open_socket
        self.host = host
        self.port = port
        self._ctx = ssl_context
        self.sock: Optional[socket.socket] = None
        self._reader = None

    def connect(self) -> None:
        """TCP (through whatever open_socket does: a proxy tunnel too), then TLS with the host's name."""
        raw = self._open_socket()
        if self._ctx is None:
            self.sock = raw
        else:
            try:
                self.sock = self._ctx.wrap_socket(raw, server_hostname=self.host)
            except BaseException:
                raw.close()
                raise
        self._reader = self.sock.makefile("rb")

    def close(self) -> None:
        reader, sock = self._reader, self.sock
        self._reader = self.sock = None
        for thing in (reader, sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass

    def send_request(self, method: str, path: str, headers: List[Tuple[str, str]], body: bytes) -> None:
        """Write the request line, Host, the headers given and the body in one go."""
        for text in [method, path] + [part for pair in headers for part in pair]:
            if any(ch in text for ch in "\r\n\0"):
                raise ValueError("a request line or header must not hold CR, LF or NUL")
        if self.sock is None:
            self.connect()
        lines = ["%s %s HTTP/1.1" % (method, path),
                 "Host: %s" % host_header(self.host, self.port, self._ctx is not None)]
        lines += ["%s: %s" % (name, value) for name, value in headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.sock.sendall(body)

    def read_response(self, limit: int, method: str = "POST") -> Answer:
        """Read one answer (skipping 1xx), its body up to ``limit`` bytes."""
        while True:
            version, status, reason = self._status_line()
            header_list = self._header_fields()
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue and friends: the real answer follows
            break
        headers = {name.lower(): value for name, value in header_list}
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        will_close = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return Answer(status, reason, header_list, b"", will_close, False)
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.replace(" ", "").lower().split(",")[-1] != "chunked":
                return self._until_close(status, reason, header_list, limit)
            body, truncated = self._chunked(limit)
            return Answer(status, reason, header_list, body, will_close or truncated, truncated)
        length_text = headers.get("content-length")
        if length_text is not None:
            values = {v.strip() for v in length_text.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise MalformedResponse("Content-Length %r" % length_text)
            length = int(next(iter(values)))
            body = self._exactly(min(length, limit))
            return Answer(status, reason, header_list, body, will_close or length > limit, length > limit)
        return self._until_close(status, reason, header_list, limit)

    # -- reading ---------------------------------------------------------------------------------

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise MalformedResponse("a line longer than %d bytes" % MAX_LINE)
        return line

    def _status_line(self) -> Tuple[str, int, str]:
        line = self._line()
        if not line:
            raise RemoteDisconnected("the server closed the connection without an answer")
        text = line.decode("latin-1").rstrip("\r\n")
        parts = text.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
            raise MalformedResponse("status line %r" % text[:80])
        return parts[0], int(parts[1]), parts[2].strip() if len(parts) > 2 else ""

    def _header_fields(self) -> List[Tuple[str, str]]:
        fields: List[Tuple[str, str]] = []
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return fields  # (EOF in the head: what came is what there is, as http.client takes it)
            if len(fields) >= MAX_HEADERS:
                raise MalformedResponse("more than %d header fields" % MAX_HEADERS)
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and fields:  # obsolete folding: part of the previous value
                name, value = fields[-1]
                fields[-1] = (name, value + " " + text.strip())
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                raise MalformedResponse("header line %r" % text[:80])
            fields.append((name, value.strip()))

    def _exactly(self, count: int) -> bytes:
        data = self._reader.read(count) if count else b""
        if len(data) < count:
            raise MalformedResponse("the body ended after %d of %d bytes" % (len(data), count))
        return data

    def _until_close(self, status: int, reason: str, header_list: List[Tuple[str, str]], limit: int) -> Answer:
        body = self._reader.read(limit)
        truncated = len(body) == limit and bool(self._reader.peek(1)[:1]) if limit else False
        return Answer(status, reason, header_list, body, True, truncated)

    def _chunked(self, limit: int) -> Tuple[bytes, bool]:
        parts: List[bytes] = []
        size_so_far = 0
        while True:
            line = self._line()
            if not line:
                raise MalformedResponse("the chunked body ended without its last chunk")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise MalformedResponse("chunk size %r" % size_text[:20]) from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields: dropped
                return b"".join(parts), False
            if size_so_far + size > limit:
                parts.append(self._exactly(limit - size_so_far))
                return b"".join(parts), True
            parts.append(self._exactly(size))
            size_so_far += size
            if self._line() not in (b"\r\n", b"\n"):
                raise MalformedResponse("a chunk did not end with CRLF")
