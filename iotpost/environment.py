"""The outside world a run touches (streams, clocks, sleep, randomness), injectable for tests.

Usage: ``env = Environment()``; tests pass ``Environment(sleep=fake.sleep, monotonic=fake.now)``.
"""

from __future__ import annotations

import random
import sys
import time
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
