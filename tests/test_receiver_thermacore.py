"""The twin's ThermaCore contract, as PROTOCOLS.md records the real backend answering.

Most tests dispatch in-process on a store with a hand-moved clock, so token expiry and the login
limit need no sleeping; one test goes over real TLS to check what reaches the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
import unittest
from typing import Any, Dict, List, Optional

from iotpost.receiver import thermacore
from iotpost.receiver.routes import dispatch
from iotpost.receiver.store import TelemetryStore
from tests.twin_support import TwinTestCase, request_json, temp_dir

START = 1_800_000_000.25
PASSWORD = "twin-thermacore-pw-7Qx"
NAIVE_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")  # no zone, microseconds


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ThermaCoreCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = TelemetryStore(":memory:", clock=self.clock)
        self.addCleanup(self.store.close)
        thermacore.create_user(self.store, "demo", PASSWORD)

    def call(self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
             raw: Optional[bytes] = None):
        all_headers = {"Content-Type": "application/json"} if body is not None else {}
        all_headers.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode("utf-8") if body is not None else b"")
        return dispatch(method, path, body=data, headers=all_headers, store=self.store)

    def login(self, username: str = "demo", password: str = PASSWORD, **extra: Any):
        return self.call("POST", "/api/v1/auth/login", dict({"username": username, "password": password}, **extra))

    def tokens(self) -> Dict[str, Any]:
        reply = self.login()
        self.assertEqual(reply.status, 200, reply.body)
        return reply.body["data"]

    def readings(self, token: str, query: str = "", unit: str = "1"):
        return self.call("GET", "/api/v1/units/%s/readings%s" % (unit, query),
                         headers={"Authorization": "Bearer " + token})

    def assert_token_refused(self, reply, message: str) -> None:
        self.assertEqual(reply.status, 422, reply.body)
        self.assertEqual(reply.body["success"], False)
        self.assertEqual(reply.body["error"]["code"], "VALIDATION_ERROR")
        self.assertEqual(reply.body["error"]["message"], "Request data validation failed")
        self.assertEqual(reply.body["error"]["details"],
                         {"field_errors": {"authorization": [message]}, "location": "headers"})


class LoginTest(ThermaCoreCase):
    def test_login_answers_tokens_a_day_long_and_the_user_with_role_and_permissions(self) -> None:
        reply = self.login()
        self.assertEqual(reply.status, 200)
        body = reply.body
        self.assertEqual(body["success"], True)
        self.assertEqual(body["message"], "Login successful")
        self.assertEqual(set(body["data"]), {"access_token", "refresh_token", "expires_in", "user"})  # no token_type
        self.assertEqual(body["data"]["expires_in"], 86400)
        user = body["data"]["user"]
        self.assertEqual(user["username"], "demo")
        self.assertEqual(user["role"]["name"], "viewer")
        self.assertIn("read_units", user["role"]["permissions"])
        self.assertIn("id", user["role"])
        self.assertTrue(body["request_id"])
        self.assertRegex(body["timestamp"], NAIVE_STAMP)

    def test_keep_me_signed_in_lasts_thirty_days(self) -> None:
        reply = self.login(keep_me_signed_in=True)
        self.assertEqual(reply.body["data"]["expires_in"], 2592000)
        token = reply.body["data"]["access_token"]
        self.clock.now += 86400 * 29
        self.assertEqual(self.readings(token, "?hours=1&sensor_type=pressure").status, 200)

    def test_wrong_password_and_unknown_user_are_the_same_401(self) -> None:
        for reply in (self.login(password="nope"), self.login(username="ghost")):
            self.assertEqual(reply.status, 401)
            self.assertEqual(reply.body["success"], False)
            self.assertEqual(reply.body["error"]["code"], "AUTHENTICATION_ERROR")
            self.assertEqual(reply.body["error"]["message"], "Authentication failed. Please check your credentials.")
            self.assertIn("details", reply.body["error"])
            self.assertIn("request_id", reply.body)

    def test_missing_field_extra_field_and_non_json_are_422_validation_errors(self) -> None:
        cases = {
            "missing": self.call("POST", "/api/v1/auth/login", {"username": "demo"}),
            "extra": self.login(token_type="bearer"),
            "not json": self.call("POST", "/api/v1/auth/login", headers={"Content-Type": "application/json"},
                                  raw=b"username=demo"),
            "array": self.call("POST", "/api/v1/auth/login", ["demo", PASSWORD]),
            "bad remember": self.login(keep_me_signed_in="yes"),
        }
        for name, reply in cases.items():
            with self.subTest(name):
                self.assertEqual(reply.status, 422, reply.body)
                self.assertEqual(reply.body["error"]["code"], "VALIDATION_ERROR")
        self.assertIn("password", cases["missing"].body["error"]["details"]["field_errors"])
        self.assertIn("token_type", cases["extra"].body["error"]["details"]["field_errors"])

    def test_passwords_are_stored_as_scrypt_or_pbkdf2_never_plain(self) -> None:
        stored = self.store._query("SELECT password_hash FROM thermacore_users WHERE username = 'demo'")[0][0]
        self.assertNotIn(PASSWORD, stored)
        self.assertTrue(stored.startswith(("scrypt$", "pbkdf2_sha256$")), stored)
        self.assertTrue(thermacore.check_password(PASSWORD, stored))
        self.assertFalse(thermacore.check_password(PASSWORD + "x", stored))

    def test_tokens_are_hs256_signed_with_a_key_of_this_database(self) -> None:
        token = self.tokens()["access_token"]
        header, payload, signature = token.split(".")
        unb64 = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))  # noqa: E731
        self.assertEqual(json.loads(unb64(header)), {"alg": "HS256", "typ": "JWT"})
        claims = json.loads(unb64(payload))
        self.assertEqual(claims["type"], "access")
        self.assertEqual(claims["exp"] - claims["iat"], 86400)
        key = bytes.fromhex(self.store._query(
            "SELECT value FROM thermacore_settings WHERE name = 'signing_key'")[0][0])
        expected = hmac.new(key, ("%s.%s" % (header, payload)).encode(), hashlib.sha256).digest()
        self.assertEqual(unb64(signature), expected)
        other = TelemetryStore(":memory:", clock=self.clock)
        self.addCleanup(other.close)
        reply = dispatch("GET", "/api/v1/units/1/readings", body=b"", store=other,
                         headers={"Authorization": "Bearer " + token})
        self.assert_token_refused(reply, "Signature verification failed")


class TokenTest(ThermaCoreCase):
    def test_an_expired_access_token_is_a_422_not_a_401(self) -> None:
        token = self.tokens()["access_token"]
        self.clock.now += 86399
        self.assertEqual(self.readings(token, "?hours=1&sensor_type=pressure").status, 200)
        self.clock.now += 1
        self.assert_token_refused(self.readings(token), "Token has expired")

    def test_missing_header_or_another_scheme_is_401(self) -> None:
        token = self.tokens()["access_token"]
        for headers in ({}, {"Authorization": "bearer " + token}, {"Authorization": "Basic " + token},
                        {"Authorization": "Bearer"}):
            with self.subTest(headers):
                reply = self.call("GET", "/api/v1/units/1/readings", headers=headers)
                self.assertEqual(reply.status, 401, reply.body)
                self.assertEqual(reply.body["error"]["code"], "AUTHENTICATION_ERROR")
        self.assertEqual(self.call("GET", "/api/v1/units/1/readings").body["error"]["message"],
                         "Missing Authorization Header")

    def test_malformed_and_tampered_tokens_are_422(self) -> None:
        token = self.tokens()["access_token"]
        header, payload, signature = token.split(".")
        self.assert_token_refused(self.readings("not-a-jwt"), "Not enough segments")
        forged = base64.urlsafe_b64encode(json.dumps({"sub": "1", "type": "access", "exp": 4102444800}).encode())
        self.assert_token_refused(self.readings("%s.%s.%s" % (header, forged.decode().rstrip("="), signature)),
                                  "Signature verification failed")
        self.assertEqual(self.readings(token, "?hours=1&sensor_type=pressure").status, 200)

    def test_a_refresh_token_cannot_read(self) -> None:
        self.assert_token_refused(self.readings(self.tokens()["refresh_token"]), "Only non-refresh tokens are allowed")


class RefreshTest(ThermaCoreCase):
    def refresh(self, token: Optional[str], body: Any = None):
        headers = {"Authorization": "Bearer " + token} if token else {}
        return self.call("POST", "/api/v1/auth/refresh", body, headers=headers)

    def test_refresh_gives_a_one_hour_access_token_and_no_new_refresh_token(self) -> None:
        tokens = self.tokens()
        self.clock.now += 86400  # the login's access token has expired
        reply = self.refresh(tokens["refresh_token"])
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.body["success"], True)
        self.assertEqual(reply.body["message"], "Token refreshed successfully")
        self.assertEqual(set(reply.body["data"]), {"access_token", "expires_in"})
        self.assertEqual(reply.body["data"]["expires_in"], 3600.0)
        self.assertIsInstance(reply.body["data"]["expires_in"], float)
        fresh = reply.body["data"]["access_token"]
        self.assertEqual(self.readings(fresh, "?hours=1&sensor_type=pressure").status, 200)
        self.clock.now += 3600
        self.assert_token_refused(self.readings(fresh), "Token has expired")

    def test_refresh_token_in_the_body_is_401_missing_header(self) -> None:
        reply = self.refresh(None, {"refresh_token": self.tokens()["refresh_token"]})
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.body["error"]["message"], "Missing Authorization Header")

    def test_an_access_token_cannot_refresh(self) -> None:
        self.assert_token_refused(self.refresh(self.tokens()["access_token"]), "Only refresh tokens are allowed")

    def test_the_refresh_token_expires_after_thirty_days(self) -> None:
        token = self.tokens()["refresh_token"]
        self.clock.now += 2592000
        self.assert_token_refused(self.refresh(token), "Token has expired")

    def test_lifetimes_are_configurable_per_database(self) -> None:
        thermacore.configure(self.store, access_seconds=0, refreshed_access_seconds=5)
        tokens = self.tokens()
        self.assertEqual(tokens["expires_in"], 0)
        self.assert_token_refused(self.readings(tokens["access_token"]), "Token has expired")
        self.assertEqual(self.refresh(tokens["refresh_token"]).body["data"]["expires_in"], 5.0)
        with self.assertRaises(ValueError):
            thermacore.configure(self.store, acces_seconds=1)


class ReadingsTest(ThermaCoreCase):
    def setUp(self) -> None:
        super().setUp()
        self.token = self.tokens()["access_token"]

    def get(self, query: str = "", unit: str = "1") -> List[Dict[str, Any]]:
        reply = self.readings(self.token, query, unit)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertIsInstance(reply.body, list)
        return reply.body

    def test_a_bare_array_newest_first_at_most_1000_good_readings(self) -> None:
        rows = self.get()
        self.assertEqual(len(rows), 1000)  # 4 sensors every 5 s: a day is far more
        stamps = [r["timestamp"] for r in rows]
        self.assertEqual(stamps, sorted(stamps, reverse=True))
        first = rows[0]
        self.assertEqual(set(first), {"id", "timestamp", "value", "quality", "sensor"})
        self.assertEqual(set(first["sensor"]), {"id", "name", "sensor_type", "unit_of_measurement", "unit_id",
                                                "min_value", "max_value", "is_active", "unit"})
        self.assertEqual(first["sensor"]["unit"]["id"], "1")
        self.assertTrue(all(r["quality"] == "GOOD" for r in rows))
        for r in rows:
            self.assertRegex(r["timestamp"], NAIVE_STAMP)
            self.assertLessEqual(r["sensor"]["min_value"], r["value"])
            self.assertLessEqual(r["value"], r["sensor"]["max_value"])
        self.assertLessEqual(thermacore_epoch(first["timestamp"]), START)
        self.assertGreater(thermacore_epoch(first["timestamp"]), START - 5)

    def test_sensor_type_matches_exactly_case_included(self) -> None:
        temperature = self.get("?hours=1&sensor_type=temperature")
        self.assertTrue(temperature)
        self.assertEqual({r["sensor"]["sensor_type"] for r in temperature}, {"temperature"})
        self.assertEqual(temperature[0]["sensor"]["unit_of_measurement"], "\u00b0C")
        self.assertEqual(self.get("?sensor_type=Temperature"), [])
        self.assertEqual(self.get("?sensor_type=temp"), [])

    def test_hours_bounds_the_window_and_a_non_number_is_24(self) -> None:
        hour = self.get("?hours=1&sensor_type=temperature")
        self.assertIn(len(hour), (720, 721))  # one every 5 s
        self.assertTrue(all(thermacore_epoch(r["timestamp"]) >= START - 3600 for r in hour))
        self.assertEqual(self.get("?hours=abc&sensor_type=temperature"), self.get("?sensor_type=temperature"))
        self.assertEqual(self.get("?hours=1.5&sensor_type=temperature"), self.get("?hours=24&sensor_type=temperature"))

    def test_the_same_instant_gives_the_same_readings_and_time_brings_new_ones(self) -> None:
        before = self.get("?hours=1&sensor_type=pressure")
        self.assertEqual(self.get("?hours=1&sensor_type=pressure"), before)
        self.clock.now += 5
        after = self.get("?hours=1&sensor_type=pressure")
        self.assertGreater(after[0]["timestamp"], before[0]["timestamp"])
        self.assertEqual(after[1], before[0])

    def test_an_unknown_unit_is_404_not_found_error(self) -> None:
        for unit in ("2", "TC999"):
            reply = self.readings(self.token, "", unit)
            self.assertEqual(reply.status, 404)
            self.assertEqual(reply.body["error"]["code"], "NOT_FOUND_ERROR")

    def test_reading_needs_the_read_units_permission(self) -> None:
        thermacore.create_user(self.store, "nobody", PASSWORD, permissions=["read_users"])
        token = self.login("nobody").body["data"]["access_token"]
        reply = self.readings(token)
        self.assertEqual(reply.status, 403)
        self.assertEqual(reply.body["success"], False)


class LoginLimitTest(ThermaCoreCase):
    def test_ten_logins_a_minute_then_429(self) -> None:
        statuses = [self.login(password="wrong").status for _ in range(10)]
        self.assertEqual(statuses, [401] * 10)
        reply = self.login()
        self.assertEqual(reply.status, 429)
        self.assertEqual(reply.body["error"]["code"], "RATE_LIMIT_EXCEEDED")
        self.clock.now += 60
        self.assertEqual(self.login().status, 200)

    def test_the_limit_is_configurable(self) -> None:
        thermacore.configure(self.store, login_limit=2, login_window_seconds=10)
        self.assertEqual([self.login().status for _ in range(3)], [200, 200, 429])
        self.clock.now += 10
        self.assertEqual(self.login().status, 200)


class HealthTest(ThermaCoreCase):
    def test_api_health_reports_the_database(self) -> None:
        reply = self.call("GET", "/api/v1/health")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.body["status"], "operational")
        self.assertEqual(reply.body["database"], {"status": "healthy", "connected": True})
        self.assertRegex(reply.body["timestamp"], NAIVE_STAMP)

    def test_api_health_is_503_degraded_when_the_database_is_gone(self) -> None:
        self.store.close()
        reply = self.call("GET", "/api/v1/health")
        self.assertEqual(reply.status, 503)
        self.assertEqual(reply.body["status"], "degraded")
        self.assertEqual(reply.body["database"]["connected"], False)


class DemoUserTest(ThermaCoreCase):
    def test_demo_password_file_is_private_works_and_survives_a_restart(self) -> None:
        folder = temp_dir(self)
        path = thermacore.ensure_demo_user(self.store, folder / "thermacore-credentials.json")
        doc = json.loads(path.read_text(encoding="utf-8"))
        self.assertEqual(doc["username"], "demo")
        self.assertNotEqual(doc["password"], PASSWORD)  # a fresh random one replaced the test's
        if os.name == "posix":
            self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(self.login(password=doc["password"]).status, 200)
        thermacore.ensure_demo_user(self.store, path)
        self.assertEqual(json.loads(path.read_text(encoding="utf-8")), doc)  # still valid: kept
        path.write_text(json.dumps({"username": "demo", "password": "stale"}), encoding="utf-8")
        thermacore.ensure_demo_user(self.store, path)
        renewed = json.loads(path.read_text(encoding="utf-8"))["password"]
        self.assertNotEqual(renewed, "stale")
        self.assertEqual(self.login(password=renewed).status, 200)

    def test_the_file_goes_beside_the_database_or_in_a_temp_folder_for_memory(self) -> None:
        folder = temp_dir(self)
        self.assertEqual(thermacore.default_credentials_file(str(folder / "r.sqlite3")),
                         folder.resolve() / "thermacore-credentials.json")
        memory = thermacore.default_credentials_file(":memory:")
        self.addCleanup(memory.parent.rmdir)
        self.assertTrue(memory.parent.is_dir())
        self.assertTrue(memory.parent.name.startswith("iotpost-thermacore-"))


class OverTheWireTest(TwinTestCase):
    def test_login_and_readings_over_tls(self) -> None:
        twin = self.start_twin()
        thermacore.create_user(twin.store, "demo", PASSWORD)
        conn = self.connect(twin)
        status, body, response = request_json(conn, "POST", "/api/v1/auth/login",
                                               {"username": "demo", "password": PASSWORD})
        self.assertEqual(status, 200, body)
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        status, rows, _ = request_json(conn, "GET", "/api/v1/units/1/readings?hours=1&sensor_type=temperature",
                                       headers={"Authorization": "Bearer " + body["data"]["access_token"]})
        self.assertEqual(status, 200)
        self.assertEqual(rows[0]["sensor"]["unit_of_measurement"], "\u00b0C")


def thermacore_epoch(stamp: str) -> float:
    import datetime as _dt

    return _dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=_dt.timezone.utc).timestamp()


if __name__ == "__main__":
    unittest.main()
