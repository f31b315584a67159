"""The per-payload path of a burst: what is done once must give the bytes and answers done each time would.

Header lines checked and encoded once (Transport), answers' headers read on demand (AnswerHeaders),
a repeated answer read once (Sender), generated bodies from a template (payloads.BodyEncoder).
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import unittest

from iotpost.target import parse_target
from iotpost.transport import AnswerHeaders, Transport

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Thing: One\r\nContent-Length: 2\r\n\r\n{}"


class RecordingServer:
    """Plain HTTP on 127.0.0.1: records each request's exact bytes, answers ANSWER, keeps the connection."""

    def __init__(self, test: unittest.TestCase, answer: bytes = ANSWER) -> None:
        self.requests: list = []
        self.answer = answer
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        test.addCleanup(self.sock.close)
        test.addCleanup(thread.join, 5)
        test.addCleanup(self.stopped.set)

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(0.05)
                data = b""
                while not self.stopped.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    data += chunk
                    head, sep, rest = data.partition(b"\r\n\r\n")
                    if not sep:
                        continue
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(rest) < length:
                        continue
                    self.requests.append(head + sep + rest[:length])
                    data = rest[length:]
                    try:
                        conn.sendall(self.answer)
                    except OSError:
                        break


def putheader_request(port: int, path: str, headers, body: bytes, method: str = "POST") -> bytes:
    """The request http.client's own putheader path writes (what Transport sent before lines were kept)."""
    server_bytes = []

    class Capture(http.client.HTTPConnection):
        def send(self, data):
            server_bytes.append(bytes(data))

    conn = Capture("127.0.0.1", port)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers:
        conn.putheader(name, value)
    if body or method not in ("GET", "HEAD"):
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    return b"".join(server_bytes)


class HeaderLineTests(unittest.TestCase):
    def setUp(self):
        self.server = RecordingServer(self)
        self.target = parse_target("http://127.0.0.1:%d" % self.server.port, "/api/v1/telemetry", allow_http=True)
        self.transport = Transport(self.target, None, 5)
        self.addCleanup(self.transport.close)

    def test_kept_lines_send_the_bytes_putheader_writes_on_every_request(self):
        sent = []
        for n in range(3):  # the second and third take the kept lines
            headers = [("User-Agent", "iotpost/test"), ("Content-Type", "application/json"),
                       ("Idempotency-Key", "key-%d" % n), ("X-API-KEY", "tesa_ak_caf\xe9")]
            body = b'{"n":%d}' % n
            self.assertEqual(self.transport.send("POST", "/api/v1/telemetry", headers, body).status, 200)
            sent.append(putheader_request(self.server.port, "/api/v1/telemetry", headers, body))
        self.assertEqual(self.server.requests, sent)
        self.assertIn(b"\r\nX-API-KEY: tesa_ak_caf\xe9\r\n", self.server.requests[2])

    def test_a_bare_get_sends_no_blank_line_after_its_head(self):
        for _ in range(3):  # the second and third have no kept lines but the Host one, or none at all
            self.transport.send("GET", "/health", [], b"")
        expected = putheader_request(self.server.port, "/health", [], b"", method="GET")
        self.assertEqual(self.server.requests, [expected] * 3)

    def test_the_host_line_is_learnt_from_putrequest_from_the_second_request_on(self):
        import ssl

        cases = {("b\u00fccher.example", 443): b"Host: xn--bcher-kva.example", ("::1", 8443): b"Host: [::1]:8443",
                 ("tesaiot.com", 443): b"Host: tesaiot.com", ("127.0.0.1", 80): b"Host: 127.0.0.1:80"}
        for (host, port), line in cases.items():
            transport = Transport(self.target, None, 5)
            conn = http.client.HTTPSConnection(host, port, context=ssl.create_default_context())
            self.assertIsNone(transport._host_line(conn))  # a one-off send leaves it to putrequest
            self.assertEqual(transport._host_line(conn), line)

    def test_a_value_with_a_line_break_is_refused_as_putheader_refuses_it_and_nothing_is_sent(self):
        good = [("User-Agent", "iotpost/test")]
        self.transport.send("POST", "/api/v1/telemetry", good, b"{}")
        for bad in ([("X-Injected", "a\r\nX-Evil: 1")], [("X-Injected", "a\nb")], [("Bad Name:", "v")]):
            with self.assertRaises(ValueError):
                self.transport.send("POST", "/api/v1/telemetry", good + bad, b"{}")
        self.assertEqual(len(self.server.requests), 1)

    def test_a_value_putheader_cannot_encode_raises_as_before(self):
        with self.assertRaises(UnicodeEncodeError):
            self.transport.send("POST", "/api/v1/telemetry", [("X-Name", "\u0e01")], b"{}")
        self.assertEqual(self.server.requests, [])

    def test_answer_headers_are_the_lower_case_mapping_of_what_arrived(self):
        answer = self.transport.send("POST", "/api/v1/telemetry", [], b"{}")
        self.assertIsInstance(answer.headers, AnswerHeaders)
        expected = {"content-type": "application/json", "x-thing": "One", "content-length": "2"}
        self.assertEqual(answer.headers, expected)
        self.assertEqual(dict(answer.headers), expected)
        self.assertEqual(answer.headers.get("x-thing"), "One")
        self.assertIsNone(answer.headers.get("retry-after"))
        self.assertNotIn("X-Thing", answer.headers)  # lower-case names, as the dict it replaced

    def test_answers_are_read_by_answer_heads_response_class(self):
        # Its message equals the stdlib's by design, so only the class tells the plain path is wired in.
        from iotpost.answer_head import AnswerResponse

        self.transport.send("POST", "/api/v1/telemetry", [], b"{}")
        self.assertIs(self.transport._conn.response_class, AnswerResponse)



