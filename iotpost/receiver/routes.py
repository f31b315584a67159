"""Which function answers which method and path, for every platform the twin stands in for.

Usage: ``reply = dispatch("GET", "/health", body=b"", headers={}, store=store)``

Routes: IoTFlow / IoT Connectivity Layer (iotflow.py: /api/v1/devices/register|telemetry|heartbeat|status,
and the TESAIoT paths below for an IoTFlow device's key); POST /api/v1/telemetry; GET /api/v1/telemetry/{device_id}[/latest]; GET /health;
POST /api/webhooks/tlink; GET /api/users/{userId}/devices[/{deviceId}/latest|/history] (seed 001);
GET /api/devices[/{deviceId}/latest|/history] (the reference receiver's read API);
ThermaCore: POST /api/v1/auth/login|refresh, GET /api/v1/units/{id}/readings, GET /api/v1/health.
Unknown paths get a JSON 404 and known paths with another method a JSON 405 with ``Allow``, so a
sender's error output always has a body to show.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from . import iotflow, tesaiot_api, thermacore, tlink_api
from .api_request import ApiRequest, HeaderLookup, Route, route
from .replies import PROCESSING_ERROR, TLINK_SERVER_ERROR, Reply, error_reply
from .store import TelemetryStore

RouteFunction = Callable[..., Reply]  # (ApiRequest, *path segments) -> Reply


def get_health(request: ApiRequest) -> Reply:
    """GET /health: one answer for every platform the twin speaks, the union of their fields (200)."""
    body = dict(iotflow.HEALTH)
    body.update(thermacore.health_fields(request))  # "service", "timestamp"
    body.update(tesaiot_api.get_health(request).body)  # TESAIoT's fields as they always were
    return Reply(200, body)


# One list per platform module; the first route whose pattern matches and that claims the request answers.
# IoTFlow first: it claims the paths it shares with TESAIoT only for its own devices' keys.
ROUTES: List[Route] = ([route("/health", GET=get_health)] + iotflow.ROUTES + tesaiot_api.ROUTES + tlink_api.ROUTES
                       + thermacore.ROUTES)


def _by_path(routes: List[Route]) -> Dict[str, List[Route]]:
    """Each fixed path (a pattern without regex syntax) -> the routes that match it, in order.

    The same routes in the same order as scanning all of them finds, only without some twenty
    ``match`` calls per request on the busiest paths (POST /api/v1/telemetry).
    """
    fixed = {}
    for candidate in routes:
        text = candidate.pattern.pattern[1:-1]
        if re.escape(text) == text:
            fixed[text] = [other for other in routes if other.pattern.match(text)]
    return fixed


_BY_PATH = _by_path(ROUTES)

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
    if target.startswith("/") and not target.startswith("//") and "?" not in target and "#" not in target:
        path, query_text = target, ""  # what urlsplit gives for the usual target, without its cost
    else:
        split = urlsplit(target)
        path, query_text = split.path, split.query
    request: Optional[ApiRequest] = None
    for candidate in _BY_PATH.get(path, ROUTES):
        match = candidate.pattern.match(path)
        if match is None:
            continue
        if request is None:  # one for every route that looks at it: its parts do not change
            query = parse_qs(query_text, keep_blank_values=False) if query_text else {}
            request = ApiRequest(store, headers, body, query, tlink_secret, log, client_cert)
        if candidate.claims is not None and not candidate.claims(request):
            continue
        function = candidate.methods.get(method)
        if function is None:
            allow = ", ".join(sorted(candidate.methods))
            return error_reply(405, "Method not allowed", "METHOD_NOT_ALLOWED", Allow=allow)
        args = [unquote(g) for g in match.groups()]
        reply = function(request, *args)
        return reply._replace(flask_json=True) if candidate.flask_json else reply
    return error_reply(404, "Not found", "NOT_FOUND")


def server_error(target: str) -> Reply:
    """The 500 for a failure (or an injected one) in the words of the platform whose route it is."""
    path = urlsplit(target).path
    for candidate in ROUTES:
        if candidate.pattern.match(path):
            if candidate.flask_json:
                return Reply(500, dict(TLINK_SERVER_ERROR), flask_json=True)
            break
    return Reply(500, dict(PROCESSING_ERROR))
