"""Group commit in TelemetryStore: concurrent rows share one transaction, each call answered after it.

Usage: python -m unittest tests.test_receiver_group_commit

A group is formed on purpose: the test holds the store's lock, so the first caller (the leader,
holding only its own row) waits for it while the others queue; released, the leader commits its
row (a lone row is one statement, which commits itself) and one of the queued callers commits all
the rest in one transaction. Commits are counted with sqlite3's own trace callback on the real
connection.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unittest
from typing import Callable, Dict, List

from iotpost.receiver.store import IdempotencyKeyReused, TelemetryStore
from tests.twin_support import temp_dir

DEV = "0b6c8f3e-5d2a-4e1b-9c7d-3f4a5b6c7d8e"
KEY = "tesa_ak_group_test_key"


class GroupCommitTest(unittest.TestCase):
    def setUp(self) -> None:
        self.store = TelemetryStore(temp_dir(self) / "twin.sqlite3")
        self.addCleanup(self.store.close)
        self.store.register_device(DEV, KEY)
        self.statements: List[str] = []
        self.store._conn.set_trace_callback(self.statements.append)

    def commits(self) -> int:
        """Transactions committed: each COMMIT, and each INSERT outside BEGIN...COMMIT (it commits itself)."""
        count, in_transaction = 0, False
        for sql in self.statements:
            word = sql.strip().split(None, 1)[0].upper()
            if word == "BEGIN":
                in_transaction = True
            elif word == "COMMIT":
                count, in_transaction = count + 1, False
            elif word == "INSERT" and not in_transaction:
                count += 1
        return count

    def in_one_group(self, calls: List[Callable[[], object]]) -> Dict[int, object]:
        """Run calls[0] as a leader held at the lock, calls[1:] queued behind it; outcomes by index."""
        outcomes: Dict[int, object] = {}

        def run(index: int) -> None:
            try:
                outcomes[index] = calls[index]()
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                outcomes[index] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        with self.store._lock:
            threads[0].start()
            self.wait_until(lambda: self.store._leading)
            for queued, thread in enumerate(threads[1:], 1):
                thread.start()  # one at a time: the queue's order is the calls' order
                self.wait_until(lambda: len(self.store._queued) == queued)
            self.statements.clear()
        for thread in threads:
            thread.join(10)
        return outcomes

    def wait_until(self, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            self.assertLess(time.monotonic(), deadline, "the group never formed")
            time.sleep(0.001)

    def store_call(self, value: int, key: str, body: bytes) -> Callable[[], object]:
        return lambda: self.store.store_telemetry(DEV, {"v": value}, raw_body=body, idempotency_key=key)

    def test_queued_rows_share_one_commit_and_each_call_gets_its_own_answer(self):
        calls = [self.store_call(i, "k%d" % i, b"%d" % i) for i in range(10)]
        outcomes = self.in_one_group(calls)
        self.assertEqual(self.commits(), 2)  # the leader's own row, then the nine queued behind it
        self.assertEqual(self.store.count_telemetry(DEV), 10)
        stored = {r.idempotency_key: r for r in self.store.all_telemetry(DEV)}
        for i in range(10):
            answer = outcomes[i]
            self.assertFalse(answer.replayed)
            self.assertEqual(answer.response["telemetry_id"], stored["k%d" % i].telemetry_id)
            self.assertEqual(stored["k%d" % i].data, {"v": i})

    def test_a_key_repeated_within_one_group_is_replayed_or_refused_as_across_groups(self):
        calls = [self.store_call(0, "lead", b"0"),
                 self.store_call(1, "same", b"1"), self.store_call(1, "same", b"1"),
                 self.store_call(2, "same", b"2"), self.store_call(3, "other", b"3")]
        outcomes = self.in_one_group(calls)
        self.assertEqual(self.commits(), 2)
        self.assertEqual(sorted(r.idempotency_key for r in self.store.all_telemetry(DEV)),
                         ["lead", "other", "same"])
        first, second = outcomes[1], outcomes[2]
        self.assertEqual([first.replayed, second.replayed], [False, True])  # the first in the queue stores, the second replays
        self.assertEqual(first.response, second.response)
        self.assertIsInstance(outcomes[3], IdempotencyKeyReused)
        self.assertFalse(outcomes[4].replayed)

    def test_a_lone_row_is_one_statement_and_a_replay_reads_the_first_answer_back(self):
        first = self.store.store_telemetry(DEV, {"v": 1}, raw_body=b"1", idempotency_key="once")
        self.assertEqual([sql.split(None, 1)[0] for sql in self.statements], ["INSERT"])
        self.statements.clear()
        again = self.store.store_telemetry(DEV, {"v": 1}, raw_body=b"1", idempotency_key="once")
        self.assertEqual([sql.split(None, 1)[0] for sql in self.statements], ["INSERT", "SELECT"])
        self.assertTrue(again.replayed)
        self.assertEqual(again.response, first.response)
        self.assertEqual(self.store.count_telemetry(DEV), 1)

    def test_an_insert_ignored_for_another_reason_is_an_error_never_a_silent_loss(self):
        for key in (None, "fresh"):  # device_id is NOT NULL: INSERT OR IGNORE skips such a row
            with self.assertRaises(sqlite3.IntegrityError):
                self.store.store_telemetry(None, {"v": 2}, raw_body=b"2", idempotency_key=key)  # type: ignore[arg-type]
        self.assertEqual(self.store.count_telemetry(), 0)

    def test_a_row_that_fails_fails_alone(self):
        # A real constraint failure for one device's rows, as a broken row would be.
        self.store._conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON telemetry WHEN NEW.device_id = 'bad'"
                                 " BEGIN SELECT RAISE(ABORT, 'refused'); END")
        bad = lambda: self.store.store_telemetry("bad", {"v": 9}, raw_body=b"9", idempotency_key="b")  # noqa: E731
        calls = [self.store_call(0, "k0", b"0"), self.store_call(1, "k1", b"1"), bad, self.store_call(2, "k2", b"2")]
        outcomes = self.in_one_group(calls)
        self.assertIsInstance(outcomes[2], sqlite3.IntegrityError)
        self.assertEqual(sorted(r.idempotency_key for r in self.store.all_telemetry()), ["k0", "k1", "k2"])
        self.assertFalse(any(outcomes[i].replayed for i in (0, 1, 3)))

    def test_a_failing_commit_leaves_no_transaction_open_for_the_next_lone_row(self):
        conn = self.store._conn
        conn.execute("PRAGMA foreign_keys=ON")  # a deferred foreign key: the one way to make COMMIT itself fail
        conn.executescript("CREATE TABLE parent (id TEXT PRIMARY KEY);"
                           " CREATE TABLE child (p TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
                           " CREATE TRIGGER orphan AFTER INSERT ON telemetry WHEN NEW.device_id = 'bad'"
                           " BEGIN INSERT INTO child VALUES ('nope'); END;")
        bad = lambda: self.store.store_telemetry("bad", {"v": 9}, raw_body=b"9", idempotency_key="b")  # noqa: E731
        outcomes = self.in_one_group([self.store_call(0, "k0", b"0"), self.store_call(1, "k1", b"1"), bad])
        self.assertIsInstance(outcomes[2], sqlite3.IntegrityError)
        self.assertFalse(conn.in_transaction)
        self.assertFalse(self.store.store_telemetry(DEV, {"v": 3}, raw_body=b"3", idempotency_key="k3").replayed)
        other = sqlite3.connect(str(self.store.path))  # what is committed, not what this connection sees
        self.addCleanup(other.close)
        self.assertEqual(sorted(r[0] for r in other.execute("SELECT idempotency_key FROM telemetry")),
                         ["k0", "k1", "k3"])

    @unittest.skipUnless(hasattr(signal, "pthread_kill"), "POSIX signals")
    def test_a_queued_caller_interrupted_by_a_signal_keeps_its_turn_and_the_store_keeps_working(self):
        held, release = threading.Event(), threading.Event()

        def hold() -> None:  # keeps the leader waiting for the database lock
            with self.store._lock:
                held.set()
                release.wait(10)

        threading.Thread(target=hold, daemon=True).start()
        held.wait(10)
        leader = threading.Thread(target=self.store_call(0, "k0", b"0"), daemon=True)
        leader.start()
        self.wait_until(lambda: self.store._leading)

        def interrupt() -> None:  # Ctrl-C once the main thread is queued, then let the leader go
            self.wait_until(lambda: len(self.store._queued) == 1)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(0.2)
            release.set()

        threading.Thread(target=interrupt, daemon=True).start()
        with self.assertRaises(KeyboardInterrupt):  # raised once its row is settled, not before
            self.store.store_telemetry(DEV, {"v": 1}, raw_body=b"1", idempotency_key="k1")
        leader.join(10)
        self.assertEqual((self.store._leading, self.store._queued), (False, []))
        later = threading.Thread(target=self.store_call(2, "k2", b"2"), daemon=True)
        later.start()
        later.join(10)
        self.assertFalse(later.is_alive(), "the store stopped committing")
        self.assertEqual(sorted(r.idempotency_key for r in self.store.all_telemetry(DEV)), ["k0", "k1", "k2"])

    def test_many_concurrent_callers_store_every_row_once(self):
        def post(worker: int) -> None:
            for i in range(25):
                self.store.store_telemetry(DEV, {"v": i}, raw_body=b"%d-%d" % (worker, i),
                                           idempotency_key="w%d-%d" % (worker, i))
                self.store.store_telemetry(DEV, {"v": i}, raw_body=b"%d-%d" % (worker, i),
                                           idempotency_key="w%d-%d" % (worker, i))  # a retry: replayed

        threads = [threading.Thread(target=post, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(self.store.count_telemetry(DEV), 200)
        self.assertEqual(self.store._queued, [])
        self.assertFalse(self.store._leading)


_KILLED_WRITER = r"""
import os, sys, threading
sys.path.insert(0, sys.argv[2])
from iotpost.receiver.store import TelemetryStore
store = TelemetryStore(sys.argv[1])
store.register_device("dev", "key")
def post(w):
    for i in range(50):
        store.store_telemetry("dev", {"v": i}, raw_body=b"%d-%d" % (w, i), idempotency_key="%d-%d" % (w, i))
threads = [threading.Thread(target=post, args=(w,)) for w in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(store.count_telemetry(), flush=True)
os._exit(0)  # killed: no close, no checkpoint
"""


class KilledProcessTest(unittest.TestCase):
    def test_every_answered_row_survives_a_killed_process(self):
        path = temp_dir(self) / "twin.sqlite3"
        root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
        done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path), root],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "200")
        with TelemetryStore(path) as store:
            self.assertEqual(store.count_telemetry("dev"), 200)


if __name__ == "__main__":
    unittest.main()