class AnswerSizeTests(unittest.TestCase):
    """The body is read up to its declared size (3.8/3.9 allocate what read() is asked for), never past the limit."""

    def exchange(self, body: bytes, declared: int):
        from iotpost.transport import MAX_RESPONSE_BYTES

        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % declared + body
        server = RecordingServer(self, answer)
        target = parse_target("http://127.0.0.1:%d" % server.port, "/api/v1/telemetry", allow_http=True)
        transport = Transport(target, None, 5)
        self.addCleanup(transport.close)
        bodies = [transport.send("POST", "/api/v1/telemetry", [], b"{}").body for _ in range(2)]
        return bodies, server.connections, MAX_RESPONSE_BYTES

    def test_a_small_body_is_read_whole_and_the_connection_kept(self):
        bodies, connections, _ = self.exchange(b"{}", 2)
        self.assertEqual((bodies, connections), ([b"{}", b"{}"], 1))

    def test_a_body_at_the_limit_is_read_whole_and_the_connection_kept(self):
        from iotpost.transport import MAX_RESPONSE_BYTES

        body = b"x" * MAX_RESPONSE_BYTES
        bodies, connections, _ = self.exchange(body, len(body))
        self.assertEqual((bodies == [body, body], connections), (True, 1))

    def test_a_body_past_the_limit_is_cut_there_and_the_connection_not_reused(self):
        from iotpost.transport import MAX_RESPONSE_BYTES

        body = b"y" * (MAX_RESPONSE_BYTES + 10)
        bodies, connections, _ = self.exchange(body, len(body))
        self.assertEqual([len(b) for b in bodies], [MAX_RESPONSE_BYTES] * 2)
        self.assertEqual(connections, 2)


