"""The exit-code table, the HTTP status mapping, and the exception classes that carry codes."""

from __future__ import annotations

import signal
import unittest

from iotpost import errors
from iotpost.exitcodes import (
    ExitStatus,
    for_http_status,
    is_payload_rejected,
    is_retryable_status,
    means_platform_down,
    worst,
)


class ExitStatusValuesTest(unittest.TestCase):
    def test_each_value_as_documented(self) -> None:
        expected = {
            "OK": 0,
            "INTERNAL": 1,
            "USAGE": 2,
            "DATA": 65,  # sysexits EX_DATAERR
            "NOINPUT": 66,  # EX_NOINPUT
            "TEMPFAIL": 75,  # EX_TEMPFAIL
            "NOPERM": 77,  # EX_NOPERM
            "CONFIG": 78,  # EX_CONFIG
            "SIGINT": 130,  # 128 + 2
            "SIGTERM": 143,  # 128 + 15
        }
        for name, value in expected.items():
            with self.subTest(name=name):
                self.assertEqual(int(ExitStatus[name]), value)
        # No undocumented member sneaks in (a new code must be added to this test on purpose).
        self.assertEqual({m.name for m in ExitStatus}, set(expected))

    def test_values_are_distinct(self) -> None:
        values = [int(m) for m in ExitStatus]
        self.assertEqual(len(values), len(set(values)))


