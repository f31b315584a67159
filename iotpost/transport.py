"""HTTP(S) over one reused connection, with every network failure turned into an IotPostError.

Usage::

    transport = Transport(target, build_ssl_context(ca), timeout=10)
    response = transport.send("POST", target.path, headers, body)

One connection serves the whole run (a TLS handshake on a Raspberry Pi costs more than the
request). A kept-alive connection the server already closed is reopened and the request sent once
more without counting as a retry. TLS failures while connecting are configuration errors (78);
anything that breaks after the handshake may work next time (75). With a proxy configured
(--proxy, HTTPS_PROXY), each connection is a CONNECT tunnel (iotpost.proxy) and TLS still runs end
to end with the platform.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Mapping

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable, Dict, List, Optional, Tuple, Union

from .errors import ConfigError, IotPostError, TransientError
from .target import Target
from .tlsctx import client_certificate_error, client_certificate_refused, explain_tls_failure
from .records import Record

MAX_RESPONSE_BYTES = 1 << 20
# What a kept-alive connection the server already closed looks like when we use it again.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError)
# ... and what a server that refused our client certificate may look like when its alert was lost:
# an unclean EOF while writing our request, or a reset (RemoteDisconnected is a ConnectionResetError).
_DROPPED = _STALE + (ssl.SSLZeroReturnError,)
_PROBE_SECONDS = 2.0


# nginx's 400 pages for client certificates (ngx_http_special_response.c), lower case -> as nginx says it.
_NGINX_CLIENT_CERT_PAGES = {"no required ssl certificate was sent": "No required SSL certificate was sent",
                            "the ssl certificate error": "The SSL certificate error"}

# curl's variables for an https:// URL, lower case first; iotpost.proxy reads them, this only asks.
PROXY_ENV = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def proxy_configured(flag: Optional[str], environ: Mapping[str, str]) -> bool:
    """True when --proxy or a proxy variable names a proxy: only then is iotpost.proxy imported."""
    if flag is not None:
        return bool(flag.strip())  # --proxy "" means direct, whatever the environment says (as curl)
    return any(environ.get(name, "").strip() for name in PROXY_ENV)


def proxy_secrets(flag: Optional[str], environ: Mapping[str, str]) -> List[str]:
    """The password of the configured proxy in every form output could show, for the Redactor."""
    if not proxy_configured(flag, environ):
        return []
    from .proxy import proxy_secrets as secrets_in

    found: List[str] = []
    for text in [flag] + [environ.get(name) for name in PROXY_ENV]:
        found += secrets_in(text)
    return found


class Response(Record):
    status: int
    reason: str
    headers: Mapping[str, str]  # lower-case names (a dict, or AnswerHeaders)
    body: bytes
    latency: float  # seconds from sending the request to the end of the body


class AnswerHeaders(Mapping):
    """An answer's headers by lower-case name, read from http.client's message only when asked.

    A burst's 2xx answers are never asked (only --verbose, a retry's Retry-After, a redirect's
    Location and the doctor's Date are), so they skip building the mapping per payload.
    """

    __slots__ = ("_message", "_by_name")

    def __init__(self, message) -> None:
        self._message = message  # http.client.HTTPMessage
        self._by_name: Optional[Dict[str, str]] = None

    def _lower(self) -> Dict[str, str]:
        if self._by_name is None:
            self._by_name = {k.lower(): v for k, v in self._message.items()}
        return self._by_name

    def __getitem__(self, name: str) -> str:
        return self._lower()[name]

    def __iter__(self):
        return iter(self._lower())

    def __len__(self) -> int:
        return len(self._lower())

    def __repr__(self) -> str:
        return repr(self._lower())


def classify_network_error(exc: BaseException, target: Target, timeout: float) -> IotPostError:
    """Map a socket/http.client exception to the error a user can act on."""
    import http.client

    where = "%s:%d" % (target.host, target.port)
    if isinstance(exc, IotPostError):
        return exc
    if isinstance(exc, http.client.InvalidURL):
        return ConfigError("URL %s is not usable (%s)" % (target.url, exc), hint="check %s" % target.names.url)
    if isinstance(exc, socket.timeout) or isinstance(exc, TimeoutError):
        return TransientError("no answer from %s within %gs, while sending" % (where, timeout),
                              hint="the network or the platform is slow; raise --timeout or retry later")
    if isinstance(exc, ConnectionRefusedError):
        return TransientError("connection refused by %s, while connecting" % where,
                              hint="is the server running? check the host and port in the URL")
    if isinstance(exc, socket.gaierror):
        return _dns_failure(exc, target)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                        http.client.RemoteDisconnected)):
        return TransientError("connection to %s was closed before an answer arrived" % where,
                              hint="the link or the server dropped the connection; it is retried")
    if isinstance(exc, http.client.HTTPException):
        return TransientError("malformed HTTP response from %s (%s)" % (where, exc.__class__.__name__),
                              hint="a proxy or the server is misbehaving; retry later")
    if isinstance(exc, ssl.SSLError):
        return TransientError("TLS connection to %s broke (%s)" % (where, getattr(exc, "reason", None) or exc),
                              hint="the link dropped mid-request; it is retried")
    if isinstance(exc, OSError):
        return TransientError("network error talking to %s (%s)" % (where, exc.strerror or exc),
                              hint="check this machine's network connection")
    raise exc  # not a network failure: a bug, let it surface


def _dns_failure(exc: socket.gaierror, target: Target) -> IotPostError:
    """A name the resolver cannot resolve may be misspelled ("locahost"): the message says so, because the
    run's final "not delivered; last error: ..." line carries the message, not this hint. It stays
    temporary (75, retried): a resolver that is down for a minute answers the same way."""
    no_such_name = exc.errno in {getattr(socket, n, None) for n in ("EAI_NONAME", "EAI_NODATA")} - {None}
    if no_such_name:
        what = "cannot resolve the host name %r (%s: is it spelled right?)" % (target.host, exc.strerror or exc)
    else:
        what = "cannot resolve the host name %r (%s)" % (target.host, exc.strerror or exc)
    return TransientError("%s, while connecting" % what,
                          hint="check the host name in %s, and this machine's network and DNS; a DNS failure "
                          "may be temporary, so it was retried" % target.names.url)


class _OneWrite:
    """The connection's socket, with a request's writes held until its answer is read.

    http.client writes a request's head and its body separately: two TLS records (and two packets)
    per payload. Held here, they leave in one ``sendall`` when http.client opens the response; a
    burst of small payloads pays one record each. Everything else is the socket's own.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.wrapped = sock
        self._held: List[bytes] = []

    def sendall(self, data) -> None:
        self._held.append(bytes(data))

    def makefile(self, *args, **kwargs):
        self.flush()
        return self.wrapped.makefile(*args, **kwargs)

    def flush(self) -> None:
        if self._held:
            data, self._held = b"".join(self._held), []
            self.wrapped.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)


