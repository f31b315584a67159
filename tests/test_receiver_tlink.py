"""The twin's TLINK webhook fails, counts and reads back as the reference receiver does, over real TLS.

Usage: python -m unittest tests.test_receiver_tlink
"""

from __future__ import annotations

import io
import json
import sqlite3
import unittest

from iotpost.receiver.store import TelemetryStore
from iotpost.receiver.tlink_limits import INT32, LIMITS, TEXT
from tests.twin_support import TwinTestCase, request_json, temp_dir

REQUIRED = {"error": "deviceId, deviceUserid, and sensorsDates are required"}
INT64_MAX = 2 ** 63 - 1
INT32_MAX = 2 ** 31 - 1


def sensor(sensor_id: int, value: str = "5.0", sensor_type: int = 1, times: str = "14:16:21") -> dict:
    return {"times": times, "sensorsId": sensor_id, "isAlarm": "0", "sensorsTypeId": sensor_type,
            "isLine": 1, "reVal": value + "000", "value": value}


def frame(values) -> str:
    """rawData as TLINK sends it: the hex of the device's frame."""
    return ("#RTU," + ",".join(values) + "\r\n").encode("ascii").hex().upper()


def tlink_push(**overrides) -> dict:
    body = {"flag": "00", "deviceUserid": 385, "parentUserId": "217", "sensorsDates": [sensor(11922)],
            "time": "2019-05-10 14:16:21", "rawData": frame(["5.0"]), "deviceId": 2864}
    body.update(overrides)
    return body


def over_the_limit(limit) -> tuple:
    """(push that just fits, push one past the limit) for one row of LIMITS."""
    if limit.kind == TEXT:
        fits, over = "x" * limit.size, "x" * (limit.size + 1)
    elif limit.kind == INT32:
        fits, over = INT32_MAX, INT32_MAX + 1
    else:  # DEVICE_KEY, INT64, LOOSE_INT64
        fits, over = INT64_MAX, INT64_MAX + 1
    if limit.per_sensor:
        return (tlink_push(sensorsDates=[dict(sensor(11922), **{limit.field: fits})]),
                tlink_push(sensorsDates=[sensor(11921), dict(sensor(11922), **{limit.field: over})]))
    if limit.field == "deviceNo":  # through rawData, the way the reference fails real pushes
        return tlink_push(rawData=fits), tlink_push(rawData=over)
    return tlink_push(**{limit.field: fits}), tlink_push(**{limit.field: over})


class TlinkTwinTestCase(TwinTestCase):
    def setUp(self):
        self.log = io.StringIO()
        self.twin = self.start_twin(log_stream=self.log)
        self.conn = self.connect(self.twin)

    def push(self, body):
        return request_json(self.conn, "POST", "/api/webhooks/tlink", body)[:2]

    def get(self, path):
        return request_json(self.conn, "GET", path)[:2]

    def stored(self):
        """What the twin's store holds: (devices, sensors, readings)."""
        store = self.twin.store
        return tuple(store._query("SELECT COUNT(*) FROM %s" % t)[0][0]
                     for t in ("tlink_devices", "tlink_sensors", "tlink_readings"))

    def assertRefused(self, body, reason):
        status, answer = self.push(body)
        self.assertEqual(status, 500, answer)
        self.assertIn(reason, answer["error"])
        self.assertIn(reason, self.log.getvalue())  # the twin's log names the limit
        self.assertEqual(self.stored(), (0, 0, 0))


