"""The spool of a run without --spool: the same interface as the SQLite spool, kept in memory.

Usage: ``spool = MemorySpool(); item = spool.put("tesaiot", body, key, now); spool.claim("tesaiot", now)``

A run without --spool still goes through one code path (``delivery.Sender`` over a spool), so
order, retries and held payloads behave the same; nothing survives the process. It lives apart
from ``spool.py`` so a one-off send loads none of the SQLite spool's code.
"""

from __future__ import annotations

from itertools import islice

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Dict, Iterator, List, Optional
from .records import Record


class SpoolItem(Record):
    id: int
    profile: str
    key: str  # the Idempotency-Key, fixed for the payload's life
    body: bytes
    created: float  # wall-clock seconds
    attempts: int
    failed_runs: int = 0  # runs in which the platform failed this payload (last, so old call sites still work)


class MemorySpool:
    """The spool of a run without --spool: order and retries as usual, nothing kept after exit."""

    persistent = False

    def __init__(self) -> None:
        self._items: Dict[int, SpoolItem] = {}
        self._dead: Dict[int, SpoolItem] = {}
        self._claimed: set = set()
        self._next = 1
        self.dropped = 0
        self.warnings: List[str] = []
        self.delivered_total = 0
        self.last_success_at: Optional[float] = None
        self.last_error: Optional[str] = None
        self.last_error_at: Optional[float] = None

    def put(self, profile: str, body: bytes, key: str, now: float) -> SpoolItem:
        item = SpoolItem(self._next, profile, key, body, now, 0, 0)  # every field: Record's quick path
        self._items[item.id] = item
        self._next += 1
        return item

    def _take(self, profile: str, newest: bool) -> Iterator[SpoolItem]:
        """Unclaimed payloads of ``profile``, oldest (or newest) first, each claimed as it is taken."""
        for item_id in sorted(self._items, reverse=newest):
            if item_id not in self._claimed and self._items[item_id].profile == profile:
                self._claimed.add(item_id)
                yield self._items[item_id]

    def claim(self, profile: str, now: float, newest: bool = False) -> Optional[SpoolItem]:
        return next(self._take(profile, newest), None)

    def claim_batch(self, profile: str, now: float, limit: int, newest: bool = False) -> List[SpoolItem]:
        """Up to ``limit`` of the oldest (or newest) unclaimed payloads, claimed together (for batched uploads)."""
        return list(islice(self._take(profile, newest), max(limit, 0)))

    def ack(self, item: SpoolItem, now: Optional[float] = None) -> None:
        self._items.pop(item.id, None)
        self._claimed.discard(item.id)
        self.delivered_total += 1
        if now is not None:
            self.last_success_at = now

    def ack_batch(self, items: List[SpoolItem], now: Optional[float] = None) -> None:
        for item in items:
            self.ack(item, now)

    def release_batch(self, items: List[SpoolItem], error: str = "", attempts: int = 0,
                      status: Optional[int] = None, now: Optional[float] = None) -> None:
        for item in items:
            self.release(item, error, attempts, status, now)

    def release(self, item: SpoolItem, error: str = "", attempts: int = 0, status: Optional[int] = None,
                now: Optional[float] = None) -> None:
        self._claimed.discard(item.id)
        if item.id in self._items:
            self._items[item.id] = self._items[item.id]._replace(attempts=item.attempts + attempts)
        if error:
            self.last_error, self.last_error_at = error, now

    def mark_failed_run(self, item_id: int) -> int:
        if item_id not in self._items:
            return 0
        item = self._items[item_id]
        self._items[item_id] = item._replace(failed_runs=item.failed_runs + 1)
        return item.failed_runs + 1

    def dead_letter(self, item: SpoolItem, status: int, reason: str, now: float) -> None:
        self._items.pop(item.id, None)
        self._claimed.discard(item.id)
        self._dead[item.id] = item

    def drop(self, item_id: int, now: float) -> bool:
        # This run is the only one that can hold a claim here, and it asked: no "in use" case.
        self._claimed.discard(item_id)
        return self._items.pop(item_id, None) is not None

    def requeue(self, dead_letter_id: int, now: float) -> bool:
        item = self._dead.pop(dead_letter_id, None)
        if item is None:
            return False
        self._items[item.id] = item._replace(attempts=0, failed_runs=0)
        return True

    def release_all(self) -> None:
        self._claimed.clear()

    def pending(self, profile: Optional[str] = None) -> int:
        return sum(1 for i in self._items.values() if profile is None or i.profile == profile)

    def unclaimed(self, profile: str, now: float) -> int:
        return sum(1 for i in self._items.values() if i.profile == profile and i.id not in self._claimed)

    def close(self) -> None:
        pass
