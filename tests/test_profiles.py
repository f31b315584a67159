"""Platform profiles: the headers each one sends, and TLink's HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
import unittest

from iotpost.profiles import PROFILES, SECRET_HEADERS, TESAIOT, TLINK, Credentials, tlink_signature

BODY = '{"device_id":"d","timestamp":"2025-12-09T10:30:45+00:00","data":{"t":"21.5 °C"}}'.encode("utf-8")
KEY = "3f2b8c1e-9d4a-4e7b-8c6d-1a2b3c4d5e6f"
API_KEY = "tk_test_5e1f9c0a7b3d4e2f8a6c1b9d0e7f3a2c"
SECRET = b"tlink-shared-secret-0123"


class TesaiotProfileTest(unittest.TestCase):
    def test_headers(self) -> None:
        headers = TESAIOT.headers(BODY, KEY, Credentials(api_key=API_KEY))
        self.assertEqual(headers, [("Content-Type", "application/json"), ("Idempotency-Key", KEY),
                                   ("X-API-KEY", API_KEY)])

    def test_no_key_no_header(self) -> None:
        headers = dict(TESAIOT.headers(BODY, KEY, Credentials()))
        self.assertNotIn("X-API-KEY", headers)
        self.assertEqual(headers["Idempotency-Key"], KEY)

    def test_same_key_every_attempt(self) -> None:
        creds = Credentials(api_key=API_KEY)
        self.assertEqual(TESAIOT.headers(BODY, KEY, creds), TESAIOT.headers(BODY, KEY, creds))

    def test_endpoint_and_registry(self) -> None:
        self.assertEqual(TESAIOT.endpoint, "/api/v1/telemetry")
        self.assertIs(PROFILES["tesaiot"], TESAIOT)
        self.assertIs(PROFILES["tlink"], TLINK)
        self.assertIn("x-api-key", SECRET_HEADERS)  # so verbose output redacts it


class TlinkProfileTest(unittest.TestCase):
    def test_without_secret_no_signature(self) -> None:
        headers = TLINK.headers(BODY, KEY, Credentials(api_key=API_KEY))
        self.assertEqual(headers, [("Content-Type", "application/json"), ("Idempotency-Key", KEY)])
        self.assertFalse(any("signature" in name.lower() for name, _ in headers))
        self.assertEqual(TLINK.headers(BODY, KEY, Credentials(hmac_secret=b"")), headers)

    def test_signature_matches_independent_hmac(self) -> None:
        expected = "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
        headers = TLINK.headers(BODY, KEY, Credentials(hmac_secret=SECRET))
        self.assertEqual(dict(headers)["X-TLink-Signature"], expected)
        self.assertEqual(tlink_signature(BODY, SECRET), expected)
        self.assertRegex(expected, r"^sha256=[0-9a-f]{64}$")
        self.assertNotIn(SECRET.decode(), dict(headers)["X-TLink-Signature"])

    def test_known_vector(self) -> None:
        # RFC 4231 test case 2.
        self.assertEqual(tlink_signature(b"what do ya want for nothing?", b"Jefe"),
                         "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")

    def test_signature_covers_exact_body(self) -> None:
        other = BODY.replace(b"21.5", b"21.6")
        self.assertNotEqual(tlink_signature(BODY, SECRET), tlink_signature(other, SECRET))
        self.assertNotEqual(tlink_signature(BODY, SECRET), tlink_signature(BODY, SECRET + b"x"))

    def test_no_api_key_header(self) -> None:
        headers = dict(TLINK.headers(BODY, KEY, Credentials(api_key=API_KEY, hmac_secret=SECRET)))
        self.assertNotIn("X-API-KEY", headers)
        self.assertEqual(TLINK.endpoint, "/api/webhooks/tlink")


class CredentialsTest(unittest.TestCase):
    def test_secrets_for_redaction(self) -> None:
        self.assertEqual(Credentials(api_key=API_KEY, hmac_secret=b" s3cret-value\n").secrets(),
                         [API_KEY, "s3cret-value"])
        self.assertEqual(Credentials().secrets(), [])
        self.assertEqual(Credentials(hmac_secret=b"\xff\xfe").secrets(), [])


if __name__ == "__main__":
    unittest.main()
