"""End to end: `iotpost smoke` as a subprocess against the twin, for every platform: it passes, and when the
twin breaks one step it fails at that step with that step's exit code, and always leaves its reports.

Usage: python -m unittest tests.test_e2e_smoke
"""

from __future__ import annotations

import json
import os
import unittest
from pathlib import Path
from typing import List, Tuple
from xml.etree import ElementTree as ET

from iotpost.receiver.faults import FaultPlan
from iotpost.receiver.iotflow import DEMO_USER_ID, DataFaults, set_data_faults
from iotpost.receiver.routes import dispatch
from iotpost.receiver.thermacore import ensure_demo_user
from tests.support import PROJECT_ROOT, run_cli
from tests.twin_support import CA_PEM, make_bundle, start_test_twin, temp_dir

IOTPOST = PROJECT_ROOT / "iotpost.py"


def register_iotflow(twin, folder: Path, platform: str, name: str = "smoke-device") -> Tuple[Path, str]:
    """A device registered through the twin's own register route, and its bundle; returns (bundle, key)."""
    body = json.dumps({"name": name, "device_type": "sensor", "user_id": DEMO_USER_ID}).encode()
    reply = dispatch("POST", "/api/v1/devices/register", body=body, headers={"Content-Type": "application/json"},
                     store=twin.store)
    assert reply.status == 201, reply.body
    device = reply.body["device"]
    folder.mkdir(parents=True)
    (folder / "device_id.txt").write_text(str(device["id"]) + "\n", encoding="utf-8")
    (folder / "api_key.txt").write_text(device["api_key"] + "\n", encoding="utf-8")
    os.chmod(str(folder / "api_key.txt"), 0o600)
    (folder / "ca-chain.pem").write_bytes(Path(CA_PEM).read_bytes())
    (folder / "endpoints.json").write_text(json.dumps({"platform": platform, "ingest_base_url": twin.url}),
                                           encoding="utf-8")
    return folder, device["api_key"]


