"""The per-payload path of a burst: what is done once must give the bytes and answers done each time would.

Header lines checked and encoded once (Transport), answers' headers read on demand (AnswerHeaders),
a repeated answer read once (Sender), generated bodies from a template (payloads.BodyEncoder).
"""

from __future__ import annotations

import http.client
import socket
import threading
import unittest

from iotpost.target import parse_target
from iotpost.transport import AnswerHeaders, Transport

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Thing: One\r\nContent-Length: 2\r\n\r\n{}"


class RecordingServer:
    """Plain HTTP on 127.0.0.1: records each request's exact bytes, answers ANSWER, keeps the connection."""

    def __init__(self, test: unittest.TestCase) -> None:
        self.requests: list = []
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
                    conn.sendall(ANSWER)


def putheader_request(port: int, path: str, headers, body: bytes) -> bytes:
    """The request http.client's own putheader path writes (what Transport sent before lines were kept)."""
    server_bytes = []

    class Capture(http.client.HTTPConnection):
        def send(self, data):
            server_bytes.append(bytes(data))

    conn = Capture("127.0.0.1", port)
    conn.putrequest("POST", path, skip_accept_encoding=True)
    for name, value in headers:
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
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


if __name__ == "__main__":
    unittest.main()
