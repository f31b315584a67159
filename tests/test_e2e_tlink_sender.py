"""End to end, issue 9's reproductions: tlink_push.py as a subprocess against the twin over verified TLS.

Every check is on what the twin STORED (its read API under /api/users/...), never on the
receiver's storedReadings, which counts entries processed, not readings newly stored.
"""

from __future__ import annotations

import json
import time
import unittest

from tests.support import TLINK, run_cli, start_cli
from tests.test_e2e_tlink import TlinkTestCase, sign
from tests.twin_support import CERTDATA, connect, request_json

USER, DEVICE = 385, 2864  # tlink_push.py's defaults


class StoredTestCase(TlinkTestCase):
    def stored(self, twin, user=USER, device=DEVICE):
        """Every reading the twin stored for the device, newest first (its read API)."""
        conn = connect(twin)
        self.addCleanup(conn.close)
        status, doc, _ = request_json(conn, "GET", "/api/users/%d/devices/%d/history?limit=1000" % (user, device))
        if status == 404:
            return []
        self.assertEqual(status, 200, doc)
        return doc["readings"]

    def sent(self, twin):
        return [json.loads(r.body) for r in self.posts(twin)]

    def assertNoTesaiotWords(self, proc):
        text = proc.stdout + proc.stderr
        for word in ("API key", "api key", "--base-url", "endpoints.json", "api_key.txt"):
            self.assertNotIn(word, text)


class PushShapeTests(StoredTestCase):
    def test_twelve_numeric_and_three_image_sensors_are_stored_with_a_short_rawdata(self):
        twin = self.twin()
        sensors = ["%d:1:°C" % (100 + i) for i in range(12)] + ["%d:4" % (200 + i) for i in range(3)]
        args = [a for s in sensors for a in ("--sensor", s)]
        proc = self.push(twin, "--secret-file", self.secret_file, *args)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        push = self.sent(twin)[0]
        self.assertLess(len(push["rawData"]), 191)
        bytes.fromhex(push["rawData"])
        self.assertTrue(push["deviceNo"])
        self.assertNotEqual(push["deviceNo"], push["rawData"])
        self.assertEqual(len(self.stored(twin)), 15)
        self.assertIn("accepted", proc.stdout)

    def test_device_fields_and_a_sensor_name_holding_colons(self):
        twin = self.twin()
        proc = self.push(twin, "--secret-file", self.secret_file, "--device-no", "ABC123", "--device-name", "Pump 4",
                         "--group-id", "77", "--lat", "13.7563", "--lng", "100.5018", "--product-id", "P-1",
                         "--product-type", "RTU", "--protocol-label", "modbus", "--sensor", "5:1:°C:Tank: top")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        push = self.sent(twin)[0]
        for field, value in (("deviceNo", "ABC123"), ("deviceName", "Pump 4"), ("groupId", 77), ("lat", "13.7563"),
                             ("lng", "100.5018"), ("productId", "P-1"), ("productType", "RTU"),
                             ("protocolLabel", "modbus")):
            self.assertEqual(push[field], value)
        reading = push["sensorsDates"][0]
        self.assertEqual((reading["sensorName"], reading["unit"], reading["isLine"]), ("Tank: top", "°C", 1))
        self.assertEqual(len(self.stored(twin)), 1)

    def test_default_device_no_is_derived_from_the_device_id_and_stable(self):
        runs = [run_cli(TLINK, "--dry-run", "--json", "--device-id", str(d)) for d in (2864, 2864, 2865)]
        numbers = [json.loads(p.stdout.splitlines()[0])["body"]["deviceNo"] for p in runs]
        self.assertEqual(numbers[0], numbers[1])
        self.assertNotEqual(numbers[0], numbers[2])
        self.assertRegex(numbers[0], r"^[0-9A-F]{16}$")


