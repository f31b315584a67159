"""TelemetryStore without sockets: keys, idempotency, history, TLINK de-duplication.

Usage: python -m unittest tests.test_receiver_store
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import unittest

from iotpost.receiver.clock import parse_iso8601, parse_start_time
from iotpost.receiver.store import IdempotencyKeyReused, TelemetryStore
from iotpost.receiver.tlink_store import parse_tlink_time, validate_tlink_push
from tests.twin_support import temp_dir

DEV = "0b6c8f3e-5d2a-4e1b-9c7d-3f4a5b6c7d8e"
KEY = "tesa_ak_store_test_key"
UTC = dt.timezone.utc


class FakeClock:
    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def sample_push(**overrides):
    push = {
        "flag": "00", "deviceUserid": 385, "parentUserId": "217",
        "sensorsDates": [{"times": "14:16:21", "sensorsId": 11922, "isAlarm": "0", "sensorsTypeId": 1,
                          "isLine": 1, "reVal": "5.0000", "value": "5.0"}],
        "time": "2019-05-10 14:16:21",
        "rawData": "235254552C352E303030302C322E373433342C302E303037370D0A",
        "deviceId": 2864,
    }
    push.update(overrides)
    return push


class TimeParsingTest(unittest.TestCase):
    def test_iso8601_forms(self):
        expected = dt.datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
        for text in ("2025-01-31T12:00:00Z", "2025-01-31T12:00:00+00:00", "2025-01-31T12:00:00.000Z",
                     "2025-01-31T13:00:00+01:00", "2025-01-31T13:00:00+0100", "2025-01-31T07:00:00-05",
                     "2025-01-31 12:00:00", "2025-01-31T12:00Z", "2025-01-31t12:00:00z"):
            with self.subTest(text=text):
                self.assertEqual(parse_iso8601(text), expected)
        self.assertEqual(parse_iso8601("2025-01-31T12:00:00.123456789Z").microsecond, 123456)
        self.assertEqual(parse_iso8601("2025-01-31"), dt.datetime(2025, 1, 31, tzinfo=UTC))

    def test_iso8601_rejects(self):
        for text in ("", "yesterday", "2025-13-01T00:00:00Z", "2025-01-31T25:00:00Z", "1738324800",
                     "2025-01-31T12:00:00+", "2025-01-31T12:00:00 Z", "٢٠٢٥-01-31", " 2025-01-31"):
            with self.subTest(text=text), self.assertRaises(ValueError):
                parse_iso8601(text)

    def test_relative_start_time(self):
        now = dt.datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
        self.assertEqual(parse_start_time("-1h", now), now - dt.timedelta(hours=1))
        self.assertEqual(parse_start_time("-30m", now), now - dt.timedelta(minutes=30))
        self.assertEqual(parse_start_time("-7d", now), now - dt.timedelta(days=7))
        self.assertEqual(parse_start_time("-90s", now), now - dt.timedelta(seconds=90))
        self.assertEqual(parse_start_time("2025-01-01T00:00:00Z", now), dt.datetime(2025, 1, 1, tzinfo=UTC))
        for bad in ("1h", "-1y", "-h", "soon"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                parse_start_time(bad, now)

    def test_tlink_time(self):
        self.assertEqual(parse_tlink_time("2019-05-10 14:16:21"), "2019-05-10 14:16:21")
        self.assertEqual(parse_tlink_time("2019-05-10T14:16:21"), "2019-05-10 14:16:21")
        self.assertEqual(parse_tlink_time("2019-05-10T16:16:21+02:00"), "2019-05-10 14:16:21")
        with self.assertRaises(ValueError):
            parse_tlink_time("10/05/2019")


class DeviceKeyTest(unittest.TestCase):
    def setUp(self):
        self.store = TelemetryStore()
        self.addCleanup(self.store.close)
        self.store.register_device(DEV, KEY)

    def test_authenticate(self):
        self.assertEqual(self.store.authenticate(KEY), DEV)
        self.assertIsNone(self.store.authenticate("tesa_ak_wrong"))
        self.assertIsNone(self.store.authenticate(""))
        self.assertIsNone(self.store.authenticate(None))
        self.assertEqual(self.store.devices(), [DEV])

    def test_key_is_not_stored_in_clear(self):
        rows = self.store._query("SELECT key_sha256 FROM api_keys")
        self.assertEqual(len(rows), 1)
        self.assertNotIn(KEY.encode(), bytes(rows[0][0]))

    def test_key_moves_with_reregistration(self):
        self.store.register_device("other", KEY)
        self.assertEqual(self.store.authenticate(KEY), "other")


class TelemetryTest(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.store = TelemetryStore(clock=self.clock)
        self.addCleanup(self.store.close)
        self.store.register_device(DEV, KEY)

    def test_store_answers_like_the_platform(self):
        result = self.store.store_telemetry(DEV, {"spo2": 98, "heart_rate": 70}, timestamp="2025-01-31T12:00:00Z",
                                            raw_body=b"{}")
        self.assertFalse(result.replayed)
        answer = result.response
        self.assertEqual(answer["success"], True)
        self.assertEqual(answer["message"], "Telemetry data stored successfully")
        self.assertEqual(answer["device_id"], DEV)
        self.assertEqual(answer["timestamp"], "2025-01-31T12:00:00Z")
        self.assertEqual(answer["metrics_stored"], ["heart_rate", "spo2"])
        self.assertTrue(answer["telemetry_id"])

    def test_server_time_when_no_timestamp(self):
        answer = self.store.store_telemetry(DEV, {"x": 1}).response
        self.assertEqual(answer["timestamp"], dt.datetime.fromtimestamp(self.clock.now, UTC).isoformat())
        self.assertTrue(answer["timestamp"].endswith("+00:00"))

    def test_idempotent_replay_stores_once(self):
        first = self.store.store_telemetry(DEV, {"x": 1}, raw_body=b'{"a":1}', idempotency_key="k1")
        again = self.store.store_telemetry(DEV, {"x": 1}, raw_body=b'{"a":1}', idempotency_key="k1")
        self.assertFalse(first.replayed)
        self.assertTrue(again.replayed)
        self.assertEqual(again.response, first.response)
        self.assertEqual(self.store.count_telemetry(DEV), 1)

    def test_idempotency_key_reuse_with_other_body(self):
        self.store.store_telemetry(DEV, {"x": 1}, raw_body=b'{"a":1}', idempotency_key="k1")
        with self.assertRaises(IdempotencyKeyReused):
            self.store.store_telemetry(DEV, {"x": 2}, raw_body=b'{"a":2}', idempotency_key="k1")
        self.assertEqual(self.store.count_telemetry(), 1)

    def test_keys_are_per_device(self):
        self.store.store_telemetry(DEV, {"x": 1}, raw_body=b"1", idempotency_key="k1")
        other = self.store.store_telemetry("other", {"x": 1}, raw_body=b"2", idempotency_key="k1")
        self.assertFalse(other.replayed)
        self.assertEqual(self.store.count_telemetry(), 2)

    def test_without_key_every_post_is_stored(self):
        for _ in range(3):
            self.store.store_telemetry(DEV, {"x": 1}, raw_body=b"same")
        self.assertEqual(self.store.count_telemetry(DEV), 3)

    def test_concurrent_identical_requests_store_one_row(self):
        results = []
        barrier = threading.Barrier(8)

        def post():
            barrier.wait()
            results.append(self.store.store_telemetry(DEV, {"x": 1}, raw_body=b"b", idempotency_key="race"))

        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(self.store.count_telemetry(), 1)
        self.assertEqual(len({r.response["telemetry_id"] for r in results}), 1)
        self.assertEqual(sum(not r.replayed for r in results), 1)

    def test_latest_and_history(self):
        for minute, value in ((0, 1), (30, 2), (10, 3)):
            stamp = "2025-01-31T12:%02d:00Z" % minute
            self.store.store_telemetry(DEV, {"v": value}, timestamp=stamp, idempotency_key="k%d" % value)
        latest = self.store.latest(DEV)
        self.assertEqual(latest.data, {"v": 2})
        self.assertEqual(latest.idempotency_key, "k2")
        newest_first = [r.data["v"] for r in self.store.history(DEV)]
        self.assertEqual(newest_first, [2, 3, 1])
        self.assertEqual([r.data["v"] for r in self.store.history(DEV, limit=2)], [2, 3])
        start = dt.datetime(2025, 1, 31, 12, 5, tzinfo=UTC)
        self.assertEqual([r.data["v"] for r in self.store.history(DEV, start=start)], [2, 3])
        self.assertEqual([r.data["v"] for r in self.store.all_telemetry(DEV)], [1, 2, 3])
        self.assertIsNone(self.store.latest("nobody"))
        self.assertEqual(self.store.history("nobody"), [])
        self.assertEqual((latest["data"], latest["idempotency_key"], latest[1]),
                         (latest.data, "k2", latest.telemetry_id))
        with self.assertRaises(KeyError):
            latest["nope"]
        self.assertEqual(set(latest.as_json()), {"telemetry_id", "timestamp", "received_at", "data",
                                                 "idempotency_key"})

    def test_offsets_order_by_instant(self):
        self.store.store_telemetry(DEV, {"v": "early"}, timestamp="2025-01-31T13:00:00+02:00")
        self.store.store_telemetry(DEV, {"v": "late"}, timestamp="2025-01-31T12:00:00Z")
        self.assertEqual(self.store.latest(DEV).data, {"v": "late"})

    def test_file_database_uses_wal_and_persists(self):
        path = temp_dir(self) / "twin.sqlite3"
        with TelemetryStore(path) as store:
            store.register_device(DEV, KEY)
            store.store_telemetry(DEV, {"x": 1}, idempotency_key="k")
            mode = store._query("PRAGMA journal_mode")[0][0]
        self.assertEqual(mode, "wal")
        with TelemetryStore(path) as store:
            self.assertEqual(store.authenticate(KEY), DEV)
            self.assertTrue(store.store_telemetry(DEV, {"x": 1}, idempotency_key="k").replayed)

    def test_close_is_idempotent(self):
        store = TelemetryStore()
        store.close()
        store.close()
        with self.assertRaises(sqlite3.ProgrammingError):
            store.count_telemetry()


class TlinkStoreTest(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.store = TelemetryStore(clock=self.clock)
        self.addCleanup(self.store.close)

    def test_push_is_stored_once(self):
        self.assertEqual(self.store.store_tlink_push(sample_push()), (1, 1))
        self.assertEqual(self.store.store_tlink_push(sample_push()), (1, 0))  # processed, none new
        self.assertEqual(self.store.count_tlink_readings(), 1)
        reading = self.store.tlink_history(385, 2864)[0]
        self.assertEqual(reading["sensorsId"], 11922)
        self.assertEqual(reading["recordedAt"], "2019-05-10 14:16:21")
        self.assertEqual(reading["times"], "14:16:21")
        self.assertEqual((reading["value"], reading["reVal"], reading["isAlarm"], reading["isLine"]),
                         ("5.0", "5.0000", "0", 1))
        self.assertEqual(reading["rawData"], sample_push()["rawData"])

    def test_both_type_spellings(self):
        push = sample_push(sensorsDates=[
            {"sensorsId": 1, "sensorsTypeId": 1, "value": "1", "times": "00:00:01"},
            {"sensorsId": 2, "sensorTypeId": 8, "value": "on", "times": "00:00:01"},
        ])
        self.assertEqual(self.store.store_tlink_push(push).new, 2)
        types = {s["sensorsId"]: s["sensorsTypeId"] for s in self.store.tlink_latest("385", "2864")}
        self.assertEqual(types, {1: 1, 2: 8})

    def test_new_time_is_a_new_reading(self):
        self.store.store_tlink_push(sample_push())
        self.assertEqual(self.store.store_tlink_push(sample_push(time="2019-05-10 14:17:21")).new, 1)
        history = self.store.tlink_history(385, "2864")
        self.assertEqual([r["recordedAt"] for r in history], ["2019-05-10 14:17:21", "2019-05-10 14:16:21"])
        self.assertEqual(len(self.store.tlink_history(385, 2864, start="2019-05-10 14:17:00")), 1)
        self.assertEqual(len(self.store.tlink_history(385, 2864, end="2019-05-10 14:17:00")), 1)

    def test_push_without_time_uses_clock_and_is_not_merged(self):
        push = sample_push()
        del push["time"]
        self.assertEqual(self.store.store_tlink_push(push).new, 1)
        self.clock.now += 0.001
        self.assertEqual(self.store.store_tlink_push(push).new, 1)
        self.clock.now += 0.001
        self.assertEqual(self.store.store_tlink_push(sample_push(time="not a time")).new, 1)
        self.assertEqual(self.store.count_tlink_readings("2864"), 3)

    def test_read_back_needs_the_owner(self):
        self.store.store_tlink_push(sample_push())
        self.assertEqual(self.store.tlink_history(999, 2864), [])
        self.assertEqual(self.store.tlink_latest(999, 2864), [])
        self.assertEqual(len(self.store.tlink_latest(385, 2864)), 1)

    def test_user_devices_paging(self):
        for device in (3, 1, 2):
            self.store.store_tlink_push(sample_push(deviceId=device))
        self.store.store_tlink_push(sample_push(deviceId=9, deviceUserid=999))
        self.assertTrue(self.store.tlink_user_exists("385"))
        self.assertFalse(self.store.tlink_user_exists("386"))
        self.assertEqual(self.store.tlink_device_owner("9"), "999")
        total, page = self.store.tlink_user_devices("385", page=1, page_size=2)
        self.assertEqual(total, 3)
        self.assertEqual([d["deviceId"] for d in page], [1, 2])
        total, page = self.store.tlink_user_devices("385", page=2, page_size=2)
        self.assertEqual([d["deviceId"] for d in page], [3])
        total, page = self.store.tlink_user_devices("385", device_id="2")
        self.assertEqual((total, [d["deviceId"] for d in page]), (1, [2]))
        sensor = page[0]["sensors"][0]
        self.assertEqual(sensor["latest"]["value"], "5.0")
        self.assertEqual(len(sensor["history"]), 1)

    def test_validation(self):
        self.assertIsNone(validate_tlink_push(sample_push()))
        for field in ("deviceId", "deviceUserid", "sensorsDates"):
            push = sample_push()
            del push[field]
            with self.subTest(missing=field):
                self.assertEqual(validate_tlink_push(push),
                                 "deviceId, deviceUserid, and sensorsDates are required")
        for field in ("deviceId", "deviceUserid"):  # falsy ids are missing ones, as in the reference
            for falsy in (0, ""):
                with self.subTest(field=field, value=falsy):
                    self.assertEqual(validate_tlink_push(sample_push(**{field: falsy})),
                                     "deviceId, deviceUserid, and sensorsDates are required")
        self.assertEqual(validate_tlink_push(sample_push(sensorsDates=[])),
                         "deviceId, deviceUserid, and sensorsDates are required")
        # What the reference fails later (500) passes validation: see tlink_limits.
        self.assertIsNone(validate_tlink_push(sample_push(sensorsDates={"sensorsId": 1})))
        # An entry without sensorsId is skipped and not counted, as the reference does.
        push = sample_push(sensorsDates=[{"value": "1"}, sample_push()["sensorsDates"][0]])
        self.assertEqual(self.store.store_tlink_push(push), (1, 1))
        self.assertTrue(self.store.tlink_user_exists(385))
        with self.assertRaises(ValueError):
            self.store.store_tlink_push(sample_push(deviceId=None))


if __name__ == "__main__":
    unittest.main()
