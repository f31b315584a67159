"""Where the twin listens: both loopback addresses by default (so `localhost` is fast on Windows,
which tries ::1 first), one port for both, and an exclusive bind on Windows (a busy port is noticed).

Usage: python -m unittest tests.test_twin_binding
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import subprocess
import sys
import unittest
from unittest import mock

from iotpost.receiver import server
from tests.twin_support import PROJECT_ROOT, TwinTestCase, client_context, request_json, temp_dir

LOOPBACKS = ("127.0.0.1", "::1")


def ipv6_reason() -> str:
    """Why ::1 cannot be tested here, or '' if it can."""
    if not socket.has_ipv6:
        return "no IPv6 in this Python"
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return "cannot bind ::1 here (%s)" % exc
    return ""


class LoopbackTest(TwinTestCase):
    """The default twin answers on 127.0.0.1 and on ::1, and go_down/come_back cover both."""

    def health(self, address: str, port: int) -> int:
        conn = http.client.HTTPSConnection(address, port, timeout=5, context=client_context())
        self.addCleanup(conn.close)
        return request_json(conn, "GET", "/health")[0]

    def skip_if_no_ipv6(self, address: str) -> None:
        """Inside a subTest: skip the ::1 half, with its reason, where ::1 cannot be bound."""
        if address == "::1" and ipv6_reason():
            self.skipTest(ipv6_reason())

    def test_default_twin_answers_on_both_loopback_addresses(self):
        twin = self.start_twin()
        self.assertEqual(twin.url, "https://localhost:%d" % twin.port)
        for address in LOOPBACKS:
            with self.subTest(address=address):
                self.skip_if_no_ipv6(address)
                self.assertIn(address, twin.addresses)
                self.assertEqual(self.health(address, twin.port), 200)

    def test_go_down_refuses_on_both_and_come_back_serves_both(self):
        twin = self.start_twin()
        port = twin.port
        twin.go_down()
        for address in LOOPBACKS:
            with self.subTest(address=address):
                self.skip_if_no_ipv6(address)
                with self.assertRaises(ConnectionRefusedError):
                    socket.create_connection((address, port), timeout=10).close()  # Windows: ~2 s
                other = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
                self.addCleanup(other.close)
                with self.assertRaises(OSError):  # the twin keeps the port on this address while down
                    other.bind((address, port))
        twin.come_back()
        self.assertEqual(twin.port, port)
        for address in LOOPBACKS:
            with self.subTest(address=address):
                self.skip_if_no_ipv6(address)
                self.assertEqual(self.health(address, port), 200)

    def test_explicit_host_is_that_address_alone(self):
        twin = self.start_twin(host="127.0.0.1")
        self.assertEqual(twin.addresses, ("127.0.0.1",))
        self.assertEqual(self.health("127.0.0.1", twin.port), 200)
        if not ipv6_reason():
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("::1", twin.port), timeout=10).close()

    def test_a_port_busy_on_ipv6_only_is_in_use(self):
        if ipv6_reason():
            self.skipTest(ipv6_reason())
        busy = socket.socket(socket.AF_INET6)
        self.addCleanup(busy.close)
        busy.bind(("::1", 0))
        busy.listen(1)
        with self.assertRaises(server.ListenError) as caught:
            self.start_twin(port=busy.getsockname()[1])
        self.assertEqual((caught.exception.errno, caught.exception.host), (errno.EADDRINUSE, "::1"))

    def test_no_ipv6_leaves_out_only_the_default_pairs_ipv6_half(self):
        # A machine with IPv6 off cannot be made here; the decision is checked on the errors it raises.
        twin = server.TwinServer(store=mock.sentinel.store, owns_store=False, host=None, port=0, ssl_context=None)
        off = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        self.assertTrue(twin._skips("::1", off))
        self.assertFalse(twin._skips("127.0.0.1", off))
        self.assertFalse(twin._skips("::1", OSError(errno.EADDRINUSE, "Address already in use")))
        explicit = server.TwinServer(store=mock.sentinel.store, owns_store=False, host="::1", port=0,
                                     ssl_context=None)
        self.assertFalse(explicit._skips("::1", off))  # --host ::1 asked for exactly that


class RecordingSocket:
    """Records setsockopt calls: only the option-setting decision is checked (the Windows
    constant does not exist here, so no real socket can take it)."""

    def __init__(self) -> None:
        self.options = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


class ExclusiveBindTest(unittest.TestCase):
    def test_windows_binds_exclusively_without_reuseaddr(self):
        sock = RecordingSocket()
        with mock.patch.object(server.os, "name", "nt"):
            server.set_bind_options(sock)
        self.assertIn((socket.SOL_SOCKET, server.SO_EXCLUSIVEADDRUSE, 1), sock.options)
        self.assertNotIn(socket.SO_REUSEADDR, [option for _, option, _ in sock.options])
        if not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            self.assertEqual(server.SO_EXCLUSIVEADDRUSE, ~socket.SO_REUSEADDR)  # Winsock's definition

    def test_posix_reuses_past_time_wait(self):
        sock = RecordingSocket()
        with mock.patch.object(server.os, "name", "posix"):
            server.set_bind_options(sock)
        self.assertEqual(sock.options, [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)])


class SecondTwinTest(TwinTestCase):
    """receiver.py on a port another twin listens on: the documented 78 and a clear line."""

    def test_second_twin_on_a_busy_port_is_already_in_use(self):
        first = self.start_twin()
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("TLINK_WEBHOOK_SECRET_FILE", None)
        proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "receiver.py"), "--port", str(first.port),
                               "--db", ":memory:"], cwd=str(temp_dir(self)), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        errors = proc.stderr.decode()
        self.assertEqual(proc.returncode, 78, errors)
        self.assertTrue(errors.startswith("receiver.py: error: 127.0.0.1 port %d is already in use" % first.port),
                        errors)
        self.assertNotIn("Traceback", errors)
        self.assertEqual(self.health_of(first), 200)  # the first twin goes on serving

    def health_of(self, twin) -> int:
        conn = http.client.HTTPSConnection("127.0.0.1", twin.port, timeout=5, context=client_context())
        self.addCleanup(conn.close)
        return request_json(conn, "GET", "/health")[0]


if __name__ == "__main__":
    unittest.main()
