"""End to end: the edges a reviewer found (servers that misbehave, closed pipes, odd flags)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import unittest

from tests.support import SENDER, cli_env
from tests.test_e2e_reliability import keys_in_spool
from tests.test_e2e_sender import SenderTestCase
from tests.twin_support import LOCALHOST_KEY, LOCALHOST_PEM


class RawServer:
    """A one-shot TLS (or plain) listener whose behaviour a test scripts; counts what it sent.

    On 127.0.0.1 only, so tests reach it as 127.0.0.1 (localhost would try ::1 first on Windows).
    """

    def __init__(self, testcase: unittest.TestCase, behaviour, tls: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.connections = 0
        self._ctx = None
        if tls:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(str(LOCALHOST_PEM), str(LOCALHOST_KEY))
        self._behaviour = behaviour
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        testcase.addCleanup(self.close)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                self._behaviour(self, conn)
            except OSError:
                pass
            finally:
                conn.close()

    def wrap(self, conn):
        return self._ctx.wrap_socket(conn, server_side=True)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "raw server thread still running"


def hang_up_during_handshake(server, conn) -> None:
    conn.recv(4096)  # the ClientHello, then FIN: a proxy with no backend


def endless_body(server, conn) -> None:
    with server.wrap(conn) as tls:
        tls.recv(65536)
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 200000000\r\n\r\n")
        chunk = b"x" * 65536
        while server.sent < 200000000:
            tls.sendall(chunk)
            server.sent += len(chunk)


class MisbehavingServerTests(SenderTestCase):
    def test_hang_up_during_tls_handshake_is_temporary_75(self):
        server = RawServer(self, hang_up_during_handshake, tls=False)
        bundle = self.bundle(None, url="https://127.0.0.1:%d" % server.port)
        proc = self.send(bundle, "--retries", "1", "--retry-backoff", "0.01")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("during the TLS handshake", proc.stderr)
        self.assertEqual(server.connections, 2)  # and it was retried

    def test_an_endless_response_body_is_not_drained(self):
        server = RawServer(self, endless_body)
        bundle = self.bundle(None, url="https://127.0.0.1:%d" % server.port)
        proc = self.send(bundle)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertLess(server.sent, 50000000)  # we hung up after the first megabyte or so


class LocalEdgeTests(SenderTestCase):
    def test_every_run_spools_its_reading_even_when_the_backlog_is_stuck(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        bundle = self.bundle(twin, api_key="tesa_ak_rotated_old_key_000")
        for _ in range(3):
            proc = self.send(bundle, "--spool", spool)
            self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertEqual(len(keys_in_spool(spool)), 3)

    def test_closed_stdout_neither_crashes_nor_keeps_delivered_payloads(self):
        twin = self.twin()
        spool = self.tmp / "spool.sqlite3"
        proc = subprocess.Popen([sys.executable, str(SENDER), "--certs-dir", str(self.bundle(twin)), "--count", "3",
                                 "--interval", "0", "--spool", str(spool)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=cli_env(), text=True)
        proc.stdout.close()  # like `| head -0`
        err = proc.stderr.read()
        proc.stderr.close()
        self.assertEqual(proc.wait(timeout=30), 0, err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(keys_in_spool(spool), [])
        self.assertEqual(twin.store.count_telemetry(), 3)

    def test_a_folder_as_spool_is_a_clear_error(self):
        proc = self.send(self.bundle(self.twin()), "--spool", self.tmp)
        self.assertIn(proc.returncode, (75, 78), proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        self.assertIn("spool", proc.stderr)

    def test_absurd_flag_values_are_usage_errors(self):
        bundle = self.bundle()
        for args in (["--timeout", "1e300"], ["--interval", "1e300"], ["--timeout", "0"], ["--period", "nan"],
                     ["--dry-run", "--flush-spool", "--spool", str(self.tmp / "s.sqlite3")]):
            with self.subTest(args=args):
                proc = self.send(bundle, *args)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertNotIn("Traceback", proc.stderr)

    def test_bad_bytes_on_stdin_skip_that_line_only(self):
        twin = self.twin()
        proc = subprocess.run([sys.executable, str(SENDER), "--certs-dir", str(self.bundle(twin)), "--data-file", "-"],
                              input=b'{"n": 1}\n{"n": "\xe9"}\n{"n": 3}\n', capture_output=True, env=cli_env(),
                              timeout=30)
        err = proc.stderr.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 65, err)
        self.assertIn("line 2", err)
        self.assertEqual(err.count("not UTF-8"), 2)  # the line's report, then the summary naming it
        self.assertEqual(twin.store.count_telemetry(), 2)

    def test_spool_status_of_a_missing_spool_reports_zero(self):
        proc = self.send(self.bundle(), "--spool", self.tmp / "never.sqlite3", "--spool-status", "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(json.loads(proc.stdout)["pending"], 0)



class OneWritePerRequest(unittest.TestCase):
    """transport._OneWrite: a request's head and body leave together when its answer is read."""

    def test_writes_are_held_until_the_answer_is_read(self):
        import socket as _socket

        from iotpost.transport import _OneWrite

        ours, theirs = _socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        theirs.settimeout(0.05)
        held = _OneWrite(ours)
        held.sendall(b"POST / HTTP/1.1\r\n\r\n")
        held.sendall(memoryview(b"{}"))
        with self.assertRaises(_socket.timeout):
            theirs.recv(100)  # nothing has left yet
        reader = held.makefile("rb")
        self.addCleanup(reader.close)
        self.assertEqual(theirs.recv(100), b"POST / HTTP/1.1\r\n\r\n{}")
        self.assertEqual(held.fileno(), ours.fileno())  # everything else is the socket's own


if __name__ == "__main__":
    unittest.main()
