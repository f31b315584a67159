"""--batch-size end to end: backlogs and bursts in batch requests, each payload stored once, whatever the answer.

Each test runs the real post_https_sample.py against the twin over verified TLS; the spooled
backlogs are written with SqliteSpool itself, as an earlier run would have left them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List

from iotpost.payloads import encode, iso_utc, make_payload
from iotpost.receiver.faults import FaultPlan
from iotpost.receiver.tesaiot_api import BatchFaults, set_batch_faults
from iotpost.spool import SqliteSpool
from tests.support import SENDER, TLINK, run_cli
from tests.test_e2e_reliability import keys_in_spool, posts
from tests.test_e2e_sender import DEVICE, SenderTestCase

BATCH_PATH = "/api/v1/telemetry/batch"
SINGLE_PATH = "/api/v1/telemetry"


def spool_backlog(path: Path, count: int, marker: str = "") -> List[str]:
    """``count`` readings left in a spool by an earlier run; their idempotency keys, oldest first."""
    spool = SqliteSpool(path)
    keys = []
    try:
        for n in range(count):
            data = {"temperature": 20.0 + n / 10, "n": n}
            if marker and n == count // 2:
                data["note"] = marker
            key = "backlog-%03d" % n
            spool.put("tesaiot", encode(make_payload(DEVICE, data, iso_utc(1790000000 + n))), key, time.time())
            keys.append(key)
    finally:
        spool.close()
    return keys


class BatchTestCase(SenderTestCase):
    def stored_keys(self, twin) -> List[str]:
        return [r["idempotency_key"] for r in twin.store.all_telemetry(DEVICE)]

    def batch_posts(self, twin):
        return [r for r in posts(twin) if r.path == BATCH_PATH]

    def single_posts(self, twin):
        return [r for r in posts(twin) if r.path == SINGLE_PATH]


class BacklogTests(BatchTestCase):
    def test_a_backlog_of_50_drains_in_3_batch_requests_each_payload_stored_once(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        keys = spool_backlog(spool, 50)
        proc = self.send(self.bundle(twin), "--flush-spool", "--spool", spool, "--batch-size", "20", "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        batches = self.batch_posts(twin)
        self.assertEqual([len(r.json()["telemetry"]) for r in batches], [20, 20, 10])
        self.assertEqual(self.single_posts(twin), [])
        self.assertEqual(self.stored_keys(twin), keys)  # in order, each once, under its own key
        self.assertEqual(keys_in_spool(spool), [])
        first = batches[0]
        self.assertEqual(first.json()["idempotency_keys"], keys[:20])
        self.assertTrue(first.headers["idempotency-key"].startswith("batch-"))
        sends = [json.loads(line) for line in proc.stdout.splitlines()]
        summary = sends[-1]
        self.assertEqual((summary["delivered"], summary["backlog_delivered"], summary["exit_code"]), (50, 50, 0))
        self.assertEqual(sum(1 for e in sends if e.get("event") == "send" and e["ok"]), 50)

    def test_a_burst_goes_in_batches_as_it_is_made(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--count", "25", "--interval", "0", "--batch-size", "10", "--quiet")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual([len(r.json()["telemetry"]) for r in self.batch_posts(twin)], [10, 10, 5])
        self.assertEqual(self.single_posts(twin), [])
        self.assertEqual(len(set(self.stored_keys(twin))), 25)

    def test_a_scheduled_reading_is_sent_when_due_not_held_for_a_batch(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--count", "3", "--interval", "0.05", "--batch-size", "10", "--quiet")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(self.single_posts(twin)), 3)  # each sent before the schedule waited
        self.assertEqual(self.batch_posts(twin), [])

    def test_a_live_stdin_stream_is_sent_line_by_line_not_held_for_a_batch(self):
        twin = self.twin()
        lines = "".join(json.dumps({"temperature": 20 + n}) + "\n" for n in range(3))
        proc = self.send(self.bundle(twin), "--data-file", "-", "--batch-size", "10", "--quiet", stdin=lines)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(self.single_posts(twin)), 3)
        self.assertEqual(self.batch_posts(twin), [])


class FallbackTests(BatchTestCase):
    def test_failed_items_the_answer_does_not_name_are_sent_one_by_one_and_nothing_is_stored_twice(self):
        twin = self.twin()
        set_batch_faults(twin.store, BatchFaults(fail_every=7))  # payloads 7 and 14 of each batch fail
        spool = self.tmp / "spool.sqlite3"
        keys = spool_backlog(spool, 20)
        proc = self.send(self.bundle(twin), "--flush-spool", "--spool", spool, "--batch-size", "20")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("2 of 20 payloads failed and the answer does not say which", proc.stderr)
        self.assertIn("sending its payloads one by one", proc.stderr)
        self.assertEqual(len(self.batch_posts(twin)), 1)
        singles = self.single_posts(twin)
        self.assertEqual([r.headers["idempotency-key"] for r in singles], keys)  # each with its own key
        self.assertEqual(sorted(self.stored_keys(twin)), keys)  # 18 from the batch, 2 alone: once each
        self.assertEqual(keys_in_spool(spool), [])

    def test_no_batch_endpoint_falls_back_to_single_sends_with_one_warning(self):
        twin = self.twin()
        set_batch_faults(twin.store, BatchFaults(absent=True))
        spool = self.tmp / "spool.sqlite3"
        keys = spool_backlog(spool, 30)
        proc = self.send(self.bundle(twin), "--flush-spool", "--spool", spool, "--batch-size", "10")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr.count("has no batch endpoint"), 1, proc.stderr)
        self.assertEqual(len(self.batch_posts(twin)), 1)  # asked once per run
        self.assertEqual(len(self.single_posts(twin)), 30)
        self.assertEqual(self.stored_keys(twin), keys)

    def test_a_payload_the_platform_fails_in_a_batch_is_found_alone_and_held_while_the_others_arrive(self):
        twin = self.twin(faults=FaultPlan.poison(b"POISON"))  # 500 to every POST holding it, batches too
        spool = self.tmp / "spool.sqlite3"
        keys = spool_backlog(spool, 10, marker="POISON")
        proc = self.send(self.bundle(twin), "--flush-spool", "--spool", spool, "--batch-size", "10",
                         "--retries", "0")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("the platform failed a batch of 10 payloads (#1-#10) (500", proc.stderr)
        self.assertEqual(len(self.batch_posts(twin)), 1)
        self.assertEqual(sorted(self.stored_keys(twin)), [k for k in keys if k != keys[5]])
        self.assertEqual(keys_in_spool(spool), [keys[5]])  # held, counted as one failed run
        status = json.loads(self.send(self.bundle(twin), "--spool", spool, "--spool-status", "--json").stdout)
        self.assertEqual(status["failing"][0]["failed_runs"], 1)


class ReplayTests(BatchTestCase):
    def test_a_batch_whose_answer_was_lost_is_sent_again_and_stores_nothing_twice(self):
        for fault in ("reset", "empty"):
            with self.subTest(fault=fault):
                twin = self.twin(faults=FaultPlan.script([fault]))  # stored, then the answer is lost
                spool = self.tmp / ("spool-%s.sqlite3" % fault)
                keys = spool_backlog(spool, 15)
                proc = self.send(self.bundle(twin, name="bundle-" + fault), "--flush-spool", "--spool", spool,
                                 "--batch-size", "15", "--retry-backoff", "0")
                self.assertEqual(proc.returncode, 0, proc.stderr)
                batches = self.batch_posts(twin)
                self.assertEqual(len(batches), 2)
                self.assertEqual(batches[0].headers["idempotency-key"], batches[1].headers["idempotency-key"])
                self.assertEqual(batches[0].body, batches[1].body)
                self.assertEqual(self.stored_keys(twin), keys)
                self.assertEqual(keys_in_spool(spool), [])


class OutcomeTests(BatchTestCase):
    def test_credentials_refused_for_a_batch_is_77_and_keeps_every_payload(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        keys = spool_backlog(spool, 12)
        proc = self.send(self.bundle(twin, api_key="tesa_ak_wrong_" + "w" * 20), "--flush-spool", "--spool", spool,
                         "--batch-size", "12")
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("while sending a batch of 12 payloads (#1-#12)", proc.stderr)
        self.assertEqual(len(posts(twin)), 1)
        self.assertEqual(keys_in_spool(spool), keys)

    def test_an_outage_retries_the_batch_then_keeps_every_payload_for_later(self):
        twin = self.twin(faults=FaultPlan.script(["503", "503"], retry_after=0))
        spool = self.tmp / "spool.sqlite3"
        keys = spool_backlog(spool, 12)
        proc = self.send(self.bundle(twin), "--flush-spool", "--spool", spool, "--batch-size", "12",
                         "--retries", "1", "--retry-backoff", "0")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("12 payload(s) not delivered", proc.stderr)
        self.assertEqual(len(self.batch_posts(twin)), 2)  # the first attempt and one retry
        self.assertEqual(self.single_posts(twin), [])
        self.assertEqual(twin.store.count_telemetry(), 0)
        self.assertEqual(keys_in_spool(spool), keys)


class DryRunAndUsageTests(BatchTestCase):
    def test_dry_run_shows_the_batch_request_a_burst_would_make(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--count", "5", "--interval", "0", "--batch-size", "3", "--dry-run",
                         "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        self.assertEqual([e["url"].endswith(BATCH_PATH) for e in events], [True, True])
        self.assertEqual([len(e["body"]["telemetry"]) for e in events], [3, 2])
        self.assertEqual(len(events[0]["body"]["idempotency_keys"]), 3)
        self.assertTrue(events[0]["headers"]["Idempotency-Key"].startswith("batch-"))
        self.assertEqual(events[0]["headers"]["X-API-KEY"], "[REDACTED]")
        self.assertEqual(twin.requests, [])
        text = self.send(self.bundle(twin), "--count", "2", "--interval", "0", "--batch-size", "2", "--dry-run")
        self.assertIn("POST %s%s" % (twin.url, BATCH_PATH), text.stdout)
        self.assertNoSecret(text)

    def test_batch_size_is_refused_where_no_batch_endpoint_is_documented(self):
        proc = self.send(self.bundle(), "--platform", "iotflow", "--batch-size", "5", "--dry-run")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--batch-size 5: iotflow documents no batch endpoint", proc.stderr)
        proc = run_cli(TLINK, "--batch-size", "2", "--dry-run")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--batch-size 2: a TLINK webhook takes one push per request", proc.stderr)
        proc = self.send(self.bundle(), "--batch-size", "1001", "--dry-run")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("at most 1000", proc.stderr)
        proc = run_cli(TLINK, "--batch-size", "1", "--dry-run")  # the default, said out loud, is fine
        self.assertEqual(proc.returncode, 0, proc.stderr)


class ReviewFindings(BatchTestCase):
    """Found by a second reader of the batch change: each test failed before its fix."""

    def test_a_batch_that_ends_the_run_does_not_wait_for_the_schedule_or_accept_more(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        started = time.monotonic()
        proc = self.send(self.bundle(twin, api_key="tesa_ak_wrong_key_0000000000000"), "--spool", spool,
                         "--count", "3", "--interval", "30", "--batch-size", "5")
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertLess(time.monotonic() - started, 25)  # a bound on a hang, not a speed requirement
        self.assertEqual(len(keys_in_spool(spool)), 1)  # the one reading taken before the refusal, as at size 1

    def test_a_live_stream_named_as_a_file_goes_as_it_arrives(self):
        import subprocess

        from tests.support import start_cli
        from tests.twin_support import wait_until

        twin = self.twin()
        proc = start_cli(SENDER, "--certs-dir", self.bundle(twin), "--data-file", "/dev/stdin",
                         "--batch-size", "10", stdin=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        proc.stdin.write('{"temperature": 21.5}\n')
        proc.stdin.flush()
        arrived = wait_until(lambda: twin.store.count_telemetry() == 1, timeout=10)
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        self.assertTrue(arrived, "the reading waited for a batch that a stream never fills")

    def test_413_on_a_batch_sends_one_by_one_for_the_rest_of_the_run(self):
        twin = self.twin(max_body=1500)  # a few payloads fit, a batch of 20 does not
        spool = self.tmp / "spool.sqlite3"
        keys = spool_backlog(spool, 30)
        proc = self.send(self.bundle(twin), "--flush-spool", "--spool", spool, "--batch-size", "20")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr.count("a batch this large is refused"), 1, proc.stderr)
        self.assertEqual(len(self.batch_posts(twin)), 1)
        self.assertEqual(sorted(self.stored_keys(twin)), sorted(keys))
