"""End to end: ``iotpost readings --platform thermacore`` as a subprocess against the real twin.

Over verified TLS and over the loopback --allow-http opt-in: login -> readings, then an access token
that expires at once -> 422 -> refresh -> readings again; refused logins, unknown units, bad
credential files, TLS and outages each with their exit code; the password and tokens never printed.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Any, List

from iotpost.receiver import thermacore
from tests.support import PROJECT_ROOT, RECEIVER, cli_env, run_cli
from tests.twin_support import CA_PEM, CERTDATA, TwinTestCase, temp_dir

PASSWORD = "e2e-thermacore-Pw-4f9c1a"  # in support.suite_secrets: no run's output may show it
ENV = {"THERMACORE_USERNAME": "demo", "THERMACORE_PASSWORD": PASSWORD}


def readings_cli(*args: object, env: Any = None) -> subprocess.CompletedProcess:
    """`python -m iotpost readings --platform thermacore ...` once the readings command delegates here;
    until then the same main() through ``python -c`` (the prog name is the same)."""
    if (PROJECT_ROOT / "iotpost" / "readings_cli.py").exists():
        return run_cli(PROJECT_ROOT / "iotpost.py", "readings", "--platform", "thermacore", *args, env=env)
    code = "import sys; from iotpost.thermacore_cli import main; sys.exit(main())"
    return run_cli(Path("-c"), code, "--platform", "thermacore", *args, env=env)


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class ThermaCoreEndToEnd(TwinTestCase):
    tls = True

    def setUp(self) -> None:
        self.twin = self.start_twin(tls=self.tls)
        thermacore.create_user(self.twin.store, "demo", PASSWORD)

    def run_readings(self, *args: object, env: Any = ENV) -> subprocess.CompletedProcess:
        extra: List[object] = ["--ca-file", CA_PEM] if self.tls else ["--allow-http"]
        proc = readings_cli("--base-url", self.twin.url, *(extra + list(args)), env=env)
        self.assertNotIn(PASSWORD, proc.stdout + proc.stderr)
        self.assertNotIn("eyJ", proc.stdout + proc.stderr)  # no JWT (base64 of '{"') in any output
        self.assertNotIn("Traceback", proc.stderr)
        return proc

    def bearer_tokens(self, path: str) -> List[str]:
        return [r.headers["authorization"].split(" ", 1)[1] for r in self.twin.requests
                if r.path.split("?")[0] == path and "authorization" in r.headers]

    def test_login_readings_then_expiry_refresh_and_readings_again(self) -> None:
        proc = self.run_readings("--unit", "1", "--sensor-type", "temperature", "--hours", "1", "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        readings, summary = records[:-1], records[-1]
        self.assertIn(len(readings), (720, 721))
        self.assertTrue(all(r["schema"] == 1 and r["event"] == "reading" for r in records[:-1]))
        self.assertEqual({r["sensor_type"] for r in readings}, {"temperature"})
        self.assertEqual(readings[0]["unit_of_measurement"], "\u00b0C")
        self.assertEqual((summary["event"], summary["count"], summary["refreshes"]), ("summary", len(readings), 0))
        self.assertEqual(self.bearer_tokens("/api/v1/auth/refresh"), [])

        # Every login's access token has now expired on arrival: the 422 must lead to a refresh.
        thermacore.configure(self.twin.store, access_seconds=0)
        proc = self.run_readings("--unit", "1", "--sensor-type", "pressure", "--hours", "1", "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        summary = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual(summary["refreshes"], 1)
        self.assertGreater(summary["count"], 700)
        paths = [r.path.split("?")[0] for r in self.twin.requests][2:]  # this run's
        self.assertEqual(paths, ["/api/v1/auth/login", "/api/v1/units/1/readings", "/api/v1/auth/refresh",
                                 "/api/v1/units/1/readings"])
        refresh = self.bearer_tokens("/api/v1/auth/refresh")
        self.assertEqual([claims(t)["type"] for t in refresh], ["refresh"])  # the refresh token, as Bearer
        expired, renewed = self.bearer_tokens("/api/v1/units/1/readings")[-2:]
        self.assertNotEqual(expired, renewed)
        self.assertEqual(claims(renewed)["exp"] - claims(renewed)["iat"], 3600)

    def test_a_refused_login_is_77_without_the_password(self) -> None:
        proc = self.run_readings("--unit", "1", env={"THERMACORE_USERNAME": "demo",
                                                     "THERMACORE_PASSWORD": PASSWORD + "-wrong"})
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("iotpost readings: error: HTTP 401 Authentication failed", proc.stderr)
        self.assertNotIn(PASSWORD + "-wrong", proc.stderr)
        self.assertEqual(proc.stdout, "")

    def test_an_unknown_unit_is_78(self) -> None:
        proc = self.run_readings("--unit", "TC999")
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("HTTP 404 Unit not found, while reading unit TC999", proc.stderr)


class ThermaCoreOverHttp(ThermaCoreEndToEnd):
    """The same runs against a plain-HTTP twin with --allow-http (loopback only, with a warning)."""

    tls = False

    def test_plain_http_warns(self) -> None:
        proc = self.run_readings("--unit", "1", "--hours", "1")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("warning: plain http://", proc.stderr)
        self.assertIn("TIMESTAMP (UTC)", proc.stdout)

    def test_http_without_the_opt_in_is_refused(self) -> None:
        proc = readings_cli("--base-url", self.twin.url, "--unit", "1", env=ENV)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertEqual(self.twin.requests.total, 0)


class ThermaCoreCredentialsAndTrouble(TwinTestCase):
    def setUp(self) -> None:
        self.twin = self.start_twin()
        thermacore.create_user(self.twin.store, "demo", PASSWORD)
        self.folder = temp_dir(self)

    def creds_file(self, mode: int = 0o600, doc: Any = None) -> Path:
        path = self.folder / "creds.json"
        path.write_text(json.dumps(doc if doc is not None else {"username": "demo", "password": PASSWORD}),
                        encoding="utf-8")
        os.chmod(str(path), mode)
        return path

    def run_file(self, path: Path, *args: object) -> subprocess.CompletedProcess:
        return readings_cli("--base-url", self.twin.url, "--ca-file", CA_PEM, "--unit", "1",
                            "--credentials-file", path, *args)

    def test_a_credentials_file_works_and_its_password_is_not_printed(self) -> None:
        proc = self.run_file(self.creds_file(), "--hours", "1", "--verbose")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("> Authorization: [REDACTED]", proc.stderr)
        self.assertNotIn(PASSWORD, proc.stdout + proc.stderr)

    @unittest.skipUnless(os.name == "posix", "file modes")
    def test_a_world_writable_credentials_file_is_refused(self) -> None:
        proc = self.run_file(self.creds_file(0o666))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("writable by every user", proc.stderr)
        self.assertEqual(self.twin.requests.total, 0)

    def test_missing_or_malformed_credentials(self) -> None:
        proc = self.run_file(self.folder / "nope.json")
        self.assertEqual(proc.returncode, 66, proc.stderr)
        proc = self.run_file(self.creds_file(doc={"user": "demo"}))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        proc = readings_cli("--base-url", self.twin.url, "--ca-file", CA_PEM, "--unit", "1")
        self.assertEqual(proc.returncode, 66, proc.stderr)
        self.assertIn("THERMACORE_USERNAME", proc.stderr)
        self.assertEqual(self.twin.requests.total, 0)

    def test_a_server_signed_by_another_ca_is_78(self) -> None:
        proc = self.run_file(self.creds_file(), "--ca-file", CERTDATA / "other-ca.pem")
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertEqual(self.twin.requests.total, 0)

    def test_a_server_that_is_down_is_75(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = readings_cli("--base-url", "https://localhost:%d" % port, "--ca-file", CA_PEM, "--unit", "1",
                            "--credentials-file", self.creds_file(), "--timeout", "5")
        self.assertEqual(proc.returncode, 75, proc.stderr)

    def test_the_login_limit_is_75(self) -> None:
        thermacore.configure(self.twin.store, login_limit=0)
        proc = self.run_file(self.creds_file())
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("HTTP 429", proc.stderr)


class ReceiverDemoUser(unittest.TestCase):
    """`receiver.py` names the demo password file at start; the README's commands work with it."""

    def test_the_demo_login_named_at_start_reads_unit_1(self) -> None:
        folder = temp_dir(self)
        proc = subprocess.Popen([sys.executable, str(RECEIVER), "--port", "0", "--db", str(folder / "r.sqlite3")],
                                cwd=str(folder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=cli_env(), text=True, encoding="utf-8")
        self.addCleanup(proc.wait)
        self.addCleanup(proc.stderr.close)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        url = proc.stderr.readline().split()[3]
        line = proc.stderr.readline()
        self.assertIn("ThermaCore demo login (user demo) in", line)
        creds = Path(line.rsplit(" in ", 1)[1].strip())
        self.assertEqual(creds, (folder / "thermacore-credentials.json").resolve())
        if os.name == "posix":
            self.assertEqual(stat.S_IMODE(creds.stat().st_mode), 0o600)
        run = readings_cli("--base-url", url, "--ca-file", CA_PEM, "--unit", "1", "--credentials-file", creds,
                           "--sensor-type", "temperature", "--hours", "1")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("GOOD", run.stdout)
        password = json.loads(creds.read_text(encoding="utf-8"))["password"]
        proc.terminate()
        proc.wait(timeout=10)
        self.assertNotIn(password, run.stdout + run.stderr + proc.stderr.read())


if __name__ == "__main__":
    unittest.main()
