"""The twin: a local HTTPS server that speaks the TESAIoT and TLINK device-facing contracts.

Usage: ``with start_twin(certfile=cert, keyfile=key, devices={dev: key}) as twin: post to twin.url``

http.server's ThreadingHTTPServer (daemon threads) over the sqlite3 ``TelemetryStore``. TLS
handshakes happen in each connection's own thread, so a slow or hostile client never blocks the
accept loop; a failed handshake only increments ``tls_failures``. A slow client cannot hold a
thread for long either: the handshake, each request head and then its body must each be done
within ``head_timeout`` (one watchdog thread cuts the socket), every read within ``handler_timeout``,
and past ``max_connections`` open connections a new one is closed at once. What happens to each request is
``handler.TwinRequestHandler``'s business; which function answers it, ``routes``'. This module
owns the listening socket, the connections and the twin's life cycle (go_down, come_back, stop).
"""

from __future__ import annotations

import http.server
import selectors
import socket
import socketserver
import ssl
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any, Dict, Iterable, List, Optional, Set, Tuple, Union

from .api_request import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, media_type
from .faults import FaultPlan
from .handler import InjectedFault, TwinRequestHandler
from .replies import INVALID_API_KEY, PROCESSING_ERROR, Json, Reply
from .request_log import SeenRequest, SeenRequests
from .routes import ROUTES
from .store import TelemetryStore
from .tesaiot_api import MAX_IDEMPOTENCY_KEY, validate_telemetry

# Names that lived here before the twin was split into modules; importing them from here still works.
__all__ = [
    "DEFAULT_HISTORY_LIMIT", "INVALID_API_KEY", "InjectedFault", "Json", "MAX_HISTORY_LIMIT",
    "MAX_IDEMPOTENCY_KEY", "PROCESSING_ERROR", "PathLike", "ROUTES", "Reply", "SeenRequest",
    "SeenRequests", "TwinRequestHandler", "TwinServer", "build_server_context", "media_type",
    "read_bundle_device", "start_twin", "validate_telemetry",
]

PathLike = Union[str, Path]

DEFAULT_HEAD_TIMEOUT = 20.0  # seconds for a TLS handshake, and for each request head, in all
DEFAULT_MAX_CONNECTIONS = 512  # open connections (one thread each); more are closed at once


