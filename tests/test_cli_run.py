"""The one wrapper that turns outcomes into exit codes and stderr lines, and the final-answer errors."""

from __future__ import annotations

import contextlib
import io
import signal
import unittest

from iotpost.cli_run import run
from iotpost.delivery import error_for_response
from iotpost.profiles import TESAIOT
from iotpost.errors import ConfigError, CredentialMissing, Interrupted, TransientError
from iotpost.exitcodes import ExitStatus

SECRET = "tesa_ak_super_secret_value_42"


def call(body, argv=()):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run(body, list(argv), "prog.py")
    return code, err.getvalue()


class RunWrapperTests(unittest.TestCase):
    def tearDown(self) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def test_known_error_is_one_line_plus_hint_and_its_code(self):
        def body(args, secrets):
            raise CredentialMissing("api_key.txt is missing", hint="download the bundle again")

        code, err = call(body)
        self.assertEqual(code, 66)
        self.assertEqual(err.splitlines(), ["prog.py: error: api_key.txt is missing",
                                            "prog.py: hint: download the bundle again"])

    def test_each_error_class_gives_its_code(self):
        for exc, expected in ((ConfigError("x"), 78), (TransientError("x"), 75), (CredentialMissing("x"), 66),
                              (Interrupted(signal.SIGTERM), 143), (Interrupted(signal.SIGINT), 130)):
            with self.subTest(exc=type(exc).__name__):
                def body(args, secrets, exc=exc):
                    raise exc

                self.assertEqual(call(body)[0], expected)

    def test_a_bug_is_exit_1_without_traceback_unless_debug(self):
        def body(args, secrets):
            raise ZeroDivisionError("boom")

        code, err = call(body)
        self.assertEqual(code, 1)
        self.assertNotIn("Traceback", err)
        self.assertIn("internal error: ZeroDivisionError: boom", err)
        code, err = call(body, ["--debug"])
        self.assertEqual(code, 1)
        self.assertIn("Traceback", err)

    def test_secrets_are_redacted_even_in_unexpected_errors(self):
        def body(args, secrets):
            secrets.append(SECRET)
            raise ValueError("bad header X-API-KEY: %s" % SECRET)

        for argv in ([], ["--debug"]):
            code, err = call(body, argv)
            self.assertEqual(code, 1)
            self.assertNotIn(SECRET, err)
            self.assertIn("[REDACTED]", err)

    def test_keyboard_interrupt_is_130(self):
        def body(args, secrets):
            raise KeyboardInterrupt

        self.assertEqual(call(body)[0], 130)

    def test_argparse_exit_codes_pass_through(self):
        def body(args, secrets):
            raise SystemExit(2)

        self.assertEqual(call(body)[0], 2)

    def test_success_returns_body_code(self):
        self.assertEqual(call(lambda args, secrets: 0)[0], 0)


class FinalAnswerTests(unittest.TestCase):
    def check(self, status, code, words, hint_words=()):
        err = error_for_response(status, "Reason", "server said", "https://h/api/v1/telemetry", 3,
                                 location="https://elsewhere/", auth_hint="check api_key.txt", names=TESAIOT.names)
        self.assertEqual(err.exit_code, code, status)
        for w in words:
            self.assertIn(w, err.message)
        for w in hint_words:
            self.assertIn(w, err.hint)
        self.assertIn(str(status), err.message)

    def test_each_status_family(self):
        self.check(401, ExitStatus.NOPERM, ["rejected the credentials", "#3"], ["api_key.txt"])
        self.check(403, ExitStatus.NOPERM, ["refused this device"], ["api_key.txt"])
        self.check(301, ExitStatus.CONFIG, ["redirects", "https://elsewhere/"])
        self.check(404, ExitStatus.CONFIG, ["not a telemetry endpoint"], ["--endpoint"])
        self.check(405, ExitStatus.CONFIG, ["not a telemetry endpoint"])
        for status in (400, 409, 413, 415, 422):
            self.check(status, ExitStatus.DATA, ["rejected payload #3", "server said"], ["dead letter"])
        for status in (408, 429, 500, 503):
            self.check(status, ExitStatus.TEMPFAIL, ["failed payload #3"], ["retry later"])


if __name__ == "__main__":
    unittest.main()
