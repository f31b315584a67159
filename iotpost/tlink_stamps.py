"""One device's push times: never two different pushes in the same second.

Usage: ``times = PushTimes(2864, env, ledger=spool)``; ``stamp = times.generated()`` or
``times.own("2026-11-27 16:45:03", "<stdin> line 3")``

TLINK stamps a push to the second and the reference receiver keeps one reading per sensor and
second: a second push in the same second is answered 200 while nothing new is stored. So a
generated push whose second is taken waits (env.sleep) for the next one, and a reading that brings
its own time is refused, never rewritten, when it repeats the previous push's. With --spool the
last time per device is kept in the spool's ``state`` table, read and written in one transaction,
so two cron runs in the same second take different seconds.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Any, Optional

from .environment import Environment, reading_time
from .errors import InputDataError

# A last time this far ahead of the clock is taken as another run's (wait for the second after it);
# further ahead it came from a reading's own time, and waiting for it would stall a run for long.
AHEAD_WINDOW_S = 60


def epoch_of(stamp: str) -> int:
    import datetime

    return int(datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp())  # local, as stamped


def next_second(wanted: int, last: Optional[int]) -> int:
    """The second to stamp: ``wanted`` (now), or the one after ``last`` when that is now or just ahead."""
    if last is not None and wanted <= last <= wanted + AHEAD_WINDOW_S:
        return last + 1
    return wanted


class PushTimes:
    """Hands out push times for one device; ``ledger`` (a SqliteSpool) carries them across runs."""

    def __init__(self, device_id: int, env: Environment, ledger: Any = None) -> None:
        self.device_id = device_id
        self.env = env
        self.ledger = ledger
        self.name = "tlink_last_time:%d" % device_id
        self.last: Optional[int] = None  # the previous push's second in this run

    def _record(self, choose) -> int:
        if self.ledger is None:
            return choose(None)
        return self.ledger.advance_state(self.name, choose, "while recording the last push time")

    def generated(self) -> float:
        """The time to stamp a generated push with, after waiting for a free second if needed."""
        now = reading_time(self.env)  # refuses an unset clock

        def choose(stored: Optional[int]) -> int:
            known = [t for t in (self.last, stored) if t is not None]
            return next_second(int(now), max(known) if known else None)

        chosen = self._record(choose)
        if chosen > now:
            self.env.sleep(chosen - now)
        self.last = chosen
        return float(chosen)

    def own(self, stamp: str, where: str) -> None:
        """Accept a reading's own time, or refuse it (65) when it repeats the previous push's."""
        epoch = epoch_of(stamp)

        def choose(stored: Optional[int]) -> int:
            previous = self.last if self.last is not None else stored
            if previous == epoch:
                raise InputDataError(
                    "%s: time %s repeats the previous push's for device %d; the receiver keeps one reading "
                    "per sensor and second, so it would store nothing new (refused, not rewritten)"
                    % (where, stamp, self.device_id),
                    hint="give each line its own second, or leave time out to stamp the line when it is sent")
            return epoch

        self.last = self._record(choose)
