"""Store and forward: payloads wait here until the platform has them, across outages and crashes.

Usage::

    spool = open_spool(Path("/var/lib/iotpost/spool.sqlite3"), max_items=10000)
    item = spool.put("tesaiot", body, key, now)       # durable before the first send attempt
    item = spool.claim("tesaiot", now)                # oldest first; invisible to other runs
    spool.ack(item)  |  spool.release(item, error)  |  spool.dead_letter(item, 400, "why", now)

``MemorySpool`` has the same interface and backs a run without --spool, so one code path sends
both. ``SqliteSpool`` survives crashes (WAL, synchronous=FULL: a commit is on disk before we send)
and lets overlapping cron runs share one file: claims are taken in a write transaction and expire,
and a claim whose process is gone (same host, dead PID) is taken over at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional

from .errors import ConfigError, SpoolFull, TransientError

DEFAULT_LEASE = 600.0


class SpoolItem(NamedTuple):
    id: int
    profile: str
    key: str  # the Idempotency-Key, fixed for the payload's life
    body: bytes
    created: float  # wall-clock seconds
    attempts: int


class MemorySpool:
    """The spool of a run without --spool: order and retries as usual, nothing kept after exit."""

    persistent = False

    def __init__(self) -> None:
        self._items: Dict[int, SpoolItem] = {}
        self._claimed: set = set()
        self._next = 1
        self.dropped = 0
        self.warnings: List[str] = []

    def put(self, profile: str, body: bytes, key: str, now: float) -> SpoolItem:
        item = SpoolItem(self._next, profile, key, body, now, 0)
        self._items[item.id] = item
        self._next += 1
        return item

    def claim(self, profile: str, now: float) -> Optional[SpoolItem]:
        batch = self.claim_batch(profile, now, 1)
        return batch[0] if batch else None

    def claim_batch(self, profile: str, now: float, limit: int) -> List[SpoolItem]:
        """Up to ``limit`` of the oldest unclaimed payloads, claimed together (for batched uploads)."""
        batch = []
        for item_id in sorted(self._items):
            if len(batch) >= limit:
                break
            if item_id not in self._claimed and self._items[item_id].profile == profile:
                self._claimed.add(item_id)
                batch.append(self._items[item_id])
        return batch

    def ack(self, item: SpoolItem) -> None:
        self._items.pop(item.id, None)
        self._claimed.discard(item.id)

    def release(self, item: SpoolItem, error: str = "", attempts: int = 0) -> None:
        self._claimed.discard(item.id)
        if item.id in self._items:
            self._items[item.id] = self._items[item.id]._replace(attempts=item.attempts + attempts)

    def dead_letter(self, item: SpoolItem, status: int, reason: str, now: float) -> None:
        self.ack(item)

    def release_all(self) -> None:
        self._claimed.clear()

    def pending(self, profile: Optional[str] = None) -> int:
        return sum(1 for i in self._items.values() if profile is None or i.profile == profile)

    def unclaimed(self, profile: str, now: float) -> int:
        return sum(1 for i in self._items.values() if i.profile == profile and i.id not in self._claimed)

    def close(self) -> None:
        pass


def _owner_id() -> str:
    return "%s:%d:%s" % (socket.gethostname(), os.getpid(), os.urandom(4).hex())


def _process_alive(pid: int) -> bool:
    """Only asked on POSIX: os.kill(pid, 0) on Windows would terminate the process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive but someone else's; anything odd: assume alive, let the lease decide
        pass
    return True


