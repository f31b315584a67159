"""When to try a send again, and how long to wait: an immutable policy and pure functions.

Usage::

    policy = RetryPolicy(total=3)
    delay = policy.next_delay(elapsed=1.2, retry_after=parse_retry_after("2", now), rand=rng.random)
    if delay is not None: sleep(delay); policy = policy.increment()

Modelled on urllib3's Retry. Unlike urllib3 we do retry a POST that may have reached the server,
because every payload carries an Idempotency-Key the platform can de-duplicate on. Sleeping is the
caller's, so tests never wait.
"""

from __future__ import annotations

import datetime as _dt

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Callable, Optional
from .records import Record

DEFAULT_RETRIES = 3
DEFAULT_MAX_RETRY_TIME = 60.0


class RetryPolicy(Record):
    total: int = DEFAULT_RETRIES  # retries left (attempts = total + 1)
    backoff_base: float = 0.5  # first backoff, seconds
    backoff_max: float = 30.0  # cap on one exponential backoff
    retry_after_max: float = 120.0  # cap on a server's Retry-After
    max_time: float = DEFAULT_MAX_RETRY_TIME  # total seconds one payload may spend retrying
    attempt: int = 1  # the attempt about to be made (1-based)

    def increment(self) -> "RetryPolicy":
        return self._replace(total=self.total - 1, attempt=self.attempt + 1)

    @property
    def exhausted(self) -> bool:
        return self.total <= 0

    def next_delay(
        self, elapsed: float, retry_after: Optional[float], rand: Callable[[], float]
    ) -> Optional[float]:
        """Seconds to wait before the next attempt, or None when we should give up now."""
        if self.exhausted:
            return None
        if retry_after is not None:
            delay = min(retry_after, self.retry_after_max)
        else:
            delay = backoff_delay(self.attempt, self.backoff_base, self.backoff_max, rand())
        if elapsed + delay > self.max_time:
            return None
        return delay


def backoff_delay(attempt: int, base: float, cap: float, r: float) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, never zero.

    ``r`` is a uniform number in [0, 1); full jitter could retry instantly into an outage.
    """
    exp = min(cap, base * (2 ** max(attempt - 1, 0)))
    return exp / 2 + (exp / 2) * r


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Retry-After as seconds to wait: delta-seconds or an HTTP-date; None if absent or garbage."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if all("0" <= ch <= "9" for ch in text):  # not str.isdigit(): that admits "²" and friends
        # A 400-digit value would overflow float(); anything past ~30 years is "very long" anyway.
        return float(int(text)) if len(text) <= 9 else 1e9
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, when.timestamp() - now)


def retry_after_in_body(body: bytes) -> Optional[float]:
    """A 429's ``{"retry_after": N}`` (IoTFlow sends it in the JSON body and no Retry-After header).

    Only a plain non-negative number counts; anything else is None and the usual backoff applies.
    """
    if not body or len(body) > 65536 or b"retry_after" not in body:
        return None
    import json

    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    value = doc.get("retry_after") if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e9:
        return None
    return float(value)
