"""End to end: post_https_sample.py as a subprocess against the twin over real, verified TLS."""

from __future__ import annotations

import json
import os
import tempfile
import time
import unittest
from pathlib import Path

from tests.support import SENDER, assert_no_secret_in_files, run_cli, start_cli
from tests.twin_support import CERTDATA, make_bundle, start_test_twin

DEVICE = "0c4f6a2e-9d1b-4f3e-8a5c-2b7d9e1f3a6c"
KEY = "tesa_ak_e2e_" + "k" * 24


class SenderTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="iotpost-e2e-"))
        self.addCleanup(_rmtree, self.tmp)
        self.addCleanup(assert_no_secret_in_files, self.tmp)  # runs first: spools and dead letters hold no key

    def twin(self, **kwargs):
        twin = start_test_twin(self, **kwargs)
        twin.register_device(DEVICE, KEY)
        return twin

    def bundle(self, twin=None, name="bundle", **kwargs) -> Path:
        kwargs.setdefault("device_id", DEVICE)
        kwargs.setdefault("api_key", KEY)
        if twin is not None:
            kwargs.setdefault("url", twin.url)
        return make_bundle(self.tmp / name, **kwargs)

    def send(self, bundle: Path, *args, **kwargs):
        return run_cli(SENDER, "--certs-dir", bundle, *args, **kwargs)

    def assertNoSecret(self, proc, secret: str = KEY) -> None:
        self.assertNotIn(secret, proc.stdout)
        self.assertNotIn(secret, proc.stderr)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(str(path), ignore_errors=True)


