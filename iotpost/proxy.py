"""HTTP proxies as curl understands them: which one to use, and a CONNECT tunnel through it.

Usage::

    proxy = choose_proxy("tesaiot.com", flag=None, noproxy_flag=None, environ=os.environ)
    sock = open_tunnel(proxy, "tesaiot.com", 443, timeout=10) if proxy else direct_socket

Only ``http://`` proxies, always with ``CONNECT``: the proxy relays bytes and TLS (with the
bundle's CA as the only trust anchor) runs end to end with the platform, so a proxy that tries to
read the traffic fails certificate verification. This module is imported only when a proxy is
configured; a direct send never loads it.
"""

from __future__ import annotations

import socket
import time
from typing import List, Mapping, Optional

from .errors import ConfigError, IotPostError, ProxyAuthRefused, TransientError
from .transport import PROXY_ENV  # curl's order for an https:// URL: https_proxy, HTTPS_PROXY, ALL_PROXY
from .records import Record

NO_PROXY_ENV = ("no_proxy", "NO_PROXY")
DEFAULT_PORT = 1080  # curl's default when the proxy URL names no port
_UNSUPPORTED = ("https", "socks4", "socks4a", "socks5", "socks5h")
_MAX_HEAD = 16384  # a CONNECT answer's status line and headers; anything longer is not a proxy


class Proxy(Record):
    host: str
    port: int
    username: Optional[str]  # percent-decoded
    password: Optional[str]  # percent-decoded; never printed
    source: str  # "--proxy" or the environment variable it came from

    @property
    def where(self) -> str:
        """host:port as a user would type it (IPv6 in brackets); never the credentials."""
        return "%s:%d" % ("[%s]" % self.host if ":" in self.host else self.host, self.port)

    def authorization(self) -> Optional[str]:
        """The Proxy-Authorization value (Basic, UTF-8 as RFC 7617), or None without a user."""
        if self.username is None:
            return None
        import base64

        raw = ("%s:%s" % (self.username, self.password or "")).encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")


def _with_scheme(text: str) -> str:
    # curl treats "host:3128" (no scheme) as an http:// proxy.
    return text if "://" in text else "http://" + text