class DistinctTimeTests(StoredTestCase):
    def test_count_3_interval_0_2_gives_three_times_and_three_readings_per_sensor(self):
        twin = self.twin()
        proc = self.push(twin, "--secret-file", self.secret_file, "--count", "3", "--interval", "0.2")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        times = [p["time"] for p in self.sent(twin)]
        self.assertEqual(len(set(times)), 3, times)
        stored = self.stored(twin)
        self.assertEqual(len(stored), 9)  # 3 sensors x 3 pushes
        self.assertEqual(len({(r["sensorsId"], r["recordedAt"]) for r in stored}), 9)

    def test_back_to_back_runs_with_spool_never_share_a_time(self):
        twin = self.twin()
        spool = self.tmp / "spool.db"
        for _ in range(2):
            proc = self.push(twin, "--secret-file", self.secret_file, "--spool", spool)
            self.assertEqual(proc.returncode, 0, proc.stderr)
        times = [p["time"] for p in self.sent(twin)]
        self.assertEqual(len(set(times)), 2, times)
        self.assertEqual(len(self.stored(twin)), 6)

    def test_concurrent_runs_with_one_spool_take_different_seconds(self):
        twin = self.twin()
        spool = self.tmp / "spool.db"
        self.assertEqual(self.push(twin, "--secret-file", self.secret_file, "--spool", spool).returncode, 0)
        procs = [start_cli(TLINK, "--url", twin.url + "/api/webhooks/tlink", "--ca-file", CERTDATA / "ca.pem",
                           "--secret-file", self.secret_file, "--spool", spool) for _ in range(3)]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, err)
        times = [p["time"] for p in self.sent(twin)]
        self.assertEqual(len(set(times)), 4, times)
        self.assertEqual(len(self.stored(twin)), 12)

    def test_a_second_taken_by_an_earlier_run_is_not_reused(self):
        from iotpost.spool import open_spool

        twin = self.twin()
        spool_path = self.tmp / "spool.db"
        spool = open_spool(spool_path)
        taken = int(time.time()) + 1  # as if another run had just stamped the next second
        spool.advance_state("tlink_last_time:%d" % DEVICE, lambda old: taken)
        spool.close()
        proc = self.push(twin, "--secret-file", self.secret_file, "--spool", spool_path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        stamp = self.sent(twin)[0]["time"]
        self.assertGreater(stamp, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(taken)))