class SmokeE2E(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = temp_dir(self)
        self.keys: List[str] = []

    def smoke(self, *args: object) -> Tuple[int, dict, ET.Element, str]:
        """Run the smoke with --json and --junit-xml; the verdict, the parsed JUnit root and stderr."""
        junit = self.tmp / ("junit-%d.xml" % len(list(self.tmp.glob("junit-*.xml"))))
        proc = run_cli(IOTPOST, "smoke", "--json", "--junit-xml", junit, *args)
        for key in self.keys:
            self.assertNotIn(key, proc.stdout + proc.stderr)
            self.assertNotIn(key, junit.read_text(encoding="utf-8") if junit.exists() else "")
        lines = proc.stdout.splitlines()
        self.assertEqual(len(lines), 1, proc.stdout + proc.stderr)  # one verdict object, whatever happened
        verdict = json.loads(lines[0])
        self.assertEqual((verdict["schema"], verdict["event"]), (1, "smoke_verdict"))
        self.assertEqual(verdict["exit_code"], proc.returncode)
        return proc.returncode, verdict, ET.parse(str(junit)).getroot(), proc.stderr

    def device(self, platform: str, **twin_options) -> Tuple[object, Path]:
        twin = start_test_twin(self, **twin_options)
        bundle, key = register_iotflow(twin, self.tmp / ("bundle-" + platform), platform)
        self.keys.append(key)
        return twin, bundle

    def statuses(self, verdict: dict) -> List[Tuple[str, str]]:
        return [(s["name"], s["status"]) for s in verdict["steps"]]

    def cases(self, root: ET.Element) -> List[Tuple[str, str]]:
        """(name, passed|failed|skipped) of each JUnit test case, as a CI reporter reads them."""
        self.assertEqual(root.tag, "testsuites")
        found = []
        for case in root.iter("testcase"):
            state = "failed" if case.find("failure") is not None else "skipped" if case.find("skipped") is not None \
                else "passed"
            found.append((case.get("name"), state))
        return found

    # -- passing ---------------------------------------------------------------------------------------

    def test_iotflow_and_connectivity_pass_with_one_case_per_step_and_reading(self):
        for platform in ("iotflow", "connectivity"):
            with self.subTest(platform=platform):
                twin, bundle = self.device(platform)
                code, verdict, root, _ = self.smoke("--certs-dir", bundle, "--count", "2", "--metadata", '{"site": "ci"}')
                self.assertEqual(code, 0, verdict)
                self.assertEqual(self.statuses(verdict), [("health", "passed"), ("authenticate", "passed"),
                                                          ("send", "passed"), ("read_back", "passed")])
                self.assertEqual([r["status"] for r in verdict["readings"]], ["passed", "passed"])
                self.assertEqual(self.cases(root), [("health", "passed"), ("authenticate", "passed"),
                                                    ("send", "passed"), ("read_back", "passed"),
                                                    ("read_back reading 1 (%s/1)" % verdict["run_id"], "passed"),
                                                    ("read_back reading 2 (%s/2)" % verdict["run_id"], "passed")])
                # each reading carried this run's marker to the platform
                sent = [r.json() for r in twin.requests.snapshot() if r.method == "POST"]
                self.assertEqual([(b["data"]["smoke_run"], b["data"]["smoke_seq"]) for b in sent],
                                 [(verdict["run_id"], 1), (verdict["run_id"], 2)])

    def test_tesaiot_skips_what_it_has_no_call_for(self):
        twin = start_test_twin(self)
        bundle = make_bundle(self.tmp / "tesaiot", twin=twin)
        code, verdict, root, _ = self.smoke("--certs-dir", bundle)
        self.assertEqual(code, 0, verdict)
        self.assertEqual(self.statuses(verdict), [("health", "skipped"), ("authenticate", "skipped"),
                                                  ("send", "passed"), ("read_back", "skipped")])
        self.assertEqual(twin.store.count_telemetry(), 3)
        # each reading is in the report with the platform's id for it, and skipped as nothing could read it back
        self.assertEqual([state for _, state in self.cases(root)], ["skipped", "skipped", "passed", "skipped"] + ["skipped"] * 3)
        stored = {r.telemetry_id for r in twin.store.all_telemetry()}
        self.assertEqual({r["id"] for r in verdict["readings"]}, stored)

    def test_thermacore_reads_the_demo_unit(self):
        twin = start_test_twin(self)
        creds = ensure_demo_user(twin.store, self.tmp / "thermacore.json")
        code, verdict, _, _ = self.smoke("--platform", "thermacore", "--base-url", twin.url, "--ca-file", CA_PEM,
                                         "--unit", "1", "--credentials-file", creds)
        self.assertEqual(code, 0, verdict)
        self.assertEqual(self.statuses(verdict), [("health", "passed"), ("authenticate", "passed"),
                                                  ("send", "skipped"), ("read_back", "skipped"),
                                                  ("readings", "passed")])
        password = json.loads(creds.read_text(encoding="utf-8"))["password"]
        self.assertNotIn(password, json.dumps(verdict))

    # -- failing at the right step -----------------------------------------------------------------------

    def assertFailsAt(self, verdict: dict, step: str, code: int) -> dict:
        failed = [s for s in verdict["steps"] if s["status"] == "failed"]
        self.assertEqual([(s["name"], s["exit_code"]) for s in failed], [(step, code)], verdict)
        self.assertEqual(verdict["steps"][-1]["name"], step)  # the run stopped there
        self.assertEqual(verdict["exit_code"], code)
        return failed[0]

    def test_health_down_is_75(self):
        twin, bundle = self.device("iotflow")
        twin.go_down()
        code, verdict, root, _ = self.smoke("--certs-dir", bundle)
        self.assertFailsAt(verdict, "health", 75)
        self.assertEqual(self.cases(root), [("health", "failed")])

    def test_a_refused_key_is_77_at_authenticate_and_nothing_is_sent(self):
        twin, bundle = self.device("iotflow")
        (bundle / "api_key.txt").write_text("A" * 32 + "\n", encoding="utf-8")
        code, verdict, _, _ = self.smoke("--certs-dir", bundle)
        self.assertFailsAt(verdict, "authenticate", 77)
        self.assertEqual([r for r in twin.requests.snapshot() if r.method == "POST"], [])

    def test_a_refused_login_is_77(self):
        twin = start_test_twin(self)
        creds = self.tmp / "wrong.json"
        creds.write_text(json.dumps({"username": "demo", "password": "not-it"}), encoding="utf-8")
        os.chmod(str(creds), 0o600)
        code, verdict, _, _ = self.smoke("--platform", "thermacore", "--base-url", twin.url, "--ca-file", CA_PEM,
                                         "--unit", "1", "--credentials-file", creds)
        self.assertFailsAt(verdict, "authenticate", 77)

    def test_send_500_is_75(self):
        twin, bundle = self.device("iotflow", faults=FaultPlan.poison(b"smoke_run"))
        code, verdict, _, _ = self.smoke("--certs-dir", bundle)
        self.assertFailsAt(verdict, "send", 75)

    def test_a_reading_acknowledged_but_not_stored_is_65_naming_it(self):
        twin, bundle = self.device("iotflow")
        set_data_faults(twin.store, DataFaults(lose_every=2))
        code, verdict, root, _ = self.smoke("--certs-dir", bundle, "--count", "3", "--deadline", "3")
        self.assertFailsAt(verdict, "read_back", 65)
        self.assertEqual([r["status"] for r in verdict["readings"]], ["passed", "failed", "passed"])
        failed = [name for name, state in self.cases(root) if state == "failed"]
        self.assertEqual(failed, ["read_back", "read_back reading 2 (%s/2)" % verdict["run_id"]])
        message = [c for c in root.iter("testcase") if c.get("name") == failed[1]][0].find("failure").text
        self.assertIn("never appeared", message)

    def test_an_altered_value_is_65_with_the_field(self):
        for platform in ("iotflow", "connectivity"):
            with self.subTest(platform=platform):
                twin, bundle = self.device(platform)
                set_data_faults(twin.store, DataFaults(alter_every=1))
                code, verdict, _, _ = self.smoke("--certs-dir", bundle, "--count", "1",
                                                 "--data", '{"temperature": 21.5}')
                self.assertFailsAt(verdict, "read_back", 65)
                self.assertEqual(verdict["readings"][0]["differences"],
                                 {"temperature": {"sent": 21.5, "got": 22.5}})

    def test_a_read_back_slower_than_the_deadline_fails(self):
        twin, bundle = self.device("iotflow")
        set_data_faults(twin.store, DataFaults(read_lag=600))
        code, verdict, _, _ = self.smoke("--certs-dir", bundle, "--count", "1", "--deadline", "1.5")
        self.assertFailsAt(verdict, "read_back", 65)
        self.assertIn("before the deadline", verdict["readings"][0]["message"])

    # -- always a report ---------------------------------------------------------------------------------

    def test_a_missing_bundle_is_66_and_still_writes_the_reports(self):
        code, verdict, root, stderr = self.smoke("--certs-dir", self.tmp / "nowhere", "--platform", "iotflow")
        step = self.assertFailsAt(verdict, "preflight", 66)
        self.assertIn("nowhere", step["message"])
        self.assertEqual(self.cases(root), [("preflight", "failed")])
        self.assertNotIn("Traceback", stderr)

    def test_help_runs_nothing_and_prints_no_verdict(self):
        proc = run_cli(IOTPOST, "smoke", "--help")
        self.assertEqual(proc.returncode, 0)
        self.assertIn("--junit-xml", proc.stdout)
        self.assertNotIn("smoke_verdict", proc.stdout)
        self.assertEqual(proc.stderr, "")

    def test_a_warning_is_said_once_per_run(self):
        twin, bundle = self.device("iotflow", tls=False)
        proc = run_cli(IOTPOST, "smoke", "--certs-dir", bundle, "--allow-http")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr.count("--allow-http"), 1, proc.stderr)

    def test_a_usage_error_is_2_and_still_writes_the_reports(self):
        code, verdict, root, stderr = self.smoke("--count", "zero")
        self.assertFailsAt(verdict, "preflight", 2)
        self.assertEqual(self.cases(root), [("preflight", "failed")])
        self.assertIn("--count", stderr)


