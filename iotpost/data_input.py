"""Real data from --data and --data-file: one JSON object, or JSON Lines streamed as they arrive.

Usage: ``for item in read_json_lines(sys.stdin, "<stdin>"): ...``

A line is either the ``data`` object itself, or payload-shaped ``{"data": {...}, "timestamp": ...}``.
A top-level ``timestamp`` (ISO 8601) is kept as the payload's timestamp. Errors name the line.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Iterator, List, Optional, Tuple, TypeVar, Union

from .errors import InputDataError
from .payloads import Json, parse_iso8601
from .records import Record

if TYPE_CHECKING:
    T = TypeVar("T")


class DataItem(Record):
    data: Json
    timestamp: Optional[str]
    line_no: int


def item_from_object(obj: object, where: str, line_no: int = 0) -> DataItem:
    """Check one decoded object and split off its own timestamp, if it has one."""
    if not isinstance(obj, dict):
        raise InputDataError("%s: expected a JSON object, got %s" % (where, type(obj).__name__),
                             hint='send an object such as {"temperature": 21.5}')
    if isinstance(obj.get("data"), dict):
        data = dict(obj["data"])
        timestamp = obj.get("timestamp")
    else:
        data = dict(obj)
        timestamp = data.pop("timestamp", None)
    if not data:
        raise InputDataError("%s: the data object is empty" % where,
                             hint="the platform rejects telemetry without readings")
    if isinstance(timestamp, str):
        timestamp = timestamp.strip()  # sent as given otherwise: the platform parses it strictly
    if timestamp is not None:
        check_timestamp(timestamp, where)
    try:
        # What cannot be encoded cannot be sent: lone surrogates from "\ud800", NaN from 1e999.
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise InputDataError("%s: the data cannot be sent as JSON (%s)" % (where, exc)) from None
    return DataItem(data, timestamp, line_no)


def check_timestamp(value: object, where: str) -> None:
    """A payload's own timestamp: ISO 8601 date and time with a UTC offset, the same on every Python."""
    hint = "use a form such as 2025-12-09T10:30:45+00:00 or 2025-12-09T10:30:45Z"
    if not isinstance(value, str):
        raise InputDataError("%s: timestamp must be an ISO 8601 string" % where, hint=hint)
    try:
        moment = parse_iso8601(value, default_tz=None)
    except ValueError:
        raise InputDataError("%s: timestamp %r is not ISO 8601" % (where, value), hint=hint) from None
    if moment.tzinfo is None:  # also a bare date: the regex allows an offset only after a time
        raise InputDataError("%s: timestamp %r needs a time and a UTC offset" % (where, value), hint=hint)


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not valid JSON" % name)


def decode_json(text: str) -> Any:
    """json.loads without NaN/Infinity (not JSON, and the platform rejects them) or deep-nesting crashes."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # LE, BE: what PowerShell 5.1's ``>`` and Out-File write


def decode_text(data: bytes, name: str) -> str:
    """A whole file's text: UTF-8 with or without a BOM, or UTF-16 (LE or BE) with its BOM.

    Windows PowerShell 5.1 writes UTF-16 with ``>``; Notepad may add a UTF-8 BOM. Anything else
    is refused naming the encodings we read, rather than guessed.
    """
    encoding = "utf-16" if data[:2] in _UTF16_BOMS else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InputDataError("%s is not UTF-8 or UTF-16 text (%s at byte %d)" % (name, exc.reason, exc.start),
                             hint="save it as UTF-8 (PowerShell: Out-File -Encoding utf8)") from None


def utf16_aware(stream: IO) -> IO:
    """A byte stream that starts with a UTF-16 BOM, as text; any other stream as it is.

    Splitting UTF-16 bytes at b"\n" would cut every character in half, so such a stream is read
    as text. Only a stream that can peek (a file, ``sys.stdin.buffer``) is looked at: peeking
    consumes nothing.
    """
    peek = getattr(stream, "peek", None)
    if peek is None:
        return stream
    if bytes(peek(2)[:2]) in _UTF16_BOMS:
        import io

        return io.TextIOWrapper(stream, encoding="utf-16", newline=None)
    return stream


def decode_line(text: Union[str, bytes], where: str, line_no: int) -> Any:
    """One JSON Lines line as a value: UTF-8 (a BOM allowed on line 1), then JSON; errors name ``where``.

    A UTF-16 stream never gets here as bytes: ``utf16_aware`` has made it text.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputDataError("%s is not UTF-8 text (%s)" % (where, exc.reason)) from None
    try:
        return decode_json(text)
    except ValueError as exc:
        raise InputDataError("%s is not valid JSON (%s)" % (where, exc)) from None


