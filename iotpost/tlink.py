"""TLINK push-protocol payloads, as the TLINK cloud POSTs them to a customer's webhook.

Usage: ``gen = TlinkPushes(DeviceInfo(device_id=2864, user_id=385, parent_user_id="217"), sensors, seed=1)``
``body = encode_push(gen.next(now))``

Types follow TLINK's own (strings where TLINK sends strings: ``reVal``, ``value``, ``isAlarm``,
``lat``/``lng``; numbers for ids and ``isLine``), so a webhook tested with this sees what production
will send. Pushes are checked against the reference receiver's column limits
(``tlink_schema.LIMITS``: a push over one fails there with 500 on every retry) before anything is sent.
"""

from __future__ import annotations

import json
import random
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence

from .data_input import decode_json, decode_text
from .errors import InputDataError
from .tlink_schema import MAX_ID, text_limit
from .records import Record

# TLINK sensorsTypeId values.
NUMERIC, SWITCH, LOCATION, IMAGE, SWITCH_ALT, LEVEL, VIDEO, STRING = 1, 2, 3, 4, 5, 6, 7, 8
TYPE_NAMES = {1: "numeric", 2: "switch", 3: "location", 4: "image", 5: "switch", 6: "level", 7: "video",
              8: "string"}

# What the sender sends as whole-number ids: positive signed 64-bit (the reference keys and stores them so).
SENT_IDS = ("deviceId", "deviceUserid", "groupId", "sensorsId")


def limit_problem(field: str, value: Any) -> Optional[str]:
    """Why ``value`` does not fit the receiver's ``field`` column (naming field and limit), or None.

    The sizes come from ``tlink_schema.LIMITS``; ``rawData`` fills ``deviceNo``'s column when a push
    has no ``deviceNo``, so it is held to that size.
    """
    if field in SENT_IDS:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
            return ("%s %r is out of range: the receiver takes a whole number from 1 to %d (signed 64-bit)"
                    % (field, value, MAX_ID))
        return None
    most = text_limit("deviceNo" if field == "rawData" else field)
    if most is None:
        raise KeyError(field)  # a field we do not check: a bug in the caller
    if len(value) > most:
        return ("%s is %d characters; the receiver's column holds at most %d" % (field, len(value), most))
    return None


# Plausible ranges for numeric sensors by unit: (low, high, step per reading, alarm above).
_RANGES = {
    "°c": (15.0, 40.0, 0.3, 35.0), "c": (15.0, 40.0, 0.3, 35.0), "%rh": (30.0, 95.0, 1.0, 90.0),
    "%": (0.0, 100.0, 1.5, 95.0), "hpa": (990.0, 1030.0, 0.4, 1025.0), "ppm": (400.0, 2000.0, 20.0, 1500.0),
    "v": (11.0, 14.5, 0.05, 14.2), "a": (0.0, 20.0, 0.3, 18.0), "m": (0.0, 5.0, 0.05, 4.5),
}
_DEFAULT_RANGE = (0.0, 100.0, 1.0, 95.0)


class SensorSpec(Record):
    sensor_id: int
    type_id: int = NUMERIC
    unit: Optional[str] = None
    name: Optional[str] = None  # sensorName


class DeviceInfo(Record):
    """What a push says about its device; None fields are left out of the push."""

    device_id: int
    user_id: int
    parent_user_id: str
    device_no: Optional[str] = None  # None: derived from device_id (see default_device_no)
    device_name: Optional[str] = None
    group_id: Optional[int] = None
    lat: Optional[str] = None
    lng: Optional[str] = None
    product_id: Optional[str] = None
    product_type: Optional[str] = None
    protocol_label: Optional[str] = None


DEFAULT_SENSORS = (SensorSpec(11922, NUMERIC, "°C"), SensorSpec(11923, NUMERIC, "%RH"),
                   SensorSpec(11924, SWITCH, None))


def default_device_no(device_id: int) -> str:
    """A stable 16-character device number for ``device_id`` (TLINK's look: upper-case letters and digits).

    Sending one keeps the reference receiver from keying the device on ``rawData`` instead.
    """
    import hashlib  # only TLINK needs it; keep it off the TESAIoT start-up path

    return hashlib.sha256(b"iotpost-tlink-device:%d" % device_id).hexdigest()[:16].upper()


def parse_sensor(text: str) -> SensorSpec:
    """``ID[:TYPE[:UNIT[:NAME]]]``, e.g. ``11922:1:°C:Room 2: north``; NAME is the rest and may hold ``:``.

    Raises ValueError with a readable reason, limits included.
    """
    parts = text.split(":", 3)
    try:
        sensor_id = int(parts[0])
    except ValueError:
        raise ValueError("sensor id %r is not a number (expected ID[:TYPE[:UNIT[:NAME]]])" % parts[0]) from None
    type_id = NUMERIC
    if len(parts) > 1 and parts[1]:
        try:
            type_id = int(parts[1])
        except ValueError:
            raise ValueError("sensor type %r is not a number (1-8)" % parts[1]) from None
        if type_id not in TYPE_NAMES:
            raise ValueError("sensor type %d is not a TLINK type (1-8)" % type_id)
    unit = parts[2] if len(parts) > 2 and parts[2] else None
    name = parts[3] if len(parts) > 3 and parts[3] else None
    for field, value in (("sensorsId", sensor_id), ("unit", unit), ("sensorName", name)):
        problem = limit_problem(field, value) if value is not None else None
        if problem:
            raise ValueError(problem)
    return SensorSpec(sensor_id, type_id, unit, name)


