"""Time as the twin writes and reads it, for every platform module: ISO 8601 in UTC and start_time filters.

Usage: ``iso_utc(store.now())`` · ``parse_start_time("-1h", now)`` · ``parse_iso8601(text)``

Kept apart from store.py so storage modules (tlink_store, a platform's tables) need not import the
store that mixes them in.
"""

from __future__ import annotations

import datetime as _dt
import re

from ..payloads import parse_iso8601  # noqa: F401 - one parser for sender and twin

UTC = _dt.timezone.utc

_RELATIVE = re.compile(r"^-(\d+)([smhdw])$", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_start_time(text: str, now: _dt.datetime) -> _dt.datetime:
    """A start_time filter: ISO 8601, or relative to ``now`` like ``-90s``, ``-30m``, ``-1h``, ``-7d``."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - _dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return parse_iso8601(text.strip())


def iso_utc(epoch: float) -> str:
    """The server's clock as ISO 8601 UTC with an explicit +00:00 (what the platform answers)."""
    return _dt.datetime.fromtimestamp(epoch, tz=UTC).isoformat()
