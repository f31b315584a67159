"""End to end: tlink_push.py as a subprocess against the twin's TLINK webhook over verified TLS."""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
import unittest
from pathlib import Path

from tests.support import TLINK, assert_no_secret_in_files, run_cli
from tests.twin_support import CERTDATA, start_test_twin

SECRET = b"tlink-shared-secret-for-tests-7f3a"


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class TlinkTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="iotpost-tlink-"))
        import shutil

        self.addCleanup(shutil.rmtree, str(self.tmp), True)
        self.addCleanup(assert_no_secret_in_files, self.tmp)  # runs first: nothing the tools wrote holds it
        self.secret_file = self.tmp / "secret.txt"
        self.secret_file.write_bytes(SECRET + b"\n")

    def twin(self, secret=SECRET, **kwargs):
        return start_test_twin(self, tlink_secret=secret, **kwargs)

    def push(self, twin, *args, **kwargs):
        return run_cli(TLINK, "--url", twin.url + "/api/webhooks/tlink", "--ca-file", CERTDATA / "ca.pem", *args,
                       **kwargs)

    def posts(self, twin):
        return [r for r in twin.requests if r.method == "POST"]

    def assertNoSecret(self, proc) -> None:
        text = SECRET.decode()
        self.assertNotIn(text, proc.stdout)
        self.assertNotIn(text, proc.stderr)


