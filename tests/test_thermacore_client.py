"""The ThermaCore client in-process against the twin over real TLS, with the twin's clock moved by hand.

The subprocess runs (tests/test_e2e_thermacore.py) cover a refresh; these cover what a one-shot run
cannot reach: a refresh token that has expired too (a new login), and the pure helpers.
"""

from __future__ import annotations

import unittest
from typing import List

from iotpost.errors import ConfigError, CredentialsRefused, RequestRejected
from iotpost.receiver import thermacore
from iotpost.receiver.store import TelemetryStore
from iotpost.target import parse_target
from iotpost.thermacore_client import ThermaCoreClient, readings_path, token_expired
from iotpost.tlsctx import build_ssl_context
from iotpost.transport import Transport
from tests.twin_support import CA_PEM, TwinTestCase

PASSWORD = "client-thermacore-pw-Zk2"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class ClientAgainstTwin(TwinTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        store = TelemetryStore(":memory:", clock=self.clock)
        self.addCleanup(store.close)
        self.twin = self.start_twin(store=store)
        thermacore.create_user(store, "demo", PASSWORD)
        self.secrets: List[str] = []

    def client(self, password: str = PASSWORD) -> ThermaCoreClient:
        target = parse_target(self.twin.url, "")
        transport = Transport(target, build_ssl_context(CA_PEM), 5.0, cafile=CA_PEM, environ={})
        self.addCleanup(transport.close)
        return ThermaCoreClient(transport, "", "demo", password, self.secrets)

    def paths(self) -> List[str]:
        return [r.path.split("?")[0] for r in self.twin.requests]

    def test_both_tokens_expired_means_a_new_login_then_the_request_again(self) -> None:
        client = self.client()
        self.assertTrue(client.readings("1", hours=1, sensor_type="pressure"))
        self.clock.now += 31 * 86400  # past the access token's day and the refresh token's 30 days
        self.assertTrue(client.readings("1", hours=1, sensor_type="pressure"))
        self.assertEqual(self.paths(), ["/api/v1/auth/login", "/api/v1/units/1/readings",
                                        "/api/v1/units/1/readings", "/api/v1/auth/refresh",
                                        "/api/v1/auth/login", "/api/v1/units/1/readings"])
        self.assertEqual(client.refreshes, 0)
        self.assertEqual(len(self.secrets), 4)  # both logins' tokens, each redacted from output

    def test_an_expired_access_token_is_refreshed_once_and_kept(self) -> None:
        client = self.client()
        client.readings("1", hours=1)
        self.clock.now += 86400
        client.readings("1", hours=1)
        client.readings("1", hours=1)  # the refreshed token is used again, no second refresh
        self.assertEqual(client.refreshes, 1)
        self.assertEqual(self.paths().count("/api/v1/auth/refresh"), 1)
        self.assertEqual(self.paths().count("/api/v1/auth/login"), 1)

    def test_a_token_that_stays_refused_is_reported_with_the_servers_reason(self) -> None:
        thermacore.configure(self.twin.store, access_seconds=0, refreshed_access_seconds=0)
        with self.assertRaises(RequestRejected) as caught:
            self.client().readings("1")
        self.assertIn("HTTP 422 Request data validation failed (authorization: Token has expired)",
                      caught.exception.message)
        self.assertEqual(self.paths().count("/api/v1/auth/refresh"), 1)  # once, not in a loop

    def test_errors_carry_their_exit_codes(self) -> None:
        with self.assertRaises(CredentialsRefused):
            self.client("wrong").readings("1")
        with self.assertRaises(ConfigError):
            self.client().readings("nope")


class Helpers(unittest.TestCase):
    def test_token_expired_knows_the_422_shape_and_401(self) -> None:
        expired = {"success": False, "error": {"code": "VALIDATION_ERROR", "details": {
            "field_errors": {"authorization": ["Token has expired"]}, "location": "headers"}}}
        self.assertTrue(token_expired(422, expired))
        self.assertTrue(token_expired(401, None))
        bad_signature = {"error": {"details": {"field_errors": {"authorization": ["Signature verification failed"]}}}}
        self.assertFalse(token_expired(422, bad_signature))
        self.assertFalse(token_expired(422, {"error": {"details": {"field_errors": {"hours": ["Token has expired"]}}}}))
        self.assertFalse(token_expired(403, expired))
        self.assertFalse(token_expired(422, "Token has expired"))

    def test_readings_path_encodes_the_unit_and_query(self) -> None:
        self.assertEqual(readings_path("1"), "/api/v1/units/1/readings")
        self.assertEqual(readings_path("TC 1/2", 6, "temp&x"),
                         "/api/v1/units/TC%201%2F2/readings?hours=6&sensor_type=temp%26x")


if __name__ == "__main__":
    unittest.main()
