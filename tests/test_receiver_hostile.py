"""The twin under hostile input, over raw sockets: framing, limits, slow clients, junk, a seeded fuzz.

Usage: python -m unittest tests.test_receiver_hostile

Each case checks what a client gets (a 4xx, a 501/505, or a closed connection: never a 500 or a
traceback) and that afterwards the twin still stores the next good request and has lost no row.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest
from typing import List, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from iotpost.receiver.api_request import MAX_JSON_DEPTH
from iotpost.receiver.handler import MAX_HEAD_BYTES, MAX_HEADER_LINE, MAX_HEADERS, MAX_REQUEST_LINE
from tests.twin_support import (
    PROJECT_ROOT,
    OTHER_API_KEY,
    OTHER_DEVICE_ID,
    TEST_API_KEY,
    TEST_DEVICE_ID,
    FaultPlan,
    TwinTestCase,
    client_context,
    raw_exchange,
    request_json,
    temp_dir,
    wait_until,
)

STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")
GOOD_BODY = json.dumps({"device_id": TEST_DEVICE_ID, "data": {"spo2": 98}}).encode()


def post_head(length: Optional[int] = None, *extra: str, target: str = "/api/v1/telemetry",
              version: str = "HTTP/1.1", close: bool = True) -> bytes:
    """A telemetry POST's head with the test key, ``Connection: close`` and any ``extra`` header lines."""
    lines = ["POST %s %s" % (target, version), "Host: localhost", "Content-Type: application/json",
             "X-API-KEY: " + TEST_API_KEY] + (["Connection: close"] if close else [])
    if length is not None:
        lines.append("Content-Length: %d" % length)
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def get(target: str, *extra: str, method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    lines = ["%s %s %s" % (method, target, version), "Host: localhost", "Connection: close"] + list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def statuses(raw: bytes) -> List[int]:
    """Every final or interim status line in a raw response stream."""
    return [int(code) for code in STATUS.findall(raw)]


def open_socket(url: str, *, tls: bool, timeout: float = 5.0) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    if tls:
        sock = client_context().wrap_socket(sock, server_hostname=parts.hostname)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class Case(NamedTuple):
    name: str
    request: bytes
    status: int  # the one answer expected; the connection must then be closed by the twin
    stores: int = 0  # rows this request itself stores


DEEP = b"[" * 100_000 + b"]" * 100_000
OVER_DEPTH = b'{"device_id": "%s", "data": {"x": %s}}' % (
    TEST_DEVICE_ID.encode(), b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
SMUGGLED = b"0\r\n\r\nPOST /api/v1/telemetry HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"

CASES = [
    # Chunked bodies are parsed: extensions ignored, trailers read and dropped.
    Case("chunked_body_stored", post_head(None, "Transfer-Encoding: chunked")
         + b"5;name=value\r\n" + GOOD_BODY[:5] + b"\r\n" + b"%x\r\n" % (len(GOOD_BODY) - 5) + GOOD_BODY[5:]
         + b"\r\n0\r\nX-Trailer: dropped\r\n\r\n", 200, stores=1),
    Case("chunked_uppercase_coding", post_head(None, "Transfer-Encoding: Chunked") + chunked(GOOD_BODY),
         200, stores=1),
    Case("chunked_over_max_body", post_head(None, "Transfer-Encoding: chunked") + b"200000\r\n" + b"x" * 100,
         413),
    Case("chunked_bad_size", post_head(None, "Transfer-Encoding: chunked") + b"zz\r\nxx\r\n0\r\n\r\n", 400),
    Case("chunked_negative_size", post_head(None, "Transfer-Encoding: chunked") + b"-5\r\nxx\r\n0\r\n\r\n", 400),
    Case("chunked_size_overflow", post_head(None, "Transfer-Encoding: chunked")
         + b"1" * 40 + b"\r\nxx\r\n0\r\n\r\n", 400),
    Case("chunked_data_longer_than_size", post_head(None, "Transfer-Encoding: chunked")
         + b"2\r\nabcdef\r\n0\r\n\r\n", 400),
    # Ambiguous framing is refused, and leftovers are never a second request.
    Case("two_different_content_lengths", post_head(None, "Content-Length: %d" % len(GOOD_BODY),
                                                    "Content-Length: 5") + GOOD_BODY, 400),
    Case("two_equal_content_lengths", post_head(len(GOOD_BODY), "Content-Length: %d" % len(GOOD_BODY))
         + GOOD_BODY, 400),
    Case("content_length_list", post_head(None, "Content-Length: 5, 5") + b"hello", 400),
    # Content-Length 5 covers only "0\r\n\r\n": a server that let it win would answer the POST after it too.
    Case("content_length_with_chunked", post_head(5, "Transfer-Encoding: chunked", close=False) + SMUGGLED, 400),
    Case("chunked_with_content_length_after", post_head(None, "Transfer-Encoding: chunked",
                                                        "Content-Length: 3", close=False) + SMUGGLED, 400),
    Case("transfer_encoding_gzip", post_head(None, "Transfer-Encoding: gzip") + b"x", 501),
    Case("transfer_encoding_gzip_chunked", post_head(None, "Transfer-Encoding: gzip, chunked") + chunked(b"x"),
         501),
    Case("transfer_encoding_twice", post_head(None, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked")
         + chunked(GOOD_BODY), 501),
    Case("transfer_encoding_in_http_1_0", post_head(None, "Transfer-Encoding: chunked", version="HTTP/1.0")
         + chunked(GOOD_BODY), 400),
    Case("content_length_not_a_number", post_head(None, "Content-Length: abc") + GOOD_BODY, 400),
    Case("content_length_negative", post_head(None, "Content-Length: -1") + GOOD_BODY, 400),
    Case("content_length_5000_digits", post_head(None, "Content-Length: " + "9" * 5000), 413),
    Case("content_length_over_max_body", post_head(2_000_000) + b"x" * 1000, 413),
    Case("no_length", post_head(None), 400),  # no body (RFC 9112 6.3): TESAIoT's invalid-JSON answer
    # Head limits.
    Case("request_line_too_long", get("/" + "a" * MAX_REQUEST_LINE), 414),
    Case("header_line_too_long", get("/health", "X-Big: " + "b" * MAX_HEADER_LINE), 431),
    Case("too_many_headers", get("/health", *["X-H%d: v" % i for i in range(MAX_HEADERS + 1)]), 431),
    Case("head_too_large", get("/health", *["X-H%d: %s" % (i, "v" * 1000) for i in range(MAX_HEAD_BYTES // 1000 + 2)]),
         431),
    Case("obsolete_line_folding", get("/health", "X-A: 1", " folded: 2"), 400),
    Case("header_without_colon", get("/health", "no colon here"), 400),
    Case("space_before_colon", get("/health", "Content-Length : 5"), 400),
    # Bodies the APIs must refuse without a traceback.
    Case("json_100000_deep", post_head(len(DEEP)) + DEEP, 400),
    Case("json_over_depth_limit", post_head(len(OVER_DEPTH)) + OVER_DEPTH, 400),
    Case("tlink_json_100000_deep", post_head(len(DEEP), target="/api/webhooks/tlink") + DEEP, 400),
    Case("malformed_utf8", post_head(len(b'{"device_id": "\xff\xfe"}')) + b'{"device_id": "\xff\xfe"}', 400),
    Case("wrong_content_type", get("/api/v1/telemetry", "Content-Type: text/plain", "X-API-KEY: " + TEST_API_KEY,
                                   "Content-Length: %d" % len(GOOD_BODY), method="POST") + GOOD_BODY, 415),
    Case("missing_content_type", get("/api/v1/telemetry", "X-API-KEY: " + TEST_API_KEY,
                                     "Content-Length: %d" % len(GOOD_BODY), method="POST") + GOOD_BODY, 415),
    # Path tricks.
    Case("dot_segments", get("/api/v1/../health"), 404),
    Case("encoded_dot_segments", get("/api/v1/telemetry/%2e%2e/latest", "X-API-KEY: " + TEST_API_KEY), 404),
    Case("encoded_slash", get("/api/v1/telemetry/..%2f..%2fhealth/latest", "X-API-KEY: " + TEST_API_KEY), 404),
    Case("encoded_nul", get("/api/v1/telemetry/%s%%00/latest" % TEST_DEVICE_ID, "X-API-KEY: " + TEST_API_KEY), 404),
    Case("raw_control_character", get("/hea\x01lth"), 400),
    Case("non_ascii_target", get("/health\xe9"), 400),
    Case("long_path_under_the_limit", get("/" + "a" * (MAX_REQUEST_LINE - 100)), 404),
    # Method and version confusion.
    Case("unknown_method", get("/health", method="FROB"), 501),
    Case("lower_case_method", get("/health", method="get"), 501),
    Case("trace", get("/health", method="TRACE"), 501),
    Case("connect", get("localhost:443", method="CONNECT"), 501),
    Case("known_path_wrong_method", get("/health", method="POST", version="HTTP/1.1")[:-2]
         + b"Content-Length: 0\r\n\r\n", 405),
    Case("http_2", get("/health", version="HTTP/2.0"), 505),
    Case("bad_version", get("/health", version="HTTP/x.y"), 400),
    Case("four_words", get("/health", version="HTTP/1.1 extra"), 400),
]


class HostileInputTable(TwinTestCase):
    """One row per hostile request, over real TLS; after each the twin serves and has every row."""

    def setUp(self):
        self.twin = self.start_twin(handler_timeout=3.0)

    def good_post_still_stored(self) -> None:
        """The next good request (another device, its own connection) is stored; no row was lost."""
        before = self.twin.store.count_telemetry()
        mine = self.twin.store.count_telemetry(OTHER_DEVICE_ID)
        conn = self.connect(self.twin)
        status, answer, _ = request_json(conn, "POST", "/api/v1/telemetry",
                                         {"device_id": OTHER_DEVICE_ID, "data": {"n": mine}},
                                         {"X-API-KEY": OTHER_API_KEY})
        conn.close()
        self.assertEqual(status, 200, answer)
        self.assertEqual(self.twin.store.count_telemetry(OTHER_DEVICE_ID), mine + 1)
        self.assertEqual(self.twin.store.count_telemetry(), before + 1)

    def test_each_case(self):
        for case in CASES:
            with self.subTest(case.name):
                stored = self.twin.store.count_telemetry(TEST_DEVICE_ID)
                raw = raw_exchange(self.twin, case.request)
                self.assertEqual(statuses(raw), [case.status], raw[:300])  # one answer, nothing smuggled
                head, _, body = raw.partition(b"\r\n\r\n")
                self.assertIn(b"Content-Type: application/json", head)
                self.assertIn("error" if case.status >= 400 else "success", json.loads(body.decode()))
                self.assertNotIn(b"Traceback", raw)
                self.assertEqual(self.twin.store.count_telemetry(TEST_DEVICE_ID), stored + case.stores)
                self.good_post_still_stored()

    def test_smuggled_request_is_never_seen(self):
        raw_exchange(self.twin, post_head(5, "Transfer-Encoding: chunked", close=False) + SMUGGLED)
        self.assertEqual([r.method for r in self.twin.requests], ["POST"])  # the refused one only

    def test_injected_error_shows_no_traceback(self):
        self.twin.faults = FaultPlan.script(["error"])
        log = io.StringIO()
        self.twin.log_stream = log
        raw = raw_exchange(self.twin, post_head(len(GOOD_BODY)) + GOOD_BODY)
        self.assertEqual(statuses(raw), [500])
        self.assertNotIn(b"Traceback", raw)
        self.assertNotIn(b"InjectedFault", raw)
        self.assertIn("Traceback", log.getvalue())  # the operator's log has it
        self.good_post_still_stored()

    def test_expect_100_continue_over_max_body_is_413_without_continue(self):
        sock = open_socket(self.twin.url, tls=True)
        self.addCleanup(sock.close)
        sock.sendall(post_head(2_000_000, "Expect: 100-continue"))  # and no body: we wait as curl does
        raw = read_to_close(sock)
        self.assertEqual(statuses(raw), [413], raw)
        self.assertEqual(self.twin.store.count_telemetry(), 0)
        self.good_post_still_stored()

    def test_expect_100_continue_within_limits_gets_continue_then_200(self):
        sock = open_socket(self.twin.url, tls=True)
        self.addCleanup(sock.close)
        sock.sendall(post_head(len(GOOD_BODY), "Expect: 100-continue"))
        interim = sock.recv(65536)
        self.assertEqual(statuses(interim), [100], interim)
        sock.sendall(GOOD_BODY)
        self.assertEqual(statuses(read_to_close(sock)), [200])
        self.assertEqual(self.twin.store.count_telemetry(TEST_DEVICE_ID), 1)

    def test_http_1_0_keep_alive_is_said_aloud_and_reused(self):
        sock = open_socket(self.twin.url, tls=True)
        self.addCleanup(sock.close)
        request = b"GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
        sock.sendall(request)
        first = b""
        while not first.endswith(b"}"):
            chunk = sock.recv(65536)
            self.assertTrue(chunk, "closed after the first answer")
            first += chunk
        self.assertIn(b"\r\nConnection: keep-alive\r\n", first)
        self.assertIn(b"\r\nContent-Length: ", first)
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")  # no keep-alive asked: answered, then closed
        second = read_to_close(sock)
        self.assertEqual(statuses(second), [200])
        self.assertNotIn(b"keep-alive", second)
        self.assertEqual(self.twin.connections_accepted, 1)

    def test_blank_lines_before_a_request_are_skipped(self):
        raw = raw_exchange(self.twin, b"\r\n\r\n" + get("/health"))
        self.assertEqual(statuses(raw), [200])


class SlowAndTruncatedClients(TwinTestCase):
    """Heads that never end, end early or come a byte at a time; too many connections."""

    def test_a_byte_at_a_time_is_cut_at_the_head_deadline(self):
        log = io.StringIO()
        twin = self.start_twin(head_timeout=0.5, handler_timeout=5.0, log_stream=log)
        sock = open_socket(twin.url, tls=True)
        self.addCleanup(sock.close)
        head = post_head(len(GOOD_BODY)) * 4  # far more bytes than fit in the deadline at 20 ms each
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable and read_to_close(sock) == b"":
                closed = True
                break
        self.assertTrue(closed, "the twin never cut a client that kept sending one byte at a time")
        self.assertGreaterEqual(twin.heads_cut, 1)
        self.assertEqual(twin.requests, [])  # the cut head was not processed...
        self.assertNotIn("POST", log.getvalue())  # ...nor logged as a request

    def test_slow_bodies_are_cut_at_their_deadline_and_free_the_cap(self):
        log = io.StringIO()
        twin = self.start_twin(tls=False, head_timeout=0.5, handler_timeout=3.0, max_connections=2,
                               log_stream=log)
        heads = [post_head(len(GOOD_BODY) * 4), post_head(None, "Transfer-Encoding: chunked")]
        rest = [GOOD_BODY * 4, chunked(*[bytes([b]) for b in GOOD_BODY * 4])]
        slow = [open_socket(twin.url, tls=False) for _ in heads]
        for sock, head in zip(slow, heads):
            self.addCleanup(sock.close)
            sock.sendall(head)
        self.assertTrue(wait_until(lambda: twin.open_connections == 2))
        open_ones = list(slow)
        deadline = time.monotonic() + 8.0  # a bound on the loop (the bodies take ~14 s), not a speed requirement
        index = 0
        while open_ones and time.monotonic() < deadline:
            for sock, body in zip(slow, rest):  # a byte every 0.05 s: each read well within the idle timeout
                if sock not in open_ones:
                    continue
                readable, _, _ = select.select([sock], [], [], 0)
                try:
                    if readable and read_to_close(sock) == b"":
                        raise ConnectionResetError
                    sock.sendall(body[index:index + 1])
                except OSError:
                    open_ones.remove(sock)
            index += 1
            time.sleep(0.05)
        self.assertEqual(open_ones, [], "the twin left slow bodies connected")
        self.assertGreaterEqual(twin.heads_cut, 2)
        self.assertEqual(twin.requests, [])  # a cut body is neither recorded...
        self.assertEqual(twin.store.count_telemetry(), 0)  # ...nor stored
        self.assertNotIn("Traceback", log.getvalue())
        self.assertTrue(wait_until(lambda: twin.open_connections == 0))  # the cap's slots are free again
        raw = raw_exchange(twin, post_head(len(GOOD_BODY)) + GOOD_BODY)
        self.assertEqual(statuses(raw), [200])
        self.assertEqual(twin.store.count_telemetry(), 1)

    def test_a_body_of_one_byte_chunks_costs_no_object_per_chunk(self):
        import tracemalloc

        twin = self.start_twin(tls=False)
        body = json.dumps({"device_id": TEST_DEVICE_ID, "data": {"pad": "x" * 65536}}).encode()
        request = post_head(None, "Transfer-Encoding: chunked") + chunked(*[bytes([b]) for b in body])
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        raw = raw_exchange(twin, request, timeout=30.0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.assertEqual(statuses(raw), [200])
        self.assertEqual(twin.requests[-1].body, body)
        # A list of parts peaked near 100 bytes a chunk (6.5 MB here); one growing buffer, under 1 MB.
        self.assertLess(peak, 32 * len(body), "peak %d bytes for a %d-byte body" % (peak, len(body)))

    def test_a_handshake_that_never_finishes_is_cut(self):
        twin = self.start_twin(head_timeout=0.5, handler_timeout=5.0)
        parts = urlsplit(twin.url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=5.0)
        self.addCleanup(sock.close)
        sock.sendall(b"\x16")  # the first byte of a ClientHello, and no more
        self.assertEqual(read_to_close(sock), b"")
        self.assertEqual(twin.heads_cut, 1)

    def test_truncated_heads_are_never_processed_or_logged(self):
        log = io.StringIO()
        twin = self.start_twin(tls=False, log_stream=log)
        for partial in (b"POST /api/v1/telemetry HTTP/1.1\r\nHost: localhost\r\n",  # no blank line: never answered
                        b"POST /api/v1/telemetry HTTP/1.1\r\nContent-Type: appl",
                        b"GET /health HTTP/1.1",
                        b"GET /hea"):
            sock = open_socket(twin.url, tls=False)
            sock.sendall(partial)
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(read_to_close(sock), b"", partial)
            sock.close()
        self.assertTrue(wait_until(lambda: twin.open_connections == 0))
        self.assertEqual(twin.requests, [])
        self.assertEqual(log.getvalue(), "")

    def test_idle_connection_is_closed(self):
        twin = self.start_twin(tls=False, handler_timeout=0.2)
        sock = open_socket(twin.url, tls=False)
        self.addCleanup(sock.close)
        self.assertEqual(read_to_close(sock), b"")

    def test_connections_past_the_cap_are_closed_at_once(self):
        twin = self.start_twin(tls=False, max_connections=5)
        held = [open_socket(twin.url, tls=False) for _ in range(5)]
        for sock in held:
            self.addCleanup(sock.close)
        self.assertTrue(wait_until(lambda: twin.open_connections == 5))
        extra = open_socket(twin.url, tls=False)
        self.addCleanup(extra.close)
        self.assertEqual(read_to_close(extra), b"")  # closed, not queued until the idle timeout
        self.assertEqual(twin.connections_refused, 1)
        held.pop().close()
        self.assertTrue(wait_until(lambda: twin.open_connections == 4))
        raw = raw_exchange(twin, post_head(len(GOOD_BODY)) + GOOD_BODY)
        self.assertEqual(statuses(raw), [200])
        self.assertEqual(twin.store.count_telemetry(), 1)

    def test_200_slow_clients_do_not_stop_a_normal_client(self):
        baseline = threading.active_count()
        twin = self.start_twin(tls=False, head_timeout=2.0, handler_timeout=5.0)
        slow = [open_socket(twin.url, tls=False) for _ in range(200)]
        for sock in slow:
            self.addCleanup(sock.close)
            sock.setblocking(False)
        self.assertTrue(wait_until(lambda: twin.open_connections == 200))
        # a head that never ends: only the head deadline can close these (a finished head would be
        # answered and closed, which is not what this test is about, and would depend on machine speed)
        head = post_head(len(GOOD_BODY)).rstrip(b"\r\n") + b"\r\nX-Slow: " + b"a" * 4000
        open_ones = list(slow)
        served: List[Tuple[int, object]] = []
        deadline = time.monotonic() + 30.0  # a bound on the loop, not a speed requirement
        for index in range(len(head)):
            if not open_ones or time.monotonic() > deadline:
                break
            for sock in list(open_ones):
                try:
                    if sock.recv(1) == b"":
                        open_ones.remove(sock)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    open_ones.remove(sock)
                    continue
                try:
                    sock.send(head[index:index + 1])
                except OSError:
                    open_ones.remove(sock)
            if index == 5:  # every slow client holds a connection: a normal one is still served
                self.assertEqual(twin.open_connections, 200)
                self.assertLessEqual(threading.active_count(), baseline + 200 + 5)
                conn = self.connect(twin)
                served.append(request_json(conn, "POST", "/api/v1/telemetry",
                                           {"device_id": OTHER_DEVICE_ID, "data": {"n": 1}},
                                           {"X-API-KEY": OTHER_API_KEY})[:2])
                conn.close()
            time.sleep(0.01)
        self.assertEqual([s for s, _ in served], [200], served)
        self.assertEqual(open_ones, [], "the twin left slow clients connected")
        self.assertGreaterEqual(twin.heads_cut, 200)
        self.assertEqual([r.method for r in twin.requests], ["POST"])  # the normal client's only
        self.assertEqual(twin.store.count_telemetry(OTHER_DEVICE_ID), 1)
        # left: the watchdog and one accept loop per listening address (127.0.0.1 and ::1 by default)
        self.assertTrue(wait_until(lambda: threading.active_count() <= baseline + 1 + len(twin.addresses)))


GOOD_PARTS = ["POST", "/api/v1/telemetry", "HTTP/1.1"]
BAD_HEADERS = [" folded", "no-colon", "X-Sig : 1", "Content-Length: -3", "Content-Length: 1e3",
               "Transfer-Encoding: gzip", "Content-Length: 99999999999999999999999"]


def fuzz_request(rng: random.Random) -> bytes:
    """One request: usually a valid telemetry POST with one to three things spoiled, else anything."""
    wild = rng.random() < 0.3
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "FROB",
                         "get", "", "P\x00ST", "G\xe9T"]) if wild or rng.random() < 0.2 else GOOD_PARTS[0]
    target = rng.choice([
        "/health", "/api/v1/telemetry", "/api/webhooks/tlink", "/api/v1/telemetry/%s/latest" % TEST_DEVICE_ID,
        "/api/v1/telemetry/%s?limit=abc&start_time=-9999999d" % TEST_DEVICE_ID, "/api/devices/1/history?limit=-1",
        "/api/users/1/devices", "/..", "/api/v1/telemetry/..%2f..%2f", "/%00", "*", "http://x/health", "//health",
        "/" + "a" * rng.randint(0, 9000), "".join(chr(rng.randint(0, 255)) for _ in range(8)),
    ]) if wild or rng.random() < 0.3 else GOOD_PARTS[1]
    version = rng.choice(["HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "", "http/1.1", "HTTP/1.1 x"]) \
        if wild or rng.random() < 0.1 else GOOD_PARTS[2]
    body = rng.choice([
        GOOD_BODY, GOOD_BODY, b"", b"{}", b"[]", b"\xff\xfe{", b"[" * rng.randint(1, 3000), b"null", b"NaN",
        json.dumps({"device_id": TEST_DEVICE_ID, "data": {"v": rng.random()}, "timestamp": "not a time"}).encode(),
        json.dumps({"device_id": TEST_DEVICE_ID, "data": {"v": [[[[rng.random()]]]]}}).encode(),
        json.dumps({"device_id": OTHER_DEVICE_ID, "data": {"v": 1}}).encode(),
        b'{"deviceId": "x", "sensorsDates": 5}', bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 64))),
    ]) if wild or rng.random() < 0.6 else GOOD_BODY
    headers = ["Host: localhost", "Content-Type: application/json", "X-API-KEY: " + TEST_API_KEY,
               "Content-Length: %d" % len(body)]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):  # spoil or add something
        roll = rng.random()
        if roll < 0.25 and headers:
            del headers[rng.randrange(len(headers))]
        elif roll < 0.35:
            headers.append(rng.choice(BAD_HEADERS))
        elif roll < 0.45:
            headers.append("Content-Length: %d" % rng.randint(0, 2 * len(body) + 2))
        elif roll < 0.6:
            headers.append("Transfer-Encoding: chunked")
            headers = [h for h in headers if not h.startswith("Content-Length") or rng.random() < 0.2]
        else:
            headers.append(rng.choice([
                "Content-Type: text/plain", "Content-Type: application/json; charset=utf-8", "X-API-KEY: wrong",
                "Expect: 100-continue", "Connection: close", "Connection: keep-alive", "X-TLink-Signature: x",
                "Idempotency-Key: " + "k" * rng.randint(1, 300), "X-Junk: " + "".join(
                    chr(rng.randint(32, 255)) for _ in range(rng.randint(0, 40)))] + ["X-Many: 1"] * 3))
    if rng.random() < 0.03:
        headers.extend("X-H%d: v" % i for i in range(MAX_HEADERS + 1))
    if "Transfer-Encoding: chunked" in headers and rng.random() < 0.8:
        size = rng.choice(["%x" % len(body), "%x;ext=1" % len(body), "zz", "-1", "%x" % (len(body) + 3), ""])
        ending = rng.choice([b"\r\n0\r\n\r\n", b"\r\n0\r\nT: x\r\n\r\n", b"", b"\r\n", b"xx\r\n0\r\n\r\n"])
        body = size.encode() + b"\r\n" + body + ending
    eol = "\n" if rng.random() < 0.1 else "\r\n"
    text = eol.join(["%s %s %s" % (method, target, version)] + headers) + eol + eol
    data = text.encode("latin-1") + body
    roll = rng.random()
    if roll < 0.1:
        data = data[:rng.randint(0, len(data))]
    elif roll < 0.2 and data:
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randint(0, 255)
        data = bytes(flipped)
    return data


class SeededFuzz(TwinTestCase):
    """Thousands of random requests over plain HTTP (TLS would only slow it down)."""

    CASES = 2000
    SEED = 1313

    def test_fuzz(self):
        log = io.StringIO()
        twin = self.start_twin(tls=False, handler_timeout=2.0, head_timeout=2.0, log_stream=log)
        baseline = threading.active_count()
        rng = random.Random(self.SEED)
        parts = urlsplit(twin.url)
        good = 0
        for number in range(self.CASES):
            data = fuzz_request(rng)
            sock = socket.create_connection((parts.hostname, parts.port), timeout=5.0)
            try:
                try:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)  # so a request waiting for more bytes ends at once
                except OSError:
                    pass  # the twin refused and closed before reading it all
                raw = read_to_close(sock)
            finally:
                sock.close()
            for status in statuses(raw):
                self.assertTrue(status < 500 or status in (501, 505),
                                "case %d got %d: %r -> %r" % (number, status, data[:200], raw[:300]))
            self.assertNotIn(b"Traceback", raw)
            if number % 100 == 99:
                self.assertLessEqual(threading.active_count(), baseline + 20)
                conn = self.connect(twin)
                status, answer, _ = request_json(conn, "POST", "/api/v1/telemetry",
                                                 {"device_id": OTHER_DEVICE_ID, "data": {"n": number}},
                                                 {"X-API-KEY": OTHER_API_KEY})
                conn.close()
                self.assertEqual(status, 200, answer)
                good += 1
                self.assertEqual(twin.store.count_telemetry(OTHER_DEVICE_ID), good)
        self.assertEqual(good, self.CASES // 100)
        self.assertNotIn("error handling", log.getvalue())  # no handler raised
        self.assertNotIn("unexpected error", log.getvalue())


class ReceiverLimitFlags(unittest.TestCase):
    """receiver.py --head-timeout / --idle-timeout / --max-connections reach the running twin."""

    def run_receiver(self, *args: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("TLINK_WEBHOOK_SECRET_FILE", None)
        proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "receiver.py")] + list(args),
                                cwd=str(temp_dir(self)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.stderr.close)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    def test_flags(self):
        proc = self.run_receiver("--port", "0", "--db", ":memory:", "--http", "--head-timeout", "1",
                                 "--idle-timeout", "30", "--max-connections", "1", "--verbose")
        line = proc.stderr.readline().decode()
        port = int(line.split(":")[3].split()[0])
        held = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(held.close)
        held.sendall(b"GET /hea")  # a head that never ends: cut at 1 s, long before the idle timeout
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(extra.close)
        self.assertEqual(read_to_close(extra), b"")  # past --max-connections 1: closed at once
        self.assertEqual(read_to_close(held), b"")
        proc.terminate()  # SIGTERM on POSIX; on Windows TerminateProcess (exit 1): no clean stop to check there
        code = proc.wait(timeout=10)
        if os.name == "posix":
            self.assertEqual(code, 0)
        self.assertIn("closed: 1 connections open (--max-connections)", proc.stderr.read().decode())

    def test_bad_values_are_usage_errors(self):
        for args in (["--head-timeout", "0"], ["--idle-timeout", "soon"], ["--max-connections", "0"]):
            proc = self.run_receiver("--port", "0", "--db", ":memory:", *args)
            self.assertEqual(proc.wait(timeout=10), 2, args)
            errors = proc.stderr.read().decode()
            self.assertIn("receiver.py: error: argument %s" % args[0], errors)
            self.assertNotIn("Traceback", errors)


if __name__ == "__main__":
    unittest.main()