if __name__ == "__main__":
    unittest.main()


class ReviewFindings(unittest.TestCase):
    """Found by a second reader of the smoke: each test failed before its fix."""

    def test_the_junit_file_is_redacted_like_the_output(self):
        import http.server
        import threading

        class Echo(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # the health check passes; the key check echoes the key in its refusal
                if self.path == "/health":
                    body = b'{"status": "healthy"}'
                    self.send_response(200)
                else:
                    body = json.dumps({"error": "Invalid API key %s" % self.headers.get("X-API-Key")}).encode()
                    self.send_response(401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        tmp = temp_dir(self)
        bundle = tmp / "b"
        bundle.mkdir()
        key = "EchoedKey0123456789abcdefABCDEF0"
        (bundle / "device_id.txt").write_text("7\n", encoding="utf-8")
        (bundle / "api_key.txt").write_text(key + "\n", encoding="utf-8")
        os.chmod(str(bundle / "api_key.txt"), 0o600)
        (bundle / "endpoints.json").write_text(json.dumps({"platform": "iotflow", "ingest_base_url":
                                                           "http://127.0.0.1:%d" % server.server_address[1]}))
        junit = tmp / "j.xml"
        proc = run_cli(IOTPOST, "smoke", "--certs-dir", bundle, "--allow-http", "--json", "--junit-xml", junit)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("[REDACTED]", junit.read_text(encoding="utf-8"))
        for text in (proc.stdout, proc.stderr, junit.read_text(encoding="utf-8")):
            self.assertNotIn(key, text)

    def test_a_junit_path_that_is_no_file_keeps_the_exit_code(self):
        tmp = temp_dir(self)
        proc = run_cli(IOTPOST, "smoke", "--certs-dir", tmp / "nowhere", "--junit-xml", tmp)
        self.assertEqual(proc.returncode, 66, proc.stderr)
        self.assertIn("cannot write the JUnit report", proc.stderr)
        self.assertNotIn("internal error", proc.stderr)

    def test_flag_objects_are_checked_before_anything_is_sent(self):
        twin = start_test_twin(self)
        bundle, _ = register_iotflow(twin, temp_dir(self) / "b", "iotflow")
        for flag, value in (("--data", '{"a": 1e999}'), ("--data", "[" * 5000), ("--metadata", '{"a": NaN}'),
                            ("--data", '{"a": "\\ud800"}')):
            with self.subTest(flag=flag, value=value[:20]):
                proc = run_cli(IOTPOST, "smoke", "--certs-dir", bundle, flag, value)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertNotIn("internal error", proc.stderr)
        self.assertEqual([r for r in twin.requests.snapshot() if r.method == "POST"], [])

    def test_readings_never_share_a_millisecond(self):
        from iotpost.smoke_cli import _stamp

        stamps = [_stamp()]
        for _ in range(50):
            stamps.append(_stamp(after=stamps[-1]))
        self.assertEqual(len(set(stamps)), len(stamps))
        self.assertEqual(stamps, sorted(stamps))
