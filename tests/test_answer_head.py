"""An answer's head read by iotpost.answer_head is what http.client makes of it, on the running Python.

Usage: python -m unittest tests.test_answer_head

answer_head splits plain header lines itself instead of running email's parser; these cases hold
the message it makes to the stdlib's, attribute for attribute, for seeded random heads mixing
plain lines with every kind the stdlib must still be left to read, and check that http.client's
limits and framing still apply to answers read through it.
"""

from __future__ import annotations

import http.client
import io
import random
import socket
import threading
import unittest

from iotpost import answer_head
from iotpost.answer_head import AnswerResponse, parse_headers, plain_message

PLAIN = [
    b"Server: nginx/1.22.1\r\n",
    b"Content-Type: application/json\r\n",
    b"content-length: 42\r\n",
    b"Connection: keep-alive\r\n",
    b"X-Empty:\r\n",
    b"X-Blank:   \r\n",
    b"X-Spaced:  \t v  \t\r\n",
    b"X-Colons: a:b: c\r\n",
    b"X-Tab:\tvalue\twith\ttabs\r\n",
    b"X-Lf-Only: yes\n",
    b"Set-Cookie: a=1; Path=/\r\n",
    b"Set-Cookie: b=2\r\n",
    b"!#$%&'*+-.^_`|~0-9;<=>?@[]{}: symbols\r\n",
    b"Content-Type: text/plain; charset=utf-8\r\n",
]
# Lines the email parser must still read (folded, 8-bit, bare CR, controls, no name, odd names...).
UNUSUAL = [
    b"X-Folded: one\r\n two\r\n",
    b" two\r\n",
    b"\tthree\r\n",
    b"X-Latin: \xe9\xff\r\n",
    b"X-Utf8: \xe0\xb8\x97\xe0\xb8\x94\r\n",
    b"X-Cr: a\rX-Hidden: b\r\n",
    b"X-Cr-End: a\r\r\n",
    b"X-Cr\r: in the name, LF end\n",
    b"X-Ctl: a\x00b\x0b\x0c\x1c\x85c\r\n",
    b"X-Del: a\x7fb\r\n",
    b"No colon here\r\n",
    b": no name\r\n",
    b"From someone@example.com Sat Jan 1 00:00:00 2026\r\n",
    b"Name With Space: v\r\n",
    b"Name : v\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"content-type: MESSAGE/delivery-status\r\n",
    b"Content-Type: Multipart/Alternative\r\n",
]


def _stock(head: bytes):
    return http.client.parse_headers(io.BytesIO(head))


def _ours(head: bytes):
    return parse_headers(io.BytesIO(head))


def _shape(message) -> dict:
    """A message's attributes, comparable: defects by kind (instances equal only themselves), parts alike."""
    shape = dict(vars(message))
    shape["defects"] = [type(d) for d in shape["defects"]]
    if isinstance(shape["_payload"], list):
        shape["_payload"] = [_shape(part) for part in shape["_payload"]]
    return shape


class SameMessageTest(unittest.TestCase):
    def assertSameMessage(self, head: bytes) -> None:
        stock, ours = _stock(head), _ours(head)
        self.assertIs(type(ours), type(stock))
        self.assertEqual(_shape(ours), _shape(stock), head)
        self.assertEqual(ours.items(), stock.items(), head)

    def test_each_plain_line_is_split_here_as_the_stdlib_splits_it(self):
        for line in PLAIN:
            with self.subTest(line=line):
                self.assertIsNotNone(plain_message([line, b"\r\n"]), "a plain line must not need email's parser")
                self.assertSameMessage(line + b"\r\n")

    def test_each_unusual_line_is_left_to_the_stdlib(self):
        for line in UNUSUAL:
            with self.subTest(line=line):
                self.assertIsNone(plain_message([b"Server: x\r\n", line, b"\r\n"]))
                self.assertSameMessage(b"Server: x\r\n" + line + b"\r\n")

    def test_seeded_random_heads_make_the_stdlibs_message(self):
        rng = random.Random(12)
        plain_seen = 0
        for _ in range(3000):
            pool = PLAIN if rng.random() < 0.5 else PLAIN + UNUSUAL
            lines = [rng.choice(pool) for _ in range(rng.randrange(0, 12))]
            end = rng.choice([b"\r\n", b"\r\n", b"\n", b""])
            head = b"".join(lines) + end
            plain_seen += plain_message(lines + [end]) is not None
            self.assertSameMessage(head)
        self.assertGreater(plain_seen, 1000)  # the shortcut was taken, not only the stdlib's path

    def test_an_empty_head_and_one_cut_at_eof(self):
        self.assertSameMessage(b"\r\n")
        self.assertSameMessage(b"\n")
        self.assertSameMessage(b"Server: x\r\n")  # EOF before the blank line
        self.assertIsNone(plain_message([b"Server: x\r\n", b""]))

    def test_the_message_class_asked_for_is_made(self):
        class Mine(http.client.HTTPMessage):
            pass

        self.assertIs(type(parse_headers(io.BytesIO(b"A: b\r\n\r\n"), Mine)), Mine)
        self.assertIs(type(parse_headers(io.BytesIO(b"A: \xe9\r\n\r\n"), Mine)), Mine)


