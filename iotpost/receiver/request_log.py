"""The twin's record of every request it received, kept before faults or processing touch it.

Usage: ``twin.requests.wait_for(3); [r.json() for r in twin.requests.for_path("/api/v1/telemetry")]``

Tests assert on what actually reached the wire (a retried POST, a reused connection), so a
request is appended as soon as its body is read, whatever answer it later gets.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, Iterator, List, NamedTuple, Optional


class SeenRequest(NamedTuple):
    """One request as it arrived, recorded before faults or processing touch it."""

    method: str
    path: str  # the request target, query string included
    headers: Dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    received_at: float  # time.monotonic()
    wall_time: float  # time.time()
    client_port: int = 0  # the client's source port: one value per kept-alive connection

    def json(self) -> Any:
        """The body parsed as JSON (tests)."""
        return json.loads(self.body.decode("utf-8"))


class SeenRequests:
    """The thread-safe list of requests a twin received, in arrival order.

    ``limit`` keeps only the newest N (a long-running receiver.py must not grow forever);
    ``total`` counts every request ever recorded.
    """

    def __init__(self, limit: Optional[int] = None) -> None:
        self._items: List[SeenRequest] = []
        self._cond = threading.Condition()
        self._waiting = 0  # callers in wait_for: appends wake them, and only then (notify_all is not free)
        self.limit = limit
        self.total = 0

    def append(self, item: SeenRequest) -> None:
        with self._cond:
            self._items.append(item)
            self.total += 1
            if self.limit is not None and len(self._items) > self.limit:
                del self._items[: len(self._items) - self.limit]
            if self._waiting:
                self._cond.notify_all()

    def snapshot(self) -> List[SeenRequest]:
        """A copy, safe to iterate while requests keep arriving."""
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        """Forget what was seen (``total`` restarts too)."""
        with self._cond:
            del self._items[:]
            self.total = 0

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` requests were seen in all (False on timeout)."""
        with self._cond:
            self._waiting += 1
            try:
                return self._cond.wait_for(lambda: self.total >= count, timeout)
            finally:
                self._waiting -= 1

    def for_path(self, path: str, method: Optional[str] = None) -> List[SeenRequest]:
        """Requests whose path (without query) is ``path``."""
        return [r for r in self.snapshot()
                if r.path.split("?", 1)[0] == path and (method is None or r.method == method)]

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[SeenRequest]:
        return iter(self.snapshot())

    def __eq__(self, other: object) -> bool:
        """Compares with a list too, so a test can say ``twin.requests == []``."""
        if isinstance(other, SeenRequests):
            other = other.snapshot()
        if isinstance(other, (list, tuple)):
            return self.snapshot() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, index: Any) -> Any:
        with self._cond:
            return self._items[index]

    def __repr__(self) -> str:
        return "SeenRequests(%d)" % len(self)
