"""The twin's own reading of a request head agrees with http.server's wherever it takes the head itself.

Usage: python -m unittest tests.test_receiver_head_parse

handler.py splits header lines and takes the usual request line without http.server (its email
parser is a quarter of a request's CPU); these cases hold it to what the stdlib makes of the same
bytes on the running Python, and check that anything unusual is still left to the stdlib.
"""

from __future__ import annotations

import http.client
import http.server
import io
import unittest

from iotpost.receiver.handler import TwinRequestHandler, _split_fields

HEAD_LINES = [
    b"Host: localhost\r\n",
    b"X-Empty:\r\n",
    b"X-Spaced:  \t v  \r\n",
    b"X-Latin: \xe9\xff\n",
    b"X-Colons: a:b:c\r\n",
    b"X-Odd: v \x00 \x0b\x0c\x1c\x85 w\r\n",
    b"x-api-key: tesa_ak_0123\r\n",
    b"X-API-KEY: again\r\n",
]


def _stdlib_items(lines):
    return list(http.client.parse_headers(io.BytesIO(b"".join(lines) + b"\r\n")).items())


def _handler(raw_requestline: bytes) -> TwinRequestHandler:
    handler = TwinRequestHandler.__new__(TwinRequestHandler)  # no socket: only the parsing is used
    handler.raw_requestline = raw_requestline
    handler.rfile, handler.wfile = io.BytesIO(b"\r\n"), io.BytesIO()
    return handler


class HeaderSplitTest(unittest.TestCase):
    def test_names_and_values_are_the_stdlibs(self):
        self.assertEqual(_split_fields(HEAD_LINES), _stdlib_items(HEAD_LINES))

    def test_each_line_alone_is_the_stdlibs(self):
        for line in HEAD_LINES:
            with self.subTest(line=line):
                self.assertEqual(_split_fields([line]), _stdlib_items([line]))

    def test_a_bare_cr_is_left_to_the_stdlib(self):
        # email's parser ends a line at a lone CR too, so the second header is real to it
        lines = [b"X-Note: a\rX-Hidden: b\r\n", b"Host: x\r\n"]
        self.assertIsNone(_split_fields(lines))
        self.assertIsNone(_split_fields([b"X-Note: a\r\r\n"]))
        self.assertIn(("X-Hidden", "b"), _stdlib_items(lines))


class RequestLineTest(unittest.TestCase):
    def test_plain_lines_read_as_parse_request_reads_them(self):
        for line in [b"GET / HTTP/1.1\r\n", b"POST /api/v1/telemetry HTTP/1.1\r\n", b"GET /x?y=1 HTTP/1.0\n",
                     b"get /x HTTP/1.1\r\n", b"DELETE /a%20b HTTP/1.0\r\n", b"PATCH /a/ HTTP/1.1\r\n"]:
            with self.subTest(line=line):
                ours, theirs = _handler(line), _handler(line)
                self.assertTrue(ours._plain_request_line())
                self.assertTrue(theirs.parse_request())
                for name in ("command", "path", "request_version", "requestline", "close_connection"):
                    self.assertEqual(getattr(ours, name), getattr(theirs, name), name)

    def test_anything_else_goes_to_parse_request(self):
        for line in [b"GET //x HTTP/1.1\r\n", b"GET /x HTTP/1.1 \r\n", b"GET  /x HTTP/1.1\r\n", b"GET * HTTP/1.1\r\n",
                     b"GET / HTTP/1.2\r\n", b"GET / HTTP/2.0\r\n", b"GET /\r\n", b"GET /\xe9 HTTP/1.1\r\n",
                     b"GET / HTTP/1.1\r\r\n", b"GET\x85/ HTTP/1.1\r\n"]:
            with self.subTest(line=line):
                self.assertFalse(_handler(line)._plain_request_line())


class DateHeaderTest(unittest.TestCase):
    def test_the_cached_date_is_the_one_formatted_each_time(self):
        handler = TwinRequestHandler.__new__(TwinRequestHandler)
        stamps = [1.7e9 + i * 0.0137 for i in range(300)] + [1.7e9 + 5.9999996, 1.7e9 + 5.9999999, 1.7e9 + 7.9995]
        for stamp in sorted(stamps) + stamps[::-1]:
            self.assertEqual(handler.date_time_string(stamp), http.server.BaseHTTPRequestHandler.date_time_string(
                handler, stamp), stamp)


if __name__ == "__main__":
    unittest.main()