class ColumnLimitsTest(TlinkTwinTestCase):
    def test_each_limit_fails_like_the_reference_and_stores_nothing(self):
        self.assertEqual(len({(l.field, l.per_sensor) for l in LIMITS}), len(LIMITS))
        for limit in LIMITS:
            fits, over = over_the_limit(limit)
            with self.subTest(limit.field):
                self.twin.store._conn.executescript(
                    "DELETE FROM tlink_readings; DELETE FROM tlink_sensors; DELETE FROM tlink_devices;")
                field = "rawData used as deviceNo" if limit.field == "deviceNo" else limit.field
                self.assertRefused(over, field)
                status, answer = self.push(fits)
                self.assertEqual(status, 200, answer)
                self.assertEqual(self.stored()[2], 1)

    def test_the_log_and_answer_name_the_limit(self):
        self.assertRefused(tlink_push(rawData="A" * 250), "rawData used as deviceNo is 250 characters, over 191")
        self.assertRefused(tlink_push(sensorsDates=[sensor(1), dict(sensor(2), value="v" * 256)]),
                           "sensorsDates[1].value is 256 characters, over 255")

    def test_a_long_raw_data_is_fine_with_a_device_number(self):
        status, answer = self.push(tlink_push(rawData="A" * 5000, deviceNo="ATG-01"))
        self.assertEqual((status, answer["storedReadings"]), (200, 1))
        device = self.get("/api/devices/2864/latest")[1]["device"]
        self.assertEqual(device["deviceNo"], "ATG-01")

    def test_pushes_the_reference_fails_in_production(self):
        twelve = [sensor(11900 + n, "%d.4" % (20 + n)) for n in range(12)]  # 7-character reVals
        self.assertRefused(tlink_push(sensorsDates=twelve, rawData=frame(s["reVal"] for s in twelve)),
                           "rawData used as deviceNo is")
        urls = ["https://media.example.invalid/%d/629287.jpg" % n for n in (1, 2, 3)]
        images = [dict(sensor(n, sensor_type=4), reVal=url, value=url) for n, url in enumerate(urls, 1)]
        self.assertRefused(tlink_push(sensorsDates=images, rawData=frame(urls)), "rawData used as deviceNo is")

    def test_ids_and_shapes_the_reference_refuses(self):
        for field, value in (("deviceId", 0), ("deviceUserid", 0), ("deviceId", "")):
            with self.subTest(field=field, value=value):
                self.assertEqual(self.push(tlink_push(**{field: value})), (400, REQUIRED))
        for value, reason in ((-1, "deviceId -1 is not > 0"), (2 ** 63, "is outside signed 64-bit"),
                              (-(2 ** 63) - 1, "is outside signed 64-bit"), ("abc", "is not an integer")):
            with self.subTest(deviceId=value):
                self.assertRefused(tlink_push(deviceId=value), reason)
        for value, reason in ((2 ** 63, "sensorsDates[0].sensorsId"), ("x", "sensorsDates[0].sensorsId")):
            with self.subTest(sensorsId=value):
                self.assertRefused(tlink_push(sensorsDates=[dict(sensor(1), sensorsId=value)]), reason)
        self.assertRefused(tlink_push(sensorsDates={"sensorsId": 1}), "sensorsDates is not a list")
        self.assertRefused(tlink_push(time=1557497781), "time 1557497781 is not text")
        status, answer = self.push(tlink_push(groupId=1e30))
        self.assertEqual(status, 200, answer)  # int(str(1e30)) fails there, so it is dropped, not refused
        status, answer = self.push(tlink_push(deviceId=INT64_MAX, groupId="not a number"))
        self.assertEqual(status, 200, answer)  # the reference drops a groupId that is not a number
        self.assertIsNone(self.get("/api/devices/%d/latest" % INT64_MAX)[1]["device"]["groupId"])
        self.assertEqual(self.push(tlink_push(sensorsDates=[])), (400, REQUIRED))


