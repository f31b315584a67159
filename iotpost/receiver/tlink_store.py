"""TLINK push storage for the twin: users -> devices -> sensors -> readings, de-duplicated.

Usage: ``stored = store.store_tlink_push(push)  # TelemetryStore mixes TlinkTables in; stored.processed, stored.new``

A reading is unique on (sensor, recorded_at, sensor_timestamp), as in the reference receiver:
``recorded_at`` is the push's ``time`` or, when that is missing or unparseable, the server's UTC
clock with microseconds, so a retried push stores nothing twice but pushes without ``time`` are
never merged; ``sensor_timestamp`` is the entry's ``times``, NULL without one, and NULLs never
collide (as in MySQL), so entries without ``times`` are never merged either. A push the reference
would fail (``tlink_limits``) raises ``ReferenceWouldFail`` before anything is stored. Ids are kept
as text and given back as numbers when they are plain decimal integers, as TLINK sends them.
Values (value, reVal, isAlarm, isLine, rawData, flag) keep their JSON types.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sqlite3
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

from .clock import iso_utc, parse_iso8601
from .tlink_limits import as_integer, as_varchar, loose_integer, stored_device_no, why_reference_fails

Json = Dict[str, Any]
Id = Union[int, str]  # TLINK ids arrive as numbers or strings; both name the same thing

TLINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS tlink_users (
    user_id        TEXT PRIMARY KEY,
    parent_user_id TEXT
);
CREATE TABLE IF NOT EXISTS tlink_devices (
    device_id TEXT PRIMARY KEY,
    user_id   TEXT NOT NULL REFERENCES tlink_users (user_id)%s
);
CREATE TABLE IF NOT EXISTS tlink_sensors (
    ref            INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id      TEXT NOT NULL REFERENCES tlink_devices (device_id),
    sensor_id      TEXT NOT NULL,
    type_json      TEXT,%s
    UNIQUE (device_id, sensor_id)
);
CREATE TABLE IF NOT EXISTS tlink_readings (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor_ref       INTEGER NOT NULL REFERENCES tlink_sensors (ref),
    recorded_at      TEXT NOT NULL,
    sensor_timestamp TEXT,            -- NULL without "times": never a duplicate, as in MySQL
    value_json       TEXT,
    re_val_json      TEXT,
    is_alarm_json    TEXT,
    is_line_json     TEXT,
    raw_data_json    TEXT,
    flag_json        TEXT,
    received_at      TEXT NOT NULL,
    UNIQUE (sensor_ref, recorded_at, sensor_timestamp)
);
CREATE INDEX IF NOT EXISTS tlink_readings_by_time ON tlink_readings (sensor_ref, recorded_at);
"""

# Columns added for the reference's read API (/api/devices): what the last push said about the
# device and each sensor. Kept apart so a database from an older twin gets them by ALTER TABLE.
_DEVICE_COLUMNS = (
    ("parent_user_id", "TEXT"), ("device_name", "TEXT"), ("device_no", "TEXT"), ("group_id", "INTEGER"),
    ("lat", "TEXT"), ("lng", "TEXT"), ("product_id", "TEXT"), ("product_type", "TEXT"),
    ("protocol_label", "TEXT"), ("last_flag", "TEXT"), ("last_push_time", "TEXT"),
)
_SENSOR_COLUMNS = (
    ("sensor_name", "TEXT"), ("unit", "TEXT"), ("latest_value", "TEXT"), ("latest_recorded_at", "TEXT"),
    ("is_alarm", "INTEGER"), ("is_line", "INTEGER"),
)
TLINK_SCHEMA = TLINK_SCHEMA % ("".join(",\n    %s %s" % c for c in _DEVICE_COLUMNS),
                               "".join("\n    %s %s," % c for c in _SENSOR_COLUMNS))

