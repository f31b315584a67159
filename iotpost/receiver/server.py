"""The twin: a local HTTPS server that speaks the TESAIoT and TLINK device-facing contracts.

Usage: ``with start_twin(certfile=cert, keyfile=key, devices={dev: key}) as twin: post to twin.url``

http.server's ThreadingHTTPServer (daemon threads) over the sqlite3 ``TelemetryStore``. TLS
handshakes happen in each connection's own thread, so a slow or hostile client never blocks the
accept loop; a failed handshake only increments ``tls_failures``. A slow client cannot hold a
thread for long either: the handshake, each request head and then its body must each be done
within ``head_timeout`` (one watchdog thread cuts the socket), every read within ``handler_timeout``,
and past ``max_connections`` open connections a new one is closed at once. What happens to each request is
``handler.TwinRequestHandler``'s business; which function answers it, ``routes``'. This module
owns the listening sockets, the connections and the twin's life cycle (go_down, come_back, stop).

By default the twin listens on both loopback addresses, 127.0.0.1 and ::1, on one port: its URL says
``localhost``, and Windows tries ::1 first, where a refused connection costs about two seconds. Two
sockets, not one dual-stack socket on ``::``, which would listen beyond loopback. Binding is
exclusive on Windows (SO_EXCLUSIVEADDRUSE, as asyncio does): SO_REUSEADDR there would let a second
twin share a busy port.
"""

from __future__ import annotations

import errno
import http.server
import os
import selectors
import socket
import ssl
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from .api_request import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, media_type
from .faults import FaultPlan
from .handler import InjectedFault, TwinRequestHandler
from .iotflow import RateLimits, set_rate_limits
from .replies import INVALID_API_KEY, PROCESSING_ERROR, Json, Reply
from .request_log import SeenRequest, SeenRequests
from .routes import ROUTES
from .store import TelemetryStore
from .tesaiot_api import MAX_IDEMPOTENCY_KEY, validate_telemetry

# Names that lived here before the twin was split into modules; importing them from here still works.
__all__ = [
    "DEFAULT_HISTORY_LIMIT", "INVALID_API_KEY", "InjectedFault", "Json", "ListenError", "MAX_HISTORY_LIMIT",
    "MAX_IDEMPOTENCY_KEY", "PROCESSING_ERROR", "PathLike", "ROUTES", "Reply", "SeenRequest",
    "SeenRequests", "TwinRequestHandler", "TwinServer", "build_server_context", "media_type",
    "read_bundle_device", "start_twin", "validate_telemetry",
]

PathLike = Union[str, Path]

DEFAULT_HEAD_TIMEOUT = 20.0  # seconds for a TLS handshake, and for each request head, in all
DEFAULT_MAX_CONNECTIONS = 512  # open connections (one thread each); more are closed at once
LOOPBACK_HOSTS = ("127.0.0.1", "::1")  # what host=None listens on: `localhost` either way, one port
PORT_ATTEMPTS = 5  # port 0: tries for a port free on both loopback addresses
# Winsock's value (~SO_REUSEADDR, i.e. -5); the placeholder elsewhere only lets a test record the choice.
SO_EXCLUSIVEADDRUSE = getattr(socket, "SO_EXCLUSIVEADDRUSE", ~socket.SO_REUSEADDR)
_NO_IPV6 = {getattr(errno, name) for name in ("EADDRNOTAVAIL", "EAFNOSUPPORT", "EPROTONOSUPPORT")
            if hasattr(errno, name)}


