"""--data / --data-file input: objects, payload-shaped lines, streaming JSON Lines, errors by line."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import threading
import unittest
from pathlib import Path
from typing import List

from iotpost.data_input import (
    DataItem,
    item_from_object,
    load_data_file,
    parse_data_arg,
    parse_line,
    read_json_lines,
)
from iotpost.errors import InputDataError
from iotpost.exitcodes import ExitStatus

TS = "2025-12-09T10:30:45+00:00"


class ParseObjectTest(unittest.TestCase):
    def test_plain_object_is_data(self) -> None:
        item = parse_data_arg('{"temperature": 21.5, "unit": "°C"}')
        self.assertEqual(item, DataItem({"temperature": 21.5, "unit": "°C"}, None, 0))

    def test_payload_shaped_keeps_timestamp(self) -> None:
        item = parse_line('{"device_id": "x", "timestamp": "%s", "data": {"t": 1}}' % TS, "f line 3", 3)
        self.assertEqual(item.data, {"t": 1})
        self.assertEqual(item.timestamp, TS)
        self.assertEqual(item.line_no, 3)

    def test_payload_shaped_without_timestamp(self) -> None:
        item = parse_line('{"data": {"t": 1}}', "x", 1)
        self.assertEqual((item.data, item.timestamp), ({"t": 1}, None))

    def test_top_level_timestamp_moved_out_of_data(self) -> None:
        item = parse_line('{"t": 1, "timestamp": "2025-12-09T10:30:45Z"}', "x", 1)
        self.assertEqual(item.data, {"t": 1})
        self.assertNotIn("timestamp", item.data)
        self.assertEqual(item.timestamp, "2025-12-09T10:30:45Z")

    def test_caller_object_not_mutated(self) -> None:
        obj = {"t": 1, "timestamp": TS}
        item_from_object(obj, "x")
        self.assertEqual(obj, {"t": 1, "timestamp": TS})

    def test_non_dict_data_field_is_just_a_reading(self) -> None:
        item = parse_line('{"data": 5, "other": 1}', "x", 1)
        self.assertEqual(item.data, {"data": 5, "other": 1})

    def assertInputError(self, text: str, line_no: int = 7) -> InputDataError:
        where = "readings.jsonl line %d" % line_no
        with self.assertRaises(InputDataError) as cm:
            parse_line(text, where, line_no)
        self.assertEqual(cm.exception.exit_code, ExitStatus.DATA)
        self.assertIn(where, str(cm.exception))
        return cm.exception

    def test_bad_timestamp(self) -> None:
        for text in ('{"t": 1, "timestamp": "yesterday"}', '{"t": 1, "timestamp": 1765276245}',
                     '{"data": {"t": 1}, "timestamp": "2025-13-45"}', '{"data": {"t": 1}, "timestamp": []}'):
            with self.subTest(text=text):
                self.assertIn("timestamp", str(self.assertInputError(text)))

    def test_empty_object(self) -> None:
        for text in ("{}", '{"timestamp": "%s"}' % TS, '{"data": {}}'):
            with self.subTest(text=text):
                self.assertIn("empty", str(self.assertInputError(text)))

    def test_non_object(self) -> None:
        for text, kind in (("[1, 2]", "list"), ("3", "int"), ('"x"', "str"), ("null", "NoneType")):
            with self.subTest(text=text):
                exc = self.assertInputError(text)
                self.assertIn(kind, str(exc))

    def test_invalid_json(self) -> None:
        for text in ("{", "{'t': 1}", "t=1", ""):
            with self.subTest(text=text):
                self.assertIn("not valid JSON", str(self.assertInputError(text)))

    def test_data_arg_errors_name_the_flag(self) -> None:
        with self.assertRaises(InputDataError) as cm:
            parse_data_arg("[]")
        self.assertIn("--data", str(cm.exception))


class RecordingStream:
    """A text stream that counts how many lines have been read from it."""

    def __init__(self, lines: List[str]) -> None:
        self._lines = list(lines)
        self.reads = 0

    def readline(self) -> str:
        if self.reads >= len(self._lines):
            self.reads += 1
            return ""
        line = self._lines[self.reads]
        self.reads += 1
        return line

    def read(self, *args: object) -> str:  # pragma: no cover - only a buggy reader calls this
        raise AssertionError("read_json_lines must not read the whole stream")

    def __iter__(self):  # pragma: no cover - iterating a pipe may read ahead in blocks
        raise AssertionError("read_json_lines must read line by line")


class ReadJsonLinesTest(unittest.TestCase):
    def test_streams_one_line_at_a_time(self) -> None:
        stream = RecordingStream(['{"n": 1}\n', '{"n": 2}\n', '{"n": 3}\n'])
        items = read_json_lines(stream, "<stdin>")  # type: ignore[arg-type]
        self.assertEqual(stream.reads, 0)  # nothing read before asked
        first = next(items)
        self.assertEqual(first, DataItem({"n": 1}, None, 1))
        self.assertEqual(stream.reads, 1)
        second = next(items)
        self.assertEqual(second.data, {"n": 2})
        self.assertEqual(stream.reads, 2)
        self.assertEqual([i.data for i in items], [{"n": 3}])

    def test_real_pipe_yields_before_writer_closes(self) -> None:
        rfd, wfd = os.pipe()
        reader = os.fdopen(rfd, "r", encoding="utf-8")
        writer = os.fdopen(wfd, "w", encoding="utf-8")
        self.addCleanup(reader.close)
        self.addCleanup(lambda: writer.closed or writer.close())
        writer.write('{"n": 1}\n')
        writer.flush()
        got: List[object] = []
        items = read_json_lines(reader, "<stdin>")
        thread = threading.Thread(target=lambda: got.append(next(items)), daemon=True)
        thread.start()
        thread.join(2.0)
        finished = not thread.is_alive()
        writer.close()  # let a blocked (buggy) reader finish
        thread.join(2.0)
        self.assertTrue(finished, "the first line was not yielded until the writer closed the pipe")
        self.assertEqual(got, [DataItem({"n": 1}, None, 1)])

    def test_bad_line_yields_error_then_continues(self) -> None:
        text = '{"n": 1}\n\n{broken\n   \n[1]\n{"n": 2, "timestamp": "%s"}\n' % TS
        out = list(read_json_lines(io.StringIO(text), "feed.jsonl"))
        self.assertEqual(len(out), 4)
        self.assertEqual(out[0], DataItem({"n": 1}, None, 1))
        self.assertIsInstance(out[1], InputDataError)
        self.assertIn("feed.jsonl line 3", str(out[1]))
        self.assertIsInstance(out[2], InputDataError)
        self.assertIn("feed.jsonl line 5", str(out[2]))
        self.assertEqual(out[3], DataItem({"n": 2}, TS, 6))  # blank lines still count

    def test_empty_stream(self) -> None:
        self.assertEqual(list(read_json_lines(io.StringIO(""), "x")), [])
        self.assertEqual(list(read_json_lines(io.StringIO("\n  \n"), "x")), [])

    def test_last_line_without_newline(self) -> None:
        out = list(read_json_lines(io.StringIO('{"a": 1}\r\n{"b": 2}'), "x"))
        self.assertEqual([i.data for i in out], [{"a": 1}, {"b": 2}])  # type: ignore[union-attr]


class LoadDataFileTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="iotpost-data-"))
        self.addCleanup(shutil.rmtree, str(self.tmp), True)

    def write(self, text: str, name: str = "data.json") -> str:
        path = self.tmp / name
        path.write_bytes(text.encode("utf-8"))
        return str(path)

    def test_single_object(self) -> None:
        path = self.write('{\n  "temperature": 21.5,\n  "timestamp": "%s"\n}\n' % TS)
        items, single = load_data_file(path)
        self.assertTrue(single)
        self.assertEqual(items, [DataItem({"temperature": 21.5}, TS, 1)])

    def test_single_object_with_bom(self) -> None:
        path = self.tmp / "bom.json"
        path.write_bytes(b'\xef\xbb\xbf{"t": 1}')
        self.assertEqual(load_data_file(str(path)), ([DataItem({"t": 1}, None, 1)], True))

    def test_json_lines(self) -> None:
        path = self.write('{"n": 1}\n\n{"data": {"n": 2}, "timestamp": "%s"}\n{"n": 3}\n' % TS, "d.jsonl")
        items, single = load_data_file(path)
        self.assertFalse(single)
        self.assertEqual(items, [DataItem({"n": 1}, None, 1), DataItem({"n": 2}, TS, 3),
                                 DataItem({"n": 3}, None, 4)])

    def test_one_bad_line_raises_and_returns_nothing(self) -> None:
        path = self.write('{"n": 1}\n{"n": 2}\n{"n": oops}\n{"n": 4}\n', "d.jsonl")
        with self.assertRaises(InputDataError) as cm:
            load_data_file(path)
        self.assertIn("line 3", str(cm.exception))
        self.assertIn(path, str(cm.exception))

    def test_single_non_object_raises(self) -> None:
        with self.assertRaises(InputDataError):
            load_data_file(self.write("[1, 2, 3]"))

    def test_empty_file(self) -> None:
        with self.assertRaises(InputDataError) as cm:
            load_data_file(self.write("\n \n"))
        self.assertIn("no JSON object", str(cm.exception))

    def test_missing_file(self) -> None:
        missing = str(self.tmp / "absent.jsonl")
        with self.assertRaises(InputDataError) as cm:
            load_data_file(missing)
        self.assertEqual(cm.exception.exit_code, ExitStatus.DATA)
        self.assertIn("absent.jsonl", str(cm.exception))
        self.assertIn("does not exist", str(cm.exception))

    def test_not_utf8(self) -> None:
        path = self.tmp / "latin1.json"
        path.write_bytes(b'{"unit": "\xb0C"}')
        with self.assertRaises(InputDataError):
            load_data_file(str(path))

    def test_json_lines_with_unicode_line_separator_in_a_string(self) -> None:
        # U+2028 and U+0085 are legal unescaped inside a JSON string; str.splitlines() would cut
        # there, so a file must split on newlines only, exactly as a stream does.
        text = '{"note": "a\u2028b"}\n{"note": "c\u0085d"}\r\n{"note": "e\u2029f"}\n'
        expected = [{"note": "a\u2028b"}, {"note": "c\u0085d"}]
        streamed = list(read_json_lines(io.StringIO(text, newline=None), "x"))
        self.assertEqual([i.data for i in streamed[:2]], expected)  # type: ignore[union-attr]
        items, single = load_data_file(self.write(text, "u.jsonl"))
        self.assertFalse(single)
        self.assertEqual([i.data for i in items[:2]], expected)
        self.assertEqual([i.line_no for i in items], [1, 2, 3])


if __name__ == "__main__":
    unittest.main()


class ReviewFindingsTest(unittest.TestCase):
    """Inputs a reviewer found that used to crash (exit 1) or pass on one Python and fail on another."""

    def test_unencodable_and_non_json_values_are_input_errors(self) -> None:
        for text in ('{"a": "\\ud800"}', '{"a": NaN}', '{"a": 1e999}', '{"a": Infinity}'):
            with self.subTest(text=text):
                with self.assertRaises(InputDataError):
                    parse_data_arg(text)

    def test_deep_nesting_is_an_input_error(self) -> None:
        with self.assertRaises(InputDataError):
            parse_data_arg("[" * 100000 + "]" * 100000)

    def test_timestamps_need_time_and_offset_on_every_python(self) -> None:
        good = ("2025-12-09T10:30:45Z", "2025-12-09T10:30:45.12Z", "2025-12-09 10:30:45+07:00",
                " 2025-12-09T10:30:45+00:00 ")
        for ts in good:
            with self.subTest(ts=ts):
                item = parse_data_arg(json.dumps({"a": 1, "timestamp": ts}))
                self.assertEqual(item.timestamp, ts.strip())
        for ts in ("2025-01-01", "2025-12-09T10:30:45", "20251209T103045Z", "2025-12-09T10:30:45+0"):
            with self.subTest(ts=ts):
                with self.assertRaises(InputDataError):
                    parse_data_arg(json.dumps({"a": 1, "timestamp": ts}))

    def test_a_line_of_bad_bytes_does_not_end_a_binary_stream(self) -> None:
        stream = io.BytesIO(b'{"n": 1}\n{"n": "\xe9"}\n{"n": 3}\n')
        out = list(read_json_lines(stream, "<stdin>"))
        self.assertEqual([o.data for o in out if isinstance(o, DataItem)], [{"n": 1}, {"n": 3}])
        self.assertIn("line 2", [o for o in out if isinstance(o, InputDataError)][0].message)
