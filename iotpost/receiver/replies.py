"""What the twin answers: a status, a JSON body and extra headers, before any byte is written.

Usage: ``return error_reply(404, "Not found", "NOT_FOUND")``

Route functions and fault injection both return a ``Reply`` rather than writing to a socket, so
an answer can be checked without a connection and a fault can still spoil it afterwards. The
error bodies copy the platform's shape: ``{"error": message, "code": CODE}``.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional

Json = Dict[str, Any]

PROCESSING_ERROR = {"error": "Failed to process telemetry data", "code": "PROCESSING_ERROR"}
INVALID_API_KEY = {"error": "Invalid API key", "code": "INVALID_API_KEY"}
# TLINK's reference is Flask: an unhandled error is its default 500 (an HTML page), said in JSON here.
TLINK_SERVER_ERROR = {"error": "Internal Server Error"}


class Reply(NamedTuple):
    """One answer, rendered to bytes only by the request handler."""

    status: int
    body: Json
    headers: Dict[str, str] = {}
    flask_json: bool = False  # rendered as Flask's jsonify does (compact, sorted keys, "\n"): TLINK's reference
    rendered: Optional[bytes] = None  # the body as json.dumps(body) encodes it, when a route has it already


def error_reply(status: int, message: str, code: Optional[str] = None, **headers: str) -> Reply:
    """A JSON error; the ``code`` is left out where the platform sends none (TLINK, some reads)."""
    body: Json = {"error": message}
    if code is not None:
        body["code"] = code
    return Reply(status, body, dict(headers))


def validation_error(message: str) -> Reply:
    """The TESAIoT 400 for a request that parsed but breaks the contract."""
    return error_reply(400, message, "VALIDATION_ERROR")