class ListenError(OSError):
    """An address the twin cannot listen on; ``host`` says which (the default listens on two)."""

    def __init__(self, host: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.host = host


def set_bind_options(sock: Any, os_name: Optional[str] = None) -> None:
    """Before bind: exclusive on Windows, reusable past our own TIME_WAITs on POSIX.

    On Windows SO_REUSEADDR lets a second socket bind a port in use, so a busy port would go
    unnoticed; SO_EXCLUSIVEADDRUSE makes that bind fail (and Windows binds past TIME_WAIT without it).
    """
    if (os.name if os_name is None else os_name) == "nt":
        sock.setsockopt(socket.SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _TwinHTTPServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that hands each accepted socket to its TwinServer (TLS and all)."""

    daemon_threads = True
    request_queue_size = 256  # a burst of connections waits in the kernel, not in SYN retries
    # Not socketserver's SO_REUSEADDR: server_bind() uses set_bind_options (exclusive on Windows).
    allow_reuse_address = False

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
                if os.name != "nt":  # no SO_REUSEADDR on Windows: it would let a second twin share the port
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
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can take seconds; and
        # TCPServer's sets SO_REUSEADDR, which on Windows lets a second twin share a busy port.
        set_bind_options(self.socket)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
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
        host: Optional[str],
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
        ``head_timeout``: the most a TLS handshake, and then each request head and each body, may take in all;
        ``host``: the one address to listen on, or None for both loopback addresses (LOOPBACK_HOSTS)."""
        self.store = store
        self.host = host
        self.port = port
        self.faults = faults
        self.tlink_secret = tlink_secret
        self.max_body = max_body
        self.handler_timeout = handler_timeout
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self.clock_offset = 0.0  # seconds added to the Date header (a test aid: a skewed server clock)
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
        self.addresses: Tuple[str, ...] = ()  # listened on (host=None: ::1 is left out where it cannot be bound)
        self._listeners: List[Tuple[_TwinHTTPServer, threading.Thread]] = []
        self._kept_ports: Dict[str, socket.socket] = {}  # bound, not listening, while down

    def start(self) -> "TwinServer":
        """Bind (port 0: any free port) and serve in a background thread; returns once listening."""
        self._bind_and_serve(self.port)
        self._watchdog = threading.Thread(target=self._cut_late_heads, name="twin-watchdog-%d" % self.port,
                                          daemon=True)
        self._watchdog.start()
        return self

    def _hosts(self) -> Sequence[str]:
        return LOOPBACK_HOSTS if self.host is None else (self.host,)

    def _skips(self, host: str, exc: OSError) -> bool:
        """::1 of the default pair, on a machine without IPv6: listen on 127.0.0.1 alone, with a note."""
        if self.host is not None or host != "::1" or (socket.has_ipv6 and exc.errno not in _NO_IPV6):
            return False
        self.log("not listening on ::1 (%s): IPv6 is off here; 127.0.0.1 only" % (exc.strerror or exc))
        return True

    def _listen_all(self, port: int, kept: Dict[str, socket.socket]) -> List[_TwinHTTPServer]:
        """A server per address, all on one port (port 0: one free on each, chosen anew if ::1 has it taken)."""
        for attempt in range(PORT_ATTEMPTS):
            servers: List[_TwinHTTPServer] = []
            try:
                for host in self._hosts():
                    at = servers[0].server_address[1] if servers else port
                    try:
                        servers.append(_TwinHTTPServer(self, (host, at), _family(host), kept.pop(host, None)))
                    except OSError as exc:
                        if not self._skips(host, exc):
                            raise ListenError(host, exc) from exc
                return servers
            except ListenError as exc:
                for httpd in servers:
                    httpd.server_close()
                if port != 0 or not servers or exc.errno != errno.EADDRINUSE or attempt + 1 == PORT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _bind_and_serve(self, port: int, kept: Optional[Dict[str, socket.socket]] = None) -> None:
        """Listen (``kept``: sockets go_down() held bound, by host) and serve each socket in its own thread."""
        servers = self._listen_all(port, dict(kept or {}))
        self.port = servers[0].server_address[1]
        self.addresses = tuple(str(httpd.server_address[0]) for httpd in servers)
        for httpd in servers:
            ready = threading.Event()
            thread = threading.Thread(target=httpd.serve, args=(ready,), daemon=True,
                                      name="twin-%d-%s" % (self.port, httpd.server_address[0]))
            self._listeners.append((httpd, thread))
            thread.start()
            ready.wait(5.0)

    def _take_down(self) -> None:
        listeners, self._listeners = self._listeners, []
        for httpd, thread in listeners:
            httpd.stop_serving()
            thread.join()
            httpd.server_close()
        self._cut_connections()

    @property
    def is_up(self) -> bool:
        """Listening right now (False after go_down() or stop())."""
        return bool(self._listeners)

    def go_down(self) -> None:
        """Close the listening sockets and open connections: new connections are REFUSED.

        The port stays ours, on every address listened on: a socket bound but not listening refuses
        connections, and no other process can take the port before come_back() listens on that same
        socket again.
        """
        self._take_down()
        if not self._kept_ports and not self._stopped:
            for host in self.addresses:
                sock = _keep_port(host, self.port)
                if sock is not None:
                    self._kept_ports[host] = sock

    def come_back(self) -> None:
        """Listen again on the same port, with the same store, faults and request log."""
        if self._stopped:
            raise RuntimeError("a stopped twin cannot come back; start a new one")
        if not self._listeners:
            kept, self._kept_ports = self._kept_ports, {}
            self._bind_and_serve(self.port, kept)

    def stop(self) -> None:
        """Shut down, join, close the listening socket and connections, close an owned store. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._take_down()
        kept, self._kept_ports = self._kept_ports, {}
        for sock in kept.values():
            sock.close()
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
        host = self.host or "localhost"
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


def _keep_port(host: str, port: int) -> Optional[socket.socket]:
    """A socket bound to (host, port) and not listening, or None if the port was taken meanwhile."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past our own TIME_WAITs
        # On Windows no option: an exclusive bind fails while the connections go_down() just cut sit
        # in TIME_WAIT, and a plainly bound socket already keeps a second twin's exclusive bind out.
        sock.bind((host, port))
        if os.name != "nt":
            # Off once bound: on Linux two SO_REUSEADDR sockets may share a port none listens on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    except OSError:
        sock.close()  # taken in the instant between close and bind: come_back() binds anew
        return None
    return sock


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
    # No TLS 1.2 renegotiation: a connection's peer (and its client certificate) is the one of its handshake.
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
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
    host: Optional[str] = None,
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
    iotflow_limits: Optional[RateLimits] = None,
    clock_offset: float = 0.0,
) -> TwinServer:
    """Start a twin in a background thread and return it once it is listening.

    ``bundles`` (credential folders) and ``devices`` ({device_id: api_key}) are registered.
    ``keep_requests`` bounds ``twin.requests`` to the newest N (None: keep all, for tests).
    ``client_ca`` (PEM): require a client certificate signed by it (mTLS).
    ``iotflow_limits``: IoTFlow's rate limits (default: the real server's with Redis; iotflow.NO_LIMITS: none).
    A ``store`` passed in stays open after stop(); one made from ``db_path`` is closed by it.
    ``host`` None listens on 127.0.0.1 and ::1 (::1 skipped where IPv6 is off); a host given, on it alone.
    ``clock_offset``: seconds added to every answer's ``Date`` header, so a client's clock check can be
    tested against a server whose clock is off (a test aid; nothing else changes).
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
        if iotflow_limits is not None:
            set_rate_limits(the_store, iotflow_limits)
        twin = TwinServer(store=the_store, owns_store=owns_store, host=host, port=port,
                          ssl_context=context, faults=faults, tlink_secret=tlink_secret,
                          max_body=max_body, handler_timeout=handler_timeout,
                          log_stream=log_stream, keep_requests=keep_requests,
                          head_timeout=head_timeout, max_connections=max_connections)
        twin.clock_offset = clock_offset
        return twin.start()
    except BaseException:
        if owns_store:
            the_store.close()
        raise
