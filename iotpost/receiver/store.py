"""The twin's storage: devices, API keys and telemetry in sqlite3, usable without any socket.

Usage: ``store = TelemetryStore(":memory:"); store.register_device(dev, key); store.authenticate(key)``

One connection (``check_same_thread=False``) behind one lock serves every handler thread; file
databases use WAL with synchronous=NORMAL (a killed process loses no committed row). Telemetry is
stored by group commit: concurrent ``store_telemetry`` calls queue their rows, and whichever call
finds no commit under way leads, committing every queued row in one transaction; each call returns
only once its own row is committed. One commit per request was what bounded the twin's ingest.
A group of one is a single statement, which commits itself. Idempotency rests on a UNIQUE
(device_id, idempotency_key) constraint: each row is an ``INSERT OR IGNORE``, and only an ignored
one reads the first row back (to replay its answer or refuse a different body), so identical
requests store one row, within one group as across groups. TLINK tables and methods come from
``tlink_store.TlinkTables``.

History is answered newest first (ordered by the payload's timestamp, then arrival), so
``limit=N`` gives the latest N readings; ``all_telemetry`` is in arrival order for tests.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Union

from ..payloads import new_idempotency_key as _uuid4_text  # os.urandom 4 KiB at a time, not per row
from .clock import iso_utc, parse_iso8601
from .tlink_store import TLINK_SCHEMA, TlinkTables, upgrade_tlink_schema

Json = Dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id     TEXT PRIMARY KEY,
    registered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_sha256 BLOB PRIMARY KEY,      -- the key itself is never stored
    device_id  TEXT NOT NULL REFERENCES devices (device_id)
);
CREATE TABLE IF NOT EXISTS telemetry (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    telemetry_id    TEXT NOT NULL,    -- a random UUID: no index to keep unique (one page less per commit)
    device_id       TEXT NOT NULL,
    timestamp       TEXT NOT NULL,    -- as the device sent it, or the server's clock
    ts_epoch        REAL NOT NULL,    -- the same instant, for ordering and start_time filters
    received_at     TEXT NOT NULL,
    data_json       TEXT NOT NULL,
    idempotency_key TEXT,
    body_sha256     BLOB NOT NULL,
    response_json   TEXT NOT NULL,    -- the exact first answer, replayed for a repeated key
    UNIQUE (device_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS telemetry_by_device_time ON telemetry (device_id, ts_epoch);
"""

