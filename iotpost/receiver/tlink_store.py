"""TLINK push storage for the twin: users -> devices -> sensors -> readings, de-duplicated.

Usage: ``stored = store.store_tlink_push(push)  # TelemetryStore mixes TlinkTables in``

A reading is unique on (sensor, recorded_at, sensor_timestamp): ``recorded_at`` is the push's
``time`` (``%Y-%m-%d %H:%M:%S``) or, when that is missing or unparseable, the server's UTC clock
with microseconds, so a retried push stores nothing twice but pushes without ``time`` are never
merged. ``storedReadings`` counts readings newly stored. Ids are kept as text and given back as
numbers when they are plain decimal integers, as TLINK sends them. Values (value, reVal, isAlarm,
isLine, rawData, flag) keep their JSON types.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
import threading
from typing import Any, Dict, List, Optional, Tuple, Union

Json = Dict[str, Any]
Id = Union[int, str]  # TLINK ids arrive as numbers or strings; both name the same thing

TLINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS tlink_users (
    user_id        TEXT PRIMARY KEY,
    parent_user_id TEXT
);
CREATE TABLE IF NOT EXISTS tlink_devices (
    device_id TEXT PRIMARY KEY,
    user_id   TEXT NOT NULL REFERENCES tlink_users (user_id)
);
CREATE TABLE IF NOT EXISTS tlink_sensors (
    ref            INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id      TEXT NOT NULL REFERENCES tlink_devices (device_id),
    sensor_id      TEXT NOT NULL,
    type_json      TEXT,
    UNIQUE (device_id, sensor_id)
);
CREATE TABLE IF NOT EXISTS tlink_readings (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor_ref       INTEGER NOT NULL REFERENCES tlink_sensors (ref),
    recorded_at      TEXT NOT NULL,
    sensor_timestamp TEXT NOT NULL,   -- '' without "times", so the UNIQUE below still holds
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
    """Why this push cannot be stored (the reference receiver's wording first), or None."""
    sensors = push.get("sensorsDates")
    # An empty sensorsDates list is accepted (stores nothing), as a JavaScript truthiness check would.
    if (id_text(push.get("deviceId")) is None or id_text(push.get("deviceUserid")) is None
            or not isinstance(sensors, list)):
        return REQUIRED_MESSAGE
    for entry in sensors:
        if not isinstance(entry, dict) or id_text(entry.get("sensorsId")) is None:
            return "every sensorsDates entry needs a sensorsId"
    return None


def format_tlink_time(moment: _dt.datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS``, with ``.ffffff`` only when there is a fraction (sorts as text)."""
    text = moment.strftime(TLINK_TIME_FORMAT)
    return text + (".%06d" % moment.microsecond if moment.microsecond else "")


def parse_tlink_time(text: str) -> str:
    """A time filter or push time, normalised for comparison: TLINK's format or ISO 8601.

    An ISO time with an offset is converted to UTC (the clock the twin falls back to); times
    without a zone are taken as they are. Raises ValueError.
    """
    from .store import parse_iso8601

    text = text.strip()
    try:
        return format_tlink_time(_dt.datetime.strptime(text, TLINK_TIME_FORMAT))
    except ValueError:
        pass
    moment = parse_iso8601(text, default_tz=None)
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return format_tlink_time(moment)


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

    def store_tlink_push(self, push: Json) -> int:
        """Store one validated push; return how many readings were NEW (a repeat returns 0)."""
        from .store import iso_utc

        problem = validate_tlink_push(push)
        if problem is not None:
            raise ValueError(problem)
        now = self.now()
        user = id_text(push["deviceUserid"])
        parent = id_text(push.get("parentUserId"))
        device = id_text(push["deviceId"])
        recorded_at = None
        if isinstance(push.get("time"), str):
            try:
                recorded_at = format_tlink_time(_dt.datetime.strptime(push["time"].strip(),
                                                                      TLINK_TIME_FORMAT))
            except ValueError:
                recorded_at = None
        if recorded_at is None:
            moment = _dt.datetime.fromtimestamp(now, tz=_dt.timezone.utc).replace(tzinfo=None)
            recorded_at = moment.strftime(TLINK_TIME_FORMAT) + ".%06d" % moment.microsecond
        received_at = iso_utc(now)
        stored = 0
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO tlink_users (user_id, parent_user_id) VALUES (?, ?)",
                       (user, parent))
            if parent is not None:
                db.execute("UPDATE tlink_users SET parent_user_id = ? WHERE user_id = ?", (parent, user))
            db.execute("INSERT OR IGNORE INTO tlink_devices (device_id, user_id) VALUES (?, ?)",
                       (device, user))
            db.execute("UPDATE tlink_devices SET user_id = ? WHERE device_id = ?", (user, device))
            for entry in push["sensorsDates"]:
                sensor = id_text(entry["sensorsId"])
                sensor_type = entry.get("sensorsTypeId", entry.get("sensorTypeId"))
                db.execute("INSERT OR IGNORE INTO tlink_sensors (device_id, sensor_id, type_json)"
                           " VALUES (?, ?, ?)", (device, sensor, _dump(sensor_type)))
                if sensor_type is not None:
                    db.execute("UPDATE tlink_sensors SET type_json = ? WHERE device_id = ? AND sensor_id = ?",
                               (_dump(sensor_type), device, sensor))
                ref = db.execute("SELECT ref FROM tlink_sensors WHERE device_id = ? AND sensor_id = ?",
                                 (device, sensor)).fetchone()[0]
                times = entry.get("times")
                cursor = db.execute(
                    "INSERT OR IGNORE INTO tlink_readings (sensor_ref, recorded_at, sensor_timestamp,"
                    " value_json, re_val_json, is_alarm_json, is_line_json, raw_data_json, flag_json,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ref, recorded_at, "" if times is None else str(times), _dump(entry.get("value")),
                     _dump(entry.get("reVal")), _dump(entry.get("isAlarm")), _dump(entry.get("isLine")),
                     _dump(push.get("rawData")), _dump(push.get("flag")), received_at),
                )
                stored += cursor.rowcount
        return stored

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
