"""What a route function is given, and strict readers for its parts: JSON body, query, media type.

Usage: ``reply = tesaiot_api.post_telemetry(ApiRequest(store, {"X-API-KEY": key, ...}, body))``

The route functions in ``tesaiot_api`` and ``tlink_api`` take an ``ApiRequest`` instead of a
socket, so the platform contracts can be read and tested apart from http.server. The readers are
strict on purpose: a sender that gets away with NaN or ``limit=abc`` here would fail against the
real platform.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Protocol

from .store import TelemetryStore

Query = Dict[str, List[str]]  # as urllib.parse.parse_qs gives it

# History reads on both platforms: the page size when none is asked for, and the most one may ask.
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000

# JSON request bodies: deeper nesting than any platform payload needs is refused (400), not parsed.
MAX_JSON_DEPTH = 32

class HeaderLookup(Protocol):
    """Request headers by name: http.server's case-insensitive message, or a plain dict in tests."""

    def get(self, __name: str) -> Optional[str]:
        ...


class ApiRequest(NamedTuple):
    """One request's parts and the twin state a route answers from."""

    store: TelemetryStore
    headers: HeaderLookup
    body: bytes = b""
    query: Query = {}
    tlink_secret: Optional[bytes] = None  # None: TLINK webhooks are accepted unsigned
    log: Optional[Callable[[str], None]] = None  # the twin's log (twin.log), for what a reply cannot say
    client_cert: bool = False  # the connection presented a client certificate the twin verified (mTLS)


class Route(NamedTuple):
    """A path pattern (its groups are the arguments after the ApiRequest) and a function per method.

    Each platform module has its own ``ROUTES`` list of these; ``routes.ROUTES`` joins them. Where two
    platforms share a path (TESAIoT and IoTFlow both take ``POST /api/v1/telemetry``), ``claims``
    says whether this platform answers the request (by whose key it carries); if not, the next
    route with the same pattern is tried.
    """

    pattern: "re.Pattern[str]"
    methods: Dict[str, Callable[..., Any]]  # method -> (ApiRequest, *path segments) -> Reply
    flask_json: bool = False  # answers rendered like a Flask reference's jsonify (TLINK)
    claims: Optional[Callable[["ApiRequest"], bool]] = None  # None: every request on this path


def route(pattern: str, flask_json: bool = False, claims: Optional[Callable[["ApiRequest"], bool]] = None,
          **methods: Callable[..., Any]) -> Route:
    """``route("/api/v1/things/([^/]+)", GET=get_thing)``: the pattern must match the whole path."""
    return Route(re.compile("^" + pattern + "$"), methods, flask_json, claims)


def media_type(content_type: Optional[str]) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


# What json.loads(text, parse_constant=_reject_constant) builds on every call, built once.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json_body(body: bytes) -> Any:
    """Strict JSON from UTF-8 bytes (no NaN/Infinity, at most MAX_JSON_DEPTH deep); raises ValueError.

    Its size is bounded before it gets here (the twin's max_body); a body like ``[[[[...`` would
    otherwise escape as RecursionError, which is not a ValueError.
    """
    try:
        value = _DECODER.decode(body.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    # Each level opens with a bracket, so a body with few brackets cannot nest too deep: the walk
    # below is only needed when there are more brackets than levels allowed.
    if body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH and _nested_deeper_than(value, MAX_JSON_DEPTH):
        raise ValueError("JSON nested more than %d deep" % MAX_JSON_DEPTH)
    return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays/objects nest more than ``limit`` levels (iterative: no recursion to run out of)."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def query_int(query: Query, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter; below ``low`` or not a number is an error, above ``high`` is clamped."""
    values = query.get(name)
    if not values:
        return default
    text = values[-1].strip()
    if not re.match(r"^\d+$", text, re.ASCII):
        raise ValueError("%s must be an integer >= %d" % (name, low))
    digits = text.lstrip("0") or "0"
    if len(digits) > 18:  # beyond any limit; int() refuses 5,000 digits, sqlite 2 ** 63
        return high
    if int(digits) < low:
        raise ValueError("%s must be an integer >= %d" % (name, low))
    return min(int(digits), high)


def query_text(query: Query, name: str) -> Optional[str]:
    """A text query parameter; when repeated the last one wins, as with ``query_int``."""
    values = query.get(name)
    return values[-1] if values else None
