"""The doctor's checks: which layer between this device and its platform fails, one result per layer.

Usage: ``for result in run_checks(DoctorSettings(certs_dir=Path("certs_credentials")), secrets): ...``

In order: the bundle (and its CA's expiry), DNS, TCP, the proxy, the TLS handshake (verified exactly
as a send), the server certificate's expiry, the clock (against the server's ``Date`` header) and
the credentials, checked without storing a reading: IoTFlow and Connectivity answer a device-status
GET; TESAIoT gets a telemetry POST of ``{"device_id": ""}`` (no data), which a platform must refuse (400: the key passed and
nothing was stored; 401/403: the key was refused). Where no such way exists the line says "not
checked", never "ok". After a failure the later checks are skipped: they would only fail too.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional

from .errors import IotPostError, TransientError
from .exitcodes import ExitStatus

CLOCK_TOLERANCE_S = 60  # more than this off the server's clock breaks timestamps and, later, TLS
EXPIRY_WARNING_DAYS = 30


class DoctorSettings(NamedTuple):
    certs_dir: Path
    platform: Optional[str] = None  # None: the bundle's endpoints.json "platform", else tesaiot
    base_url: Optional[str] = None
    endpoint: Optional[str] = None
    device_id: Optional[str] = None
    ca_file: Optional[Path] = None
    client_cert: Optional[Path] = None
    client_key: Optional[Path] = None
    proxy: Optional[str] = None
    noproxy: Optional[str] = None
    timeout: float = 10.0
    allow_http: bool = False


class CheckResult(NamedTuple):
    name: str  # bundle, dns, tcp, proxy, tls, certificate, clock, auth
    status: str  # ok | warn | fail | not checked | skipped
    detail: str
    exit_code: int = 0  # the failure's exit code (status "fail" only)
    hint: Optional[str] = None


CHECKS = ("bundle", "dns", "tcp", "proxy", "tls", "certificate", "clock", "auth")


def _fail(name: str, exc: IotPostError) -> CheckResult:
    return CheckResult(name, "fail", exc.message, int(exc.exit_code), exc.hint)


def _days_left(not_after: str, now: float) -> float:
    import ssl

    return (ssl.cert_time_to_seconds(not_after) - now) / 86400.0


def _day(not_after: str) -> str:
    from .tlsctx import expiry_day

    return expiry_day(not_after)


def run_checks(s: DoctorSettings, secrets: List[str], wall=time.time) -> Iterator[CheckResult]:
    """Each layer's result, lowest first; after the first failure the rest are "skipped"."""
    for result in _checks(s, secrets, wall):
        yield result
        if result.status == "fail":
            for name in CHECKS[CHECKS.index(result.name) + 1:]:
                yield CheckResult(name, "skipped", "after the failure above")
            return