class Transport:
    """Sends requests to one target over a reused HTTP/1.1 connection."""

    def __init__(
        self,
        target: Target,
        ssl_context: Optional[ssl.SSLContext],
        timeout: float,
        cafile: Optional[Union[str, Path]] = None,
        clock: Callable[[], float] = time.perf_counter,
        proxy: Optional[str] = None,
        noproxy: Optional[str] = None,
        environ: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.target = target
        self._ctx = ssl_context
        self._timeout = timeout
        self._cafile = cafile
        self._clock = clock
        self._conn = None  # type: ignore[var-annotated]
        self._tls_version: Optional[str] = None  # of the newest connection
        self._lines: Dict[Tuple[str, str], bytes] = {}  # (name, value) -> its checked header line
        self._stale: tuple = _STALE  # + http.client.RemoteDisconnected once a connection is opened
        self._host: Optional[bytes] = None  # the Host line putrequest writes (b"": none learnt)
        self._requests = 0
        self.proxy = None  # an iotpost.proxy.Proxy when connections go through a CONNECT tunnel
        env = os.environ if environ is None else environ
        # Plain http:// reaches this machine only (--allow-http): a proxy's "localhost" is not ours,
        # and the key must not cross a network in clear text, so such URLs never use a proxy.
        if target.scheme == "https" and proxy_configured(proxy, env):
            from .proxy import choose_proxy  # only now: a direct send never loads proxy support

            self.proxy = choose_proxy(target.host, proxy, noproxy, env)

    def _connect_raw(self) -> socket.socket:
        """A TCP socket connected to the target: directly, or through the CONNECT tunnel, with no TLS yet."""
        t = self.target
        if self.proxy is None:
            return socket.create_connection((t.host, t.port), self._timeout)
        from .profiles import USER_AGENT
        from .proxy import open_tunnel

        return open_tunnel(self.proxy, t.host, t.port, self._timeout, USER_AGENT)

    def _open(self):
        import http.client

        # What a stale kept-alive connection raises, http.client's own included: set here, before the
        # first exchange can raise it, so a send does not import http.client again each time.
        self._stale = _STALE + (http.client.RemoteDisconnected,)
        t = self.target
        try:
            if t.scheme == "https":
                conn = http.client.HTTPSConnection(t.host, t.port, timeout=self._timeout, context=self._ctx)
            else:
                conn = http.client.HTTPConnection(t.host, t.port, timeout=self._timeout)
        except http.client.InvalidURL as exc:
            raise classify_network_error(exc, t, self._timeout) from None
        from .answer_head import AnswerResponse

        conn.response_class = AnswerResponse  # http.client's, with plain header lines split without email's parser
        # http.client makes its socket through this hook and wraps TLS (server_hostname = the
        # platform's host) on top of what it returns, so even a reconnect it makes on its own
        # goes through _connect_raw and the tunnel.
        conn._create_connection = lambda address, timeout=None, source_address=None: self._connect_raw()
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            raise self._tls_failure(exc) from None
        except Exception as exc:
            conn.close()
            raise classify_network_error(exc, t, self._timeout) from None
        try:
            self._after_handshake(conn.sock)
        except IotPostError:
            conn.close()
            raise
        conn.sock = _OneWrite(conn.sock)
        return conn

    def _where(self) -> str:
        t = self.target
        return "%s:%d" % ("[%s]" % t.host if ":" in t.host else t.host, t.port)

    def _after_handshake(self, sock: socket.socket) -> None:
        """Check --pin-sha256 and report the server key's pin, before a single request byte is written.

        Runs after the normal verification (chain and name), as curl's --pinnedpubkey does.
        """
        if not isinstance(sock, ssl.SSLSocket):
            return
        self._tls_version = sock.version()
        pins = getattr(self._ctx, "pins", ())
        on_connect = getattr(self._ctx, "on_connect", None)
        if not (pins or on_connect):
            return
        from .tlsctx import check_pin

        pin = check_pin(sock.getpeercert(binary_form=True), pins, self._where())
        if on_connect is not None:
            on_connect(pin, sock.version() or "TLS", (sock.getpeercert() or {}).get("notAfter"))

    def _classify(self, exc: BaseException, fresh: bool = False) -> IotPostError:
        """A failure after the handshake: a TLS 1.3 server's alert about our client certificate (78)
        arrives on the first read; anything else is classify_network_error's.

        The alert can be lost: when our request reaches a server that has already refused us, its
        close becomes a reset that may discard the alert, and we see only an EOF or a reset. So a
        fresh TLS 1.3 connection dropped before any answer is asked once more, sending nothing.
        """
        client_cert = getattr(self._ctx, "client_cert", None)
        refused = client_certificate_refused(exc, self._where(), client_cert)
        if refused is None and fresh and self._tls_version == "TLSv1.3" and isinstance(exc, _DROPPED):
            refused = self._probe_client_certificate()
        return refused or classify_network_error(exc, self.target, self._timeout)

    def _probe_client_certificate(self) -> Optional[IotPostError]:
        """Handshake again, send nothing, and wait for the server's verdict on our client certificate.

        A TLS 1.3 server that refuses it sends its alert right after the handshake; one that accepts
        it sends session tickets then, which ends the wait at once (servers without tickets: at
        the probe's time limit). Either way nothing is learnt from a server that accepted us.
        """
        import http.client

        if self._ctx is None:
            return None
        try:
            raw = self._connect_raw()
        except (OSError, IotPostError, http.client.HTTPException):
            return None
        deadline = time.monotonic() + min(self._timeout, _PROBE_SECONDS)
        try:
            with self._ctx.wrap_socket(raw, server_hostname=self.target.host) as probe:
                probe.settimeout(0.02)
                while time.monotonic() < deadline:
                    session = probe.session
                    if session is not None and session.has_ticket:
                        return None  # accepted: the server resumed normal service
                    try:
                        if not probe.recv(1):
                            return None
                    except socket.timeout:
                        continue
        except ssl.SSLError as exc:
            return client_certificate_refused(exc, self._where(), getattr(self._ctx, "client_cert", None))
        except OSError:
            return None
        finally:
            raw.close()
        return None

    def _tls_failure(self, exc: ssl.SSLError) -> IotPostError:
        """Explain a failed handshake; for a name mismatch, learn which names the certificate holds.

        That takes a second handshake, chain still verified but the name not checked; it ends as
        soon as the certificate is read: nothing is ever sent on it.
        """
        t = self.target
        cert_names = None
        mismatch = getattr(exc, "verify_code", None) in (62, 63, 64) or "mismatch" in str(exc).lower()
        if isinstance(exc, ssl.SSLCertVerificationError) and mismatch and self._cafile is not None:
            try:
                from .tlsctx import build_ssl_context, certificate_names

                ctx = build_ssl_context(self._cafile)
                ctx.check_hostname = False
                raw = self._connect_raw()
                try:
                    with ctx.wrap_socket(raw, server_hostname=t.host) as probe:
                        cert_names = certificate_names(probe.getpeercert() or {})
                finally:
                    raw.close()  # also when the handshake fails before wrap_socket owns it
            except (OSError, IotPostError):  # the diagnosis is a bonus: the mismatch is reported anyway
                cert_names = None
        err = explain_tls_failure(exc, t.host, self._cafile, t.names, cert_names, t.port,
                                  client_cert=getattr(self._ctx, "client_cert", None))
        if self.proxy is not None and isinstance(err, ConfigError):
            # Through a tunnel the usual cause is a proxy that inspects TLS with its own certificate.
            err.hint = ((err.hint + "; ") if err.hint else "") + (
                "the connection goes through proxy %s: a proxy that intercepts TLS presents its own "
                "certificate, so ask for this host to be exempt (TLS must be end to end)" % self.proxy.where)
        return err

    def handshake(self) -> Optional[ssl.SSLSocket]:
        """Connect now, verified as for a send, and return the TLS socket (None over http://): for the doctor,
        which reads the server's certificate before it sends anything."""
        if self._conn is None:
            self._conn = self._open()
        sock = getattr(self._conn.sock, "wrapped", self._conn.sock)
        return sock if isinstance(sock, ssl.SSLSocket) else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, method: str, path: str, headers: List[Tuple[str, str]], body: bytes) -> Response:
        """One request and its response; raises IotPostError for anything but an HTTP answer."""
        reused = self._conn is not None
        try:
            return self._exchange(method, path, headers, body)
        except self._stale as exc:
            self.close()
            if not reused:
                raise self._classify(exc, fresh=True) from None
        # The server had closed the idle kept-alive connection: reopen and send once more.
        try:
            return self._exchange(method, path, headers, body)
        except IotPostError:
            raise
        except Exception as exc:
            self.close()
            raise self._classify(exc, fresh=True) from None

    def _exchange(self, method: str, path: str, headers: List[Tuple[str, str]], body: bytes) -> Response:
        if self._conn is None:
            self._conn = self._open()
        conn = self._conn
        started = self._clock()
        try:
            lines = self._header_lines(headers) if hasattr(conn, "_output") else None
            host = self._host_line(conn) if lines is not None else None
            conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
            if lines is not None:
                if host is not None:
                    lines.insert(0, host)
                if body or method not in ("GET", "HEAD"):  # a GET without a body says nothing of one
                    lines.append(b"Content-Length: %d" % len(body))
                if lines:  # none at all (a bare GET): an empty _output would add a blank line
                    conn._output(b"\r\n".join(lines))  # the lines putheader would have added, in one
            else:  # putheader judges what the lines above do not take (and raises as it always has)
                for name, value in headers:
                    conn.putheader(name, value)
                if body or method not in ("GET", "HEAD"):
                    conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            # The declared size when it is within the limit: Python 3.8 and 3.9 allocate (and zero) the whole
            # amount asked for before reading, a megabyte per answer of a burst if asked for the limit.
            length = resp.length
            data = resp.read(length if length is not None and length < MAX_RESPONSE_BYTES else MAX_RESPONSE_BYTES)
            oversized = not resp.isclosed()  # more than we keep: never drain an unbounded body
        except self._stale:
            raise
        except Exception as exc:
            self.close()
            raise self._classify(exc) from None
        latency = self._clock() - started
        result = Response(resp.status, resp.reason or "", AnswerHeaders(resp.msg), data, latency)
        if resp.will_close or oversized:
            self.close()  # the next send reconnects explicitly, so TLS errors stay classified
        refused = self._client_cert_answer(result) if result.status == 400 else None
        if refused is not None:
            self.close()
            raise refused
        return result

    def _host_line(self, conn) -> Optional[bytes]:
        """The Host line putrequest writes on this connection, learnt from putrequest itself, from the
        second request on (a one-off send does not pay for learning it).

        putrequest works it out on every request (IDNA, IPv6 brackets and zone, the port unless it is the
        scheme's default: rules that differ between Python versions), so it is asked once, on a
        connection object that only captures what it would send, and the line is kept.
        """
        if self._host is None:
            self._requests += 1
            if self._requests < 2:
                return None
            import http.client

            written: List[bytes] = []

            class Capture(http.client.HTTPConnection):
                def send(self, data) -> None:  # what endheaders would send: kept, never sent
                    written.append(bytes(data))

            scratch = Capture(conn.host, conn.port)
            scratch.default_port = conn.default_port
            scratch.putrequest("GET", "/", skip_accept_encoding=True)
            scratch.endheaders()
            # conn.host is the target even through a proxy: the tunnel is made by _connect_raw, never set_tunnel
            # (which would make conn.host the proxy's), and plain http:// goes direct, never in absolute form.
            found = [line for line in b"".join(written).split(b"\r\n") if line[:5].lower() == b"host:"]
            self._host = found[0] if len(found) == 1 else b""
        return self._host or None

    def _header_lines(self, headers: List[Tuple[str, str]]) -> Optional[List[bytes]]:
        """``Name: value`` lines as http.client's putheader writes them, or None if one needs its judgement.

        putheader checks every name and value with a regular expression and encodes both on every
        request; a burst repeats the same User-Agent, Content-Type and key on each payload, so a line
        is checked and encoded once and kept (the first 64 distinct ones: the constant lines are
        among them; later one-off lines, each payload's own Idempotency-Key, are checked each time
        and not kept, so the table stays small). Taken here: a str name with no colon,
        line break or leading white space, a str value with no line break (putheader allows folded
        lines; we never send one), both encodable as putheader encodes them.
        """
        known = self._lines
        lines = []
        for pair in headers:
            line = known.get(pair)
            if line is None:
                name, value = pair
                if (type(name) is not str or type(value) is not str or not name or ":" in name or "\r" in name
                        or "\n" in name or name[0].isspace() or "\r" in value or "\n" in value):
                    return None
                try:
                    line = name.encode("ascii") + b": " + value.encode("latin-1")
                except UnicodeEncodeError:
                    return None
                if len(known) < 64:
                    known[pair] = line
            lines.append(line)
        return lines

    def _client_cert_answer(self, response: Response) -> Optional[IotPostError]:
        """nginx (ssl_verify_client on) answers a missing or refused client certificate with HTTP 400,
        not a TLS alert: "No required SSL certificate was sent" / "The SSL certificate error". That is
        the TLS setup's fault, not the payload's: a 78 here, so it never becomes a dead letter."""
        if response.status != 400:
            return None
        text = response.body[:4096].decode("latin-1").lower()
        for phrase in _NGINX_CLIENT_CERT_PAGES:
            if phrase in text:
                return client_certificate_error(self._where(), getattr(self._ctx, "client_cert", None),
                                                "HTTP 400 %s" % _NGINX_CLIENT_CERT_PAGES[phrase], during="sending")
        return None
