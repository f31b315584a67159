"""The suite-wide secret scan can fail: every run_cli output and every e2e test folder goes through it.

Issue 13: no secret from the test bundles may appear in any captured stdout/stderr/log/spool/dead
letter of the whole suite. run_cli checks each command's output; the e2e base classes check their
folders (spools, moved-aside copies, logs) at cleanup. These tests show the checks really catch a leak.
"""

from __future__ import annotations

import sqlite3
import tempfile
import unittest
from pathlib import Path

from tests.support import assert_no_secret_in_files, assert_no_suite_secret, suite_secrets
from tests.twin_support import TEST_API_KEY


class SecretScanTest(unittest.TestCase):
    def folder(self) -> Path:
        import shutil

        path = Path(tempfile.mkdtemp(prefix="iotpost-scan-"))
        self.addCleanup(shutil.rmtree, str(path), True)
        return path

    def test_output_holding_a_key_fails(self) -> None:
        assert_no_suite_secret("all fine, [REDACTED]", "a clean line")
        for secret in suite_secrets():
            with self.subTest(secret=secret[:4]):
                with self.assertRaises(AssertionError):
                    assert_no_suite_secret("error: key %s rejected" % secret, "a leaking line")

    def test_a_spool_row_holding_a_key_fails_and_a_credential_file_is_skipped(self) -> None:
        folder = self.folder()
        (folder / "api_key.txt").write_text(TEST_API_KEY + "\n", encoding="utf-8")
        db = sqlite3.connect(str(folder / "spool.sqlite3"))
        db.execute("CREATE TABLE spool (body BLOB)")
        db.execute("INSERT INTO spool VALUES (?)", (b'{"note": "clean"}',))
        db.commit()
        assert_no_secret_in_files(folder)
        db.execute("INSERT INTO spool VALUES (?)", (('{"x-api-key": "%s"}' % TEST_API_KEY).encode(),))
        db.commit()
        db.close()
        with self.assertRaises(AssertionError):
            assert_no_secret_in_files(folder)


if __name__ == "__main__":
    unittest.main()