def _checks(s: DoctorSettings, secrets: List[str], wall) -> Iterator[CheckResult]:
    from .bundle import bundle_platform, load_bundle
    from .platforms import DEFAULT, load
    from .target import parse_target
    from .tlsctx import build_ssl_context
    from .transport import Transport, classify_network_error, proxy_secrets

    # bundle: the files, the URL and the CA, read exactly as a send reads them
    try:
        platform = load(s.platform or bundle_platform(s.certs_dir) or DEFAULT)
        profile = platform.profile
        bundle = load_bundle(s.certs_dir, device_id=s.device_id, base_url=s.base_url, ca_file=s.ca_file,
                             client_cert=s.client_cert, client_key=s.client_key,
                             device_id_parser=None if platform.name == DEFAULT else platform.parse_device_id,
                             public_ca=platform.public_ca)
        if bundle.api_key:
            secrets.append(bundle.api_key)
        import os

        secrets.extend(proxy_secrets(s.proxy, os.environ))
        target = parse_target(bundle.base_url, s.endpoint or profile.endpoint, allow_http=s.allow_http,
                              names=profile.names)
        ctx = build_ssl_context(bundle.ca_file, bundle.client_cert, bundle.client_key)
    except IotPostError as exc:
        yield _fail("bundle", exc)
        return
    now = wall()
    ca_ends = sorted((c["notAfter"] for c in ctx.get_ca_certs() if "notAfter" in c),
                     key=lambda text: _days_left(text, now))
    trust = "CA %s" % os.path.basename(bundle.ca_file) if bundle.ca_file is not None else "the system's trust store"
    detail = "%s: device %s, %s, %s, trusting %s" % (s.certs_dir, bundle.device_id, platform.name, target.url, trust)
    # A file of several CAs (a system bundle, a chain) stays usable while any of them is valid: judge
    # by the one that ends last (which of them signs the server's chain, ssl does not tell before 3.13).
    ca_ends = ca_ends[-1:]
    if ca_ends and _days_left(ca_ends[0], now) < 0:
        yield CheckResult("bundle", "fail", "%s: the CA in %s expired on %s" % (s.certs_dir, bundle.ca_file,
                                                                               _day(ca_ends[0])),
                          int(ExitStatus.CONFIG), "download the platform's current CA (the bundle again)")
        return
    yield CheckResult("bundle", "warn" if bundle.warnings else "ok",
                      detail + "".join("; warning: " + w for w in bundle.warnings))

    transport = Transport(target, ctx, s.timeout, cafile=bundle.ca_file, proxy=s.proxy, noproxy=s.noproxy)
    proxy = transport.proxy
    host, port = (proxy.host, proxy.port) if proxy is not None else (target.host, target.port)
    through = " (the proxy's; it resolves %s itself)" % target.host if proxy is not None else ""

    # dns
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        if proxy is not None:
            yield CheckResult("dns", "fail", "cannot resolve the proxy's host name %r (%s)" % (host, exc),
                              int(ExitStatus.TEMPFAIL), "check --proxy / $HTTPS_PROXY and this machine's DNS")
        else:
            yield _fail("dns", classify_network_error(exc, target, s.timeout))
        return
    addresses = []
    for info in infos:
        if info[4][0] not in addresses:
            addresses.append(info[4][0])
    yield CheckResult("dns", "ok", "%s -> %s%s" % (host, ", ".join(addresses), through))

    # tcp
    started = time.monotonic()
    try:
        socket.create_connection((host, port), s.timeout).close()
    except OSError as exc:
        err = classify_network_error(exc, target, s.timeout)
        if proxy is not None:
            err = TransientError("cannot connect to the proxy %s (%s)" % (proxy.where, err.message),
                                 hint="check --proxy / $HTTPS_PROXY, and that the proxy is running")
        yield _fail("tcp", err)
        return
    yield CheckResult("tcp", "ok", "connected to %s port %d in %.0f ms"
                      % (host, port, (time.monotonic() - started) * 1000))

    # proxy
    if proxy is None:
        yield CheckResult("proxy", "ok", "none: a direct connection")
    else:
        from .profiles import USER_AGENT
        from .proxy import open_tunnel

        try:
            open_tunnel(proxy, target.host, target.port, s.timeout, USER_AGENT).close()
        except IotPostError as exc:
            yield _fail("proxy", exc)
            return
        yield CheckResult("proxy", "ok", "%s opened a tunnel to %s:%d" % (proxy.where, target.host, target.port))

    # tls + certificate
    try:
        try:
            sock = transport.handshake()
        except IotPostError as exc:
            yield _fail("tls", exc)
            return
        if sock is None:
            yield CheckResult("tls", "not checked", "plain http:// (--allow-http, loopback only)")
            yield CheckResult("certificate", "not checked", "plain http://")
        else:
            yield CheckResult("tls", "ok", "%s: the certificate for %s is verified against %s"
                              % (sock.version(), target.host, trust))
            yield _expiry(sock.getpeercert() or {}, ca_ends, wall())
        yield from _clock_and_auth(transport, platform, bundle.api_key, target, wall)
    finally:
        transport.close()