class _TwinHTTPServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that hands each accepted socket to its TwinServer (TLS and all)."""

    daemon_threads = True
    request_queue_size = 256  # a burst of connections waits in the kernel, not in SYN retries
    allow_reuse_address = True  # come_back() re-binds the same port at once

    def __init__(self, twin: "TwinServer", address: Tuple[str, int], family: int,
                 bound: Optional[socket.socket] = None) -> None:
        """``bound``: a socket already bound to ``address`` (the port go_down() kept) to listen on."""
        self.twin = twin
        self.address_family = family
        self._stop_requested = False
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            super().__init__(address, TwinRequestHandler, bind_and_activate=bound is None)
            if bound is not None:
                self.socket.close()
                bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.socket = bound
                self.server_address = bound.getsockname()
                self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]
                self.server_activate()
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

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection, or, past the twin's max_connections, an immediate close."""
        if not self.twin._admit(client_address):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.twin._release()
            raise

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
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        """``handler_timeout``: the longest wait for any one read (the idle timeout of a connection);
        ``head_timeout``: the most a TLS handshake, and then each request head and each body, may take in all."""
        self.store = store
        self.host = host
        self.port = port
        self.faults = faults
        self.tlink_secret = tlink_secret
        self.max_body = max_body
        self.handler_timeout = handler_timeout
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self.log_stream = log_stream
        self.requests = SeenRequests(limit=keep_requests)
        self.tls_failures = 0
        self.tls_failure_reasons: List[str] = []
        self.connections_accepted = 0  # TCP connections, to check that a sender keeps one alive
        self.connections_refused = 0  # closed at once: max_connections were open
        self.heads_cut = 0  # connections closed because a handshake, request head or body outran head_timeout
        self.open_connections = 0  # admitted and not yet finished (each holds one thread)
        self._deadlines: Dict[socket.socket, float] = {}
        self._watchdog: Optional[threading.Thread] = None
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
        self._kept_port: Optional[socket.socket] = None  # bound, not listening, while down

    def start(self) -> "TwinServer":
        """Bind (port 0: any free port) and serve in a background thread; returns once listening."""
        self._bind_and_serve(self.port)
        self._watchdog = threading.Thread(target=self._cut_late_heads, name="twin-watchdog-%d" % self.port,
                                          daemon=True)
        self._watchdog.start()
        return self

    def _family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def _bind_and_serve(self, port: int, bound: Optional[socket.socket] = None) -> None:
        httpd = _TwinHTTPServer(self, (self.host, port), self._family(), bound)
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
        """Close the listening socket and open connections: new connections are REFUSED.

        The port stays ours: a socket bound but not listening refuses connections, and no other
        process can take the port before come_back() listens on that same socket again.
        """
        self._take_down()
        if self._kept_port is None and not self._stopped:
            sock = socket.socket(self._family(), socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past our own TIME_WAITs
                sock.bind((self.host, self.port))
                # Off once bound: on Linux two SO_REUSEADDR sockets may share a port none listens on.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            except OSError:
                sock.close()  # taken in the instant between close and bind: come_back() binds anew
            else:
                self._kept_port = sock

    def come_back(self) -> None:
        """Listen again on the same port, with the same store, faults and request log."""
        if self._stopped:
            raise RuntimeError("a stopped twin cannot come back; start a new one")
        if self._httpd is None:
            kept, self._kept_port = self._kept_port, None
            self._bind_and_serve(self.port, kept)

    def stop(self) -> None:
        """Shut down, join, close the listening socket and connections, close an owned store. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._take_down()
        if self._kept_port is not None:
            self._kept_port.close()
            self._kept_port = None
        with self._idle:
            self._idle.wait_for(lambda: not self._connections, timeout=2.0)
        if self._watchdog is not None:
            self._watchdog.join()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> "TwinServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pause(self, seconds: float) -> bool:
        """Sleep for a fault, cut short by stop(); True if the twin is stopping."""
        return self._stopping.wait(seconds)

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

    def _track(self, sock: socket.socket, new: bool = False) -> None:
        """Remember an open connection (raw and TLS-wrapped alike), so go_down() can cut it."""
        with self._lock:
            self._connections.add(sock)
            if new:
                self.connections_accepted += 1

    def _untrack(self, *socks: socket.socket) -> None:
        with self._idle:
            for sock in socks:
                self._connections.discard(sock)
            self._idle.notify_all()

    def watch(self, sock: socket.socket, deadline: float) -> None:
        """Cut ``sock`` if it is still watched at ``deadline`` (time.monotonic()): a head or body taking too long."""
        with self._lock:
            self._deadlines[sock] = deadline

    def unwatch(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)

    def _cut_late_heads(self) -> None:
        """The watchdog: per-read timeouts alone let a client sending a byte a second stay forever."""
        interval = max(0.01, min(0.5, self.head_timeout / 4))
        while not self._stopping.wait(interval):
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, deadline in self._deadlines.items() if deadline <= now]
                for sock in late:
                    del self._deadlines[sock]
                self.heads_cut += len(late)
            for sock in late:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the handler's read returns EOF
                except OSError:
                    pass

    def _admit(self, address: Any) -> bool:
        """Count a new connection in, unless max_connections are open (then it is refused)."""
        with self._lock:
            if self.open_connections >= self.max_connections:
                self.connections_refused += 1
                refused = True
            else:
                self.open_connections += 1
                refused = False
        if refused:
            self.log("connection from %s closed: %d connections open (--max-connections)"
                     % (address[0], self.max_connections))
        return not refused

    def _release(self) -> None:
        with self._lock:
            self.open_connections -= 1

    def _cut_connections(self) -> None:
        """Shut down every open connection's socket, so its handler thread ends now, not at an idle timeout."""
        with self._lock:
            for sock in list(self._connections):
                try:
                    # The plain socket method: SSLSocket.shutdown would drop its TLS state under
                    # the thread still using it. The handler then sees EOF and ends quietly.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve_connection(self, httpd: _TwinHTTPServer, sock: socket.socket, address: Any) -> None:
        """Handshake and serve one accepted socket, in its own thread; tracked so go_down() can cut it."""
        self._track(sock, new=True)
        conn = sock
        try:
            if self._ssl_context is not None:
                sock.settimeout(self.handler_timeout)  # bounds each read of the handshake
                try:
                    conn = self._ssl_context.wrap_socket(sock, server_side=True,
                                                         do_handshake_on_connect=False)
                    self._track(conn)
                    self.watch(conn, time.monotonic() + self.head_timeout)  # ...and this the whole of it
                    conn.do_handshake()
                except (OSError, ValueError) as exc:
                    self._tls_failed(exc)
                    conn.close()
                    return
                finally:
                    self.unwatch(conn)
            try:
                TwinRequestHandler(conn, address, httpd)
            except OSError:
                pass  # resets, timeouts, TLS errors mid-stream: the client's problem, quietly
        finally:
            self._release()
            self._untrack(sock, conn)
            if conn is not sock:
                httpd.shutdown_request(conn)

    def _tls_failed(self, exc: BaseException) -> None:
        """Count a failed handshake; not while stopping, when cut connections fail by our own doing."""
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


def build_server_context(certfile: PathLike, keyfile: Optional[PathLike] = None,
                         client_ca: Optional[PathLike] = None) -> ssl.SSLContext:
    """The twin's TLS: TLS 1.2 minimum, our certificate chain; with ``client_ca``, mTLS as TESAIoT's
    mTLS port does it: a client certificate signed by that CA is required (none, expired or another
    issuer fails the handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
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
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    client_ca: Optional[PathLike] = None,
) -> TwinServer:
    """Start a twin in a background thread and return it once it is listening.

    ``bundles`` (credential folders) and ``devices`` ({device_id: api_key}) are registered.
    ``keep_requests`` bounds ``twin.requests`` to the newest N (None: keep all, for tests).
    ``client_ca`` (PEM): require a client certificate signed by it (mTLS).
    A ``store`` passed in stays open after stop(); one made from ``db_path`` is closed by it.
    """
    context = None
    if tls:
        if certfile is None:
            raise ValueError("tls=True needs certfile (and keyfile unless the key is inside it)")
        context = build_server_context(certfile, keyfile, client_ca)
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
                          log_stream=log_stream, keep_requests=keep_requests,
                          head_timeout=head_timeout, max_connections=max_connections)
        return twin.start()
    except BaseException:
        if owns_store:
            the_store.close()
        raise