class HappyPathTests(SenderTestCase):
    def test_help_lists_every_seed_flag(self):
        proc = run_cli(SENDER, "--help")
        self.assertEqual(proc.returncode, 0)
        for flag in ("--certs-dir", "--base-url", "--endpoint", "--device-id", "--timeout", "--interval",
                     "--count", "--period", "--dry-run", "--data", "--data-file", "--json", "--quiet",
                     "--verbose", "--debug", "--retries", "--spool", "--flush-spool", "--allow-http"):
            self.assertIn(flag, proc.stdout)

    def test_dry_run_prints_seed_payload_contacts_nothing_and_hides_key(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--dry-run", "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        event = json.loads(proc.stdout.splitlines()[0])
        body = event["body"]
        self.assertEqual(body["device_id"], DEVICE)
        self.assertRegex(body["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
        for field in ("spo2", "spo2_unit", "temperature", "temperature_unit", "heart_rate", "heart_rate_bpm",
                      "perfusion_index", "motion", "signal_quality", "rhythm", "rr_interval_ms",
                      "qt_interval_ms", "site"):
            self.assertIn(field, body["data"])
        self.assertEqual(event["headers"]["X-API-KEY"], "[REDACTED]")
        self.assertNoSecret(proc)
        self.assertEqual(twin.requests, [])
        self.assertEqual(twin.tls_failures, 0)

    def test_sends_reach_the_endpoint_with_key_and_json_and_are_stored(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--count", "3", "--interval", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNoSecret(proc)
        posts = [r for r in twin.requests if r.method == "POST"]
        self.assertEqual(len(posts), 3)
        for r in posts:
            self.assertEqual(r.path, "/api/v1/telemetry")
            self.assertEqual(r.headers["x-api-key"], KEY)
            self.assertEqual(r.headers["content-type"], "application/json")
            self.assertTrue(r.headers["idempotency-key"])
        self.assertEqual(len({r.headers["idempotency-key"] for r in posts}), 3)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 3)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("#")]
        self.assertEqual(len(lines), 3)
        self.assertIn("200", lines[0])
        self.assertIn("Telemetry data stored successfully", lines[0])

    def test_one_tls_connection_is_reused_for_the_run(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--count", "4", "--interval", "0", "--verbose")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNoSecret(proc)
        self.assertIn("X-API-KEY: [REDACTED]", proc.stderr)
        self.assertEqual(len(twin.requests), 4)
        self.assertEqual(len({r.client_port for r in twin.requests}), 1)  # one connection, one handshake

    def test_connection_closed_while_idle_is_reopened_without_counting_a_retry(self):
        twin = self.twin(handler_timeout=0.3)  # the twin drops idle keep-alive connections after 0.3 s
        proc = self.send(self.bundle(twin), "--count", "2", "--interval", "0.8", "--json", "--retries", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        summary = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual(summary["retries"], 0)
        self.assertEqual(len(twin.requests), 2)
        self.assertEqual(len({r.client_port for r in twin.requests}), 2)

    def test_json_output_is_json_lines_with_a_summary(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--count", "2", "--interval", "0", "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        events = [json.loads(l) for l in proc.stdout.splitlines()]
        self.assertEqual([e["event"] for e in events], ["send", "send", "summary"])
        self.assertEqual(events[0]["status"], 200)
        self.assertEqual(events[-1]["delivered"], 2)
        self.assertEqual(events[-1]["exit_code"], 0)

    def test_quiet_prints_nothing_on_success(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--quiet")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, "")
        self.assertEqual(proc.stderr, "")

    def test_overrides_base_url_device_id_and_endpoint(self):
        twin = self.twin()
        other = "1e2d3c4b-5a69-4788-9aab-bccddeeff001"
        twin.register_device(other, "tesa_ak_other_device_key_000")
        bundle = self.bundle(None, url="https://tesaiot.invalid", device_id=DEVICE, api_key="tesa_ak_other_device_key_000")
        proc = self.send(bundle, "--base-url", twin.url, "--device-id", other)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(other), 1)
        proc = self.send(bundle, "--base-url", twin.url, "--device-id", other, "--endpoint", "/api/v2/nowhere")
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertEqual(twin.requests[-1].path, "/api/v2/nowhere")

    def test_intervals_are_kept_from_start_times(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--count", "3", "--interval", "0.4")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        times = [r.received_at for r in twin.requests if r.method == "POST"]
        gaps = [b - a for a, b in zip(times, times[1:])]
        for gap in gaps:
            self.assertGreaterEqual(gap, 0.3)
        self.assertGreaterEqual(times[-1] - times[0], 0.75)

    def test_period_sends_every_interval_for_that_long(self):
        twin = self.twin()
        # 0.01 min = 0.6 s with 0.25 s interval: due at 0, 0.25, 0.5 -> three payloads.
        proc = self.send(self.bundle(twin), "--period", "0.01", "--interval", "0.25", "--count", "99")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 3)

    def test_data_argument_is_sent_as_data(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--data", '{"temperature": 21.5, "unit": "°C"}')
        self.assertEqual(proc.returncode, 0, proc.stderr)
        row = twin.store.all_telemetry(DEVICE)[0]
        data = row["data"] if isinstance(row, dict) else row.data
        self.assertEqual(data, {"temperature": 21.5, "unit": "°C"})

    def test_data_file_json_lines_keeps_own_timestamps(self):
        twin = self.twin()
        path = self.tmp / "readings.jsonl"
        path.write_text('{"t": 1, "timestamp": "2025-01-02T03:04:05Z"}\n\n{"data": {"t": 2}}\n', encoding="utf-8")
        proc = self.send(self.bundle(twin), "--data-file", path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        bodies = [json.loads(r.body) for r in twin.requests if r.method == "POST"]
        self.assertEqual([b["data"] for b in bodies], [{"t": 1}, {"t": 2}])
        self.assertEqual(bodies[0]["timestamp"], "2025-01-02T03:04:05Z")

    def test_bad_data_file_line_sends_nothing_and_names_the_line(self):
        twin = self.twin()
        path = self.tmp / "bad.jsonl"
        path.write_text('{"t": 1}\n{"t": 2\n', encoding="utf-8")
        proc = self.send(self.bundle(twin), "--data-file", path)
        self.assertEqual(proc.returncode, 65)
        self.assertIn("line 2", proc.stderr)
        self.assertEqual(twin.requests, [])
        self.assertNotIn("Traceback", proc.stderr)

    def test_bad_data_argument_is_65_before_anything_is_sent(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--data", "[1, 2]")
        self.assertEqual(proc.returncode, 65)
        self.assertEqual(twin.requests, [])

    def test_stdin_is_streamed_line_by_line(self):
        twin = self.twin()
        proc = start_cli(SENDER, "--certs-dir", self.bundle(twin), "--data-file", "-", stdin=-1)
        try:
            proc.stdin.write('{"n": 1}\n')
            proc.stdin.flush()
            deadline = time.monotonic() + 20
            while twin.store.count_telemetry(DEVICE) < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            # The first line is stored while stdin is still open: it was sent as it arrived.
            self.assertEqual(twin.store.count_telemetry(DEVICE), 1)
            proc.stdin.write('not json\n{"n": 3}\n')
            proc.stdin.close()
            proc.wait(timeout=20)
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        self.assertEqual(proc.returncode, 65, err)
        self.assertIn("<stdin> line 2", err)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 2)


class FailureTests(SenderTestCase):
    def test_unknown_ca_is_78_with_certificate_and_no_request(self):
        twin = self.twin()
        bundle = self.bundle(twin, ca=CERTDATA / "other-ca.pem")
        proc = self.send(bundle)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("certificate", proc.stderr)
        self.assertEqual(twin.requests, [])
        self.assertNotIn("Traceback", proc.stderr)

    def test_server_from_unrelated_ca_is_78(self):
        twin = self.twin(certfile=CERTDATA / "other-localhost.pem", keyfile=CERTDATA / "other-localhost.key")
        proc = self.send(self.bundle(twin))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("certificate", proc.stderr)
        self.assertIn("not signed by", proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_wrong_host_is_78_with_certificate_and_no_request(self):
        twin = self.twin(certfile=CERTDATA / "wronghost.pem", keyfile=CERTDATA / "wronghost.key")
        proc = self.send(self.bundle(twin))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("certificate", proc.stderr)
        self.assertIn("name mismatch", proc.stderr)
        self.assertIn("it is valid only for wrong-host.invalid", proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_expired_certificate_is_78(self):
        twin = self.twin(certfile=CERTDATA / "expired.pem", keyfile=CERTDATA / "expired.key")
        proc = self.send(self.bundle(twin))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("certificate has expired", proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_ipv6_loopback_verifies_against_the_san(self):
        try:
            twin = self.twin(host="::1")
        except OSError:
            self.skipTest("no IPv6 loopback here")
        proc = self.send(self.bundle(twin))
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_401_is_77_and_not_retried(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin, api_key="tesa_ak_wrong_key_123456"))
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertEqual(len(twin.requests), 1)
        self.assertNoSecret(proc, "tesa_ak_wrong_key_123456")
        self.assertIn("api_key.txt", proc.stderr)

    def test_403_device_mismatch_is_77(self):
        twin = self.twin()
        proc = self.send(self.bundle(twin), "--device-id", "99999999-9999-4999-8999-999999999999")
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertEqual(len(twin.requests), 1)

    def test_400_is_65_and_not_retried_and_the_next_payloads_still_go(self):
        twin = self.twin()
        twin.faults = _script(["400"])
        proc = self.send(self.bundle(twin), "--count", "3", "--interval", "0")
        self.assertEqual(proc.returncode, 65, proc.stderr)
        keys = [r.headers["idempotency-key"] for r in twin.requests]
        self.assertEqual(len(keys), 3)  # the rejected one once, never again; the other two delivered
        self.assertEqual(len(set(keys)), 3)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 2)

    def test_timeout_is_75(self):
        twin = self.twin()
        twin.faults = _script(["delay"] * 3, delay=1.5)
        proc = self.send(self.bundle(twin), "--timeout", "0.3", "--retries", "1", "--retry-backoff", "0.01")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("within 0.3s", proc.stderr)

    def test_missing_api_key_is_66_naming_it(self):
        bundle = self.bundle()
        (bundle / "api_key.txt").unlink()
        proc = self.send(bundle)
        self.assertEqual(proc.returncode, 66)
        self.assertIn("api_key.txt", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        self.assertEqual(len(proc.stderr.strip().splitlines()), 2)  # error + hint

    def test_each_missing_bundle_file_is_66(self):
        for name in ("device_id.txt", "ca-chain.pem", "endpoints.json"):
            with self.subTest(name=name):
                bundle = self.bundle(name="b-" + name)
                (bundle / name).unlink()
                proc = self.send(bundle)
                self.assertEqual(proc.returncode, 66, proc.stderr)
                self.assertIn(name, proc.stderr)

    def test_malformed_bundle_files_are_78_naming_them(self):
        cases = {"endpoints.json": "{not json", "device_id.txt": "not-a-uuid\n", "api_key.txt": "two tokens\n",
                 "ca-chain.pem": "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"}
        for name, content in cases.items():
            with self.subTest(name=name):
                bundle = self.bundle(name="m-" + name)
                (bundle / name).write_text(content, encoding="utf-8")
                proc = self.send(bundle)
                self.assertEqual(proc.returncode, 78, proc.stderr)
                self.assertIn(name, proc.stderr)
                self.assertNotIn("Traceback", proc.stderr)

    def test_plain_http_is_refused_and_nothing_sent(self):
        twin = self.twin(tls=False)
        proc = self.send(self.bundle(twin, url=twin.url))
        self.assertEqual(proc.returncode, 78)
        self.assertIn("--allow-http", proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_allow_http_permits_loopback_only(self):
        twin = self.twin(tls=False)
        proc = self.send(self.bundle(twin, url=twin.url), "--allow-http")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        proc = self.send(self.bundle(None, name="remote", url="http://example.com"), "--allow-http")
        self.assertEqual(proc.returncode, 78)

    @unittest.skipUnless(os.name == "posix", "POSIX permissions")
    def test_world_readable_key_warns_but_sends(self):
        twin = self.twin()
        bundle = self.bundle(twin)
        os.chmod(str(bundle / "api_key.txt"), 0o644)
        proc = self.send(bundle)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("chmod 600", proc.stderr)

    def test_refused_connection_is_75(self):
        twin = self.twin()
        url = twin.url
        twin.stop()
        proc = self.send(self.bundle(None, url=url), "--retries", "1", "--retry-backoff", "0.01")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("refused", proc.stderr)

    def test_usage_error_is_2(self):
        proc = run_cli(SENDER, "--count", "zero")
        self.assertEqual(proc.returncode, 2)
        proc = run_cli(SENDER, "--quiet", "--verbose")
        self.assertEqual(proc.returncode, 2)


def _script(kinds, **kwargs):
    from iotpost.receiver.faults import FaultPlan

    return FaultPlan.script(kinds, **kwargs)


if __name__ == "__main__":
    unittest.main()
