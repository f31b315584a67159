"""TESAIoT telemetry payloads: the seed's medical sample with plausible, slowly varying values.

Usage: ``gen = MedicalSignals(seed=1); payload = make_payload(device_id, gen.next(), now)``

Values follow a bounded random walk so a dashboard shows something that looks like a patient,
not noise; a seed makes a run reproducible.
"""

from __future__ import annotations

import _thread
import datetime as _dt
import json
import json.encoder
import math
import os
import random
import re
from operator import itemgetter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional

if TYPE_CHECKING:
    Json = Dict[str, Any]
else:
    Json = dict  # the alias only matters to type checkers
_UTC = _dt.timezone.utc

_ISO8601_PATTERN = r"""^(\d{4})-(\d{2})-(\d{2})
        (?:[Tt\ ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?
           (Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"""
_ISO8601 = None  # compiled on first use: a generated send stamps times, it never parses one


def iso_utc(epoch_seconds: float) -> str:
    """ISO 8601 in UTC with an explicit +00:00 offset, second resolution (the seed's format)."""
    global _LAST_SECOND
    whole = int(epoch_seconds)
    last = _LAST_SECOND  # read once: another thread may replace it meanwhile, never half of it
    if whole != last[0]:  # a burst stamps many readings in one second: formatted once
        last = _LAST_SECOND = (whole, _dt.datetime.fromtimestamp(whole, tz=_dt.timezone.utc).isoformat())
    return last[1]


_LAST_SECOND: tuple = (None, "")  # (epoch second, its iso_utc text)


def iso_utc_ms(epoch_seconds: float) -> str:
    """ISO 8601 in UTC with +00:00, millisecond resolution (IoTFlow keys readings by device and millisecond)."""
    whole = int(epoch_seconds)
    millis = min(999, int((epoch_seconds - whole) * 1000))  # truncated: never a time not yet reached
    moment = _dt.datetime.fromtimestamp(whole, tz=_dt.timezone.utc).replace(microsecond=millis * 1000)
    return moment.isoformat(timespec="milliseconds")


def parse_iso8601(text: str, default_tz: Optional[_dt.tzinfo] = _UTC) -> _dt.datetime:
    """Parse ISO 8601 identically on 3.8 and 3.13 (3.8's fromisoformat rejects "Z", 3.11's takes more).

    Accepts a date, or date and time with optional fraction and ``Z``/``+HH:MM``/``+HHMM``/``+HH``.
    A time without offset gets ``default_tz`` (None: stays naive). Raises ValueError otherwise.
    """
    global _ISO8601
    if _ISO8601 is None:
        _ISO8601 = re.compile(_ISO8601_PATTERN, re.VERBOSE | re.ASCII)
    match = _ISO8601.match(text)
    if match is None:
        raise ValueError("not an ISO 8601 timestamp: %r" % (text,))
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz: Optional[_dt.tzinfo] = default_tz
    if offset in ("Z", "z"):
        tz = _UTC
    elif offset:
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        delta = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or "0"))
        tz = _dt.timezone(sign * delta)
    return _dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                        int(second or 0), micro, tzinfo=tz)


def new_idempotency_key() -> str:
    """A random UUID4 string, without importing uuid on the cold path.

    The random bytes come from os.urandom 4 KiB at a time (256 keys): a burst asks once per payload,
    and a system call each time was the largest part of a key's cost. A forked child starts afresh,
    so it never repeats its parent's keys; threads take their bytes under a lock.
    """
    with _RANDOM_LOCK:
        if not _RANDOM:
            _RANDOM[:] = os.urandom(4096)
        raw = _RANDOM[-16:]
        del _RANDOM[-16:]
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


_RANDOM = bytearray()  # os.urandom bytes not yet used by new_idempotency_key
_RANDOM_LOCK = _thread.allocate_lock()  # _thread, not threading: nothing more on the cold path


