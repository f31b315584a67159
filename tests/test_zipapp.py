"""dist/iotpost.pyz: built by `python3 -m iotpost.build` into a temp folder and run end to end against the twin."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

from tests.support import PROJECT_ROOT, cli_env, run_cli
from tests.twin_support import SAMPLE_BUNDLE, make_bundle, start_test_twin, temp_dir

DEVICE = "5e1d2c3b-4a59-4687-9a0b-1c2d3e4f5a6b"
KEY = "tesa_ak_pyz_" + "z" * 24


class ZipappTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.folder = Path(tempfile.mkdtemp(prefix="iotpost-pyz-"))
        # The maintainer's command itself, as a subprocess, with this interpreter.
        proc = subprocess.run([sys.executable, "-m", "iotpost.build", "-o", str(cls.folder / "iotpost.pyz")],
                              cwd=str(PROJECT_ROOT), capture_output=True, text=True, env=cli_env())
        assert proc.returncode == 0, proc.stderr
        cls.pyz = cls.folder / "iotpost.pyz"

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(str(cls.folder), ignore_errors=True)

    def run_pyz(self, *args, **kwargs):
        return run_cli(self.pyz, *args, **kwargs)

    def test_holds_every_module_as_source_and_bytecode_and_no_tests_bench_or_sample_bundle(self):
        names = set(zipfile.ZipFile(str(self.pyz)).namelist())
        package = PROJECT_ROOT / "iotpost"
        for path in package.rglob("*.py"):
            rel = path.relative_to(package)
            if "__pycache__" in rel.parts or rel.as_posix() == "build.py":
                continue
            with self.subTest(module=rel.as_posix()):
                self.assertIn("iotpost/" + rel.as_posix(), names)
                self.assertIn("iotpost/" + rel.as_posix() + "c", names)
        self.assertIn("iotpost/platforms/tesaiot.py", names)
        self.assertNotIn("iotpost/build.py", names)
        self.assertEqual([n for n in names if n.startswith(("tests/", "bench/", "certs_credentials"))], [])
        self.assertFalse([n for n in names if "api_key" in n or n.endswith("ca.key")])
        self.assertEqual(sorted(n for n in names if n.endswith((".pem", ".key"))),
                         ["iotpost/receiver/test_only_certdata/localhost.key",
                          "iotpost/receiver/test_only_certdata/localhost.pem"])

    def test_version_help_and_usage_exit_codes_match_the_scripts(self):
        proc = self.run_pyz("--version")
        self.assertEqual((proc.returncode, proc.stdout), (0, "iotpost %s\n" % _version()))
        proc = self.run_pyz("send", "--help")
        self.assertEqual(proc.returncode, 0)
        self.assertIn("--certs-dir", proc.stdout)
        proc = self.run_pyz("send", "--no-such-flag")
        self.assertEqual(proc.returncode, 2)
        proc = self.run_pyz("send", "--certs-dir", str(temp_dir(self) / "absent"))
        self.assertEqual(proc.returncode, 66)
        self.assertIn("iotpost send: error:", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)

    def test_sends_to_the_twin_over_verified_tls(self):
        twin = start_test_twin(self)
        twin.register_device(DEVICE, KEY)
        bundle = make_bundle(temp_dir(self) / "bundle", url=twin.url, device_id=DEVICE, api_key=KEY)
        proc = self.run_pyz("send", "--certs-dir", str(bundle), "--count", "2", "--interval", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 2)
        self.assertNotIn(KEY, proc.stdout + proc.stderr)

    def test_finds_certs_credentials_in_the_current_folder_without_flags(self):
        twin = start_test_twin(self)
        twin.register_device(DEVICE, KEY)
        work = temp_dir(self)
        make_bundle(work / "certs_credentials", url=twin.url, device_id=DEVICE, api_key=KEY)
        proc = subprocess.run([sys.executable, str(self.pyz), "send"], cwd=str(work), capture_output=True,
                              text=True, env=cli_env(), stdin=subprocess.DEVNULL, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)
        elsewhere = subprocess.run([sys.executable, str(self.pyz), "send"], cwd=str(temp_dir(self)),
                                   capture_output=True, text=True, env=cli_env(), stdin=subprocess.DEVNULL, timeout=60)
        self.assertEqual(elsewhere.returncode, 66)
        self.assertIn("certs_credentials", elsewhere.stderr)

    def test_refused_key_is_77_as_from_the_script(self):
        twin = start_test_twin(self)
        bundle = make_bundle(temp_dir(self) / "bundle", url=twin.url, device_id=DEVICE, api_key=KEY)  # unknown
        proc = self.run_pyz("send", "--certs-dir", str(bundle))
        self.assertEqual(proc.returncode, 77, proc.stderr)

    @unittest.skipUnless(hasattr(signal, "SIGTERM") and os.name == "posix", "POSIX signals")
    def test_twin_from_the_pyz_serves_its_unpacked_demo_certificate_and_removes_it(self):
        before = set(Path(tempfile.gettempdir()).glob("iotpost-twin-cert-*"))
        work = temp_dir(self)
        proc = subprocess.Popen([sys.executable, str(self.pyz), "receiver", "--port", "0", "--db", ":memory:",
                                 "--bundle", str(make_bundle(work / "twin-bundle", device_id=DEVICE, api_key=KEY))],
                                cwd=str(work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=cli_env())
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.addCleanup(proc.stderr.close)
        line = proc.stderr.readline()
        self.assertRegex(line, r"^receiver: listening on https://localhost:\d+ ")
        url = line.split()[3]
        unpacked = set(Path(tempfile.gettempdir()).glob("iotpost-twin-cert-*")) - before
        self.assertEqual(len(unpacked), 1)
        folder = unpacked.pop()
        self.assertEqual(stat.S_IMODE(folder.stat().st_mode), 0o700)
        self.assertEqual(stat.S_IMODE((folder / "localhost.key").stat().st_mode), 0o600)
        bundle = make_bundle(work / "bundle", url=url, device_id=DEVICE, api_key=KEY)
        sent = self.run_pyz("send", "--certs-dir", str(bundle))
        self.assertEqual(sent.returncode, 0, sent.stderr)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=10), 0)
        self.assertFalse(folder.exists())

    def test_twin_from_the_pyz_without_a_bundle_says_so(self):
        self.assertTrue(SAMPLE_BUNDLE.is_dir())  # the clone has it; the archive must not
        before = set(Path(tempfile.gettempdir()).glob("iotpost-twin-cert-*"))
        proc = subprocess.Popen([sys.executable, str(self.pyz), "receiver", "--port", "0", "--db", ":memory:"],
                                cwd=str(temp_dir(self)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=cli_env())
        # Windows has no SIGTERM to end it cleanly (atexit would not run): remove what it unpacked.
        self.addCleanup(lambda: [shutil.rmtree(str(p), True)
                                 for p in set(Path(tempfile.gettempdir()).glob("iotpost-twin-cert-*")) - before])
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.addCleanup(proc.stderr.close)
        self.assertIn("listening on", proc.stderr.readline())
        start = "".join(proc.stderr.readline() for _ in range(3))  # the demo logins, then the note
        self.assertIn("no bundle registered", start)
        proc.terminate()
        proc.wait(timeout=10)


def _version() -> str:
    from iotpost import __version__

    return __version__


if __name__ == "__main__":
    unittest.main()