_SCHEMA = """
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


class SqliteSpool:
    """A durable spool in one SQLite file, safe for several processes at once."""

    persistent = True

    def __init__(self, path: Path, max_items: Optional[int] = None, lease: float = DEFAULT_LEASE,
                 max_pages: Optional[int] = None) -> None:
        import sqlite3

        self._sqlite3 = sqlite3
        self.path = Path(path)
        self.max_items = max_items
        self.lease = lease
        self.owner = _owner_id()
        self.dropped = 0  # dropped by this run because of max_items
        self.warnings: List[str] = []
        try:
            self._db = self._connect(max_pages)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
                raise ConfigError("cannot open spool %s (%s)" % (self.path, exc),
                                  hint="check that its folder exists and is writable") from None
            self._move_aside(exc)
            self._db = self._connect(max_pages)

    def _connect(self, max_pages: Optional[int]):
        sqlite3 = self._sqlite3
        if self.path.parent and not self.path.parent.exists():
            raise ConfigError("the spool's folder %s does not exist" % self.path.parent)
        db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed payload is on disk before the first send attempt.
            db.execute("PRAGMA synchronous = FULL")
            if max_pages:
                db.execute("PRAGMA max_page_count = %d" % int(max_pages))
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM spool").fetchone()
            db.execute("SELECT count(*) FROM dead_letters").fetchone()
        except Exception:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name("%s.corrupt-%s" % (self.path.name, stamp))
        try:
            os.replace(str(self.path), str(aside))
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.replace(str(side), str(aside) + suffix)
        except OSError as move_exc:
            raise ConfigError("spool %s is unreadable (%s) and cannot be moved aside (%s)"
                              % (self.path, exc, move_exc)) from None
        self.warnings.append(
            "spool %s was unreadable (%s); moved it to %s and started a new one" % (self.path, exc, aside)
        )

    # -- writing ------------------------------------------------------------------------------

    def _write(self, fn):
        """Run fn(db) in one IMMEDIATE transaction; a full disk becomes SpoolFull (exit 75)."""
        sqlite3 = self._sqlite3
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (e.g. on SQLITE_FULL); a failed COMMIT may not.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result
        except sqlite3.DatabaseError as exc:
            text = str(exc).lower()
            if "full" in text:
                raise SpoolFull("the disk under spool %s is full (%s), while spooling" % (self.path, exc),
                                hint="free some space; everything already spooled is kept") from None
            if "readonly" in text or "read-only" in text:
                raise ConfigError("spool %s is read-only (%s)" % (self.path, exc),
                                  hint="the user running the tool must be able to write the file and its folder"
                                  ) from None
            # Locked past the busy timeout, an I/O error: nothing committed is lost; try later.
            raise TransientError("spool %s failed (%s), while spooling" % (self.path, exc),
                                 hint="check the disk; what is already spooled is kept") from None

    def put(self, profile: str, body: bytes, key: str, now: float) -> SpoolItem:
        def insert(db):
            cur = db.execute(
                "INSERT INTO spool (profile, idempotency_key, body, created) VALUES (?, ?, ?, ?)",
                (profile, key, body, now),
            )
            dropped = 0
            if self.max_items is not None:
                (count,) = db.execute("SELECT count(*) FROM spool").fetchone()
                excess = count - self.max_items
                if excess > 0:
                    dropped = db.execute(
                        "DELETE FROM spool WHERE id IN (SELECT id FROM spool WHERE claimed_by IS NULL"
                        " AND id != ? ORDER BY id LIMIT ?)", (cur.lastrowid, excess)).rowcount
                    db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) ON CONFLICT(name)"
                               " DO UPDATE SET value = value + excluded.value", (dropped,))
            return cur.lastrowid, dropped

        item_id, dropped = self._write(insert)
        self.dropped += dropped
        return SpoolItem(item_id, profile, key, body, now, 0)

    def _reap_dead_owners(self, db, now: float) -> None:
        if os.name != "posix":
            return  # no safe liveness probe: expired leases are the only way back
        host = socket.gethostname()
        for (owner,) in db.execute("SELECT DISTINCT claimed_by FROM spool WHERE claimed_by IS NOT NULL"
                                   " AND claim_expires >= ?", (now,)).fetchall():
            parts = owner.split(":")
            if len(parts) == 3 and parts[0] == host and owner != self.owner:
                try:
                    pid = int(parts[1])
                except ValueError:
                    continue
                if not _process_alive(pid):
                    db.execute("UPDATE spool SET claimed_by = NULL, claim_expires = NULL"
                               " WHERE claimed_by = ?", (owner,))

    def claim(self, profile: str, now: float) -> Optional[SpoolItem]:
        batch = self.claim_batch(profile, now, 1)
        return batch[0] if batch else None

    def claim_batch(self, profile: str, now: float, limit: int) -> List[SpoolItem]:
        """Up to ``limit`` of the oldest payloads no live run holds, claimed in one transaction."""

        def take(db):
            self._reap_dead_owners(db, now)
            rows = db.execute(
                "SELECT id, profile, idempotency_key, body, created, attempts FROM spool"
                " WHERE profile = ? AND (claimed_by IS NULL OR claim_expires < ?) ORDER BY id LIMIT ?",
                (profile, now, limit),
            ).fetchall()
            db.executemany("UPDATE spool SET claimed_by = ?, claim_expires = ? WHERE id = ?",
                           [(self.owner, now + self.lease, row[0]) for row in rows])
            return [SpoolItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

        return self._write(take)

    def ack(self, item: SpoolItem) -> None:
        self._write(lambda db: db.execute("DELETE FROM spool WHERE id = ?", (item.id,)))

    def release(self, item: SpoolItem, error: str = "", attempts: int = 0) -> None:
        self._write(lambda db: db.execute(
            "UPDATE spool SET claimed_by = NULL, claim_expires = NULL, attempts = attempts + ?,"
            " last_error = ? WHERE id = ? AND claimed_by = ?", (attempts, error, item.id, self.owner)))

    def dead_letter(self, item: SpoolItem, status: int, reason: str, now: float) -> None:
        def move(db):
            db.execute(
                "INSERT OR REPLACE INTO dead_letters (id, profile, idempotency_key, body, created, dead_at,"
                " status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (item.id, item.profile, item.key, item.body, item.created, now, status, reason))
            db.execute("DELETE FROM spool WHERE id = ?", (item.id,))

        self._write(move)

    def release_all(self) -> None:
        """Give back this run's claims (on exit, also after Ctrl-C)."""
        self._write(lambda db: db.execute(
            "UPDATE spool SET claimed_by = NULL, claim_expires = NULL WHERE claimed_by = ?", (self.owner,)))

    # -- reading ------------------------------------------------------------------------------

    def pending(self, profile: Optional[str] = None) -> int:
        if profile is None:
            return self._db.execute("SELECT count(*) FROM spool").fetchone()[0]
        return self._db.execute("SELECT count(*) FROM spool WHERE profile = ?", (profile,)).fetchone()[0]

    def unclaimed(self, profile: str, now: float) -> int:
        """Payloads no live run is working on: what is really left for a later run."""
        return self._db.execute("SELECT count(*) FROM spool WHERE profile = ? AND (claimed_by IS NULL"
                                " OR claim_expires < ?)", (profile, now)).fetchone()[0]

    def status(self, now: float) -> Dict[str, object]:
        db = self._db
        pending, oldest = db.execute("SELECT count(*), min(created) FROM spool").fetchone()
        claimed = db.execute("SELECT count(*) FROM spool WHERE claimed_by IS NOT NULL AND claim_expires >= ?",
                             (now,)).fetchone()[0]
        dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        row = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        by_profile = dict(db.execute("SELECT profile, count(*) FROM spool GROUP BY profile").fetchall())
        return {
            "spool": str(self.path),
            "pending": pending,
            "claimed_by_running": claimed,
            "oldest_age_s": round(now - oldest, 1) if oldest is not None else None,
            "dead_letters": dead,
            "dropped_total": row[0] if row else 0,
            "by_profile": by_profile,
        }

    def dead_letters(self) -> Iterator[Dict[str, object]]:
        rows = self._db.execute("SELECT id, profile, idempotency_key, body, created, dead_at, status, reason"
                                " FROM dead_letters ORDER BY id").fetchall()
        for row in rows:
            body = bytes(row[3]).decode("utf-8", "replace")
            try:
                decoded: object = json.loads(body)
            except ValueError:
                decoded = body
            yield {"id": row[0], "profile": row[1], "idempotency_key": row[2], "created": row[4],
                   "dead_at": row[5], "status": row[6], "reason": row[7], "body": decoded}

    def close(self) -> None:
        self._db.close()


def open_spool(path: Path, max_items: Optional[int] = None, lease: float = DEFAULT_LEASE) -> SqliteSpool:
    return SqliteSpool(path, max_items=max_items, lease=lease)
