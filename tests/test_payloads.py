"""Telemetry payloads: reproducible, plausible, slowly varying readings and their encoding."""

from __future__ import annotations

import datetime as dt
import json
import re
import unittest
import uuid

from iotpost.payloads import (
    MedicalSignals,
    encode,
    iso_utc,
    make_payload,
    new_idempotency_key,
    parse_iso8601,
)

DEVICE = "05f8968a-b400-4727-9678-b53cb0889fce"

FIELD_TYPES = {
    "spo2": int,
    "spo2_unit": str,
    "temperature": float,
    "temperature_unit": str,
    "heart_rate": int,
    "heart_rate_bpm": int,
    "perfusion_index": float,
    "motion": bool,
    "signal_quality": int,
    "rhythm": str,
    "rr_interval_ms": float,
    "qt_interval_ms": float,
    "site": str,
}


class MedicalSignalsTest(unittest.TestCase):
    def readings(self, seed: int, n: int = 1000):
        gen = MedicalSignals(seed=seed)
        return [gen.next() for _ in range(n)]

    def test_same_seed_same_readings(self) -> None:
        self.assertEqual(self.readings(42, 50), self.readings(42, 50))

    def test_different_seed_different_readings(self) -> None:
        self.assertNotEqual(self.readings(1, 50), self.readings(2, 50))

    def test_every_field_present_with_its_type(self) -> None:
        for r in self.readings(7):
            self.assertEqual(set(r), set(FIELD_TYPES))
            for name, typ in FIELD_TYPES.items():
                # bool is an int subclass: check exact types so motion stays a bool and spo2 not one.
                self.assertIs(type(r[name]), typ, name)

    def test_plausible_ranges(self) -> None:
        rs = self.readings(7)
        for r in rs:
            self.assertTrue(92 <= r["spo2"] <= 100, r["spo2"])
            self.assertTrue(35.8 <= r["temperature"] <= 38.2, r["temperature"])
            self.assertTrue(50 <= r["heart_rate"] <= 120, r["heart_rate"])
            self.assertEqual(r["heart_rate"], r["heart_rate_bpm"])
            self.assertTrue(0.5 <= r["perfusion_index"] <= 10.0, r["perfusion_index"])
            self.assertTrue(0 <= r["signal_quality"] <= 100, r["signal_quality"])
            # RR follows the heart rate (60000 / bpm, within rounding of the integer bpm).
            self.assertAlmostEqual(r["rr_interval_ms"], 60000.0 / r["heart_rate"],
                                   delta=60000.0 / r["heart_rate"] * 0.02)
            self.assertTrue(280 <= r["qt_interval_ms"] <= 440, r["qt_interval_ms"])
            self.assertEqual(r["spo2_unit"], "%")
            self.assertEqual(r["temperature_unit"], "°C")
            self.assertIn(r["rhythm"], ("sinus", "irregular"))
            self.assertIn(r["site"], MedicalSignals.SITES)
        # Not constant: the walk actually moves, and rare events happen at some rate.
        self.assertGreater(len({r["temperature"] for r in rs}), 20)
        self.assertGreater(len({r["heart_rate"] for r in rs}), 5)
        motion = sum(r["motion"] for r in rs)
        self.assertTrue(30 < motion < 250, motion)
        self.assertEqual(len({r["site"] for r in rs}), 1)  # one device, one measuring site

    def test_slowly_varying(self) -> None:
        rs = self.readings(3)
        for a, b in zip(rs, rs[1:]):
            self.assertLessEqual(abs(a["temperature"] - b["temperature"]), 0.05 + 0.011)
            self.assertLessEqual(abs(a["heart_rate"] - b["heart_rate"]), 4)
            self.assertLessEqual(abs(a["spo2"] - b["spo2"]), 2)

    def test_unseeded_generators_differ(self) -> None:
        a, b = MedicalSignals(), MedicalSignals()
        self.assertNotEqual([a.next() for _ in range(20)], [b.next() for _ in range(20)])


class PayloadEncodingTest(unittest.TestCase):
    def test_make_payload_shape_and_order(self) -> None:
        data = {"temperature": 21.5}
        p = make_payload(DEVICE, data, "2025-12-09T10:30:45+00:00")
        self.assertEqual(list(p), ["device_id", "timestamp", "data"])
        self.assertEqual(p["data"], data)

    def test_encode_is_ascii_json_that_round_trips(self) -> None:
        data = MedicalSignals(seed=5).next()
        p = make_payload(DEVICE, data, iso_utc(1765276245))
        body = encode(p)
        self.assertIsInstance(body, bytes)
        body.decode("ascii")  # printable as sent on any console
        self.assertIn(b'"temperature_unit":"\\u00b0C"', body)
        self.assertEqual(json.loads(body.decode("utf-8")), p)
        self.assertNotIn(b", ", body)  # compact
        self.assertNotIn(b": ", body)
        self.assertTrue(body.startswith(b'{"device_id":"%s","timestamp":' % DEVICE.encode()))


class TimeFormatTest(unittest.TestCase):
    def test_iso_utc(self) -> None:
        self.assertEqual(iso_utc(0), "1970-01-01T00:00:00+00:00")
        self.assertEqual(iso_utc(1765276245.987), "2025-12-09T10:30:45+00:00")
        self.assertRegex(iso_utc(1765276245.5), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")

    def test_parse_iso8601(self) -> None:
        expected = dt.datetime(2025, 12, 9, 10, 30, 45, tzinfo=dt.timezone.utc)
        # Strict: the sender and the twin share this parser, and the twin must reject padding
        # (data_input strips a line's timestamp before checking it).
        for text in ("2025-12-09T10:30:45Z", "2025-12-09T10:30:45z", "2025-12-09T10:30:45+00:00",
                     "2025-12-09T17:30:45+07:00"):
            with self.subTest(text=text):
                self.assertEqual(parse_iso8601(text), expected)
        self.assertEqual(parse_iso8601(iso_utc(1765276245)).timestamp(), 1765276245)

    def test_parse_iso8601_rejects_garbage(self) -> None:
        for text in ("yesterday", "", "2025-13-01T00:00:00Z", "12/09/2025"):
            with self.subTest(text=text):
                with self.assertRaises(ValueError):
                    parse_iso8601(text)


class IdempotencyKeyTest(unittest.TestCase):
    def test_uuid4_shaped(self) -> None:
        shape = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        for _ in range(200):
            key = new_idempotency_key()
            self.assertRegex(key, shape)
            parsed = uuid.UUID(key)
            self.assertEqual(parsed.version, 4)
            self.assertEqual(parsed.variant, uuid.RFC_4122)
            self.assertEqual(str(parsed), key)

    def test_distinct(self) -> None:
        keys = {new_idempotency_key() for _ in range(1000)}
        self.assertEqual(len(keys), 1000)


if __name__ == "__main__":
    unittest.main()
