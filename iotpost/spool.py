"""Store and forward: payloads wait here until the platform has them, across outages and crashes.

Usage::

    spool = open_spool(Path("/var/lib/iotpost/spool.sqlite3"), max_items=10000)
    item = spool.put("tesaiot", body, key, now)       # durable before the first send attempt
    item = spool.claim("tesaiot", now)                # oldest first; invisible to other runs
    spool.ack(item, now)  |  spool.release(item, error, attempts, status, now)  |  spool.dead_letter(item, 400, "why", now)

``MemorySpool`` has the same interface and backs a run without --spool, so one code path sends
both. ``SqliteSpool`` survives crashes (WAL, synchronous=FULL: a commit is on disk before we send)
and lets overlapping cron runs share one file: claims are taken in a write transaction and expire,
and a claim whose process is gone (same host, dead PID) is taken over at once.

Nothing spooled is given up: a full disk or an I/O error is exit 75 and leaves the file alone; only a
file SQLite itself calls damaged is moved aside (``spool_recovery``), and what it still holds is
carried into the fresh spool. The file's format is ``PRAGMA user_version`` (0 = format 1, the first
release); an older format is migrated in place, a newer one is refused (78) and left alone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from .errors import ConfigError, IotPostError, SpoolFull, TransientError
from .memory_spool import MemorySpool, SpoolItem  # noqa: F401 - MemorySpool: one import place for tests
from .spool_recovery import (aside_signature, classify, disk_nearly_full, fails_quick_check, move_aside,
                             moved_aside_files, read_moved_aside)

DEFAULT_LEASE = 600.0
FORMAT = 2  # the spool format this release writes and reads (PRAGMA user_version; 0 means format 1)


def local_iso(epoch_seconds: Optional[float]) -> Optional[str]:
    """Local time with its UTC offset, to the second (None stays None): what a person reading a status wants."""
    from .output import local_iso as format_local

    return None if epoch_seconds is None else format_local(epoch_seconds)


def _in_use(item_id: int) -> TransientError:
    return TransientError("payload %d is in use by a running send; try again" % item_id,
                          hint="wait for that run to finish (--spool-status shows claimed_by_running)")


def _owner_id() -> str:
    return "%s:%d:%s" % (socket.gethostname(), os.getpid(), os.urandom(4).hex())


# Windows API values for the liveness probe (winnt.h, winerror.h, minwinbase.h).
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
_ERROR_INVALID_PARAMETER = 87  # OpenProcess on a PID no process has
_STILL_ACTIVE = 259


def _windows_process_alive(pid: int, kernel32: Any = None,
                           last_error: Optional[Callable[[], int]] = None) -> bool:
    """OpenProcess + GetExitCodeProcess: os.kill(pid, 0) on Windows would terminate the process.

    ``kernel32`` and ``last_error`` are for tests (the real ones exist only on Windows). Anything
    but a clear "no such process" or "has exited" counts as alive: the lease decides then.
    """
    import ctypes  # only on Windows: a one-off send on Linux never loads it

    if kernel32 is None:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        kernel32.OpenProcess.restype = ctypes.c_void_p  # a HANDLE: c_int would truncate it on 64-bit
        kernel32.OpenProcess.argtypes = (ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong)
        kernel32.GetExitCodeProcess.argtypes = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_ulong))
        kernel32.CloseHandle.argtypes = (ctypes.c_void_p,)
        last_error = ctypes.get_last_error  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        # ERROR_ACCESS_DENIED: alive but someone else's (another user, a service).
        return last_error() != _ERROR_INVALID_PARAMETER if last_error else True
    try:
        code = ctypes.c_ulong(0)
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _process_alive(pid: int) -> bool:
    """Whether a process of this host still runs; on Windows through the Windows API."""
    if os.name == "nt":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive but someone else's; anything odd: assume alive, let the lease decide
        pass
    return True


# Format 1, exactly as the first release created it (user_version 0). Format 2 is this plus
# _FORMAT_2; every open of an older file runs both, so a new file and a migrated one are the same.
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

_FORMAT_2_COLUMNS = (
    ("failed_runs", "failed_runs INTEGER NOT NULL DEFAULT 0"),
    ("last_status", "last_status INTEGER"),
    ("last_error_at", "last_error_at REAL"),
)
# Spool-wide facts for --spool-status: delivered_total, last_success_at, last_error, last_error_at,
# and "carried:<file>" for each moved-aside file whose rows were carried over.
_STATE_TABLE = "CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value)"
_SET_STATE = ("INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value")


def empty_status(path: Path, now: float) -> Dict[str, Any]:
    """The status of a spool with nothing in it (or no file yet): every key, empty values."""
    return {
        "spool": str(path),
        "exists": path.exists(),
        "format": None,
        "at": local_iso(now),
        "pending": 0,
        "claimed_by_running": 0,
        "oldest_age_s": None,
        "dead_letters": 0,
        "dropped_total": 0,
        "delivered_total": 0,
        "last_success_at": None,
        "last_error": None,
        "size_bytes": _size_bytes(path),
        "by_profile": {},
        "failing": [],
        "moved_aside": _moved_aside_status(path),
    }


def _size_bytes(path: Path) -> int:
    total = 0
    for name in (str(path), str(path) + "-wal"):
        try:
            total += os.path.getsize(name)
        except OSError:
            pass
    return total


def _moved_aside_status(path: Path) -> List[Dict[str, Any]]:
    listed = []
    for aside in moved_aside_files(path):
        rows = read_moved_aside(aside)
        listed.append({"file": str(aside), "payloads": None if rows is None else len(rows.pending)})
    return listed


_PRIVATE_SIDE_FILES = ("-wal", "-shm", "-journal")


def create_private(path: Path) -> None:
    """Create a new spool file 0600 whatever the umask: it holds readings. SQLite gives the -wal and
    -shm it makes the main file's mode; an existing file is left as its owner set it."""
    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # it exists, or cannot be created: SQLite's own open reports that in its words
        return
    try:
        if hasattr(os, "fchmod"):  # a umask cannot widen 0600, but one that took the owner's bits narrows it
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def make_private(path: Path, sides: Sequence[str]) -> None:
    """chmod 600 the side files of ``path`` that exist (an older spool's may be wider); best effort."""
    for side in sides:
        try:
            os.chmod(str(path) + side, 0o600)
        except OSError:  # not there, or not ours: nothing to tighten
            pass


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
        self._db = None
        if self.path.parent and not self.path.parent.exists():
            raise ConfigError("the spool's folder %s does not exist" % self.path.parent)
        self._db = self._open(max_pages)
        self._carry_moved_aside()

    # -- opening ------------------------------------------------------------------------------

    def _open(self, max_pages: Optional[int]):
        """Connect, migrating an older format; move the file aside only if SQLite says it is damaged."""
        sqlite3 = self._sqlite3
        try:
            seen: Optional[os.stat_result] = os.stat(str(self.path))
        except OSError:
            seen = None
        try:
            return self._connect(max_pages)
        except sqlite3.DatabaseError as exc:
            kind = classify(exc)
            # An error naming no cause is damage only if SQLite's own check says so.
            if not (kind == "corrupt" or (kind == "other" and fails_quick_check(self.path))):
                raise self._failure(exc, "nothing new accepted") from None
            damage = exc
        self._move_aside(damage, seen)
        try:
            return self._connect(max_pages)
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, "nothing new accepted (starting a fresh spool)") from None

    def _connect(self, max_pages: Optional[int]):
        create_private(self.path)
        db = self._sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            self._use_wal(db)
            make_private(self.path, _PRIVATE_SIDE_FILES)
            # FULL: a committed payload is on disk before the first send attempt.
            db.execute("PRAGMA synchronous = FULL")
            if sys.platform == "darwin":
                # macOS fsync() leaves the data in the drive's cache, lost on power loss;
                # F_FULLFSYNC (this pragma, which covers WAL checkpoints too) reaches the medium.
                db.execute("PRAGMA fullfsync = ON")
            if max_pages:
                db.execute("PRAGMA max_page_count = %d" % int(max_pages))
            # Reading first: opening a current spool on a full disk must not need to write, and a
            # damaged file is moved aside as it was found. quick_check reads every page (a count
            # alone is answered from an index and misses a damaged table page); it costs
            # milliseconds for a backlog of thousands.
            version = self._check_format(db)
            (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if verdict != "ok":
                raise self._sqlite3.DatabaseError("database disk image is malformed (%s)"
                                                  % " ".join(verdict.split()))
            if version < FORMAT:
                self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _use_wal(self, db) -> None:
        """WAL is a property of the file, set once. Setting it needs the file to itself, and SQLite
        answers "locked" at once instead of waiting, so two runs creating one spool take turns."""
        deadline = time.monotonic() + 30.0
        pause = 0.005
        while db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return  # WAL, or a file system without it: SQLite keeps what it can
            except self._sqlite3.OperationalError as exc:
                if classify(exc) != "locked" or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def _check_format(self, db) -> int:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > FORMAT:
            raise ConfigError("spool %s is format %d, newer than this release reads (format %d)"
                              % (self.path, version, FORMAT),
                              hint="run the newer iotpost that wrote it, or use another --spool file; "
                              "this one is left as it is")
        return version

    def _migrate(self, db) -> None:
        """Bring a format-1 (or brand-new) file to FORMAT in one transaction: all of it, or nothing."""
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._check_format(db) < FORMAT:  # another run may have migrated while we waited
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                have = {row[1] for row in db.execute("PRAGMA table_info(spool)")}
                for name, column in _FORMAT_2_COLUMNS:
                    if name not in have:
                        db.execute("ALTER TABLE spool ADD COLUMN " + column)
                db.execute(_STATE_TABLE)
                db.execute("PRAGMA user_version = %d" % FORMAT)
            db.execute("COMMIT")
        except BaseException:
            self._rollback(db)
            raise

    @staticmethod
    def _rollback(db) -> None:
        # SQLite may already have rolled back (e.g. on SQLITE_FULL); a failed COMMIT may not.
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the error that got us here is the one to report
                pass

    def _move_aside(self, exc: Exception, seen: Optional[os.stat_result]) -> None:
        try:
            aside = move_aside(self.path, seen)
        except OSError as move_exc:
            raise ConfigError("spool %s is damaged (%s) and cannot be moved aside (%s)"
                              % (self.path, exc, move_exc),
                              hint="move it away by hand; nothing in it has been changed") from None
        if aside is None:
            self.warnings.append("spool %s was damaged (%s); another run has already moved it aside"
                                 % (self.path, exc))
        else:
            self.warnings.append("spool %s is damaged (%s); moved it to %s and started a new one"
                                 % (self.path, exc, aside))

    def _carry_moved_aside(self) -> None:
        """Carry what moved-aside files still hold into this spool, once per file, by idempotency key.

        Best effort: a failure here (a full disk) is a warning, and the next open tries again.
        """
        asides = moved_aside_files(self.path)
        if not asides:
            return
        done = dict(self._read("SELECT name, value FROM state WHERE name LIKE 'carried:%'"))
        for aside in asides:
            if done.get("carried:" + aside.name) == aside_signature(aside):
                continue
            rows = read_moved_aside(aside)
            signature = aside_signature(aside)  # as read
            if rows is None:
                continue  # nothing readable (yet: it may be a name reserved a moment ago); try next time
            try:
                carried = self._write(lambda db: self._carry(db, aside.name, signature, rows),
                                      "while carrying over %s" % aside)
            except IotPostError as exc:
                self.warnings.append("could not carry the payloads of %s into the spool yet (%s)" % (aside, exc))
                return
            if carried:
                self.warnings.append("carried %d payload(s) and %d dead letter(s) from %s into the spool"
                                     % (carried + (aside,)))

    def _carry(self, db, name: str, signature: str, rows) -> Optional[tuple]:
        marker = db.execute("SELECT value FROM state WHERE name = ?", ("carried:" + name,)).fetchone()
        if marker is not None and marker[0] == signature:
            return None  # another run did it while we read
        pending = dead = 0
        for profile, key, body, created, attempts in rows.pending:
            pending += db.execute(
                "INSERT OR IGNORE INTO spool (profile, idempotency_key, body, created, attempts)"
                " VALUES (?, ?, ?, ?, ?)", (profile, key, bytes(body), created, attempts or 0)).rowcount
        for profile, key, body, created, dead_at, status, reason in rows.dead:
            if db.execute("SELECT 1 FROM dead_letters WHERE idempotency_key = ? UNION ALL"
                          " SELECT 1 FROM spool WHERE idempotency_key = ?", (key, key)).fetchone():
                continue
            db.execute("INSERT INTO dead_letters (id, profile, idempotency_key, body, created, dead_at, status,"
                       " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (self._next_spool_id(db), profile, key, bytes(body), created, dead_at, status, reason))
            dead += 1
        db.execute(_SET_STATE, ("carried:" + name, signature))
        return (pending, dead) if pending or dead else None

    @staticmethod
    def _next_spool_id(db) -> int:
        """Take an id from the spool's own sequence, so a carried dead letter never collides with a
        dead letter made later (a dead letter keeps its payload's id)."""
        if db.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'spool'").fetchone() is None:
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('spool', 0)")
        db.execute("UPDATE sqlite_sequence SET seq = max(seq, (SELECT coalesce(max(id), 0) FROM spool),"
                   " (SELECT coalesce(max(id), 0) FROM dead_letters)) + 1 WHERE name = 'spool'")
        return db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()[0]

    # -- failures -----------------------------------------------------------------------------

    def _kept(self) -> Optional[int]:
        """How many payloads the file holds, read without writing anything (for error messages)."""
        sqlite3 = self._sqlite3
        if self._db is not None:
            try:
                return self._db.execute("SELECT count(*) FROM spool").fetchone()[0]
            except sqlite3.DatabaseError:
                pass
        if not self.path.exists():
            return 0
        from .spool_recovery import connect_read_only

        try:
            db = connect_read_only(self.path)
            try:
                return db.execute("SELECT count(*) FROM spool").fetchone()[0]
            finally:
                db.close()
        except sqlite3.DatabaseError:
            return None

    def _failure(self, exc: Exception, context: str) -> IotPostError:
        """The one place a sqlite3 error becomes a message and an exit code; none of them moves the file."""
        kind = classify(exc)
        if kind == "io" and disk_nearly_full(self.path.parent):
            kind = "full"
        if kind in ("full", "io"):
            kept = self._kept()
            held = "%d payloads kept" % kept if kept is not None else "what was spooled is kept"
            if kind == "full":
                return SpoolFull("the spool's disk is full: %s, %s (spool %s)" % (held, context, self.path),
                                 hint="free some space; the next run sends everything spooled")
            return TransientError("the spool's disk failed (%s): %s, %s (spool %s)" % (exc, held, context, self.path),
                                  hint="check the disk and its free space; the file is left as it is")
        if kind == "readonly":
            return ConfigError("spool %s is read-only (%s)" % (self.path, exc),
                               hint="the user running the tool must be able to write the file and its folder")
        if kind == "cantopen":
            return ConfigError("cannot open spool %s (%s)" % (self.path, exc),
                               hint="check that its folder exists and is writable")
        if kind == "locked":
            return TransientError("spool %s stayed locked by another process (%s), %s" % (self.path, exc, context),
                                  hint="try again; what is spooled is kept")
        if kind == "corrupt":
            return TransientError("spool %s is damaged (%s), %s" % (self.path, exc, context),
                                  hint="run again: a spool found damaged when opened is moved aside and "
                                  "what it still holds is carried over")
        return TransientError("spool %s failed (%s), %s" % (self.path, exc, context),
                              hint="check the disk; what is already spooled is kept")

    # -- writing ------------------------------------------------------------------------------

    def _write(self, fn, context: str = "while updating it"):
        """Run fn(db) in one IMMEDIATE transaction; a full disk becomes SpoolFull (exit 75)."""
        sqlite3 = self._sqlite3
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                raise
            return result
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, context) from None

    def _read(self, sql: str, params: tuple = ()) -> List[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except self._sqlite3.DatabaseError as exc:
            raise self._failure(exc, "while reading it") from None

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

        item_id, dropped = self._write(insert, "this reading not accepted")
        self.dropped += dropped
        return SpoolItem(item_id, profile, key, body, now, 0, 0)  # every field: Record's quick path

    def advance_state(self, name: str, choose: Callable[[Any], Any], context: str = "while updating it") -> Any:
        """Read a ``state`` value, store ``choose(old)`` in its place, in one transaction; return it.

        One transaction, so two runs at once each see the other's value (tlink_push.py keeps each
        device's last push time here). An exception from ``choose`` changes nothing.
        """

        def step(db):
            row = db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
            value = choose(row[0] if row else None)
            db.execute(_SET_STATE, (name, value))
            return value

        return self._write(step, context)

    def _reap_dead_owners(self, db, now: float) -> None:
        if os.name not in ("posix", "nt"):
            return  # no liveness probe: expired leases are the only way back
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

    def claim(self, profile: str, now: float, newest: bool = False) -> Optional[SpoolItem]:
        batch = self.claim_batch(profile, now, 1, newest)
        return batch[0] if batch else None

    def claim_batch(self, profile: str, now: float, limit: int, newest: bool = False) -> List[SpoolItem]:
        """Up to ``limit`` of the oldest (``newest``: latest) payloads no live run holds, in one transaction."""

        def take(db):
            self._reap_dead_owners(db, now)
            rows = db.execute(
                "SELECT id, profile, idempotency_key, body, created, attempts, failed_runs FROM spool"
                " WHERE profile = ? AND (claimed_by IS NULL OR claim_expires < ?) ORDER BY id %s LIMIT ?"
                % ("DESC" if newest else "ASC"),
                (profile, now, limit),
            ).fetchall()
            db.executemany("UPDATE spool SET claimed_by = ?, claim_expires = ? WHERE id = ?",
                           [(self.owner, now + self.lease, row[0]) for row in rows])
            return [SpoolItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6]) for r in rows]

        return self._write(take, "while claiming payloads")

    def ack(self, item: SpoolItem, now: Optional[float] = None) -> None:
        def delivered(db):
            db.execute("DELETE FROM spool WHERE id = ?", (item.id,))
            db.execute("INSERT INTO state (name, value) VALUES ('delivered_total', 1) ON CONFLICT(name)"
                       " DO UPDATE SET value = value + 1")
            if now is not None:
                db.execute(_SET_STATE, ("last_success_at", now))

        self._write(delivered, "while recording a delivery (the platform has the payload)")

    def ack_batch(self, items: Sequence[SpoolItem], now: Optional[float] = None) -> None:
        """Every payload of a batch the platform stored leaves the spool, in one transaction (one fsync)."""

        def delivered(db):
            db.executemany("DELETE FROM spool WHERE id = ?", [(item.id,) for item in items])
            db.execute("INSERT INTO state (name, value) VALUES ('delivered_total', ?) ON CONFLICT(name)"
                       " DO UPDATE SET value = value + excluded.value", (len(items),))
            if now is not None:
                db.execute(_SET_STATE, ("last_success_at", now))

        self._write(delivered, "while recording a delivery (the platform has the payloads)")

    def release(self, item: SpoolItem, error: str = "", attempts: int = 0, status: Optional[int] = None,
                now: Optional[float] = None) -> None:
        self.release_batch([item], error, attempts, status, now)

    def release_batch(self, items: Sequence[SpoolItem], error: str = "", attempts: int = 0,
                      status: Optional[int] = None, now: Optional[float] = None) -> None:
        """Give payloads back (claims this run still holds only), counting the attempts made on them."""

        def back(db):
            db.executemany("UPDATE spool SET claimed_by = NULL, claim_expires = NULL, attempts = attempts + ?,"
                           " last_error = ?, last_status = ?, last_error_at = ? WHERE id = ? AND claimed_by = ?",
                           [(attempts, error, status, now, item.id, self.owner) for item in items])
            if error:
                db.executemany(_SET_STATE, [("last_error", error), ("last_error_at", now)])

        self._write(back, "while putting %s back" % ("a payload" if len(items) == 1 else "payloads"))

    def mark_failed_run(self, item_id: int) -> int:
        """Count one more run in which the platform failed this payload; the new count.

        Only while this run still holds the claim: 0 when the payload is gone, or when another run
        took it over after this run's lease ran out (that run decides what becomes of it).
        """

        def count(db):
            db.execute("UPDATE spool SET failed_runs = failed_runs + 1 WHERE id = ? AND claimed_by = ?",
                       (item_id, self.owner))
            row = db.execute("SELECT failed_runs FROM spool WHERE id = ? AND claimed_by = ?",
                             (item_id, self.owner)).fetchone()
            return row[0] if row else 0

        return self._write(count, "while counting a failed run")

    def dead_letter(self, item: SpoolItem, status: int, reason: str, now: float) -> None:
        """Move a payload this run holds to the dead letters (not one another run took over meanwhile)."""

        def move(db):
            if db.execute("SELECT 1 FROM spool WHERE id = ? AND claimed_by = ?", (item.id, self.owner)).fetchone() is None:
                return
            db.execute(
                "INSERT OR REPLACE INTO dead_letters (id, profile, idempotency_key, body, created, dead_at,"
                " status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (item.id, item.profile, item.key, item.body, item.created, now, status, reason))
            db.execute("DELETE FROM spool WHERE id = ?", (item.id,))

        self._write(move, "while moving a payload to the dead letters")

    def drop(self, item_id: int, now: float) -> bool:
        """Delete a pending payload (False: no such id); refused while a live run holds its claim."""

        def delete(db):
            self._reap_dead_owners(db, now)
            row = db.execute("SELECT claimed_by, claim_expires FROM spool WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return False
            owner, expires = row
            if owner is not None and owner != self.owner and expires is not None and expires >= now:
                raise _in_use(item_id)
            db.execute("DELETE FROM spool WHERE id = ?", (item_id,))
            return True

        return self._write(delete, "while dropping payload %d" % item_id)

    def requeue(self, dead_letter_id: int, now: float) -> bool:
        """Put a dead letter back in the queue: same key and body, counts reset (False: no such id)."""

        def back(db):
            row = db.execute("SELECT profile, idempotency_key, body, created FROM dead_letters WHERE id = ?",
                             (dead_letter_id,)).fetchone()
            if row is None:
                return False
            # Its old id is free (AUTOINCREMENT never reuses one), and keeps it in its place in the queue.
            taken = db.execute("SELECT 1 FROM spool WHERE id = ?", (dead_letter_id,)).fetchone()
            db.execute("INSERT OR IGNORE INTO spool (id, profile, idempotency_key, body, created)"
                       " VALUES (?, ?, ?, ?, ?)", (None if taken else dead_letter_id,) + tuple(row))
            db.execute("DELETE FROM dead_letters WHERE id = ?", (dead_letter_id,))
            return True

        return self._write(back, "while requeueing dead letter %d" % dead_letter_id)

    def release_all(self) -> None:
        """Give back this run's claims (on exit, also after Ctrl-C)."""
        self._write(lambda db: db.execute(
            "UPDATE spool SET claimed_by = NULL, claim_expires = NULL WHERE claimed_by = ?", (self.owner,)),
            "while giving back this run's claims")

    # -- reading ------------------------------------------------------------------------------

    def pending(self, profile: Optional[str] = None) -> int:
        if profile is None:
            return self._read("SELECT count(*) FROM spool")[0][0]
        return self._read("SELECT count(*) FROM spool WHERE profile = ?", (profile,))[0][0]

    def unclaimed(self, profile: str, now: float) -> int:
        """Payloads no live run is working on: what is really left for a later run."""
        return self._read("SELECT count(*) FROM spool WHERE profile = ? AND (claimed_by IS NULL"
                          " OR claim_expires < ?)", (profile, now))[0][0]

    def status(self, now: float) -> Dict[str, Any]:
        status = empty_status(self.path, now)
        pending, oldest = self._read("SELECT count(*), min(created) FROM spool")[0]
        state = dict(self._read("SELECT name, value FROM state WHERE name NOT LIKE 'carried:%'"))
        dropped = self._read("SELECT value FROM counters WHERE name = 'dropped'")
        failing = self._read("SELECT id, profile, idempotency_key, attempts, failed_runs, last_status, last_error"
                             " FROM spool WHERE attempts > 0 OR failed_runs > 0 ORDER BY id LIMIT 10")
        status.update({
            "exists": True,
            "format": FORMAT,
            "pending": pending,
            "claimed_by_running": self._read("SELECT count(*) FROM spool WHERE claimed_by IS NOT NULL"
                                             " AND claim_expires >= ?", (now,))[0][0],
            "oldest_age_s": round(now - oldest, 1) if oldest is not None else None,
            "dead_letters": self._read("SELECT count(*) FROM dead_letters")[0][0],
            "dropped_total": dropped[0][0] if dropped else 0,
            "delivered_total": state.get("delivered_total", 0),
            "last_success_at": local_iso(state.get("last_success_at")),
            "last_error": ({"message": state["last_error"], "at": local_iso(state.get("last_error_at"))}
                           if state.get("last_error") else None),
            "by_profile": dict(self._read("SELECT profile, count(*) FROM spool GROUP BY profile")),
            "failing": [{"id": r[0], "profile": r[1], "idempotency_key": r[2], "attempts": r[3],
                         "failed_runs": r[4], "last_status": r[5], "last_error": r[6]} for r in failing],
        })
        return status

    def dead_letters(self) -> Iterator[Dict[str, object]]:
        rows = self._read("SELECT id, profile, idempotency_key, body, created, dead_at, status, reason"
                          " FROM dead_letters ORDER BY id")
        for row in rows:
            body = bytes(row[3]).decode("utf-8", "replace")
            try:
                decoded: object = json.loads(body)
            except ValueError:
                decoded = body
            yield {"id": row[0], "profile": row[1], "idempotency_key": row[2], "created": row[4],
                   "dead_at": row[5], "status": row[6], "reason": row[7], "body": decoded}

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def open_spool(path: Path, max_items: Optional[int] = None, lease: float = DEFAULT_LEASE) -> SqliteSpool:
    return SqliteSpool(path, max_items=max_items, lease=lease)
