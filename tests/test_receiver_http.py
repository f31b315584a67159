"""The twin over real TLS on 127.0.0.1: every status, keep-alive, TLS failures, go_down/come_back, CLI;
and the route functions it serves, called without any socket.

Usage: python -m unittest tests.test_receiver_http
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import unittest
import warnings
from pathlib import Path

from iotpost import __version__
from tests.twin_support import (
    CERTDATA,
    OTHER_API_KEY,
    OTHER_DEVICE_ID,
    PROJECT_ROOT,
    SAMPLE_BUNDLE,
    TEST_API_KEY,
    TEST_DEVICE_ID,
    TwinTestCase,
    client_context,
    connect,
    make_bundle,
    raw_exchange,
    request_json,
    temp_dir,
    wait_until,
)

AUTH = {"X-API-KEY": TEST_API_KEY}
SECRET = b"webhook-test-secret"


def payload(**overrides):
    body = {"device_id": TEST_DEVICE_ID, "timestamp": "2025-01-31T12:00:00Z",
            "data": {"spo2": 98, "temperature": 36.6, "temperature_unit": "°C"}}
    body.update(overrides)
    return body


def encode(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


TLINK_PUSH = {
    "flag": "00", "deviceUserid": 385, "parentUserId": "217",
    "sensorsDates": [{"times": "14:16:21", "sensorsId": 11922, "isAlarm": "0", "sensorsTypeId": 1,
                      "isLine": 1, "reVal": "5.0000", "value": "5.0"}],
    "time": "2019-05-10 14:16:21", "rawData": "2352", "deviceId": 2864,
}


class TelemetryPostTest(TwinTestCase):
    @classmethod
    def setUpClass(cls):
        cls.context = client_context()

    def setUp(self):
        self.twin = self.start_twin()
        self.conn = self.connect(self.twin, context=self.context)

    def post(self, body, headers=AUTH, content_type="application/json"):
        all_headers = dict(headers)
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        raw = body if isinstance(body, bytes) else encode(body)
        return request_json(self.conn, "POST", "/api/v1/telemetry", raw, all_headers)

    def test_accepted(self):
        status, answer, response = self.post(payload())
        self.assertEqual(status, 200)
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(answer["success"], True)
        self.assertEqual(answer["message"], "Telemetry data stored successfully")
        self.assertEqual(answer["device_id"], TEST_DEVICE_ID)
        self.assertEqual(answer["timestamp"], "2025-01-31T12:00:00Z")
        self.assertEqual(answer["metrics_stored"], ["spo2", "temperature", "temperature_unit"])
        stored = self.twin.store.all_telemetry(TEST_DEVICE_ID)
        self.assertEqual([r.telemetry_id for r in stored], [answer["telemetry_id"]])
        self.assertEqual(stored[0].data["temperature_unit"], "°C")
        seen = self.twin.requests[0]
        self.assertEqual((seen.method, seen.path), ("POST", "/api/v1/telemetry"))
        self.assertEqual(seen.headers["x-api-key"], TEST_API_KEY)
        self.assertEqual(seen.json()["device_id"], TEST_DEVICE_ID)

    def test_server_timestamp_and_charset(self):
        body = payload()
        del body["timestamp"]
        status, answer, _ = self.post(body, content_type="application/json; charset=utf-8")
        self.assertEqual(status, 200)
        self.assertTrue(answer["timestamp"].endswith("+00:00"), answer["timestamp"])

    def test_sample_bundle_device_is_registered(self):
        device = (SAMPLE_BUNDLE / "device_id.txt").read_text().strip().lower()
        key = (SAMPLE_BUNDLE / "api_key.txt").read_text().strip()
        status, _, _ = self.post(payload(device_id=device), headers={"X-API-KEY": key})
        self.assertEqual(status, 200)

    def test_rejections(self):
        cases = [
            ("415", payload(), AUTH, "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
            ("415 missing type", payload(), AUTH, None, 415, "UNSUPPORTED_MEDIA_TYPE"),
            ("401 missing key", payload(), {}, "application/json", 401, "INVALID_API_KEY"),
            ("401 unknown key", payload(), {"X-API-KEY": "tesa_ak_nope"}, "application/json", 401, "INVALID_API_KEY"),
            ("400 not json", b"{not json", AUTH, "application/json", 400, "INVALID_JSON"),
            ("400 not utf-8", b'{"device_id": "\xff"}', AUTH, "application/json", 400, "INVALID_JSON"),
            ("400 array", b"[1, 2]", AUTH, "application/json", 400, "INVALID_JSON"),
            ("400 NaN", b'{"device_id": NaN}', AUTH, "application/json", 400, "INVALID_JSON"),
            ("400 no device", {"data": {"x": 1}}, AUTH, "application/json", 400, "VALIDATION_ERROR"),
            ("400 no data", payload(data=None), AUTH, "application/json", 400, "VALIDATION_ERROR"),
            ("400 data list", payload(data=[1]), AUTH, "application/json", 400, "VALIDATION_ERROR"),
            ("400 data empty", payload(data={}), AUTH, "application/json", 400, "VALIDATION_ERROR"),
            ("400 bad timestamp", payload(timestamp="yesterday"), AUTH, "application/json", 400, "VALIDATION_ERROR"),
            ("400 numeric timestamp", payload(timestamp=1738324800), AUTH, "application/json", 400,
             "VALIDATION_ERROR"),
            ("403 other device", payload(device_id=OTHER_DEVICE_ID), AUTH, "application/json", 403,
             "DEVICE_ID_MISMATCH"),
        ]
        for name, body, headers, ctype, status, code in cases:
            with self.subTest(name):
                got, answer, response = self.post(body, headers, ctype)
                self.assertEqual((got, answer["code"]), (status, code), answer)
                self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(self.twin.store.count_telemetry(), 0)
        _, answer, _ = self.post({"data": {"x": 1}})
        self.assertEqual(answer, {"error": "device_id is required", "code": "VALIDATION_ERROR"})
        _, answer, _ = self.post(payload(), headers={})
        self.assertEqual(answer, {"error": "Invalid API key", "code": "INVALID_API_KEY"})
        _, answer, _ = self.post(payload(device_id=OTHER_DEVICE_ID))
        self.assertEqual(answer, {"error": "Device identity mismatch", "code": "DEVICE_ID_MISMATCH"})
        # all of that over one kept-alive connection
        self.assertEqual(self.twin.connections_accepted, 1)

    def test_check_order(self):
        # 415 before 401, 401 before 400, 400 before 403
        self.assertEqual(self.post(b"junk", headers={}, content_type="text/plain")[0], 415)
        self.assertEqual(self.post(b"junk", headers={})[0], 401)
        self.assertEqual(self.post(payload(device_id=OTHER_DEVICE_ID, data={}))[0], 400)

    def test_idempotent_replay(self):
        body = encode(payload())
        headers = dict(AUTH, **{"Idempotency-Key": "key-1"})
        status1, first, response1 = self.post(body, headers)
        status2, again, response2 = self.post(body, headers)
        self.assertEqual((status1, status2), (200, 200))
        self.assertEqual(again, first)
        self.assertIsNone(response1.getheader("Idempotent-Replayed"))
        self.assertEqual(response2.getheader("Idempotent-Replayed"), "true")
        self.assertEqual(self.twin.store.count_telemetry(), 1)
        self.assertEqual(self.twin.store.latest(TEST_DEVICE_ID).idempotency_key, "key-1")
        status, answer, _ = self.post(encode(payload(data={"spo2": 97})), headers)
        self.assertEqual(status, 422)
        self.assertEqual(answer, {"error": "Idempotency-Key reused with a different payload",
                                  "code": "IDEMPOTENCY_KEY_REUSED"})
        self.assertEqual(self.twin.store.count_telemetry(), 1)
        # without a key the same body is stored again
        self.post(body)
        self.post(body)
        self.assertEqual(self.twin.store.count_telemetry(), 3)

    def test_concurrent_identical_requests_store_once(self):
        body = encode(payload())
        headers = dict(AUTH, **{"Idempotency-Key": "race", "Content-Type": "application/json"})
        answers = []
        barrier = threading.Barrier(6)

        def post():
            conn = connect(self.twin, context=self.context)
            try:
                conn.connect()
                barrier.wait()
                answers.append(request_json(conn, "POST", "/api/v1/telemetry", body, headers)[:2])
            finally:
                conn.close()

        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([a[0] for a in answers], [200] * 6)
        self.assertEqual(len({a[1]["telemetry_id"] for a in answers}), 1)
        self.assertEqual(self.twin.store.count_telemetry(), 1)

    def test_too_large(self):
        self.twin.max_body = 1000
        big = encode(payload(data={"blob": "x" * 5000}))
        status, answer, response = self.post(big)
        self.assertEqual(status, 413)
        self.assertEqual(answer, {"error": "Payload too large", "code": "PAYLOAD_TOO_LARGE"})
        self.assertEqual(response.getheader("Connection"), "close")
        self.assertEqual(self.twin.store.count_telemetry(), 0)
        # http.client reconnects for the next request
        self.assertEqual(self.post(payload())[0], 200)

    def test_much_too_large_still_answers_413(self):
        self.twin.max_body = 1000
        status, _, _ = self.post(b"{" + b" " * 3_000_000 + b"}")
        self.assertEqual(status, 413)

    def test_a_post_without_length_has_an_empty_body(self):
        # RFC 9112 6.3: neither Content-Length nor Transfer-Encoding means no body (was a 411)
        raw = raw_exchange(self.twin, b"POST /api/v1/telemetry HTTP/1.1\r\nHost: localhost\r\n"
                                      b"X-API-KEY: " + TEST_API_KEY.encode() + b"\r\nConnection: close\r\n"
                                      b"Content-Type: application/json\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "), head)  # the route's answer to an empty body
        self.assertIn(b"Content-Type: application/json", head)
        self.assertEqual(json.loads(body)["code"], "INVALID_JSON")

    def test_bad_request_line_is_json(self):
        raw = raw_exchange(self.twin, b"GARBAGE\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "), head)
        self.assertIn("error", json.loads(body))

    def test_not_found_and_method_not_allowed(self):
        status, answer, _ = request_json(self.conn, "GET", "/nope")
        self.assertEqual((status, answer["code"]), (404, "NOT_FOUND"))
        status, answer, response = request_json(self.conn, "GET", "/api/v1/telemetry")
        self.assertEqual((status, answer["code"]), (405, "METHOD_NOT_ALLOWED"))
        self.assertEqual(response.getheader("Allow"), "POST")
        status, _, _ = request_json(self.conn, "DELETE", "/health")
        self.assertEqual(status, 405)
        status, _, response = request_json(self.conn, "HEAD", "/health")
        self.assertEqual(status, 501)

    def test_health(self):
        self.assertEqual(self.twin.requests, [])
        status, answer, _ = request_json(self.conn, "GET", "/health")
        # One /health for every platform: TESAIoT's fields as before, IoTFlow's message, ThermaCore's service
        # and its zone-less timestamp.
        stamp = answer.pop("timestamp", None)
        self.assertRegex(stamp or "", r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?$")
        self.assertEqual((status, answer), (200, {"status": "healthy", "version": __version__,
                                                  "message": "IoT Connectivity Layer is running",
                                                  "service": "ThermaCore SCADA API"}))

    def test_keep_alive(self):
        for i in range(5):
            status, _, _ = self.post(payload(data={"i": i}))
            self.assertEqual(status, 200)
            if i == 0:
                first_socket = self.conn.sock
            self.assertIs(self.conn.sock, first_socket)
        self.assertEqual(self.twin.connections_accepted, 1)
        self.assertEqual(len({r.client_port for r in self.twin.requests}), 1)
        self.assertEqual(self.twin.store.count_telemetry(), 5)

    def test_keep_alive_answers_are_not_held_back_by_nagle(self):
        # Nagle + delayed ACK would stall each keep-alive answer ~40 ms (bench/bench_keepalive.py
        # measures it); the handler must turn Nagle off on every connection it serves.
        from iotpost.receiver.server import TwinRequestHandler

        self.assertTrue(TwinRequestHandler.disable_nagle_algorithm)
        self.post(payload())
        self.assertEqual(self.twin.connections_accepted, 1)

    def test_handler_error_then_next_request_fine(self):
        from iotpost.receiver import FaultPlan

        self.twin.faults = FaultPlan.script(["error"])
        status, answer, _ = self.post(payload())
        self.assertEqual(status, 500)
        self.assertEqual(answer, {"error": "Failed to process telemetry data", "code": "PROCESSING_ERROR"})
        self.assertEqual(self.post(payload())[0], 200)
        self.assertEqual(self.twin.connections_accepted, 1)
        self.assertEqual(self.twin.store.count_telemetry(), 1)


class TelemetryReadBackTest(TwinTestCase):
    def setUp(self):
        self.twin = self.start_twin()
        self.conn = self.connect(self.twin)
        for minute in (0, 30, 10):
            stamp = "2025-01-31T12:%02d:00Z" % minute
            self.twin.store.store_telemetry(TEST_DEVICE_ID, {"minute": minute}, timestamp=stamp)

    def get(self, path, key=TEST_API_KEY):
        return request_json(self.conn, "GET", path, headers={"X-API-KEY": key} if key else {})

    def test_latest(self):
        status, answer, _ = self.get("/api/v1/telemetry/%s/latest" % TEST_DEVICE_ID)
        self.assertEqual(status, 200)
        self.assertEqual(answer["device_id"], TEST_DEVICE_ID)
        self.assertEqual(answer["telemetry"]["data"], {"minute": 30})
        self.assertEqual(set(answer["telemetry"]),
                         {"telemetry_id", "timestamp", "received_at", "data", "idempotency_key"})
        status, answer, _ = self.get("/api/v1/telemetry/%s/latest" % OTHER_DEVICE_ID, OTHER_API_KEY)
        self.assertEqual((status, answer), (404, {"error": "No telemetry for this device"}))

    def test_history(self):
        status, answer, _ = self.get("/api/v1/telemetry/%s" % TEST_DEVICE_ID)
        self.assertEqual(status, 200)
        self.assertEqual(answer["count"], 3)
        self.assertEqual([t["data"]["minute"] for t in answer["telemetry"]], [30, 10, 0])
        _, answer, _ = self.get("/api/v1/telemetry/%s?limit=2" % TEST_DEVICE_ID)
        self.assertEqual([t["data"]["minute"] for t in answer["telemetry"]], [30, 10])
        _, answer, _ = self.get("/api/v1/telemetry/%s?start_time=2025-01-31T12:05:00Z" % TEST_DEVICE_ID)
        self.assertEqual(answer["count"], 2)
        _, answer, _ = self.get("/api/v1/telemetry/%s?start_time=-1h&limit=5000" % TEST_DEVICE_ID)
        self.assertEqual(answer["count"], 0)  # all three are from January 2025

    def test_history_recent_relative(self):
        self.twin.store.store_telemetry(TEST_DEVICE_ID, {"now": True})
        _, answer, _ = self.get("/api/v1/telemetry/%s?start_time=-90s" % TEST_DEVICE_ID)
        self.assertEqual([t["data"] for t in answer["telemetry"]], [{"now": True}])

    def test_bad_parameters(self):
        for query in ("limit=0", "limit=abc", "limit=-1", "start_time=yesterday", "start_time=-1y"):
            with self.subTest(query):
                status, answer, _ = self.get("/api/v1/telemetry/%s?%s" % (TEST_DEVICE_ID, query))
                self.assertEqual((status, answer["code"]), (400, "VALIDATION_ERROR"))

    def test_auth(self):
        for path in ("/api/v1/telemetry/%s/latest", "/api/v1/telemetry/%s"):
            with self.subTest(path):
                self.assertEqual(self.get(path % TEST_DEVICE_ID, key=None)[0], 401)
                self.assertEqual(self.get(path % TEST_DEVICE_ID, key="tesa_ak_nope")[0], 401)
                status, answer, _ = self.get(path % TEST_DEVICE_ID, key=OTHER_API_KEY)
                self.assertEqual((status, answer), (403, {"error": "Forbidden: device mismatch"}))


class TlinkWebhookTest(TwinTestCase):
    def setUp(self):
        self.twin = self.start_twin(tlink_secret=SECRET)
        self.conn = self.connect(self.twin)

    def push(self, body, signature="sign"):
        raw = body if isinstance(body, bytes) else encode(body)
        headers = {"Content-Type": "application/json"}
        if signature == "sign":
            headers["X-TLink-Signature"] = sign(raw)
        elif signature is not None:
            headers["X-TLink-Signature"] = signature
        return request_json(self.conn, "POST", "/api/webhooks/tlink", raw, headers)

    def test_signed_push_stored_once(self):
        status, answer, _ = self.push(TLINK_PUSH)
        self.assertEqual((status, answer), (200, {"status": "ok", "storedReadings": 1, "newReadings": 1}))
        status, answer, _ = self.push(TLINK_PUSH)  # the reference still says 1: entries processed
        self.assertEqual((status, answer), (200, {"status": "ok", "storedReadings": 1, "newReadings": 0}))
        self.assertEqual(self.twin.store.count_tlink_readings(), 1)
        status, answer, _ = self.push(dict(TLINK_PUSH, sensorsDates=[]))  # the reference: `not []`
        self.assertEqual((status, answer),
                         (400, {"error": "deviceId, deviceUserid, and sensorsDates are required"}))

    def test_signature_missing_or_wrong(self):
        raw = encode(TLINK_PUSH)
        for name, signature in (("missing", None), ("wrong", sign(raw, b"other")),
                                ("uppercase", sign(raw).upper()), ("bare hex", sign(raw)[7:]),
                                ("non-ascii", "sha256=é")):
            with self.subTest(name):
                status, answer, _ = self.push(raw, signature)
                self.assertEqual((status, answer), (401, {"error": "Invalid webhook signature"}))
        # a re-serialised body fails: the signature covers the raw bytes
        status, _, _ = self.push(json.dumps(TLINK_PUSH, indent=1).encode(), sign(raw))
        self.assertEqual(status, 401)
        self.assertEqual(self.twin.store.count_tlink_readings(), 0)

    def test_bad_bodies(self):
        for body in (b"", b"not json", b"[1]", b"{}"):
            with self.subTest(body=body):
                status, answer, _ = self.push(body, signature=None)  # checked before the signature
                self.assertEqual((status, answer), (400, {"error": "Invalid or empty JSON body"}))
        partial = dict(TLINK_PUSH)
        del partial["deviceId"]
        status, answer, _ = self.push(partial)
        self.assertEqual((status, answer),
                         (400, {"error": "deviceId, deviceUserid, and sensorsDates are required"}))

    def test_no_secret_configured_accepts_unsigned(self):
        twin = self.start_twin()
        conn = self.connect(twin)
        status, answer, _ = request_json(conn, "POST", "/api/webhooks/tlink", TLINK_PUSH)
        self.assertEqual((status, answer["storedReadings"]), (200, 1))

    def test_read_back(self):
        self.push(TLINK_PUSH)
        self.push(dict(TLINK_PUSH, time="2019-05-10 14:17:21",
                       sensorsDates=[dict(TLINK_PUSH["sensorsDates"][0], value="6.0", times="14:17:21")]))
        status, answer, _ = request_json(self.conn, "GET", "/api/users/385/devices")
        self.assertEqual(status, 200)
        self.assertEqual((answer["userId"], answer["page"], answer["pageSize"], answer["total"]), (385, 1, 20, 1))
        sensor = answer["devices"][0]["sensors"][0]
        self.assertEqual((answer["devices"][0]["deviceId"], sensor["sensorsId"], sensor["sensorsTypeId"]),
                         (2864, 11922, 1))
        self.assertEqual(sensor["latest"]["value"], "6.0")
        self.assertEqual([r["value"] for r in sensor["history"]], ["6.0", "5.0"])
        _, answer, _ = request_json(self.conn, "GET", "/api/users/385/devices?historyLimit=1"
                                                      "&endTime=2019-05-10%2014:16:59")
        sensor = answer["devices"][0]["sensors"][0]
        self.assertEqual([r["value"] for r in sensor["history"]], ["5.0"])
        status, answer, _ = request_json(self.conn, "GET", "/api/users/385/devices/2864/latest")
        self.assertEqual((status, answer["sensors"][0]["latest"]["value"]), (200, "6.0"))
        status, answer, _ = request_json(self.conn, "GET", "/api/users/385/devices/2864/history?limit=1")
        self.assertEqual((status, answer["count"], answer["readings"][0]["value"]), (200, 1, "6.0"))
        status, answer, _ = request_json(self.conn, "GET", "/api/users/385/devices/2864/history"
                                                           "?startTime=2019-05-10T14:17:00")
        self.assertEqual([r["value"] for r in answer["readings"]], ["6.0"])

    def test_read_back_errors(self):
        self.push(TLINK_PUSH)
        for path, status in (("/api/users/999/devices", 404), ("/api/users/385/devices/1/latest", 404),
                             ("/api/users/999/devices/2864/history", 404),
                             ("/api/users/385/devices?page=0", 400), ("/api/users/385/devices?pageSize=x", 400),
                             ("/api/users/385/devices?startTime=soon", 400),
                             ("/api/users/385/devices/2864/history?limit=0", 400)):
            with self.subTest(path):
                self.assertEqual(request_json(self.conn, "GET", path)[0], status)


class RoutesWithoutSocketsTest(unittest.TestCase):
    """The route functions and dispatch() answer from an in-memory store, with no server at all."""

    def setUp(self):
        from iotpost.receiver.store import TelemetryStore

        self.store = TelemetryStore(":memory:")
        self.addCleanup(self.store.close)
        self.store.register_device(TEST_DEVICE_ID, TEST_API_KEY)

    def dispatch(self, method, target, body=b"", headers=None, tlink_secret=None):
        from iotpost.receiver.routes import dispatch

        return dispatch(method, target, body=body, headers=headers or {}, store=self.store,
                        tlink_secret=tlink_secret)

    def test_a_verified_client_certificate_stands_in_for_the_key(self):
        from iotpost.receiver import tesaiot_api
        from iotpost.receiver.api_request import ApiRequest

        json_type = {"Content-Type": "application/json"}
        body = encode(payload())
        for client_cert, headers, status in ((True, json_type, 200), (False, json_type, 401),
                                             (True, dict(json_type, **{"X-API-KEY": "wrong"}), 401)):
            with self.subTest(client_cert=client_cert, headers=headers):
                reply = tesaiot_api.post_telemetry(ApiRequest(self.store, headers, body, client_cert=client_cert))
                self.assertEqual(reply.status, status)
        stranger = encode(dict(payload(), device_id="11111111-2222-4333-8444-555555555555"))
        reply = tesaiot_api.post_telemetry(ApiRequest(self.store, json_type, stranger, client_cert=True))
        self.assertEqual(reply.status, 401)  # a certificate for a device the twin does not know

    def test_not_found_and_method_not_allowed(self):
        reply = self.dispatch("GET", "/nope")
        self.assertEqual((reply.status, reply.body), (404, {"error": "Not found", "code": "NOT_FOUND"}))
        reply = self.dispatch("GET", "/api/v1/telemetry?x=1")
        self.assertEqual((reply.status, reply.body["code"], reply.headers), (405, "METHOD_NOT_ALLOWED",
                                                                             {"Allow": "POST"}))

    def test_post_telemetry_then_read_back(self):
        from iotpost.receiver import tesaiot_api
        from iotpost.receiver.api_request import ApiRequest

        headers = dict(AUTH, **{"Content-Type": "application/json", "Idempotency-Key": "k-1"})
        body = encode(payload())
        first = tesaiot_api.post_telemetry(ApiRequest(self.store, headers, body))
        self.assertEqual((first.status, first.headers), (200, {}))
        again = tesaiot_api.post_telemetry(ApiRequest(self.store, headers, body))
        self.assertEqual((again.status, again.body, again.headers), (200, first.body, {"Idempotent-Replayed": "true"}))
        self.assertEqual(self.store.count_telemetry(), 1)
        reply = self.dispatch("GET", "/api/v1/telemetry/%s/latest" % TEST_DEVICE_ID, headers=AUTH)
        self.assertEqual((reply.status, reply.body["telemetry"]["data"]), (200, payload()["data"]))
        reply = self.dispatch("GET", "/api/v1/telemetry/%s?limit=0" % TEST_DEVICE_ID, headers=AUTH)
        self.assertEqual((reply.status, reply.body["code"]), (400, "VALIDATION_ERROR"))
        reply = self.dispatch("GET", "/api/v1/telemetry/%s" % OTHER_DEVICE_ID, headers=AUTH)
        self.assertEqual((reply.status, reply.body), (403, {"error": "Forbidden: device mismatch"}))

    def test_tlink_webhook_and_read_back(self):
        from iotpost.receiver import tlink_api
        from iotpost.receiver.api_request import ApiRequest

        raw = encode(TLINK_PUSH)
        unsigned = tlink_api.post_webhook(ApiRequest(self.store, {}, raw, tlink_secret=SECRET))
        self.assertEqual((unsigned.status, unsigned.body), (401, {"error": "Invalid webhook signature"}))
        signed = self.dispatch("POST", "/api/webhooks/tlink", raw, {"X-TLink-Signature": sign(raw)}, SECRET)
        self.assertEqual((signed.status, signed.body),
                         (200, {"status": "ok", "storedReadings": 1, "newReadings": 1}))
        reply = self.dispatch("GET", "/api/users/385/devices/2864/history?limit=1&limit=5")
        self.assertEqual((reply.status, reply.body["count"], reply.body["deviceId"]), (200, 1, 2864))
        reply = self.dispatch("GET", "/api/users/385/devices/1/latest")
        self.assertEqual((reply.status, reply.body), (404, {"error": "Device not found"}))

    def test_the_usual_target_shortcuts_answer_as_the_full_parse_does(self):
        """target_reply and dispatch skip urlsplit/unquote for a plain target: seeded targets show both ways agree."""
        import random
        from urllib.parse import unquote, urlsplit

        from iotpost.receiver import handler, routes

        def full_target_reply(target):
            if handler._NOT_PRINTABLE.search(target):
                return 400
            for segment in urlsplit(target).path.split("/"):
                decoded = unquote(segment)
                if decoded in (".", "..") or handler._HIDDEN_IN_SEGMENT.search(decoded):
                    return 404
            return None

        seen_paths = []
        routes._BY_PATH = _Recording(routes._BY_PATH, seen_paths)
        self.addCleanup(setattr, routes, "_BY_PATH", routes._BY_PATH.wrapped)
        rng = random.Random(12)
        checked = 0
        for _ in range(20000):
            target = "".join(rng.choice("/.%2fF5c\\a?#:x0") for _ in range(rng.randint(0, 9)))
            reply = handler.target_reply(target)
            self.assertEqual(None if reply is None else reply.status, full_target_reply(target), target)
            del seen_paths[:]
            self.dispatch("GET", target)
            if seen_paths:
                self.assertEqual(seen_paths[0], urlsplit(target).path, target)
                checked += 1
        self.assertGreater(checked, 10000)

    def test_query_readers(self):
        from iotpost.receiver.api_request import media_type, query_int, query_text

        query = {"limit": ["5", " 7 "], "big": ["5000"], "zero": ["0"], "word": ["x"], "name": ["a", "b"]}
        self.assertEqual(query_int(query, "limit", 100, 1, 1000), 7)  # the last one wins
        self.assertEqual(query_int(query, "big", 100, 1, 1000), 1000)  # clamped, not refused
        self.assertEqual(query_int(query, "absent", 100, 1, 1000), 100)
        for name in ("zero", "word"):
            with self.subTest(name), self.assertRaises(ValueError):
                query_int(query, name, 100, 1, 1000)
        self.assertEqual((query_text(query, "name"), query_text(query, "absent")), ("b", None))
        self.assertEqual(media_type(" Application/JSON ; charset=utf-8"), "application/json")
        self.assertEqual(media_type(None), "")


class TlsTest(TwinTestCase):
    def setUp(self):
        self.twin = self.start_twin()

    def test_client_rejecting_our_certificate_is_counted_quietly(self):
        conn = self.connect(self.twin, context=client_context(CERTDATA / "other-ca.pem"))
        with self.assertRaises(ssl.SSLCertVerificationError):
            request_json(conn, "GET", "/health")
        self.assertTrue(wait_until(lambda: self.twin.tls_failures == 1))
        self.assertEqual(request_json(self.connect(self.twin), "GET", "/health")[0], 200)

    def test_plain_http_to_tls_port(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.twin.port, timeout=5)
        self.addCleanup(conn.close)
        with self.assertRaises((http.client.HTTPException, ConnectionError)):
            request_json(conn, "GET", "/health")
        self.assertTrue(wait_until(lambda: self.twin.tls_failures == 1))

    def test_stalled_handshake_does_not_block_others(self):
        idle = socket.create_connection(("127.0.0.1", self.twin.port), timeout=5)
        self.addCleanup(idle.close)
        # The idle client holds its handshake for the twin's whole handler timeout (10 s); the
        # second client's 5 s timeout would expire if that blocked the accept loop.
        self.assertEqual(request_json(self.connect(self.twin), "GET", "/health")[0], 200)

    def test_tls_1_1_refused(self):
        context = client_context()
        try:
            with warnings.catch_warnings():  # 3.10+ deprecates naming TLS 1.1 at all
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1_1
                context.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):
            self.skipTest("this OpenSSL cannot offer TLS 1.1 at all")
        conn = self.connect(self.twin, context=context)
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            request_json(conn, "GET", "/health")

    def test_ipv6_loopback(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        try:
            twin = self.start_twin(host="::1")
        except OSError:
            self.skipTest("cannot bind ::1")
        self.assertEqual(twin.url, "https://[::1]:%d" % twin.port)
        self.assertEqual(request_json(self.connect(twin), "GET", "/health")[0], 200)

    def test_plain_http_twin(self):
        twin = self.start_twin(tls=False)
        self.assertEqual(twin.url, "http://127.0.0.1:%d" % twin.port)
        self.assertEqual(request_json(self.connect(twin), "GET", "/health")[0], 200)


class LifeCycleTest(TwinTestCase):
    def test_go_down_refuses_and_come_back_serves(self):
        twin = self.start_twin()
        conn = self.connect(twin)
        self.assertEqual(request_json(conn, "POST", "/api/v1/telemetry", payload(), AUTH)[0], 200)
        twin.go_down()
        self.assertFalse(twin.is_up)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", twin.port), timeout=10).close()  # Windows retries a refusal ~2 s
        # the kept-alive connection was cut too: a sender cannot mistake the twin for up
        with self.assertRaises((ConnectionError, http.client.HTTPException, ssl.SSLError)):
            request_json(conn, "GET", "/health")
        conn.close()
        twin.come_back()
        status, _, _ = request_json(self.connect(twin), "GET", "/api/v1/telemetry/%s/latest" % TEST_DEVICE_ID,
                                    headers=AUTH)
        self.assertEqual(status, 200)  # same store

    def test_go_down_keeps_the_port_so_no_other_process_can_take_it(self):
        twin = self.start_twin()
        port = twin.port
        twin.go_down()
        other = socket.socket()
        self.addCleanup(other.close)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with self.assertRaises(OSError):  # EADDRINUSE: the twin still holds the port while down
            other.bind(("127.0.0.1", port))
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()  # Windows retries a refusal ~2 s
        twin.come_back()
        self.assertEqual(twin.port, port)
        self.assertEqual(request_json(self.connect(twin), "GET", "/health")[0], 200)

    def test_stop_is_idempotent_and_leaves_nothing_listening(self):
        twin = self.start_twin()
        port = twin.port
        idle = self.connect(twin)
        request_json(idle, "GET", "/health")
        # stop() must cut the idle keep-alive connection, not wait out its 10 s handler timeout.
        stopper = threading.Thread(target=lambda: (twin.stop(), twin.stop()))
        stopper.start()
        stopper.join(timeout=5)
        self.assertFalse(stopper.is_alive())
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()  # Windows retries a refusal ~2 s
        with twin:
            pass  # __exit__ on a stopped twin is fine too

    def test_file_database(self):
        db = temp_dir(self) / "twin.sqlite3"
        twin = self.start_twin(db_path=db)
        request_json(self.connect(twin), "POST", "/api/v1/telemetry", payload(), AUTH)
        twin.stop()
        from iotpost.receiver import TelemetryStore

        with TelemetryStore(db) as store:
            self.assertEqual(store.count_telemetry(), 1)

    def test_bounded_request_log(self):
        twin = self.start_twin(keep_requests=2)
        conn = self.connect(twin)
        for _ in range(3):
            request_json(conn, "GET", "/health")
        self.assertEqual((len(twin.requests), twin.requests.total), (2, 3))
        self.assertTrue(twin.requests.wait_for(3, timeout=0))

    def test_make_bundle(self):
        twin = self.start_twin()
        folder = make_bundle(temp_dir(self) / "bundle", twin=twin, device_id="11111111-2222-4333-8444-555555555555",
                             api_key="tesa_ak_made")
        self.assertEqual(sorted(p.name for p in folder.iterdir()),
                         ["api_key.txt", "ca-chain.pem", "device_id.txt", "endpoints.json"])
        self.assertEqual(json.loads((folder / "endpoints.json").read_text())["ingest_base_url"], twin.url)
        if os.name == "posix":
            self.assertEqual((folder / "api_key.txt").stat().st_mode & 0o777, 0o600)
        self.assertEqual(twin.store.authenticate("tesa_ak_made"), "11111111-2222-4333-8444-555555555555")


class ReceiverCliTest(unittest.TestCase):
    """receiver.py as a user runs it: announce, serve, stop on SIGTERM with 0."""

    def run_receiver(self, *args):
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("TLINK_WEBHOOK_SECRET_FILE", None)
        # Text mode: Windows ends the receiver's stderr lines in \r\n, read back here as \n.
        proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "receiver.py")] + list(args),
                                cwd=str(temp_dir(self)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                text=True, encoding="utf-8")
        self.addCleanup(proc.wait)
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    @unittest.skipUnless(hasattr(signal, "SIGTERM") and os.name == "posix", "POSIX signals")
    def test_serves_until_sigterm(self):
        secret_file = temp_dir(self) / "secret"
        secret_file.write_bytes(SECRET + b"\n")
        proc = self.run_receiver("--port", "0", "--db", "twin.sqlite3", "--tlink-secret-file", str(secret_file),
                                 "--verbose")
        line = proc.stderr.readline()
        self.assertRegex(line, r"^receiver: listening on https://localhost:\d+ \(db twin\.sqlite3\)\n$")
        port = int(line.split(":")[3].split()[0])
        conn = http.client.HTTPSConnection("localhost", port, timeout=5, context=client_context())
        self.addCleanup(conn.close)
        device = (SAMPLE_BUNDLE / "device_id.txt").read_text().strip().lower()
        key = (SAMPLE_BUNDLE / "api_key.txt").read_text().strip()
        status, _, _ = request_json(conn, "POST", "/api/v1/telemetry", payload(device_id=device),
                                    {"X-API-KEY": key})
        self.assertEqual(status, 200)
        raw = encode(TLINK_PUSH)
        status, _, _ = request_json(conn, "POST", "/api/webhooks/tlink", raw, {"X-TLink-Signature": sign(raw)})
        self.assertEqual(status, 200)
        conn.close()
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=10), 0)
        errors = proc.stderr.read()
        self.assertNotIn(key, errors)
        self.assertNotIn(SECRET.decode(), errors)
        self.assertNotIn("Traceback", errors)
        self.assertIn("POST /api/v1/telemetry", errors)

    def test_outage_flag_goes_down_and_comes_back(self):
        proc = self.run_receiver("--port", "0", "--db", ":memory:", "--outage", "0.4:0.6")
        line = proc.stderr.readline()
        port = int(line.split(":")[3].split()[0])
        self.assertIn("ThermaCore demo login", proc.stderr.readline())  # the second and third lines at start
        self.assertIn("demo user id", proc.stderr.readline())
        self.assertEqual(proc.stderr.readline(), "receiver: down (refusing connections) for 0.6s\n")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        self.assertEqual(proc.stderr.readline(), "receiver: back up for 0.4s\n")
        conn = http.client.HTTPSConnection("localhost", port, timeout=5, context=client_context())
        self.addCleanup(conn.close)
        self.assertEqual(request_json(conn, "GET", "/health")[0], 200)
        conn.close()
        if os.name != "posix":
            return  # no SIGTERM to send on Windows (send_signal is TerminateProcess); cleanup kills it
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=10), 0)

    def test_port_in_use(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        proc = self.run_receiver("--port", str(busy.getsockname()[1]), "--db", ":memory:")
        self.assertEqual(proc.wait(timeout=10), 78)
        errors = proc.stderr.read()
        self.assertTrue(errors.startswith("receiver.py: error: 127.0.0.1 port %d is already in use"
                                          % busy.getsockname()[1]), errors)
        self.assertNotIn("Traceback", errors)

    def test_missing_certificate(self):
        missing = Path("/nonexistent/cert.pem")  # printed \nonexistent\cert.pem on Windows
        proc = self.run_receiver("--port", "0", "--cert", str(missing))
        self.assertEqual(proc.wait(timeout=10), 66)
        errors = proc.stderr.read()
        self.assertTrue(errors.startswith("receiver.py: error: the certificate %s is missing" % missing), errors)


class _Recording(dict):
    """routes._BY_PATH, recording each path dispatch() looks up (the path it parsed from the target)."""

    def __init__(self, wrapped, seen):
        super().__init__(wrapped)
        self.wrapped, self.seen = wrapped, seen

    def get(self, path, default=None):
        self.seen.append(path)
        return dict.get(self, path, default)


if __name__ == "__main__":
    unittest.main()
