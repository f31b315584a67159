"""iotpost doctor (and post_https_sample.py --check): the failing layer is named, against the real twin."""

from __future__ import annotations

import json
import unittest

from iotpost.doctor import _expiry
from iotpost.receiver.faults import FaultPlan
from tests.proxy_support import closed_port, start_test_proxy
from tests.support import PROJECT_ROOT, SENDER, run_cli
from tests.twin_support import CERTDATA, make_bundle, start_test_twin, temp_dir

ENTRY = PROJECT_ROOT / "iotpost.py"
DEVICE = "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"
KEY = "tesa_ak_doctor_" + "q" * 20


class DoctorTests(unittest.TestCase):
    def twin(self, **kwargs):
        twin = start_test_twin(self, **kwargs)
        twin.register_device(DEVICE, KEY)
        return twin

    def bundle(self, url, **kwargs):
        kwargs.setdefault("device_id", DEVICE)
        kwargs.setdefault("api_key", KEY)
        return make_bundle(temp_dir(self) / "bundle", url=url, **kwargs)

    def doctor(self, bundle, *args):
        proc = run_cli(ENTRY, "doctor", "--certs-dir", bundle, *args)
        self.assertNotIn(KEY, proc.stdout + proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        return proc

    def lines(self, proc):
        """check name -> (status, the rest of its line)"""
        out = {}
        for line in proc.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) >= 2 and not line.startswith(" ") and not line.startswith("iotpost doctor:"):
                status = "not checked" if parts[1] == "not" else parts[1]
                out[parts[0]] = (status, line)
        return out

    def assertFailsAt(self, proc, check, code, text):
        self.assertEqual(proc.returncode, code, proc.stdout + proc.stderr)
        lines = self.lines(proc)
        self.assertEqual(lines[check][0], "fail", proc.stdout)
        self.assertIn(text, lines[check][1])
        self.assertIn("the %s check failed (exit %d)" % (check, code), proc.stdout)
        names = list(lines)
        for earlier in names[:names.index(check)]:
            self.assertIn(lines[earlier][0], ("ok", "warn"), earlier)
        for later in names[names.index(check) + 1:]:
            self.assertEqual(lines[later][0], "skipped", later)

    def test_all_layers_pass_and_nothing_is_stored(self):
        twin = self.twin()
        proc = self.doctor(self.bundle(twin.url))
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        lines = self.lines(proc)
        self.assertEqual(list(lines), ["bundle", "dns", "tcp", "proxy", "tls", "certificate", "clock", "auth"])
        self.assertTrue(all(status == "ok" for status, _ in lines.values()), proc.stdout)
        self.assertIn("a payload without data was refused (POST /api/v1/telemetry: HTTP 400), nothing stored",
                      lines["auth"][1])
        self.assertRegex(lines["certificate"][1], r"server certificate expires \d{4}-\d\d-\d\d .*CA expires")
        self.assertEqual(twin.store.count_telemetry(DEVICE), 0)

    def test_missing_bundle_file_is_66(self):
        bundle = self.bundle("https://localhost:8443")
        (bundle / "api_key.txt").unlink()
        self.assertFailsAt(self.doctor(bundle), "bundle", 66, "api_key.txt is missing")

    def test_unknown_ca_is_78_at_tls(self):
        twin = self.twin()
        proc = self.doctor(self.bundle(twin.url, ca=CERTDATA / "other-ca.pem"))
        self.assertFailsAt(proc, "tls", 78, "not signed by")

    def test_wrong_host_is_78_at_tls(self):
        twin = self.twin(certfile=CERTDATA / "wronghost.pem", keyfile=CERTDATA / "wronghost.key")
        proc = self.doctor(self.bundle(twin.url))
        self.assertFailsAt(proc, "tls", 78, "localhost")
        self.assertIn("name", proc.stdout)

    def test_expired_certificate_is_78_at_tls(self):
        twin = self.twin(certfile=CERTDATA / "expired.pem", keyfile=CERTDATA / "expired.key")
        self.assertFailsAt(self.doctor(self.bundle(twin.url)), "tls", 78, "expired")

    def test_refused_connection_is_75_at_tcp(self):
        proc = self.doctor(self.bundle("https://127.0.0.1:%d" % closed_port(self)))
        self.assertFailsAt(proc, "tcp", 75, "connection refused")

    def test_rejected_key_is_77_at_auth(self):
        twin = self.twin()
        proc = self.doctor(self.bundle(twin.url, api_key="tesa_ak_doctor_not_registered_000"))
        self.assertFailsAt(proc, "auth", 77, "HTTP 401")
        self.assertEqual(self.lines(proc)["clock"][0], "ok")

    def test_clock_five_minutes_off_is_78(self):
        twin = self.twin(clock_offset=-300)  # the server says five minutes earlier: we are ahead
        proc = self.doctor(self.bundle(twin.url))
        self.assertFailsAt(proc, "clock", 78, "ahead of the server's")
        self.assertRegex(self.lines(proc)["clock"][1], r"(29\d|30\d) s ahead")

    def test_an_answer_that_says_nothing_about_the_key_is_not_checked_never_ok(self):
        twin = self.twin(faults=FaultPlan(rate=1.0, kinds=("503",)))
        proc = self.doctor(self.bundle(twin.url))
        self.assertEqual(proc.returncode, 0, proc.stdout)
        self.assertEqual(self.lines(proc)["auth"][0], "not checked")
        self.assertIn("HTTP 503", proc.stdout)

    def test_json_one_record_per_check_then_the_verdict(self):
        twin = self.twin(clock_offset=300)
        proc = self.doctor(self.bundle(twin.url), "--json")
        self.assertEqual(proc.returncode, 78)
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        self.assertEqual([r.get("check") for r in records[:-1]],
                         ["bundle", "dns", "tcp", "proxy", "tls", "certificate", "clock", "auth"])
        clock = records[6]
        self.assertEqual((clock["status"], clock["exit_code"]), ("fail", 78))
        self.assertIn("behind the server's", clock["detail"])
        self.assertEqual(records[-1]["event"], "doctor")
        self.assertEqual((records[-1]["exit_code"], records[-1]["first_failure"]), (78, "clock"))
        self.assertTrue(all(r["schema"] == 1 for r in records))

    def test_through_a_proxy_the_tunnel_is_its_own_line(self):
        twin = self.twin()
        proxy = start_test_proxy(self)
        proc = self.doctor(self.bundle(twin.url), "--proxy", proxy.url)
        self.assertEqual(proc.returncode, 0, proc.stdout)
        lines = self.lines(proc)
        self.assertIn("127.0.0.1 -> 127.0.0.1 (the proxy's; it resolves localhost itself)", lines["dns"][1])
        self.assertIn("opened a tunnel to localhost:%d" % twin.port, lines["proxy"][1])
        self.assertEqual(lines["tls"][0], "ok")
        self.assertEqual(set(proxy.connects), {"localhost:%d" % twin.port})

    def test_a_proxy_that_wants_credentials_is_77_at_proxy(self):
        twin = self.twin()
        proxy = start_test_proxy(self, auth=("user", "pass"))
        proc = self.doctor(self.bundle(twin.url), "--proxy", proxy.url)
        self.assertFailsAt(proc, "proxy", 77, "proxy")

    def test_iotflow_key_is_checked_with_the_device_status_get_and_nothing_is_posted(self):
        twin = self.twin()
        bundle = self.bundle(twin.url, device_id="42")
        proc = self.doctor(bundle, "--platform", "iotflow")
        self.assertIn(self.lines(proc)["auth"][0], ("ok", "not checked", "fail"), proc.stdout)
        asked = [(r.method, r.path, r.headers.get("x-api-key") or r.headers.get("X-API-Key")) for r in twin.requests]
        self.assertEqual(asked, [("GET", "/api/v1/devices/status", KEY)])

    def test_sender_check_runs_the_same_checks_and_sends_nothing(self):
        twin = self.twin()
        bundle = self.bundle(twin.url, api_key="tesa_ak_doctor_not_registered_000")
        proc = run_cli(SENDER, "--certs-dir", bundle, "--check")
        self.assertEqual(proc.returncode, 77, proc.stdout + proc.stderr)
        self.assertIn("the auth check failed (exit 77)", proc.stdout)
        good = run_cli(SENDER, "--certs-dir", self.bundle(twin.url), "--check")
        self.assertEqual(good.returncode, 0, good.stdout)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 0)


