"""The reference TLINK receiver's database columns: what a push must fit, in one table.

Usage: ``size = text_limit("unit")  # 64``; ``LIMITS`` for every column

The reference receiver (Flask + MySQL in strict mode, PROTOCOLS.md "TLINK push protocol") writes a
push in one transaction: a value too long for its VARCHAR column, or an integer outside its
BIGINT/INT column, fails the whole push with 500 on every retry. The sender checks its pushes
against this table before sending (``tlink.limit_problem``); the twin fails what the reference
fails from the same table (``receiver/tlink_limits.why_reference_fails``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Optional, Tuple

from .records import Record

TEXT = "text"  # VARCHAR(size): at most ``size`` characters, as the driver would render the value
INT64 = "int64"  # BIGINT: a signed 64-bit integer
INT32 = "int32"  # INT: a signed 32-bit integer
DEVICE_KEY = "device key"  # BIGINT and > 0: the reference finds the device by it
LOOSE_INT64 = "loose int64"  # BIGINT, but the reference drops (stores NULL) what is not an integer


class Limit(Record):
    """One column of the reference's schema, named by the push field that fills it."""

    field: str
    kind: str
    size: int = 0  # characters, for TEXT
    per_sensor: bool = False  # checked in every sensorsDates entry


LIMITS: Tuple[Limit, ...] = (
    Limit("deviceId", DEVICE_KEY),
    Limit("deviceNo", TEXT, 191),  # without deviceNo the reference stores rawData here
    Limit("deviceName", TEXT, 191),
    Limit("productId", TEXT, 191),
    Limit("productType", TEXT, 191),
    Limit("protocolLabel", TEXT, 191),
    Limit("parentUserId", TEXT, 191),
    Limit("lat", TEXT, 64),
    Limit("lng", TEXT, 64),
    Limit("flag", TEXT, 32),  # last_flag VARCHAR(32) in the reference's schema
    Limit("groupId", LOOSE_INT64),
    Limit("sensorsId", INT64, per_sensor=True),
    Limit("sensorsTypeId", INT32, per_sensor=True),  # sensor_type_id INT
    Limit("sensorName", TEXT, 191, per_sensor=True),
    Limit("unit", TEXT, 64, per_sensor=True),
    Limit("times", TEXT, 64, per_sensor=True),
    Limit("reVal", TEXT, 255, per_sensor=True),
    Limit("value", TEXT, 255, per_sensor=True),
)

MAX_ID = 2 ** 63 - 1  # the top of a signed 64-bit BIGINT


def text_limit(field: str) -> Optional[int]:
    """How many characters the column ``field`` fills holds, or None when it is not text."""
    for limit in LIMITS:
        if limit.field == field and limit.kind == TEXT:
            return limit.size
    return None