class CountsTest(TlinkTwinTestCase):
    def test_a_duplicate_says_the_same_stored_readings_and_no_new_ones(self):
        body = tlink_push(sensorsDates=[sensor(1), sensor(2), sensor(3)])
        self.assertEqual(self.push(body), (200, {"status": "ok", "storedReadings": 3, "newReadings": 3}))
        self.assertEqual(self.push(body), (200, {"status": "ok", "storedReadings": 3, "newReadings": 0}))
        self.assertEqual(self.stored(), (1, 3, 3))

    def test_another_push_at_the_same_time_keeps_the_first_values(self):
        self.push(tlink_push())
        answer = self.push(tlink_push(sensorsDates=[sensor(11922, "9.9")], flag="01"))[1]
        self.assertEqual((answer["storedReadings"], answer["newReadings"]), (1, 0))
        sensor_doc = self.get("/api/devices?deviceId=2864")[1]["devices"][0]["sensors"][0]
        self.assertEqual([r["value"] for r in sensor_doc["history"]], ["5.0"])
        self.assertEqual(sensor_doc["latestValue"], "9.9")  # the sensor row follows every push, as there

    def test_without_time_or_times_nothing_is_merged(self):
        no_time = tlink_push()
        del no_time["time"]
        no_times = tlink_push(sensorsDates=[{"sensorsId": 7, "value": "1"}])
        for body in (no_time, no_time, no_times, no_times):
            self.assertEqual(self.push(body)[1]["newReadings"], 1)
        self.assertEqual(self.twin.store.count_tlink_readings(), 4)

    def test_infinite_flags_are_true_without_a_traceback(self):
        body = json.dumps(tlink_push(sensorsDates=[dict(sensor(1), isAlarm="A", isLine="L")])).encode()
        body = body.replace(b'"A"', b"1e999").replace(b'"L"', b"-1e999")  # JSON has no infinity but these
        self.assertEqual(self.push(body), (200, {"status": "ok", "storedReadings": 1, "newReadings": 1}))
        reading = self.get("/api/devices/2864/latest")[1]["sensors"][0]
        self.assertEqual((reading["isAlarm"], reading["isLine"]), (True, True))  # bool() of a float, as there
        self.assertEqual((reading["latest"]["isAlarm"], reading["latest"]["isLine"]), (True, True))
        self.assertNotIn("Traceback", self.log.getvalue())

    def test_entries_without_a_sensor_id_are_skipped(self):
        answer = self.push(tlink_push(sensorsDates=[{"value": "1"}, sensor(1)]))[1]
        self.assertEqual((answer["storedReadings"], answer["newReadings"]), (1, 1))


