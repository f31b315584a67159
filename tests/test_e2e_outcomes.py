"""What a run's exit code and last lines say, end to end: where payloads ended up, not the trouble on the way.

Covers issue 8's "no false alarms" items: retries ridden out are exit 0, a poison payload neither
blocks the spool nor is dead-lettered during an outage, an empty input is an error, an unset clock
is refused before a reading is stamped, --timestamps and the --quiet backlog line.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import unittest
from pathlib import Path

from iotpost import tesaiot_cli
from iotpost.environment import Environment, earliest_plausible_time
from iotpost.errors import ClockNotSet
from iotpost.receiver.faults import FaultPlan
from tests.support import SENDER, clear_proxy_env, run_cli
from tests.test_e2e_sender import DEVICE, SenderTestCase

FAST = ("--retry-backoff", "0.01")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")


def posts(twin):
    return [r for r in twin.requests if r.method == "POST"]


def spool_rows(path: Path):
    db = sqlite3.connect(str(path))
    try:
        pending = db.execute("SELECT body, failed_runs FROM spool ORDER BY id").fetchall()
        dead = db.execute("SELECT body, status, reason FROM dead_letters ORDER BY id").fetchall()
        return [(bytes(b), n) for b, n in pending], [(bytes(b), s, r) for b, s, r in dead]
    finally:
        db.close()


class ExitCodeFromWherePayloadsEndUp(SenderTestCase):
    def test_a_payload_that_ran_out_of_retries_but_arrived_later_in_the_run_is_exit_0(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["503"], retry_after=0)
        proc = self.send(self.bundle(twin), "--count", "2", "--interval", "0", "--retries", "0", "--json", *FAST)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 2)
        self.assertNotIn("error:", proc.stderr)
        summary = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual((summary["delivered"], summary["undelivered"], summary["exit_code"]), (2, 0, 0))

    def test_the_reported_thirty_percent_fault_run_delivers_everything_and_exits_0(self):
        twin = self.twin()
        twin.faults = FaultPlan.random(rate=0.3, seed=7, retry_after=0)
        proc = self.send(self.bundle(twin), "--count", "10", "--interval", "0", "--json", *FAST)
        summary = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual(summary["delivered"], 10)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 10)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(summary["exit_code"], 0)
        self.assertNotIn("error:", proc.stderr)

    def test_a_payload_still_waiting_at_the_end_is_75(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["503"] * 5, retry_after=0)
        proc = self.send(self.bundle(twin), "--retries", "1", *FAST)
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("1 payload(s) not delivered", proc.stderr)
        self.assertIn("503", proc.stderr)


class PoisonPayloads(SenderTestCase):
    """A payload the platform always fails with 500 while it takes others (TLINK's too-long rawData)."""

    def setUp(self) -> None:
        super().setUp()
        self.twin_ = self.twin()
        self.twin_.faults = FaultPlan.poison(b"POISON")
        self.spool = self.tmp / "spool.sqlite3"
        self.bundle_ = self.bundle(self.twin_)

    def run_once(self, data: str, *args):
        return self.send(self.bundle_, "--data", data, "--spool", self.spool, "--retries", "1", *FAST, *args)

    def test_it_neither_blocks_later_readings_nor_stays_forever(self):
        proc = self.run_once('{"v": "POISON"}', "--dead-letter-after", "2")
        self.assertEqual(proc.returncode, 75, proc.stderr)  # alone: the platform was not seen up
        pending, dead = spool_rows(self.spool)
        self.assertEqual(([n for _, n in pending], dead), ([0], []))

        proc = self.run_once('{"v": 1}', "--dead-letter-after", "2")
        self.assertEqual(proc.returncode, 75, proc.stderr)  # delivered the new one, the poison waits
        self.assertEqual(self.twin_.store.count_telemetry(DEVICE), 1)
        pending, dead = spool_rows(self.spool)
        self.assertEqual([n for _, n in pending], [1])

        proc = self.run_once('{"v": 2}', "--dead-letter-after", "2", "--json")
        self.assertEqual(proc.returncode, 65, proc.stderr)
        self.assertEqual(self.twin_.store.count_telemetry(DEVICE), 2)
        pending, dead = spool_rows(self.spool)
        self.assertEqual(pending, [])
        self.assertEqual(len(dead), 1)
        self.assertIn(b"POISON", dead[0][0])
        self.assertEqual(dead[0][1], 500)
        self.assertIn("dead letters", proc.stderr)
        summary = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual((summary["rejected"], summary["delivered"]), (1, 1))

        # Back in the queue once the platform is fixed, and delivered by the next flush.
        self.twin_.faults = None
        listed = run_cli(SENDER, "--certs-dir", self.bundle_, "--spool", self.spool, "--dead-letters")
        dead_id = json.loads(listed.stdout.splitlines()[0])["id"]
        proc = self.send(self.bundle_, "--spool", self.spool, "--spool-requeue", str(dead_id))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        proc = self.send(self.bundle_, "--spool", self.spool, "--flush-spool")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.twin_.store.count_telemetry(DEVICE), 3)

    def test_a_backlog_behind_the_poison_is_delivered_in_the_same_run(self):
        self.twin_.go_down()
        for value in ("POISON", 1, 2):
            self.assertEqual(self.run_once(json.dumps({"v": value}), "--retries", "0").returncode, 75)
        self.twin_.come_back()
        proc = self.send(self.bundle_, "--spool", self.spool, "--flush-spool", *FAST)
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertEqual(self.twin_.store.count_telemetry(DEVICE), 2)
        self.assertEqual([n for _, n in spool_rows(self.spool)[0]], [1])

    def test_an_outage_never_dead_letters_anything(self):
        self.run_once('{"v": "POISON"}')
        self.twin_.go_down()
        for value in range(3):
            proc = self.run_once(json.dumps({"v": value}), "--dead-letter-after", "1", "--retries", "0")
            self.assertEqual(proc.returncode, 75, proc.stderr)
        pending, dead = spool_rows(self.spool)
        self.assertEqual(dead, [])
        self.assertEqual(len(pending), 4)
        self.assertTrue(all(n == 0 for _, n in pending))

    def test_502_503_504_and_429_mean_down_not_poison(self):
        for status in ("502", "503", "504", "429"):
            with self.subTest(status=status):
                twin = self.twin()
                spool = self.tmp / ("s%s.sqlite3" % status)
                bundle = self.bundle(twin, name="b" + status)
                twin.faults = FaultPlan.poison(b"POISON", status, retry_after=0)
                self.send(bundle, "--data", '{"v": "POISON"}', "--spool", spool, "--retries", "0")
                proc = self.send(bundle, "--data", '{"v": 1}', "--spool", spool, "--retries", "0",
                                 "--dead-letter-after", "1", *FAST)
                self.assertEqual(proc.returncode, 75, proc.stderr)
                pending, dead = spool_rows(spool)
                self.assertEqual(dead, [])
                self.assertEqual(len(pending), 2)  # the run stopped at the outage, as before


