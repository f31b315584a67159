"""Which function answers which method and path, for both platforms the twin stands in for.

Usage: ``reply = dispatch("GET", "/health", body=b"", headers={}, store=store)``

Routes: POST /api/v1/telemetry; GET /api/v1/telemetry/{device_id}[/latest]; GET /health;
POST /api/webhooks/tlink; GET /api/users/{userId}/devices[/{deviceId}/latest|/history] (seed 001);
GET /api/devices[/{deviceId}/latest|/history] (the reference receiver's read API).
Unknown paths get a JSON 404 and known paths with another method a JSON 405 with ``Allow``, so a
sender's error output always has a body to show.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, NamedTuple, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from . import tesaiot_api, tlink_api
from .api_request import ApiRequest, HeaderLookup
from .replies import PROCESSING_ERROR, TLINK_SERVER_ERROR, Reply, error_reply
from .store import TelemetryStore

RouteFunction = Callable[..., Reply]  # (ApiRequest, *path segments) -> Reply


class Route(NamedTuple):
    """A path pattern (its groups are the arguments after the ApiRequest) and a function per method."""

    pattern: "re.Pattern[str]"
    methods: Dict[str, RouteFunction]
    flask_json: bool = False  # answers rendered like the Flask reference's jsonify (TLINK)


def _route(pattern: str, **methods: RouteFunction) -> Route:
    return Route(re.compile("^" + pattern + "$"), methods)


def _tlink_route(pattern: str, **methods: RouteFunction) -> Route:
    return Route(re.compile("^" + pattern + "$"), methods, flask_json=True)


_SEGMENT = r"([^/]+)"
ROUTES: List[Route] = [
    _route("/health", GET=tesaiot_api.get_health),
    _route("/api/v1/telemetry", POST=tesaiot_api.post_telemetry),
    _route("/api/v1/telemetry/%s/latest" % _SEGMENT, GET=tesaiot_api.get_latest),
    _route("/api/v1/telemetry/%s" % _SEGMENT, GET=tesaiot_api.get_history),
    _tlink_route("/api/webhooks/tlink", POST=tlink_api.post_webhook),
    _tlink_route("/api/users/%s/devices" % _SEGMENT, GET=tlink_api.get_devices),
    _tlink_route("/api/users/%s/devices/%s/latest" % (_SEGMENT, _SEGMENT), GET=tlink_api.get_latest),
    _tlink_route("/api/users/%s/devices/%s/history" % (_SEGMENT, _SEGMENT), GET=tlink_api.get_history),
    _tlink_route("/api/devices", GET=tlink_api.get_reference_devices),
    # \d+ as Flask's <int:deviceId>: anything else (a sign, a letter) is not this route, so a 404
    _tlink_route(r"/api/devices/(\d+)/latest", GET=tlink_api.get_reference_latest),
    _tlink_route(r"/api/devices/(\d+)/history", GET=tlink_api.get_reference_history),
]


def dispatch(
    method: str,
    target: str,
    *,
    body: bytes,
    headers: HeaderLookup,
    store: TelemetryStore,
    tlink_secret: Optional[bytes] = None,
    log: Optional[Callable[[str], None]] = None,
    client_cert: bool = False,
) -> Reply:
    """Answer one request by its method and target (path plus query); the first matching route wins."""
    split = urlsplit(target)
    path = split.path
    for route in ROUTES:
        match = route.pattern.match(path)
        if match is None:
            continue
        function = route.methods.get(method)
        if function is None:
            allow = ", ".join(sorted(route.methods))
            return error_reply(405, "Method not allowed", "METHOD_NOT_ALLOWED", Allow=allow)
        args = [unquote(g) for g in match.groups()]
        query = parse_qs(split.query, keep_blank_values=False)
        reply = function(ApiRequest(store, headers, body, query, tlink_secret, log, client_cert), *args)
        return reply._replace(flask_json=True) if route.flask_json else reply
    return error_reply(404, "Not found", "NOT_FOUND")


def server_error(target: str) -> Reply:
    """The 500 for a failure (or an injected one) in the words of the platform whose route it is."""
    path = urlsplit(target).path
    for route in ROUTES:
        if route.pattern.match(path):
            if route.flask_json:
                return Reply(500, dict(TLINK_SERVER_ERROR), flask_json=True)
            break
    return Reply(500, dict(PROCESSING_ERROR))