def _forget_random() -> None:
    """In a forked child: no bytes its parent will use too, and a lock no thread of the parent holds."""
    global _RANDOM_LOCK
    _RANDOM.clear()
    _RANDOM_LOCK = _thread.allocate_lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_random)


def make_payload(device_id: str, data: Json, timestamp: str) -> Json:
    """The TESAIoT telemetry body: device_id, timestamp, data (in that order, as the seed shows)."""
    return {"device_id": device_id, "timestamp": timestamp, "data": data}


def encode(payload: Json) -> bytes:
    """Compact ASCII JSON: non-ASCII (the unit °C) as \\u escapes, which every JSON parser reads back the
    same, so the body printed by --dry-run is the exact bytes sent on any console."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


# How a template writes each scalar type as encode() does (exact types only: a subclass goes the whole way
# through json): ints and floats by the format itself (%d, and %r: repr, which json uses for a finite float),
# the others converted first by a C function.
_SPEC = {int: "%d", float: "%r", str: "%s", bool: "%s", type(None): "%s"}
_CONVERT = {str: json.encoder.encode_basestring_ascii, bool: {True: "true", False: "false"}.__getitem__,
            type(None): {None: "null"}.__getitem__}
_SLOT = "\x00iotpost-slot-%s\x00"


class BodyEncoder:
    """``encode(make_body(device_id, data, metadata, stamp))``, with what a burst repeats encoded once.

    A burst's readings share their keys and value types; only the values and the timestamp change.
    Once two readings in a row have the same keys, the body is encoded once with a marker in each
    value's place and kept as a %-format: later bodies fill in each value as json writes it. That
    template is checked against encode() on the reading that made it; a body it cannot make (other
    keys or types, a nested value, a float that is not finite) goes through encode() as before.
    """

    _MAX_TEMPLATES = 16  # an input whose keys keep changing stops making templates

    def __init__(self, make_body: Callable[[str, Json, Optional[Json], str], Json], device_id: str,
                 metadata: Optional[Json] = None) -> None:
        self._make = make_body
        self._device_id = device_id
        self._metadata = metadata
        self._last_keys: Optional[tuple] = None
        self._keys: Optional[tuple] = None  # the keys of the template in use
        self._format = ""  # the body as a %-format: each value's and the stamp's place
        self._order: Callable[[list], tuple] = tuple  # the values (then the stamp) -> the format's arguments
        self._types: tuple = ()  # the exact type of each value the template was made for
        self._floats: tuple = ()  # which values are floats (checked finite)
        self._convert: tuple = ()  # (which value, the C function that writes it) for str, bool and None
        self._templates = 0

    def __call__(self, data: Json, stamp: str) -> bytes:
        keys = tuple(data)
        if keys == self._keys:
            text = self._fill(data, stamp)
            if text is not None:
                return text.encode("ascii")
        body = encode(self._make(self._device_id, data, self._metadata, stamp))
        if keys == self._last_keys and keys != self._keys and self._templates < self._MAX_TEMPLATES:
            self._templates += 1
            self._template(data)
            if self._keys is not None and (self._fill(data, stamp) or "").encode("ascii") != body:
                self._keys = None  # make_body does more than place the values: encode every body
                self._templates = self._MAX_TEMPLATES
        self._last_keys = keys
        return body

    def _fill(self, data: Json, stamp: str) -> Optional[str]:
        values = list(data.values())
        if tuple(map(type, values)) != self._types:
            return None
        if self._floats and not math.isfinite(sum(map(values.__getitem__, self._floats))):
            return None  # json writes NaN/Infinity, repr nan/inf (a sum that overflows: encode() too)
        for at, convert in self._convert:
            values[at] = convert(values[at])
        values.append(_CONVERT[str](stamp))
        return self._format % self._order(values)

    def _template(self, data: Json) -> None:
        """Encode a body with markers for the values and the stamp; keep it as a format string, or nothing."""
        self._keys = None
        keys, types = tuple(data), tuple(map(type, data.values()))
        if not all(t in _SPEC for t in types):
            return  # a nested or special value: encode() every time
        marks = {key: _SLOT % i for i, key in enumerate(keys)}
        try:
            text = encode(self._make(self._device_id, marks, self._metadata, _SLOT % "stamp")).decode("ascii")
        except Exception:  # noqa: BLE001 - a make_body that looks at the values: no template, encode() as before
            return
        found = []
        for slot, mark in list(enumerate(marks.values())) + [(len(keys), _SLOT % "stamp")]:
            quoted = json.dumps(mark)
            count = text.count(quoted)
            if count > 1 or (count == 0 and slot < len(keys)):
                return  # a value placed twice, or not at all: not a body this template can make
            if count:
                found.append((text.index(quoted), quoted, slot))
        found.sort()
        pieces, order, at = [], [], 0
        for where, quoted, slot in found:
            pieces.append(text[at:where].replace("%", "%%"))
            pieces.append(_SPEC[types[slot]] if slot < len(keys) else "%s")
            order.append(slot)
            at = where + len(quoted)
        pieces.append(text[at:].replace("%", "%%"))
        self._format = "".join(pieces)
        if len(order) > 1:
            self._order = itemgetter(*order)
        else:
            self._order = lambda values: tuple(values[i] for i in order)
        self._types = types
        self._floats = tuple(i for i, t in enumerate(types) if t is float)
        self._convert = tuple((i, _CONVERT[t]) for i, t in enumerate(types) if t in _CONVERT)
        self._keys = keys


def _walk(rng: random.Random, value: float, step: float, low: float, high: float) -> float:
    value += -step + (step + step) * rng.random()  # rng.uniform(-step, step), the same float, one call fewer
    # Reflect at the bounds so values stay plausible without sticking to an edge.
    if value < low:
        value = low + (low - value)
    if value > high:
        value = high - (value - high)
    if value < low:  # min(max(value, low), high), without the two calls
        return low
    return high if value > high else value


class MedicalSignals:
    """The seed's medical sample (SpO2, temperature, heart rate...), one reading per call."""

    SITES = ("temporal", "forehead", "wrist", "finger")

    def __init__(self, seed: Optional[int] = None) -> None:
        self._rng = random.Random(seed)
        rng = self._rng
        self._spo2 = rng.uniform(95.0, 99.0)
        self._temp = rng.uniform(36.4, 37.1)
        self._hr = rng.uniform(65.0, 85.0)
        self._pi = rng.uniform(2.0, 6.0)
        self._site = rng.choice(self.SITES)

    def next(self) -> Json:
        rng = self._rng
        self._spo2 = _walk(rng, self._spo2, 0.6, 92.0, 100.0)
        self._temp = _walk(rng, self._temp, 0.05, 35.8, 38.2)
        self._hr = _walk(rng, self._hr, 2.5, 50.0, 120.0)
        self._pi = _walk(rng, self._pi, 0.3, 0.5, 10.0)
        heart_rate = round(self._hr)
        rr = 60000.0 / self._hr
        qt = 400.0 * (rr / 1000.0) ** 0.5  # Bazett: QT = QTc * sqrt(RR in s), QTc ~ 400 ms
        motion = rng.random() < 0.1
        quality = round(_walk(rng, 96.0, 4.0, 70.0, 100.0) - (15 if motion else 0))  # round() of a float is an int
        return {
            "spo2": round(self._spo2),
            "spo2_unit": "%",
            "temperature": round(self._temp, 2),
            "temperature_unit": "°C",
            "heart_rate": heart_rate,
            "heart_rate_bpm": heart_rate,
            "perfusion_index": round(self._pi, 2),
            "motion": motion,
            "signal_quality": max(quality, 0),
            "rhythm": "sinus" if rng.random() < 0.97 else "irregular",
            "rr_interval_ms": round(rr, 1),
            "qt_interval_ms": round(qt, 1),
            "site": self._site,
        }
