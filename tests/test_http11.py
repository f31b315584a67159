"""iotpost.http11 reads answers as RFC 9112 frames them, over real sockets (a socketpair per case).

The end-to-end suites (test_e2e_edges, test_proxy, test_mtls...) run it against the twin over TLS;
these cases feed it the answers a twin never gives: folded headers, chunk extensions and trailers,
bodies framed by the close, lies about the length, garbage.
"""

from __future__ import annotations

import socket
import threading
import unittest

from iotpost.http11 import Connection, MalformedResponse, RemoteDisconnected, host_header


def exchange(answer: bytes, method: str = "POST", limit: int = 1 << 20, close_after: bool = True):
    """Send one request over a socketpair; the peer answers ``answer``; return (Answer, request bytes)."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)
    received = []

    def peer() -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = theirs.recv(65536)
            if not chunk:
                break
            data += chunk
        received.append(data)
        theirs.sendall(answer)
        if close_after:
            theirs.close()

    thread = threading.Thread(target=peer)
    thread.start()
    conn = Connection(lambda: ours, "platform.example", 8443, None)
    try:
        conn.send_request(method, "/api/v1/telemetry", [("Content-Type", "application/json"),
                                                        ("Content-Length", "2")], b"{}")
        return conn.read_response(limit, method), received
    finally:
        thread.join()
        conn.close()
        theirs.close()


class Requests(unittest.TestCase):
    def test_request_bytes(self):
        _, received = exchange(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(received[0].split(b"\r\n\r\n")[0],
                         b"POST /api/v1/telemetry HTTP/1.1\r\nHost: platform.example:8443\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 2")

    def test_host_header_as_http_client_writes_it(self):
        self.assertEqual(host_header("::1", 443, True), "[::1]")
        self.assertEqual(host_header("::1", 8443, True), "[::1]:8443")
        self.assertEqual(host_header("example.com", 80, False), "example.com")
        self.assertEqual(host_header("example.com", 443, False), "example.com:443")

    def test_no_header_injection(self):
        opened = []
        conn = Connection(lambda: opened.append(1), "h", 80, None)
        with self.assertRaises(ValueError):
            conn.send_request("POST", "/x", [("X-A", "1\r\nX-Injected: 2")], b"")
        self.assertEqual(opened, [])  # refused before any connection


class Framing(unittest.TestCase):
    def test_content_length_and_keep_alive(self):
        answer, _ = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhelloEXTRA",
                             close_after=False)
        self.assertEqual((answer.status, answer.reason, answer.body, answer.will_close), (200, "OK", b"hello", False))
        self.assertEqual(answer.headers["x-a"], "2")  # the last of a repeated field, as before

    def test_chunked_with_extensions_and_trailers(self):
        answer, _ = exchange(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n", close_after=False)
        self.assertEqual((answer.body, answer.will_close), (b"Wikipedia", False))

    def test_http_1_0_and_connection_close_end_the_connection(self):
        answer, _ = exchange(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(answer.will_close)
        answer, _ = exchange(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
                             close_after=False)
        self.assertFalse(answer.will_close)
        answer, _ = exchange(b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(answer.will_close)

    def test_body_framed_by_the_close(self):
        answer, _ = exchange(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        self.assertEqual((answer.body, answer.will_close), (b"until the end", True))

    def test_1xx_skipped_and_no_body_answers(self):
        answer, _ = exchange(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", close_after=False)
        self.assertEqual((answer.status, answer.body), (204, b""))
        answer, _ = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", method="HEAD", close_after=False)
        self.assertEqual(answer.body, b"")

    def test_folded_header_is_joined(self):
        answer, _ = exchange(b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(answer.headers["x-long"], "a b")

    def test_a_body_over_the_limit_is_cut_and_the_connection_dropped(self):
        answer, _ = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", limit=4)
        self.assertEqual((answer.body, answer.truncated, answer.will_close), (b"0123", True, True))
        answer, _ = exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
                             limit=4)
        self.assertEqual((answer.body, answer.truncated), (b"0123", True))


class Refusals(unittest.TestCase):
    def test_nothing_at_all_is_a_remote_disconnect(self):
        with self.assertRaises(RemoteDisconnected):
            exchange(b"")
        self.assertTrue(issubclass(RemoteDisconnected, ConnectionResetError))  # the stale-connection retry

    def test_malformed_answers(self):
        for answer in (b"garbage\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"SSH-2.0-OpenSSH\r\n",
                       b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                       b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                       b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                       b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                       b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                       b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki",
                       b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n",
                       b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n"):
            with self.subTest(answer=answer[:60]), self.assertRaises(MalformedResponse):
                exchange(answer)


if __name__ == "__main__":
    unittest.main()