class TlinkSendTests(TlinkTestCase):
    def test_help_lists_the_flags(self):
        proc = run_cli(TLINK, "--help")
        self.assertEqual(proc.returncode, 0)
        for flag in ("--url", "--ca-file", "--secret-file", "--device-id", "--user-id", "--sensor", "--count",
                     "--interval", "--dry-run", "--replay", "--period", "--timeout", "--json", "--quiet",
                     "--verbose", "--parent-user-id"):
            self.assertIn(flag, proc.stdout)

    def test_dry_run_uses_given_ids_contacts_nothing_and_hides_secret(self):
        twin = self.twin()
        proc = self.push(twin, "--dry-run", "--json", "--device-id", "777", "--user-id", "42",
                         "--secret-file", self.secret_file, "--sensor", "5:1:°C", "--sensor", "6:2")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        event = json.loads(proc.stdout.splitlines()[0])
        body = event["body"]
        self.assertEqual(body["deviceId"], 777)
        self.assertEqual(body["deviceUserid"], 42)
        self.assertEqual(body["flag"], "00")
        self.assertRegex(body["time"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        self.assertEqual([s["sensorsId"] for s in body["sensorsDates"]], [5, 6])
        first = body["sensorsDates"][0]
        self.assertIsInstance(first["reVal"], str)
        self.assertIsInstance(first["value"], str)
        self.assertIn(first["isAlarm"], ("0", "1"))
        self.assertEqual(first["isLine"], 1)
        self.assertEqual(first["times"], body["time"][11:])
        bytes.fromhex(body["rawData"])
        self.assertEqual(twin.requests, [])
        self.assertNoSecret(proc)

    def test_signed_sends_carry_the_hmac_of_the_exact_body(self):
        twin = self.twin()
        proc = self.push(twin, "--secret-file", self.secret_file, "--count", "2", "--interval", "1.05")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNoSecret(proc)
        seen = self.posts(twin)
        self.assertEqual(len(seen), 2)
        for r in seen:
            self.assertEqual(r.headers["x-tlink-signature"], sign(r.body))
        self.assertIn("storedReadings=3", proc.stdout)

    def test_secret_from_environment(self):
        twin = self.twin()
        proc = self.push(twin, env={"TLINK_WEBHOOK_SECRET": SECRET.decode()}, )
        self.assertEqual(proc.returncode, 0, proc.stderr)
        r = self.posts(twin)[0]
        self.assertEqual(r.headers["x-tlink-signature"], sign(r.body))

    def test_unsigned_sends_carry_no_signature(self):
        twin = self.twin(secret=None)
        proc = self.push(twin)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotIn("x-tlink-signature", self.posts(twin)[0].headers)

    def test_wrong_secret_is_77_without_retry_and_stores_nothing(self):
        twin = self.twin()
        wrong = self.tmp / "wrong.txt"
        wrong.write_text("not-the-secret")
        proc = self.push(twin, "--secret-file", wrong)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertEqual(len(self.posts(twin)), 1)
        self.assertEqual(twin.store.count_tlink_readings(), 0)
        self.assertIn("--secret-file", proc.stderr)
        self.assertNotIn("not-the-secret", proc.stdout + proc.stderr)

    def test_missing_signature_is_77(self):
        twin = self.twin()
        proc = self.push(twin)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertEqual(twin.store.count_tlink_readings(), 0)

    def test_tampered_body_is_rejected_and_nothing_stored(self):
        import http.client
        import ssl

        twin = self.twin()
        body = b'{"deviceId": 1, "deviceUserid": 2, "sensorsDates": [{"sensorsId": 3, "value": "1.0"}]}'
        signature = sign(body)
        tampered = body.replace(b'"1.0"', b'"9.0"')
        ctx = ssl.create_default_context(cafile=str(CERTDATA / "ca.pem"))
        conn = http.client.HTTPSConnection("localhost", twin.port, context=ctx, timeout=10)
        self.addCleanup(conn.close)
        conn.request("POST", "/api/webhooks/tlink", body=tampered,
                     headers={"Content-Type": "application/json", "X-TLink-Signature": signature})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 401)
        self.assertEqual(json.loads(resp.read()), {"error": "Invalid webhook signature"})
        self.assertEqual(twin.store.count_tlink_readings(), 0)

    def test_duplicate_push_stores_nothing_new(self):
        twin = self.twin()
        record = self.tmp / "push.json"
        proc = self.push(twin, "--dry-run", "--json")
        record.write_text(json.dumps(json.loads(proc.stdout.splitlines()[0])["body"]))
        first = self.push(twin, "--secret-file", self.secret_file, "--replay", record, "--json")
        second = self.push(twin, "--secret-file", self.secret_file, "--replay", record, "--json")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(second.returncode, 0, second.stderr)
        # The twin answers as the reference does (entries processed, a duplicate too); the store shows
        # that the second push added nothing.
        self.assertIn("storedReadings=3", json.loads(first.stdout.splitlines()[0])["message"])
        self.assertIn("storedReadings=3", json.loads(second.stdout.splitlines()[0])["message"])
        self.assertEqual(twin.store.count_tlink_readings(), 3)

    def test_replay_sends_each_record_unchanged_and_signed(self):
        twin = self.twin()
        lines = [
            b'{"flag": "00", "deviceUserid": 385, "parentUserId": "217", "sensorsDates": [{"times": "14:16:21", '
            b'"sensorsId": 11922, "isAlarm": "0", "sensorsTypeId": 1, "isLine": 1, "reVal": "5.0000", '
            b'"value": "5.0"}], "time": "2019-05-10 14:16:21", "rawData": "2352", "deviceId": 2864}',
            b'{"deviceId":2864,"deviceUserid":385,"sensorsDates":[{"times":"14:17:21","sensorsId":11922,'
            b'"sensorTypeId":1,"reVal":"6.0000","value":"6.0","isAlarm":"0","isLine":1}],"time":"2019-05-10 14:17:21"}',
        ]
        record = self.tmp / "recorded.jsonl"
        record.write_bytes(b"\n".join(lines) + b"\n")
        proc = self.push(twin, "--secret-file", self.secret_file, "--replay", record)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        seen = self.posts(twin)
        self.assertEqual([r.body for r in seen], lines)
        for r in seen:
            self.assertEqual(r.headers["x-tlink-signature"], sign(r.body))
        history = twin.store.tlink_history(385, 2864)
        self.assertEqual(sorted(h["value"] if isinstance(h, dict) else h.value for h in history), ["5.0", "6.0"])

    def test_replay_from_stdin(self):
        twin = self.twin(secret=None)
        proc = self.push(twin, "--replay", "-", stdin='{"deviceId": 1, "deviceUserid": 2, "sensorsDates": [{"sensorsId": 3, "value": "1"}]}\n')
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(self.posts(twin)), 1)
        self.assertEqual(twin.store.count_tlink_readings(1), 1)

    def test_malformed_replay_is_65_and_nothing_sent(self):
        twin = self.twin()
        record = self.tmp / "bad.jsonl"
        record.write_text('{"deviceId": 1}\n{"deviceId": \n')
        proc = self.push(twin, "--secret-file", self.secret_file, "--replay", record)
        self.assertEqual(proc.returncode, 65, proc.stderr)
        self.assertIn("line 2", proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_unknown_ca_is_78(self):
        twin = self.twin()
        proc = run_cli(TLINK, "--url", twin.url + "/api/webhooks/tlink", "--ca-file", CERTDATA / "other-ca.pem",
                       "--secret-file", self.secret_file)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("certificate", proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_missing_secret_file_is_66(self):
        twin = self.twin()
        proc = self.push(twin, "--secret-file", self.tmp / "nope.txt")
        self.assertEqual(proc.returncode, 66, proc.stderr)
        self.assertIn("nope.txt", proc.stderr)

    def test_read_back_returns_what_was_pushed(self):
        import http.client
        import ssl

        twin = self.twin()
        proc = self.push(twin, "--secret-file", self.secret_file, "--device-id", "555", "--user-id", "77",
                         "--sensor", "901:1:°C")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        sent = json.loads(self.posts(twin)[0].body)
        ctx = ssl.create_default_context(cafile=str(CERTDATA / "ca.pem"))
        conn = http.client.HTTPSConnection("localhost", twin.port, context=ctx, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/api/users/77/devices/555/latest")
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        self.assertEqual(resp.status, 200, doc)
        text = json.dumps(doc)
        self.assertIn(sent["sensorsDates"][0]["value"], text)
        self.assertIn("901", text)


if __name__ == "__main__":
    unittest.main()
