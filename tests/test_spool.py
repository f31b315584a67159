"""The spool: order, claims shared between processes, leases, limits, corruption and a full disk."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from iotpost.errors import ConfigError, SpoolFull, TransientError
from iotpost.exitcodes import ExitStatus
from iotpost.payloads import parse_iso8601
from iotpost.spool import MemorySpool, SpoolItem, SqliteSpool, empty_status, local_iso, open_spool

P = "tesaiot"


def body(n: int) -> bytes:
    return json.dumps({"device_id": "d", "data": {"n": n}}).encode()


class TempDirMixin:
    def make_tmp(self) -> Path:
        tmp = Path(tempfile.mkdtemp(prefix="iotpost-spool-"))
        self.addCleanup(shutil.rmtree, str(tmp), True)  # type: ignore[attr-defined]
        return tmp


class SpoolContract(TempDirMixin):
    """Behaviour both spools share; subclasses say how to make one."""

    def make_spool(self):
        raise NotImplementedError

    def setUp(self) -> None:
        self.spool = self.make_spool()

    def put(self, n: int, profile: str = P) -> SpoolItem:
        return self.spool.put(profile, body(n), "key-%d" % n, 1000.0 + n)

    def test_put_returns_item(self) -> None:
        item = self.spool.put(P, b'{"a":1}', "k1", 1234.5)
        self.assertEqual((item.profile, item.key, item.body, item.created, item.attempts),
                         (P, "k1", b'{"a":1}', 1234.5, 0))
        self.assertEqual(self.spool.pending(), 1)

    def test_claim_oldest_first(self) -> None:
        for n in range(4):
            self.put(n)
        keys = [self.spool.claim(P, 2000.0).key for _ in range(4)]
        self.assertEqual(keys, ["key-0", "key-1", "key-2", "key-3"])
        self.assertIsNone(self.spool.claim(P, 2000.0))

    def test_claim_batch_hands_out_the_oldest_together(self) -> None:
        for n in range(5):
            self.put(n)
        first = self.spool.claim_batch(P, 2000.0, 3)
        self.assertEqual([i.key for i in first], ["key-0", "key-1", "key-2"])
        self.assertEqual([i.key for i in self.spool.claim_batch(P, 2000.0, 3)], ["key-3", "key-4"])
        self.assertEqual(self.spool.claim_batch(P, 2000.0, 3), [])
        self.spool.release(first[1])
        self.assertEqual([i.key for i in self.spool.claim_batch(P, 2000.0, 3)], ["key-1"])

    def test_a_batch_is_acked_or_released_together(self) -> None:
        for n in range(5):
            self.put(n)
        batch = self.spool.claim_batch(P, 2000.0, 5)
        self.spool.release_batch(batch[3:], "in a batch: 500", 2, 500, 2001.0)
        self.spool.ack_batch(batch[:3], 2002.0)
        self.assertEqual(self.spool.pending(), 2)
        self.assertEqual(self.spool.delivered_total if isinstance(self.spool, MemorySpool)
                         else self.spool.status(2003.0)["delivered_total"], 3)
        again = self.spool.claim_batch(P, 2003.0, 5)
        self.assertEqual([(i.key, i.attempts) for i in again], [("key-3", 2), ("key-4", 2)])

    def test_claimed_item_keeps_body_and_key(self) -> None:
        put = self.put(7)
        got = self.spool.claim(P, 2000.0)
        self.assertEqual(got, put)
        self.assertIsInstance(got.body, bytes)

    def test_claim_filters_by_profile(self) -> None:
        self.put(1, profile="tlink")
        self.put(2)
        self.assertEqual(self.spool.claim(P, 2000.0).key, "key-2")
        self.assertIsNone(self.spool.claim(P, 2000.0))
        self.assertEqual(self.spool.claim("tlink", 2000.0).key, "key-1")
        self.assertEqual(self.spool.pending(), 2)
        self.assertEqual(self.spool.pending("tlink"), 1)
        self.assertEqual(self.spool.pending("nope"), 0)

    def test_ack_removes(self) -> None:
        self.put(1)
        self.put(2)
        item = self.spool.claim(P, 2000.0)
        self.spool.ack(item)
        self.assertEqual(self.spool.pending(), 1)
        self.assertEqual(self.spool.claim(P, 2000.0).key, "key-2")
        self.assertIsNone(self.spool.claim(P, 2000.0))

    def test_release_makes_it_claimable_again_in_order(self) -> None:
        self.put(1)
        self.put(2)
        first = self.spool.claim(P, 2000.0)
        self.spool.release(first, "503 from server", attempts=2)
        again = self.spool.claim(P, 2000.0)
        self.assertEqual(again.key, "key-1")  # still the oldest
        self.assertEqual(again.attempts, 2)
        self.spool.release(again, "timeout", attempts=1)
        self.assertEqual(self.spool.claim(P, 2000.0).attempts, 3)
        self.assertEqual(self.spool.pending(), 2)

    def test_dead_letter_removes_from_queue(self) -> None:
        self.put(1)
        self.put(2)
        item = self.spool.claim(P, 2000.0)
        self.spool.dead_letter(item, 422, "invalid payload", 2001.0)
        self.assertEqual(self.spool.pending(), 1)
        self.assertEqual(self.spool.claim(P, 2000.0).key, "key-2")
        self.assertIsNone(self.spool.claim(P, 2000.0))

    def test_unclaimed(self) -> None:
        self.put(1)
        self.put(2)
        self.put(3, profile="tlink")
        item = self.spool.claim(P, 2000.0)
        self.assertEqual(self.spool.unclaimed(P, 2000.0), 1)
        self.assertEqual(self.spool.unclaimed("tlink", 2000.0), 1)
        self.assertEqual(self.spool.pending(P), 2)  # pending still counts the claimed one
        self.spool.release(item)
        self.assertEqual(self.spool.unclaimed(P, 2000.0), 2)
        self.spool.ack(self.spool.claim(P, 2000.0))
        self.assertEqual(self.spool.unclaimed(P, 2000.0), 1)

    def test_release_all(self) -> None:
        self.put(1)
        self.put(2)
        self.spool.claim(P, 2000.0)
        self.spool.claim(P, 2000.0)
        self.assertIsNone(self.spool.claim(P, 2000.0))
        self.spool.release_all()
        self.assertEqual(self.spool.claim(P, 2000.0).key, "key-1")

    def test_spool_item_gains_failed_runs_at_the_end(self) -> None:
        old_style = SpoolItem(1, P, "k", b"{}", 1.0, 0)  # positional construction elsewhere keeps working
        self.assertEqual(old_style.failed_runs, 0)
        self.assertEqual(SpoolItem._fields[-1], "failed_runs")
        self.assertEqual(self.put(1).failed_runs, 0)

    def test_mark_failed_run_counts_and_the_next_claim_carries_it(self) -> None:
        self.put(1)
        item = self.spool.claim(P, 2000.0)  # counted by the run holding it
        self.assertEqual(self.spool.mark_failed_run(item.id), 1)
        self.assertEqual(self.spool.mark_failed_run(item.id), 2)
        self.spool.release(item)
        self.assertEqual(self.spool.claim(P, 2000.0).failed_runs, 2)

    def test_claim_newest_takes_the_latest_payload(self) -> None:
        for n in range(3):
            self.put(n)
        newest = self.spool.claim(P, 2000.0, newest=True)
        oldest = self.spool.claim(P, 2000.0)
        self.assertEqual((newest.id, oldest.id), (3, 1))

    def test_mark_failed_run_of_a_gone_payload_is_0(self) -> None:
        item = self.put(1)
        self.spool.ack(self.spool.claim(P, 2000.0))
        self.assertEqual(self.spool.mark_failed_run(item.id), 0)
        self.assertEqual(self.spool.mark_failed_run(12345), 0)

    def test_ack_and_release_take_the_new_arguments(self) -> None:
        self.put(1)
        self.put(2)
        first = self.spool.claim(P, 2000.0)
        self.spool.release(first, "503 Service Unavailable", attempts=3, status=503, now=2001.0)
        again = self.spool.claim(P, 2002.0)
        self.assertEqual((again.key, again.attempts), ("key-1", 3))
        self.spool.ack(again, now=2003.0)
        self.spool.ack(self.spool.claim(P, 2004.0))  # now is optional
        self.assertEqual(self.spool.pending(), 0)

    def test_drop_deletes_a_pending_payload(self) -> None:
        one, two = self.put(1), self.put(2)
        self.assertTrue(self.spool.drop(one.id, 2000.0))
        self.assertEqual(self.spool.pending(), 1)
        self.assertEqual(self.spool.claim(P, 2000.0).key, "key-2")
        self.assertIsNone(self.spool.claim(P, 2000.0))
        self.assertFalse(self.spool.drop(one.id, 2000.0))  # already gone
        self.assertFalse(self.spool.drop(9999, 2000.0))
        self.assertTrue(self.spool.drop(two.id, 2000.0))  # this run's own claim: no one else is using it
        self.assertEqual(self.spool.pending(), 0)

    def test_drop_does_not_touch_dead_letters(self) -> None:
        item = self.put(1)
        self.spool.dead_letter(self.spool.claim(P, 2000.0), 422, "bad", 2001.0)
        self.assertFalse(self.spool.drop(item.id, 2002.0))
        self.assertTrue(self.spool.requeue(item.id, 2003.0))

    def test_requeue_puts_a_dead_letter_back_with_key_and_body_and_counts_reset(self) -> None:
        self.put(1)
        self.put(2)
        item = self.spool.claim(P, 2000.0)
        self.spool.release(item, "503", attempts=4, status=503, now=2000.5)
        self.spool.mark_failed_run(item.id)
        item = self.spool.claim(P, 2001.0)
        self.spool.dead_letter(item, 422, "invalid", 2002.0)
        self.assertEqual(self.spool.pending(), 1)
        self.assertTrue(self.spool.requeue(item.id, 2003.0))
        self.assertFalse(self.spool.requeue(item.id, 2003.0))  # no longer a dead letter
        self.assertFalse(self.spool.requeue(9999, 2003.0))
        self.assertEqual(self.spool.pending(), 2)
        back = self.spool.claim(P, 2004.0)  # keeps its place: it is the oldest
        self.assertEqual((back.key, back.body, back.created, back.attempts, back.failed_runs),
                         ("key-1", body(1), 1001.0, 0, 0))



class MemorySpoolTest(SpoolContract, unittest.TestCase):
    def make_spool(self):
        return MemorySpool()

    def test_not_persistent(self) -> None:
        self.assertFalse(MemorySpool.persistent)
        self.assertEqual((self.spool.dropped, self.spool.warnings), (0, []))

    def test_ids_increase(self) -> None:
        ids = [self.put(n).id for n in range(3)]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 3)


class SqliteSpoolTest(SpoolContract, unittest.TestCase):
    def make_spool(self, **kwargs):
        self.tmp = getattr(self, "tmp", None) or self.make_tmp()
        spool = SqliteSpool(self.tmp / "spool.sqlite3", **kwargs)
        self.addCleanup(spool.close)
        return spool

    def another(self, **kwargs) -> SqliteSpool:
        return self.make_spool(**kwargs)

    def test_persistent_across_reopen(self) -> None:
        self.assertTrue(SqliteSpool.persistent)
        for n in range(3):
            self.put(n)
        self.spool.close()
        reopened = SqliteSpool(self.tmp / "spool.sqlite3")
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.pending(), 3)
        self.assertEqual(reopened.claim(P, 2000.0), SpoolItem(1, P, "key-0", body(0), 1000.0, 0))

    def test_a_run_whose_claim_was_taken_over_neither_counts_nor_dead_letters_it(self) -> None:
        self.put(1)
        mine = self.spool.claim(P, 2000.0)  # held for a long run: the lease runs out
        other = self.another()
        theirs = other.claim(P, 2000.0 + self.spool.lease + 1)
        self.assertEqual(theirs.id, mine.id)
        self.assertEqual(self.spool.mark_failed_run(mine.id), 0)
        self.spool.dead_letter(mine, 500, "late", 2000.0 + self.spool.lease + 2)
        self.assertEqual(list(self.spool.dead_letters()), [])
        other.ack(theirs)  # the run that holds it now delivers it: nothing twice, nothing in two places
        self.assertEqual(self.spool.pending(), 0)

    def test_claim_invisible_to_second_instance(self) -> None:
        self.put(1)
        self.put(2)
        other = self.another()
        self.assertNotEqual(other.owner, self.spool.owner)
        mine = self.spool.claim(P, 2000.0)
        theirs = other.claim(P, 2000.0)
        self.assertEqual((mine.key, theirs.key), ("key-1", "key-2"))
        self.assertIsNone(other.claim(P, 2000.0))
        self.assertIsNone(self.spool.claim(P, 2000.0))
        # Releasing someone else's claim does nothing; only the owner's release counts.
        other.release(mine, "not mine", attempts=5)
        self.assertIsNone(other.claim(P, 2000.0))
        self.spool.release(mine)
        self.assertEqual(other.claim(P, 2000.0).key, "key-1")

    def test_unclaimed_counts_expired_leases_but_not_live_claims(self) -> None:
        self.spool.lease = 10.0
        self.put(1)
        self.put(2)
        self.spool.claim(P, 100.0)
        other = self.another()
        self.assertEqual(other.unclaimed(P, 105.0), 1)  # another run is working on key-1
        self.assertEqual(other.unclaimed(P, 111.0), 2)  # its lease ran out: left for a later run

    def test_release_all_only_releases_own_claims(self) -> None:
        self.put(1)
        self.put(2)
        other = self.another()
        self.spool.claim(P, 2000.0)
        other.claim(P, 2000.0)
        other.release_all()
        third = self.another()
        self.assertEqual(third.claim(P, 2000.0).key, "key-2")
        self.assertIsNone(third.claim(P, 2000.0))

    def test_expired_lease_reclaimable(self) -> None:
        self.spool.lease = 10.0
        self.put(1)
        taken = self.spool.claim(P, 100.0)
        other = self.another()
        self.assertIsNone(other.claim(P, 105.0))
        self.assertIsNone(other.claim(P, 110.0))  # the lease runs to 110 inclusive
        again = other.claim(P, 110.5)
        self.assertEqual(again.key, taken.key)
        # The first owner's late release no longer touches what the second one holds.
        self.spool.release(taken, "late")
        self.assertIsNone(self.another().claim(P, 111.0))

    @unittest.skipUnless(os.name in ("posix", "nt"), "dead-process detection is POSIX and Windows only")
    def test_claim_by_dead_pid_on_this_host_reclaimable_at_once(self) -> None:
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        self.assertEqual(child.wait(), 0)  # exited and reaped: its PID is gone
        crashed = self.another()
        crashed.owner = "%s:%d:dead" % (socket.gethostname(), child.pid)
        self.put(1)
        self.put(2)
        self.assertEqual(crashed.claim(P, 100.0).key, "key-1")  # lease 600 s: far from expired
        other = self.another()
        self.assertEqual(other.claim(P, 101.0).key, "key-1")
        self.assertEqual(other.claim(P, 101.0).key, "key-2")

    @unittest.skipUnless(os.name in ("posix", "nt"), "dead-process detection is POSIX and Windows only")
    def test_claim_by_live_pid_or_other_host_is_kept(self) -> None:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        owners = [
            "%s:%d:live" % (socket.gethostname(), os.getpid()),  # another run in a live process
            "other-host.invalid:%d:away" % dead.pid,  # cannot probe another host's PIDs
            "garbage-owner",
        ]
        for n, owner in enumerate(owners):
            self.put(n)
            holder = self.another()
            holder.owner = owner
            self.assertEqual(holder.claim(P, 100.0).key, "key-%d" % n)
        self.assertIsNone(self.another().claim(P, 101.0))
        self.assertEqual(self.spool.status(101.0)["claimed_by_running"], 3)

    def test_max_items_drops_oldest(self) -> None:
        spool = self.another(max_items=3)
        for n in range(5):
            spool.put(P, body(n), "key-%d" % n, 1000.0 + n)
        self.assertEqual(spool.dropped, 2)
        self.assertEqual(spool.pending(), 3)
        self.assertEqual([spool.claim(P, 2000.0).key for _ in range(3)], ["key-2", "key-3", "key-4"])
        self.assertEqual(spool.status(2000.0)["dropped_total"], 2)

    def test_max_items_never_drops_claimed(self) -> None:
        spool = self.another(max_items=2)
        spool.put(P, body(0), "key-0", 1000.0)
        spool.put(P, body(1), "key-1", 1001.0)
        in_flight = spool.claim(P, 2000.0)
        spool.put(P, body(2), "key-2", 1002.0)
        self.assertEqual(spool.dropped, 1)
        spool.ack(in_flight)  # the send in flight still finds its row
        self.assertEqual(spool.claim(P, 2000.0).key, "key-2")  # key-1 was the one dropped

    def test_dropped_total_accumulates_across_runs(self) -> None:
        first = self.another(max_items=1)
        first.put(P, body(0), "key-0", 1.0)
        first.put(P, body(1), "key-1", 2.0)
        second = self.another(max_items=1)
        second.put(P, body(2), "key-2", 3.0)
        second.put(P, body(3), "key-3", 4.0)
        self.assertEqual((first.dropped, second.dropped), (1, 2))
        self.assertEqual(second.status(5.0)["dropped_total"], 3)

    def test_status(self) -> None:
        self.spool.put(P, body(0), "key-0", 1000.0)
        self.spool.put(P, body(1), "key-1", 1010.0)
        self.spool.put("tlink", body(2), "key-2", 1020.0)
        item = self.spool.claim(P, 1030.0)
        dead = self.spool.claim("tlink", 1030.0)
        self.spool.dead_letter(dead, 400, "bad", 1031.0)
        status = self.spool.status(1050.0)
        size = status.pop("size_bytes")
        self.assertEqual(status, {
            "spool": str(self.tmp / "spool.sqlite3"),
            "exists": True,
            "format": 2,
            "at": local_iso(1050.0),
            "pending": 2,
            "claimed_by_running": 1,
            "oldest_age_s": 50.0,
            "dead_letters": 1,
            "dropped_total": 0,
            "delivered_total": 0,
            "last_success_at": None,
            "last_error": None,
            "by_profile": {P: 2},
            "failing": [],
            "moved_aside": [],
        })
        wal = self.tmp / "spool.sqlite3-wal"
        self.assertEqual(size, (self.tmp / "spool.sqlite3").stat().st_size + (wal.stat().st_size if wal.exists() else 0))
        self.assertGreater(size, 0)
        # Once the lease has run out, the claim no longer counts as held by a running process.
        self.assertEqual(self.spool.status(1030.0 + self.spool.lease + 1)["claimed_by_running"], 0)
        self.spool.ack(item)
        self.assertEqual(self.spool.status(1050.0)["by_profile"], {P: 1})

    def test_status_at_is_local_iso_8601_with_offset_to_the_second(self) -> None:
        at = self.spool.status(1700000000.75)["at"]
        self.assertRegex(at, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
        self.assertEqual(parse_iso8601(at).timestamp(), 1700000000.0)

    def test_status_empty(self) -> None:
        status = self.spool.status(5.0)
        self.assertEqual((status["pending"], status["oldest_age_s"], status["by_profile"]), (0, None, {}))

    def test_status_of_a_missing_spool_has_the_same_keys_empty(self) -> None:
        missing = empty_status(self.tmp / "nothing-yet.sqlite3", 5.0)
        self.assertEqual(list(missing), list(self.spool.status(5.0)))
        self.assertEqual((missing["exists"], missing["format"], missing["pending"], missing["size_bytes"],
                          missing["last_error"], missing["moved_aside"], missing["delivered_total"]),
                         (False, None, 0, 0, None, [], 0))
        self.assertEqual(missing["at"], local_iso(5.0))

    def test_ack_counts_deliveries_and_the_last_success_across_runs(self) -> None:
        for n in range(3):
            self.put(n)
        self.spool.ack(self.spool.claim(P, 2000.0), now=2000.0)
        self.spool.ack(self.spool.claim(P, 2010.0), now=2010.0)
        self.spool.ack(self.spool.claim(P, 2020.0))  # no time given: the last success stays
        later = self.another()
        status = later.status(2030.0)
        self.assertEqual((status["delivered_total"], status["last_success_at"], status["pending"]),
                         (3, local_iso(2010.0), 0))

    def test_release_records_the_status_and_time_on_the_payload_and_the_last_error(self) -> None:
        self.put(1)
        item = self.spool.claim(P, 2000.0)
        self.spool.release(item, "503 Service Unavailable", attempts=2, status=503, now=2001.0)
        row = sqlite3.connect(str(self.spool.path)).execute(
            "SELECT attempts, last_error, last_status, last_error_at, claimed_by FROM spool").fetchone()
        self.assertEqual(row, (2, "503 Service Unavailable", 503, 2001.0, None))
        status = self.spool.status(2002.0)
        self.assertEqual(status["last_error"], {"message": "503 Service Unavailable", "at": local_iso(2001.0)})
        self.assertEqual(status["failing"], [{"id": item.id, "profile": P, "idempotency_key": "key-1",
                                              "attempts": 2, "failed_runs": 0, "last_status": 503,
                                              "last_error": "503 Service Unavailable"}])
        # A release without an error (given back unsent) leaves the spool-wide last error alone.
        self.spool.release(self.spool.claim(P, 2003.0))
        self.assertEqual(self.another().status(2004.0)["last_error"]["message"], "503 Service Unavailable")

    def test_status_text_shows_the_last_error_and_failing_payloads_on_one_line_each(self) -> None:
        import io

        from iotpost.cli_common import _print_status
        from iotpost.output import Reporter

        self.put(1)
        item = self.spool.claim(P, 2000.0)
        self.spool.release(item, "Service Unavailable", attempts=2, status=503, now=2001.0)
        out = io.StringIO()
        _print_status(self.spool.status(2002.0), Reporter("prog", out, io.StringIO()), "text")
        lines = out.getvalue().splitlines()
        self.assertIn("last_error: Service Unavailable (at %s)" % local_iso(2001.0), lines)
        self.assertIn("failing: id %d: 2 attempt(s), 0 failed run(s), last: 503 Service Unavailable" % item.id, lines)
        self.assertIn("moved_aside: -", lines)
        self.assertIn("format: 2", lines)

    def test_drop_refuses_a_payload_a_live_run_has_claimed(self) -> None:
        item = self.put(1)
        other = self.another()
        other.owner = "%s:%d:live" % (socket.gethostname(), os.getpid())  # a live process
        other.lease = 10.0
        other.claim(P, 100.0)
        with self.assertRaises(TransientError) as cm:
            self.spool.drop(item.id, 105.0)
        self.assertEqual(cm.exception.exit_code, ExitStatus.TEMPFAIL)
        self.assertIn("in use by a running send; try again", cm.exception.message)
        self.assertEqual(self.spool.pending(), 1)
        self.assertTrue(self.spool.drop(item.id, 111.0))  # the claim's lease ran out: nobody holds it
        self.assertEqual(self.spool.pending(), 0)

    @unittest.skipUnless(os.name in ("posix", "nt"), "dead-process detection is POSIX and Windows only")
    def test_drop_takes_a_payload_whose_claimant_died(self) -> None:
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        item = self.put(1)
        crashed = self.another()
        crashed.owner = "%s:%d:dead" % (socket.gethostname(), child.pid)
        crashed.claim(P, 100.0)
        self.assertTrue(self.spool.drop(item.id, 101.0))

    def test_requeue_keeps_the_dead_letters_id(self) -> None:
        self.put(1)
        item = self.spool.claim(P, 2000.0)
        self.spool.dead_letter(item, 400, "bad", 2001.0)
        self.put(2)
        self.assertTrue(self.spool.requeue(item.id, 2002.0))
        self.assertEqual([self.spool.claim(P, 2003.0).id for _ in range(2)], [item.id, item.id + 1])
        self.assertEqual(list(self.spool.dead_letters()), [])

    def test_dead_letters_contents(self) -> None:
        self.spool.put(P, body(1), "key-1", 1000.0)
        self.spool.put(P, b"\xffnot json", "key-2", 1001.0)
        a = self.spool.claim(P, 1100.0)
        b = self.spool.claim(P, 1100.0)
        self.spool.dead_letter(b, 413, "payload too large", 1102.0)
        self.spool.dead_letter(a, 422, "missing data", 1101.0)
        letters = list(self.spool.dead_letters())
        self.assertEqual(letters, [
            {"id": a.id, "profile": P, "idempotency_key": "key-1", "created": 1000.0, "dead_at": 1101.0,
             "status": 422, "reason": "missing data", "body": {"device_id": "d", "data": {"n": 1}}},
            {"id": b.id, "profile": P, "idempotency_key": "key-2", "created": 1001.0, "dead_at": 1102.0,
             "status": 413, "reason": "payload too large", "body": "\ufffdnot json"},
        ])
        self.assertEqual(self.spool.pending(), 0)
        # Dead letters survive a reopen.
        reopened = self.another()
        self.assertEqual(len(list(reopened.dead_letters())), 2)

    def test_corrupt_file_moved_aside(self) -> None:
        tmp = self.make_tmp()
        path = tmp / "spool.sqlite3"
        garbage = bytes(range(256)) * 64
        path.write_bytes(garbage)
        spool = SqliteSpool(path)
        self.addCleanup(spool.close)
        self.assertEqual(len(spool.warnings), 1)
        self.assertIn("moved", spool.warnings[0])
        asides = [p for p in tmp.iterdir() if p.name.startswith("spool.sqlite3.corrupt-")
                  and not p.name.endswith(("-wal", "-shm"))]
        self.assertEqual(len(asides), 1)
        self.assertEqual(asides[0].read_bytes(), garbage)  # kept for a person to look at
        self.assertIn(str(asides[0]), spool.warnings[0])
        # And the fresh spool works.
        spool.put(P, body(1), "key-1", 1.0)
        self.assertEqual(spool.claim(P, 2.0).key, "key-1")
        spool.close()
        healthy = SqliteSpool(path)
        self.addCleanup(healthy.close)
        self.assertEqual(healthy.warnings, [])  # the new file is a good spool
        self.assertEqual(healthy.pending(), 1)

    def test_missing_folder_is_config_error(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            SqliteSpool(self.tmp / "no" / "such" / "spool.sqlite3")
        self.assertEqual(cm.exception.exit_code, ExitStatus.CONFIG)

    def test_open_spool(self) -> None:
        spool = open_spool(self.tmp / "other.sqlite3", max_items=5, lease=30.0)
        self.addCleanup(spool.close)
        self.assertIsInstance(spool, SqliteSpool)
        self.assertEqual((spool.max_items, spool.lease), (5, 30.0))

    def fill_until_full(self, spool: SqliteSpool) -> int:
        """Put 3 kB bodies until the spool refuses one; return how many went in."""
        stored = 0
        for n in range(200):
            try:
                spool.put(P, b"x" * 3000, "key-%d" % n, float(n))
            except Exception as exc:
                self.last_error = exc
                return stored
            stored += 1
        self.fail("the spool never became full")

    def test_full_disk_keeps_what_was_spooled(self) -> None:
        path = self.tmp / "small.sqlite3"
        spool = SqliteSpool(path, max_pages=12)
        self.addCleanup(spool.close)
        stored = self.fill_until_full(spool)
        self.assertGreater(stored, 0)
        self.assertIsInstance(self.last_error, (SpoolFull, sqlite3.OperationalError))
        self.assertEqual(spool.pending(), stored)
        # The same spool still hands out what it holds, and a later run (more room) finds it all.
        self.assertEqual(spool.claim(P, 500.0).key, "key-0")
        later = SqliteSpool(path)
        self.addCleanup(later.close)
        self.assertEqual(later.pending(), stored)
        self.assertEqual(later.claim(P, 500.0).key, "key-1")

    # On SQLITE_FULL SQLite has already rolled back; _write must not mask the error with its own ROLLBACK.
    def test_full_disk_raises_spool_full(self) -> None:
        spool = SqliteSpool(self.tmp / "small.sqlite3", max_pages=12)
        self.addCleanup(spool.close)
        self.fill_until_full(spool)
        self.assertIsInstance(self.last_error, SpoolFull)
        self.assertEqual(self.last_error.exit_code, ExitStatus.TEMPFAIL)
        self.assertEqual(int(self.last_error.exit_code), 75)


if __name__ == "__main__":
    unittest.main()
