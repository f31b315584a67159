"""FaultPlan on its own, and every fault kind as a client over real TLS sees it.

Usage: python -m unittest tests.test_faults
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import unittest

from iotpost.receiver import FAULT_KINDS, FaultPlan
from tests.twin_support import TEST_API_KEY, TEST_DEVICE_ID, TwinTestCase, request_json

AUTH = {"X-API-KEY": TEST_API_KEY, "Content-Type": "application/json"}


def body(n: int = 0) -> bytes:
    return json.dumps({"device_id": TEST_DEVICE_ID, "data": {"n": n}}).encode()


class FaultPlanTest(unittest.TestCase):
    def test_script_in_order_then_normal(self):
        plan = FaultPlan.script(["503", None, "reset", "ok"])
        self.assertEqual([plan.draw() for _ in range(6)], ["503", None, "reset", None, None, None])
        self.assertEqual(plan.applied, ["503", "reset"])
        self.assertEqual(plan.counts(), {"503": 1, "reset": 1})
        self.assertEqual(plan.requests_seen, 6)
        self.assertTrue(plan.exhausted)

    def test_random_is_reproducible(self):
        draws = [[FaultPlan.random(rate=0.5, seed=7).draw() for _ in range(1)] for _ in range(2)]
        self.assertEqual(draws[0], draws[1])
        first = FaultPlan.random(rate=0.5, seed=3)
        second = FaultPlan.random(rate=0.5, seed=3)
        a = [first.draw() for _ in range(200)]
        self.assertEqual(a, [second.draw() for _ in range(200)])
        self.assertTrue(40 < sum(x is not None for x in a) < 160)
        self.assertLessEqual(set(a) - {None}, {"503", "429", "error", "reset", "empty", "malformed"})

    def test_rate_bounds_and_kinds(self):
        self.assertEqual({FaultPlan.random(rate=1.0, kinds=["429"]).draw() for _ in range(20)}, {"429"})
        self.assertEqual({FaultPlan.random(rate=0.0).draw() for _ in range(20)}, {None})
        self.assertFalse(FaultPlan.random().exhausted)
        for bad in (dict(rate=1.5), dict(kinds=["teapot"]), dict(rate=0.5, kinds=[])):
            with self.subTest(bad), self.assertRaises(ValueError):
                FaultPlan.random(**bad)
        for bad in ("explode", "200", "302", "600", "5031"):
            with self.subTest(bad), self.assertRaises(ValueError):
                FaultPlan.script(["503", bad])
        self.assertEqual(FaultPlan.script(["418"]).draw(), "418")

    def test_poison_fails_only_bodies_with_the_marker(self):
        plan = FaultPlan.poison(b"POISON")
        self.assertEqual([plan.draw(b'{"v":"POISON"}'), plan.draw(b'{"v":1}'), plan.draw(None)],
                         ["500", None, None])
        self.assertEqual(FaultPlan.poison(b"x", "503").draw(b"xx"), "503")
        self.assertEqual(plan.applied, ["500"])
        with self.assertRaises(ValueError):
            FaultPlan.poison(b"x", "bogus")

    def test_thread_safe_script(self):
        plan = FaultPlan.script(["503"] * 500)
        results = []

        def draw():
            for _ in range(100):
                results.append(plan.draw())

        threads = [threading.Thread(target=draw) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results.count("503"), 500)
        self.assertEqual(len(plan.applied), 500)


class FaultsOverHttpsTest(TwinTestCase):
    """What a sender experiences; and whether the twin stored the request anyway."""

    def setUp(self):
        self.twin = self.start_twin()
        self.conn = self.connect(self.twin)

    def post(self, n: int = 0, conn=None):
        return request_json(conn or self.conn, "POST", "/api/v1/telemetry", body(n), AUTH)

    def stored(self) -> int:
        return self.twin.store.count_telemetry()

    def test_503_and_429_are_not_processed(self):
        self.twin.faults = FaultPlan.script(["503", "429"], retry_after=7)
        status, answer, response = self.post()
        self.assertEqual((status, answer["code"], response.getheader("Retry-After")),
                         (503, "SERVICE_UNAVAILABLE", "7"))
        status, answer, response = self.post()
        self.assertEqual((status, answer["code"], answer["retry_after"], response.getheader("Retry-After")),
                         (429, "RATE_LIMITED", 7, "7"))
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(self.stored(), 0)
        self.assertEqual(self.post()[0], 200)  # script over: normal, same connection
        self.assertEqual(self.twin.connections_accepted, 1)
        self.assertEqual(len(self.twin.requests), 3)  # all recorded, faulted or not

    def test_any_status_fault(self):
        self.twin.faults = FaultPlan.script(["422", "500", "401"])
        status, answer, response = self.post()
        self.assertEqual((status, answer["code"], response.getheader("Retry-After")), (422, "INJECTED_FAULT", None))
        status, answer, _ = self.post()
        self.assertEqual((status, answer["code"]), (500, "PROCESSING_ERROR"))
        self.assertEqual(self.post()[0], 401)
        self.assertEqual(self.stored(), 0)
        self.assertEqual(self.post()[0], 200)

    def test_error_answers_500_and_stores_nothing(self):
        self.twin.faults = FaultPlan.script(["error"])
        status, answer, _ = self.post()
        self.assertEqual((status, answer["code"]), (500, "PROCESSING_ERROR"))
        self.assertEqual(self.stored(), 0)

    def test_reset_after_storing(self):
        self.twin.faults = FaultPlan.script(["reset"])
        with self.assertRaises((ConnectionResetError, http.client.RemoteDisconnected)):
            self.post()
        self.assertEqual(self.stored(), 1)
        self.conn.close()
        self.assertEqual(self.post(1)[0], 200)

    def test_drop_before_storing(self):
        self.twin.faults = FaultPlan.script(["drop"])
        with self.assertRaises((ConnectionResetError, http.client.RemoteDisconnected)):
            self.post()
        self.assertEqual(self.stored(), 0)
        self.assertEqual(len(self.twin.requests), 1)

    def test_empty_after_storing(self):
        self.twin.faults = FaultPlan.script(["empty"])
        with self.assertRaises(http.client.RemoteDisconnected):
            self.post()
        self.assertEqual(self.stored(), 1)

    def test_malformed_after_storing(self):
        self.twin.faults = FaultPlan.script(["malformed"])
        with self.assertRaises(http.client.BadStatusLine):
            self.post()
        self.assertEqual(self.stored(), 1)

    def test_dribble_is_slow_but_correct(self):
        self.twin.faults = FaultPlan.script(["dribble"], dribble_seconds=0.2)
        started = time.monotonic()
        status, answer, _ = self.post()
        self.assertGreaterEqual(time.monotonic() - started, 0.15)
        self.assertEqual((status, answer["success"]), (200, True))
        self.assertEqual(self.stored(), 1)
        self.assertEqual(self.post(1)[0], 200)  # the connection is still good

    def test_dribble_trips_a_client_read_timeout(self):
        self.twin.faults = FaultPlan.script(["dribble"], dribble_seconds=1.0)
        conn = self.connect(self.twin, timeout=0.02)
        conn.connect()  # the handshake is not under test here
        conn.sock.settimeout(0.02)
        with self.assertRaises(OSError):  # socket.timeout is TimeoutError on 3.10+
            self.post(conn=conn)
        self.assertEqual(self.stored(), 1)

    def test_delay(self):
        self.twin.faults = FaultPlan.script(["delay"], delay=0.1)
        started = time.monotonic()
        self.assertEqual(self.post()[0], 200)
        self.assertGreaterEqual(time.monotonic() - started, 0.09)

    def test_faults_skip_get_requests(self):
        self.twin.faults = FaultPlan.script(["503"])
        self.assertEqual(request_json(self.conn, "GET", "/health")[0], 200)
        self.assertEqual(self.twin.faults.requests_seen, 0)
        self.assertEqual(self.post()[0], 503)

    def test_random_plan_every_request_recorded(self):
        self.twin.faults = FaultPlan.random(rate=0.5, kinds=["503", "429"], seed=1)
        statuses = [self.post(n)[0] for n in range(20)]
        applied = self.twin.faults.applied
        self.assertEqual(sum(s != 200 for s in statuses), len(applied))
        self.assertEqual(self.stored(), statuses.count(200))
        self.assertEqual(len(self.twin.requests), 20)

    def test_every_kind_is_known(self):
        self.assertEqual(set(FAULT_KINDS), {"503", "429", "error", "drop", "delay", "reset", "empty",
                                            "malformed", "dribble"})

    def test_stop_interrupts_a_dribble(self):
        self.twin.faults = FaultPlan.script(["dribble"], dribble_seconds=30)
        conn = self.connect(self.twin, timeout=5)
        errors = []

        def post():
            try:
                self.post(conn=conn)
            except Exception as exc:  # the connection is cut by stop()
                errors.append(exc)

        thread = threading.Thread(target=post)
        thread.start()
        self.assertTrue(self.twin.requests.wait_for(1))
        started = time.monotonic()
        self.twin.stop()
        thread.join(5)
        self.assertLess(time.monotonic() - started, 1.5)


if __name__ == "__main__":
    unittest.main()
