"""Files that hold readings are 0600 whatever the umask; world-writable secret files are refused.

POSIX only: the modes are what is tested.
"""

from __future__ import annotations

import os
import stat
import unittest
from pathlib import Path

from iotpost.spool import open_spool
from iotpost.spool_recovery import moved_aside_files
from tests.support import SENDER, TLINK, run_cli
from tests.twin_support import CA_PEM, CERTDATA, make_bundle, start_test_twin, temp_dir

POSIX = os.name == "posix"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(str(path)).st_mode)


class Umask:
    """Run a block under a umask (the process's: tests run one at a time), restored afterwards."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __enter__(self) -> None:
        self.old = os.umask(self.value)

    def __exit__(self, *exc: object) -> None:
        os.umask(self.old)


@unittest.skipUnless(POSIX, "file modes are POSIX")
class SpoolModeTests(unittest.TestCase):
    def test_spool_wal_and_shm_are_0600_under_umask_022_and_002(self):
        tmp = temp_dir(self)
        for umask in (0o022, 0o002, 0o000):
            with self.subTest(umask=oct(umask)):
                path = tmp / ("spool-%o.sqlite3" % umask)
                with Umask(umask):
                    spool = open_spool(path)
                    try:
                        spool.put("tesaiot", b'{"reading": 1}', "key-%o" % umask, 1.0)
                        files = [path, Path(str(path) + "-wal"), Path(str(path) + "-shm")]
                        for name in files:
                            self.assertTrue(name.exists(), name)
                            self.assertEqual(mode(name), 0o600, name)
                    finally:
                        spool.close()

    def test_a_sender_run_creates_its_spool_0600(self):
        tmp = temp_dir(self)
        twin = start_test_twin(self)
        bundle = make_bundle(tmp / "bundle", twin=twin)
        spool = tmp / "run.sqlite3"
        with Umask(0o022):  # the child inherits it
            proc = run_cli(SENDER, "--certs-dir", bundle, "--spool", spool)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(mode(spool), 0o600)

    def test_a_moved_aside_copy_is_0600_even_from_an_older_0644_spool(self):
        tmp = temp_dir(self)
        path = tmp / "spool.sqlite3"
        path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4080)  # damaged beyond reading
        os.chmod(str(path), 0o644)
        with Umask(0o022):
            spool = open_spool(path)
        spool.close()
        asides = moved_aside_files(path)
        self.assertEqual(len(asides), 1, sorted(p.name for p in tmp.iterdir()))
        self.assertEqual(mode(asides[0]), 0o600)
        self.assertEqual(mode(path), 0o600)  # the fresh spool


@unittest.skipUnless(POSIX, "file modes are POSIX")
class SecretFileModeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = temp_dir(self)
        self.twin = start_test_twin(self)
        self.bundle = make_bundle(self.tmp / "bundle", twin=self.twin)

    def send(self, *args, **kwargs):
        return run_cli(SENDER, "--certs-dir", self.bundle, "--retries", "0", *args, **kwargs)

    def test_world_writable_api_key_is_78_and_nothing_is_sent(self):
        os.chmod(str(self.bundle / "api_key.txt"), 0o666)
        proc = self.send()
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("api_key.txt is writable by every user", proc.stderr)
        self.assertIn("chmod 600", proc.stderr)
        self.assertEqual(self.twin.requests, [])

    def test_group_writable_key_of_a_clone_under_umask_002_only_warns(self):
        os.chmod(str(self.bundle / "api_key.txt"), 0o664)
        proc = self.send()
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("readable by group or others", proc.stderr)
        os.chmod(str(self.bundle / "api_key.txt"), 0o644)  # umask 022
        self.assertEqual(self.send().returncode, 0)

    def test_world_writable_client_key_and_password_file_are_78(self):
        twin = start_test_twin(self, client_ca=CA_PEM)
        bundle = make_bundle(self.tmp / "mtls", twin=twin)
        for name, source in (("client_cert.pem", "client.pem"), ("client_key.pem", "client-encrypted.key")):
            (bundle / name).write_bytes((CERTDATA / source).read_bytes())
        password = self.tmp / "password.txt"
        password.write_bytes((CERTDATA / "client-key-password.txt").read_bytes())
        os.chmod(str(password), 0o600)
        os.chmod(str(bundle / "client_key.pem"), 0o646)
        proc = run_cli(SENDER, "--certs-dir", bundle, "--client-key-password-file", password)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("client_key.pem is writable by every user", proc.stderr)
        os.chmod(str(bundle / "client_key.pem"), 0o600)
        os.chmod(str(password), 0o622)
        proc = run_cli(SENDER, "--certs-dir", bundle, "--client-key-password-file", password)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("password.txt is writable by every user", proc.stderr)
        os.chmod(str(password), 0o600)
        proc = run_cli(SENDER, "--certs-dir", bundle, "--client-key-password-file", password)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(twin.requests), 1)

    def test_world_writable_tlink_secret_is_78(self):
        secret = self.tmp / "secret.txt"
        secret.write_text("tlink-test-secret-0123456789\n", encoding="utf-8")
        os.chmod(str(secret), 0o666)
        proc = run_cli(TLINK, "--url", self.twin.url + "/api/webhooks/tlink", "--ca-file", CA_PEM,
                       "--secret-file", secret, "--retries", "0")
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("writable by every user", proc.stderr)
        self.assertEqual(self.twin.requests, [])


if __name__ == "__main__":
    unittest.main()