class RejectedPayloadsDoNotBlock(SenderTestCase):
    def test_a_rejected_stdin_line_costs_only_itself(self):
        twin = self.twin()
        twin.faults = FaultPlan.poison(b"POISON", "400")
        lines = "".join(json.dumps({"v": v}) + "\n" for v in ("POISON", 1, 2, 3))
        proc = self.send(self.bundle(twin), "--data-file", "-", stdin=lines)
        self.assertEqual(proc.returncode, 65, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 3)

    def test_any_4xx_that_means_bad_data_is_a_dead_letter_not_a_blocked_spool(self):
        twin = self.twin()
        twin.faults = FaultPlan.poison(b"POISON", "409")
        spool = self.tmp / "spool.sqlite3"
        proc = self.send(self.bundle(twin), "--data", '{"v": "POISON"}', "--spool", spool)
        self.assertEqual(proc.returncode, 65, proc.stderr)
        pending, dead = spool_rows(spool)
        self.assertEqual((pending, [s for _, s, _ in dead]), ([], [409]))
        proc = self.send(self.bundle(twin), "--data", '{"v": 1}', "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_a_platform_failing_everything_costs_two_payloads_not_the_whole_backlog(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        twin.go_down()
        for _ in range(6):
            self.assertEqual(self.send(self.bundle(twin), "--spool", spool, "--retries", "0").returncode, 75)
        twin.come_back()
        twin.faults = FaultPlan.script(["500"] * 50)
        proc = self.send(self.bundle(twin), "--spool", spool, "--flush-spool", "--retries", "1", *FAST)
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertEqual(len(posts(twin)), 4)  # the oldest (2 attempts), then the newest as a probe (2)
        pending, dead = spool_rows(spool)
        self.assertEqual((len(pending), dead), (6, []))
        self.assertTrue(all(n == 0 for _, n in pending))  # never up in that run: nothing counted


class EmptyInput(SenderTestCase):
    def test_empty_stdin_is_65_and_says_so_even_under_quiet(self):
        twin = self.twin()
        for extra in ((), ("--quiet",)):
            with self.subTest(extra=extra):
                proc = self.send(self.bundle(twin), "--data-file", "-", *extra, stdin="")
                self.assertEqual(proc.returncode, 65, proc.stderr)
                self.assertIn("no reading", proc.stderr)
        blank = self.send(self.bundle(twin), "--data-file", "-", stdin="\n  \n")
        self.assertEqual(blank.returncode, 65, blank.stderr)
        self.assertEqual(posts(twin), [])

    def test_empty_stdin_still_delivers_the_backlog(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        twin.go_down()
        self.assertEqual(self.send(self.bundle(twin), "--spool", spool, "--retries", "0").returncode, 75)
        twin.come_back()
        proc = self.send(self.bundle(twin), "--spool", spool, "--data-file", "-", stdin="")
        self.assertEqual(proc.returncode, 65, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_flush_spool_with_an_empty_spool_is_0(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--spool", self.tmp / "s.sqlite3", "--flush-spool")
        self.assertEqual(proc.returncode, 0, proc.stderr)


class UnsetClock(SenderTestCase):
    """A Pi without an RTC before NTP: run in-process with its clock injected."""

    def setUp(self) -> None:
        super().setUp()
        clear_proxy_env(self)

    def run_with_clock(self, wall: float, *argv: str):
        out, err = io.StringIO(), io.StringIO()
        env = Environment(stdin=io.StringIO(""), stdout=out, stderr=err, wall=lambda: wall)
        return tesaiot_cli._main(list(argv), [], env=env), out.getvalue(), err.getvalue()

    def test_a_clock_before_this_release_is_refused_before_stamping_and_nothing_is_spooled(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        with self.assertRaises(ClockNotSet) as caught:
            self.run_with_clock(3600.0, "--certs-dir", str(self.bundle(twin)), "--spool", str(spool))
        self.assertEqual(caught.exception.exit_code, 75)
        self.assertIn("the system clock is not set (it says 1970-01-01)", caught.exception.message)
        self.assertEqual(posts(twin), [])
        pending, _ = spool_rows(spool)
        self.assertEqual(pending, [])

    def test_readings_that_carry_their_own_timestamp_are_sent_as_they_are(self):
        twin = self.twin()
        data = self.tmp / "data.jsonl"
        data.write_text('{"timestamp": "2026-12-01T10:00:00+07:00", "data": {"t": 1}}\n', encoding="utf-8")
        code, _, err = self.run_with_clock(3600.0, "--certs-dir", str(self.bundle(twin)), "--data-file", str(data))
        self.assertEqual(code, 0, err)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_the_release_date_is_the_limit(self):
        limit = earliest_plausible_time()
        twin = self.twin()
        code, _, err = self.run_with_clock(limit + 1, "--certs-dir", str(self.bundle(twin)))
        self.assertEqual(code, 0, err)
        with self.assertRaises(ClockNotSet):
            self.run_with_clock(limit - 1, "--certs-dir", str(self.bundle(twin)))


class OperatorOutput(SenderTestCase):
    def test_timestamps_start_every_human_line_including_the_final_error(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["503"] * 4, retry_after=0)
        proc = self.send(self.bundle(twin), "--retries", "1", "--timestamps", *FAST)
        self.assertEqual(proc.returncode, 75, proc.stderr)
        lines = proc.stdout.splitlines() + proc.stderr.splitlines()
        self.assertGreaterEqual(len(lines), 4)
        for line in lines:
            self.assertRegex(line, STAMP)
        self.assertTrue(any(": error: " in line for line in proc.stderr.splitlines()))

    def test_json_records_carry_at(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--json", "--count", "2", "--interval", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        for line in proc.stdout.splitlines():
            record = json.loads(line)
            self.assertRegex(record["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")

    def test_quiet_says_in_one_line_that_a_backlog_went_out(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        twin.go_down()
        for _ in range(2):
            self.assertEqual(self.send(self.bundle(twin), "--spool", spool, "--retries", "0").returncode, 75)
        twin.come_back()
        proc = self.send(self.bundle(twin), "--spool", spool, "--quiet")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proc.stdout.splitlines()), 1, proc.stdout)
        self.assertRegex(proc.stdout, r"delivered a backlog of 2 payload\(s\); the oldest had waited \d+ s")
        quiet_again = self.send(self.bundle(twin), "--spool", spool, "--quiet")
        self.assertEqual((quiet_again.returncode, quiet_again.stdout), (0, ""))


if __name__ == "__main__":
    unittest.main()
