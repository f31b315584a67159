"""Real readings for tlink_push.py --data-file: JSON Lines, one push per line, streamed as they arrive.

Usage: ``for line in read_reading_lines(stream, "<stdin>"): ...  # TlinkLine, or InputDataError``

A line maps sensor ids to values, ``{"11922": 21.5, "11924": true, "time": "2026-11-27 16:45:03"}``.
``time`` is optional: TLINK's ``YYYY-MM-DD HH:MM:SS`` (local time) as it is, or ISO 8601 with an
offset, converted to local time as TLINK stamps. Each value is checked against the receiver's limits
here, so a line it could not store is refused with its line number and the other lines still go.
"""

from __future__ import annotations

import math
import re

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import IO, Any, Dict, Iterator, Optional, Union

from .data_input import decode_line, read_lines
from .errors import InputDataError
from .tlink import limit_problem, value_text
from .records import Record

_TLINK_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
TIME_HINT = "write time as 2026-11-27 16:45:03 (local time, as TLINK sends it) or ISO 8601 with an offset"


class TlinkLine(Record):
    values: Dict[int, Optional[str]]  # sensor id -> reading as text, in the line's order; None: offline
    time: Optional[str]  # TLINK local time, or None: stamp it when sent
    where: str  # "<stdin> line 3", for messages
    line_no: int


def tlink_local_time(text: Any, where: str) -> str:
    """A line's own ``time`` as TLINK's local ``YYYY-MM-DD HH:MM:SS``; raises InputDataError.

    Also refused: a time this machine cannot place on its clock (year 1, or 9999 in a zone
    behind UTC), which would otherwise end the run with an OverflowError when it is sent.
    """
    stamp = _local_time(text, where)
    from .tlink_stamps import epoch_of

    try:
        if not "1970" <= stamp[:4] <= "9998":  # the same on every machine, whatever its C library
            raise ValueError(stamp)
        epoch_of(stamp)
    except (ValueError, OverflowError, OSError):
        raise InputDataError("%s: time %r is out of the range this machine's clock can hold" % (where, stamp),
                             hint=TIME_HINT) from None
    return stamp


def _local_time(text: Any, where: str) -> str:
    import datetime

    if not isinstance(text, str):
        raise InputDataError("%s: time must be a string" % where, hint=TIME_HINT)
    text = text.strip()
    if _TLINK_TIME.match(text):
        try:
            datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise InputDataError("%s: time %r is not a real date and time" % (where, text), hint=TIME_HINT) from None
        return text
    from .payloads import parse_iso8601

    try:
        moment = parse_iso8601(text, default_tz=None)
    except ValueError:
        raise InputDataError("%s: time %r is neither YYYY-MM-DD HH:MM:SS nor ISO 8601" % (where, text),
                             hint=TIME_HINT) from None
    if moment.tzinfo is None:
        raise InputDataError("%s: time %r has no UTC offset, so its local time is unknown" % (where, text),
                             hint=TIME_HINT)
    try:
        return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")  # the local zone, as TLINK stamps
    except (ValueError, OverflowError, OSError):
        raise InputDataError("%s: time %r is out of the range this machine's clock can hold" % (where, text),
                             hint=TIME_HINT) from None


def _sensor_id(key: str, where: str) -> int:
    try:
        sensor_id = int(key)
    except ValueError:
        raise InputDataError("%s: key %r is not a sensor id" % (where, key),
                             hint='map sensor ids to values, e.g. {"11922": 21.5, "time": "2026-11-27 16:45:03"}'
                             ) from None
    problem = limit_problem("sensorsId", sensor_id)
    if problem:
        raise InputDataError("%s: %s" % (where, problem))
    return sensor_id


def parse_reading_line(text: Union[str, bytes], where: str, line_no: int) -> TlinkLine:
    """One line, checked whole: raises InputDataError naming ``where`` and, for a limit, the field."""
    obj = decode_line(text, where, line_no)
    if not isinstance(obj, dict):
        raise InputDataError("%s: expected a JSON object, got %s" % (where, type(obj).__name__),
                             hint='map sensor ids to values, e.g. {"11922": 21.5}')
    stamp = tlink_local_time(obj["time"], where) if "time" in obj else None
    values: Dict[int, Optional[str]] = {}
    for key, value in obj.items():
        if key == "time":
            continue
        sensor_id = _sensor_id(key, where)
        if sensor_id in values:
            raise InputDataError("%s: sensor %d appears twice" % (where, sensor_id))
        if isinstance(value, (dict, list)):
            raise InputDataError("%s: sensor %d's value is a JSON %s; a reading is a number, text, true/false "
                                 "or null" % (where, sensor_id, "object" if isinstance(value, dict) else "array"))
        if value is None:
            values[sensor_id] = None
            continue
        if isinstance(value, float) and not math.isfinite(value):  # 1e999: not a reading TLINK can carry
            raise InputDataError("%s: sensor %d's value is not a finite number" % (where, sensor_id))
        shown = value_text(value)
        problem = limit_problem("value", shown)
        if problem:
            raise InputDataError("%s: sensor %d: %s (reVal/value)" % (where, sensor_id, problem))
        values[sensor_id] = shown
    if not values:
        raise InputDataError("%s holds no reading" % where, hint='map sensor ids to values, e.g. {"11922": 21.5}')
    return TlinkLine(values, stamp, where, line_no)


def read_reading_lines(stream: IO, name: str) -> Iterator[Union[TlinkLine, InputDataError]]:
    """Yield each line as it arrives (blank lines skipped); a bad line yields its error instead.

    As data_input.read_json_lines: the caller reports a bad line with its number and goes on.
    """
    return read_lines(stream, name, parse_reading_line)
