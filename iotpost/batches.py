"""TESAIoT's batch upload: many spooled payloads in one request, and reading what the answer says.

Usage::

    path = batch_path(target.path)                      # /api/v1/telemetry -> /api/v1/telemetry/batch
    body = batch_body([item.body, ...], [item.key, ...])
    key = batch_key([item.key, ...])                    # the batch's Idempotency-Key
    why = batch_shortfall(response.body, len(items))    # None: every payload was stored

The contract (PROTOCOLS.md): ``POST {endpoint}/batch`` takes ``{"telemetry": [...]}``, at most
1,000 payloads, and answers ``{"success": true, "results": {"total", "successful", "failed",
"errors", "telemetry_ids"}}``. It does not say which payloads failed, so a batch with failures is
sent again one payload at a time, each with its own Idempotency-Key. For that resend to store
nothing twice, the body also carries ``"idempotency_keys"`` (item i's key at i): a field the
documented contract does not have, which the twin uses and a platform may ignore.

Imported only when --batch-size is above 1: hashlib stays off a one-off send's path.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Callable, Optional, Sequence

MAX_BATCH = 1000  # the platform's limit per request


def batch_path(path: str) -> str:
    """The batch endpoint beside the telemetry endpoint, keeping a query string where it was."""
    base, sep, query = path.partition("?")
    return base.rstrip("/") + "/batch" + sep + query


def batch_key(keys: Sequence[str]) -> str:
    """The Idempotency-Key of a batch: the same items always give the same key, in any order.

    A retried batch (its answer lost) is then a replay the platform can recognise.
    """
    import hashlib

    return "batch-" + hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()


def batch_body(bodies: Sequence[bytes], keys: Sequence[str]) -> bytes:
    """``{"telemetry": [...], "idempotency_keys": [...]}`` with each payload's bytes exactly as spooled.

    The bytes are not re-encoded: a payload later sent alone (with its own key) is then the same
    body the platform fingerprinted when it stored the payload from the batch.
    """
    return (b'{"telemetry": [' + b", ".join(bodies) + b'], "idempotency_keys": '
            + json.dumps(list(keys)).encode("ascii") + b"}")


def batch_shortfall(answer: bytes, count: int, redact: Callable[[str], str] = lambda text: text) -> Optional[str]:
    """Why a 2xx batch answer does not show every one of ``count`` payloads stored, or None if it does.

    Only ``results.failed == 0`` with ``successful == count`` counts as stored: anything else (an
    answer in another shape, failures, a count that does not add up) sends the payloads again one
    by one, which their idempotency keys make safe.
    """
    try:
        doc = json.loads(answer.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "the answer is not JSON"
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, dict):
        return "the answer has no \"results\""
    failed, successful = results.get("failed"), results.get("successful")
    if not _count(failed) or not _count(successful):
        return "the answer's results have no counts"
    ids, total = results.get("telemetry_ids"), results.get("total")
    if ids is not None and (not isinstance(ids, list) or len(ids) != successful):
        return "the answer's telemetry_ids do not match its count of stored payloads"
    if total is not None and total != count:
        return "the answer counts %r payloads where %d were sent" % (total, count)
    if failed == 0 and successful == count and doc.get("success") is not False:
        return None
    errors = results.get("errors")
    first = ""
    if isinstance(errors, list) and errors:
        said = errors[0] if isinstance(errors[0], str) else json.dumps(errors[0])
        said = redact(said)  # before it is cut: a secret cut in half could not be recognised any more
        said = "".join(ch if ch.isprintable() else " " for ch in said)
        first = "; first error: %s" % (said[:117] + "..." if len(said) > 120 else said)
    if failed:
        return "%d of %d payloads failed and the answer does not say which%s" % (failed, count, first)
    return "%d of %d payloads reported stored%s" % (successful, count, first)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Gatherer:
    """New payloads of a burst wait here until a batch is full or the input is about to pause.

    ``flush`` sends what was gathered. A payload source that waits for its next due time does so
    through the environment's sleep; ``sleep_after_flush`` wraps it so a batch never waits for the
    schedule, and the time the flush took comes off the wait (the schedule does not drift).
    """

    def __init__(self, size: int, flush: Callable[[], None], monotonic: Callable[[], float],
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self.size = size
        self.pending = 0
        self._flush = flush
        self._monotonic = monotonic
        self._stopped = stopped  # the run must end (credentials, configuration): no more waiting

    def add(self) -> None:
        self.pending += 1
        if self.pending >= self.size:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.pending = 0
            self._flush()

    def sleep_after_flush(self, sleep: Callable[[float], None]) -> Callable[[float], None]:
        def wait(seconds: float) -> None:
            until = self._monotonic() + seconds
            self.flush()
            if self._stopped():
                return  # the flush ended the run: the schedule's wait would only delay the exit
            left = until - self._monotonic()
            if left > 0:
                sleep(left)

        return wait