def proxy_secrets(text: Optional[str]) -> List[str]:
    """Every form of the password in a proxy URL that could reach output: as typed, decoded, and
    inside the Basic header. Never raises: it runs before the URL is checked."""
    if not text:
        return []
    from urllib.parse import unquote

    netloc = _with_scheme(text.strip()).split("://", 1)[1].split("/", 1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return []
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        return []
    found = [password, unquote(password), userinfo, "%s:%s" % (unquote(user), unquote(password))]
    try:
        auth = Proxy("h", 1, unquote(user), unquote(password), "").authorization()
        found += [auth or "", (auth or "")[len("Basic "):]]
    except Exception:  # noqa: BLE001 - a password that cannot be encoded is still redacted as typed
        pass
    return [s for s in found if s]


def parse_proxy_url(text: str, source: str) -> Proxy:
    """Check a proxy URL; anything but http:// is a configuration error (78), never a direct send."""
    from urllib.parse import unquote, urlsplit

    url = _with_scheme(text.strip())
    scheme = url.split("://", 1)[0].lower()
    if scheme in _UNSUPPORTED:
        raise ConfigError("%s proxies are not supported (from %s); only http:// proxies (CONNECT) are"
                          % (scheme + "://", source),
                          hint="use the proxy's http:// address; TLS to the platform stays end to end through it")
    if scheme != "http":
        raise ConfigError("proxy URL from %s has an unknown scheme %r" % (source, scheme),
                          hint="write it as http://host:port (user:password@ before the host if needed)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("proxy URL from %s has a bad port" % source,
                          hint="write it as http://host:port with a port from 1 to 65535") from None
    host = parts.hostname or ""
    if not host or port == 0 or any(ch.isspace() for ch in host):
        raise ConfigError("proxy URL from %s names no usable host" % source,
                          hint="write it as http://host:port (user:password@ before the host if needed)")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Proxy(host, port or DEFAULT_PORT, username, password, source)


def _host_kind(host: str):
    """An ip_address for a literal address (so 127.000.0.1 is not compared as text), else None."""
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def no_proxy_matches(host: str, noproxy: Optional[str]) -> bool:
    """True if ``host`` is in a NO_PROXY list, matched as curl does.

    ``*`` alone matches everything. Names match themselves and their subdomains on a label
    boundary (``example.com`` and ``.example.com`` both match ``www.example.com``, never
    ``notexample.com``), case-insensitively, trailing dots ignored. Addresses match addresses,
    with CIDR (``10.0.0.0/8``); IPv6 is written without brackets. An entry with a port matches
    nothing (as curl): the list names hosts, not services.
    """
    if not noproxy:
        return False
    if noproxy.strip() == "*":
        return True
    address = _host_kind(host)
    name = host.lower().rstrip(".")
    for entry in noproxy.replace(" ", ",").replace("\t", ",").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if address is not None:
            if _address_in(address, entry.strip("[]")):
                return True
            continue
        entry = entry.rstrip(".")
        entry = entry[1:] if entry.startswith(".") else entry
        if entry and (name == entry or name.endswith("." + entry)):
            return True
    return False


def _address_in(address, entry: str) -> bool:
    import ipaddress

    try:
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def choose_proxy(host: str, flag: Optional[str], noproxy_flag: Optional[str],
                 environ: Mapping[str, str]) -> Optional[Proxy]:
    """The proxy for an https:// URL to ``host``, or None to connect directly.

    --proxy wins over the environment; ``--proxy ""`` means direct. --noproxy wins over
    NO_PROXY, and either applies to a --proxy proxy too (as curl). Empty variables count as unset.
    """
    if flag is not None:
        text, source = flag, "--proxy"
    else:
        text, source = "", ""
        for name in PROXY_ENV:
            if environ.get(name, "").strip():
                text, source = environ[name], name
                break
    if not text.strip():
        return None
    if noproxy_flag is not None:
        noproxy = noproxy_flag
    else:
        noproxy = next((environ[n] for n in NO_PROXY_ENV if environ.get(n, "").strip()), None)
    if no_proxy_matches(host, noproxy):
        return None
    return parse_proxy_url(text, source)


def connect_request(proxy: Proxy, host: str, port: int, user_agent: str) -> bytes:
    """The CONNECT request head: authority-form host:port (IPv6 in brackets) and a matching Host."""
    authority = "%s:%d" % ("[%s]" % host if ":" in host else host, port)
    lines = ["CONNECT %s HTTP/1.1" % authority, "Host: %s" % authority, "User-Agent: %s" % user_agent]
    auth = proxy.authorization()
    if auth:
        lines.append("Proxy-Authorization: " + auth)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def open_tunnel(proxy: Proxy, host: str, port: int, timeout: float, user_agent: str) -> socket.socket:
    """A TCP socket to the proxy on which CONNECT host:port succeeded: bytes now reach the platform.

    The whole exchange (connect, request, answer) has --timeout to finish. Failures name the
    proxy, not the platform: 75 if it may work later, 77 if the proxy refused the credentials.
    """
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((proxy.host, proxy.port), timeout)
    except Exception as exc:
        raise _connect_failure(exc, proxy, timeout) from None
    try:
        sock.sendall(connect_request(proxy, host, port, user_agent))
        head = _read_head(sock, deadline)
        status, reason = _status_of(head, proxy)
    except IotPostError:
        sock.close()
        raise
    except Exception as exc:
        sock.close()
        raise _exchange_failure(exc, proxy, timeout) from None
    if 200 <= status < 300:
        sock.settimeout(timeout)
        return sock
    sock.close()
    raise _refusal(status, reason, proxy)


def _read_head(sock: socket.socket, deadline: float) -> bytes:
    """Read exactly the answer's head: the bytes after it belong to the TLS handshake."""
    head = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(4096, socket.MSG_PEEK)
        if not chunk:
            raise ConnectionResetError("closed")
        seen = head + chunk
        end = seen.find(b"\r\n\r\n", max(0, len(head) - 3))
        take = len(chunk) if end < 0 else end + 4 - len(head)
        head += sock.recv(take)
        if end >= 0:
            return head
        if len(head) > _MAX_HEAD:
            raise ValueError("answer head longer than %d bytes" % _MAX_HEAD)


def _status_of(head: bytes, proxy: Proxy):
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise TransientError("proxy %s answered CONNECT with something that is not HTTP, while opening "
                             "the tunnel" % proxy.where,
                             hint="is %s an HTTP proxy? check %s" % (proxy.where, proxy.source))
    reason = parts[2].strip() if len(parts) > 2 else ""
    return int(parts[1]), "".join(ch for ch in reason if ch.isprintable())[:80]


def _refusal(status: int, reason: str, proxy: Proxy) -> IotPostError:
    said = ("%d %s" % (status, reason)).strip()
    if status in (401, 407):
        # 401 too: tinyproxy 1.11 answers a wrong password to CONNECT with it.
        if proxy.username is None:
            return ProxyAuthRefused("proxy %s requires credentials (%s), while opening the tunnel"
                                    % (proxy.where, said),
                                    hint="put user:password@ before the host in %s (percent-encode @ : / as "
                                    "%%40 %%3A %%2F)" % proxy.source)
        return ProxyAuthRefused("proxy %s refused the proxy credentials (%s), while opening the tunnel"
                                % (proxy.where, said),
                                hint="check user:password in %s (percent-encode @ : / as %%40 %%3A %%2F)"
                                % proxy.source)
    if status == 403:
        return ProxyAuthRefused("proxy %s does not allow a tunnel to the platform (%s), while opening the "
                                "tunnel" % (proxy.where, said),
                                hint="ask the proxy's administrator to allow CONNECT to the platform's "
                                "host and port")
    return TransientError("proxy %s could not open a tunnel to the platform (%s)" % (proxy.where, said),
                          hint="the proxy or the link behind it is failing; it is retried")


def _connect_failure(exc: BaseException, proxy: Proxy, timeout: float) -> IotPostError:
    source = proxy.source
    if isinstance(exc, socket.gaierror):
        return TransientError("cannot resolve proxy host %s (%s), while connecting to the proxy"
                              % (proxy.host, exc.strerror),
                              hint="check the proxy's host name in %s and this machine's DNS" % source)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TransientError("no answer from proxy %s within %gs, while connecting to the proxy"
                              % (proxy.where, timeout),
                              hint="the proxy or the network is slow or down; retry later or check %s" % source)
    if isinstance(exc, ConnectionRefusedError):
        return TransientError("connection refused by proxy %s, while connecting to the proxy" % proxy.where,
                              hint="is the proxy running? check the host and port in %s" % source)
    if isinstance(exc, OSError):
        return TransientError("cannot reach proxy %s (%s), while connecting to the proxy"
                              % (proxy.where, exc.strerror or exc),
                              hint="check this machine's network and %s" % source)
    raise exc


def _exchange_failure(exc: BaseException, proxy: Proxy, timeout: float) -> IotPostError:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TransientError("proxy %s did not answer CONNECT within %gs, while opening the tunnel"
                              % (proxy.where, timeout),
                              hint="the proxy or the network is slow; raise --timeout or retry later")
    if isinstance(exc, ValueError):
        return TransientError("proxy %s sent a malformed answer to CONNECT, while opening the tunnel"
                              % proxy.where, hint="is %s an HTTP proxy? check %s" % (proxy.where, proxy.source))
    if isinstance(exc, OSError):
        return TransientError("proxy %s closed the connection before answering CONNECT" % proxy.where,
                              hint="the proxy dropped the connection; it is retried")
    raise exc
