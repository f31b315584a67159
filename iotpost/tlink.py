"""TLINK push-protocol payloads, as the TLINK cloud POSTs them to a customer's webhook.

Usage: ``gen = TlinkPushes(device_id=2864, user_id=385, parent_user_id="217", sensors=[...], seed=1)``
``body = encode_push(gen.next(now))``

Types follow TLINK's own (strings where TLINK sends strings: ``reVal``, ``value``, ``isAlarm``;
numbers for ids and ``isLine``), so a webhook tested with this sees what production will send.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from .data_input import decode_json
from .errors import InputDataError

# TLINK sensorsTypeId values.
NUMERIC, SWITCH, LOCATION, IMAGE, SWITCH_ALT, LEVEL, VIDEO, STRING = 1, 2, 3, 4, 5, 6, 7, 8
TYPE_NAMES = {1: "numeric", 2: "switch", 3: "location", 4: "image", 5: "switch", 6: "level", 7: "video",
              8: "string"}

# Plausible ranges for numeric sensors by unit: (low, high, step per reading, alarm above).
_RANGES = {
    "°c": (15.0, 40.0, 0.3, 35.0), "c": (15.0, 40.0, 0.3, 35.0), "%rh": (30.0, 95.0, 1.0, 90.0),
    "%": (0.0, 100.0, 1.5, 95.0), "hpa": (990.0, 1030.0, 0.4, 1025.0), "ppm": (400.0, 2000.0, 20.0, 1500.0),
    "v": (11.0, 14.5, 0.05, 14.2), "a": (0.0, 20.0, 0.3, 18.0), "m": (0.0, 5.0, 0.05, 4.5),
}
_DEFAULT_RANGE = (0.0, 100.0, 1.0, 95.0)


class SensorSpec(NamedTuple):
    sensor_id: int
    type_id: int = NUMERIC
    unit: Optional[str] = None


DEFAULT_SENSORS = (SensorSpec(11922, NUMERIC, "°C"), SensorSpec(11923, NUMERIC, "%RH"),
                   SensorSpec(11924, SWITCH, None))


def parse_sensor(text: str) -> SensorSpec:
    """``ID[:TYPE[:UNIT]]``, e.g. ``11922:1:°C``; raises ValueError with a readable reason."""
    parts = text.split(":", 2)
    try:
        sensor_id = int(parts[0])
    except ValueError:
        raise ValueError("sensor id %r is not a number (expected ID[:TYPE[:UNIT]])" % parts[0]) from None
    type_id = NUMERIC
    if len(parts) > 1 and parts[1]:
        try:
            type_id = int(parts[1])
        except ValueError:
            raise ValueError("sensor type %r is not a number (1-8)" % parts[1]) from None
        if type_id not in TYPE_NAMES:
            raise ValueError("sensor type %d is not a TLINK type (1-8)" % type_id)
    unit = parts[2] if len(parts) > 2 and parts[2] else None
    return SensorSpec(sensor_id, type_id, unit)


class TlinkPushes:
    """Makes successive pushes for one device; values drift plausibly per sensor type."""

    def __init__(self, device_id: int, user_id: int, parent_user_id: str, sensors: Sequence[SensorSpec],
                 seed: Optional[int] = None) -> None:
        self.device_id = device_id
        self.user_id = user_id
        self.parent_user_id = parent_user_id
        self.sensors = list(sensors)
        self._rng = random.Random(seed)
        self._state: Dict[int, float] = {}
        for s in self.sensors:
            low, high, _, _ = self._range(s)
            self._state[s.sensor_id] = self._rng.uniform(low + (high - low) * 0.3, low + (high - low) * 0.6)

    @staticmethod
    def _range(s: SensorSpec):
        if s.type_id == LEVEL:
            return (0.0, 100.0, 2.0, 90.0)
        return _RANGES.get((s.unit or "").lower(), _DEFAULT_RANGE)

    def _reading(self, s: SensorSpec, hms: str) -> Dict[str, Any]:
        rng = self._rng
        alarm = False
        if s.type_id in (NUMERIC, LEVEL):
            low, high, step, alarm_above = self._range(s)
            v = min(max(self._state[s.sensor_id] + rng.uniform(-step, step), low), high)
            self._state[s.sensor_id] = v
            raw, value, alarm = "%.4f" % v, "%.1f" % v, v > alarm_above
        elif s.type_id in (SWITCH, SWITCH_ALT):
            on = rng.random() < 0.5
            raw, value = ("1", "1") if on else ("0", "0")
        elif s.type_id == LOCATION:
            lng, lat = 100.5018 + rng.uniform(-0.01, 0.01), 13.7563 + rng.uniform(-0.01, 0.01)
            raw = value = "%.6f,%.6f" % (lng, lat)
        elif s.type_id in (IMAGE, VIDEO):
            raw = value = "https://media.example.invalid/%d/%d.%s" % (
                s.sensor_id, rng.randrange(10 ** 6), "jpg" if s.type_id == IMAGE else "mp4")
        else:
            raw = value = rng.choice(("OK", "IDLE", "RUNNING", "MAINTENANCE"))
        reading: Dict[str, Any] = {
            "times": hms,
            "sensorsId": s.sensor_id,
            "isAlarm": "1" if alarm else "0",
            "sensorsTypeId": s.type_id,
            "isLine": 1,
            "reVal": raw,
            "value": value,
        }
        if s.unit:
            reading["unit"] = s.unit
        return reading

    def next(self, wall: float) -> Dict[str, Any]:
        """One push stamped with ``wall`` (local time, no zone, as TLINK sends it)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))
        readings = [self._reading(s, stamp[11:]) for s in self.sensors]
        frame = "#RTU," + ",".join(r["reVal"] for r in readings) + "\r\n"
        return {
            "flag": "00",
            "deviceUserid": self.user_id,
            "parentUserId": self.parent_user_id,
            "sensorsDates": readings,
            "time": stamp,
            "rawData": frame.encode("utf-8").hex().upper(),
            "deviceId": self.device_id,
        }


def encode_push(push: Dict[str, Any]) -> bytes:
    """Compact ASCII JSON (``°C`` as ``\\u00b0C``): what --dry-run prints is what is signed and sent."""
    return json.dumps(push, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def load_replay(data: bytes, name: str) -> List[bytes]:
    """Recorded pushes, each as the exact bytes to send: one JSON object, or JSON Lines.

    Everything is checked before anything is sent: one bad record and the file is refused (65).
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputDataError("%s is not UTF-8 text" % name) from None
    whole = text.strip()
    if not whole:
        raise InputDataError("%s holds no recorded push" % name, hint="expected a JSON object or JSON Lines")
    try:
        doc = decode_json(whole)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        return [whole.encode("utf-8")]
    if isinstance(doc, list):
        raise InputDataError("%s is a JSON array; replay takes one push object, or one push per line" % name,
                             hint="write one JSON object per line (JSON Lines)")
    records = []
    for no, line in enumerate(text.split("\n"), 1):  # not splitlines(): see data_input.load_data_file
        body = line.strip()
        if not body:
            continue
        try:
            obj = decode_json(body)
        except ValueError as exc:
            raise InputDataError("%s line %d is not valid JSON (%s); nothing was sent" % (name, no, exc)) from None
        if not isinstance(obj, dict):
            raise InputDataError("%s line %d is not a JSON object; nothing was sent" % (name, no))
        records.append(body.encode("utf-8"))
    return records
