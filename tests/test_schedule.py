"""Pacing: payloads on a fixed grid from the start, without drift and without catch-up bursts."""

from __future__ import annotations

import unittest
from typing import List

from iotpost.environment import Environment, SimulatedClock
from iotpost.schedule import paced


class SimulatedClockTest(unittest.TestCase):
    def test_time_passes_only_when_slept(self) -> None:
        clock = SimulatedClock(wall_start=1000.0)
        self.assertEqual((clock.monotonic(), clock.wall()), (0.0, 1000.0))
        self.assertEqual(clock.monotonic(), 0.0)
        clock.sleep(2.5)
        self.assertEqual((clock.monotonic(), clock.wall()), (2.5, 1002.5))

    def test_negative_sleep_does_not_go_back(self) -> None:
        clock = SimulatedClock(wall_start=0.0)
        clock.sleep(1.0)
        clock.sleep(-5.0)
        self.assertEqual(clock.monotonic(), 1.0)

    def test_environment_takes_the_clock(self) -> None:
        clock = SimulatedClock(wall_start=50.0)
        env = Environment(monotonic=clock.monotonic, wall=clock.wall, sleep=clock.sleep)
        env.sleep(600)
        self.assertEqual((env.monotonic(), env.wall()), (600.0, 650.0))


class DueTimesTest(unittest.TestCase):
    """When payloads are due if sending takes no time (the grid itself)."""

    @staticmethod
    def due(count: int, interval: float, period_s: float) -> List[float]:
        clock = SimulatedClock(wall_start=0.0)
        return [clock.monotonic() for _ in paced(count, interval, period_s, clock.monotonic, clock.sleep)]

    def test_count(self) -> None:
        self.assertEqual(self.due(3, 5.0, 0), [0.0, 5.0, 10.0])
        self.assertEqual(self.due(1, 5.0, 0), [0.0])
        self.assertEqual(self.due(0, 5.0, 0), [])

    def test_period_ignores_count(self) -> None:
        self.assertEqual(self.due(1, 10.0, 60.0), [0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
        self.assertEqual(self.due(100, 10.0, 25.0), [0.0, 10.0, 20.0])
        self.assertEqual(self.due(0, 10.0, 25.0), [0.0, 10.0, 20.0])

    def test_period_end_is_exclusive(self) -> None:
        self.assertEqual(self.due(1, 10.0, 30.0), [0.0, 10.0, 20.0])

    def test_interval_zero(self) -> None:
        self.assertEqual(self.due(4, 0.0, 0), [0.0, 0.0, 0.0, 0.0])
        self.assertEqual(self.due(4, 0.0, 60.0), [0.0])  # a period with no interval: one send

    def test_ten_minute_period(self) -> None:
        dues = self.due(1, 5.0, 600.0)
        self.assertEqual(len(dues), 120)
        self.assertEqual(dues[-1], 595.0)


class PacedTest(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = SimulatedClock(wall_start=0.0)
        self.clock.sleep(1000.0)  # the monotonic start is not zero
        self.sleeps: List[float] = []

    def sleep(self, seconds: float) -> None:
        self.assertGreater(seconds, 0)  # never asked to sleep for nothing or backwards
        self.sleeps.append(seconds)
        self.clock.sleep(seconds)

    def run_paced(self, count: int, interval: float, period_s: float = 0, work=None) -> List[float]:
        times = []
        for n in paced(count, interval, period_s, self.clock.monotonic, self.sleep):
            times.append(self.clock.monotonic() - 1000.0)
            if work:
                self.clock.sleep(work(n))
        return times

    def test_exactly_on_the_grid(self) -> None:
        self.assertEqual(self.run_paced(4, 5.0), [0.0, 5.0, 10.0, 15.0])
        self.assertEqual(self.sleeps, [5.0, 5.0, 5.0])

    def test_first_payload_goes_at_once(self) -> None:
        self.run_paced(1, 60.0)
        self.assertEqual(self.sleeps, [])

    def test_time_spent_sending_is_not_added(self) -> None:
        # Each send takes 1.5 s; the next still goes at start + n * interval (no drift).
        times = self.run_paced(5, 5.0, work=lambda n: 1.5)
        self.assertEqual(times, [0.0, 5.0, 10.0, 15.0, 20.0])
        self.assertEqual(self.sleeps, [3.5] * 4)

    def test_period(self) -> None:
        self.assertEqual(self.run_paced(999, 10.0, period_s=35.0), [0.0, 10.0, 20.0, 30.0])

    def test_ten_minute_period_runs_without_waiting(self) -> None:
        times = self.run_paced(1, 1.0, period_s=600.0, work=lambda n: 0.25)
        self.assertEqual(len(times), 600)
        self.assertEqual(times[-1], 599.0)

    def test_slow_consumer_next_goes_at_once_then_back_on_grid(self) -> None:
        # Payload 1 starts at 5 and takes 7 s, ending at 12, past slot 2 (due at 10): payload 2 goes
        # at once at 12, and payload 3 is back on the grid at 15, not at 12 + 5 = 17.
        durations = {1: 7.0}
        times = self.run_paced(5, 5.0, work=lambda n: durations.get(n, 0.0))
        self.assertEqual(times, [0.0, 5.0, 12.0, 15.0, 20.0])
        self.assertEqual(self.sleeps, [5.0, 3.0, 5.0])

    def test_overrun_does_not_double_burst(self) -> None:
        # Payload 0 overruns into slot 1 (ends at 6): payload 1 at once, and then a single payload
        # per slot again; never two payloads at the same instant.
        times = self.run_paced(4, 5.0, work=lambda n: 6.0 if n == 0 else 0.0)
        self.assertEqual(times, [0.0, 6.0, 10.0, 15.0])
        self.assertEqual(len(set(times)), len(times))

    def test_overrun_by_two_slots_does_not_burst(self) -> None:
        # Payload 0 ends at 12, past slots 1 and 2: one late payload at once, the past slot skipped.
        times = self.run_paced(4, 5.0, work=lambda n: 12.0 if n == 0 else 0.0)
        self.assertEqual(times, [0.0, 12.0, 15.0, 20.0])  # still `count` payloads

    def test_overrun_with_period_skips_past_slots(self) -> None:
        times = self.run_paced(1, 5.0, period_s=30.0, work=lambda n: 12.0 if n == 0 else 0.0)
        self.assertEqual(times, [0.0, 12.0, 15.0, 20.0, 25.0])  # nothing due at or after 30

    def test_every_send_slow_stays_one_at_a_time(self) -> None:
        # Each send takes 1.5 intervals: never two payloads at the same instant, never past `count`.
        times = self.run_paced(6, 2.0, work=lambda n: 3.0)
        self.assertEqual(times, [0.0, 3.0, 6.0, 9.0, 12.0, 15.0])


if __name__ == "__main__":
    unittest.main()