def _expiry(peer: dict, ca_ends: List[str], now: float) -> CheckResult:
    ends = [("server certificate", peer["notAfter"])] if "notAfter" in peer else []
    ends += [("CA", ca_ends[0])] if ca_ends else []
    if not ends:
        return CheckResult("certificate", "not checked", "no expiry date was readable")
    shown = ", ".join("%s expires %s (%d days)" % (what, _day(end), _days_left(end, now)) for what, end in ends)
    soon = [what for what, end in ends if _days_left(end, now) < EXPIRY_WARNING_DAYS]
    if soon:
        return CheckResult("certificate", "warn", shown + ": %s within %d days" % (" and ".join(soon),
                                                                                   EXPIRY_WARNING_DAYS),
                           hint="renew it before then, or sends will fail with exit 78")
    return CheckResult("certificate", "ok", shown)


def _clock_and_auth(transport, platform, api_key: Optional[str], target, wall) -> Iterator[CheckResult]:
    """One request that stores nothing; its Date header gives the clock line, its status the auth line."""
    from .profiles import USER_AGENT, Credentials

    creds = Credentials(api_key=api_key)
    profile = platform.profile
    if platform.status_path is not None:
        method, path, body = "GET", platform.status_path, b""
        headers = [("User-Agent", USER_AGENT)] + profile.auth(body, creds)
    else:
        # The telemetry endpoint with a payload that holds no data: a platform must refuse it (400) after
        # the key check (401/403). Its device_id key keeps it TESAIoT-shaped: the twin's IoTFlow routes
        # answer a body without one, as the real IoTFlow does.
        method, path, body = "POST", target.path, b'{"device_id": ""}'
        headers = [("User-Agent", USER_AGENT), ("Content-Type", profile.content_type)] + profile.auth(body, creds)
    try:
        response = transport.send(method, path, headers, body)
    except IotPostError as exc:
        yield _clock_result(None, wall())
        yield _fail("auth", exc)
        return
    clock = _clock_result(response.headers.get("date"), wall())
    yield clock
    if clock.status == "fail":
        return
    status = response.status
    asked = "%s %s: HTTP %d" % (method, path, status)
    if status in (401, 403):
        what, hint = profile.refusal(creds)
        yield CheckResult("auth", "fail", "%s (%s)" % (what, asked), int(ExitStatus.NOPERM), hint)
    elif method == "GET" and 200 <= status < 300:
        yield CheckResult("auth", "ok", "the key was accepted (%s), nothing stored" % asked)
    elif method == "POST" and status == 400:
        yield CheckResult("auth", "ok", "the key was accepted: a payload without data was refused (%s), nothing stored"
                          % asked)
    else:
        yield CheckResult("auth", "not checked", "the platform's answer says nothing about the key (%s)" % asked)


def _clock_result(date_header: Optional[str], now: float) -> CheckResult:
    from .environment import earliest_plausible_time

    hint = "set the clock (timedatectl, chronyc tracking, or NTP): TLS and the readings' timestamps depend on it"
    if now < earliest_plausible_time():
        return CheckResult("clock", "fail", "this clock is not set (it says %s)"
                           % time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(max(0.0, now))),
                           int(ExitStatus.CONFIG), hint)
    if not date_header:
        return CheckResult("clock", "not checked", "the server sent no Date header to compare with")
    from email.utils import parsedate_to_datetime  # http.client has imported email already

    try:
        server = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return CheckResult("clock", "not checked", "the server's Date header %r is not a date" % date_header[:60])
    skew = now - server
    where = "%.0f s %s the server's" % (abs(skew), "ahead of" if skew > 0 else "behind")
    if abs(skew) > CLOCK_TOLERANCE_S:
        return CheckResult("clock", "fail", "this clock is %s (Date: %s), more than %d s off"
                           % (where, date_header, CLOCK_TOLERANCE_S), int(ExitStatus.CONFIG), hint)
    return CheckResult("clock", "ok", "within %d s of the server's (%s)" % (CLOCK_TOLERANCE_S, where))


def exit_code(results: List[CheckResult]) -> int:
    """The first failing check's exit code, else 0 (a warning does not fail)."""
    for result in results:
        if result.status == "fail":
            return result.exit_code
    return int(ExitStatus.OK)
