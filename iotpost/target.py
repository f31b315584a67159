"""Where requests go: a base URL plus an endpoint path, checked before anything is sent.

Usage: ``target = parse_target("https://tesaiot.com", "/api/v1/telemetry")``

Plain http:// is refused unless the caller opted in *and* the host is this machine: an API key
or a signed push must never cross a network in clear text, but a developer's local server may lack TLS.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Optional
from urllib.parse import urlsplit

from .errors import ConfigError
from .records import Record

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class SettingNames(Record):
    """How one command's user sets the URL and the CA, so a hint names only flags that command has."""

    url: str  # "--base-url / endpoints.json"
    ca: str  # "--ca-file / the bundle's ca-chain.pem"
    endpoint: Optional[str] = None  # "--endpoint", for commands that take the path separately
    # What a plain http:// URL would expose, and what a URL should look like, in this command's words.
    cleartext: str = "the credentials would travel unencrypted"
    example_url: str = "https://platform.example.com"
    url_credentials_hint: str = "credentials do not belong in the URL"


# For callers that do not say which command they serve: names no flag at all.
GENERIC_NAMES = SettingNames(url="the URL", ca="the CA file")


class Target(Record):
    scheme: str
    host: str
    port: int
    path: str
    names: SettingNames = GENERIC_NAMES  # for hints only; not part of where requests go

    @property
    def netloc(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else "%s:%d" % (host, self.port)

    @property
    def url(self) -> str:
        return "%s://%s%s" % (self.scheme, self.netloc, self.path)


def is_loopback(host: str) -> bool:
    """True for names and addresses that cannot leave this machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    import ipaddress  # only asked for http:// URLs

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_unsafe_chars(text: str) -> bool:
    """Spaces and control characters cannot go on a request line (percent-encode them)."""
    return any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text)


def join_path(base_path: str, endpoint: str, names: SettingNames = GENERIC_NAMES) -> str:
    """Join a base URL's path prefix (a reverse-proxy mount) and the endpoint path."""
    if endpoint.lower().startswith(("http://", "https://")):
        raise ConfigError("%s takes a path such as /api/v1/telemetry, not a URL" % (names.endpoint or "the endpoint"),
                          hint="put the scheme and host in %s" % names.url)
    if not endpoint:
        return base_path or "/"
    return base_path.rstrip("/") + "/" + endpoint.lstrip("/")


def parse_target(base_url: str, endpoint: str, allow_http: bool = False,
                 names: SettingNames = GENERIC_NAMES) -> Target:
    """Validate the URL; refuse anything that would send credentials unverified.

    ``names`` says how this command's user sets the URL; hints use it and the Target carries it on.
    """
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("base URL %r is not a valid URL (%s)" % (base_url, exc)) from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("https", "http") or not host:
        raise ConfigError(
            "base URL %r is not an https:// URL, while checking the platform URL" % base_url,
            hint="it should look like %s (check %s)" % (names.example_url, names.url),
        )
    if _has_unsafe_chars(base_url.strip()) or _has_unsafe_chars(endpoint):
        raise ConfigError("URL %r has spaces or control characters" % (base_url + endpoint),
                          hint="percent-encode them (a space is %20)")
    if port == 0:
        raise ConfigError("base URL %r has port 0" % base_url, hint="leave the port out for 443")
    if parts.username or parts.password:
        raise ConfigError("base URL must not carry a user name or password",
                          hint=names.url_credentials_hint)
    if scheme == "http":
        if not allow_http:
            raise ConfigError(
                "refusing plain http:// URL %s: %s" % (base_url, names.cleartext),
                hint="use https://; for a local development server on this machine pass --allow-http",
            )
        if not is_loopback(host):
            raise ConfigError(
                "--allow-http only permits this machine (localhost, 127.0.0.1, ::1), not %s" % host,
                hint="use https:// for any other host",
            )
    endpoint_path, _, endpoint_query = endpoint.partition("?")
    path = join_path(parts.path, endpoint_path, names)
    query = "&".join(q for q in (parts.query, endpoint_query) if q)
    if query:
        path += "?" + query
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path, names)
