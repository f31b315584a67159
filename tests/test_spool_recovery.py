"""The spool on a bad day: a full disk, a damaged file, a file from the previous or a later release."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import unittest
from pathlib import Path

from iotpost.cli_common import _print_status
from iotpost.errors import ConfigError, SpoolFull, TransientError
from iotpost.output import Reporter
from iotpost.spool import FORMAT, SqliteSpool
from iotpost.spool_recovery import classify, move_aside, moved_aside_files, read_moved_aside
from tests.support import PROJECT_ROOT
from tests.test_spool import P, TempDirMixin, body

# The spool's schema exactly as the first release (format 1, user_version 0) created it. Copied,
# not imported: the fixture must stay what devices in the field have on disk.
FORMAT_1_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed_by TEXT,
    claim_expires REAL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    profile TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    dead_at REAL NOT NULL,
    status INTEGER,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def make_format_1(path: Path, bodies, dead_bodies=(), dropped: int = 0) -> None:
    """A spool as the first release left it: WAL, pending payloads (one with errors), dead letters."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(FORMAT_1_SCHEMA)
    for n, b in enumerate(bodies):
        db.execute("INSERT INTO spool (profile, idempotency_key, body, created, attempts, last_error)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (P, "old-%d" % n, b, 1000.0 + n, 2 if n == 0 else 0,
                                                 "connection refused" if n == 0 else None))
    for n, b in enumerate(dead_bodies):
        (next_id,) = db.execute("SELECT coalesce(max(id), 0) + 100 FROM spool").fetchone()
        db.execute("INSERT INTO dead_letters (id, profile, idempotency_key, body, created, dead_at, status, reason)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (next_id + n, P, "dead-%d" % n, b, 900.0 + n, 950.0 + n, 422, "invalid"))
    if dropped:
        db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?)", (dropped,))
    db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(str(path))
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def asides(folder: Path):
    return [p for p in sorted(folder.iterdir()) if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]


class OpenFailsOnce(SqliteSpool):
    """Opening raises the given sqlite3 error once, as a full disk or a busy file would."""

    error: Exception = sqlite3.OperationalError("disk I/O error")

    def _connect(self, max_pages):
        error, type(self).error = type(self).error, None
        if error is not None:
            raise error
        return super()._connect(max_pages)


