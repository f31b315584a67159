"""The smoke run's marker and comparison rules, and its verdict files (no network here)."""

from __future__ import annotations

import json
import unittest
from xml.etree import ElementTree as ET

from iotpost.smoke import ReadbackRules, differences, find_marked, marked, new_run_id, same_value
from iotpost.smoke_report import FAILED, PASSED, SKIPPED, Reading, Step, Verdict, junit_tree, verdict_json, write_junit
from tests.twin_support import temp_dir

IOTFLOW = ReadbackRules(data_at_top=True, meta_prefix="meta_", timestamp_resolution_ms=1)
NESTED = ReadbackRules()


class Markers(unittest.TestCase):
    def test_run_ids_differ_and_markers_win(self):
        self.assertNotEqual(new_run_id(), new_run_id())
        # never all digits: IoTFlow parses stored text as JSON on the way back ("123" returns as 123)
        self.assertTrue(all(not new_run_id().isdigit() and new_run_id()[0].isalpha() for _ in range(50)))
        self.assertEqual(marked({"t": 1, "smoke_seq": 9}, "abc", 2), {"t": 1, "smoke_run": "abc", "smoke_seq": 2})

    def test_find_only_this_runs_readings(self):
        records = [{"t": 1, "smoke_run": "other", "smoke_seq": 1},
                   {"t": 2, "smoke_run": "abc", "smoke_seq": 2},
                   {"t": 3, "smoke_run": "abc", "smoke_seq": "1"},  # a platform that returns numbers as text
                   {"t": 4, "smoke_run": "abc", "smoke_seq": 2},  # a duplicate: the first one seen is kept
                   "not a record"]
        found = find_marked(records, "abc", IOTFLOW)
        self.assertEqual(sorted(found), [1, 2])
        self.assertEqual(found[2]["t"], 2)
        nested = find_marked([{"data": {"smoke_run": "abc", "smoke_seq": 1}}], "abc", NESTED)
        self.assertEqual(list(nested), [1])


class Comparison(unittest.TestCase):
    def test_json_equality(self):
        self.assertTrue(same_value(21, 21.0))
        self.assertTrue(same_value({"a": [1, 2.5]}, {"a": [1.0, 2.5]}))
        for sent, got in ((True, 1), (1, "1"), (21.5, 21.6), ([1], [1, 2]), ({"a": 1}, {"a": 1, "b": 2}), (None, 0)):
            with self.subTest(sent=sent, got=got):
                self.assertFalse(same_value(sent, got))

    def test_iotflow_flattened_record_matches(self):
        sent_ts = "2026-11-27T23:10:30.203494+07:00"
        record = {"timestamp": "2026-11-27T16:10:30.203Z", "device_id": "42", "t": 21.5, "smoke_run": "r",
                  "meta_site": "lab", "meta_device_type": "sensor"}
        self.assertEqual(differences({"t": 21.5, "smoke_run": "r"}, {"site": "lab"}, sent_ts, record, IOTFLOW), {})

    def test_text_that_the_platform_parses_as_json_is_not_an_alteration(self):
        parsing = IOTFLOW._replace(text_parsed_as_json=True)
        record = {"code": 101, "flag": True, "name": "x", "smoke_run": "r1"}
        sent = {"code": "101", "flag": "true", "name": "x", "smoke_run": "r1"}
        self.assertEqual(differences(sent, None, None, record, parsing), {})
        self.assertEqual(set(differences(sent, None, None, record, IOTFLOW)), {"code", "flag"})
        self.assertEqual(find_marked([{"smoke_run": 123, "smoke_seq": 1}], "123", IOTFLOW), {1: {"smoke_run": 123,
                                                                                                  "smoke_seq": 1}})

    def test_altered_missing_and_moved_fields_are_named(self):
        record = {"timestamp": "2026-11-27T16:10:31.000", "t": 21.6, "meta_site": "lab2"}
        diffs = differences({"t": 21.5, "h": 40}, {"site": "lab"}, "2026-11-27T16:10:30Z", record, IOTFLOW)
        self.assertEqual(diffs, {"t": {"sent": 21.5, "got": 21.6}, "h": {"sent": 40, "got": None},
                                 "meta_site": {"sent": "lab", "got": "lab2"},
                                 "timestamp": {"sent": "2026-11-27T16:10:30Z", "got": "2026-11-27T16:10:31.000"}})

    def test_nested_records(self):
        record = {"data": {"t": 1}, "metadata": {"site": "a"}, "timestamp": "2026-11-27T16:10:30+00:00"}
        self.assertEqual(differences({"t": 1}, {"site": "a"}, "2026-11-27T16:10:30Z", record, NESTED), {})
        self.assertIn("metadata.site", differences({"t": 1}, {"site": "b"}, None, record, NESTED))


class VerdictFiles(unittest.TestCase):
    def verdict(self) -> Verdict:
        v = Verdict("iotflow", "r1", 1795000000.0)
        v.steps += [Step("health", PASSED, 0.01, "200 healthy"), Step("authenticate", SKIPPED, 0.0, "no such call"),
                    Step("read_back", FAILED, 2.5, "1 of 2 readings missing", 65)]
        v.readings += [Reading(1, "r1/1", PASSED, "7", "2026-11-27T16:10:30Z"),
                       Reading(2, "r1/2", FAILED, None, "2026-11-27T16:10:31Z", "altered",
                               {"t": {"sent": 1, "got": 2}})]
        v.exit_code = 65
        return v

    def test_junit_structure_ci_reporters_read(self):
        path = temp_dir(self) / "out" / "smoke.xml"
        write_junit(self.verdict(), path)
        root = ET.parse(str(path)).getroot()
        self.assertEqual(root.tag, "testsuites")
        suite, = root.findall("testsuite")
        cases = suite.findall("testcase")
        self.assertEqual([c.get("name") for c in cases],
                         ["health", "authenticate", "read_back", "read_back reading 1 (r1/1)",
                          "read_back reading 2 (r1/2)"])
        self.assertEqual((suite.get("tests"), suite.get("failures"), suite.get("skipped")), ("5", "2", "1"))
        self.assertIsNotNone(cases[1].find("skipped"))
        self.assertIn("t: sent 1, got 2", cases[4].find("failure").text)
        self.assertEqual(list(path.parent.iterdir()), [path])  # no temporary file left behind

    def test_json_verdict(self):
        doc = verdict_json(self.verdict())
        json.dumps(doc)
        self.assertEqual((doc["event"], doc["passed"], doc["exit_code"]), ("smoke_verdict", False, 65))
        self.assertEqual([s["status"] for s in doc["steps"]], ["passed", "skipped", "failed"])
        self.assertEqual(doc["readings"][1]["differences"], {"t": {"sent": 1, "got": 2}})

    def test_a_message_with_markup_stays_text(self):
        v = Verdict("tesaiot", "r", 0.0)
        v.steps.append(Step("send", FAILED, 0.1, "<html>&\x1b</html>", 75))
        text = ET.tostring(junit_tree(v).getroot(), encoding="unicode")
        self.assertIn("&lt;html&gt;&amp;", text)
        failure = ET.fromstring(text).find("testsuite/testcase/failure")  # a control code would not parse
        self.assertEqual(failure.text, "<html>&\\x1b</html>")


if __name__ == "__main__":
    unittest.main()
