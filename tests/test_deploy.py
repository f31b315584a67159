"""deploy/: every iotpost command line in the recipes runs with the real flags; the systemd units verify."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import unittest
from pathlib import Path

from tests.support import PROJECT_ROOT, run_cli
from tests.twin_support import make_bundle, start_test_twin, temp_dir

DEPLOY = PROJECT_ROOT / "deploy"
ENTRY = PROJECT_ROOT / "iotpost.py"  # the clone's twin of iotpost.pyz: same commands and flags
RECIPES = ("iotpost.cron", "systemd/iotpost-send.service", "windows/iotpost-send.cmd")
DEVICE = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
KEY = "tesa_ak_deploy_" + "d" * 20


def iotpost_lines(path: Path):
    """The arguments after `iotpost.pyz` on each line that runs it (up to a redirection or quote's end)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("#", "rem ")) or "iotpost.pyz" not in line:
            continue
        rest = line.split("iotpost.pyz", 1)[1].lstrip('"')
        rest = re.split(r">>|'$", rest.rstrip())[0]
        yield shlex.split(rest)


class RecipeTests(unittest.TestCase):
    def test_every_recipe_line_runs_against_the_twin(self):
        twin = start_test_twin(self)
        twin.register_device(DEVICE, KEY)
        tmp = temp_dir(self)
        bundle = str(make_bundle(tmp / "bundle", url=twin.url, device_id=DEVICE, api_key=KEY))
        places = {"/etc/iotpost/bundle": bundle, "%d": bundle, "%USERPROFILE%\\certs_credentials": bundle,
                  "/var/lib/iotpost/spool.sqlite3": str(tmp / "spool.sqlite3"),
                  "%S/iotpost/spool.sqlite3": str(tmp / "spool.sqlite3"),
                  "%LOCALAPPDATA%\\iotpost\\spool.sqlite3": str(tmp / "spool.sqlite3")}
        ran = 0
        for name in RECIPES:
            for args in iotpost_lines(DEPLOY / name):
                args = [places.get(a, a) for a in args]
                if "--jitter" in args:  # its wait is test_jitter's; here the line must parse and send
                    args[args.index("--jitter") + 1] = "0"
                with self.subTest(recipe=name, args=args):
                    for a in args:
                        self.assertNotRegex(a, r"^(/etc|/var|%)", "a path the test does not replace")
                    proc = run_cli(ENTRY, *args, stdin='{"temperature": 21.5}\n')
                    self.assertEqual(proc.returncode, 0, proc.stderr)
                    ran += 1
        self.assertEqual(ran, 4)  # cron: send + status; systemd: send; Windows: send
        self.assertEqual(twin.store.count_telemetry(DEVICE), 3)

    @unittest.skipIf(shutil.which("systemd-analyze") is None, "systemd-analyze is not installed")
    def test_systemd_units_pass_systemd_analyze_verify(self):
        units = [str(DEPLOY / "systemd" / n) for n in ("iotpost-send.service", "iotpost-send.timer")]
        proc = subprocess.run(["systemd-analyze", "verify"] + units, capture_output=True, text=True, timeout=60,
                              cwd=str(DEPLOY / "systemd"))
        if proc.returncode != 0 and ("Failed to" in proc.stderr and "bus" in proc.stderr.lower()):
            self.skipTest("systemd-analyze cannot run here: " + proc.stderr.strip()[:200])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        # Unknown keys are only warnings (exit 0): none may be printed either.
        self.assertEqual([l for l in proc.stderr.splitlines() if "iotpost-send" in l], [])

    def test_the_service_is_hardened_and_persistent(self):
        service = (DEPLOY / "systemd" / "iotpost-send.service").read_text(encoding="utf-8")
        for line in ("DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=iotpost", "NoNewPrivileges=yes",
                     "LoadCredential=api_key.txt:"):
            self.assertIn(line, service)
        self.assertRegex(service, r"(?m)^ExecStart=/bin/sh -c '/usr/local/bin/read-sensor \| /usr/bin/python3 ")
        self.assertIn("Persistent=true", (DEPLOY / "systemd" / "iotpost-send.timer").read_text(encoding="utf-8"))


if __name__ == "__main__":
    unittest.main()