class DataFileTests(StoredTestCase):
    def test_stdin_lines_are_the_stored_values(self):
        twin = self.twin()
        lines = ['{"11922": 21.5, "11924": true, "time": "2026-01-02 03:04:05"}',
                 '{"11922": "22.25", "900": 7, "time": "2026-01-02 03:04:06"}',
                 '{"11922": 23}']
        proc = self.push(twin, "--secret-file", self.secret_file, "--data-file", "-", "--sensor", "11922:1:°C:Room",
                         "--sensor", "11924:2", stdin="\n".join(lines) + "\n")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        pushes = self.sent(twin)
        self.assertEqual([p["time"] for p in pushes[:2]], ["2026-01-02 03:04:05", "2026-01-02 03:04:06"])
        first = {r["sensorsId"]: r for r in pushes[0]["sensorsDates"]}
        self.assertEqual(set(first), {11922, 11924})  # a declared sensor missing from a line is left out
        self.assertEqual((first[11922]["reVal"], first[11922]["value"], first[11922]["unit"]), ("21.5", "21.5", "°C"))
        self.assertEqual((first[11924]["sensorsTypeId"], first[11924]["value"]), (2, "1"))
        undeclared = [r for r in pushes[1]["sensorsDates"] if r["sensorsId"] == 900][0]
        self.assertEqual((undeclared["sensorsTypeId"], undeclared["value"]), (1, "7"))
        stored = {(r["sensorsId"], r["recordedAt"][:19]): r["value"] for r in self.stored(twin)}
        self.assertEqual(stored[(11922, "2026-01-02 03:04:05")], "21.5")
        self.assertEqual(stored[(11924, "2026-01-02 03:04:05")], "1")
        self.assertEqual(stored[(11922, "2026-01-02 03:04:06")], "22.25")
        self.assertEqual(stored[(900, "2026-01-02 03:04:06")], "7")
        self.assertIn("23", [v for (sid, _), v in stored.items() if sid == 11922])
        self.assertEqual(len(stored), 5)

    def test_iso_time_with_offset_is_sent_as_local_time(self):
        twin = self.twin()
        proc = self.push(twin, "--secret-file", self.secret_file, "--data-file", "-",
                         stdin='{"5": 1, "time": "2026-01-02T03:04:05Z"}\n',
                         env={"TZ": "ICT-7"})  # POSIX form: no tz database needed
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.sent(twin)[0]["time"], "2026-01-02 10:04:05")

    def test_a_bad_line_is_65_naming_it_and_the_other_lines_still_go(self):
        twin = self.twin()
        stdin = ('{"5": 1, "time": "2026-01-02 03:04:05"}\n{"5": \n{"x": 1}\n{"5": {"a": 1}}\n'
                 '{"5": 2, "time": "2026-01-02 03:04:06"}\n')
        proc = self.push(twin, "--secret-file", self.secret_file, "--data-file", "-", stdin=stdin)
        self.assertEqual(proc.returncode, 65, proc.stderr)
        for where in ("<stdin> line 2", "<stdin> line 3", "<stdin> line 4"):
            self.assertIn(where, proc.stderr)
        self.assertEqual(sorted(r["value"] for r in self.stored(twin)), ["1", "2"])

    def test_a_line_repeating_the_previous_time_is_refused_not_rewritten(self):
        twin = self.twin()
        stdin = ('{"5": 1, "time": "2026-01-02 03:04:05"}\n{"5": 2, "time": "2026-01-02 03:04:05"}\n'
                 '{"5": 3, "time": "2026-01-02 03:04:07"}\n')
        proc = self.push(twin, "--secret-file", self.secret_file, "--data-file", "-", stdin=stdin)
        self.assertEqual(proc.returncode, 65, proc.stderr)
        self.assertIn("<stdin> line 2", proc.stderr)
        self.assertIn("repeats the previous push's", proc.stderr)
        self.assertEqual([p["time"] for p in self.sent(twin)], ["2026-01-02 03:04:05", "2026-01-02 03:04:07"])
        self.assertEqual(sorted(r["value"] for r in self.stored(twin)), ["1", "3"])

    def test_with_spool_a_later_run_cannot_repeat_the_last_time(self):
        twin = self.twin()
        spool = self.tmp / "spool.db"
        line = '{"5": 1, "time": "2026-01-02 03:04:05"}\n'
        first = self.push(twin, "--secret-file", self.secret_file, "--data-file", "-", "--spool", spool, stdin=line)
        self.assertEqual(first.returncode, 0, first.stderr)
        again = self.push(twin, "--secret-file", self.secret_file, "--data-file", "-", "--spool", spool,
                          stdin=line.replace("1,", "9,"))
        self.assertEqual(again.returncode, 65, again.stderr)
        self.assertIn("line 1", again.stderr)
        self.assertEqual([r["value"] for r in self.stored(twin)], ["1"])

    def test_a_data_file_path_streams_too_and_a_missing_one_sends_nothing(self):
        twin = self.twin()
        path = self.tmp / "readings.jsonl"
        path.write_text('{"5": 4, "time": "2026-01-02 03:04:05"}\n', encoding="utf-8")
        proc = self.push(twin, "--secret-file", self.secret_file, "--data-file", path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual([r["value"] for r in self.stored(twin)], ["4"])
        missing = self.push(twin, "--secret-file", self.secret_file, "--data-file", self.tmp / "nope.jsonl")
        self.assertEqual(missing.returncode, 65, missing.stderr)
        self.assertIn("nope.jsonl", missing.stderr)
        self.assertEqual(len(self.posts(twin)), 1)

    def test_empty_input_is_65_and_data_file_excludes_replay(self):
        twin = self.twin()
        for extra in ([], ["--dry-run"]):
            proc = self.push(twin, "--secret-file", self.secret_file, "--data-file", "-", *extra, stdin="\n")
            self.assertEqual(proc.returncode, 65, proc.stderr)
            self.assertIn("no reading", proc.stderr)
        proc = self.push(twin, "--data-file", "-", "--replay", "-", stdin="")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertEqual(self.posts(twin), [])


class DryRunReplayTests(StoredTestCase):
    def replay(self, twin, body: bytes, signature: str):
        conn = connect(twin)
        self.addCleanup(conn.close)
        conn.request("POST", "/api/webhooks/tlink", body=body,
                     headers={"Content-Type": "application/json", "X-TLink-Signature": signature})
        resp = conn.getresponse()
        return resp.status, resp.read()

    def test_dry_run_body_line_and_signature_line_are_accepted_byte_for_byte(self):
        twin = self.twin()
        proc = self.push(twin, "--dry-run", "--secret-file", self.secret_file, "--sensor", "5:1:°C:Salle: été")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        lines = proc.stdout.splitlines()
        bodies = [line for line in lines if line.startswith("{")]
        signatures = [line.split(": ", 1)[1] for line in lines if line.startswith("X-TLink-Signature: ")]
        self.assertEqual((len(bodies), len(signatures)), (1, 1))
        body = bodies[0].encode("ascii")  # compact ASCII JSON: the line is the body
        self.assertEqual(signatures[0], sign(body))
        self.assertEqual(self.posts(twin), [])
        status, answer = self.replay(twin, body, signatures[0])
        self.assertEqual(status, 200, answer)
        self.assertEqual(len(self.stored(twin)), 1)
        self.assertNoSecret(proc)

    def test_json_dry_run_carries_the_exact_body_text_and_the_signature(self):
        twin = self.twin()
        proc = self.push(twin, "--dry-run", "--json", "--secret-file", self.secret_file)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        event = json.loads(proc.stdout.splitlines()[0])
        body = event["body_text"].encode("ascii")
        self.assertEqual(json.loads(body), event["body"])
        self.assertEqual(event["headers"]["X-TLink-Signature"], sign(body))
        status, answer = self.replay(twin, body, event["headers"]["X-TLink-Signature"])
        self.assertEqual(status, 200, answer)
        self.assertEqual(len(self.stored(twin)), 3)


class WordingTests(StoredTestCase):
    def test_unsigned_push_to_a_webhook_needing_a_signature(self):
        twin = self.twin()
        proc = self.push(twin)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("the webhook refused the unsigned push", proc.stderr)
        self.assertIn("--secret-file", proc.stderr)
        self.assertIn("$TLINK_WEBHOOK_SECRET", proc.stderr)
        self.assertNoTesaiotWords(proc)

    def test_wrong_signature_says_to_check_the_secret(self):
        twin = self.twin()
        wrong = self.tmp / "wrong.txt"
        wrong.write_text("not-the-secret")
        proc = self.push(twin, "--secret-file", wrong)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("refused the push's signature", proc.stderr)
        self.assertIn("hint: check --secret-file", proc.stderr)
        self.assertNoTesaiotWords(proc)

    def test_plain_http_refusal_names_no_api_key(self):
        for url in ("http://hooks.example.com/api/webhooks/tlink", "http://127.0.0.1:9/api/webhooks/tlink"):
            proc = run_cli(TLINK, "--url", url, "--secret-file", self.secret_file)
            self.assertEqual(proc.returncode, 78, proc.stderr)
            self.assertIn("the push would travel unencrypted", proc.stderr)
            self.assertNoTesaiotWords(proc)
        proc = run_cli(TLINK, "--url", "https://u:p@hooks.example.com/x")
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("--secret-file", proc.stderr)
        self.assertNoTesaiotWords(proc)


class LimitTests(StoredTestCase):
    def test_flags_over_the_receivers_limits_are_exit_2_naming_field_and_limit(self):
        twin = self.twin()
        cases = [
            (["--device-id", "0"], ["--device-id", "deviceId", "9223372036854775807"]),
            (["--device-id", str(2 ** 63)], ["deviceId", "signed 64-bit"]),
            (["--user-id", "-1"], ["deviceUserid"]),
            (["--group-id", "0"], ["groupId"]),
            (["--device-name", "n" * 192], ["--device-name", "deviceName", "191"]),
            (["--device-no", "n" * 192], ["deviceNo", "191"]),
            (["--parent-user-id", "9" * 192], ["parentUserId", "191"]),
            (["--product-id", "p" * 192], ["productId", "191"]),
            (["--product-type", "p" * 192], ["productType", "191"]),
            (["--protocol-label", "p" * 192], ["protocolLabel", "191"]),
            (["--lat", "1" * 65], ["lat", "64"]),
            (["--lng", "1" * 65], ["lng", "64"]),
            (["--lat", "north"], ["--lat", "number"]),
            (["--sensor", "5:1:" + "u" * 65], ["unit", "64"]),
            (["--sensor", "5:1::" + "s" * 192], ["sensorName", "191"]),
            (["--sensor", "0"], ["sensorsId"]),
            (["--sensor", "5", "--sensor", "6", "--sensor", "5:2"], ["--sensor 5", "twice"]),
        ]
        for args, words in cases:
            with self.subTest(args=args[:2]):
                proc = self.push(twin, "--secret-file", self.secret_file, *args)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                for word in words:
                    self.assertIn(word, proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_data_lines_over_the_limits_are_65_naming_line_field_and_limit(self):
        twin = self.twin()
        stdin = ('{"5": "%s"}\n{"0": 1}\n{"%d": 1}\n{"5": 1, "time": "2026-13-01 00:00:00"}\n'
                 '{"5": 1, "time": "2026-01-02T03:04:05"}\n' % ("v" * 256, 2 ** 63))
        proc = self.push(twin, "--secret-file", self.secret_file, "--data-file", "-", stdin=stdin)
        self.assertEqual(proc.returncode, 65, proc.stderr)
        for words in (["line 1", "value", "255"], ["line 2", "sensorsId"], ["line 3", "sensorsId"],
                      ["line 4", "time"], ["line 5", "offset"]):
            line = [text for text in proc.stderr.splitlines() if words[0] + ":" in text]
            self.assertTrue(line, (words, proc.stderr))
            for word in words[1:]:
                self.assertIn(word, line[0])
        self.assertEqual(self.posts(twin), [])


if __name__ == "__main__":
    unittest.main()