class ReferenceReadApiTest(TlinkTwinTestCase):
    DEVICE_KEYS = {"deviceId", "parentUserId", "userId", "lastFlag", "lastPushTime", "deviceName", "deviceNo",
                   "groupId", "lat", "lng", "productId", "productType", "protocolLabel"}
    SENSOR_KEYS = {"sensorId", "deviceId", "sensorName", "sensorTypeId", "isAlarm", "isLine", "latestValue",
                   "latestRecordedAt", "unit"}
    READING_KEYS = {"isAlarm", "isLine", "rawValue", "recordedAt", "sensorTimestamp", "value"}

    def setUp(self):
        super().setUp()
        self.push(tlink_push(deviceNo="ATG-01", deviceName="Tank 1", groupId=77, lat=13.75, lng="100.5",
                             productId="p1", productType="ATG", protocolLabel="modbus",
                             sensorsDates=[dict(sensor(11922), sensorName="Level", unit="mm")]))
        self.push(tlink_push(time="2019-05-10 14:17:21", deviceNo="ATG-01",
                             sensorsDates=[sensor(11922, "6.0", times="14:17:21")]))
        self.push(tlink_push(deviceId=9, deviceUserid=999))

    def test_devices(self):
        status, doc = self.get("/api/devices?deviceId=2864&historyLimit=5")
        self.assertEqual(status, 200)
        self.assertEqual(doc["pagination"], {"page": 1, "pageSize": 20, "total": 1, "pages": 1})
        device = doc["devices"][0]
        self.assertEqual(set(device), self.DEVICE_KEYS | {"sensors"})
        self.assertEqual((device["deviceId"], device["parentUserId"], device["userId"], device["lastFlag"],
                          device["lastPushTime"]), (2864, "217", None, "00", "2019-05-10T14:17:21"))
        self.assertEqual((device["deviceNo"], device["deviceName"], device["groupId"], device["lat"]),
                         ("ATG-01", "Tank 1", 77, "13.75"))
        sensor_doc = device["sensors"][0]
        self.assertEqual(set(sensor_doc), self.SENSOR_KEYS | {"history"})
        self.assertEqual((sensor_doc["sensorId"], sensor_doc["sensorName"], sensor_doc["sensorTypeId"],
                          sensor_doc["isAlarm"], sensor_doc["isLine"], sensor_doc["unit"]),
                         (11922, "Level", 1, False, True, "mm"))
        self.assertEqual([set(r) for r in sensor_doc["history"]], [self.READING_KEYS] * 2)
        self.assertEqual(sensor_doc["history"][0], {"recordedAt": "2019-05-10T14:17:21", "sensorTimestamp": "14:17:21",
                                                    "isAlarm": False, "isLine": True, "rawValue": "6.0000",
                                                    "value": "6.0"})
        _, doc = self.get("/api/devices?pageSize=1&page=2&historyLimit=nope")  # junk is the default, as Flask
        self.assertEqual((doc["pagination"], [d["deviceId"] for d in doc["devices"]]),
                         ({"page": 2, "pageSize": 1, "total": 2, "pages": 2}, [2864]))
        _, doc = self.get("/api/devices?deviceId=2864&endTime=2019-05-10%2014:16:59")
        self.assertEqual([r["value"] for r in doc["devices"][0]["sensors"][0]["history"]], ["5.0"])

    def test_latest_and_history(self):
        status, doc = self.get("/api/devices/2864/latest")
        self.assertEqual((status, set(doc)), (200, {"device", "sensors"}))
        self.assertEqual(set(doc["device"]), self.DEVICE_KEYS)
        latest = doc["sensors"][0]["latest"]
        self.assertEqual((set(latest), latest["value"], latest["recordedAt"]),
                         (self.READING_KEYS, "6.0", "2019-05-10T14:17:21"))
        status, doc = self.get("/api/devices/2864/history")  # the pull-sync log: empty for pushes
        self.assertEqual((status, [s["history"] for s in doc["sensors"]]), (200, [[]]))
        for path, status in (("/api/devices/1/latest", 404), ("/api/devices/1/history", 404),
                             ("/api/devices/-1/latest", 404), ("/api/devices?ownerId=u-1", 404),
                             ("/api/devices/2864/latest?ownerId=u-1", 404)):
            with self.subTest(path):
                self.assertEqual(self.get(path)[0], status)
        self.assertEqual(self.get("/api/devices/1/latest")[1], {"error": "Device not found"})

    def test_huge_ids_and_pages_are_404_or_clamped_without_a_traceback(self):
        huge, endless = "9" * 20, "9" * 5000  # past sqlite's 64-bit integers; past int()'s digit limit (3.11+)
        for path in ("/api/devices/%s/latest" % endless, "/api/devices/%s/history" % endless,
                     "/api/devices/%d/latest" % (INT64_MAX + 1), "/api/devices/%s/history" % huge,
                     "/api/devices/0/latest"):
            with self.subTest(path[:40]):  # no positive signed 64-bit id: no such device, as the reference finds
                self.assertEqual(self.get(path), (404, {"error": "Device not found"}))
        for query, page, page_size, ids in (("page=" + huge, 10 ** 9, 20, []),
                                            ("page=" + endless, 1, 20, [2864, 9]),
                                            ("pageSize=" + huge, 1, 100, [2864, 9]),
                                            ("pageSize=-" + huge, 1, 1, [9]),
                                            ("deviceId=" + huge, 1, 20, []),
                                            ("deviceId=" + endless, 1, 20, [2864, 9])):  # junk: every device
            with self.subTest(query[:40]):
                status, doc = self.get("/api/devices?" + query)
                self.assertEqual(status, 200, doc)
                self.assertEqual((doc["pagination"]["page"], doc["pagination"]["pageSize"]), (page, page_size))
                self.assertEqual(sorted(d["deviceId"] for d in doc["devices"]), sorted(ids))
        status, doc = self.get("/api/users/385/devices?page=" + endless)  # seed 001's read-back clamps too
        self.assertEqual((status, doc["page"]), (200, 10 ** 9))
        self.assertNotIn("Traceback", self.log.getvalue())

    def test_a_failing_tlink_route_never_answers_in_tesaiot_words(self):
        from iotpost.receiver import FaultPlan

        for fault in ("error", "500"):
            with self.subTest(fault):
                self.twin.faults = FaultPlan.script([fault])
                status, answer = self.push(tlink_push())
                self.assertEqual((status, answer), (500, {"error": "Internal Server Error"}))
        self.assertEqual(self.get("/api/devices/2864/latest")[0], 200)

    def test_answers_are_flask_json(self):
        self.conn.request("GET", "/api/devices/2864/latest")
        response = self.conn.getresponse()
        raw = response.read().decode("utf-8")
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(raw, json.dumps(json.loads(raw), separators=(",", ":"), sort_keys=True) + "\n")

    def test_seed_001_paths_still_work(self):
        status, doc = self.get("/api/users/385/devices")
        self.assertEqual((status, doc["total"], doc["devices"][0]["deviceId"]), (200, 1, 2864))
        status, doc = self.get("/api/users/385/devices/2864/latest")
        self.assertEqual((status, doc["sensors"][0]["latest"]["value"]), (200, "6.0"))
        status, doc = self.get("/api/users/385/devices/2864/history")
        self.assertEqual((status, doc["count"]), (200, 2))
        self.assertEqual(self.get("/api/users/385/devices/9/latest")[0], 404)


