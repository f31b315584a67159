"""Retry policy: backoff bounds, Retry-After handling, the time budget, and immutability."""

from __future__ import annotations

import datetime as dt
import random
import unittest
from email.utils import format_datetime

from iotpost.retry import (
    DEFAULT_MAX_RETRY_TIME,
    DEFAULT_RETRIES,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
    retry_after_in_body,
)

NOW = 1765276245.0  # 2025-12-09T10:30:45Z


def http_date(epoch: float) -> str:
    return format_datetime(dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc), usegmt=True)


class BackoffDelayTest(unittest.TestCase):
    def test_bounds_for_attempts_1_to_10(self) -> None:
        base, cap = 0.5, 30.0
        for attempt in range(1, 11):
            exp = min(cap, base * 2 ** (attempt - 1))
            with self.subTest(attempt=attempt):
                self.assertAlmostEqual(backoff_delay(attempt, base, cap, 0.0), exp / 2)
                top = backoff_delay(attempt, base, cap, 0.999999)
                self.assertLess(top, exp)
                self.assertAlmostEqual(top, exp, delta=exp * 1e-5)
                self.assertAlmostEqual(backoff_delay(attempt, base, cap, 0.5), exp * 0.75)

    def test_doubles_until_the_cap(self) -> None:
        lows = [backoff_delay(a, 0.5, 30.0, 0.0) for a in range(1, 11)]
        self.assertEqual(lows[:7], [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0])  # 0.5 * 2**6 = 32 -> capped 30
        self.assertEqual(lows[6:], [15.0] * 4)

    def test_cap_holds_for_huge_attempts(self) -> None:
        self.assertLessEqual(backoff_delay(200, 0.5, 30.0, 0.999), 30.0)

    def test_never_zero_and_within_range_for_random_r(self) -> None:
        rng = random.Random(1234)
        for _ in range(500):
            attempt = rng.randint(1, 12)
            exp = min(30.0, 0.5 * 2 ** (attempt - 1))
            d = backoff_delay(attempt, 0.5, 30.0, rng.random())
            self.assertTrue(exp / 2 <= d < exp + 1e-9, (attempt, d))
            self.assertGreater(d, 0)

    def test_attempt_zero_treated_as_first(self) -> None:
        self.assertEqual(backoff_delay(0, 1.0, 30.0, 0.0), 0.5)


class NextDelayTest(unittest.TestCase):
    def test_defaults(self) -> None:
        p = RetryPolicy()
        self.assertEqual((p.total, p.attempt, p.max_time), (DEFAULT_RETRIES, 1, DEFAULT_MAX_RETRY_TIME))

    def test_uses_backoff_for_the_current_attempt(self) -> None:
        p = RetryPolicy(total=5, backoff_base=1.0, backoff_max=30.0)
        self.assertEqual(p.next_delay(0.0, None, lambda: 0.0), 0.5)
        p = p.increment().increment()  # attempt 3: exp = 4
        self.assertEqual(p.next_delay(0.0, None, lambda: 0.0), 2.0)
        self.assertEqual(p.next_delay(0.0, None, lambda: 0.5), 3.0)

    def test_retry_after_honoured_over_backoff(self) -> None:
        p = RetryPolicy(total=3)
        self.assertEqual(p.next_delay(0.0, 7.0, lambda: 0.9), 7.0)
        self.assertEqual(p.next_delay(0.0, 0.0, lambda: 0.9), 0.0)

    def test_retry_after_clamped_by_retry_after_max(self) -> None:
        p = RetryPolicy(total=3, retry_after_max=20.0, max_time=1000.0)
        self.assertEqual(p.next_delay(0.0, 3600.0, lambda: 0.0), 20.0)

    def test_none_when_exhausted(self) -> None:
        self.assertIsNone(RetryPolicy(total=0).next_delay(0.0, None, lambda: 0.0))
        self.assertIsNone(RetryPolicy(total=0).next_delay(0.0, 1.0, lambda: 0.0))
        p = RetryPolicy(total=2)
        self.assertIsNotNone(p.next_delay(0.0, None, lambda: 0.0))
        p = p.increment()
        self.assertIsNotNone(p.next_delay(0.0, None, lambda: 0.0))
        p = p.increment()
        self.assertTrue(p.exhausted)
        self.assertIsNone(p.next_delay(0.0, None, lambda: 0.0))

    def test_none_when_budget_would_be_exceeded(self) -> None:
        p = RetryPolicy(total=3, max_time=10.0)
        self.assertEqual(p.next_delay(5.0, 5.0, lambda: 0.0), 5.0)  # exactly at the budget is fine
        self.assertIsNone(p.next_delay(5.0, 5.5, lambda: 0.0))
        self.assertIsNone(p.next_delay(9.9, None, lambda: 0.0))  # backoff 0.25 > 0.1 left
        self.assertEqual(p.next_delay(9.0, None, lambda: 0.0), 0.25)

    def test_clamped_retry_after_counts_against_budget(self) -> None:
        p = RetryPolicy(total=3, retry_after_max=5.0, max_time=10.0)
        self.assertEqual(p.next_delay(4.0, 600.0, lambda: 0.0), 5.0)  # clamped first, then fits

    def test_rand_not_called_with_retry_after(self) -> None:
        def rand() -> float:
            raise AssertionError("jitter is not needed when the server said when")

        self.assertEqual(RetryPolicy().next_delay(0.0, 2.0, rand), 2.0)


