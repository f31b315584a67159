"""End to end: `iotpost smoke --platform tlink` as a subprocess against the twin's TLINK webhook and the
reference read API: it passes with signed pushes, a wrong secret is 77 at send, and a push acknowledged but
lost or stored altered is 65 at read back; the verdict and JUnit file are parsed.

Usage: python -m unittest tests.test_e2e_smoke_tlink
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import unittest
from typing import List, Tuple
from xml.etree import ElementTree as ET

from iotpost.receiver.tlink_api import TlinkFaults, set_tlink_faults
from iotpost.tlink_smoke import MARKER_SENSOR, NUMERIC_SENSOR, find_pushes, read_base
from tests.support import PROJECT_ROOT, run_cli
from tests.twin_support import CA_PEM, start_test_twin, temp_dir

IOTPOST = PROJECT_ROOT / "iotpost.py"
SECRET = b"tlink-smoke-secret-for-tests-41c9"


class TlinkSmokeE2E(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = temp_dir(self)
        self.secret_file = self.tmp / "secret.txt"
        self.secret_file.write_bytes(SECRET + b"\n")
        os.chmod(str(self.secret_file), 0o600)
        self.twin = start_test_twin(self, tlink_secret=SECRET)

    def smoke(self, *args: object, env=None) -> Tuple[int, dict, ET.Element, str]:
        """The smoke against the twin with --json and --junit-xml; verdict, parsed JUnit root, stderr."""
        junit = self.tmp / ("junit-%d.xml" % len(list(self.tmp.glob("junit-*.xml"))))
        proc = run_cli(IOTPOST, "smoke", "--platform", "tlink", "--base-url", self.twin.url, "--ca-file", CA_PEM,
                       "--json", "--junit-xml", junit, "--verbose", *args, env=env)
        report = junit.read_text(encoding="utf-8")
        for text in (proc.stdout, proc.stderr, report):
            self.assertNotIn(SECRET.decode(), text)
        lines = proc.stdout.splitlines()
        self.assertEqual(len(lines), 1, proc.stdout + proc.stderr)
        verdict = json.loads(lines[0])
        self.assertEqual((verdict["schema"], verdict["event"], verdict["platform"]), (1, "smoke_verdict", "tlink"))
        self.assertEqual(verdict["exit_code"], proc.returncode)
        self.assertNotIn("Traceback", proc.stderr)
        return proc.returncode, verdict, ET.parse(str(junit)).getroot(), proc.stderr

    def posts(self) -> list:
        return [r for r in self.twin.requests.snapshot() if r.method == "POST"]

    def statuses(self, verdict: dict) -> List[Tuple[str, str]]:
        return [(s["name"], s["status"]) for s in verdict["steps"]]

    def cases(self, root: ET.Element) -> List[Tuple[str, str]]:
        self.assertEqual(root.tag, "testsuites")
        found = []
        for case in root.iter("testcase"):
            state = "failed" if case.find("failure") is not None else "skipped" if case.find("skipped") is not None \
                else "passed"
            found.append((case.get("name"), state))
        return found

    def assertFailsAt(self, verdict: dict, step: str, code: int) -> dict:
        failed = [s for s in verdict["steps"] if s["status"] == "failed"]
        self.assertEqual([(s["name"], s["exit_code"]) for s in failed], [(step, code)], verdict)
        self.assertEqual(verdict["steps"][-1]["name"], step)
        self.assertEqual(verdict["exit_code"], code)
        return failed[0]

    def test_signed_pushes_pass_with_one_case_per_step_and_reading(self):
        code, verdict, root, _ = self.smoke("--secret-file", self.secret_file, "--count", "2", "--device-id", "4242")
        self.assertEqual(code, 0, verdict)
        self.assertEqual(self.statuses(verdict), [("health", "skipped"), ("authenticate", "skipped"),
                                                  ("send", "passed"), ("read_back", "passed")])
        self.assertIn("signature is only checked on a push", verdict["steps"][1]["message"])
        run_id = verdict["run_id"]
        self.assertEqual(self.cases(root), [("health", "skipped"), ("authenticate", "skipped"), ("send", "passed"),
                                            ("read_back", "passed"),
                                            ("read_back reading 1 (%s/1)" % run_id, "passed"),
                                            ("read_back reading 2 (%s/2)" % run_id, "passed")])
        # each push was signed, carried the marker as a string sensor, and took a second of its own
        pushes = [json.loads(r.body) for r in self.posts()]
        for r in self.posts():
            self.assertEqual(r.headers["x-tlink-signature"],
                             "sha256=" + hmac.new(SECRET, r.body, hashlib.sha256).hexdigest())
        self.assertEqual([[(e["sensorsId"], e["sensorsTypeId"]) for e in p["sensorsDates"]] for p in pushes],
                         [[(NUMERIC_SENSOR.sensor_id, 1), (MARKER_SENSOR.sensor_id, 8)]] * 2)
        self.assertEqual([p["sensorsDates"][1]["value"] for p in pushes],
                         ["smoke:%s:1" % run_id, "smoke:%s:2" % run_id])
        self.assertEqual(len({p["time"] for p in pushes}), 2)
        self.assertEqual([r["timestamp"] for r in verdict["readings"]], [p["time"] for p in pushes])
        self.assertEqual(self.twin.store.count_tlink_readings(4242), 4)

    def test_pushes_start_after_the_devices_last_push_time(self):
        # Another run's pushes hold this second and the next two: the reference would drop a push in either.
        import time

        from iotpost.tlink import DeviceInfo, make_push, reading_entry, tlink_time

        now = int(time.time())
        for at in (now, now + 1, now + 2):
            stamp = tlink_time(at)
            self.twin.store.store_tlink_push(make_push(DeviceInfo(2864, 385, "217"), [
                reading_entry(NUMERIC_SENSOR, stamp[11:], "20.0", "20.0"),
                reading_entry(MARKER_SENSOR, stamp[11:], "smoke:other:1", "smoke:other:1")], stamp))
        code, verdict, _, _ = self.smoke("--secret-file", self.secret_file, "--count", "1", "--deadline", "10")
        self.assertEqual(code, 0, verdict)
        self.assertEqual(verdict["readings"][0]["timestamp"], tlink_time(now + 3))

    def test_webhook_url_from_the_environment(self):
        proc_env = {"TLINK_WEBHOOK_URL": self.twin.url + "/api/webhooks/tlink", "TLINK_WEBHOOK_SECRET": SECRET.decode()}
        junit = self.tmp / "env.xml"
        from tests.support import cli_env

        proc = run_cli(IOTPOST, "smoke", "--platform", "tlink", "--ca-file", CA_PEM, "--count", "1", "--json",
                       "--junit-xml", junit, env=cli_env(proc_env))
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertNotIn(SECRET.decode(), proc.stdout + proc.stderr + junit.read_text(encoding="utf-8"))
        self.assertEqual(len(self.posts()), 1)

    def test_a_wrong_secret_is_77_at_send_and_nothing_is_stored(self):
        wrong = self.tmp / "wrong.txt"
        wrong.write_text("not-the-secret\n", encoding="utf-8")
        os.chmod(str(wrong), 0o600)
        code, verdict, root, stderr = self.smoke("--secret-file", wrong)
        step = self.assertFailsAt(verdict, "send", 77)
        self.assertIn("refused the push's signature", step["message"])
        self.assertIn("--secret-file", step["message"])  # the hint says where the secret comes from
        self.assertEqual(len(self.posts()), 1)  # stopped at the first refusal
        self.assertEqual(self.twin.store.count_tlink_readings(), 0)
        self.assertNotIn("not-the-secret", stderr + json.dumps(verdict) + ET.tostring(root, encoding="unicode"))
        self.assertEqual(self.cases(root), [("health", "skipped"), ("authenticate", "skipped"), ("send", "failed")])

    def test_no_secret_is_77_with_a_hint_to_give_one(self):
        code, verdict, _, _ = self.smoke("--count", "1")
        step = self.assertFailsAt(verdict, "send", 77)
        self.assertIn("unsigned push", step["message"])

    def test_a_push_acknowledged_but_lost_is_65_naming_it(self):
        set_tlink_faults(self.twin.store, TlinkFaults(lose_every=2))
        code, verdict, root, _ = self.smoke("--secret-file", self.secret_file, "--count", "3", "--deadline", "6")
        self.assertFailsAt(verdict, "read_back", 65)
        self.assertEqual([r["status"] for r in verdict["readings"]], ["passed", "failed", "passed"])
        failed = [name for name, state in self.cases(root) if state == "failed"]
        self.assertEqual(failed, ["read_back", "read_back reading 2 (%s/2)" % verdict["run_id"]])
        message = [c for c in root.iter("testcase") if c.get("name") == failed[1]][0].find("failure").text
        self.assertIn("never appeared", message)

    def test_a_value_stored_altered_is_65_with_the_field(self):
        set_tlink_faults(self.twin.store, TlinkFaults(alter_every=1))
        code, verdict, root, _ = self.smoke("--secret-file", self.secret_file, "--count", "1")
        self.assertFailsAt(verdict, "read_back", 65)
        diffs = verdict["readings"][0]["differences"]
        self.assertEqual(list(diffs), ["value"])
        sent = json.loads(self.posts()[0].body)["sensorsDates"][0]["value"]
        self.assertEqual(diffs["value"]["sent"], sent)
        self.assertAlmostEqual(float(diffs["value"]["got"]), float(sent) + 1)
        failure = [c for c in root.iter("testcase") if c.get("name").startswith("read_back reading 1")][0]
        self.assertIn("came back altered", failure.find("failure").text)

    def test_data_flags_are_a_usage_error_that_still_leaves_reports(self):
        code, verdict, root, stderr = self.smoke("--secret-file", self.secret_file, "--data", '{"t": 1}')
        step = self.assertFailsAt(verdict, "preflight", 2)
        self.assertIn("--data", step["message"])
        self.assertEqual(self.posts(), [])


class FindPushes(unittest.TestCase):
    """The read-back's matching of a marker to its push's numeric reading, on the reference's answer shape."""

    def answer(self, marker_time: str, numeric_time: str) -> dict:
        def entry(value: str, at: str) -> dict:
            return {"recordedAt": at, "sensorTimestamp": at[11:], "value": value, "rawValue": value}

        return {"pagination": {}, "devices": [{"deviceId": 7, "sensors": [
            {"sensorId": NUMERIC_SENSOR.sensor_id, "history": [entry("21.5", numeric_time)]},
            {"sensorId": MARKER_SENSOR.sensor_id, "history": [entry("smoke:abc:1", marker_time),
                                                               entry("smoke:other:2", marker_time)]}]}]}

    def test_the_numeric_reading_of_the_same_push_is_found(self):
        found = find_pushes(self.answer("2026-01-02T03:04:05", "2026-01-02T03:04:05"), 7, "abc")
        self.assertEqual(found, {1: {"data": {"value": "21.5", "reVal": "21.5", "times": "03:04:05"},
                                     "time": "2026-01-02T03:04:05"}})

    def test_a_numeric_reading_of_another_second_is_not_this_push(self):
        found = find_pushes(self.answer("2026-01-02T03:04:05", "2026-01-02T03:04:06"), 7, "abc")
        self.assertEqual(found[1]["data"], {})
        self.assertEqual(find_pushes(self.answer("2026-01-02T03:04:05", "x"), 8, "abc"), {})  # another device

    def test_read_base(self):
        self.assertEqual(read_base("https://h:8443/x/api/webhooks/tlink/"), "https://h:8443/x")
        self.assertEqual(read_base("https://h/hooks/in?k=1"), "https://h")


if __name__ == "__main__":
    unittest.main()
