"""The spool's promise end to end: a full disk, a spool from the previous release, drop and requeue.

Each test runs the real post_https_sample.py against the twin over verified TLS.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import unittest
from pathlib import Path

from iotpost.payloads import encode, iso_utc, make_payload
from iotpost.receiver.faults import FaultPlan
from iotpost.spool import SqliteSpool
from tests.support import PROJECT_ROOT, SENDER, cli_env
from tests.test_e2e_reliability import keys_in_spool, posts
from tests.test_e2e_sender import DEVICE, SenderTestCase
from tests.test_spool_recovery import make_format_1, user_version

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

# SQLite maps the -shm file (32 KiB) before it reads anything; below that the open itself fails.
# Under RLIMIT_FSIZE a write past the limit fails with EFBIG, which SQLite reports as "disk I/O
# error" (only ENOSPC becomes SQLITE_FULL), so these runs see what a full disk's -shm gives.
LIMIT_OPEN_FAILS = 16 * 1024
# Room to open (the -shm fits) but far from enough for a 60 kB reading's pages in the -wal: the put fails.
LIMIT_PUT_FAILS = 40000

# preexec_fn is not safe in a process with threads (the twin's), so the limit is set by a tiny
# launcher that then runs the real entry script as __main__.
_LIMITED = ("import resource, runpy, sys; limit = int(sys.argv.pop(1));"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit));"
            "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')")


def start_limited(limit: int, *args: object) -> subprocess.Popen:
    """post_https_sample.py with every file it writes limited to ``limit`` bytes."""
    return subprocess.Popen([sys.executable, "-c", _LIMITED, str(limit), str(SENDER)] + [str(a) for a in args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", env=cli_env(), cwd=str(PROJECT_ROOT))


def moved_aside(folder: Path):
    return sorted(folder.glob("*.corrupt-*"))


@unittest.skipIf(resource is None or not hasattr(resource, "RLIMIT_FSIZE"), "needs resource.RLIMIT_FSIZE (POSIX)")
class FullDiskTests(SenderTestCase):
    def test_full_disk_run_twice_concurrently_then_with_space_freed_delivers_every_reading_once(self):
        twin = self.twin()
        bundle = self.bundle(twin)
        spool = self.tmp / "spool.sqlite3"
        twin.go_down()
        proc = self.send(bundle, "--count", "5", "--interval", "0", "--retries", "0", "--spool", spool, "--quiet")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        spooled = keys_in_spool(spool)
        self.assertEqual(len(spooled), 5)
        twin.come_back()

        runs = [start_limited(LIMIT_OPEN_FAILS, "--certs-dir", bundle, "--spool", spool) for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in runs]
        for p, (out, err) in zip(runs, outs):
            self.assertEqual(p.returncode, 75, err)
            self.assertIn("5 payloads kept", err)
            self.assertNotIn("internal error", err)
            self.assertNotIn("moved", err)
        big = json.dumps({"note": "x" * 60000})
        proc = start_limited(LIMIT_PUT_FAILS, "--certs-dir", bundle, "--spool", spool, "--data", big)
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 75, err)
        self.assertIn("5 payloads kept, this reading not accepted", err)
        self.assertEqual(moved_aside(self.tmp), [])
        self.assertEqual(keys_in_spool(spool), spooled)
        self.assertEqual(posts(twin), [])  # nothing was sent: no reading was accepted

        proc = self.send(bundle, "--flush-spool", "--spool", spool)  # space freed
        self.assertEqual(proc.returncode, 0, proc.stderr)
        proc = self.send(bundle, "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        stored = [r["idempotency_key"] for r in twin.store.all_telemetry(DEVICE)]
        self.assertEqual(len(stored), 6)
        self.assertEqual(len(set(stored)), 6)
        self.assertTrue(set(spooled) <= set(stored))
        self.assertEqual(keys_in_spool(spool), [])
        self.assertEqual(moved_aside(self.tmp), [])


class FormatTests(SenderTestCase):
    def reading(self, n: int) -> bytes:
        return encode(make_payload(DEVICE, {"temperature": 20.0 + n}, iso_utc(1700000000 + n)))

    def test_a_backlog_in_a_previous_release_spool_is_delivered_after_the_upgrade(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        make_format_1(spool, [self.reading(n) for n in range(3)], [self.reading(9)])
        proc = self.send(self.bundle(twin), "--flush-spool", "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(moved_aside(self.tmp), [])
        self.assertEqual(sorted(r["idempotency_key"] for r in twin.store.all_telemetry(DEVICE)),
                         ["old-0", "old-1", "old-2"])
        status = self.send(self.bundle(twin), "--spool", spool, "--spool-status", "--json")
        self.assertEqual(status.returncode, 0, status.stderr)
        fields = json.loads(status.stdout)
        self.assertEqual((fields["format"], fields["pending"], fields["dead_letters"], fields["delivered_total"]),
                         (2, 0, 1, 3))
        dead = json.loads(self.send(self.bundle(twin), "--spool", spool, "--dead-letters").stdout)
        self.assertEqual(dead["idempotency_key"], "dead-0")

    def test_a_spool_from_a_later_release_is_78_and_left_alone(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        make_format_1(spool, [self.reading(1)])
        db = sqlite3.connect(str(spool))
        db.execute("PRAGMA user_version = 5")
        db.close()
        before = spool.read_bytes()
        proc = self.send(self.bundle(twin), "--spool", spool)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("format 5", proc.stderr)
        self.assertIn("format 2", proc.stderr)
        self.assertEqual(spool.read_bytes(), before)
        self.assertEqual((moved_aside(self.tmp), user_version(spool), posts(twin)), ([], 5, []))


class StatusTests(SenderTestCase):
    def test_status_json_carries_the_new_fields(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        proc = self.send(self.bundle(twin), "--count", "2", "--interval", "0", "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        proc = self.send(self.bundle(twin), "--spool", spool, "--spool-status", "--json")
        fields = json.loads(proc.stdout)
        self.assertEqual(fields["event"], "spool_status")
        for name in ("spool", "pending", "claimed_by_running", "oldest_age_s", "dead_letters", "dropped_total",
                     "by_profile", "format", "at", "last_success_at", "last_error", "delivered_total",
                     "size_bytes", "moved_aside"):
            self.assertIn(name, fields)
        self.assertEqual((fields["format"], fields["delivered_total"], fields["last_error"], fields["moved_aside"]),
                         (2, 2, None, []))
        self.assertGreater(fields["size_bytes"], 0)
        self.assertRegex(fields["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
        missing = self.send(self.bundle(twin), "--spool", self.tmp / "none.sqlite3", "--spool-status", "--json")
        self.assertEqual(missing.returncode, 0, missing.stderr)
        self.assertEqual(sorted(json.loads(missing.stdout)), sorted(fields))
        self.assertFalse((self.tmp / "none.sqlite3").exists())

    def test_status_text_names_the_moved_aside_file(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        spool.write_bytes(b"this is not a database" * 100)
        self.send(self.bundle(twin), "--spool", spool)
        proc = self.send(self.bundle(twin), "--spool", spool, "--spool-status")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        aside = moved_aside(self.tmp)[0]
        self.assertIn("moved_aside: %s (unreadable)" % aside, proc.stdout)
        self.assertIn("format: 2", proc.stdout)


class DropRequeueTests(SenderTestCase):
    def test_requeued_dead_letter_is_delivered_with_its_key(self):
        twin = self.twin()
        twin.faults = FaultPlan.script(["422"])
        spool = self.tmp / "spool.sqlite3"
        bundle = self.bundle(twin)
        self.assertEqual(self.send(bundle, "--spool", spool).returncode, 65)
        dead = json.loads(self.send(bundle, "--spool", spool, "--dead-letters").stdout)
        seen = len(twin.requests)
        proc = self.send(bundle, "--spool", spool, "--spool-requeue", dead["id"])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.strip().splitlines(),
                         ["requeued dead letter %d in spool %s: the next run sends it" % (dead["id"], spool)])
        self.assertEqual(len(twin.requests), seen)  # contacted nothing
        self.assertEqual(self.send(bundle, "--spool", spool, "--dead-letters").stdout, "")
        self.assertEqual(keys_in_spool(spool), [dead["idempotency_key"]])
        proc = self.send(bundle, "--flush-spool", "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual([r["idempotency_key"] for r in twin.store.all_telemetry(DEVICE)], [dead["idempotency_key"]])

    def test_dropped_payload_is_gone_and_json_says_so(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        bundle = self.bundle(twin)
        twin.go_down()
        self.send(bundle, "--count", "2", "--interval", "0", "--retries", "0", "--spool", spool)
        keys = keys_in_spool(spool)
        db = sqlite3.connect(str(spool))
        (first_id,) = db.execute("SELECT min(id) FROM spool").fetchone()
        db.close()
        proc = self.send(bundle, "--spool", spool, "--spool-drop", first_id, "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        record = json.loads(proc.stdout)
        self.assertIn("at", record)  # every JSON event says when it was written
        del record["at"]
        self.assertEqual(record, {"schema": 1, "event": "spool_drop", "id": first_id, "spool": str(spool)})
        self.assertEqual(keys_in_spool(spool), keys[1:])
        twin.come_back()
        self.assertEqual(self.send(bundle, "--flush-spool", "--spool", spool).returncode, 0)
        self.assertEqual([r["idempotency_key"] for r in twin.store.all_telemetry(DEVICE)], keys[1:])

    def test_unknown_ids_are_65_naming_the_id_with_a_hint(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        bundle = self.bundle(twin)
        for where in ("missing file", "existing file"):
            with self.subTest(where):
                proc = self.send(bundle, "--spool", spool, "--spool-drop", "4242")
                self.assertEqual(proc.returncode, 65, proc.stderr)
                self.assertIn("4242", proc.stderr)
                self.assertIn("--spool-status", proc.stderr)
                proc = self.send(bundle, "--spool", spool, "--spool-requeue", "4243")
                self.assertEqual(proc.returncode, 65, proc.stderr)
                self.assertIn("4243", proc.stderr)
                self.assertIn("--dead-letters", proc.stderr)
                self.assertNotIn("Traceback", proc.stderr)
            self.send(bundle, "--spool", spool)  # now the file exists

    def test_a_payload_a_running_send_holds_is_not_dropped(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        bundle = self.bundle(twin)
        twin.go_down()
        self.send(bundle, "--retries", "0", "--spool", spool)
        running = SqliteSpool(spool)  # this test process stands for a live run holding the claim
        self.addCleanup(running.close)
        held = running.claim("tesaiot", time.time())
        proc = self.send(bundle, "--spool", spool, "--spool-drop", held.id)
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("in use by a running send; try again", proc.stderr)
        self.assertEqual(keys_in_spool(spool), [held.key])
        running.release_all()
        self.assertEqual(self.send(bundle, "--spool", spool, "--spool-drop", held.id).returncode, 0)
        self.assertEqual(keys_in_spool(spool), [])


if __name__ == "__main__":
    unittest.main()