class OlderDatabaseTest(unittest.TestCase):
    def test_a_database_from_an_older_twin_is_upgraded_in_place(self):
        path = temp_dir(self) / "old.sqlite3"
        old = sqlite3.connect(str(path))
        old.executescript("""
            CREATE TABLE tlink_users (user_id TEXT PRIMARY KEY, parent_user_id TEXT);
            CREATE TABLE tlink_devices (device_id TEXT PRIMARY KEY, user_id TEXT NOT NULL);
            CREATE TABLE tlink_sensors (ref INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,
                sensor_id TEXT NOT NULL, type_json TEXT, UNIQUE (device_id, sensor_id));
            CREATE TABLE tlink_readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, sensor_ref INTEGER NOT NULL,
                recorded_at TEXT NOT NULL, sensor_timestamp TEXT NOT NULL, value_json TEXT, re_val_json TEXT,
                is_alarm_json TEXT, is_line_json TEXT, raw_data_json TEXT, flag_json TEXT,
                received_at TEXT NOT NULL, UNIQUE (sensor_ref, recorded_at, sensor_timestamp));
            INSERT INTO tlink_users VALUES ('385', '217');
            INSERT INTO tlink_devices VALUES ('2864', '385');
            INSERT INTO tlink_sensors (device_id, sensor_id, type_json) VALUES ('2864', '11922', '1');
            INSERT INTO tlink_readings (sensor_ref, recorded_at, sensor_timestamp, value_json, received_at)
                VALUES (1, '2019-05-10 14:16:21', '', '"5.0"', 'x');
        """)
        old.commit()
        old.close()
        with TelemetryStore(path) as store:
            self.assertEqual(store._query("SELECT sensor_timestamp FROM tlink_readings"), [(None,)])
            self.assertEqual(store.store_tlink_push(tlink_push()), (1, 1))
            self.assertEqual(store.tlink_device_latest(2864)["device"]["lastFlag"], "00")
            self.assertEqual(store.count_tlink_readings(), 2)


if __name__ == "__main__":
    unittest.main()