class CaFileTests(unittest.TestCase):
    """A CA file may hold many CAs (a system bundle): one of them expired is no reason to fail."""

    def run_doctor(self, ca_text: str):
        twin = start_test_twin(self)
        twin.register_device(DEVICE, KEY)
        bundle = make_bundle(temp_dir(self) / "bundle", url=twin.url, device_id=DEVICE, api_key=KEY)
        (bundle / "ca-chain.pem").write_text(ca_text, encoding="utf-8")
        proc = run_cli(ENTRY, "doctor", "--certs-dir", bundle)
        self.assertNotIn("Traceback", proc.stderr)
        return proc

    def test_an_expired_ca_beside_a_valid_one_passes(self):
        expired = (CERTDATA / "expired-ca.pem").read_text(encoding="utf-8")
        valid = (CERTDATA / "ca.pem").read_text(encoding="utf-8")
        proc = self.run_doctor(expired + valid)
        self.assertEqual(proc.returncode, 0, proc.stdout)
        self.assertIn("no check failed", proc.stdout)

    def test_a_file_of_expired_cas_only_fails_the_bundle_check(self):
        proc = self.run_doctor((CERTDATA / "expired-ca.pem").read_text(encoding="utf-8"))
        self.assertEqual(proc.returncode, 78, proc.stdout)
        self.assertIn("expired on 2021-01-01", proc.stdout)


class ExpiryTests(unittest.TestCase):
    NOW = 1893456000.0  # 2030-01-01

    def test_within_thirty_days_warns(self):
        r = _expiry({"notAfter": "Jan 20 00:00:00 2030 GMT"}, ["Jan  1 00:00:00 2040 GMT"], self.NOW)
        self.assertEqual(r.status, "warn")
        self.assertIn("server certificate within 30 days", r.detail)

    def test_a_ca_expiring_soon_warns_too(self):
        r = _expiry({"notAfter": "Jan  1 00:00:00 2035 GMT"}, ["Jan 10 00:00:00 2030 GMT"], self.NOW)
        self.assertEqual(r.status, "warn")
        self.assertIn("CA within 30 days", r.detail)

    def test_later_is_ok(self):
        r = _expiry({"notAfter": "Mar  1 00:00:00 2030 GMT"}, [], self.NOW)
        self.assertEqual(r.status, "ok")
        self.assertIn("2030-03-01 (59 days)", r.detail)


if __name__ == "__main__":
    unittest.main()
