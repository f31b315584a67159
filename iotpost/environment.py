"""The outside world a run touches (streams, clocks, sleep, randomness), injectable for tests.

Usage: ``env = Environment()``; tests pass ``Environment(sleep=fake.sleep, monotonic=fake.now)``.
"""

from __future__ import annotations

import random
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import IO, Callable, Optional


class Environment:
    """Plain attributes, set once; a class rather than a dataclass to keep start-up lean."""

    def __init__(
        self,
        stdin: Optional[IO[str]] = None,
        stdout: Optional[IO[str]] = None,
        stderr: Optional[IO[str]] = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rand: Optional[Callable[[], float]] = None,
    ) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.monotonic = monotonic
        self.wall = wall
        self.sleep = sleep
        self.rand = rand or random.Random().random


_EARLIEST: list = []  # computed once: every reading of a burst asks


def earliest_plausible_time() -> float:
    """Midnight UTC of this release's date: no real reading it stamps can be older."""
    if _EARLIEST:
        return _EARLIEST[0]
    import datetime  # the payload modules import it anyway; time.strptime would pull in much more

    from . import RELEASE_DATE

    year, month, day = (int(part) for part in RELEASE_DATE.split("-"))
    _EARLIEST.append(datetime.datetime(year, month, day, tzinfo=datetime.timezone.utc).timestamp())
    return _EARLIEST[0]


def reading_time(env: "Environment") -> float:
    """The wall clock for stamping a reading, refused (75) while the clock is plainly not set.

    A Raspberry Pi without a real-time clock boots in 1970 (or at its last shutdown) until NTP
    syncs; a reading stamped then is wrong forever, so it is better not taken now and taken by
    the next run.
    """
    now = env.wall()
    if now < earliest_plausible_time():
        from .errors import ClockNotSet

        raise ClockNotSet("the system clock is not set (it says %s), while stamping a reading"
                          % time.strftime("%Y-%m-%d", time.gmtime(max(0.0, now))),
                          hint="wait for NTP to set it (timedatectl, chronyc tracking) or set it by hand; "
                          "readings that carry their own timestamp are sent as they are")
    return now


class SimulatedClock:
    """Time that passes only when slept: dry runs show the real schedule without waiting."""

    def __init__(self, wall_start: float) -> None:
        self._wall0 = wall_start
        self._t = 0.0

    def monotonic(self) -> float:
        return self._t

    def wall(self) -> float:
        return self._wall0 + self._t

    def sleep(self, seconds: float) -> None:
        self._t += max(0.0, seconds)
