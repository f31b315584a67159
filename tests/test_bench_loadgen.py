"""bench/loadgen.py measures what it claims: every 200 it counts is a row the twin committed.

Usage: python -m unittest tests.test_bench_loadgen

A short real run (worker processes, verified TLS, the twin on a file database); no timing is
asserted, only that load was applied, nothing failed, and answered equals stored (compare()
refuses a run where they differ).
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

try:
    import resource  # noqa: F401  (POSIX only, as the load generator's CPU accounting is)
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]


@unittest.skipIf(resource is None, "the load generator reports CPU through the POSIX resource module")
class LoadgenTest(unittest.TestCase):
    def test_a_short_run_against_the_twin_and_the_noop_server(self):
        sys.path.insert(0, str(BENCH))
        self.addCleanup(sys.path.remove, str(BENCH))
        import loadgen

        results = loadgen.compare([2], seconds=0.3, rounds=1, procs=2, servers=("noop", "twin-file"))
        for kind in ("noop", "twin-file"):
            (load,) = results[kind][2]
            self.assertGreater(load.requests, 0, kind)
            self.assertEqual(load.errors, 0, kind)
            self.assertGreater(load.cpu, 0.0, kind)  # the workers' CPU was collected
        table = loadgen.report(results, 0.3)
        self.assertIn("| twin-file | 2 |", table)


if __name__ == "__main__":
    unittest.main()
