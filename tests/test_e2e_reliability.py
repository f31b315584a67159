"""Nothing lost: retries, idempotency keys, the spool and crashes, against a twin injecting faults."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import sys
import time
import unittest
from pathlib import Path

from iotpost.receiver.faults import FaultPlan
from tests.support import SENDER, start_cli
from tests.test_e2e_sender import DEVICE, SenderTestCase

FAST = ("--retry-backoff", "0.01")


def posts(twin):
    return [r for r in twin.requests if r.method == "POST"]


def keys_in_spool(path: Path):
    db = sqlite3.connect(str(path))
    try:
        return [k for (k,) in db.execute("SELECT idempotency_key FROM spool ORDER BY id")]
    finally:
        db.close()


class RetryTests(SenderTestCase):
    def test_503_with_retry_after_twice_then_200(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["503", "503"], retry_after=1)
        proc = self.send(self.bundle(twin), "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        seen = posts(twin)
        self.assertEqual(len(seen), 3)
        keys = {r.headers["idempotency-key"] for r in seen}
        self.assertEqual(len(keys), 1)
        self.assertTrue(keys.pop())
        for a, b in zip(seen, seen[1:]):
            self.assertGreaterEqual(b.received_at - a.received_at, 0.9)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)
        summary = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual(summary["retries"], 2)

    def test_reset_after_storing_then_200_resends_same_key_and_stores_once(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["reset"])
        proc = self.send(self.bundle(twin), *FAST)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        seen = posts(twin)
        self.assertEqual(len(seen), 2)
        self.assertEqual(seen[0].headers["idempotency-key"], seen[1].headers["idempotency-key"])
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_429_then_200(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["429"], retry_after=0)
        proc = self.send(self.bundle(twin))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(posts(twin)), 2)

    def test_always_503_with_retries_2_is_75_after_exactly_3_attempts(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["503"] * 10, retry_after=0)
        proc = self.send(self.bundle(twin), "--retries", "2")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertEqual(len(posts(twin)), 3)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 0)

    def test_distinct_payloads_have_distinct_keys(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--count", "5", "--interval", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len({r.headers["idempotency-key"] for r in posts(twin)}), 5)

    def test_each_fault_kind_is_survived(self):
        for kind in ("empty", "malformed", "dribble", "delay", "error", "500"):
            with self.subTest(kind=kind):
                twin = self.twin()
                twin.faults = FaultPlan.script([kind], delay=0.05, dribble_seconds=0.1)
                proc = self.send(self.bundle(twin, name="b-" + kind), *FAST)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_two_thousand_payloads_through_thirty_percent_faults_are_stored_exactly_once(self):
        twin = self.twin()
        twin.faults = FaultPlan.random(rate=0.3, seed=2026, retry_after=0, delay=0.002, dribble_seconds=0.01,
                                       kinds=("503", "429", "reset", "empty", "malformed", "dribble", "delay", "error"))
        proc = self.send(self.bundle(twin), "--count", "2000", "--interval", "0", "--retries", "20",
                         "--quiet", *FAST, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        rows = twin.store.all_telemetry(DEVICE)
        self.assertEqual(len(rows), 2000)
        keys = [r["idempotency_key"] for r in rows]
        self.assertEqual(len(set(keys)), 2000)
        self.assertGreater(len(posts(twin)), 2300)  # the faults really fired


class SpoolTests(SenderTestCase):
    def test_outage_then_flush_delivers_once_and_second_flush_sends_nothing(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        twin.go_down()
        proc = self.send(self.bundle(twin), "--count", "3", "--interval", "0", "--retries", "1", *FAST,
                         "--spool", spool)
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("--flush-spool", proc.stderr)
        self.assertEqual(len(keys_in_spool(spool)), 3)
        twin.come_back()
        proc = self.send(self.bundle(twin, name="b2"), "--flush-spool", "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 3)
        self.assertEqual(keys_in_spool(spool), [])
        before = len(posts(twin))
        proc = self.send(self.bundle(twin, name="b3"), "--flush-spool", "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(posts(twin)), before)

    def test_spool_env_var_is_used(self):
        twin = self.twin()
        spool = self.tmp / "env-spool.sqlite3"
        twin.go_down()
        proc = self.send(self.bundle(twin), "--retries", "0", env={"IOTPOST_SPOOL": str(spool)})
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertEqual(len(keys_in_spool(spool)), 1)

    def test_401_keeps_the_payload_and_it_is_later_delivered_with_the_same_key(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        proc = self.send(self.bundle(twin, api_key="tesa_ak_rotated_old_key_000"), "--spool", spool)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        first_key = posts(twin)[0].headers["idempotency-key"]
        self.assertEqual(keys_in_spool(spool), [first_key])
        proc = self.send(self.bundle(twin, name="fixed"), "--flush-spool", "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(posts(twin)[-1].headers["idempotency-key"], first_key)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_rejected_payload_becomes_a_dead_letter_listed_and_exported(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["422"])
        spool = self.tmp / "spool.sqlite3"
        proc = self.send(self.bundle(twin), "--spool", spool)
        self.assertEqual(proc.returncode, 65, proc.stderr)
        self.assertEqual(keys_in_spool(spool), [])
        status = self.send(self.bundle(twin), "--spool", spool, "--spool-status", "--json")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertEqual(json.loads(status.stdout)["dead_letters"], 1)
        dead = self.send(self.bundle(twin), "--spool", spool, "--dead-letters")
        row = json.loads(dead.stdout)
        self.assertEqual(row["status"], 422)
        self.assertEqual(row["body"]["device_id"], DEVICE)

    def test_backlog_goes_before_new_payloads(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        twin.go_down()
        self.send(self.bundle(twin), "--retries", "0", "--spool", spool)
        old_key = keys_in_spool(spool)[0]
        twin.come_back()
        proc = self.send(self.bundle(twin), "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        seen = posts(twin)
        self.assertEqual(seen[0].headers["idempotency-key"], old_key)
        self.assertEqual(len(seen), 2)

    def test_spool_max_drops_oldest_loudly(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        twin.go_down()
        proc = self.send(self.bundle(twin), "--count", "5", "--interval", "0", "--retries", "0",
                         "--spool", spool, "--spool-max", "2", "--quiet")
        self.assertEqual(proc.returncode, 75)
        self.assertIn("dropped", proc.stderr)
        self.assertEqual(len(keys_in_spool(spool)), 2)

    def test_corrupt_spool_is_moved_aside_and_a_fresh_one_used(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        spool.write_bytes(b"this is not a database" * 100)
        proc = self.send(self.bundle(twin), "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("moved it to", proc.stderr)
        self.assertTrue(list(self.tmp.glob("spool.sqlite3.corrupt-*")))
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_two_overlapping_flushes_deliver_forty_payloads_exactly_once(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        twin.go_down()
        proc = self.send(self.bundle(twin), "--count", "40", "--interval", "0", "--retries", "0", "--spool", spool,
                         "--quiet")
        self.assertEqual(proc.returncode, 75)
        self.assertEqual(len(keys_in_spool(spool)), 40)
        twin.come_back()
        twin.faults = FaultPlan.random(rate=1.0, kinds=("delay",), delay=0.05, seed=1)  # ~2 s: the runs overlap
        bundle = self.bundle(twin, name="b2")
        runs = [start_cli(SENDER, "--certs-dir", bundle, "--flush-spool", "--spool", spool, "--json")
                for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in runs]
        for p, (out, err) in zip(runs, outs):
            self.assertEqual(p.returncode, 0, err)
        sent_keys = [r.headers["idempotency-key"] for r in posts(twin)]
        self.assertEqual(len(sent_keys), 40)
        self.assertEqual(len(set(sent_keys)), 40)
        delivered = [sum(1 for l in out.splitlines() if '"event": "send"' in l) for out, _ in outs]
        self.assertEqual(sum(delivered), 40)
        self.assertGreater(min(delivered), 0, "both runs should have taken part")
        self.assertEqual(twin.store.count_telemetry(DEVICE), 40)

    def test_sigkill_at_random_points_then_flush_stores_everything_once(self):
        for seed in (1, 2, 3, 4):
            with self.subTest(seed=seed):
                twin = self.twin()
                twin.faults = FaultPlan.random(rate=0.3, kinds=("delay", "reset", "503"), delay=0.01, seed=seed,
                                               retry_after=0)
                spool = self.tmp / ("spool-%d.sqlite3" % seed)
                bundle = self.bundle(twin, name="k%d" % seed)
                proc = start_cli(SENDER, "--certs-dir", bundle, "--count", "200", "--interval", "0.005",
                                 "--spool", spool, "--quiet", *FAST)
                time.sleep(random.Random(seed).uniform(0.3, 1.2))
                proc.kill()
                proc.communicate()
                stored_before = {r["idempotency_key"] for r in twin.store.all_telemetry(DEVICE)}
                accepted = stored_before | set(keys_in_spool(spool)) if spool.exists() else stored_before
                twin.faults = None
                flush = self.send(bundle, "--flush-spool", "--spool", spool)
                self.assertEqual(flush.returncode, 0, flush.stderr)
                rows = twin.store.all_telemetry(DEVICE)
                keys = [r["idempotency_key"] for r in rows]
                self.assertEqual(len(keys), len(set(keys)), "a payload was stored twice")
                self.assertEqual(set(keys), accepted)
                self.assertEqual(keys_in_spool(spool), [])


class SignalTests(SenderTestCase):
    @unittest.skipIf(sys.platform == "win32", "POSIX signals")
    def test_sigterm_mid_run_exits_143_promptly_keeping_the_spool(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        proc = start_cli(SENDER, "--certs-dir", self.bundle(twin), "--count", "100", "--interval", "0.2",
                         "--spool", spool)
        deadline = time.monotonic() + 20
        while twin.store.count_telemetry(DEVICE) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        twin.go_down()  # the next payload stays in the spool
        time.sleep(0.3)
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        self.assertLess(time.monotonic() - sent_at, 3.0)
        self.assertEqual(proc.returncode, 143, err)
        self.assertIn("summary", out)
        self.assertIn("SIGTERM", err)
        stored = {r["idempotency_key"] for r in twin.store.all_telemetry(DEVICE)}
        left = set(keys_in_spool(spool))
        self.assertFalse(stored & left)

    @unittest.skipIf(sys.platform == "win32", "POSIX signals")
    def test_sigint_while_a_request_is_in_flight_ends_the_run_there(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["delay"], delay=3.0)  # the first answer takes 3 s
        proc = start_cli(SENDER, "--certs-dir", self.bundle(twin), "--count", "3", "--interval", "0")
        deadline = time.monotonic() + 20
        while not posts(twin) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # inside the wait for the answer
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        self.assertEqual(proc.returncode, 130, err)
        self.assertIn("summary", out)
        self.assertEqual(len(posts(twin)), 1)  # no later payload was sent after the interrupt

    @unittest.skipIf(sys.platform == "win32", "POSIX signals")
    def test_sigint_exits_130(self):
        twin = self.twin()
        proc = start_cli(SENDER, "--certs-dir", self.bundle(twin), "--count", "100", "--interval", "1")
        deadline = time.monotonic() + 20
        while twin.store.count_telemetry(DEVICE) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 130, err)
        self.assertNotIn("Traceback", err)


if __name__ == "__main__":
    unittest.main()
