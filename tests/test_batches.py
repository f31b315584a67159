"""The sender's side of batches: the batch URL, key and body, and reading the answer (iotpost.batches)."""

from __future__ import annotations

import json
import unittest

from iotpost.batches import Gatherer, batch_body, batch_key, batch_path, batch_shortfall


def answer(**results) -> bytes:
    """A batch answer; telemetry_ids holds one id per stored payload unless given."""
    stored = results.get("successful")
    ids = ["t%d" % n for n in range(stored)] if isinstance(stored, int) and not isinstance(stored, bool) else []
    return json.dumps({"success": True, "results": dict({"errors": [], "telemetry_ids": ids}, **results)}).encode()


class BatchRequestTest(unittest.TestCase):
    def test_the_batch_endpoint_sits_beside_the_telemetry_endpoint(self):
        self.assertEqual(batch_path("/api/v1/telemetry"), "/api/v1/telemetry/batch")
        self.assertEqual(batch_path("/mount/api/v1/telemetry/?tenant=a"), "/mount/api/v1/telemetry/batch?tenant=a")

    def test_the_key_depends_on_the_payloads_keys_only(self):
        self.assertEqual(batch_key(["a", "b"]), batch_key(["b", "a"]))
        self.assertNotEqual(batch_key(["a", "b"]), batch_key(["a", "c"]))
        self.assertLessEqual(len(batch_key(["k"] * 1000)), 255)

    def test_the_body_carries_the_payloads_bytes_unchanged(self):
        bodies = [b'{"device_id":"d","data":{"t":1.50}}', b'{"device_id": "d", "data": {"t": 2}}']
        raw = batch_body(bodies, ["k1", "k2"])
        for body in bodies:
            self.assertIn(body, raw)
        self.assertEqual(json.loads(raw)["idempotency_keys"], ["k1", "k2"])
        self.assertEqual(len(json.loads(raw)["telemetry"]), 2)


class BatchAnswerTest(unittest.TestCase):
    def test_only_every_payload_stored_counts_as_stored(self):
        self.assertIsNone(batch_shortfall(answer(total=3, successful=3, failed=0), 3))
        for body in (answer(total=3, successful=2, failed=1), answer(total=3, successful=2, failed=0),
                     json.dumps({"success": False, "results": {"successful": 3, "failed": 0}}).encode(),
                     json.dumps({"success": True, "telemetry_id": "x"}).encode(), b"<html>", b"[]",
                     answer(successful="3", failed=0), answer(successful=3, failed=True),
                     # counts that look right, ids or total that do not (found by a reviewer)
                     answer(total=3, successful=3, failed=0, telemetry_ids=[]),
                     answer(total=9, successful=3, failed=0), b"[" * 200000):
            with self.subTest(body=body):
                self.assertIsNotNone(batch_shortfall(body, 3))
        why = batch_shortfall(answer(total=3, successful=2, failed=1, errors=["bad data"]), 3)
        self.assertEqual(why, "1 of 3 payloads failed and the answer does not say which; first error: bad data")
        # the platform's text is redacted before it is cut, and shown without control characters
        secret = "tesa_ak_" + "S" * 200
        why = batch_shortfall(answer(total=3, successful=2, failed=1, errors=["key %s\x1b[2J\nx" % secret]), 3,
                              redact=lambda text: text.replace(secret, "[REDACTED]"))
        self.assertIn("key [REDACTED]", why)
        self.assertNotIn("SSSS", why)
        self.assertTrue(why.isprintable())


class GathererTest(unittest.TestCase):
    def test_a_flush_that_ended_the_run_does_not_wait_for_the_schedule(self):
        stopped = []
        gatherer = Gatherer(5, lambda: stopped.append(True), lambda: 0.0, stopped=lambda: bool(stopped))
        slept = []
        gatherer.add()
        gatherer.sleep_after_flush(slept.append)(600.0)
        self.assertEqual((stopped, slept), ([True], []))

    def test_a_full_batch_or_a_wait_sends_what_was_gathered_without_drift(self):
        now = [0.0]
        sent = []
        gatherer = Gatherer(3, lambda: (sent.append(now[0]), now.__setitem__(0, now[0] + 2.0)), lambda: now[0])
        slept = []
        sleep = gatherer.sleep_after_flush(lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
        for _ in range(4):
            gatherer.add()
        self.assertEqual(sent, [0.0])  # three made a batch; the fourth waits
        sleep(5.0)  # the schedule waits: the fourth goes first, and its 2 s come off the wait
        self.assertEqual((sent, slept, now[0]), ([0.0, 2.0], [3.0], 7.0))
        sleep(1.0)  # nothing gathered: nothing sent
        self.assertEqual(len(sent), 2)


if __name__ == "__main__":
    unittest.main()