def value_text(value: Any) -> str:
    """A reading as TLINK carries it in ``reVal``/``value``: text (true/false as 1/0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    return json.dumps(value)  # numbers as JSON writes them: 21.5, 7, 1e+20


def reading_entry(s: SensorSpec, hms: str, raw: str, value: str, alarm: bool = False,
                  online: bool = True) -> Dict[str, Any]:
    """One ``sensorsDates`` entry, typed and ordered as TLINK sends it."""
    entry: Dict[str, Any] = {
        "times": hms,
        "sensorsId": s.sensor_id,
        "isAlarm": "1" if alarm else "0",
        "sensorsTypeId": s.type_id,
        "isLine": 1 if online else 0,  # TLINK: 1 the sensor is online, 0 offline
        "reVal": raw,
        "value": value,
    }
    if s.unit:
        entry["unit"] = s.unit
    if s.name:
        entry["sensorName"] = s.name
    return entry


# A Modbus-RTU style read answer (address, function 3, byte count, 16-bit registers, CRC): one
# register per sensor, at most this many, so rawData stays under the receiver's 191 characters
# (10 + 4 per register hex digits) however many sensors a push carries.
MAX_FRAME_REGISTERS = 45


def _crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _register(value: str) -> int:
    """A reading as a signed 16-bit register in tenths (21.5 -> 215); text readings are 0."""
    try:
        number = float(value)
    except ValueError:
        return 0
    if number != number or number in (float("inf"), float("-inf")):
        return 0
    number = max(-3276.8, min(3276.7, number))  # clamp first: 1e308 * 10 would overflow to infinity
    return int(round(number * 10)) & 0xFFFF


def raw_frame(device_id: int, values: Sequence[str]) -> str:
    """Upper-case hex of the device's raw frame for these readings (at most 190 characters)."""
    registers = [_register(v) for v in values[:MAX_FRAME_REGISTERS]]
    frame = bytearray([device_id % 247 + 1, 0x03, 2 * len(registers)])
    for r in registers:
        frame += bytes([r >> 8, r & 0xFF])
    crc = _crc16_modbus(bytes(frame))
    frame += bytes([crc & 0xFF, crc >> 8])
    return bytes(frame).hex().upper()


def make_push(device: DeviceInfo, readings: List[Dict[str, Any]], stamp: str) -> Dict[str, Any]:
    """A whole push in TLINK's field order; the device's optional fields only when set."""
    push: Dict[str, Any] = {
        "flag": "00",
        "deviceUserid": device.user_id,
        "parentUserId": device.parent_user_id,
        "sensorsDates": readings,
        "time": stamp,
        "rawData": raw_frame(device.device_id, [r["reVal"] for r in readings]),
        "deviceId": device.device_id,
        "deviceNo": device.device_no or default_device_no(device.device_id),
    }
    for field, value in (("deviceName", device.device_name), ("groupId", device.group_id), ("lat", device.lat),
                         ("lng", device.lng), ("productId", device.product_id),
                         ("productType", device.product_type), ("protocolLabel", device.protocol_label)):
        if value is not None:
            push[field] = value
    return push


def tlink_time(wall: float) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in local time, no zone: how TLINK stamps a push."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


class TlinkPushes:
    """Makes successive pushes for one device; values drift plausibly per sensor type."""

    def __init__(self, device: DeviceInfo, sensors: Sequence[SensorSpec], seed: Optional[int] = None) -> None:
        self.device = device
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
        return reading_entry(s, hms, raw, value, alarm)

    def next(self, wall: float) -> Dict[str, Any]:
        """One push stamped with ``wall`` (local time, no zone, as TLINK sends it)."""
        stamp = tlink_time(wall)
        return make_push(self.device, [self._reading(s, stamp[11:]) for s in self.sensors], stamp)


def encode_push(push: Dict[str, Any]) -> bytes:
    """Compact ASCII JSON (``°C`` as ``\\u00b0C``): what --dry-run prints is what is signed and sent."""
    return json.dumps(push, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def load_replay(data: bytes, name: str) -> List[bytes]:
    """Recorded pushes, each as the exact bytes to send: one JSON object, or JSON Lines.

    Everything is checked before anything is sent: one bad record and the file is refused (65).
    """
    text = decode_text(data, name)  # UTF-8, or UTF-16 from PowerShell's ">"; sent as UTF-8 either way
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
