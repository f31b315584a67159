"""One request to a platform's device API (register, heartbeat, readings) and what its answer means.

Usage::

    call = DeviceCall.open(platform, base_url, path, allow_http=False, ca_file=ca, reporter=r, timeout=10)
    doc = call.json("POST", headers=[("X-API-Key", key)], body=b"", doing="sending the heartbeat")

The senders' path (spool, retries, idempotency) is for telemetry; these commands make one request
each and report its outcome with the same exit codes: 401/403 are 77, 404/405 78, 408/429/5xx 75,
other 4xx 65. A 2xx answer that is not a JSON object is the platform misbehaving (75).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .errors import IotPostError, TransientError
from .exitcodes import for_http_status
from .output import Reporter
from .platforms import Platform
from .profiles import USER_AGENT
from .target import Target, parse_target
from .transport import Response, Transport

Json = Dict[str, Any]


def answer_text(response: Response) -> str:
    """``409 Device name already exists: Please choose a different device name`` (error, then message)."""
    try:
        doc = json.loads(response.body.decode("utf-8")) if response.body else None
    except (ValueError, RecursionError):
        doc = None
    parts = []
    if isinstance(doc, dict):
        parts = [doc[k] for k in ("error", "message") if isinstance(doc.get(k), str) and doc[k]]
    said = ": ".join(parts) if parts else (response.reason or "")
    said = "".join(ch if ch.isprintable() else " " for ch in said)[:200]
    return "%d %s" % (response.status, said) if said else str(response.status)


def error_for_answer(response: Response, doing: str, platform: Platform, url: str) -> IotPostError:
    """The error (and its exit code) for a non-2xx answer to one device-API request."""
    status = response.status
    said = answer_text(response)
    if status == 401:
        err = IotPostError("%s (%s), while %s" % (platform.profile.refused, said, doing),
                           hint=platform.profile.auth_hint)
    elif status == 403:
        err = IotPostError("the platform refused this device (%s), while %s" % (said, doing),
                           hint=platform.profile.auth_hint)
    elif status in (404, 405) or 300 <= status < 400:
        err = IotPostError("%s did not take the request (%s), while %s" % (url, said, doing),
                           hint="check %s: is it the %s server?" % (platform.profile.names.url, platform.name))
    elif status == 429:
        wait = retry_after_of(response)
        err = IotPostError("the platform limits this device's requests (%s), while %s" % (said, doing),
                           hint="try again in %s" % ("%g s" % wait if wait is not None else "a minute"))
    elif 400 <= status < 500 and status != 408:
        err = IotPostError("the platform refused the request (%s), while %s" % (said, doing))
    else:
        err = IotPostError("the platform failed the request (%s), while %s" % (said, doing),
                           hint="the platform is busy or down; retry later")
    err.exit_code = for_http_status(status)
    return err


def retry_after_of(response: Response) -> Optional[float]:
    """Seconds to wait from a Retry-After header, else from a JSON body's retry_after (IoTFlow)."""
    import time

    from .retry import parse_retry_after, retry_after_in_body

    wait = parse_retry_after(response.headers.get("retry-after"), time.time())
    return wait if wait is not None else retry_after_in_body(response.body)


class DeviceCall(NamedTuple):
    """A checked target and a verifying connection for one request."""

    target: Target
    transport: Transport
    platform: Platform
    reporter: Reporter

    @classmethod
    def open(cls, platform: Platform, base_url: str, path: str, *, allow_http: bool, ca_file: Optional[Path],
             reporter: Reporter, timeout: float) -> "DeviceCall":
        """Check the URL (https, or http to this machine with --allow-http) and build the TLS context."""
        from .tlsctx import build_ssl_context

        target = parse_target(base_url, path, allow_http=allow_http, names=platform.profile.names)
        ctx = None
        if target.scheme == "https":
            ctx = build_ssl_context(ca_file)  # a bad CA file fails here, before anything is sent
            if reporter.verbose:
                from .output import write_line

                trust = ca_file if ca_file is not None else "the system's trust store"
                write_line(reporter.stderr, reporter.redact("* verifying %s with %s\n" % (target.host, trust)))
        else:
            reporter.warn("plain http:// to this machine (--allow-http): %s" % platform.profile.names.cleartext)
        return cls(target, Transport(target, ctx, timeout, cafile=ca_file), platform, reporter)

    def json(self, method: str, headers: List[Tuple[str, str]], body: bytes, doing: str,
             ok_statuses: Tuple[int, ...] = ()) -> Tuple[Response, Optional[Json]]:
        """Send, and return the answer with its JSON object; a non-2xx (not in ``ok_statuses``) raises."""
        all_headers = [("User-Agent", USER_AGENT), ("Accept", "application/json")] + headers
        self.reporter.request(method, self.target.url, all_headers, body)
        try:
            response = self.transport.send(method, self.target.path, all_headers, body)
        finally:
            self.transport.close()
        self.reporter.response(response.status, response.reason, response.headers)
        if not (200 <= response.status < 300) and response.status not in ok_statuses:
            raise error_for_answer(response, doing, self.platform, self.target.url)
        try:
            doc = json.loads(response.body.decode("utf-8"))
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict) and 200 <= response.status < 300:
            raise TransientError("the platform answered %d without a JSON object, while %s" % (response.status, doing),
                                 hint="check %s: is it the %s server?" % (self.platform.profile.names.url,
                                                                          self.platform.name))
        return response, doc if isinstance(doc, dict) else None
