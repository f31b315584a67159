"""A small CONNECT proxy for tests: relays bytes, or answers 407/401/5xx, or intercepts TLS (MITM).

Usage: ``proxy = start_test_proxy(self, auth=("user", "p@ss")); run_cli(..., "--proxy", proxy.url)``

It listens on 127.0.0.1:<free port>, records every request head it reads (``proxy.requests``),
tunnels only to loopback, and is stopped by addCleanup (listener and every relayed socket closed,
threads joined), so nothing is left open after a test.
"""

from __future__ import annotations

import base64
import selectors
import socket
import socketserver
import ssl
import threading
import unittest
from typing import Dict, List, NamedTuple, Optional, Tuple

from tests.twin_support import CERTDATA

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class ProxyRequest(NamedTuple):
    method: str
    target: str  # the request target as sent: host:port for CONNECT
    headers: Dict[str, str]  # lower-case names


class TestProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *, auth: Optional[Tuple[str, str]] = None, status: Optional[int] = None,
                 refuse_status: int = 407, mitm: bool = False, echo_auth: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.auth = auth
        self.status = status  # answer every CONNECT with this status instead of tunnelling
        self.refuse_status = refuse_status  # what a missing/wrong Proxy-Authorization gets (407, or 401)
        self.mitm = mitm  # answer 200, then terminate TLS with a certificate from another CA
        self.echo_auth = echo_auth  # a careless proxy: quote the Proxy-Authorization it got in its refusal
        self.requests: List[ProxyRequest] = []
        self._open: List[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def where(self) -> str:
        return "127.0.0.1:%d" % self.port

    @property
    def connects(self) -> List[str]:
        return [r.target for r in self.requests if r.method == "CONNECT"]

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.append(sock)

    def start(self) -> "TestProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        with self._lock:
            for sock in self._open:
                _close(sock)
        self._thread.join(5)
        self.server_close()


class _Handler(socketserver.BaseRequestHandler):
    server: TestProxy

    def handle(self) -> None:
        client = self.request
        self.server.track(client)
        client.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target = (lines[0].split(" ") + ["", ""])[:2]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.server.requests.append(ProxyRequest(method, target, headers))
        if method != "CONNECT":
            return self.answer(405, "Method Not Allowed")
        if self.server.auth is not None:
            expected = "Basic " + base64.b64encode(("%s:%s" % self.server.auth).encode("utf-8")).decode("ascii")
            if headers.get("proxy-authorization") != expected or self.server.echo_auth:
                reason = "Proxy Authentication Required"
                if self.server.echo_auth:
                    reason = "Bad credentials %s" % headers.get("proxy-authorization", "")
                return self.answer(self.server.refuse_status, reason,
                                   "Proxy-Authenticate: Basic realm=\"test\"\r\n")
        if self.server.status is not None:
            return self.answer(self.server.status, "Refused By Test")
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        if host not in _LOOPBACK or not port.isdigit():
            return self.answer(403, "Forbidden")
        if self.server.mitm:
            return self.intercept()
        try:
            upstream = socket.create_connection((host, int(port)), 5)
        except OSError:
            return self.answer(502, "Bad Gateway")
        self.server.track(upstream)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _relay(client, upstream)

    def answer(self, status: int, reason: str, extra: str = "") -> None:
        self.request.sendall(("HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n"
                              % (status, reason, extra)).encode("ascii"))

    def intercept(self) -> None:
        """What a TLS-inspecting proxy does: say yes, then present a certificate of its own."""
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(CERTDATA / "other-localhost.pem"), str(CERTDATA / "other-localhost.key"))
        try:
            with ctx.wrap_socket(self.request, server_side=True) as tls:
                tls.recv(1024)
        except (OSError, ssl.SSLError):
            pass  # the client refuses the certificate: the point of the test


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes, then close both (as a proxy would)."""
    sel = selectors.DefaultSelector()
    try:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while True:
            for key, _ in sel.select(timeout=10):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)
    except (OSError, ValueError):
        return
    finally:
        sel.close()
        _close(a)
        _close(b)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def start_test_proxy(testcase: unittest.TestCase, **kwargs) -> TestProxy:
    """A CONNECT proxy on 127.0.0.1:<free port>, stopped at cleanup. See TestProxy for the options."""
    proxy = TestProxy(**kwargs).start()
    testcase.addCleanup(proxy.stop)
    return proxy


def closed_port(testcase) -> int:
    """A loopback port that refuses connections for the whole test.

    It stays bound but never listens (closed at cleanup), so no other process can take it and
    answer in the meantime, as a port merely freed could be.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    testcase.addCleanup(sock.close)
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]
