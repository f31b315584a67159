"""When a spool file fails: tell a full disk from a damaged file, move only a damaged one aside, read what it holds.

Usage::

    kind = classify(exc)          # "corrupt" | "full" | "io" | "locked" | "readonly" | "cantopen" | "other"
    aside = move_aside(path, st)  # path.corrupt-<time>[-n]: a name is reserved atomically, never reused
    rows = read_moved_aside(aside)  # (pending rows, dead letters) that can still be read, or None

A full disk, an I/O error, a lock or a read-only file says nothing about the file itself, so only
SQLite's own verdict (not a database, malformed, or a failed ``PRAGMA quick_check``) moves a spool
aside. A damaged file often still yields most of its rows; the caller carries them into the fresh
spool by idempotency key.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Optional, Tuple

from .records import Record

ASIDE_INFIX = ".corrupt-"
_SIDE_FILES = ("-wal", "-shm")

# SQLite primary result codes (the low byte of an extended code), from sqlite3.h.
_KIND_OF_CODE = {11: "corrupt", 26: "corrupt", 13: "full", 10: "io", 5: "locked", 6: "locked",
                 8: "readonly", 14: "cantopen"}


def classify(exc: BaseException) -> str:
    """What a sqlite3 error says about the spool: only "corrupt" means the file itself is bad."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int) and (code & 0xFF) in _KIND_OF_CODE:
        return _KIND_OF_CODE[code & 0xFF]
    text = str(exc).lower()
    if "not a database" in text or "malformed" in text:
        return "corrupt"
    if "full" in text:
        return "full"
    if "i/o error" in text:
        return "io"
    if "locked" in text or "busy" in text:
        return "locked"
    if "readonly" in text or "read-only" in text:
        return "readonly"
    if "unable to open" in text:
        return "cantopen"
    return "other"


def disk_nearly_full(folder: Path) -> bool:
    """True when the filesystem has (almost) no room left: SQLite reports a full disk as "disk I/O
    error" when it cannot grow the -shm file, so the free space tells the two apart."""
    if not hasattr(os, "statvfs"):
        return False
    try:
        st = os.statvfs(str(folder))
    except OSError:
        return False
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail  # root may use reserve
    return blocks * st.f_frsize < 64 * 1024


def _uri(path: Path, **params: str) -> str:
    query = "&".join("%s=%s" % kv for kv in sorted(params.items()))
    return "%s?%s" % (Path(os.path.abspath(str(path))).as_uri(), query)


def connect_read_only(path: Path):
    """A connection that never writes: read-only, or immutable (no -shm needed) when even that fails.

    Immutable ignores a -wal, so it is only the fallback (a full disk cannot create the -shm).
    """
    import sqlite3

    db = None
    try:
        db = sqlite3.connect(_uri(path, mode="ro"), uri=True, timeout=5.0)
        db.execute("PRAGMA user_version").fetchone()
        return db
    except sqlite3.DatabaseError:
        if db is not None:
            db.close()
    return sqlite3.connect(_uri(path, mode="ro", immutable="1"), uri=True, timeout=5.0)


def fails_quick_check(path: Path) -> bool:
    """SQLite's own check, for an error that names no cause: True only if the file is damaged."""
    import sqlite3

    try:
        db = connect_read_only(path)
        try:
            row = db.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return classify(exc) == "corrupt"
    return row is None or row[0] != "ok"


def _reserve_aside_name(path: Path) -> Path:
    """A name no one else holds: created with O_EXCL, so two processes in one second get two names."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1, 10000):
        aside = path.with_name("%s%s%s%s" % (path.name, ASIDE_INFIX, stamp, "" if n == 1 else "-%d" % n))
        if any(os.path.lexists(str(aside) + side) for side in _SIDE_FILES):
            continue  # a side file of an older aside by that name: never overwrite it either
        try:
            fd = os.open(str(aside), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return aside
    raise OSError("no free name for %s%s%s-*" % (path.name, ASIDE_INFIX, stamp))


def move_aside(path: Path, seen: Optional[os.stat_result]) -> Optional[Path]:
    """Move a damaged spool (and its -wal, which holds committed rows) to a fresh reserved name.

    ``seen`` is the file as it was found damaged; if another process has already replaced it,
    nothing is moved and None is returned (its fresh spool is not ours to move).
    """
    aside = _reserve_aside_name(path)
    try:
        if seen is not None:
            try:
                now = os.stat(str(path))
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
                os.unlink(str(aside))
                return None
        os.replace(str(path), str(aside))
    except FileNotFoundError:  # another run moved it between our look and our move
        os.unlink(str(aside))
        return None
    except OSError:
        if os.path.exists(str(aside)) and os.path.getsize(str(aside)) == 0:
            os.unlink(str(aside))
        raise
    for side in _SIDE_FILES:
        if os.path.exists(str(path) + side):
            os.replace(str(path) + side, str(aside) + side)
    for name in [str(aside)] + [str(aside) + side for side in _SIDE_FILES]:
        try:  # a spool an older release made with the umask's mode: its copy holds readings all the same
            os.chmod(name, 0o600)
        except OSError:
            pass
    return aside


def moved_aside_files(path: Path) -> List[Path]:
    """Every file this spool was moved aside to, oldest first."""
    prefix = path.name + ASIDE_INFIX
    try:
        names = os.listdir(str(path.parent))
    except OSError:
        return []
    return [path.with_name(n) for n in sorted(names)
            if n.startswith(prefix) and not n.endswith(_SIDE_FILES + ("-journal",))]


def aside_signature(aside: Path) -> str:
    """Size and time of a moved-aside file and its -wal: it is carried over again only if they change
    (a run that still had the file open when it was moved may have written to it since)."""
    size = mtime = 0
    for name in (str(aside), str(aside) + "-wal"):
        try:
            st = os.stat(name)
        except OSError:
            continue
        if st.st_size == 0:
            continue  # reading a moved-aside file may create an empty -wal: that is no change
        size += st.st_size
        mtime = max(mtime, st.st_mtime_ns)
    return "%d:%d" % (size, mtime)


class AsideRows(Record):
    pending: List[Tuple]  # (profile, idempotency_key, body, created, attempts)
    dead: List[Tuple]  # (profile, idempotency_key, body, created, dead_at, status, reason)


def _readable_rows(db, table: str, columns: str) -> Tuple[List[Tuple], bool]:
    """Every row that can still be read, and whether the table could be read at all.

    Ids first (often from an undamaged index), then each row on its own: a damaged page costs
    only the rows on it, not every row after it.
    """
    import sqlite3

    ids: List[int] = []
    try:
        for (row_id,) in db.execute("SELECT id FROM %s" % table):
            ids.append(row_id)
    except sqlite3.DatabaseError:
        if not ids:
            return [], False
    rows: List[Tuple] = []
    for row_id in ids:
        try:
            row = db.execute("SELECT %s FROM %s WHERE id = ?" % (columns, table), (row_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            rows.append(tuple(row))
    return rows, True


def read_moved_aside(path: Path) -> Optional[AsideRows]:
    """What can still be read from a moved-aside spool; None when nothing can (not a database)."""
    import sqlite3

    try:
        db = connect_read_only(path)
    except sqlite3.DatabaseError:
        return None
    try:
        pending, ran = _readable_rows(db, "spool", "profile, idempotency_key, body, created, attempts")
        dead, _ = _readable_rows(db, "dead_letters",
                                 "profile, idempotency_key, body, created, dead_at, status, reason")
    finally:
        db.close()
    if not ran and not dead:
        return None
    return AsideRows(pending, dead)