class ForHttpStatusTest(unittest.TestCase):
    SPECIFIC = {
        200: ExitStatus.OK,
        201: ExitStatus.OK,
        204: ExitStatus.OK,
        301: ExitStatus.CONFIG,  # never follow a redirect with a POST body: the URL is wrong
        400: ExitStatus.DATA,
        401: ExitStatus.NOPERM,
        403: ExitStatus.NOPERM,
        404: ExitStatus.CONFIG,
        405: ExitStatus.CONFIG,
        408: ExitStatus.TEMPFAIL,
        409: ExitStatus.DATA,
        413: ExitStatus.DATA,
        415: ExitStatus.DATA,
        422: ExitStatus.DATA,
        429: ExitStatus.TEMPFAIL,
        500: ExitStatus.TEMPFAIL,
        502: ExitStatus.TEMPFAIL,
        503: ExitStatus.TEMPFAIL,
        504: ExitStatus.TEMPFAIL,
    }

    def test_specific_statuses(self) -> None:
        for status, code in self.SPECIFIC.items():
            with self.subTest(status=status):
                self.assertIs(for_http_status(status), code)

    def test_status_classes(self) -> None:
        classes = {
            (100, 199): ExitStatus.TEMPFAIL,  # a broken server or proxy
            (200, 299): ExitStatus.OK,
            (300, 399): ExitStatus.CONFIG,
            (500, 599): ExitStatus.TEMPFAIL,
        }
        for (low, high), code in classes.items():
            for status in (low, (low + high) // 2, high):
                with self.subTest(status=status):
                    self.assertIs(for_http_status(status), code)

    def test_other_4xx_is_data(self) -> None:
        for status in (402, 406, 410, 411, 412, 414, 418, 428, 431, 451, 499):
            with self.subTest(status=status):
                self.assertIs(for_http_status(status), ExitStatus.DATA)

    def test_nonsense_status_is_tempfail(self) -> None:
        for status in (0, 99, 600, 999):
            with self.subTest(status=status):
                self.assertIs(for_http_status(status), ExitStatus.TEMPFAIL)


class PredicatesTest(unittest.TestCase):
    def test_is_retryable_status(self) -> None:
        for status in (408, 429, 500, 502, 503, 504, 599):
            with self.subTest(status=status):
                self.assertTrue(is_retryable_status(status))
        for status in (200, 201, 204, 301, 400, 401, 403, 404, 405, 409, 413, 415, 422):
            with self.subTest(status=status):
                self.assertFalse(is_retryable_status(status))

    def test_means_platform_down(self) -> None:
        for status in (408, 429, 502, 503, 504):
            with self.subTest(status=status):
                self.assertTrue(means_platform_down(status))
        # 500 and the rest may be this payload's fault: a dead letter if the platform takes others
        for status in (200, 400, 401, 404, 422, 500, 501, 505, 507):
            with self.subTest(status=status):
                self.assertFalse(means_platform_down(status))

    def test_is_payload_rejected(self) -> None:
        for status in (400, 409, 410, 413, 415, 418, 422, 451):
            with self.subTest(status=status):
                self.assertTrue(is_payload_rejected(status))
        for status in (200, 302, 401, 403, 404, 405, 408, 429, 500, 503):
            with self.subTest(status=status):
                self.assertFalse(is_payload_rejected(status))

    def test_rejected_is_never_retryable(self) -> None:
        for status in range(100, 600):
            if is_payload_rejected(status):
                self.assertFalse(is_retryable_status(status), status)


class WorstTest(unittest.TestCase):
    def test_empty_is_ok(self) -> None:
        self.assertIs(worst(), ExitStatus.OK)

    def test_single(self) -> None:
        for code in ExitStatus:
            with self.subTest(code=code):
                self.assertIs(worst(code), code)

    def test_order_does_not_matter(self) -> None:
        self.assertIs(worst(ExitStatus.DATA, ExitStatus.TEMPFAIL), ExitStatus.DATA)
        self.assertIs(worst(ExitStatus.TEMPFAIL, ExitStatus.DATA), ExitStatus.DATA)

    def test_severity_ladder(self) -> None:
        ladder = [
            ExitStatus.OK,
            ExitStatus.TEMPFAIL,
            ExitStatus.DATA,
            ExitStatus.NOPERM,
            ExitStatus.NOINPUT,
            ExitStatus.CONFIG,
            ExitStatus.USAGE,
            ExitStatus.INTERNAL,
            ExitStatus.SIGINT,
            ExitStatus.SIGTERM,
        ]
        for i, lower in enumerate(ladder):
            for higher in ladder[i + 1:]:
                with self.subTest(lower=lower, higher=higher):
                    self.assertIs(worst(lower, higher), higher)
                    self.assertIs(worst(higher, lower, ExitStatus.OK), higher)

    def test_interrupt_beats_everything(self) -> None:
        codes = [c for c in ExitStatus if c not in (ExitStatus.SIGINT, ExitStatus.SIGTERM)]
        self.assertIs(worst(*codes, ExitStatus.SIGINT), ExitStatus.SIGINT)


class ErrorClassesTest(unittest.TestCase):
    def test_each_error_carries_its_code(self) -> None:
        expected = {
            errors.IotPostError: ExitStatus.INTERNAL,
            errors.UsageError: ExitStatus.USAGE,
            errors.InputDataError: ExitStatus.DATA,
            errors.CredentialMissing: ExitStatus.NOINPUT,
            errors.ConfigError: ExitStatus.CONFIG,
            errors.TLSVerifyError: ExitStatus.CONFIG,
            errors.TransientError: ExitStatus.TEMPFAIL,
            errors.SpoolFull: ExitStatus.TEMPFAIL,
        }
        for cls, code in expected.items():
            with self.subTest(cls=cls.__name__):
                exc = cls("what went wrong", hint="do this")
                self.assertIsInstance(exc, errors.IotPostError)
                self.assertIs(exc.exit_code, code)
                self.assertEqual(str(exc), "what went wrong")
                self.assertEqual(exc.message, "what went wrong")
                self.assertEqual(exc.hint, "do this")

    def test_hint_defaults_to_none(self) -> None:
        self.assertIsNone(errors.ConfigError("x").hint)

    def test_interrupted_by_signal(self) -> None:
        exc = errors.Interrupted(signal.SIGINT)
        self.assertIs(exc.exit_code, ExitStatus.SIGINT)
        self.assertIn("SIGINT", str(exc))
        if hasattr(signal, "SIGTERM"):
            exc = errors.Interrupted(signal.SIGTERM)
            self.assertIs(exc.exit_code, ExitStatus.SIGTERM)
            self.assertIn("SIGTERM", str(exc))
        # The class attribute is not changed by an instance.
        self.assertIs(errors.Interrupted.exit_code, ExitStatus.INTERNAL)


if __name__ == "__main__":
    unittest.main()