class RecoveryCase(TempDirMixin, unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = self.make_tmp()
        self.path = self.tmp / "spool.sqlite3"

    def open(self, path=None, cls=SqliteSpool, **kwargs) -> SqliteSpool:
        spool = cls(path or self.path, **kwargs)
        self.addCleanup(spool.close)
        return spool

    def fill(self, n: int) -> SqliteSpool:
        spool = self.open()
        for i in range(n):
            spool.put(P, body(i), "key-%d" % i, 1000.0 + i)
        spool.close()
        return spool


class FormatTests(RecoveryCase):
    def test_a_new_spool_is_format_2_with_the_new_columns_and_state(self) -> None:
        self.open()
        self.assertEqual(user_version(self.path), FORMAT)
        self.assertEqual(FORMAT, 2)
        db = sqlite3.connect(str(self.path))
        columns = {row[1]: row for row in db.execute("PRAGMA table_info(spool)")}
        self.assertEqual((columns["failed_runs"][2], columns["failed_runs"][3], columns["failed_runs"][4]),
                         ("INTEGER", 1, "0"))
        self.assertEqual(columns["last_status"][2], "INTEGER")
        self.assertEqual(columns["last_error_at"][2], "REAL")
        self.assertEqual(db.execute("SELECT count(*) FROM state").fetchone(), (0,))
        db.close()

    def test_a_format_1_spool_is_migrated_in_place_keeping_every_payload_and_dead_letter(self) -> None:
        make_format_1(self.path, [body(n) for n in range(3)], [body(90), body(91)], dropped=4)
        self.assertEqual(user_version(self.path), 0)
        spool = self.open()
        self.assertEqual(spool.warnings, [])
        self.assertEqual(asides(self.tmp), [])
        self.assertEqual(user_version(self.path), 2)
        status = spool.status(2000.0)
        self.assertEqual((status["format"], status["pending"], status["dead_letters"], status["dropped_total"],
                          status["oldest_age_s"], status["delivered_total"]), (2, 3, 2, 4, 1000.0, 0))
        items = [spool.claim(P, 2000.0) for _ in range(3)]
        self.assertEqual([(i.key, i.body, i.attempts, i.failed_runs) for i in items],
                         [("old-0", body(0), 2, 0), ("old-1", body(1), 0, 0), ("old-2", body(2), 0, 0)])
        self.assertEqual([d["idempotency_key"] for d in spool.dead_letters()], ["dead-0", "dead-1"])
        # The migrated rows take the new state like new ones.
        self.assertEqual(spool.mark_failed_run(items[0].id), 1)
        spool.release(items[0], "503", attempts=1, status=503, now=2001.0)
        self.assertTrue(spool.requeue(list(spool.dead_letters())[0]["id"], 2002.0))
        spool.ack(items[1], now=2003.0)
        self.assertEqual(spool.status(2004.0)["delivered_total"], 1)

    def test_opening_a_migrated_spool_again_changes_nothing_and_two_openers_agree(self) -> None:
        make_format_1(self.path, [body(1)])
        first, second = self.open(), self.open()
        self.assertEqual((first.pending(), second.pending(), user_version(self.path)), (1, 1, 2))
        third = self.open()
        self.assertEqual(third.claim(P, 2000.0).key, "old-0")

    def test_a_newer_format_is_78_naming_both_versions_and_the_file_is_left_alone(self) -> None:
        self.fill(2)
        db = sqlite3.connect(str(self.path))
        db.execute("PRAGMA user_version = 7")
        db.close()
        before = self.path.read_bytes()
        with self.assertRaises(ConfigError) as cm:
            self.open()
        self.assertEqual(int(cm.exception.exit_code), 78)
        self.assertIn("format 7", cm.exception.message)
        self.assertIn("format 2", cm.exception.message)
        self.assertEqual(self.path.read_bytes(), before)
        self.assertEqual(asides(self.tmp), [])
        self.assertEqual(user_version(self.path), 7)

    def test_migrating_on_a_full_disk_is_75_and_leaves_the_format_1_file_as_it_was(self) -> None:
        make_format_1(self.path, [body(n) for n in range(3)], [body(9)])
        db = sqlite3.connect(str(self.path))
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.close()
        with self.assertRaises(SpoolFull) as cm:
            self.open(max_pages=pages)  # not one page more: the migration cannot add its table
        self.assertEqual(int(cm.exception.exit_code), 75)
        self.assertIn("the spool's disk is full: 3 payloads kept", cm.exception.message)
        self.assertEqual(asides(self.tmp), [])
        self.assertEqual(user_version(self.path), 0)
        # Room again: the next run migrates and has everything.
        spool = self.open()
        self.assertEqual((user_version(self.path), spool.pending(), len(list(spool.dead_letters()))), (2, 3, 1))


class FullDiskTests(RecoveryCase):
    def test_put_on_a_full_disk_says_how_many_payloads_are_kept(self) -> None:
        spool = self.open(max_pages=12)
        stored = 0
        with self.assertRaises(SpoolFull) as cm:
            for n in range(200):
                spool.put(P, b"x" * 3000, "key-%d" % n, float(n))
                stored += 1
        self.assertGreater(stored, 0)
        self.assertEqual(spool.pending(), stored)
        self.assertIn("the spool's disk is full: %d payloads kept, this reading not accepted" % stored,
                      cm.exception.message)
        self.assertEqual(int(cm.exception.exit_code), 75)
        self.assertEqual(asides(self.tmp), [])
        # Room again (a later run without the limit): everything is there and new readings go in.
        later = self.open()
        later.put(P, body(1), "after", 500.0)
        self.assertEqual(later.pending(), stored + 1)
        self.assertEqual(later.claim(P, 600.0).key, "key-0")

    def test_errors_that_say_nothing_about_the_file_never_move_it(self) -> None:
        cases = [
            ("database or disk is full", SpoolFull, 75, "the spool's disk is full: 3 payloads kept"),
            ("disk I/O error", TransientError, 75, "3 payloads kept"),
            ("database is locked", TransientError, 75, "locked"),
            ("attempt to write a readonly database", ConfigError, 78, "read-only"),
            ("unable to open database file", ConfigError, 78, "cannot open"),
        ]
        self.fill(3)
        before = self.path.read_bytes()
        for message, cls, code, says in cases:
            with self.subTest(message):
                OpenFailsOnce.error = sqlite3.OperationalError(message)
                with self.assertRaises(cls) as cm:
                    self.open(cls=OpenFailsOnce)
                self.assertEqual(int(cm.exception.exit_code), code)
                self.assertIn(says, cm.exception.message)
                self.assertEqual(self.path.read_bytes(), before)
                self.assertEqual(asides(self.tmp), [])
        self.assertEqual(self.open().pending(), 3)

    def test_an_error_naming_no_cause_moves_the_file_only_if_quick_check_fails(self) -> None:
        self.fill(3)
        OpenFailsOnce.error = sqlite3.DatabaseError("something unexpected")
        with self.assertRaises(TransientError):
            self.open(cls=OpenFailsOnce)
        self.assertEqual(asides(self.tmp), [])
        self.assertEqual(self.open().pending(), 3)

    def test_an_error_naming_no_cause_on_a_damaged_file_moves_it(self) -> None:
        spool = self.open()
        for n in range(40):
            spool.put(P, json.dumps({"n": n, "pad": "p" * 1000}).encode(), "key-%d" % n, 1000.0 + n)
        spool.close()
        damage_page_holding(self.path, b'{"n": 20,')
        OpenFailsOnce.error = sqlite3.DatabaseError("something unexpected")
        fresh = self.open(cls=OpenFailsOnce)
        self.assertEqual(len(asides(self.tmp)), 1)
        self.assertGreaterEqual(fresh.pending(), 30)


def damage_page_holding(path: Path, marker: bytes) -> None:
    """Overwrite the one database page that holds ``marker`` with garbage (a bad sector, say)."""
    data = bytearray(path.read_bytes())
    at = data.index(marker)
    page = at // 4096
    data[page * 4096:(page + 1) * 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))