def parse_line(text: Union[str, bytes], where: str, line_no: int) -> DataItem:
    return item_from_object(decode_line(text, where, line_no), where, line_no)


def json_object_arg(text: str, flag: str) -> Json:
    """A flag's JSON object, taken exactly as given (``--metadata``): strict JSON, an object, encodable; else 2."""
    from .errors import UsageError

    try:
        value = decode_json(text)
    except ValueError as exc:
        raise UsageError("%s is not valid JSON (%s)" % (flag, exc)) from None
    if not isinstance(value, dict):
        raise UsageError("%s must be a JSON object, like {\"site\": \"lab\"}" % flag)
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise UsageError("%s cannot be sent as JSON (%s)" % (flag, exc)) from None
    return value


def parse_data_arg(text: str) -> DataItem:
    """--data JSON: one object, checked before anything is sent."""
    return parse_line(text, "--data", 0)


def read_json_lines(stream: IO, name: str) -> Iterator[Union[DataItem, InputDataError]]:
    """Yield each line as it arrives (blank lines skipped); a bad line yields its error instead.

    Yielding the error rather than raising lets a stream go on past one garbled line while the
    caller still reports it with its line number and exits 65 at the end. A binary stream is
    decoded line by line, so one line of bad bytes does not end the stream.
    """
    return read_lines(stream, name, parse_line)


def read_lines(stream: IO, name: str, parse: Callable[[Any, str, int], T]) -> Iterator[Union[T, InputDataError]]:
    """Each non-blank line as it arrives, through ``parse(line, "NAME line N", N)``; a bad line yields its error."""
    stream = utf16_aware(stream)
    line_no = 0
    while True:
        try:
            line = stream.readline()
        except UnicodeDecodeError as exc:  # a UTF-16 stream with broken bytes: nothing after can be read
            yield InputDataError("%s line %d is not UTF-16 text (%s)" % (name, line_no + 1, exc.reason))
            return
        if not line:
            return
        line_no += 1
        if not line.strip():
            continue
        try:
            yield parse(line, "%s line %d" % (name, line_no), line_no)
        except InputDataError as exc:
            yield exc


def load_data_file(path: str) -> Tuple[List[DataItem], bool]:
    """Read a whole file: one JSON object (returns it, True) or JSON Lines (items, False).

    A regular file is checked completely before the first send, so a bad line sends nothing.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise InputDataError("data file %s does not exist" % path) from None
    except OSError as exc:
        raise InputDataError("data file %s cannot be read (%s)" % (path, exc)) from None
    text = decode_text(data, "data file %s" % path)
    try:
        whole = decode_json(text)
    except ValueError:
        whole = None
    if whole is not None:
        return [item_from_object(whole, path, 1)], True
    items: List[DataItem] = []
    # split on "\n" only: JSON strings may hold U+2028 or U+0085, which splitlines() would cut at
    for no, line in enumerate(text.split("\n"), 1):
        if line.strip():
            items.append(parse_line(line, "%s line %d" % (path, no), no))
    if not items:
        raise InputDataError("data file %s holds no JSON object" % path)
    return items, False