class IncrementTest(unittest.TestCase):
    def test_increment_returns_new_policy(self) -> None:
        p = RetryPolicy(total=3, backoff_base=2.0, max_time=42.0)
        q = p.increment()
        self.assertIsNot(p, q)
        self.assertEqual((p.total, p.attempt), (3, 1))  # unchanged
        self.assertEqual((q.total, q.attempt), (2, 2))
        self.assertEqual((q.backoff_base, q.max_time), (2.0, 42.0))  # settings carried over

    def test_frozen(self) -> None:
        p = RetryPolicy()
        with self.assertRaises(AttributeError):
            p.total = 99  # type: ignore[misc]


class ParseRetryAfterTest(unittest.TestCase):
    def test_seconds(self) -> None:
        self.assertEqual(parse_retry_after("120", NOW), 120.0)
        self.assertEqual(parse_retry_after(" 0 ", NOW), 0.0)
        self.assertIsInstance(parse_retry_after("5", NOW), float)

    def test_http_date_in_future(self) -> None:
        self.assertAlmostEqual(parse_retry_after(http_date(NOW + 90), NOW), 90.0)
        self.assertAlmostEqual(parse_retry_after("Tue, 09 Dec 2025 10:31:45 GMT", NOW), 60.0)

    def test_http_date_in_past_clamped_to_zero(self) -> None:
        self.assertEqual(parse_retry_after(http_date(NOW - 3600), NOW), 0.0)
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW), 0.0)

    def test_http_date_without_zone_is_utc(self) -> None:
        self.assertAlmostEqual(parse_retry_after("Tue, 09 Dec 2025 10:31:45 -0000", NOW), 60.0)

    def test_garbage(self) -> None:
        for value in ("soon", "1.5", "-5", "5s", "Tue, 99 Foo 2025", "0x10"):
            with self.subTest(value=value):
                self.assertIsNone(parse_retry_after(value, NOW))

    def test_empty_and_none(self) -> None:
        self.assertIsNone(parse_retry_after("", NOW))
        self.assertIsNone(parse_retry_after("   ", NOW))
        self.assertIsNone(parse_retry_after(None, NOW))

    def test_non_ascii_digits_are_garbage(self) -> None:
        # str.isdigit() is true for "\xb2" (superscript two), which is what http.client makes of a
        # raw 0xB2 byte in a header (latin-1); int() would then raise instead of returning None.
        for value in ("\xb2", "1\xb2", "\xb9\xb2\xb3"):
            with self.subTest(value=value):
                self.assertIsNone(parse_retry_after(value, NOW))


class RetryAfterInBodyTest(unittest.TestCase):
    """IoTFlow's 429 carries ``retry_after`` in its JSON body and no Retry-After header."""

    def test_a_number_in_the_body(self) -> None:
        body = b'{"error": "Rate limit exceeded", "message": "Maximum 30 requests per 60 seconds", ' \
               b'"retry_after": 58, "limit": 30, "window": 60}'
        self.assertEqual(retry_after_in_body(body), 58.0)
        self.assertEqual(retry_after_in_body(b'{"retry_after": 0.5}'), 0.5)

    def test_anything_else_is_none(self) -> None:
        for body in (b"", b"retry_after", b"<html>retry_after</html>", b'{"retry_after": "58"}',
                     b'{"retry_after": true}', b'{"retry_after": -1}', b'{"retry_after": 1e300}',
                     b'["retry_after", 5]', b'{"error": "Rate limit exceeded"}', b'{"retry_after": null}'):
            self.assertIsNone(retry_after_in_body(body), body)


if __name__ == "__main__":
    unittest.main()


class HugeRetryAfterTest(unittest.TestCase):
    def test_hundreds_of_digits_do_not_crash_and_mean_very_long(self) -> None:
        value = parse_retry_after("9" * 400, NOW)
        self.assertGreaterEqual(value, 1e9)
        # and the policy clamps it rather than sleeping for centuries
        self.assertEqual(RetryPolicy(total=3, max_time=1e12).next_delay(0.0, value, lambda: 0.0), 120.0)
