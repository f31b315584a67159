"""The twin answers IoTFlow's and the IoT Connectivity Layer's device API as PROTOCOLS.md records it.

Usage: python -m unittest tests.test_receiver_iotflow

Most checks dispatch in process on a store with a clock the test moves (rate-limit windows pass in
no time); the 429's headers and the shared paths are also checked over real TLS.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import unittest
from typing import Any, Dict, Optional

from iotpost.receiver.iotflow import (DEMO_USER_ID, NO_LIMITS, RateLimit, RateLimits, parse_rate_limits,
                                      set_device_status, set_rate_limits)
from iotpost.receiver.replies import Reply
from iotpost.receiver.routes import dispatch
from iotpost.receiver.store import TelemetryStore, key_digest
from tests.twin_support import TEST_API_KEY, TEST_DEVICE_ID, TwinTestCase, request_json, temp_dir

START = 1_795_000_000.0  # 2026-11-18, a fixed "now"
RECORD_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
NAIVE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?$")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class IotflowContract(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = TelemetryStore(clock=self.clock)
        self.addCleanup(self.store.close)

    def call(self, method: str, path: str, body: Any = None, key: Optional[str] = None,
             headers: Optional[Dict[str, str]] = None) -> Reply:
        raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json"}
        if key is not None:
            all_headers["X-API-Key"] = key
        all_headers.update(headers or {})
        return dispatch(method, path, body=raw, headers=all_headers, store=self.store)

    def register(self, name: str = "sensor-1", **fields: Any) -> Dict[str, Any]:
        body = {"name": name, "device_type": "sensor", "user_id": DEMO_USER_ID}
        body.update(fields)
        reply = self.call("POST", "/api/v1/devices/register", body)
        self.assertEqual(reply.status, 201, reply.body)
        return reply.body["device"]

    # -- register ------------------------------------------------------------------------------

    def test_register_answers_201_with_a_32_character_key_and_an_integer_id(self) -> None:
        reply = self.call("POST", "/api/v1/devices/register",
                          {"name": "sensor-1", "device_type": "sensor", "user_id": DEMO_USER_ID,
                           "location": "Lab", "firmware_version": "1.2.3", "hardware_version": "v2"})
        self.assertEqual(reply.status, 201)
        self.assertEqual(reply.body["message"], "Device registered successfully")
        device = reply.body["device"]
        self.assertRegex(device["api_key"], r"^[A-Za-z0-9]{32}$")
        self.assertIsInstance(device["id"], int)
        self.assertEqual((device["status"], device["user_id"], device["location"]), ("active", 1, "Lab"))
        self.assertEqual(device["owner"]["username"], "demo")
        self.assertRegex(device["created_at"], NAIVE_TIME)
        second = self.register("sensor-2")
        self.assertEqual(second["id"], device["id"] + 1)
        self.assertNotEqual(second["api_key"], device["api_key"])

    def test_keys_are_stored_hashed(self) -> None:
        folder = temp_dir(self)
        store = TelemetryStore(folder / "twin.sqlite3")
        self.addCleanup(store.close)
        reply = dispatch("POST", "/api/v1/devices/register", headers={"Content-Type": "application/json"},
                         body=json.dumps({"name": "n", "device_type": "t", "user_id": DEMO_USER_ID}).encode(),
                         store=store)
        key = reply.body["device"]["api_key"]
        rows = store._query("SELECT key_sha256 FROM iotflow_devices")
        self.assertEqual([bytes(r[0]) for r in rows], [key_digest(key)])
        store.close()
        for path in folder.iterdir():
            self.assertNotIn(key.encode(), path.read_bytes(), path.name)

    def test_register_refusals_in_the_platforms_words(self) -> None:
        reply = self.call("POST", "/api/v1/devices/register", {"name": "x"})
        self.assertEqual((reply.status, reply.body), (400, {"error": "Missing required fields",
                                                             "message": "Required fields: device_type, user_id"}))
        reply = self.call("POST", "/api/v1/devices/register", {"name": "x", "device_type": "sensor"})
        self.assertEqual(reply.body["message"], "Required fields: user_id")
        reply = self.call("POST", "/api/v1/devices/register",
                          {"name": "x", "device_type": "sensor", "user_id": "ffffffffffffffffffffffffffffffff"})
        self.assertEqual((reply.status, reply.body["error"]), (401, "Authentication failed"))
        self.register("x")
        reply = self.call("POST", "/api/v1/devices/register",
                          {"name": "x", "device_type": "other", "user_id": DEMO_USER_ID})
        self.assertEqual((reply.status, reply.body), (409, {"error": "Device name already exists",
                                                             "message": "Please choose a different device name"}))
        self.assertEqual(self.call("POST", "/api/v1/devices/register", b"").status, 400)

    # -- IoTFlow telemetry ---------------------------------------------------------------------

    def test_telemetry_201_and_checks_in_the_observed_order(self) -> None:
        key = self.register()["api_key"]
        self.assertEqual(self.call("POST", "/api/v1/telemetry", {}, key).body, {"error": "No data provided"})
        self.assertEqual(self.call("POST", "/api/v1/telemetry", {"data": {}}, key).body,
                         {"error": "Telemetry data is required"})
        reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}, "timestamp": "yesterday"}, key)
        self.assertEqual((reply.status, reply.body),
                         (400, {"error": "Invalid timestamp format. Use ISO 8601 format."}))
        reply = self.call("POST", "/api/v1/telemetry",
                          {"data": {"t": 1}, "metadata": {}, "timestamp": "2026-11-18T10:00:00Z"}, key)
        self.assertEqual(reply.status, 201)
        self.assertEqual(reply.body, {"message": "Telemetry data stored successfully", "device_id": 1,
                                      "device_name": "sensor-1", "timestamp": "2026-11-18T10:00:00"})
        self.assertEqual(reply.headers, {})

    def test_an_inactive_device_is_refused_with_403(self) -> None:
        device = self.register()
        set_device_status(self.store, device["id"], "inactive")
        reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, device["api_key"])
        self.assertEqual((reply.status, reply.body), (403, {"error": "Device inactive"}))

    def test_shared_paths_stay_tesaiots_for_any_other_key(self) -> None:
        self.store.register_device(TEST_DEVICE_ID, TEST_API_KEY)
        self.register()
        reply = self.call("POST", "/api/v1/telemetry", {"device_id": TEST_DEVICE_ID, "data": {"t": 1}},
                          headers={"X-API-KEY": TEST_API_KEY})
        self.assertEqual(reply.status, 200)
        self.assertTrue(reply.body["success"])
        reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, "not-a-key")
        self.assertEqual((reply.status, reply.body["code"]), (401, "INVALID_API_KEY"))  # TESAIoT's words
        self.assertEqual(self.call("GET", "/api/v1/telemetry/%s/latest" % TEST_DEVICE_ID,
                                   headers={"X-API-KEY": TEST_API_KEY}).status, 200)

    # -- read-back -----------------------------------------------------------------------------

    def test_latest_history_and_mismatch(self) -> None:
        key = self.register()["api_key"]
        other = self.register("sensor-2")
        reply = self.call("GET", "/api/v1/telemetry/1/latest", key=key)
        self.assertEqual((reply.status, reply.body["message"]), (404, "No telemetry data found"))
        for minute, value in ((1, 20.0), (3, 22.0), (2, 21.0)):
            self.call("POST", "/api/v1/telemetry", {"data": {"temperature": value, "nested": {"a": [1]}},
                                                   "metadata": {"room": "lab"},
                                                   "timestamp": "2026-11-18T10:0%d:00.1234Z" % minute}, key)
        latest = self.call("GET", "/api/v1/telemetry/1/latest", key=key).body
        self.assertEqual(latest["latest_data"], {"timestamp": "2026-11-18T10:03:00.123+00:00", "device_id": "1",
                                                 "temperature": 22.0, "nested": {"a": [1]}, "meta_room": "lab",
                                                 "meta_device_type": "sensor"})
        self.assertEqual((latest["device_name"], latest["device_type"]), ("sensor-1", "sensor"))
        history = self.call("GET", "/api/v1/telemetry/1?start_time=-30d&limit=2", key=key).body
        self.assertEqual([r["temperature"] for r in history["data"]], [22.0, 21.0])
        self.assertEqual((history["count"], history["start_time"]), (2, "-30d"))
        for record in history["data"]:
            self.assertRegex(record["timestamp"], RECORD_TIME)
        recent = self.call("GET", "/api/v1/telemetry/1", key=key).body  # default start_time -1h: days ago
        self.assertEqual((recent["count"], recent["start_time"]), (0, "-1h"))
        since = self.call("GET", "/api/v1/telemetry/1?start_time=2026-11-18T10:02:00Z", key=key).body
        self.assertEqual(since["count"], 2)
        for path in ("/api/v1/telemetry/2", "/api/v1/telemetry/2/latest", "/api/v1/telemetry/2/aggregated?field=t"):
            reply = self.call("GET", path, key=key)
            self.assertEqual((reply.status, reply.body), (403, {"error": "Forbidden: device mismatch"}), path)
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1?limit=abc", key=key).status, 400)
        self.assertEqual(self.call("GET", "/api/v1/telemetry/2", key=other["api_key"]).status, 200)

    def test_aggregated(self) -> None:
        key = self.register()["api_key"]
        for stamp, value in (("10:05", 1), ("10:10", 2), ("10:50", 6), ("11:20", 10)):
            self.call("POST", "/api/v1/telemetry",
                      {"data": {"t": value}, "timestamp": "2026-11-18T%s:00Z" % stamp}, key)
        base = "/api/v1/telemetry/1/aggregated?field=t&start_time=-30d"
        mean = self.call("GET", base, key=key).body
        self.assertEqual((mean["aggregation"], mean["window"], mean["count"]), ("mean", "1h", 2))
        self.assertEqual([p["value"] for p in mean["data"]], [3, 10])
        self.assertEqual(mean["data"][0]["timestamp"], "2026-11-18T10:00:00.000+00:00")
        median = self.call("GET", base + "&aggregation=median&window=1d", key=key).body
        self.assertEqual([p["value"] for p in median["data"]], [4])
        for how, expected in (("sum", 19), ("count", 4), ("min", 1), ("max", 10), ("first", 1), ("last", 10)):
            body = self.call("GET", base + "&window=1d&aggregation=" + how, key=key).body
            self.assertEqual(body["data"][0]["value"], expected, how)
        self.assertEqual(self.call("GET", base + "&aggregation=mode", key=key).status, 400)
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1/aggregated", key=key).status, 400)

    # -- Connectivity, heartbeat, status ---------------------------------------------------------

    def test_connectivity_telemetry_post_and_get(self) -> None:
        key = self.register()["api_key"]
        reply = self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}})
        self.assertEqual((reply.status, reply.body),
                         (401, {"error": "API key required", "message": "Please provide API key in X-API-Key header"}))
        reply = self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}, "wrong")
        self.assertEqual((reply.status, reply.body["error"]), (401, "Invalid API key"))
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", b"{", key).body, {"error": "Invalid JSON"})
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {"metadata": {}}, key).body["message"],
                         "Required fields: data")
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {"data": [1]}, key).body["error"],
                         "Invalid data format")
        for value, kind in ((1, "telemetry"), (2, "event"), (3, "telemetry")):
            self.clock.now += 1
            reply = self.call("POST", "/api/v1/devices/telemetry",
                              {"data": {"t": value}, "metadata": {"battery": 85}, "type": kind}, key)
            self.assertEqual(reply.status, 201)
        body = self.call("GET", "/api/v1/devices/telemetry", key=key).body
        self.assertEqual((body["status"], body["count"], body["limit"], body["start_time"]), ("success", 3, 100, "-24h"))
        self.assertEqual([r["t"] for r in body["telemetry"]], [3, 2, 1])
        self.assertEqual(body["telemetry"][0]["meta_battery"], 85)
        typed = self.call("GET", "/api/v1/devices/telemetry?type=telemetry&limit=5000", key=key).body
        self.assertEqual(([r["t"] for r in typed["telemetry"]], typed["limit"]), ([3, 1], 1000))

    def test_heartbeat_and_status(self) -> None:
        device = self.register()
        key = device["api_key"]
        reply = self.call("GET", "/api/v1/devices/status", key="wrong")
        self.assertEqual((reply.status, reply.body),
                         (401, {"error": "Invalid API key", "message": "The provided API key is not valid"}))
        status = self.call("GET", "/api/v1/devices/status", key=key).body
        self.assertEqual((status["status"], status["device"]["is_online"], status["device"]["telemetry_count"]),
                         ("success", False, 0))
        reply = self.call("POST", "/api/v1/devices/heartbeat", key=key)
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.body, {"device_id": device["id"], "message": "Heartbeat received", "status": "online",
                                      "timestamp": "2026-11-18T11:06:40+00:00"})
        self.assertTrue(self.call("GET", "/api/v1/devices/status", key=key).body["device"]["is_online"])
        self.clock.now += 301
        self.assertFalse(self.call("GET", "/api/v1/devices/status", key=key).body["device"]["is_online"])
        self.assertEqual(self.call("POST", "/api/v1/devices/heartbeat", key="wrong").status, 401)

    def test_health_is_the_union_of_the_platforms(self) -> None:
        reply = self.call("GET", "/health")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.body["status"], "healthy")
        self.assertEqual(reply.body["message"], "IoT Connectivity Layer is running")
        self.assertIn("version", reply.body)

    # -- rate limits ---------------------------------------------------------------------------

    def test_heartbeat_and_connectivity_telemetry_share_one_window_with_their_own_limits(self) -> None:
        set_rate_limits(self.store, RateLimits(telemetry=RateLimit(3, 60), heartbeat=RateLimit(2, 60), register=None))
        key = self.register()["api_key"]
        self.assertEqual(self.call("POST", "/api/v1/devices/heartbeat", key=key).status, 200)
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}, key).status, 201)
        self.clock.now += 20
        reply = self.call("POST", "/api/v1/devices/heartbeat", key=key)  # third in the window, limit 2
        self.assertEqual(reply.status, 429)
        self.assertEqual(reply.body, {"error": "Rate limit exceeded", "message": "Maximum 2 requests per 60 seconds",
                                      "retry_after": 40, "limit": 2, "window": 60})
        self.assertEqual(reply.headers, {})
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}, key).status, 429)
        self.assertEqual(self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, key).status, 201)  # not limited
        self.clock.now += 40
        self.assertEqual(self.call("POST", "/api/v1/devices/heartbeat", key=key).status, 200)
        other = self.register("sensor-2")["api_key"]  # per device
        self.assertEqual(self.call("POST", "/api/v1/devices/heartbeat", key=other).status, 200)

    def test_register_limit_and_defaults(self) -> None:
        self.assertEqual(RateLimits(), parse_rate_limits("default"))
        self.assertEqual(RateLimits().heartbeat, RateLimit(30, 60))
        self.assertEqual(RateLimits().telemetry, RateLimit(100, 60))
        set_rate_limits(self.store, parse_rate_limits("register=2/300,heartbeat=off"))
        self.register("a")
        self.register("b")
        reply = self.call("POST", "/api/v1/devices/register", {"name": "c", "device_type": "t", "user_id": DEMO_USER_ID})
        self.assertEqual((reply.status, reply.body["retry_after"], reply.body["limit"]), (429, 300, 2))
        key = self.store._query("SELECT 1 FROM iotflow_devices WHERE name = 'c'")
        self.assertEqual(key, [])
        set_rate_limits(self.store, NO_LIMITS)
        self.register("c")

    def test_parse_rate_limits(self) -> None:
        self.assertEqual(parse_rate_limits("off"), NO_LIMITS)
        self.assertEqual(parse_rate_limits("telemetry=5/10").telemetry, RateLimit(5, 10))
        for bad in ("telemetry", "bogus=1/2", "heartbeat=0/60", "heartbeat=1/x", "register=1"):
            with self.assertRaises(ValueError, msg=bad):
                parse_rate_limits(bad)


class IotflowOverTls(TwinTestCase):
    def test_429_over_the_wire_has_retry_after_in_the_body_and_no_header(self) -> None:
        twin = self.start_twin(iotflow_limits=parse_rate_limits("heartbeat=1/60"))
        conn = self.connect(twin)
        status, body, _ = request_json(conn, "POST", "/api/v1/devices/register",
                                       {"name": "wire", "device_type": "sensor", "user_id": DEMO_USER_ID})
        self.assertEqual(status, 201)
        key = body["device"]["api_key"]
        self.assertEqual(request_json(conn, "POST", "/api/v1/devices/heartbeat", headers={"X-API-Key": key})[0], 200)
        status, body, response = request_json(conn, "POST", "/api/v1/devices/heartbeat", headers={"X-API-Key": key})
        self.assertEqual(status, 429)
        self.assertIsNone(response.getheader("Retry-After"))
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertTrue(1 <= body["retry_after"] <= 60)
        status, body, _ = request_json(conn, "GET", "/health")
        self.assertEqual((status, body["message"]), (200, "IoT Connectivity Layer is running"))

    def test_receiver_flag_is_checked(self) -> None:
        from iotpost.receiver.cli import build_parser, settings_from_args

        ns = build_parser().parse_args(["--iotflow-rate-limits", "heartbeat=2/5"])
        self.assertEqual(parse_rate_limits(settings_from_args(ns, {}).iotflow_limits).heartbeat, RateLimit(2, 5))
        errors = io.StringIO()
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(errors):
            build_parser().parse_args(["--iotflow-rate-limits", "heartbeat=fast"])
        self.assertIn("heartbeat takes REQUESTS/SECONDS", errors.getvalue())


if __name__ == "__main__":
    unittest.main()
