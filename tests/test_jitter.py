"""--jitter: a random wait before the first send, drawn from env.rand and slept through env.sleep."""

from __future__ import annotations

import io
import json
import unittest

from iotpost import tesaiot_cli
from iotpost.environment import Environment
from tests.support import SENDER, TLINK, run_cli
from tests.twin_support import CERTDATA, make_bundle, start_test_twin, temp_dir

DEVICE = "1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b"
KEY = "tesa_ak_jitter_" + "j" * 20


class JitterTests(unittest.TestCase):
    def test_waits_rand_times_jitter_before_the_first_request(self):
        twin = start_test_twin(self)
        twin.register_device(DEVICE, KEY)
        bundle = make_bundle(temp_dir(self) / "b", url=twin.url, device_id=DEVICE, api_key=KEY)
        sleeps = []
        env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), rand=lambda: 0.25,
                          sleep=lambda s: sleeps.append((s, len(twin.requests))))
        code = tesaiot_cli._main(["--certs-dir", str(bundle), "--jitter", "40", "--verbose"], [KEY], env)
        self.assertEqual(code, 0, env.stderr.getvalue())
        self.assertEqual(sleeps[0], (10.0, 0))  # 0.25 x 40 s, slept before anything reached the twin
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)
        self.assertIn("waiting 10.0 s (--jitter) before the first send", env.stderr.getvalue())

    def test_no_jitter_no_wait(self):
        bundle = make_bundle(temp_dir(self) / "b", device_id=DEVICE, api_key=KEY)
        env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), rand=lambda: 0.25,
                          sleep=lambda s: self.fail("slept %s" % s))
        self.assertEqual(tesaiot_cli._main(["--certs-dir", str(bundle), "--dry-run"], [KEY], env), 0)

    def test_dry_run_waits_on_the_simulated_clock_so_the_timestamp_shows_it(self):
        bundle = make_bundle(temp_dir(self) / "b", device_id=DEVICE, api_key=KEY)
        wall = 1893456000.0  # 2030-01-01T00:00:00Z
        env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), rand=lambda: 0.5, wall=lambda: wall,
                          sleep=lambda s: self.fail("a dry run slept %s s for real" % s))
        code = tesaiot_cli._main(["--certs-dir", str(bundle), "--dry-run", "--json", "--jitter", "600"], [KEY], env)
        self.assertEqual(code, 0, env.stderr.getvalue())
        record = json.loads(env.stdout.getvalue().splitlines()[0])
        self.assertEqual(record["body"]["timestamp"], "2030-01-01T00:05:00+00:00")

    def test_both_senders_take_it_and_refuse_out_of_range(self):
        proc = run_cli(TLINK, "--url", "https://localhost:8443/api/webhooks/tlink", "--ca-file",
                       CERTDATA / "ca.pem", "--dry-run", "--jitter", "3600", "--verbose",
                       env={"TLINK_WEBHOOK_SECRET": "s" * 32})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("(--jitter) before the first send", proc.stderr)
        for bad in ("-1", "3601", "soon"):
            with self.subTest(value=bad):
                proc = run_cli(SENDER, "--jitter", bad)
                self.assertEqual(proc.returncode, 2)
                self.assertIn("--jitter", proc.stderr)


if __name__ == "__main__":
    unittest.main()
