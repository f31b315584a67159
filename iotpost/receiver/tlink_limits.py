"""Why the reference TLINK receiver would fail a push with 500: its column limits, in one table.

Usage: ``problem = why_reference_fails(push)  # None, or "rawData used as deviceNo is 250 characters, over 191"``

The reference receiver (Flask + MySQL in strict mode, see PROTOCOLS.md "TLINK push protocol")
writes a push in one transaction: a value too long for its VARCHAR column, or an integer outside
its BIGINT/INT column, is a database error, so the whole push fails with 500 and nothing is kept,
on every retry. The twin checks the same limits before it stores anything, so a sender meets the
failure here first instead of in production. The sizes live in ``iotpost.tlink_schema.LIMITS``, shared with the sender.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

Json = Dict[str, Any]

from ..tlink_schema import DEVICE_KEY, INT32, LIMITS, LOOSE_INT64, TEXT, Limit  # the one table, shared with the sender

_INT64_RANGE = (-(2 ** 63), 2 ** 63 - 1)
_INT32_RANGE = (-(2 ** 31), 2 ** 31 - 1)
_INTEGER_TEXT = re.compile(r"^\s*[+-]?\d+\s*$", re.ASCII)


def as_integer(value: Any) -> Optional[int]:
    """The integer MySQL would store for ``value`` in an integer column, or None if it would refuse it."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return int(round(value))  # MySQL rounds a numeric literal into an integer column
    if isinstance(value, str) and _INTEGER_TEXT.match(value):
        return int(value)
    return None


def loose_integer(value: Any) -> Optional[int]:
    """``groupId`` as the reference reads it before storing: ``int(str(value))``, or None (dropped)."""
    if isinstance(value, bool):
        return int(value)
    text = str(value)
    return int(text) if _INTEGER_TEXT.match(text) else None


def as_varchar(value: Any) -> Optional[str]:
    """``value`` as the reference's driver writes it into a VARCHAR column (None stays NULL)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def stored_device_no(push: Json) -> Tuple[str, Any]:
    """(how to name it, value) of the reference's device number: ``deviceNo``, else ``rawData``."""
    if push.get("deviceNo"):
        return "deviceNo", push["deviceNo"]
    return "rawData used as deviceNo", push.get("rawData")


def _check(limit: Limit, name: str, value: Any) -> Optional[str]:
    """Why ``value`` does not fit ``limit``'s column, or None (None values are NULL and always fit)."""
    if value is None:
        return None
    if limit.kind == TEXT:
        if isinstance(value, (dict, list)):
            return "%s is a JSON %s, which VARCHAR(%d) cannot hold" % (
                name, "object" if isinstance(value, dict) else "array", limit.size)
        length = len(as_varchar(value) or "")
        if length > limit.size:
            return "%s is %d characters, over %d" % (name, length, limit.size)
        return None
    if limit.kind == LOOSE_INT64:  # it keeps only what int(str(value)) reads: 2.0 or "x" is dropped
        number = loose_integer(value)
        if number is None:
            return None
    else:
        number = as_integer(value)
    if number is None:
        return "%s %s is not an integer" % (name, _short(value))
    low, high = _INT32_RANGE if limit.kind == INT32 else _INT64_RANGE
    if not low <= number <= high:
        return "%s %s is outside signed %d-bit" % (name, _short(value), 32 if limit.kind == INT32 else 64)
    if limit.kind == DEVICE_KEY and number <= 0:
        return "%s %s is not > 0" % (name, _short(value))
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def why_reference_fails(push: Json) -> Optional[str]:
    """The first reason the reference would answer this (already validated) push with 500, or None.

    Besides the column limits: a ``sensorsDates`` that is not a list of objects, or a ``time``
    that is not text (an epoch number), makes the reference's code fail before the database, also
    with 500.
    """
    sensors = push.get("sensorsDates")
    if not isinstance(sensors, list):
        return "sensorsDates is not a list"
    moment = push.get("time")
    if moment and not isinstance(moment, str):  # it hands a truthy time to strptime, which needs text
        return "time %s is not text" % _short(moment)
    for limit in LIMITS:
        if limit.per_sensor:
            continue
        if limit.field == "deviceNo":
            name, value = stored_device_no(push)
        elif limit.field == "groupId":
            name, value = "groupId", push.get("groupId") or None  # the reference drops a falsy groupId
        else:
            name, value = limit.field, push.get(limit.field)
        problem = _check(limit, name, value)
        if problem is not None:
            return problem
    for index, entry in enumerate(sensors):
        if not isinstance(entry, dict):
            return "sensorsDates[%d] is not an object" % index
        if entry.get("sensorsId") is None:
            continue  # the reference skips such an entry
        for limit in LIMITS:
            if not limit.per_sensor:
                continue
            field = limit.field
            if field == "sensorsTypeId" and field not in entry:
                field = "sensorTypeId"  # the twin takes both spellings; the column is the same
            problem = _check(limit, "sensorsDates[%d].%s" % (index, field), entry.get(field))
            if problem is not None:
                return problem
    return None
