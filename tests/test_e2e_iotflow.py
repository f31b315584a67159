"""End to end: `iotpost register / send / readings / heartbeat` as subprocesses against the twin's IoTFlow
and IoT Connectivity Layer API, over verified TLS and over the loopback --allow-http opt-in.

Usage: python -m unittest tests.test_e2e_iotflow

The key each run registers is read back from the api_key.txt it wrote and must appear in no
output; what reached the twin (twin.requests) is checked against PROTOCOLS.md byte for byte
where the contract is specific (register body with "user_id", telemetry keys, X-API-Key).
"""

from __future__ import annotations

import json
import os
import stat
import time
import unittest
from pathlib import Path
from typing import List

from iotpost.payloads import parse_iso8601
from iotpost.receiver.iotflow import DEMO_USER_ID, parse_rate_limits, set_iotdb_available
from tests.support import PROJECT_ROOT, SENDER, assert_no_secret_in_files, run_cli
from tests.twin_support import CA_PEM, start_test_twin, temp_dir, wait_until

IOTPOST = PROJECT_ROOT / "iotpost.py"
TELEMETRY_PATH = {"iotflow": "/api/v1/telemetry", "connectivity": "/api/v1/devices/telemetry"}
BODY_KEYS = {"iotflow": {"data", "metadata", "timestamp"}, "connectivity": {"data", "metadata", "type"}}


