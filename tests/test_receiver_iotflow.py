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
                                      set_device_status, set_iotdb_available, set_rate_limits, telemetry_rows)
from iotpost.receiver.replies import Reply
from iotpost.receiver.routes import dispatch
from iotpost.receiver.store import TelemetryStore, key_digest
from tests.twin_support import TEST_API_KEY, TEST_DEVICE_ID, TwinTestCase, raw_exchange, request_json, temp_dir

START = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC, a fixed "now" (40 s into its minute, 100 s into its 5 minutes)
# isoformat() of a UTC time in whole ms, as the real server renders it: .367000, or no fraction on a whole second
RECORD_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}000)?\+00:00$")
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
                                      "device_name": "sensor-1", "timestamp": "2026-11-18T10:00:00+00:00"})
        self.assertEqual(reply.headers, {})
        reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, key)  # no timestamp: now, in UTC
        self.assertEqual(reply.body["timestamp"], "2026-11-18T11:06:40+00:00")

    def test_connectivity_201_body(self) -> None:
        key = self.register()["api_key"]
        self.clock.now += 0.25
        reply = self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}, key)
        self.assertEqual((reply.status, reply.body),
                         (201, {"message": "Telemetry data received successfully", "device_id": 1,
                                "device_name": "sensor-1", "timestamp": "2026-11-18T11:06:40.250000+00:00",
                                "stored_in_iotdb": True}))

    def test_bad_json_is_a_500_as_the_real_routes_fail_on_it(self) -> None:
        key = self.register()["api_key"]
        reply = self.call("POST", "/api/v1/telemetry", b"{not json", key)
        self.assertEqual(reply.status, 500)
        self.assertTrue(reply.body["error"].startswith("Internal server error: 400 Bad Request: "), reply.body)
        reply = self.call("POST", "/api/v1/devices/telemetry", b"{", key)
        self.assertEqual((reply.status, reply.body), (500, {"error": "Internal server error"}))
        self.assertEqual(telemetry_rows(self.store, 1), [])

    def test_an_inactive_device_sends_and_reads_on_iotflow_but_not_on_connectivity(self) -> None:
        device = self.register()
        key = device["api_key"]
        set_device_status(self.store, device["id"], "inactive")
        self.assertEqual(self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, key).status, 201)
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1/latest", key=key).status, 200)
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1", key=key).body["count"], 1)
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1/aggregated?field=t", key=key).status, 200)
        refused = (403, {"error": "Device inactive", "message": "Device is currently inactive"})
        for method, path, body in (("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}),
                                   ("GET", "/api/v1/devices/telemetry", None),
                                   ("POST", "/api/v1/devices/heartbeat", None),
                                   ("GET", "/api/v1/devices/status", None)):
            reply = self.call(method, path, body, key)
            self.assertEqual((reply.status, reply.body), refused, path)

    def test_shared_paths_stay_tesaiots_for_any_other_key(self) -> None:
        self.store.register_device(TEST_DEVICE_ID, TEST_API_KEY)
        self.register()
        reply = self.call("POST", "/api/v1/telemetry", {"device_id": TEST_DEVICE_ID, "data": {"t": 1}},
                          headers={"X-API-KEY": TEST_API_KEY})
        self.assertEqual(reply.status, 200)
        self.assertTrue(reply.body["success"])
        reply = self.call("POST", "/api/v1/telemetry", {"device_id": "x", "data": {"t": 1}}, "not-a-key")
        self.assertEqual((reply.status, reply.body["code"]), (401, "INVALID_API_KEY"))  # TESAIoT's words
        reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, TEST_API_KEY,  # TESAIoT's key
                          headers={"X-API-KEY": TEST_API_KEY})  # (one header in HTTP; a plain dict here)
        self.assertEqual((reply.status, reply.body["code"]), (400, "VALIDATION_ERROR"))
        self.assertEqual(self.call("GET", "/api/v1/telemetry/%s/latest" % TEST_DEVICE_ID,
                                   headers={"X-API-KEY": TEST_API_KEY}).status, 200)
        # no key on a read: nothing in the request says which platform; TESAIoT answers (ARCHITECTURE.md)
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1").body["code"], "INVALID_API_KEY")

    def test_a_device_registered_after_the_shared_path_was_used_is_iotflows_at_once(self) -> None:
        # the first TESAIoT POST reads IoTFlow's key digests into memory; a register must not go unseen
        self.store.register_device(TEST_DEVICE_ID, TEST_API_KEY)
        reply = self.call("POST", "/api/v1/telemetry", {"device_id": TEST_DEVICE_ID, "data": {"t": 1}},
                          headers={"X-API-KEY": TEST_API_KEY})
        self.assertEqual(reply.status, 200)
        for name in ("late-1", "late-2"):
            key = self.register(name)["api_key"]
            reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 2}}, key)
            self.assertEqual(reply.status, 201, reply.body)  # IoTFlow's answer, not TESAIoT's 401

    def test_an_iotflow_shaped_post_with_an_unknown_key_gets_iotflows_answer(self) -> None:
        self.store.register_device(TEST_DEVICE_ID, TEST_API_KEY)
        self.register()
        for key in ("not-a-key", None):
            reply = self.call("POST", "/api/v1/telemetry", {}, key)
            self.assertEqual((reply.status, reply.body), (400, {"error": "No data provided"}), key)
        reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, "not-a-key")
        self.assertEqual((reply.status, reply.body), (401, {"error": "Invalid API key"}))
        reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}})
        self.assertEqual((reply.status, reply.body), (401, {"error": "API key required"}))

    # -- read-back -----------------------------------------------------------------------------

    def test_latest_history_and_mismatch(self) -> None:
        key = self.register()["api_key"]
        other = self.register("sensor-2")
        reply = self.call("GET", "/api/v1/telemetry/1/latest", key=key)
        self.assertEqual((reply.status, reply.body), (404, {"device_id": 1, "device_name": "sensor-1",
                                                            "message": "No telemetry data found",
                                                            "iotdb_available": True}))
        for minute, value in ((1, 20.0), (3, 22.0), (2, 21.0)):
            self.call("POST", "/api/v1/telemetry", {"data": {"temperature": value, "nested": {"a": [1]}},
                                                   "metadata": {"room": "lab"},
                                                   "timestamp": "2026-11-18T10:0%d:00.1234Z" % minute}, key)
        latest = self.call("GET", "/api/v1/telemetry/1/latest", key=key).body
        self.assertEqual(latest["latest_data"], {"timestamp": "2026-11-18T10:03:00.123000+00:00", "device_id": "1",
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
        self.assertEqual(mean["data"][0]["timestamp"], "2026-11-18T10:00:00+00:00")
        self.assertEqual((mean["device_name"], mean["iotdb_available"]), ("sensor-1", True))
        median = self.call("GET", base + "&aggregation=median&window=1d", key=key).body
        self.assertEqual([p["value"] for p in median["data"]], [4])
        for how, expected in (("sum", 19), ("count", 4), ("min", 1), ("max", 10), ("first", 1), ("last", 10)):
            body = self.call("GET", base + "&window=1d&aggregation=" + how, key=key).body
            self.assertEqual(body["data"][0]["value"], expected, how)
        reply = self.call("GET", base + "&aggregation=mode", key=key)
        self.assertEqual((reply.status, reply.body), (400, {"error": "Invalid aggregation function", "valid_functions": [
            "mean", "sum", "count", "min", "max", "first", "last", "median"]}))
        default = self.call("GET", "/api/v1/telemetry/1/aggregated?start_time=-30d", key=key).body
        self.assertEqual((default["field"], default["count"]), ("temperature", 0))  # the real default field

    # -- Connectivity, heartbeat, status ---------------------------------------------------------

    def test_connectivity_telemetry_post_and_get(self) -> None:
        key = self.register()["api_key"]
        reply = self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}})
        self.assertEqual((reply.status, reply.body),
                         (401, {"error": "API key required", "message": "Please provide API key in X-API-Key header"}))
        reply = self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}, "wrong")
        self.assertEqual((reply.status, reply.body["error"]), (401, "Invalid API key"))
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {}, key).body["error"], "Invalid JSON")
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
        self.clock.now += 5  # 45 s into the wall-clock minute: the window is that minute, not the next 60 s
        self.assertEqual(self.call("POST", "/api/v1/devices/heartbeat", key=key).status, 200)
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}, key).status, 201)
        self.clock.now += 10
        reply = self.call("POST", "/api/v1/devices/heartbeat", key=key)  # third in the minute, limit 2
        self.assertEqual(reply.status, 429)
        self.assertEqual(reply.body, {"error": "Rate limit exceeded", "message": "Maximum 2 requests per 60 seconds",
                                      "retry_after": 5, "limit": 2, "window": 60})
        self.assertEqual(reply.headers, {})
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}, key).status, 201)  # 3rd
        self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 1}}, key).status, 429)
        self.assertEqual(self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, key).status, 201)  # not limited
        self.clock.now += 5  # the next minute: counted afresh, though the first request was 15 s ago
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
        self.assertEqual((reply.status, reply.body["retry_after"], reply.body["limit"]), (429, 200, 2))  # slot end
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

    # -- the store as the real server keeps it ---------------------------------------------------

    def test_text_values_are_read_back_parsed_as_json(self) -> None:
        key = self.register()["api_key"]
        self.call("POST", "/api/v1/telemetry", {"data": {"count": "101", "on": "true", "word": "hello", "n": 2.5,
                                                         "gone": "nan", "big": "NaN"},
                                                "metadata": {"floor": "3", "tags": ["a"]}}, key)
        record = self.call("GET", "/api/v1/telemetry/1/latest", key=key).body["latest_data"]
        self.assertEqual({k: record[k] for k in ("count", "on", "word", "n", "gone", "big", "meta_floor", "meta_tags")},
                         {"count": 101, "on": True, "word": "hello", "n": 2.5, "gone": None, "big": "NaN",
                          "meta_floor": 3, "meta_tags": ["a"]})
        history = self.call("GET", "/api/v1/telemetry/1", key=key).body["data"]
        self.assertEqual((history[0]["count"], history[0]["on"]), (101, True))

    def test_a_second_write_in_the_same_millisecond_replaces_the_first_in_its_store(self) -> None:
        key = self.register()["api_key"]
        stamp = "2026-11-18T11:00:00.123456Z"
        for value in (1, 2):
            reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": value}, "timestamp": stamp}, key)
            self.assertEqual(reply.status, 201)
        self.call("POST", "/api/v1/telemetry", {"data": {"t": 3}, "timestamp": "2026-11-18T11:00:00.124Z"}, key)
        for value in (4, 5):  # Connectivity: the store's clock, the same millisecond twice
            self.assertEqual(self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": value}}, key).status, 201)
        rows = telemetry_rows(self.store, 1)
        self.assertEqual([(r[1]["t"], r[4]) for r in rows], [(2, "iotflow"), (3, "iotflow"), (5, "connectivity")])
        data = self.call("GET", "/api/v1/telemetry/1?start_time=-1d", key=key).body["data"]
        self.assertEqual([(r["t"], r["timestamp"]) for r in data],
                         [(3, "2026-11-18T11:00:00.124000+00:00"), (2, "2026-11-18T11:00:00.123000+00:00")])

    def test_iotflow_and_connectivity_keep_separate_stores(self) -> None:
        key = self.register()["api_key"]
        self.call("POST", "/api/v1/telemetry", {"data": {"via": "iotflow"}, "metadata": {"room": "lab"}}, key)
        self.clock.now += 1
        self.call("POST", "/api/v1/devices/telemetry", {"data": {"via": "connectivity"}, "metadata": {"room": "lab"}},
                  key)
        iotflow = self.call("GET", "/api/v1/telemetry/1", key=key).body["data"]
        self.assertEqual([r["via"] for r in iotflow], ["iotflow"])
        self.assertNotIn("meta_user_id", iotflow[0])
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1/latest", key=key).body["latest_data"]["via"], "iotflow")
        connectivity = self.call("GET", "/api/v1/devices/telemetry", key=key).body["telemetry"]
        self.assertEqual(connectivity, [{"timestamp": "2026-11-18T11:06:41+00:00", "device_id": "1",
                                         "via": "connectivity", "meta_room": "lab", "meta_device_type": "sensor",
                                         "meta_user_id": 1}])

    def test_record_times_are_isoformat_of_whole_milliseconds(self) -> None:
        key = self.register()["api_key"]
        for stamp in ("2026-11-18T11:00:13Z", "2026-11-18T11:00:15.3679Z", "2026-11-18T18:00:16.5+07:00"):
            self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}, "timestamp": stamp}, key)
        data = self.call("GET", "/api/v1/telemetry/1", key=key).body["data"]
        self.assertEqual([r["timestamp"] for r in data], ["2026-11-18T11:00:16.500000+00:00",
                                                          "2026-11-18T11:00:15.367000+00:00",
                                                          "2026-11-18T11:00:13+00:00"])

    def test_start_time_is_read_as_the_real_server_reads_it(self) -> None:
        key = self.register()["api_key"]
        for minutes_ago in (10, 50, 90, 60 * 30):
            self.call("POST", "/api/v1/telemetry", {"data": {"ago": minutes_ago}, "timestamp": _ago(minutes_ago)}, key)
        self.clock.now += 1

        def found(start: str, path: str = "/api/v1/telemetry/1?start_time=") -> list:
            reply = self.call("GET", path + start, key=key)
            self.assertEqual(reply.status, 200, start)
            return [r["ago"] for r in reply.body["data"]]

        self.assertEqual(found("-1h"), [10, 50])
        self.assertEqual(found("-30m"), [10, 50])  # any other -... is one hour
        self.assertEqual(found("-2h"), [10, 50, 90])
        self.assertEqual(found("-2d"), [10, 50, 90, 1800])
        for nothing in ("-1.5h", "-xh", "yesterday"):
            self.assertEqual(found(nothing), [], nothing)
        self.assertEqual(found(_ago(60).replace("+", "%2B")), [10, 50])  # ISO 8601
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1/aggregated?field=ago&start_time=-1.5h",
                                   key=key).body["count"], 0)

    def test_iotdb_down_answers_as_the_real_server_does(self) -> None:
        key = self.register()["api_key"]
        self.call("POST", "/api/v1/telemetry", {"data": {"t": 1}}, key)
        set_iotdb_available(self.store, False)
        history = self.call("GET", "/api/v1/telemetry/1", key=key)
        self.assertEqual((history.status, history.body["count"], history.body["data"], history.body["iotdb_available"]),
                         (200, 0, [], False))
        latest = self.call("GET", "/api/v1/telemetry/1/latest", key=key)
        self.assertEqual((latest.status, latest.body), (404, {"device_id": 1, "device_name": "sensor-1",
                                                              "message": "No telemetry data found",
                                                              "iotdb_available": False}))
        reply = self.call("POST", "/api/v1/telemetry", {"data": {"t": 2}}, key)
        self.assertEqual((reply.status, reply.body["error"]), (500, "Failed to store telemetry data"))
        reply = self.call("POST", "/api/v1/devices/telemetry", {"data": {"t": 2}}, key)
        self.assertEqual((reply.status, reply.body["error"]), (500, "Telemetry storage failed"))
        set_iotdb_available(self.store, True)
        self.assertEqual(self.call("GET", "/api/v1/telemetry/1", key=key).body["count"], 1)

    def test_unset_register_fields_are_empty_text(self) -> None:
        device = self.register()
        self.assertEqual([device[f] for f in ("description", "location", "firmware_version", "hardware_version")],
                         ["", "", "", ""])
        status = self.call("GET", "/api/v1/devices/status", key=device["api_key"]).body["device"]
        self.assertEqual((status["description"], status["location"]), ("", ""))


def _ago(minutes: int) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(START - minutes * 60, tz=datetime.timezone.utc)
    return moment.isoformat()



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

    def test_a_post_without_content_length_has_an_empty_body(self) -> None:
        twin = self.start_twin()
        conn = self.connect(twin)
        status, body, _ = request_json(conn, "POST", "/api/v1/devices/register",
                                       {"name": "curl", "device_type": "sensor", "user_id": DEMO_USER_ID})
        key = body["device"]["api_key"]
        raw = raw_exchange(twin, ("POST /api/v1/devices/heartbeat HTTP/1.1\r\nHost: localhost\r\nX-API-Key: %s\r\n"
                                  "Connection: close\r\n\r\n" % key).encode())  # curl -X POST: no Content-Length
        head, _, answer = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertEqual(json.loads(answer)["message"], "Heartbeat received")

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
