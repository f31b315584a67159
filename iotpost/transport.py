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
from pathlib import Path
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from .errors import ConfigError, IotPostError, TransientError
from .target import Target
from .tlsctx import explain_tls_failure

MAX_RESPONSE_BYTES = 1 << 20
# What a kept-alive connection the server already closed looks like when we use it again.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError)


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


class Response(NamedTuple):
    status: int
    reason: str
    headers: Dict[str, str]  # lower-case names
    body: bytes
    latency: float  # seconds from sending the request to the end of the body


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


class Transport:
    """Sends requests to one target over a reused HTTP/1.1 connection."""

    def __init__(
        self,
        target: Target,
        ssl_context: Optional[ssl.SSLContext],
        timeout: float,
        cafile: Optional[Path] = None,
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

        t = self.target
        try:
            if t.scheme == "https":
                conn = http.client.HTTPSConnection(t.host, t.port, timeout=self._timeout, context=self._ctx)
            else:
                conn = http.client.HTTPConnection(t.host, t.port, timeout=self._timeout)
        except http.client.InvalidURL as exc:
            raise classify_network_error(exc, t, self._timeout) from None
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
        return conn

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
        err = explain_tls_failure(exc, t.host, self._cafile, t.names, cert_names, t.port)
        if self.proxy is not None and isinstance(err, ConfigError):
            # Through a tunnel the usual cause is a proxy that inspects TLS with its own certificate.
            err.hint = ((err.hint + "; ") if err.hint else "") + (
                "the connection goes through proxy %s: a proxy that intercepts TLS presents its own "
                "certificate, so ask for this host to be exempt (TLS must be end to end)" % self.proxy.where)
        return err

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, method: str, path: str, headers: List[Tuple[str, str]], body: bytes) -> Response:
        """One request and its response; raises IotPostError for anything but an HTTP answer."""
        import http.client

        reused = self._conn is not None
        try:
            return self._exchange(method, path, headers, body)
        except _STALE + (http.client.RemoteDisconnected,) as exc:
            self.close()
            if not reused:
                raise classify_network_error(exc, self.target, self._timeout) from None
        # The server had closed the idle kept-alive connection: reopen and send once more.
        try:
            return self._exchange(method, path, headers, body)
        except IotPostError:
            raise
        except Exception as exc:
            self.close()
            raise classify_network_error(exc, self.target, self._timeout) from None

    def _exchange(self, method: str, path: str, headers: List[Tuple[str, str]], body: bytes) -> Response:
        import http.client

        if self._conn is None:
            self._conn = self._open()
        conn = self._conn
        started = self._clock()
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE_BYTES)
            oversized = not resp.isclosed()  # more than we keep: never drain an unbounded body
        except _STALE + (http.client.RemoteDisconnected,):
            raise
        except Exception as exc:
            self.close()
            raise classify_network_error(exc, self.target, self._timeout) from None
        latency = self._clock() - started
        result = Response(resp.status, resp.reason or "", {k.lower(): v for k, v in resp.getheaders()},
                          data, latency)
        if resp.will_close or oversized:
            self.close()  # the next send reconnects explicitly, so TLS errors stay classified
        return result
