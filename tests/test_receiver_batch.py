"""The twin's POST /api/v1/telemetry/batch, called through routes.dispatch without a socket.

Usage: python -m unittest tests.test_receiver_batch
"""

from __future__ import annotations

import json
import unittest

from iotpost.receiver.routes import dispatch
from iotpost.receiver.store import TelemetryStore
from iotpost.receiver.tesaiot_api import BatchFaults, set_batch_faults
from tests.twin_support import OTHER_DEVICE_ID, TEST_API_KEY, TEST_DEVICE_ID

PATH = "/api/v1/telemetry/batch"
HEADERS = {"X-API-KEY": TEST_API_KEY, "Content-Type": "application/json"}


def reading(n: int, device: str = TEST_DEVICE_ID) -> dict:
    return {"device_id": device, "timestamp": "2026-11-27T10:00:%02dZ" % n, "data": {"temperature": 20 + n}}


class BatchEndpointTest(unittest.TestCase):
    def setUp(self) -> None:
        self.store = TelemetryStore(":memory:")
        self.addCleanup(self.store.close)
        self.store.register_device(TEST_DEVICE_ID, TEST_API_KEY)

    def post(self, doc, headers=None, raw=None):
        body = raw if raw is not None else json.dumps(doc).encode("utf-8")
        return dispatch("POST", PATH, body=body, headers=dict(HEADERS, **(headers or {})), store=self.store)

    def test_answers_the_documented_shape_and_stores_each_payload(self):
        reply = self.post({"telemetry": [reading(n) for n in range(3)]})
        self.assertEqual(reply.status, 200)
        self.assertEqual(sorted(reply.body), ["results", "success"])
        self.assertIs(reply.body["success"], True)
        results = reply.body["results"]
        self.assertEqual(sorted(results), ["errors", "failed", "successful", "telemetry_ids", "total"])
        self.assertEqual((results["total"], results["successful"], results["failed"], results["errors"]),
                         (3, 3, 0, []))
        stored = self.store.all_telemetry(TEST_DEVICE_ID)
        self.assertEqual([r.telemetry_id for r in stored], results["telemetry_ids"])
        self.assertEqual([r.data["temperature"] for r in stored], [20, 21, 22])

    def test_each_payload_is_checked_as_a_single_send_is_and_failures_are_counted(self):
        items = [reading(0), {"device_id": TEST_DEVICE_ID}, reading(2, OTHER_DEVICE_ID), "x", reading(4)]
        results = self.post({"telemetry": items}).body["results"]
        self.assertEqual((results["total"], results["successful"], results["failed"]), (5, 2, 3))
        self.assertEqual(results["errors"], ["data is required", "Device identity mismatch",
                                             "payload must be an object"])
        self.assertEqual(self.store.count_telemetry(), 2)

    def test_the_request_is_refused_whole_as_a_single_send_would_be(self):
        self.assertEqual(self.post({"telemetry": [reading(0)]}, {"X-API-KEY": "wrong"}).status, 401)
        self.assertEqual(self.post({"telemetry": [reading(0)]}, {"Content-Type": "text/plain"}).status, 415)
        self.assertEqual(self.post(None, raw=b"{nope").body["code"], "INVALID_JSON")
        for doc in ({"telemetry": []}, {"telemetry": {}}, {}, {"telemetry": [reading(0)] * 1001},
                    {"telemetry": [reading(0)], "idempotency_keys": ["a", "b"]},
                    {"telemetry": [reading(0)], "idempotency_keys": [""]}):
            with self.subTest(doc=str(doc)[:60]):
                reply = self.post(doc)
                self.assertEqual((reply.status, reply.body["code"]), (400, "VALIDATION_ERROR"))
        self.assertEqual(self.store.count_telemetry(), 0)

    def test_a_replayed_batch_stores_nothing_twice_by_its_idempotency_key(self):
        doc = {"telemetry": [reading(n) for n in range(4)]}
        first = self.post(doc, {"Idempotency-Key": "batch-1"})
        again = self.post(doc, {"Idempotency-Key": "batch-1"})
        self.assertEqual((first.headers, again.headers), ({}, {"Idempotent-Replayed": "true"}))
        self.assertEqual(again.body, first.body)
        self.assertEqual(self.store.count_telemetry(), 4)
        self.post(doc)  # no key at all: stored again, as a single send without a key is
        self.assertEqual(self.store.count_telemetry(), 8)

    def test_a_payload_sent_again_alone_under_its_own_key_is_a_replay(self):
        # Item bytes within the batch, whitespace around them and all: the body a single send carries.
        items = [json.dumps(reading(n)).encode() for n in range(2)]
        raw = b'{ "idempotency_keys" : ["k-0", "k-1"],\n "telemetry" : [ %s ,\n\t%s ] }' % tuple(items)
        self.assertEqual(self.post(None, raw=raw).body["results"]["successful"], 2)
        alone = dispatch("POST", "/api/v1/telemetry", body=items[1], store=self.store,
                         headers=dict(HEADERS, **{"Idempotency-Key": "k-1"}))
        self.assertEqual((alone.status, alone.headers), (200, {"Idempotent-Replayed": "true"}))
        self.assertEqual(self.store.count_telemetry(), 2)

    def test_test_aids_fail_payloads_by_position_or_take_the_endpoint_away(self):
        set_batch_faults(self.store, BatchFaults(fail_every=2))
        results = self.post({"telemetry": [reading(n) for n in range(5)]}).body["results"]
        self.assertEqual((results["successful"], results["failed"]), (3, 2))
        self.assertEqual(self.store.count_telemetry(), 3)
        set_batch_faults(self.store, BatchFaults(absent=True))
        self.assertEqual(self.post({"telemetry": [reading(9)]}).status, 404)
        self.assertEqual(self.store.count_telemetry(), 3)


if __name__ == "__main__":
    unittest.main()