REQUIRED_MESSAGE = "deviceId, deviceUserid, and sensorsDates are required"
TLINK_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def id_text(value: Any) -> Optional[str]:
    """An id as stored: text for numbers and non-empty strings; None when it is not an id."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def id_out(text: Optional[str]) -> Any:
    """An id as answered: a number when it is a plain decimal integer (as TLINK sends them)."""
    if text and all("0" <= c <= "9" for c in text):
        number = int(text)
        if str(number) == text:
            return number
    return text


def validate_tlink_push(push: Json) -> Optional[str]:
    """Why the reference answers this push 400 (its wording), or None.

    Like the reference, a falsy ``deviceId``/``deviceUserid`` (0, "") or an empty ``sensorsDates``
    is a 400; what it fails later, in its code or database, is ``tlink_limits``' 500.
    """
    if (not push.get("deviceId") or id_text(push.get("deviceId")) is None
            or not push.get("deviceUserid") or id_text(push.get("deviceUserid")) is None
            or not push.get("sensorsDates")):
        return REQUIRED_MESSAGE
    return None


class ReferenceWouldFail(Exception):
    """The reference receiver fails this push with 500 on every attempt; the message says why."""


class TlinkStored(NamedTuple):
    """What one push did: entries processed (the reference's storedReadings) and rows newly stored."""

    processed: int
    new: int


def upgrade_tlink_schema(db: sqlite3.Connection) -> None:
    """Bring a database written by an older twin up to TLINK_SCHEMA (its rows are kept)."""
    for table, columns in (("tlink_devices", _DEVICE_COLUMNS), ("tlink_sensors", _SENSOR_COLUMNS)):
        present = {row[1] for row in db.execute("PRAGMA table_info(%s)" % table)}
        for name, sql_type in columns:
            if name not in present:
                db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, name, sql_type))
    info = {row[1]: row for row in db.execute("PRAGMA table_info(tlink_readings)")}
    if info["sensor_timestamp"][3]:  # NOT NULL, with '' for "no times": rebuild with NULLs instead
        db.execute("ALTER TABLE tlink_readings RENAME TO tlink_readings_old")
        db.execute("DROP INDEX IF EXISTS tlink_readings_by_time")
        db.executescript(TLINK_SCHEMA)  # creates only what is missing: the new readings table
        db.execute("INSERT INTO tlink_readings SELECT seq, sensor_ref, recorded_at, NULLIF(sensor_timestamp, ''),"
                   " value_json, re_val_json, is_alarm_json, is_line_json, raw_data_json, flag_json, received_at"
                   " FROM tlink_readings_old")
        db.execute("DROP TABLE tlink_readings_old")


def interpret_bool(value: Any) -> Optional[bool]:
    """A TLINK flag ("0"/"1", 0/1, "true"...) as the reference reads it into a TINYINT."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return bool(value)  # JSON's 1e999 is inf, which int() refuses; Python's bool() of it is True
    if isinstance(value, (int, float)):
        return bool(int(value))
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "t", "yes"):
            return True
        if word in ("0", "false", "f", "no"):
            return False
    return bool(value)


def _tinyint(value: Any) -> Optional[int]:
    flag = interpret_bool(value)
    return None if flag is None else int(flag)


def format_tlink_time(moment: _dt.datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS``, with ``.ffffff`` only when there is a fraction (sorts as text)."""
    text = moment.strftime(TLINK_TIME_FORMAT)
    return text + (".%06d" % moment.microsecond if moment.microsecond else "")


def parse_tlink_time(text: str) -> str:
    """A time filter or push time, normalised for comparison: TLINK's format or ISO 8601.

    An ISO time with an offset is converted to UTC (the clock the twin falls back to); times
    without a zone are taken as they are. Raises ValueError.
    """
    text = text.strip()
    try:
        return format_tlink_time(_dt.datetime.strptime(text, TLINK_TIME_FORMAT))
    except ValueError:
        pass
    moment = parse_iso8601(text, default_tz=None)
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return format_tlink_time(moment)


PUSH_TIME_FORMATS = (TLINK_TIME_FORMAT, "%Y/%m/%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")  # the reference's


def parse_push_time(text: str) -> str:
    """A push's ``time`` as stored, in the formats the reference reads; raises ValueError."""
    for fmt in PUSH_TIME_FORMATS:
        try:
            return format_tlink_time(_dt.datetime.strptime(text, fmt))
        except ValueError:
            continue
    raise ValueError("not a TLINK time: %r" % text)


