"""When payloads are made: from fixed start times, so a slow send never makes the schedule drift.

Usage: ``for n in paced(count=3, interval=5, period_s=0, monotonic=time.monotonic, sleep=time.sleep): ...``

Payload n is due at start + n * interval. A send that overruns its slot makes the next payload go
at once, never a burst to catch up twice. With a period, payloads are made while their due time is
inside it; the count is then ignored.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Callable, Iterator


def paced(count: int, interval: float, period_s: float, monotonic: Callable[[], float],
          sleep: Callable[[float], None]) -> Iterator[int]:
    """Yield 0, 1, 2... each at its due time (sleeping in between with the injected sleep).

    Due times sit on the grid start + slot * interval. When sending overran one or more slots,
    the late payload goes at once and the slots already past are skipped, so the run returns to
    the grid instead of bursting to catch up. With --count that still makes ``count`` payloads.
    """
    start = monotonic()
    n = 0
    slot = 0
    while True:
        due = slot * interval
        if period_s > 0:
            if due >= period_s or (interval <= 0 and n > 0):
                return
        elif n >= count:
            return
        wait = start + due - monotonic()
        if wait > 0:
            sleep(wait)
        yield n
        n += 1
        slot += 1
        if interval > 0:
            passed = int((monotonic() - start) // interval)  # the latest slot whose time has come
            slot = max(slot, passed)