class IdempotencyKeyTests(unittest.TestCase):
    def test_keys_drawn_from_the_buffer_are_distinct_uuid4s_across_refills(self):
        import uuid

        from iotpost.payloads import new_idempotency_key

        keys = [new_idempotency_key() for _ in range(1000)]  # several 256-key refills
        self.assertEqual(len(set(keys)), len(keys))
        for key in keys:
            parsed = uuid.UUID(key)
            self.assertEqual((str(parsed), parsed.version, parsed.variant), (key, 4, uuid.RFC_4122))

    @unittest.skipUnless(hasattr(os, "fork"), "POSIX only")
    def test_a_forked_child_never_repeats_its_parents_next_key(self):
        from iotpost.payloads import new_idempotency_key

        from iotpost import payloads

        payloads._RANDOM[:] = os.urandom(4096)  # a full buffer: without the fork hook, the child would take its next bytes
        new_idempotency_key()  # the buffer now holds bytes the parent will use next
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.write(write, new_idempotency_key().encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        child = os.read(read, 100).decode()
        os.close(read)
        self.assertNotEqual(child, new_idempotency_key())


class BodyEncoderTests(unittest.TestCase):
    """The template must give encode(make_body(...)) byte for byte, or step aside."""

    STAMP = "2026-11-27T10:00:00+00:00"

    def check(self, make_body, readings, metadata=None, device="dev-1"):
        from iotpost.payloads import BodyEncoder, encode

        encoder = BodyEncoder(make_body, device, metadata)
        for n, data in enumerate(readings):
            stamp = "2026-11-27T10:00:%02d+00:00" % (n % 60)
            self.assertEqual(encoder(data, stamp), encode(make_body(device, data, metadata, stamp)), data)
        return encoder

    def test_generated_readings_on_every_platform(self):
        from iotpost.payloads import MedicalSignals
        from iotpost.platforms import load

        for name in ("tesaiot", "iotflow", "connectivity"):
            for metadata in (None, {"room": "7%", "reading_time": "set by hand"}, {"unit": "\u00b0C {x}"}):
                gen = MedicalSignals(seed=3)
                encoder = self.check(load(name).make_body, [gen.next() for _ in range(300)], metadata)
                self.assertIsNotNone(encoder._keys, name)  # the template was used, not only encode()

    def test_values_json_treats_specially_and_changing_keys_step_aside(self):
        import enum

        class Level(enum.IntEnum):
            HIGH = 3

        base = {"t": 21.5, "ok": True, "note": "caf\u00e9 \"q\" \\ %s {}", "n": None, "i": 7}
        odd = [dict(base, t=float("nan")), dict(base, t=float("inf")), dict(base, t=-float("inf")),
               dict(base, i=Level.HIGH), dict(base, note=["nested", 1]), dict(base, t=1e300 * 10),
               {"other": 1}, dict(base, ok=False), dict(base, i=-0, t=-0.0), dict(base, n="nan")]
        readings = []
        for value in odd:
            readings += [base, base, value, base]
        from iotpost.platforms import load

        self.check(load("tesaiot").make_body, readings)

    def test_a_make_body_that_changes_values_is_never_templated(self):
        def rounding(device_id, data, metadata, stamp):
            return {"device": device_id, "data": {k: round(v) if isinstance(v, float) else v for k, v in data.items()},
                    "at": stamp}

        encoder = self.check(rounding, [{"t": 21.5 + n, "s": "x"} for n in range(10)])
        self.assertIsNone(encoder._keys)

    def test_a_make_body_that_refuses_markers_is_never_templated(self):
        def strict(device_id, data, metadata, stamp):
            if not all(isinstance(v, float) for v in data.values()):
                raise TypeError("floats only")
            return {"device": device_id, "data": data, "at": stamp}

        encoder = self.check(strict, [{"t": 21.5 + n} for n in range(10)])
        self.assertIsNone(encoder._keys)

    def test_the_walk_draws_the_floats_uniform_drew(self):
        import random

        from iotpost.payloads import _walk

        def old_walk(rng, value, step, low, high):
            value += rng.uniform(-step, step)
            if value < low:
                value = low + (low - value)
            if value > high:
                value = high - (value - high)
            return min(max(value, low), high)

        for seed in range(50):
            a, b = random.Random(seed), random.Random(seed)
            va = vb = 96.0
            for step in (0.6, 0.05, 2.5, 0.3, 4.0) * 40:
                va, vb = _walk(a, va, step, 92.0, 100.0), old_walk(b, vb, step, 92.0, 100.0)
                self.assertEqual(va, vb)


if __name__ == "__main__":
    unittest.main()
