"""The smoke run's pure parts: marking readings so they can be found again, and comparing what came back.

Usage::

    run_id = new_run_id()
    data = marked(reading, run_id, seq)              # {"...": ..., "smoke_run": run_id, "smoke_seq": seq}
    found = find_marked(records, run_id)             # seq -> the record that carries that marker
    diffs = differences(sent, found[seq], rules)     # {} when it came back as sent

A marker makes a reading distinguishable from every other one, even one sent in the same second
with the same values. The comparison allows exactly for what a platform documents it changes
(``ReadbackRules``), nothing more: an altered value is a failed reading, not noise.
"""

from __future__ import annotations

import datetime as _dt
import math
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, Optional

from .payloads import Json, parse_iso8601
from .records import Record

RUN_KEY, SEQ_KEY = "smoke_run", "smoke_seq"


def new_run_id() -> str:
    """"r" and 12 hex characters from os.urandom: unique enough to tell this run from any other, short to
    read, and never all digits (IoTFlow parses stored text as JSON on the way back: "123" would return 123)."""
    return "r" + os.urandom(6).hex()


def marked(data: Json, run_id: str, seq: int) -> Json:
    """``data`` with this run's marker added (the markers win over fields of the same name)."""
    return dict(data, **{RUN_KEY: run_id, SEQ_KEY: seq})


class ReadbackRules(Record):
    """What a platform documents it changes between what is sent and what is read back."""

    data_at_top: bool = False  # data fields come back at the record's top level (IoTFlow), else under data_key
    data_key: str = "data"
    meta_prefix: Optional[str] = None  # IoTFlow flattens metadata to meta_<key>; None: under meta_key
    meta_key: str = "metadata"
    timestamp_key: Optional[str] = "timestamp"  # None: the platform keeps no device timestamp to compare
    timestamp_resolution_ms: int = 1  # IoTFlow: UTC at millisecond resolution
    naive_is_utc: bool = True  # a time without a zone is UTC (IoTFlow, ThermaCore answer so)
    text_parsed_as_json: bool = False  # IoTFlow stores values as text and parses text as JSON on the way back


def _data_of(record: Json, rules: ReadbackRules) -> Json:
    if rules.data_at_top:
        return record
    value = record.get(rules.data_key)
    return value if isinstance(value, dict) else {}


def find_marked(records: Iterable[Any], run_id: str, rules: ReadbackRules) -> Dict[int, Json]:
    """seq -> record, for the records that carry this run's marker (the first one seen per seq)."""
    found: Dict[int, Json] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        data = _data_of(record, rules)
        if str(data.get(RUN_KEY)) != run_id:
            continue
        seq = data.get(SEQ_KEY)
        if isinstance(seq, str) and seq.isdigit():  # a platform that returns numbers as text
            seq = int(seq)
        if isinstance(seq, int) and not isinstance(seq, bool) and seq not in found:
            found[seq] = record
    return found


def as_read_back(sent: Any, rules: ReadbackRules) -> Any:
    """What a platform documented to parse stored text as JSON returns for ``sent``: "101" -> 101."""
    if rules.text_parsed_as_json and isinstance(sent, str):
        import json

        try:
            return json.loads(sent)
        except ValueError:
            return sent
    return sent


def same_value(sent: Any, got: Any) -> bool:
    """Equal as JSON means it: 21 == 21.0, but True is not 1 and "1" is not 1; nested values compare whole."""
    if isinstance(sent, bool) or isinstance(got, bool):
        return type(sent) is type(got) and sent == got
    if isinstance(sent, (int, float)) and isinstance(got, (int, float)):
        if isinstance(sent, float) or isinstance(got, float):
            return math.isclose(float(sent), float(got), rel_tol=1e-12, abs_tol=0.0)
        return sent == got
    if isinstance(sent, dict) and isinstance(got, dict):
        return sent.keys() == got.keys() and all(same_value(sent[k], got[k]) for k in sent)
    if isinstance(sent, list) and isinstance(got, list):
        return len(sent) == len(got) and all(same_value(a, b) for a, b in zip(sent, got))
    return type(sent) is type(got) and sent == got


def _instant(text: Any, rules: ReadbackRules) -> Optional[_dt.datetime]:
    if not isinstance(text, str):
        return None
    try:
        moment = parse_iso8601(text.strip().replace(" ", "T", 1), default_tz=_dt.timezone.utc if rules.naive_is_utc
                               else None)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    step = max(1, rules.timestamp_resolution_ms) * 1000  # microseconds
    micro = moment.microsecond - moment.microsecond % step
    return moment.replace(microsecond=micro).astimezone(_dt.timezone.utc)


def differences(sent_data: Json, sent_metadata: Optional[Json], sent_timestamp: Optional[str], record: Json,
                rules: ReadbackRules) -> Dict[str, Dict[str, Any]]:
    """Field -> {"sent", "got"} for every sent field that did not come back as sent (missing: got None)."""
    diffs: Dict[str, Dict[str, Any]] = {}
    got_data = _data_of(record, rules)
    for key, value in sent_data.items():
        if key not in got_data:
            diffs[key] = {"sent": value, "got": None}
        elif not same_value(as_read_back(value, rules), got_data[key]):
            diffs[key] = {"sent": value, "got": got_data[key]}
    if sent_metadata:
        if rules.meta_prefix is not None:
            got_meta = {k[len(rules.meta_prefix):]: v for k, v in record.items()
                        if isinstance(k, str) and k.startswith(rules.meta_prefix)}
            label = rules.meta_prefix + "%s"
        else:
            value = record.get(rules.meta_key)
            got_meta = value if isinstance(value, dict) else {}
            label = rules.meta_key + ".%s"
        for key, value in sent_metadata.items():
            if key not in got_meta:
                diffs[label % key] = {"sent": value, "got": None}
            elif not same_value(as_read_back(value, rules), got_meta[key]):
                diffs[label % key] = {"sent": value, "got": got_meta[key]}
    if sent_timestamp is not None and rules.timestamp_key is not None:
        got = record.get(rules.timestamp_key)
        if _instant(sent_timestamp, rules) is None or _instant(sent_timestamp, rules) != _instant(got, rules):
            diffs[rules.timestamp_key] = {"sent": sent_timestamp, "got": got}
    return diffs
