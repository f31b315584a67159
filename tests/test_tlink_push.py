"""TLINK pushes without a network: limits, sensors, rawData, data lines, and one second per push."""

from __future__ import annotations

import io
import json
import tempfile
import unittest
from pathlib import Path

from iotpost.environment import Environment
from iotpost.errors import ClockNotSet, InputDataError, UsageError
from iotpost.spool import open_spool
from iotpost.tlink import (IMAGE, MAX_FRAME_REGISTERS, NUMERIC, SENT_IDS, DeviceInfo, SensorSpec, TlinkPushes,
                           default_device_no, limit_problem, parse_sensor, raw_frame, tlink_time, value_text)
from iotpost.tlink_cli import settings_from_args
from iotpost.tlink_input import parse_reading_line, read_reading_lines
from iotpost.tlink_schema import text_limit
from iotpost.tlink_stamps import AHEAD_WINDOW_S, PushTimes, next_second

NOW = 1795797969.25  # 2026-11-27, after the release date: reading_time accepts it


class FakeClock:
    def __init__(self, wall: float = NOW) -> None:
        self.t = wall
        self.slept = []

    def wall(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def env(self) -> Environment:
        return Environment(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(), monotonic=self.wall,
                           wall=self.wall, sleep=self.sleep)


class LimitTests(unittest.TestCase):
    def test_the_table_holds_the_receivers_columns(self):
        self.assertEqual(SENT_IDS, ("deviceId", "deviceUserid", "groupId", "sensorsId"))
        for field in ("deviceName", "deviceNo", "productId", "productType", "protocolLabel", "parentUserId",
                      "sensorName", "rawData"):
            self.assertIn("at most 191", limit_problem(field, "x" * 192), field)
        for field in ("lat", "lng", "unit", "times"):
            self.assertIn("at most 64", limit_problem(field, "x" * 65), field)
        self.assertEqual((text_limit("reVal"), text_limit("value")), (255, 255))

    def test_ids_are_positive_signed_64_bit(self):
        self.assertIsNone(limit_problem("deviceId", 1))
        self.assertIsNone(limit_problem("deviceId", 2 ** 63 - 1))
        for bad in (0, -5, 2 ** 63, True, "7"):
            self.assertIn("deviceId", limit_problem("deviceId", bad) or "", bad)

    def test_text_at_the_limit_passes_one_over_names_field_and_limit(self):
        self.assertIsNone(limit_problem("unit", "u" * 64))
        problem = limit_problem("unit", "u" * 65)
        self.assertIn("unit is 65 characters", problem)
        self.assertIn("at most 64", problem)


class SensorTests(unittest.TestCase):
    def test_name_is_the_rest_and_may_hold_colons(self):
        self.assertEqual(parse_sensor("11922:1:°C:Room 2: north"), SensorSpec(11922, 1, "°C", "Room 2: north"))
        self.assertEqual(parse_sensor("7::%RH"), SensorSpec(7, NUMERIC, "%RH", None))
        self.assertEqual(parse_sensor("8:4::Gate cam"), SensorSpec(8, IMAGE, None, "Gate cam"))

    def test_bad_sensors(self):
        for text, word in (("x", "not a number"), ("5:9", "not a TLINK type"), ("0", "sensorsId"),
                           ("5:1:" + "u" * 65, "unit"), ("5:1::" + "n" * 192, "sensorName")):
            with self.assertRaises(ValueError) as cm:
                parse_sensor(text)
            self.assertIn(word, str(cm.exception))

    def test_duplicate_ids_are_a_usage_error(self):
        with self.assertRaises(UsageError) as cm:
            settings_from_args(["--sensor", "5", "--sensor", "5:2"], environ={})
        self.assertIn("--sensor 5", cm.exception.message)

    def test_flags_checked_against_limits(self):
        with self.assertRaises(UsageError) as cm:
            settings_from_args(["--device-name", "n" * 192], environ={})
        self.assertIn("--device-name: deviceName is 192 characters", cm.exception.message)
        self.assertIn("191", cm.exception.message)
        s = settings_from_args(["--device-name", "n" * 191, "--lat", "13.75"], environ={})
        self.assertEqual((len(s.device.device_name), s.device.lat), (191, "13.75"))


class FrameTests(unittest.TestCase):
    def test_huge_readings_saturate_the_register_instead_of_overflowing(self):
        frame = raw_frame(7, ["1e308", "-1e308", "1.7e308"])
        self.assertEqual(frame[6:18], "7FFF8000" + "7FFF")

    def test_raw_frame_stays_under_191_characters_for_any_sensor_count(self):
        for count in (0, 1, 12, 15, MAX_FRAME_REGISTERS, 200):
            frame = raw_frame(2 ** 63 - 1, ["123.4"] * count)
            self.assertLess(len(frame), 191, count)
            self.assertEqual(frame, frame.upper())
            bytes.fromhex(frame)

    def test_raw_frame_is_a_modbus_answer_with_a_valid_crc(self):
        frame = bytes.fromhex(raw_frame(1, ["21.5", "x", "-1"]))
        self.assertEqual(list(frame[:3]), [2, 3, 6])
        self.assertEqual(frame[3:9], bytes([0, 215, 0, 0, 0xFF, 0xF6]))
        crc = 0xFFFF  # a CRC over the whole frame, its CRC included, is 0
        for byte in frame:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        self.assertEqual(crc, 0)

    def test_generated_push_carries_device_no_and_twelve_plus_three_sensors_fit(self):
        sensors = [SensorSpec(100 + i, NUMERIC, "°C") for i in range(12)] + [SensorSpec(200 + i, IMAGE) for i in range(3)]
        push = TlinkPushes(DeviceInfo(2864, 385, "217"), sensors, seed=1).next(NOW)
        self.assertLess(len(push["rawData"]), 191)
        self.assertEqual(push["deviceNo"], default_device_no(2864))
        self.assertEqual(len(push["sensorsDates"]), 15)
        self.assertNotIn("deviceName", push)  # unset device fields are left out

    def test_value_text(self):
        self.assertEqual([value_text(v) for v in (21.5, 7, True, False, "on", 1e20)],
                         ["21.5", "7", "1", "0", "on", "1e+20"])


class DataLineTests(unittest.TestCase):
    def test_a_line_maps_sensor_ids_to_text_values(self):
        line = parse_reading_line('{"5": 21.5, "6": null, "time": "2026-01-02 03:04:05"}', "f line 1", 1)
        self.assertEqual(line.values, {5: "21.5", 6: None})
        self.assertEqual(line.time, "2026-01-02 03:04:05")

    def test_bad_lines_name_their_place(self):
        for text, word in (("[1]", "expected a JSON object"), ('{"a": 1}', "not a sensor id"),
                           ('{"time": "2026-01-02 03:04:05"}', "no reading"), ('{"5": [1]}', "array"),
                           ('{"5": 1, "time": 5}', "time must be a string"),
                           ('{"5": 1, "time": "2026-02-30 00:00:00"}', "not a real date"),
                           ('{"5": "%s"}' % ("v" * 256), "255")):
            with self.assertRaises(InputDataError) as cm:
                parse_reading_line(text, "f line 9", 9)
            self.assertIn("f line 9", cm.exception.message)
            self.assertIn(word, cm.exception.message)

    def test_values_and_times_no_machine_can_hold_are_65_not_a_crash(self):
        for text, word in (('{"5": 1e999}', "not a finite number"), ('{"5": -1e999}', "not a finite number"),
                           ('{"5": 1, "time": "0001-01-01 00:00:00"}', "out of the range"),
                           ('{"5": 1, "time": "9999-12-31T23:59:59-12:00"}', "out of the range")):
            with self.subTest(text=text):
                with self.assertRaises(InputDataError) as cm:
                    parse_reading_line(text, "f line 4", 4)
                self.assertIn("f line 4", cm.exception.message)
                self.assertIn(word, cm.exception.message)

    def test_stream_goes_on_past_a_bad_line(self):
        stream = io.BytesIO(b'{"5": 1}\n\xff\xfe\n\n{"5": 2}\n')
        got = list(read_reading_lines(stream, "<stdin>"))
        self.assertEqual(len(got), 3)
        self.assertIsInstance(got[1], InputDataError)
        self.assertIn("<stdin> line 2", got[1].message)
        self.assertEqual(got[2].values, {5: "2"})


class PushTimesTests(unittest.TestCase):
    def test_next_second(self):
        self.assertEqual(next_second(100, None), 100)
        self.assertEqual(next_second(100, 99), 100)
        self.assertEqual(next_second(100, 100), 101)
        self.assertEqual(next_second(100, 103), 104)  # other runs took seconds just ahead
        self.assertEqual(next_second(100, 100 + AHEAD_WINDOW_S + 1), 100)  # a far-future own time: no stall

    def test_a_push_in_a_taken_second_waits_for_the_next_on_the_injected_clock(self):
        clock = FakeClock()
        times = PushTimes(2864, clock.env())
        first = times.generated()
        clock.t += 0.2
        second = times.generated()
        self.assertEqual((first, second), (int(NOW), int(NOW) + 1))
        self.assertAlmostEqual(sum(clock.slept), 0.55)
        self.assertGreaterEqual(clock.t, second)
        self.assertNotEqual(tlink_time(first), tlink_time(second))

    def test_an_unset_clock_is_refused(self):
        clock = FakeClock(wall=1000.0)
        with self.assertRaises(ClockNotSet):
            PushTimes(1, clock.env()).generated()

    def test_own_time_repeating_the_previous_is_refused(self):
        times = PushTimes(7, FakeClock().env())
        times.own("2026-01-02 03:04:05", "f line 1")
        with self.assertRaises(InputDataError) as cm:
            times.own("2026-01-02 03:04:05", "f line 2")
        self.assertIn("f line 2", cm.exception.message)
        times.own("2026-01-02 03:04:04", "f line 3")  # out of order is fine: it repeats nothing

    def test_spool_carries_the_last_time_across_runs(self):
        tmp = Path(tempfile.mkdtemp(prefix="iotpost-tlink-times-"))
        self.addCleanup(__import__("shutil").rmtree, str(tmp), True)
        clock = FakeClock()
        for expected in (int(NOW), int(NOW) + 1):  # two runs in the same second
            spool = open_spool(tmp / "spool.db")
            try:
                self.assertEqual(PushTimes(2864, clock.env(), spool).generated(), expected)
            finally:
                spool.close()
        spool = open_spool(tmp / "spool.db")
        try:
            self.assertEqual(PushTimes(9, clock.env(), spool).generated(), int(NOW) + 1)  # per device
            stamp = tlink_time(int(NOW) + 1)
            with self.assertRaises(InputDataError):
                PushTimes(2864, clock.env(), spool).own(stamp, "<stdin> line 1")
            self.assertEqual(spool.advance_state("tlink_last_time:2864", lambda old: old), int(NOW) + 1)
        finally:
            spool.close()


class DryRunRecordTests(unittest.TestCase):
    def test_json_dry_run_record_has_body_text(self):
        from iotpost.output import Reporter

        out = io.StringIO()
        Reporter("p", out, io.StringIO(), mode="json").dry_run(1, "POST", "https://h/x", [("X-TLink-Signature",
                                                                                       "sha256=ab")], b'{"a":"\\u00b0"}')
        doc = json.loads(out.getvalue())
        self.assertEqual(doc["body_text"], '{"a":"\\u00b0"}')
        self.assertEqual(doc["body"], {"a": "°"})
        self.assertEqual(doc["headers"]["X-TLink-Signature"], "sha256=ab")


if __name__ == "__main__":
    unittest.main()