def key_digest(api_key: str) -> bytes:
    """What we keep of an API key: its SHA-256 (compared in constant time)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).digest()


def canonical_body(device_id: str, data: Json, timestamp: Optional[str]) -> bytes:
    """The bytes to fingerprint when a caller stores telemetry without a raw HTTP body."""
    payload = {"device_id": device_id, "timestamp": timestamp, "data": data}
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


class IdempotencyKeyReused(Exception):
    """The same Idempotency-Key came back with a different body (422 at the HTTP layer)."""


class StoreResult(NamedTuple):
    """The answer to give, and whether it is a replay of an earlier identical request."""

    response: Json
    replayed: bool
    response_json: Optional[str] = None  # a fresh row's answer as json.dumps(response) gives it (encoded once)


class TelemetryRecord(NamedTuple):
    """One stored telemetry row, as the read-back endpoints and tests see it."""

    seq: int
    telemetry_id: str
    device_id: str
    timestamp: str
    received_at: str
    data: Json
    idempotency_key: Optional[str]

    def __getitem__(self, key: Any) -> Any:
        """``record["data"]`` works as well as ``record.data`` (and ``record[0]``)."""
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(key)
            return getattr(self, key)
        return tuple.__getitem__(self, key)

    def as_json(self) -> Json:
        """The read-back shape: telemetry_id, timestamp, received_at, data, idempotency_key."""
        return {
            "telemetry_id": self.telemetry_id,
            "timestamp": self.timestamp,
            "received_at": self.received_at,
            "data": self.data,
            "idempotency_key": self.idempotency_key,
        }


_RECORD_COLUMNS = "seq, telemetry_id, device_id, timestamp, received_at, data_json, idempotency_key"


def _record(row: tuple) -> TelemetryRecord:
    return TelemetryRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6])


_INSERT_TELEMETRY = ("INSERT OR IGNORE INTO telemetry (telemetry_id, device_id, timestamp, ts_epoch, received_at,"
                     " data_json, idempotency_key, body_sha256, response_json)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_FIND_KEY = "SELECT body_sha256, response_json FROM telemetry WHERE device_id = ? AND idempotency_key = ?"


_to_json = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(value, ensure_ascii=False), built once


class _PendingRow:
    """One store_telemetry call waiting in the group: its row, then its outcome once committed."""

    __slots__ = ("params", "response", "result", "error", "done", "wake")

    def __init__(self, params: tuple, response: Json) -> None:
        self.params = params  # in _INSERT_TELEMETRY's order
        self.response = response
        self.result: Optional[StoreResult] = None
        self.error: Optional[BaseException] = None
        self.done = False
        self.wake: Optional[threading.Lock] = None  # a queued caller sleeps on it until a leader releases it


def _apply_row(db: sqlite3.Connection, row: _PendingRow) -> None:
    """Insert the row unless its idempotency key is taken; the outcome goes on ``row``.

    One statement in the usual case: the UNIQUE (device_id, idempotency_key) constraint makes the
    insert a no-op for a key already used, and only then is the first row read back, to replay its
    answer or refuse a different body. Rows earlier in the same transaction are visible here, so a
    key repeated within one group replays (or is refused) exactly as a key repeated across groups.
    """
    params = row.params
    if db.execute(_INSERT_TELEMETRY, params).rowcount == 1:
        row.result = StoreResult(row.response, False, params[8])
        return
    key = params[6]
    found = db.execute(_FIND_KEY, (params[1], key)).fetchone() if key is not None else None
    if found is None:  # ignored for another reason (a NOT NULL column left empty): never a silent loss
        row.error = sqlite3.IntegrityError("telemetry row not stored")
    elif not hmac.compare_digest(bytes(found[0]), params[7]):
        row.error = IdempotencyKeyReused(key)
    else:
        row.result = StoreResult(json.loads(found[1]), True)


class TelemetryStore(TlinkTables):
    """Devices, hashed API keys, telemetry with idempotency, and TLINK pushes, in one sqlite3 file."""

    def __init__(
        self,
        path: Union[str, os.PathLike] = ":memory:",
        *,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self.path = str(path)
        self._clock = clock or time.time
        self._lock = threading.RLock()
        # Group commit: rows waiting for a commit, and whether a leader is committing a group now
        # (both under _group, held only to read or change them).
        self._group = threading.Lock()
        self._queued: List[_PendingRow] = []
        self._leading = False
        self._keys: Optional[Dict[bytes, str]] = None  # api_keys (digest -> device_id), read once per change
        # Platform modules' state for this store, by name ("iotflow", "tlink", "tesaiot_batch"): tables made,
        # key digests, test-aid faults. Kept here, not in module-level maps keyed by store, so a request
        # finds it with one dict lookup and it goes away with the store.
        self.platform_state: Dict[str, Any] = {}
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, the same on 3.8 and 3.13.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                     timeout=5.0)
        self._closed = False
        if self.path != ":memory:" and not self.path.startswith("file::memory:"):
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA + TLINK_SCHEMA)
        upgrade_tlink_schema(self._conn)

    # -- plumbing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one IMMEDIATE transaction: check-then-insert is atomic."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT too: the shared connection must not stay inside a transaction, where
                # the next caller's lone INSERT would join it and be answered without being committed.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: tuple = ()) -> List[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def now(self) -> float:
        """The store's clock (injectable for tests)."""
        return self._clock()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> "TelemetryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- devices and keys ------------------------------------------------------------------

    def register_device(self, device_id: str, api_key: str) -> None:
        """Accept ``api_key`` for ``device_id`` from now on (a key moved to another device follows it)."""
        if not device_id or not api_key:
            raise ValueError("device_id and api_key must not be empty")
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO devices (device_id, registered_at) VALUES (?, ?)",
                       (device_id, iso_utc(self.now())))
            db.execute("INSERT OR REPLACE INTO api_keys (key_sha256, device_id) VALUES (?, ?)",
                       (key_digest(api_key), device_id))
            self._keys = None

    def is_registered(self, device_id: object) -> bool:
        """Whether ``device_id`` is a device of this twin (for a client certificate without a key)."""
        if not isinstance(device_id, str):
            return False
        return bool(self._query("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)))

    def devices(self) -> List[str]:
        """Registered device ids, sorted."""
        return [r[0] for r in self._query("SELECT device_id FROM devices ORDER BY device_id")]

    def authenticate(self, api_key: Optional[str]) -> Optional[str]:
        """The device this key belongs to, or None: found by the key's SHA-256, as IoTFlow's are.

        A lookup's timing can tell a caller something about stored digests, never about keys: finding
        a key from its SHA-256 is as hard as guessing it.
        """
        return self.device_for_digest(key_digest(api_key)) if api_key else None

    def device_for_digest(self, digest: bytes) -> Optional[str]:
        """``authenticate`` for a key whose SHA-256 the caller already has (one digest per request)."""
        keys = self._keys
        if keys is None:
            # Every request authenticates; keys change only through register_device, which drops this inside
            # its transaction: read under the same lock, so a list read before a registration is never kept after it.
            with self._lock:
                keys = self._keys
                if keys is None:
                    keys = self._keys = {bytes(d): dev for d, dev in self._conn.execute(
                        "SELECT key_sha256, device_id FROM api_keys").fetchall()}
        return keys.get(digest)

    # -- telemetry -------------------------------------------------------------------------

    def store_telemetry(
        self,
        device_id: str,
        data: Json,
        *,
        timestamp: Optional[str] = None,
        raw_body: Optional[bytes] = None,
        idempotency_key: Optional[str] = None,
        ts_epoch: Optional[float] = None,
    ) -> StoreResult:
        """Store one accepted payload and return the platform's answer for it.

        With an idempotency key already used by this device: the same body (SHA-256 of the raw
        bytes) replays the first answer and stores nothing; a different body raises
        IdempotencyKeyReused. Without a key every call stores a row. ``ts_epoch``: ``timestamp`` as
        epoch seconds, when the caller parsed it already.
        """
        now = self.now()
        stamp = timestamp if timestamp is not None else iso_utc(now)
        if ts_epoch is None or timestamp is None:
            ts_epoch = parse_iso8601(stamp).timestamp()
        body = raw_body if raw_body is not None else canonical_body(device_id, data, timestamp)
        body_sha = hashlib.sha256(body).digest()
        telemetry_id = _uuid4_text()
        response = {
            "success": True,
            "message": "Telemetry data stored successfully",
            "telemetry_id": telemetry_id,
            "device_id": device_id,
            "timestamp": stamp,
            "metrics_stored": sorted(data),
        }
        row = _PendingRow((telemetry_id, device_id, stamp, ts_epoch, iso_utc(now),
                           _to_json(data), idempotency_key, body_sha, json.dumps(response)), response)
        self._commit_in_group(row)
        if row.error is not None:
            raise row.error
        assert row.result is not None
        return row.result

    def _commit_in_group(self, row: _PendingRow) -> None:
        """Queue ``row`` and return once it is committed: by a leader's group, or by leading one.

        Leader/follower: a caller that finds no commit under way leads, committing its own row.
        Callers arriving meanwhile queue, each asleep on a lock of its own. The leader then wakes
        each caller whose row it committed, and hands the lead to the first queued caller, which
        commits the whole queue in one transaction. One wake per caller, never all of them: with
        a shared condition every commit woke every waiter, and the handler threads spent more on
        those wake-ups than on the rows (strace: 39 futex calls per request, 11 without it).
        """
        with self._group:
            if self._leading:
                wake = row.wake = threading.Lock()
                wake.acquire()
                self._queued.append(row)
            else:
                self._leading = True
                wake = None
        interrupted: Optional[BaseException] = None
        if wake is None:
            batch = [row]
        else:
            while True:  # released once our row is committed, or once we are to lead
                try:
                    wake.acquire()
                    break
                except BaseException as exc:  # a signal in the main thread: our turn may still come (the lead
                    interrupted = exc  # handed to us), and a queue whose next leader left would wait for ever
            if row.done:
                if interrupted is not None:
                    raise interrupted
                return
            with self._group:
                batch, self._queued = self._queued, []  # ours is the first of them
        try:
            self._lead(batch, row)
        finally:
            if interrupted is not None:
                raise interrupted

    def _lead(self, batch: List[_PendingRow], row: _PendingRow) -> None:
        """Commit ``batch`` (``row`` is the leader's own), wake its callers, hand the lead on."""
        committed = False
        try:
            self._commit_rows(batch)
            committed = True
        finally:
            for item in batch:
                if not committed:  # the leader was interrupted (KeyboardInterrupt...): rolled back
                    item.result = None
                    item.error = sqlite3.OperationalError("not committed: the committing thread was interrupted")
                item.done = True
            with self._group:
                successor = self._queued[0] if self._queued else None
                if successor is None:
                    self._leading = False
            for item in batch:
                if item is not row and item.wake is not None:
                    item.wake.release()
            if successor is not None:
                successor.wake.release()  # type: ignore[union-attr] - every queued row has one

    def _commit_rows(self, batch: List[_PendingRow]) -> None:
        """Commit ``batch`` in one transaction; if that fails, row by row, so a failure is its own row's."""
        try:
            if len(batch) == 1:  # a statement of its own commits itself: no BEGIN/COMMIT round trips
                with self._lock:
                    if not self._conn.in_transaction:  # (never left open: see _transaction)
                        _apply_row(self._conn, batch[0])
                        return
            with self._transaction() as db:
                for item in batch:
                    _apply_row(db, item)
            return
        except Exception as exc:  # noqa: BLE001 - decided row by row just below
            if len(batch) == 1:
                batch[0].result, batch[0].error = None, exc
                return
        for item in batch:
            item.result = item.error = None
            try:
                with self._transaction() as db:
                    _apply_row(db, item)
            except Exception as exc:  # noqa: BLE001 - handed to the caller whose row it is
                item.result, item.error = None, exc

    def latest(self, device_id: str) -> Optional[TelemetryRecord]:
        """The reading with the newest timestamp (ties: the last to arrive), or None."""
        rows = self._query(
            "SELECT %s FROM telemetry WHERE device_id = ? ORDER BY ts_epoch DESC, seq DESC LIMIT 1"
            % _RECORD_COLUMNS, (device_id,))
        return _record(rows[0]) if rows else None

    def history(
        self,
        device_id: str,
        *,
        limit: int = 100,
        start: Optional[_dt.datetime] = None,
    ) -> List[TelemetryRecord]:
        """Up to ``limit`` readings with timestamp >= ``start``, newest first."""
        sql = "SELECT %s FROM telemetry WHERE device_id = ?" % _RECORD_COLUMNS
        params: list = [device_id]
        if start is not None:
            sql += " AND ts_epoch >= ?"
            params.append(start.timestamp())
        sql += " ORDER BY ts_epoch DESC, seq DESC LIMIT ?"
        params.append(int(limit))
        return [_record(r) for r in self._query(sql, tuple(params))]

    def count_telemetry(self, device_id: Optional[str] = None) -> int:
        """How many telemetry rows are stored (for one device, or all)."""
        if device_id is None:
            return self._query("SELECT COUNT(*) FROM telemetry")[0][0]
        return self._query("SELECT COUNT(*) FROM telemetry WHERE device_id = ?", (device_id,))[0][0]

    def all_telemetry(self, device_id: Optional[str] = None) -> List[TelemetryRecord]:
        """Every stored row in arrival order (for tests)."""
        if device_id is None:
            rows = self._query("SELECT %s FROM telemetry ORDER BY seq" % _RECORD_COLUMNS)
        else:
            rows = self._query("SELECT %s FROM telemetry WHERE device_id = ? ORDER BY seq"
                               % _RECORD_COLUMNS, (device_id,))
        return [_record(r) for r in rows]