def _send_and_close(sock: socket.socket, raw: bytes) -> None:
    try:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the response stopped reading at one of http.client's limits and closed its end


def _answer(raw: bytes, method: str = "POST") -> AnswerResponse:
    """An AnswerResponse that has read ``raw`` from a real socket, sent while it reads.

    Sent first, a head longer than the socket's buffer (8 KiB on macOS, which a socketpair's sending
    end is given here too) would block the test forever.
    """
    ours, theirs = socket.socketpair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    theirs.settimeout(10)  # a send left waiting ends, and the test with it
    sender = threading.Thread(target=_send_and_close, args=(theirs, raw))
    sender.start()
    response = AnswerResponse(ours, method=method)
    try:
        response.begin()
    except BaseException:
        response.close()  # its file's hold on the socket too, so the sender sees the close
        raise
    finally:
        ours.close()  # a response that read its head keeps the socket through its own file
        sender.join()
        theirs.close()
    return response


class HttpClientStillRulesTest(unittest.TestCase):
    def test_begin_is_http_clients_own_code_with_this_parse_headers(self):
        self.assertIs(AnswerResponse.begin.__code__, http.client.HTTPResponse.begin.__code__)
        self.assertIs(AnswerResponse.begin.__globals__["parse_headers"], answer_head.parse_headers)

    def test_a_plain_answer_reads_as_http_clients(self):
        raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        response = _answer(raw)
        self.assertEqual((response.status, response.reason, response.length, response.will_close),
                         (201, "Created", 2, False))
        self.assertEqual(response.getheader("content-type"), "application/json")
        self.assertEqual(response.read(), b"{}")

    def test_chunked_and_closing_answers_are_framed_by_http_client(self):
        chunked = _answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        self.assertTrue(chunked.chunked)
        self.assertEqual(chunked.read(), b"ok")
        old = _answer(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")
        self.assertTrue(old.will_close)
        closing = _answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody")
        self.assertTrue(closing.will_close)
        self.assertEqual(closing.read(), b"body")

    def test_http_clients_limits_still_apply(self):
        many = b"HTTP/1.1 200 OK\r\n" + b"X-N: 1\r\n" * 101 + b"\r\n"
        with self.assertRaises(http.client.HTTPException):
            _answer(many)
        long_line = b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n"
        with self.assertRaises(http.client.LineTooLong):
            _answer(long_line)

    def test_http_clients_limits_are_read_live_not_from_begins_copy_of_its_globals(self):
        # begin runs over a copy of http.client's globals taken at import; a program that raises (or
        # lowers) http.client._MAXHEADERS afterwards must still get its limit, as with the stock class.
        from unittest import mock

        with mock.patch.object(http.client, "_MAXHEADERS", 3):
            with self.assertRaises(http.client.HTTPException):
                _answer(b"HTTP/1.1 200 OK\r\n" + b"X-N: 1\r\n" * 3 + b"\r\n")
            skipped = b"HTTP/1.1 100 Continue\r\n" + b"X-N: 1\r\n" * 3 + b"\r\nHTTP/1.1 200 OK\r\n\r\n"
            with self.assertRaises(http.client.HTTPException):  # a 100's skipped head too
                _answer(skipped)

    def test_a_100_continue_is_skipped_as_http_client_skips_it(self):
        response = _answer(b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.getheader("X-A"))


if __name__ == "__main__":
    unittest.main()