class IotflowE2E(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = temp_dir(self)
        self.keys: List[str] = []
        self.addCleanup(self._no_registered_key_in_files)

    def _no_registered_key_in_files(self) -> None:
        assert_no_secret_in_files(self.tmp)
        for path in self.tmp.rglob("*"):
            if path.is_file() and path.name != "api_key.txt":
                for key in self.keys:
                    self.assertNotIn(key.encode(), path.read_bytes(), path)

    def iotpost(self, *args: object, **kwargs):
        proc = run_cli(IOTPOST, *args, **kwargs)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc

    outputs: List[str] = []

    def assertNoKeyPrinted(self) -> None:
        for key in self.keys:
            for text in self.outputs:
                self.assertNotIn(key, text)

    def register(self, twin, platform: str, name: str, bundle: Path, *extra: object):
        tls = twin.url.startswith("https")
        args = ["register", "--platform", platform, "--base-url", twin.url, "--name", name,
                "--device-type", "sensor", "--location", "Lab 2", "--firmware-version", "1.2.3",
                "--user-id", DEMO_USER_ID, "--bundle-out", bundle]
        args += ["--ca-file", CA_PEM] if tls else ["--allow-http"]
        return self.iotpost(*args, *extra)

    def round_trip(self, platform: str, tls: bool) -> None:
        """register -> send (both entry points) -> readings -> heartbeat, all through the written bundle."""
        self.outputs = []
        twin = start_test_twin(self, tls=tls)
        bundle = self.tmp / ("%s-%s" % (platform, "tls" if tls else "http")) / "bundle"
        proc = self.register(twin, platform, "sensor-%s" % platform, bundle)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        key = (bundle / "api_key.txt").read_text(encoding="utf-8").strip()
        self.keys.append(key)
        self.assertRegex(key, r"^[A-Za-z0-9]{32}$")
        device_id = (bundle / "device_id.txt").read_text(encoding="utf-8").strip()
        self.assertTrue(device_id.isdigit())
        self.assertEqual(json.loads((bundle / "endpoints.json").read_text(encoding="utf-8")),
                         {"platform": platform, "api_base_url": twin.url, "ingest_base_url": twin.url})
        self.assertEqual((bundle / "ca-chain.pem").exists(), tls)
        if os.name == "posix":
            self.assertEqual(stat.S_IMODE((bundle / "api_key.txt").stat().st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(bundle.stat().st_mode), 0o700)
        http = [] if tls else ["--allow-http"]
        if not tls:
            self.assertIn("--allow-http", proc.stderr)  # the warning

        sent = self.iotpost("send", "--certs-dir", bundle, "--data", '{"temperature": 21.5}',
                            "--metadata", '{"room": "lab"}', *http)
        self.assertEqual(sent.returncode, 0, sent.stderr)
        if platform == "iotflow":
            # The sender stamps whole seconds and IoTFlow keeps one reading per device and millisecond
            # (a second write replaces the first): let the clock pass the first reading's second.
            first = [r for r in twin.requests if r.method == "POST" and r.path == TELEMETRY_PATH[platform]][0]
            stamp = parse_iso8601(first.json()["timestamp"]).timestamp()
            self.assertTrue(wait_until(lambda: time.time() >= stamp + 1, timeout=3))
        seed = run_cli(SENDER, "--certs-dir", bundle, "--data", '{"temperature": 22.5}', *http)
        self.outputs.append(seed.stdout + seed.stderr)
        self.assertEqual(seed.returncode, 0, seed.stderr)

        dry = self.iotpost("send", "--certs-dir", bundle, "--data", '{"temperature": 1}', "--dry-run", *http)
        self.assertIn("POST %s%s\n" % (twin.url, TELEMETRY_PATH[platform]), dry.stdout)
        self.assertIn("\nX-API-Key: [REDACTED]\n", dry.stdout)  # the header exactly as PROTOCOLS.md spells it

        posts = [r for r in twin.requests if r.method == "POST" and r.path == TELEMETRY_PATH[platform]]
        self.assertEqual(len(posts), 2)
        for request in posts:
            self.assertEqual(request.headers["x-api-key"], key)
            self.assertEqual(request.headers["content-type"], "application/json")
            self.assertEqual(set(request.json()), BODY_KEYS[platform])
        self.assertEqual(posts[0].json()["data"], {"temperature": 21.5})
        self.assertEqual(posts[0].json()["metadata"].get("room"), "lab")
        if platform == "connectivity":
            self.assertEqual(posts[0].json()["type"], "telemetry")

        readings = self.iotpost("readings", "--certs-dir", bundle, "--json", *http)
        self.assertEqual(readings.returncode, 0, readings.stderr)
        lines = [json.loads(line) for line in readings.stdout.splitlines()]
        self.assertTrue(all(line["schema"] == 1 for line in lines))
        values = [line["record"]["temperature"] for line in lines if line["event"] == "reading"]
        self.assertEqual(sorted(values), [21.5, 22.5])
        self.assertEqual(lines[-1]["event"], "readings")
        self.assertEqual(lines[-1]["count"], 2)
        latest = self.iotpost("readings", "--certs-dir", bundle, "--latest", *http)
        self.assertEqual(latest.returncode, 0, latest.stderr)
        self.assertEqual(len(latest.stdout.splitlines()), 1)
        self.assertIn("temperature=", latest.stdout)

        beat = self.iotpost("heartbeat", "--certs-dir", bundle, *http)
        self.assertEqual(beat.returncode, 0, beat.stderr)
        self.assertIn("online", beat.stdout)
        heartbeat = [r for r in twin.requests if r.path == "/api/v1/devices/heartbeat"][-1]
        self.assertEqual((heartbeat.method, heartbeat.body, heartbeat.headers["x-api-key"]), ("POST", b"", key))
        beat_json = self.iotpost("heartbeat", "--certs-dir", bundle, "--json", "--verbose", *http)
        record = json.loads(beat_json.stdout)
        self.assertEqual((record["schema"], record["event"], record["device_status"]), (1, "heartbeat", "online"))
        self.assertIn("X-API-Key: [REDACTED]", beat_json.stderr)
        self.assertNoKeyPrinted()

    def test_iotflow_over_tls(self) -> None:
        self.round_trip("iotflow", tls=True)

    def test_iotflow_over_allow_http(self) -> None:
        self.round_trip("iotflow", tls=False)

    def test_connectivity_over_tls(self) -> None:
        self.round_trip("connectivity", tls=True)

    def test_connectivity_over_allow_http(self) -> None:
        self.round_trip("connectivity", tls=False)

    def test_register_request_matches_the_contract(self) -> None:
        self.outputs = []
        twin = start_test_twin(self)
        proc = self.register(twin, "iotflow", "contract", self.tmp / "b", "--hardware-version", "v2", "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        record = json.loads(proc.stdout)
        self.assertEqual((record["schema"], record["event"], record["name"]), (1, "register", "contract"))
        self.keys.append((self.tmp / "b" / "api_key.txt").read_text().strip())
        request = [r for r in twin.requests if r.path == "/api/v1/devices/register"][0]
        self.assertEqual(request.method, "POST")
        self.assertEqual(request.headers["content-type"], "application/json")
        self.assertNotIn("x-user-id", request.headers)
        self.assertEqual(request.json(), {"name": "contract", "device_type": "sensor", "location": "Lab 2",
                                          "firmware_version": "1.2.3", "hardware_version": "v2",
                                          "user_id": DEMO_USER_ID})
        self.assertNoKeyPrinted()

    def test_duplicate_name_is_65_and_writes_nothing(self) -> None:
        self.outputs = []
        twin = start_test_twin(self)
        self.assertEqual(self.register(twin, "iotflow", "twice", self.tmp / "first").returncode, 0)
        self.keys.append((self.tmp / "first" / "api_key.txt").read_text().strip())
        proc = self.register(twin, "iotflow", "twice", self.tmp / "second")
        self.assertEqual(proc.returncode, 65, proc.stderr)
        self.assertIn("'twice'", proc.stderr)
        self.assertIn("409", proc.stderr)
        self.assertFalse((self.tmp / "second").exists())
        self.assertNoKeyPrinted()

    def test_existing_bundle_is_refused_before_any_request(self) -> None:
        self.outputs = []
        twin = start_test_twin(self)
        for existing in ("empty-folder", "full-folder", "a-file"):
            path = self.tmp / existing
            if existing == "a-file":
                path.write_text("keep me\n")
            else:
                path.mkdir()
                if existing == "full-folder":
                    (path / "api_key.txt").write_text("the old key\n")
            before = sorted((p.name, p.read_bytes()) for p in path.rglob("*") if p.is_file()) if path.is_dir() \
                else path.read_bytes()
            proc = self.register(twin, "iotflow", "new-" + existing, path)
            self.assertEqual(proc.returncode, 78, proc.stderr)
            self.assertIn("already exists", proc.stderr)
            after = sorted((p.name, p.read_bytes()) for p in path.rglob("*") if p.is_file()) if path.is_dir() \
                else path.read_bytes()
            self.assertEqual(before, after)
        self.assertEqual([r for r in twin.requests if "register" in r.path], [])

    def test_iotflow_needs_a_user_id(self) -> None:
        proc = run_cli(IOTPOST, "register", "--platform", "iotflow", "--base-url", "https://localhost:1",
                       "--name", "n", "--device-type", "t", "--bundle-out", self.tmp / "b")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--user-id", proc.stderr)
        self.assertFalse((self.tmp / "b").exists())

    def test_unknown_user_is_77(self) -> None:
        twin = start_test_twin(self)
        proc = run_cli(IOTPOST, "register", "--platform", "iotflow", "--base-url", twin.url, "--name", "n",
                       "--device-type", "t", "--user-id", "f" * 32, "--ca-file", CA_PEM, "--bundle-out", self.tmp / "b")
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("Authentication failed", proc.stderr)
        self.assertIn("hint: check --user-id " + "f" * 32, proc.stderr)  # register sends no key file
        self.assertNotIn("api_key.txt", proc.stderr)
        self.assertFalse((self.tmp / "b").exists())

    def test_failures_with_json_print_one_error_record(self) -> None:
        self.outputs = []
        twin = start_test_twin(self)
        proc = run_cli(IOTPOST, "register", "--platform", "iotflow", "--base-url", twin.url, "--name", "n", "--json",
                       "--device-type", "t", "--user-id", "f" * 32, "--ca-file", CA_PEM, "--bundle-out", self.tmp / "x")
        self.assertEqual(proc.returncode, 77)
        record = json.loads(proc.stdout)
        self.assertEqual({k: record[k] for k in ("schema", "event", "exit_code")}, {"schema": 1, "event": "error",
                                                                                     "exit_code": 77})
        self.assertIn("Authentication failed", record["message"])
        bundle = self.tmp / "b"
        self.assertEqual(self.register(twin, "iotflow", "json-errors", bundle).returncode, 0)
        key = (bundle / "api_key.txt").read_text().strip()
        self.keys.append(key)
        set_iotdb_available(twin.store, False)
        for args in (["--latest"], []):
            down = self.iotpost("readings", "--certs-dir", bundle, "--json", *args)
            self.assertEqual(down.returncode, 75, down.stderr)  # not "no readings": the store is down
            self.assertIn("IoTDB) is not available", down.stderr)
            self.assertEqual(json.loads(down.stdout)["exit_code"], 75)
        (bundle / "api_key.txt").write_text(key[::-1] + "\n")
        beat = self.iotpost("heartbeat", "--certs-dir", bundle, "--json")
        self.assertEqual((beat.returncode, json.loads(beat.stdout)["exit_code"]), (77, 77))
        usage = self.iotpost("readings", "--certs-dir", bundle, "--json", "--limit", "0")
        self.assertEqual((usage.returncode, json.loads(usage.stdout)["event"]), (2, "error"))
        self.assertNoKeyPrinted()

    def test_readings_start_time_takes_a_relative_value_as_documented(self) -> None:
        self.outputs = []
        twin = start_test_twin(self)
        bundle = self.tmp / "b"
        self.assertEqual(self.register(twin, "iotflow", "relative", bundle).returncode, 0)
        self.keys.append((bundle / "api_key.txt").read_text().strip())
        for form in (["--start-time", "-1h"], ["--start-time=-2d"], ["--start-time", "2026-01-01T00:00:00Z"]):
            proc = self.iotpost("readings", "--certs-dir", bundle, *form)
            self.assertEqual(proc.returncode, 0, proc.stderr)
        reads = [r.path for r in twin.requests if r.method == "GET"]
        self.assertEqual([p.split("start_time=")[1] for p in reads], ["-1h", "-2d", "2026-01-01T00%3A00%3A00Z"])

    def test_wrong_key_heartbeat_is_77_and_readings_of_nothing_is_0(self) -> None:
        self.outputs = []
        twin = start_test_twin(self)
        bundle = self.tmp / "b"
        self.assertEqual(self.register(twin, "connectivity", "quiet", bundle).returncode, 0)
        self.keys.append((bundle / "api_key.txt").read_text().strip())
        empty = self.iotpost("readings", "--certs-dir", bundle)
        self.assertEqual(empty.returncode, 0, empty.stderr)
        self.assertIn("no readings", empty.stdout)
        (bundle / "api_key.txt").write_text("A" * 32 + "\n")
        beat = self.iotpost("heartbeat", "--certs-dir", bundle)
        self.assertEqual(beat.returncode, 77, beat.stderr)
        self.assertIn("Invalid API key", beat.stderr)
        self.assertNoKeyPrinted()

    def test_429_retry_after_in_the_body_is_honoured(self) -> None:
        self.outputs = []
        twin = start_test_twin(self, iotflow_limits=parse_rate_limits("telemetry=1/1"))
        bundle = self.tmp / "b"
        self.assertEqual(self.register(twin, "connectivity", "busy", bundle).returncode, 0)
        self.keys.append((bundle / "api_key.txt").read_text().strip())
        proc = self.iotpost("send", "--certs-dir", bundle, "--count", "2", "--interval", "0", "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        retries = [e for e in events if e["event"] == "retry"]
        self.assertTrue(retries, proc.stdout)
        # The twin's body said retry_after 1 (a one-second window) and no header: the sender waited that,
        # not its own backoff (0.25-0.5 s for a first retry).
        self.assertEqual(retries[0]["delay_s"], 1.0)
        self.assertIn("429", retries[0]["reason"])
        self.assertEqual(events[-1]["delivered"], 2)
        self.assertNoKeyPrinted()

    def test_a_bundle_without_ca_chain_verifies_with_the_system_store(self) -> None:
        # The test CA is in no system store: the twin's certificate must be refused (78), proving the
        # bundle without ca-chain.pem is still verified, and --verbose says which trust was used.
        self.outputs = []
        twin = start_test_twin(self)
        bundle = self.tmp / "b"
        self.assertEqual(self.register(twin, "iotflow", "public-ca", bundle).returncode, 0)
        self.keys.append((bundle / "api_key.txt").read_text().strip())
        (bundle / "ca-chain.pem").unlink()
        beat = self.iotpost("heartbeat", "--certs-dir", bundle, "--verbose")
        self.assertEqual(beat.returncode, 78, beat.stderr)
        self.assertIn("the system's trust store", beat.stderr)
        self.assertEqual([r for r in twin.requests if r.path == "/api/v1/devices/heartbeat"], [])
        sent = self.iotpost("send", "--certs-dir", bundle, "--data", '{"t": 1}')
        self.assertEqual(sent.returncode, 78, sent.stderr)
        self.assertNotIn("Traceback", sent.stderr)
        self.assertNoKeyPrinted()


class ReadingsDelegation(unittest.TestCase):
    def test_only_platform_thermacore_goes_to_thermacores_command(self) -> None:
        from iotpost.readings_cli import delegates_to_thermacore

        self.assertTrue(delegates_to_thermacore(["--platform", "thermacore", "--unit", "1"]))
        self.assertTrue(delegates_to_thermacore(["--unit", "1", "--platform=thermacore"]))
        for argv in (["--platform", "iotflow"], ["--certs-dir", "thermacore"], ["--platform"], []):
            self.assertFalse(delegates_to_thermacore(argv), argv)


if __name__ == "__main__":
    unittest.main()