def _dump(value: Any) -> Optional[str]:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _load(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)


_READING_COLUMNS = ("r.recorded_at, r.sensor_timestamp, r.value_json, r.re_val_json, r.is_alarm_json,"
                    " r.is_line_json, r.raw_data_json, r.flag_json, r.received_at, s.sensor_id")


def _reading(row: tuple) -> Json:
    return {
        "sensorsId": id_out(row[9]),
        "recordedAt": row[0],
        "times": row[1] or None,
        "value": _load(row[2]),
        "reVal": _load(row[3]),
        "isAlarm": _load(row[4]),
        "isLine": _load(row[5]),
        "rawData": _load(row[6]),
        "flag": _load(row[7]),
        "receivedAt": row[8],
    }


def _time_filter(start: Optional[str], end: Optional[str]) -> Tuple[str, list]:
    sql, params = "", []
    if start is not None:
        sql += " AND r.recorded_at >= ?"
        params.append(start)
    if end is not None:
        sql += " AND r.recorded_at <= ?"
        params.append(end)
    return sql, params


class TlinkTables:
    """TLINK methods of TelemetryStore; they use its connection, lock and clock."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _transaction(self):  # provided by TelemetryStore
        raise NotImplementedError

    def _query(self, sql: str, params: tuple = ()) -> List[tuple]:  # provided by TelemetryStore
        raise NotImplementedError

    def now(self) -> float:  # provided by TelemetryStore
        raise NotImplementedError

    def store_tlink_push(self, push: Json) -> TlinkStored:
        """Store one push as the reference does; raise ValueError (400) or ReferenceWouldFail (500).

        ``processed`` counts entries with a ``sensorsId`` (the reference skips the others), ``new``
        the readings not already stored. Device and sensor details (last flag, push time, latest
        value...) are updated by every push, a duplicate too, as the reference's upserts do.
        """
        problem = validate_tlink_push(push)
        if problem is not None:
            raise ValueError(problem)
        failure = why_reference_fails(push)
        if failure is not None:
            raise ReferenceWouldFail(failure)
        now = self.now()
        user = id_text(push["deviceUserid"])
        parent = id_text(push.get("parentUserId"))
        device = str(as_integer(push["deviceId"]))  # one device for 2864, "2864" and 2864.0
        recorded_at = None
        if isinstance(push.get("time"), str):
            try:
                recorded_at = parse_push_time(push["time"])
            except ValueError:
                recorded_at = None
        if recorded_at is None:
            moment = _dt.datetime.fromtimestamp(now, tz=_dt.timezone.utc).replace(tzinfo=None)
            recorded_at = moment.strftime(TLINK_TIME_FORMAT) + ".%06d" % moment.microsecond
        received_at = iso_utc(now)
        group = loose_integer(push.get("groupId")) if push.get("groupId") else None
        details = (as_varchar(push.get("parentUserId")), as_varchar(push.get("deviceName")),
                   as_varchar(stored_device_no(push)[1]), group, as_varchar(push.get("lat")),
                   as_varchar(push.get("lng")), as_varchar(push.get("productId")),
                   as_varchar(push.get("productType")), as_varchar(push.get("protocolLabel")),
                   as_varchar(push.get("flag")), recorded_at)
        processed = new = 0
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO tlink_users (user_id, parent_user_id) VALUES (?, ?)",
                       (user, parent))
            if parent is not None:
                db.execute("UPDATE tlink_users SET parent_user_id = ? WHERE user_id = ?", (parent, user))
            db.execute("INSERT OR IGNORE INTO tlink_devices (device_id, user_id) VALUES (?, ?)",
                       (device, user))
            # The last push's flag and time always; a detail it leaves out keeps its earlier value
            # (the reference's upsert SQL was not seen: this is the twin's reading of it).
            assignments = ", ".join(
                ("{0} = ?" if name in ("last_flag", "last_push_time") else "{0} = COALESCE(?, {0})").format(name)
                for name, _ in _DEVICE_COLUMNS)
            db.execute("UPDATE tlink_devices SET user_id = ?, %s WHERE device_id = ?" % assignments,
                       (user,) + details + (device,))
            for entry in push["sensorsDates"]:
                if entry.get("sensorsId") is None:
                    continue  # the reference skips it and does not count it
                sensor = str(as_integer(entry["sensorsId"]))
                sensor_type = entry.get("sensorsTypeId", entry.get("sensorTypeId"))
                db.execute("INSERT OR IGNORE INTO tlink_sensors (device_id, sensor_id, type_json)"
                           " VALUES (?, ?, ?)", (device, sensor, _dump(sensor_type)))
                if sensor_type is not None:
                    db.execute("UPDATE tlink_sensors SET type_json = ? WHERE device_id = ? AND sensor_id = ?",
                               (_dump(sensor_type), device, sensor))
                db.execute(
                    "UPDATE tlink_sensors SET sensor_name = COALESCE(?, sensor_name), unit = COALESCE(?, unit),"
                    " latest_value = ?, latest_recorded_at = ?, is_alarm = ?, is_line = ?"
                    " WHERE device_id = ? AND sensor_id = ?",
                    (as_varchar(entry.get("sensorName")), as_varchar(entry.get("unit")),
                     as_varchar(entry.get("value") or entry.get("reVal")), recorded_at,
                     _tinyint(entry.get("isAlarm")), _tinyint(entry.get("isLine")), device, sensor))
                ref = db.execute("SELECT ref FROM tlink_sensors WHERE device_id = ? AND sensor_id = ?",
                                 (device, sensor)).fetchone()[0]
                times = entry.get("times")
                cursor = db.execute(
                    "INSERT OR IGNORE INTO tlink_readings (sensor_ref, recorded_at, sensor_timestamp,"
                    " value_json, re_val_json, is_alarm_json, is_line_json, raw_data_json, flag_json,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ref, recorded_at, as_varchar(times), _dump(entry.get("value")),
                     _dump(entry.get("reVal")), _dump(entry.get("isAlarm")), _dump(entry.get("isLine")),
                     _dump(push.get("rawData")), _dump(push.get("flag")), received_at),
                )
                processed += 1
                new += cursor.rowcount
        return TlinkStored(processed, new)

    def tlink_user_exists(self, user_id: Id) -> bool:
        """Whether any push has named this deviceUserid."""
        return bool(self._query("SELECT 1 FROM tlink_users WHERE user_id = ?", (id_text(user_id),)))

    def tlink_device_owner(self, device_id: Id) -> Optional[str]:
        """The deviceUserid a device belongs to (as text), or None for an unknown device."""
        rows = self._query("SELECT user_id FROM tlink_devices WHERE device_id = ?", (id_text(device_id),))
        return rows[0][0] if rows else None

    def _owned(self, user_id: Id, device_id: Id) -> Optional[str]:
        device = id_text(device_id)
        if device is None or self.tlink_device_owner(device) != id_text(user_id):
            return None
        return device

    def _sensors(self, device_id: str) -> List[tuple]:
        return self._query("SELECT ref, sensor_id, type_json FROM tlink_sensors WHERE device_id = ?"
                           " ORDER BY ref", (device_id,))

    def _readings(self, where: str, params: list, start: Optional[str], end: Optional[str],
                  limit: int) -> List[Json]:
        extra, extra_params = _time_filter(start, end)
        rows = self._query(
            "SELECT %s FROM tlink_readings r JOIN tlink_sensors s ON s.ref = r.sensor_ref"
            " WHERE %s%s ORDER BY r.recorded_at DESC, r.seq DESC LIMIT ?" % (_READING_COLUMNS, where, extra),
            tuple(params + extra_params + [int(limit)]),
        )
        return [_reading(r) for r in rows]

    def tlink_sensor_summaries(self, device_id: Id, *, start: Optional[str] = None,
                               end: Optional[str] = None, history_limit: int = 10) -> List[Json]:
        """Per sensor: id, type, the latest reading in the window, and up to N readings newest first."""
        summaries = []
        for ref, sensor_id, type_json in self._sensors(id_text(device_id) or ""):
            latest = self._readings("r.sensor_ref = ?", [ref], start, end, 1)
            history = self._readings("r.sensor_ref = ?", [ref], start, end, history_limit) if history_limit else []
            summaries.append({"sensorsId": id_out(sensor_id), "sensorsTypeId": _load(type_json),
                              "latest": latest[0] if latest else None, "history": history})
        return summaries

    def tlink_user_devices(
        self,
        user_id: Id,
        *,
        page: int = 1,
        page_size: int = 20,
        device_id: Optional[Id] = None,
        start: Optional[str] = None,
        end: Optional[str] = None,
        history_limit: int = 10,
    ) -> Tuple[int, List[Json]]:
        """(total devices, one page of devices with their sensors), ordered by deviceId."""
        where, params = "user_id = ?", [id_text(user_id)]
        if device_id is not None:
            where += " AND device_id = ?"
            params.append(id_text(device_id))
        total = self._query("SELECT COUNT(*) FROM tlink_devices WHERE " + where, tuple(params))[0][0]
        rows = self._query(
            "SELECT device_id FROM tlink_devices WHERE %s"
            " ORDER BY length(device_id), device_id LIMIT ? OFFSET ?" % where,
            tuple(params + [page_size, (page - 1) * page_size]),
        )
        devices = [{"deviceId": id_out(r[0]),
                    "sensors": self.tlink_sensor_summaries(r[0], start=start, end=end,
                                                           history_limit=history_limit)}
                   for r in rows]
        return total, devices

    def tlink_latest(self, user_id: Id, device_id: Id) -> List[Json]:
        """The latest reading of each sensor of the user's device ([] if not the user's device)."""
        device = self._owned(user_id, device_id)
        if device is None:
            return []
        return [{"sensorsId": s["sensorsId"], "sensorsTypeId": s["sensorsTypeId"], "latest": s["latest"]}
                for s in self.tlink_sensor_summaries(device, history_limit=0)]

    def tlink_history(self, user_id: Id, device_id: Id, *, start: Optional[str] = None,
                      end: Optional[str] = None, limit: int = 100) -> List[Json]:
        """The user's device's readings (all sensors), newest first ([] if not the user's device)."""
        device = self._owned(user_id, device_id)
        if device is None:
            return []
        return self._readings("s.device_id = ?", [device], start, end, limit)

    def count_tlink_readings(self, device_id: Optional[Id] = None) -> int:
        """How many TLINK readings are stored (for one device, or all)."""
        if device_id is None:
            return self._query("SELECT COUNT(*) FROM tlink_readings")[0][0]
        return self._query("SELECT COUNT(*) FROM tlink_readings r JOIN tlink_sensors s ON s.ref = r.sensor_ref"
                           " WHERE s.device_id = ?", (id_text(device_id),))[0][0]

    # -- the reference's read API (/api/devices...) ---------------------------------------------

    def _device_rows(self, where: str, params: tuple, limit: int = -1, offset: int = 0) -> List[tuple]:
        return self._query(
            "SELECT device_id, %s FROM tlink_devices WHERE %s ORDER BY CAST(device_id AS INTEGER), device_id"
            " LIMIT ? OFFSET ?" % (", ".join(name for name, _ in _DEVICE_COLUMNS), where),
            params + (limit, offset))

    def _sensor_summaries(self, device_id: str) -> List[Tuple[int, Json]]:
        rows = self._query(
            "SELECT ref, sensor_id, type_json, sensor_name, is_alarm, is_line, latest_value,"
            " latest_recorded_at, unit FROM tlink_sensors WHERE device_id = ? ORDER BY ref", (device_id,))
        return [(r[0], {"sensorId": id_out(r[1]), "deviceId": id_out(device_id), "sensorName": r[3],
                        "sensorTypeId": _int_or_none(_load(r[2])), "isAlarm": _bool_or_none(r[4]),
                        "isLine": _bool_or_none(r[5]), "latestValue": r[6],
                        "latestRecordedAt": reference_time(r[7]), "unit": r[8]})
                for r in rows]

    def _reference_readings(self, ref: int, start: Optional[str], end: Optional[str],
                            limit: int) -> List[Json]:
        extra, params = _time_filter(start, end)
        rows = self._query(
            "SELECT r.recorded_at, r.sensor_timestamp, r.is_alarm_json, r.is_line_json, r.re_val_json,"
            " r.value_json FROM tlink_readings r WHERE r.sensor_ref = ?%s"
            " ORDER BY r.recorded_at DESC, r.seq DESC LIMIT ?" % extra, tuple([ref] + params + [int(limit)]))
        return [{"recordedAt": reference_time(r[0]), "sensorTimestamp": r[1],
                 "isAlarm": interpret_bool(_load(r[2])), "isLine": interpret_bool(_load(r[3])),
                 "rawValue": as_varchar(_load(r[4])), "value": as_varchar(_load(r[5]))} for r in rows]

    def tlink_devices_page(self, *, device_id: Optional[int] = None, page: int = 1, page_size: int = 20,
                           start: Optional[str] = None, end: Optional[str] = None,
                           history_limit: int = 10) -> Tuple[int, List[Json]]:
        """GET /api/devices: (total devices, one page of them with each sensor's newest readings)."""
        where, params = ("device_id = ?", (str(device_id),)) if device_id is not None else ("1", ())
        total = self._query("SELECT COUNT(*) FROM tlink_devices WHERE " + where, params)[0][0]
        devices = []
        for row in self._device_rows(where, params, page_size, (page - 1) * page_size):
            sensors = [dict(summary, history=self._reference_readings(ref, start, end, history_limit))
                       for ref, summary in self._sensor_summaries(row[0])]
            devices.append(dict(_device_summary(row), sensors=sensors))
        return total, devices

    def tlink_device_latest(self, device_id: int) -> Optional[Json]:
        """GET /api/devices/{id}/latest: the device and each sensor's newest stored reading (None: unknown)."""
        rows = self._device_rows("device_id = ?", (str(device_id),))
        if not rows:
            return None
        sensors = []
        for ref, summary in self._sensor_summaries(rows[0][0]):
            latest = self._reference_readings(ref, None, None, 1)
            sensors.append(dict(summary, latest=latest[0] if latest else None))
        return {"device": _device_summary(rows[0]), "sensors": sensors}

    def tlink_device_sync_history(self, device_id: int) -> Optional[Json]:
        """GET /api/devices/{id}/history: the reference reads its pull-sync logs here, so pushed
        readings never show; the twin has no pull sync, so every history is empty (None: unknown)."""
        rows = self._device_rows("device_id = ?", (str(device_id),))
        if not rows:
            return None
        return {"device": _device_summary(rows[0]),
                "sensors": [dict(summary, history=[]) for _, summary in self._sensor_summaries(rows[0][0])]}


def reference_time(stored: Optional[str]) -> Optional[str]:
    """A stored time as the reference's read API shows it: ``YYYY-MM-DDTHH:MM:SS`` (MySQL DATETIME
    keeps whole seconds; the twin keeps microseconds for clock-stamped pushes but shows none)."""
    if stored is None:
        return None
    return stored[:19].replace(" ", "T")


def _int_or_none(value: Any) -> Optional[int]:
    return None if value is None else as_integer(value)


def _bool_or_none(value: Optional[int]) -> Optional[bool]:
    return None if value is None else bool(value)


def _device_summary(row: tuple) -> Json:
    """The reference's device fields, then the push's descriptive fields (a twin extra)."""
    (device_id, parent_user_id, device_name, device_no, group_id, lat, lng, product_id, product_type,
     protocol_label, last_flag, last_push_time) = row
    return {
        "deviceId": id_out(device_id), "parentUserId": parent_user_id,
        "userId": None,  # the reference's local account id: pushes bind none
        "lastFlag": last_flag, "lastPushTime": reference_time(last_push_time),
        "deviceName": device_name, "deviceNo": device_no, "groupId": group_id, "lat": lat, "lng": lng,
        "productId": product_id, "productType": product_type, "protocolLabel": protocol_label,
    }
