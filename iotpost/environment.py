"""The outside world a run touches (streams, clocks, sleep, randomness), injectable for tests.

Usage: ``env = Environment()``; tests pass ``Environment(sleep=fake.sleep, monotonic=fake.now)``.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Callable, Optional


@dataclass
class Environment:
    stdin: Optional[IO[str]] = None
    stdout: Optional[IO[str]] = None
    stderr: Optional[IO[str]] = None
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[], float] = field(default_factory=lambda: random.Random().random)

    def __post_init__(self) -> None:
        self.stdin = self.stdin or sys.stdin
        self.stdout = self.stdout or sys.stdout
        self.stderr = self.stderr or sys.stderr


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