class DamagedFileTests(RecoveryCase):
    def test_classify_real_sqlite_errors(self) -> None:
        garbage = self.tmp / "garbage"
        garbage.write_bytes(b"not a database at all " * 300)
        with self.assertRaises(sqlite3.DatabaseError) as cm:
            sqlite3.connect(str(garbage)).execute("PRAGMA user_version").fetchone()
        self.assertEqual(classify(cm.exception), "corrupt")
        db = sqlite3.connect(str(self.tmp / "full"), isolation_level=None)
        db.execute("PRAGMA max_page_count = 2")
        db.execute("CREATE TABLE t (x)")
        with self.assertRaises(sqlite3.OperationalError) as cm:
            db.execute("INSERT INTO t VALUES (?)", (b"x" * 20000,))
        self.assertEqual(classify(cm.exception), "full")
        self.fill(1)
        ro = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
        with self.assertRaises(sqlite3.OperationalError) as cm:
            ro.execute("DELETE FROM spool")
        self.assertEqual(classify(cm.exception), "readonly")
        holder = sqlite3.connect(str(self.path), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        waiter = sqlite3.connect(str(self.path), isolation_level=None, timeout=0)
        with self.assertRaises(sqlite3.OperationalError) as cm:
            waiter.execute("BEGIN IMMEDIATE")
        self.assertEqual(classify(cm.exception), "locked")
        for c in (db, ro, holder, waiter):
            c.close()
        self.assertEqual(classify(sqlite3.OperationalError("disk I/O error")), "io")

    def test_a_malformed_spool_is_moved_aside_and_every_readable_row_carried_over(self) -> None:
        spool = self.open()
        for n in range(60):
            spool.put(P, json.dumps({"n": n, "pad": "p" * 1000}).encode(), "key-%d" % n, 1000.0 + n)
        for n in range(2):
            spool.dead_letter(spool.claim(P, 2000.0), 422, "invalid", 2001.0)
        spool.close()
        damage_page_holding(self.path, b'{"n": 30,')
        fresh = self.open()
        moved = asides(self.tmp)
        self.assertEqual(len(moved), 1)
        self.assertIn("is damaged", fresh.warnings[0])
        self.assertIn("malformed", fresh.warnings[0])
        self.assertIn(str(moved[0]), fresh.warnings[0])
        self.assertIn("carried", fresh.warnings[1])
        keys = []
        while True:
            item = fresh.claim(P, 3000.0)
            if item is None:
                break
            keys.append(item.key)
        self.assertEqual(len(keys), len(set(keys)))
        self.assertNotIn("key-30", keys)  # its page is gone
        self.assertGreaterEqual(len(keys), 50)  # a damaged page costs only its own rows
        self.assertLess(len(keys), 58)
        self.assertEqual(sorted(d["idempotency_key"] for d in fresh.dead_letters()), ["key-0", "key-1"])
        self.assertEqual(fresh.status(3000.0)["moved_aside"], [{"file": str(moved[0]), "payloads": len(keys)}])

    def test_rows_are_carried_over_once_and_dead_letter_ids_stay_unique(self) -> None:
        spool = self.open()
        for n in range(3):
            spool.put(P, body(n), "key-%d" % n, 1000.0 + n)
        spool.dead_letter(spool.claim(P, 2000.0), 400, "bad", 2001.0)
        spool.close()
        OpenFailsOnce.error = sqlite3.DatabaseError("file is not a database")  # as if SQLite said so
        fresh = self.open(cls=OpenFailsOnce)
        self.assertEqual(len(asides(self.tmp)), 1)
        self.assertEqual((fresh.pending(), len(list(fresh.dead_letters()))), (2, 1))
        carried_dead = list(fresh.dead_letters())[0]["id"]
        # A payload dead-lettered later keeps its own id and does not replace the carried one.
        fresh.put(P, body(7), "key-7", 1007.0)
        later = [fresh.claim(P, 2100.0) for _ in range(3)][-1]
        fresh.dead_letter(later, 422, "bad too", 2101.0)
        self.assertEqual(len({d["id"] for d in fresh.dead_letters()} | {carried_dead}), 2)
        self.assertEqual(len(list(fresh.dead_letters())), 2)
        fresh.release_all()
        for item in [fresh.claim(P, 2200.0), fresh.claim(P, 2200.0)]:
            fresh.ack(item, now=2200.0)
        fresh.close()
        again = self.open()  # the moved-aside file is still there, but its rows were carried already
        self.assertEqual((again.pending(), again.warnings), (0, []))

    def test_a_moved_aside_file_written_after_it_was_carried_is_carried_again(self) -> None:
        # A run that had the file open when another moved it may still write one reading into it.
        self.fill(1)
        OpenFailsOnce.error = sqlite3.DatabaseError("file is not a database")
        self.open(cls=OpenFailsOnce).close()
        late = sqlite3.connect(str(asides(self.tmp)[0]), isolation_level=None)
        late.execute("INSERT INTO spool (profile, idempotency_key, body, created) VALUES (?, 'late', ?, 5.0)",
                     (P, body(5)))
        late.close()
        again = self.open()
        keys = {again.claim(P, 10.0).key, again.claim(P, 10.0).key}
        self.assertEqual(keys, {"key-0", "late"})  # nothing is lost; a repeat is absorbed by its key
        self.assertIsNone(again.claim(P, 10.0))

    def test_an_unreadable_moved_aside_file_is_listed_as_unreadable(self) -> None:
        self.path.write_bytes(bytes(range(256)) * 64)
        spool = self.open()
        status = spool.status(5.0)
        self.assertEqual(status["moved_aside"], [{"file": str(asides(self.tmp)[0]), "payloads": None}])
        out = io.StringIO()
        _print_status(status, Reporter("prog", out, io.StringIO()), "text")
        self.assertIn("moved_aside: %s (unreadable)" % asides(self.tmp)[0], out.getvalue())
        out = io.StringIO()
        _print_status(status, Reporter("prog", out, io.StringIO(), mode="json"), "json")
        self.assertIsNone(json.loads(out.getvalue())["moved_aside"][0]["payloads"])

    def test_a_moved_aside_name_is_never_reused(self) -> None:
        now = time.time()
        precious = {}
        for second in range(3):  # this second and the next two: the test may cross a boundary
            stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now + second))
            taken = self.tmp / ("spool.sqlite3.corrupt-%s" % stamp)
            taken.write_bytes(b"an earlier moved-aside spool %d" % second)
            precious[taken] = taken.read_bytes()
        for attempt in range(2):
            self.path.write_bytes(b"garbage %d " % attempt * 500)
            self.open().close()
        for taken, content in precious.items():
            self.assertEqual(taken.read_bytes(), content)
        contents = sorted(p.read_bytes() for p in asides(self.tmp))
        self.assertEqual(len(contents), 5)
        self.assertIn(b"garbage 0 " * 500, contents)
        self.assertIn(b"garbage 1 " * 500, contents)

    def test_move_aside_leaves_a_file_another_run_has_already_replaced(self) -> None:
        self.path.write_bytes(b"garbage" * 100)
        seen = os.stat(str(self.path))
        os.replace(str(self.path), str(self.tmp / "elsewhere"))
        self.path.write_bytes(b"another run's fresh spool")
        self.assertIsNone(move_aside(self.path, seen))
        self.assertEqual(self.path.read_bytes(), b"another run's fresh spool")
        self.assertEqual(moved_aside_files(self.path), [])

    def test_read_moved_aside_of_something_else(self) -> None:
        other = self.tmp / "x.corrupt-1"
        other.write_bytes(b"")
        self.assertIsNone(read_moved_aside(other))  # an empty file holds no spool table

    def test_two_processes_creating_one_new_spool_together_both_get_in(self) -> None:
        # Turning a new file to WAL needs it alone, and SQLite says "locked" at once instead of waiting.
        code = ("import sys; from pathlib import Path; from iotpost.spool import SqliteSpool;"
                "s = SqliteSpool(Path(sys.argv[1])); s.put('tesaiot', b'{}', sys.argv[2], 1.0); s.close()")
        for round_no in range(5):
            with self.subTest(round=round_no):
                path = self.make_tmp() / "spool.sqlite3"
                procs = [subprocess.Popen([sys.executable, "-c", code, str(path), "run-%d" % n],
                                          cwd=str(PROJECT_ROOT), stderr=subprocess.PIPE) for n in range(2)]
                for p in procs:
                    _, err = p.communicate(timeout=60)
                    self.assertEqual(p.returncode, 0, err)
                self.assertEqual(self.open(path).pending(), 2)
                self.assertEqual(asides(path.parent), [])

    @unittest.skipUnless(os.name == "posix", "fork-free but relies on POSIX rename semantics")
    def test_two_processes_finding_one_damaged_spool_together_lose_nothing(self) -> None:
        for round_no in range(3):
            with self.subTest(round=round_no):
                folder = self.make_tmp()
                path = folder / "spool.sqlite3"
                garbage = b"damaged %d " % round_no * 400
                path.write_bytes(garbage)
                code = ("import sys; from pathlib import Path; from iotpost.spool import SqliteSpool;"
                        "s = SqliteSpool(Path(sys.argv[1])); s.put('tesaiot', b'{}', sys.argv[2], 1.0); s.close()")
                procs = [subprocess.Popen([sys.executable, "-c", code, str(path), "run-%d" % n],
                                          cwd=str(PROJECT_ROOT), stderr=subprocess.PIPE)
                         for n in range(2)]
                for p in procs:
                    _, err = p.communicate(timeout=60)
                    self.assertEqual(p.returncode, 0, err)
                moved = [p.read_bytes() for p in asides(folder)]
                self.assertEqual(moved.count(garbage), 1)
                spool = self.open(path)
                keys = set()
                while True:
                    item = spool.claim(P, 10.0)
                    if item is None:
                        break
                    keys.add(item.key)
                self.assertEqual(keys, {"run-0", "run-1"})


if __name__ == "__main__":
    unittest.main()
